// module.js — a Perch module written with the Azure IoT device SDK for Node
// (azure-iot-device + azure-iot-device-mqtt), exactly as it would be written
// for IoT Edge: ModuleClient.fromEnvironment(Mqtt) takes its identity from
// the IOTEDGE_* variables perch-agent sets, its SAS tokens from the workload
// socket, and the CA of the hub's certificate from the workload API's trust
// bundle; it connects with MQTT over TLS to IOTEDGE_GATEWAYHOSTNAME:8883
// (Transport=MqttWs: MQTT over wss to port 443, /$iothub/websocket).
// deploy/images.sh --node-sdk wraps it, node and the SDK into a FROM scratch
// image; tests/integration/test_sdk_module.sh deploys it with perch-agent.
//
// What it does:
//   - sends {"seq": n, "module": ...} on output `telemetry` at once and then
//     every SendInterval seconds (default 5; 0: only the first);
//   - answers every message on any input by sending its body, with the
//     property `echoedFrom` = the input's name, on output `echo`;
//   - reads its twin at start, reports {"sdk": {...}} at start and
//     {"lastDesired": {...}} after each desired update it gets (the SDK gives
//     the whole desired section once it subscribed, then each patch);
//   - answers the direct method `ping` with 200 {"pong": payload, "module": id}
//     (any other method: 404).
// Each of those is one JSON line on stdout ({"event": ...}), for docker logs.
// It exits 1 on an error it cannot go on from (the agent restarts it).
'use strict';
const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const moduleId = process.env.IOTEDGE_MODULEID || '';
const interval = Number(process.env.SendInterval || '5');
const transport = process.env.Transport || 'Mqtt';
const transports = { Mqtt, MqttWs };
const log = (o) => process.stdout.write(JSON.stringify(o) + '\n');
function fail(where, err) {
  log({ event: 'error', where, message: String(err && err.message ? err.message : err) });
  process.exit(1);
}
process.on('unhandledRejection', (err) => fail('unhandledRejection', err));
process.on('SIGTERM', () => process.exit(0));

const plain = (o) => JSON.parse(JSON.stringify(o));

async function main() {
  if (!transports[transport]) fail('start', new Error(`Transport ${transport}: Mqtt or MqttWs`));
  const client = await ModuleClient.fromEnvironment(transports[transport]);
  client.on('error', (err) => fail('client', err));
  client.on('disconnect', () => log({ event: 'disconnected' }));

  client.onMethod('ping', (req, res) => {
    log({ event: 'method', name: req.methodName, payload: req.payload });
    res.send(200, { pong: req.payload, module: moduleId }, (err) => err && fail('method', err));
  });

  client.on('inputMessage', (input, msg) => {
    const body = msg.getBytes().toString('utf8');
    log({ event: 'input', input, body });
    client.complete(msg, (err) => err && fail('complete', err));
    const out = new Message(body);
    out.contentType = 'application/json';
    out.contentEncoding = 'utf-8';
    out.properties.add('echoedFrom', input);
    client.sendOutputEvent('echo', out, (err) => {
      if (err) fail('echo', err);
      log({ event: 'echoed', output: 'echo', body });
    });
  });

  await client.open();
  log({ event: 'connected', deviceId: process.env.IOTEDGE_DEVICEID, moduleId,
        gateway: process.env.IOTEDGE_GATEWAYHOSTNAME, transport });

  const twin = await client.getTwin();
  log({ event: 'twin', desired: plain(twin.properties.desired),
        reported: plain(twin.properties.reported) });
  twin.on('properties.desired', (delta) => {
    log({ event: 'desired', delta: plain(delta) });
    // The SDK calls this with the whole desired section first, then with
    // each patch; both carry "$version", which is no property name.
    const props = plain(delta);
    for (const k of Object.keys(props)) if (k.startsWith('$')) delete props[k];
    twin.properties.reported.update({ lastDesired: props }, (err) => {
      if (err) fail('report', err);
      log({ event: 'reported', what: 'lastDesired', version: delta.$version });
    });
  });
  await new Promise((resolve, reject) => twin.properties.reported.update(
    { sdk: { lang: 'node', transport: 'mqtt', node: process.version } },
    (err) => (err ? reject(err) : resolve())));
  log({ event: 'reported', what: 'sdk' });

  let seq = 0;
  const send = () => {
    const n = ++seq;
    const msg = new Message(JSON.stringify({ seq: n, module: moduleId }));
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    client.sendOutputEvent('telemetry', msg, (err) => {
      if (err) fail('send', err);
      log({ event: 'sent', output: 'telemetry', seq: n });
    });
  };
  send();
  if (interval > 0) setInterval(send, interval * 1000);
}

main().catch((err) => fail('start', err));
