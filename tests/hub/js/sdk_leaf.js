// sdk_leaf.js — the Azure IoT Node SDK (azure-iot-device + azure-iot-device-mqtt)
// as a leaf device against perch-hub over mqtts, driven by test_c2d.py.
//
// Environment: PERCH_CS (a device connection string with
// GatewayHostName=localhost:<mqtts port>), PERCH_CA (the hub's certificate, PEM).
//
// The device connects with the SDK's Mqtt transport, reads its twin, reports a
// property, and prints every cloud-to-device message it receives (then
// completes it). Out: one JSON object per line, {"event": ...}. In: one
// command per line: "send N" (telemetry {"n": N} with an application
// property), get, quit. Exits 0 after quit, 1 on any error.
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
function fail(err) {
  out({ event: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
setTimeout(() => fail(new Error('overall timeout 120 s')), 120000).unref();
for (const k of ['PERCH_CS', 'PERCH_CA']) if (!process.env[k]) fail(new Error(`${k} is not set`));

async function main() {
  const client = Client.fromConnectionString(process.env.PERCH_CS, Mqtt);
  client.setOptions({ ca: fs.readFileSync(process.env.PERCH_CA, 'utf8') });
  client.on('error', fail);
  client.on('message', (msg) => {
    const props = {};
    for (const p of msg.properties.propertyList) props[p.key] = p.value;
    out({ event: 'c2d', body: msg.data.toString(), messageId: msg.messageId,
          correlationId: msg.correlationId, contentType: msg.contentType, props });
    client.complete(msg, (err) => err && fail(err));
  });
  await client.open();
  const twin = await client.getTwin();
  await new Promise((res, rej) => twin.properties.reported.update(
    { leaf: { sdk: 'node' } }, (e) => e ? rej(e) : res()));
  out({ event: 'ready' });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'send') {
      const m = new Message(JSON.stringify({ n: Number(arg) }));
      m.contentType = 'application/json';
      m.contentEncoding = 'utf-8';
      m.properties.add('kind', 'leaf-telemetry');
      await client.sendEvent(m);
      out({ event: 'sent', n: Number(arg) });
    } else if (cmd === 'get') {
      const t = await client.getTwin();
      out({ event: 'twin', reported: JSON.parse(JSON.stringify(t.properties.reported)) });
    } else if (cmd === 'quit') {
      await client.close();
      process.exit(0);
    } else if (cmd) {
      fail(new Error(`unknown command ${cmd}`));
    }
  }
}

main().catch(fail);
