// Profiles written by @datadog/pprof (wall and heap) and by `node --cpu-prof` import with the totals the
// producing tool reports, and npm's pprof-format (a pprof reader nobody here wrote) reads our pprof
// exports with our own query's totals and per-function self values.
//
//   node tests/formats/node_test.js FORMAT_TOOL WORK_DIR
'use strict';
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const root = path.resolve(__dirname, '..', '..');
const {Profile} = require(path.join(root, 'node_modules', 'pprof-format'));
const pprof = require(path.join(root, 'node_modules', '@datadog', 'pprof'));

const tool = path.resolve(process.argv[2]);
const work = path.resolve(process.argv[3]);
fs.rmSync(work, {recursive: true, force: true});
fs.mkdirSync(work, {recursive: true});

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    const detail = await fn();
    passed++;
    console.log(`ok   ${name}${detail ? ': ' + detail : ''}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
  }
}
function run(...args) {
  return childProcess.execFileSync(tool, args, {cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']});
}

// Per type: unit, total and per-function self (the function of a sample's innermost frame), as
// pprof-format decodes the file (gzipped or not).
function readPprof(bytes) {
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = zlib.gunzipSync(bytes);
  return summarize(Profile.decode(bytes));
}
function summarize(profile) {
  const strings = profile.stringTable.strings;
  const functionName = new Map(profile.function.map((f) => [String(f.id), strings[Number(f.name)]]));
  const leafName = new Map(profile.location.map((l) => [String(l.id), l.line.length ? functionName.get(String(l.line[0].functionId)) : '']));
  const out = {};
  profile.sampleType.forEach((t, k) => {
    const entry = {unit: strings[Number(t.unit)], total: 0n, self: new Map()};
    for (const s of profile.sample) {
      const v = BigInt(s.value[k]);
      if (v === 0n) continue;
      entry.total += v;
      const leaf = s.locationId.length ? leafName.get(String(s.locationId[0])) : '[no frames]';
      entry.self.set(leaf, (entry.self.get(leaf) || 0n) + v);
    }
    if (entry.total !== 0n) out[strings[Number(t.type)]] = entry;
  });
  return out;
}
// The same from our .pyro file, by our own query (format_tool totals / top).
function readPyro(file) {
  const out = {};
  for (const line of run('totals', file).trim().split('\n')) {
    const [type, unit, total] = line.split(' ');
    const self = new Map();
    for (const row of run('top', file, type, '100000000').split('\n')) {
      if (!row) continue;
      const tab = row.indexOf('\t');
      self.set(row.slice(tab + 1), BigInt(row.slice(0, tab)));
    }
    out[type] = {unit, total: BigInt(total), self};
  }
  return out;
}
function compare(theirs, ours, what) {
  const problems = [];
  const types = new Set([...Object.keys(theirs), ...Object.keys(ours)]);
  for (const type of types) {
    const a = theirs[type], b = ours[type];
    if (!a || !b) { problems.push(`type ${type} only in ${a ? what : 'ours'}`); continue; }
    if (a.unit !== b.unit) problems.push(`${type}: unit ${a.unit} vs ${b.unit}`);
    if (a.total !== b.total) problems.push(`${type}: total ${a.total} vs ${b.total}`);
    for (const name of new Set([...a.self.keys(), ...b.self.keys()])) {
      if ((a.self.get(name) || 0n) !== (b.self.get(name) || 0n))
        problems.push(`${type}: self of ${JSON.stringify(name)} ${a.self.get(name) || 0n} vs ${b.self.get(name) || 0n}`);
    }
  }
  if (problems.length) throw new Error(`${what} vs ours:\n     ` + problems.slice(0, 15).join('\n     '));
  return [...types].sort().map((t) => `${t} ${ours[t].total} ${ours[t].unit} (${ours[t].self.size} functions)`).join(', ');
}

function busy(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}
function parseRecords() { return busy(120); }
function renderPage() { return busy(80) + parseRecords(); }

(async () => {
  // @datadog/pprof: a wall profile of this process, and a heap profile with allocations kept alive.
  let wall, heap;
  await check('@datadog/pprof wall profile written', async () => {
    pprof.time.start({intervalMicros: 1000, durationMillis: 60000});
    for (let i = 0; i < 3; i++) renderPage();
    wall = pprof.time.stop();
    fs.writeFileSync(path.join(work, 'wall.pb.gz'), await pprof.encode(wall));
    return `${wall.sample.length} samples`;
  });
  const kept = [];
  await check('@datadog/pprof heap profile written', async () => {
    pprof.heap.start(4096, 64);
    for (let i = 0; i < 5000; i++) kept.push(new Array(64).fill(i));
    heap = pprof.heap.profile();
    pprof.heap.stop();
    fs.writeFileSync(path.join(work, 'heap.pb.gz'), await pprof.encode(heap));
    return `${heap.sample.length} samples`;
  });
  for (const [name, profile] of [['wall', wall], ['heap', heap]]) {
    if (!profile) continue;
    await check(`${name}: import`, () => run('import', `${name}.pb.gz`, '-o', `${name}.pyro`).trim());
    await check(`${name}: imported totals and functions = the profile @datadog/pprof returned`,
                () => compare(summarize(profile), readPyro(`${name}.pyro`), '@datadog/pprof'));
    for (const plain of [false, true]) {
      const file = `${name}-export${plain ? '.pb' : '.pb.gz'}`;
      await check(`${name}: pprof-format reads our ${plain ? 'plain' : 'gzipped'} export with our totals and functions`, () => {
        run('export', `${name}.pyro`, 'pprof', '-o', file, ...(plain ? ['--plain'] : []));
        return compare(readPprof(fs.readFileSync(path.join(work, file))), readPyro(`${name}.pyro`), 'pprof-format');
      });
    }
  }

  // node --cpu-prof: a .cpuprofile of a child node process.
  await check('node --cpu-prof writes a .cpuprofile', () => {
    const script = `function busy(ms){const e=Date.now()+ms;let x=0;while(Date.now()<e)x+=Math.sqrt(x+1);return x}
                    function parseRecords(){return busy(150)} function renderPage(){return busy(100)+parseRecords()}
                    for(let i=0;i<3;i++)renderPage(); setTimeout(()=>busy(50),100);`;
    childProcess.execFileSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', work, '--cpu-prof-name', 'node.cpuprofile', '-e', script]);
    return `${fs.statSync(path.join(work, 'node.cpuprofile')).size} bytes`;
  });
  await check('.cpuprofile: detected, imported, total = endTime - first sample time (the file\'s own clock)', () => {
    if (run('detect', 'node.cpuprofile').trim() !== 'cpuprofile') throw new Error('not detected as cpuprofile');
    run('import', 'node.cpuprofile', '-o', 'node.pyro');
    const doc = JSON.parse(fs.readFileSync(path.join(work, 'node.cpuprofile'), 'utf8'));
    const expected = BigInt(Math.round((doc.endTime - doc.startTime - doc.timeDeltas[0]) * 1000));
    const ours = readPyro('node.pyro');
    if (!ours.cpu || ours.cpu.unit !== 'nanoseconds') throw new Error('no cpu series in nanoseconds');
    if (ours.cpu.total !== expected) throw new Error(`total ${ours.cpu.total} ns, the file spans ${expected} ns`);
    for (const fn of ['busy', 'parseRecords', 'renderPage']) {
      if (!run('folded', 'node.pyro', 'cpu').includes(fn)) throw new Error(`${fn} missing from the stacks`);
    }
    return `${doc.samples.length} samples, ${expected} ns`;
  });

  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
