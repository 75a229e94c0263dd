// A workload for tools/tests/clients_test.py: @pyroscope/nodejs (npm) profiles it (wall with CPU
// time, and heap) and pushes to the pyro serve given as the first argument, for the seconds given as
// the second. Its time goes to hotNodeFunction, tagged vehicle=car through wrapWithLabels.
'use strict';
const Pyroscope = require('@pyroscope/nodejs');

Pyroscope.init({
  serverAddress: process.argv[2],
  appName: 'nodeclient',
  tags: { region: 'eu-north' },
  flushIntervalMs: 5000,
  wall: { collectCpuTime: true },
});
Pyroscope.start();

let sink = 0;
const keep = [];
function hotNodeFunction(until) {
  while (Date.now() < until) {
    for (let i = 0; i < 10000; i++) sink += i * i;
    keep.push(new Array(64).fill(sink));  // some allocation for the heap profile
    if (keep.length > 10000) keep.length = 0;
  }
}

const end = Date.now() + Number(process.argv[3]) * 1000;
function step() {
  if (Date.now() >= end) {
    Pyroscope.stop().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
    return;
  }
  Pyroscope.wrapWithLabels({ vehicle: 'car' }, () => hotNodeFunction(Date.now() + 200));
  setImmediate(step);  // let the profiler's timers run between steps
}
step();
