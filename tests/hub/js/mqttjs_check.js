// mqttjs_check.js URL — MQTT.js (tests/node_modules/mqtt) against a broker.
// Scenarios: QoS 0/1 pub/sub incl. 100 kB payloads, wildcard, retained + clear,
// persistent session with offline queue, will on a destroyed socket.
// Prints one line per scenario; exits 1 on the first failure. Every wait bounded.
'use strict';
const mqtt = require('mqtt');
const url = process.argv[2];
const tag = `${process.pid}-${Date.now() % 1e6}`;
const deadline = setTimeout(() => { console.error('FAIL: overall timeout 60s'); process.exit(1); }, 60000);

function connect(opts) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, Object.assign({ protocolVersion: 4, reconnectPeriod: 0,
      connectTimeout: 5000, keepalive: 30 }, opts));
    const t = setTimeout(() => reject(new Error('connect timeout')), 6000);
    c.once('connect', (ack) => { clearTimeout(t); c.connack = ack; resolve(c); });
    c.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}
const sub = (c, t, qos) => new Promise((res, rej) => c.subscribe(t, { qos }, (e, g) => e ? rej(e) : res(g)));
const pub = (c, t, m, o) => new Promise((res, rej) => c.publish(t, m, o, (e) => e ? rej(e) : res()));
const end = (c) => new Promise((res) => c.end(false, {}, res));
function collect(c, n, ms) {
  return new Promise((resolve) => {
    const got = [];
    const t = setTimeout(() => { c.removeListener('message', on); resolve(got); }, ms);
    function on(topic, payload, packet) {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
      if (got.length >= n) { clearTimeout(t); c.removeListener('message', on); resolve(got); }
    }
    c.on('message', on);
  });
}
function check(cond, what) { if (!cond) throw new Error(what); }

async function main() {
  // 1. pub/sub QoS 0 and 1, big payloads (split across WebSocket frames by MQTT.js)
  for (const qos of [0, 1]) {
    const s = await connect({ clientId: `js-s${qos}-${tag}` });
    const p = await connect({ clientId: `js-p${qos}-${tag}` });
    const g = await sub(s, `js/${tag}/q${qos}/#`, qos);
    check(g[0].qos === qos, `granted ${g[0].qos}`);
    const bodies = [];
    for (let i = 0; i < 60; i++) bodies.push(i % 20 === 0 ? 'B'.repeat(100000) + i : `m${i}`);
    const wait = collect(s, bodies.length, 15000);
    for (let i = 0; i < bodies.length; i++) await pub(p, `js/${tag}/q${qos}/${i % 4}`, bodies[i], { qos });
    const got = await wait;
    check(got.length === bodies.length, `qos${qos}: got ${got.length}/${bodies.length}`);
    check(got.every((m, i) => m.payload === bodies[i] && m.qos === qos), `qos${qos}: payload/order/qos mismatch`);
    await end(s); await end(p);
    console.log(`ok pubsub qos${qos}`);
  }
  // 2. retained, then cleared
  {
    const p = await connect({ clientId: `js-rp-${tag}` });
    await pub(p, `js/${tag}/ret`, 'kept', { qos: 1, retain: true });
    const s = await connect({ clientId: `js-rs-${tag}` });
    const w = collect(s, 1, 5000);
    await sub(s, `js/${tag}/ret`, 1);
    const got = await w;
    check(got.length === 1 && got[0].payload === 'kept' && got[0].retain, 'retained not delivered with retain flag');
    await pub(p, `js/${tag}/ret`, '', { qos: 1, retain: true });
    const s2 = await connect({ clientId: `js-rs2-${tag}` });
    const w2 = collect(s2, 1, 1000);
    await sub(s2, `js/${tag}/ret`, 1);
    check((await w2).length === 0, 'retained message not cleared');
    await end(p); await end(s); await end(s2);
    console.log('ok retained');
  }
  // 3. persistent session: offline queue
  {
    const id = `js-persist-${tag}`;
    let s = await connect({ clientId: id, clean: false });
    await sub(s, `js/${tag}/persist`, 1);
    await end(s);
    const p = await connect({ clientId: `js-pp-${tag}` });
    for (let i = 0; i < 20; i++) await pub(p, `js/${tag}/persist`, `q${i}`, { qos: 1 });
    await end(p);
    s = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, clientId: id, clean: false });
    const w = collect(s, 20, 10000);
    const ack = await new Promise((res, rej) => { s.once('connect', res); s.once('error', rej); });
    check(ack.sessionPresent, 'session present not set');
    const got = await w;
    check(got.length === 20 && got.every((m, i) => m.payload === `q${i}`), `offline queue: got ${got.map(m => m.payload)}`);
    await end(s);
    console.log('ok persistent session');
  }
  // 4. will on abnormal disconnect
  {
    const wch = await connect({ clientId: `js-ww-${tag}` });
    await sub(wch, `js/${tag}/will`, 1);
    const c = await connect({ clientId: `js-wc-${tag}`, will: { topic: `js/${tag}/will`, payload: 'gone', qos: 1, retain: false } });
    const w = collect(wch, 1, 5000);
    c.stream.destroy();
    const got = await w;
    check(got.length === 1 && got[0].payload === 'gone', 'will not delivered');
    await end(wch);
    console.log('ok will');
  }
}
main().then(() => { clearTimeout(deadline); console.log('ALL OK'); process.exit(0); },
  (e) => { console.error('FAIL: ' + (e && e.stack || e)); process.exit(1); });
