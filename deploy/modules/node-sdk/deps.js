// deps.js — prints, one per line, the package directories (relative to the
// node_modules directory given) that the named packages need at run time:
// themselves and their dependencies and optional dependencies, resolved as
// Node resolves them (the nearest node_modules/NAME up the tree). Used by
// deploy/images.sh --node-sdk to copy only those into the image.
// Usage: node deps.js NODE_MODULES_DIR PACKAGE...
'use strict';
const fs = require('fs');
const path = require('path');

const [top, ...roots] = process.argv.slice(2);
if (!top || roots.length === 0) {
  process.stderr.write('usage: node deps.js NODE_MODULES_DIR PACKAGE...\n');
  process.exit(2);
}
const base = path.resolve(top);
const seen = new Set();

// find: the directory of package name as required from directory from.
function find(name, from) {
  for (let dir = from; dir.startsWith(base); dir = path.dirname(dir)) {
    const cand = path.basename(dir) === 'node_modules'
      ? path.join(dir, name) : path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(cand, 'package.json'))) return cand;
    if (dir === base) break;
  }
  const cand = path.join(base, name);
  return fs.existsSync(path.join(cand, 'package.json')) ? cand : null;
}

function walk(dir) {
  if (seen.has(dir)) return;
  seen.add(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const deps = Object.assign({}, pkg.optionalDependencies, pkg.dependencies);
  for (const name of Object.keys(deps)) {
    const d = find(name, dir);
    if (d) walk(d);
    else if (!(pkg.optionalDependencies && name in pkg.optionalDependencies)) {
      process.stderr.write(`deps.js: ${name} (needed by ${pkg.name}) is not installed\n`);
      process.exit(1);
    }
  }
}

for (const r of roots) {
  const d = find(r, base);
  if (!d) {
    process.stderr.write(`deps.js: ${r} is not installed in ${base}\n`);
    process.exit(1);
  }
  walk(d);
}
for (const d of [...seen].sort()) process.stdout.write(path.relative(base, d) + '\n');
