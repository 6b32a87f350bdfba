// sas_vectors.js — the Azure IoT SDK's own SAS code (azure-iot-common), as an
// independent implementation for test_sas_interop.sh.
//
//   node sas_vectors.js make    < [{resource, keyName, key, expiry}]
//     prints one token per line, made exactly as the device SDK does:
//     SharedAccessSignature.create(encodeUriComponentStrict(resource), ...)
//   node sas_vectors.js check   < [{resource, key, token}]
//     checks each token with the SDK's parse, stringToSign and hmacHash; prints
//     "ok" or "bad: <why>" per line
//   node sas_vectors.js derive  < [{key, moduleId}]
//     prints base64(HMAC-SHA256(base64decode(key), moduleId)) per line
//
// Input is JSON on stdin, so keys never appear on a command line.
'use strict';
const path = require('path');
const crypto = require('crypto');
const common = require(path.join(__dirname, '..', '..', 'node_modules', 'azure-iot-common'));
const { SharedAccessSignature, encodeUriComponentStrict } = common;
const authorization = require(path.join(__dirname, '..', '..', 'node_modules',
	'azure-iot-common', 'dist', 'authorization.js'));

const mode = process.argv[2];
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = [];
for (const v of input) {
	if (mode === 'make') {
		const sr = encodeUriComponentStrict(v.resource);
		out.push(SharedAccessSignature.create(sr, v.keyName || null, v.key, v.expiry).toString());
	} else if (mode === 'check') {
		let sas;
		try {
			sas = SharedAccessSignature.parse(v.token, ['sr', 'sig', 'se']);
		} catch (e) {
			out.push('bad: ' + e.message);
			continue;
		}
		const want = encodeUriComponentStrict(
			authorization.hmacHash(v.key, authorization.stringToSign(sas.sr, sas.se)));
		if (decodeURIComponent(sas.sr) !== v.resource)
			out.push('bad: resource ' + decodeURIComponent(sas.sr));
		else if (sas.sig !== want)
			out.push('bad: signature');
		else
			out.push('ok');
	} else if (mode === 'derive') {
		out.push(crypto.createHmac('sha256', Buffer.from(v.key, 'base64'))
			.update(v.moduleId).digest('base64'));
	} else {
		process.stderr.write('usage: node sas_vectors.js make|check|derive < vectors.json\n');
		process.exit(2);
	}
}
process.stdout.write(out.join('\n') + '\n');
