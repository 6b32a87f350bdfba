// sdk_twin.js — the Azure IoT Node SDK (azure-iot-device + azure-iot-device-mqtt)
// as a module against perch-hub, driven by test_twins.py.
//
// Environment: PERCH_CS_TARGET and PERCH_CS_CALLER (module connection strings with
// GatewayHostName=localhost:<mqtts port>), PERCH_CA (the hub's certificate, PEM),
// PERCH_HTTPS_PORT (the hub's wss:// listener, where direct methods are invoked),
// PERCH_DEVICE.
//
// The target module connects with the SDK's Mqtt transport (mqtts to the gateway
// host and port), reads its twin, reports properties, listens for desired
// updates and answers the method "echo". The caller module invokes methods with
// ModuleClient.invokeMethod, which POSTs to https://<gateway>/twins/...; in
// production that is port 443 of the gateway host, here an https.Agent sends it
// to the test hub's wss:// port instead (the SDK has no port setting for it).
//
// Out: one JSON object per line, {"event": ...}. In: one command per line:
// get, invoke, invoke-missing, quit. Exits 0 after quit, 1 on any error.
'use strict';
const fs = require('fs');
const https = require('https');
const readline = require('readline');
const { ModuleClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const env = (k) => {
  if (!process.env[k]) fail(new Error(`${k} is not set`));
  return process.env[k];
};
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
function fail(err) {
  out({ event: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
setTimeout(() => fail(new Error('overall timeout 120 s')), 120000).unref();

const ca = fs.readFileSync(env('PERCH_CA'), 'utf8');
const httpsPort = Number(env('PERCH_HTTPS_PORT'));
const device = env('PERCH_DEVICE');

class GatewayAgent extends https.Agent {
  createConnection(options, cb) {
    return super.createConnection(Object.assign({}, options,
      { host: 'localhost', port: httpsPort, servername: 'localhost' }), cb);
  }
}

const view = (twin) => ({
  desired: JSON.parse(JSON.stringify(twin.properties.desired)),
  reported: JSON.parse(JSON.stringify(twin.properties.reported)),
});

async function main() {
  const target = ModuleClient.fromConnectionString(env('PERCH_CS_TARGET'), Mqtt);
  target.setOptions({ ca });
  target.on('error', fail);
  target.onMethod('echo', (req, res) => {
    res.send(200, { echo: req.payload, by: 'filter' }, (err) => err && fail(err));
  });
  await target.open();
  const twin = await target.getTwin();
  out(Object.assign({ event: 'twin' }, view(twin)));
  twin.on('properties.desired', (delta) => out({ event: 'desired', delta }));
  await new Promise((res, rej) => twin.enableTwinDesiredPropertiesUpdates((e) => e ? rej(e) : res()));
  await new Promise((res, rej) => twin.properties.reported.update(
    { sdk: { lang: 'node', ok: true } }, (e) => e ? rej(e) : res()));
  out({ event: 'reported' });

  const caller = ModuleClient.fromConnectionString(env('PERCH_CS_CALLER'), Mqtt);
  caller.setOptions({ ca, http: { agent: new GatewayAgent({ ca }) } });
  out({ event: 'ready' });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const cmd = line.trim();
    if (cmd === 'get') {
      const t = await target.getTwin();
      out(Object.assign({ event: 'twin' }, view(t)));
    } else if (cmd === 'invoke') {
      const result = await caller.invokeMethod(device, 'filter', {
        methodName: 'echo', payload: { x: 1 }, responseTimeoutInSeconds: 10,
        connectTimeoutInSeconds: 0,
      });
      out({ event: 'invoked', result });
    } else if (cmd === 'invoke-missing') {
      try {
        await caller.invokeMethod(device, 'ghost', {
          methodName: 'echo', payload: null, responseTimeoutInSeconds: 5,
          connectTimeoutInSeconds: 0,
        });
        out({ event: 'error', message: 'a call on a missing module succeeded' });
      } catch (err) {
        out({ event: 'invoke-failed', status: err.response && err.response.statusCode,
              message: err.message });
      }
    } else if (cmd === 'quit') {
      await target.close();
      process.exit(0);
    } else if (cmd) {
      fail(new Error(`unknown command ${cmd}`));
    }
  }
}

main().catch(fail);
