// speedscope (npm, the real app's bundle, in headless Chromium) imports our speedscope export with the
// same total weight per profile as our own query, and its file-format-schema.json (checked with ajv)
// validates the export. speedscope also imports a `node --cpu-prof` .cpuprofile: its self time per
// function matches our .cpuprofile import (our only differences, by design: the last sample lasts
// until endTime, and "(idle)" time is kept as a frame).
//
//   node tests/formats/speedscope_test.js FORMAT_TOOL WORK_DIR
'use strict';
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..', '..');
const modules = path.join(root, 'node_modules');
const { chromium } = require(path.join(modules, 'playwright-core'));
const Ajv = require(path.join(modules, 'ajv'));
const pprof = require(path.join(modules, '@datadog', 'pprof'));
const speedscopeDir = path.join(modules, 'speedscope', 'dist', 'release');
const CHROMIUM = process.env.PYROSCOPE_CHROMIUM || '/usr/bin/chromium';

const tool = path.resolve(process.argv[2]);
const work = path.resolve(process.argv[3]);
fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });

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
  return childProcess.execFileSync(tool, args, { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function totals(file) {
  const out = {};
  for (const line of run('totals', file).trim().split('\n')) {
    const [type, unit, total] = line.split(' ');
    out[type] = { unit, total: Number(total) };
  }
  return out;
}

// speedscope's bundle keeps its importers to itself; the test serves a copy that also hands them to the
// page (found by their shape in the minified code, so a new speedscope version that changes them fails
// here loudly rather than passing).
function patchedBundle() {
  const file = fs.readdirSync(speedscopeDir).find((f) => /^speedscope-.*\.js$/.test(f));
  let source = fs.readFileSync(path.join(speedscopeDir, file), 'utf8');
  const text = /async function (\w+)\((\w+),(\w+)\)\{return await (\w+)\(new (\w+)\(\2,\3\)\)\}/.exec(source);
  if (!text) throw new Error('speedscope bundle: importProfileGroupFromText not found');
  source = source.replace(text[0], `globalThis.__speedscopeImportText=${text[1]};${text[0]}`);
  return { file, source };
}

async function speedscopeImport(page, fileName, contents) {
  return page.evaluate(async ({ fileName, contents }) => {
    const group = await globalThis.__speedscopeImportText(fileName, contents);
    if (!group) return null;
    return group.profiles.map((p) => {
      const self = {};
      p.forEachFrame((f) => { if (f.getSelfWeight() !== 0) self[f.name] = (self[f.name] || 0) + f.getSelfWeight(); });
      return { name: p.getName(), total: p.getTotalWeight(), self };
    });
  }, { fileName, contents });
}

function busy(ms) { const end = Date.now() + ms; let x = 0; while (Date.now() < end) x += Math.sqrt(x + 1); return x; }

(async () => {
  // A .pyro with three types: folded text with hostile frame names (cpu, samples) and a heap profile
  // from @datadog/pprof (inuse_objects, inuse_space in bytes).
  await check('input profiles written and imported', async () => {
    const names = ['main', 'quote"d', 'back\\slash', 'tab\there', 'caf\u00e9 \u20ac', '</script>', 'std::vector<int>::push_back(int&&)'];
    let folded = '';
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
    for (let i = 0; i < 400; i++) {
      const depth = 1 + (next() % 6);
      const frames = [];
      for (let d = 0; d < depth; d++) frames.push(names[next() % names.length]);
      folded += frames.join(';') + ' ' + (1 + (next() % 50)) + '\n';
    }
    fs.writeFileSync(path.join(work, 'input.folded'), folded);
    pprof.heap.start(4096, 64);
    const kept = [];
    for (let i = 0; i < 3000; i++) kept.push(new Array(64).fill(i));
    const heap = pprof.heap.profile();
    pprof.heap.stop();
    fs.writeFileSync(path.join(work, 'heap.pb.gz'), await pprof.encode(heap));
    return run('import', 'input.folded', 'heap.pb.gz', '-o', 'input.pyro').trim().replace(/\n/g, '; ');
  });
  await check('our speedscope export', () => {
    run('export', 'input.pyro', 'speedscope', '-o', 'export.speedscope.json');
    return `${fs.statSync(path.join(work, 'export.speedscope.json')).size} bytes`;
  });
  await check("speedscope's file-format-schema.json validates our export (ajv)", () => {
    const schema = JSON.parse(fs.readFileSync(path.join(speedscopeDir, 'file-format-schema.json'), 'utf8'));
    const ajv = new Ajv({ allErrors: true, strict: false });
    const validate = ajv.compile(schema);
    const doc = JSON.parse(fs.readFileSync(path.join(work, 'export.speedscope.json'), 'utf8'));
    if (!validate(doc)) throw new Error(ajv.errorsText(validate.errors));
    // and the schema is not a pass-everything: a broken document fails it
    const broken = JSON.parse(JSON.stringify(doc));
    broken.profiles[0].type = 'sampledd';
    if (validate(broken)) throw new Error('the schema accepted a profile of type "sampledd"');
    return `${doc.profiles.length} profiles, ${doc.shared.frames.length} frames`;
  });

  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  } catch (e) {
    failed++;
    console.log(`FAIL Chromium: ${e.message}`);
  }
  if (browser) {
    const page = await browser.newPage();
    const bundle = patchedBundle();
    await page.route('http://speedscope.test/**', (route) => {
      const name = decodeURIComponent(new URL(route.request().url()).pathname.slice(1)) || 'index.html';
      if (name === bundle.file) return route.fulfill({ body: bundle.source, contentType: 'text/javascript' });
      const file = path.join(speedscopeDir, path.basename(name));
      if (!fs.existsSync(file)) return route.fulfill({ status: 404, body: 'not found' });
      return route.fulfill({ body: fs.readFileSync(file) });
    });
    await check('speedscope app loaded in Chromium with its importer reachable', async () => {
      await page.goto('http://speedscope.test/index.html');
      await page.waitForFunction(() => typeof globalThis.__speedscopeImportText === 'function', null, { timeout: 30000 });
    });
    await check("speedscope's importer loads our export: same total weight per type as our query", async () => {
      const ours = totals('input.pyro');
      const text = fs.readFileSync(path.join(work, 'export.speedscope.json'), 'utf8');
      const profiles = await speedscopeImport(page, 'export.speedscope.json', text);
      if (!profiles) throw new Error('speedscope did not recognize the file');
      const seen = [];
      for (const [type, t] of Object.entries(ours)) {
        const p = profiles.find((x) => x.name === `format_tool ${type}`);
        if (!p) throw new Error(`no profile for ${type} (got ${profiles.map((x) => x.name)})`);
        if (p.total !== t.total) throw new Error(`${type}: speedscope total ${p.total}, ours ${t.total}`);
        seen.push(`${type} ${t.total}`);
      }
      if (profiles.length !== Object.keys(ours).length) throw new Error(`${profiles.length} profiles for ${Object.keys(ours).length} types`);
      return seen.join(', ');
    });
    await check("speedscope's self weights per function of our export = ours (hostile names intact)", async () => {
      const text = fs.readFileSync(path.join(work, 'export.speedscope.json'), 'utf8');
      const profiles = await speedscopeImport(page, 'export.speedscope.json', text);
      const theirs = profiles.find((x) => x.name === 'format_tool cpu').self;
      const ours = {};
      for (const row of run('top', 'input.pyro', 'cpu', '1000').split('\n')) {
        if (!row) continue;
        const tab = row.indexOf('\t');
        ours[row.slice(tab + 1)] = Number(row.slice(0, tab));
      }
      const keys = new Set([...Object.keys(theirs), ...Object.keys(ours)]);
      for (const k of keys) if (theirs[k] !== ours[k]) throw new Error(`${JSON.stringify(k)}: speedscope ${theirs[k]}, ours ${ours[k]}`);
      return `${keys.size} functions`;
    });

    await check('node --cpu-prof .cpuprofile: speedscope and we agree on every function\'s self time', async () => {
      const script = `function busy(ms){const e=Date.now()+ms;let x=0;while(Date.now()<e)x+=Math.sqrt(x+1);return x}
                      function parseRecords(){return busy(150)} function renderPage(){return busy(100)+parseRecords()}
                      for(let i=0;i<3;i++)renderPage();`;
      childProcess.execFileSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', work, '--cpu-prof-name', 'node.cpuprofile', '-e', script]);
      const text = fs.readFileSync(path.join(work, 'node.cpuprofile'), 'utf8');
      run('import', 'node.cpuprofile', '-o', 'node.pyro');
      const [profile] = await speedscopeImport(page, 'node.cpuprofile', text);
      const ours = {};
      for (const row of run('top', 'node.pyro', 'cpu', '100000').split('\n')) {
        if (!row) continue;
        const tab = row.indexOf('\t');
        ours[row.slice(tab + 1)] = Number(row.slice(0, tab)) / 1000;  // ns -> speedscope's microseconds
      }
      // By design: the last sample lasts until endTime with us (speedscope gives it nothing), and time in
      // "(idle)" stays a frame with us (speedscope leaves it out of every frame).
      const doc = JSON.parse(text);
      const nodeName = new Map(doc.nodes.map((n) => [n.id, n.callFrame.functionName]));
      const lastName = nodeName.get(doc.samples[doc.samples.length - 1]);
      let t = doc.startTime;
      for (const d of doc.timeDeltas) t += d;
      const lastDuration = Math.max(0, doc.endTime - t);
      const problems = [];
      for (const name of new Set([...Object.keys(ours), ...Object.keys(profile.self)])) {
        if (name === '(idle)' || name === '(root)') continue;
        const expected = (profile.self[name] || 0) + (name === lastName ? lastDuration : 0);
        if (Math.abs((ours[name] || 0) - expected) > 0.001) problems.push(`${name}: ours ${ours[name] || 0} us, speedscope ${expected} us`);
      }
      if (problems.length) throw new Error(problems.join('; '));
      if (!(ours.parseRecords > 0 || ours.busy > 0)) throw new Error('the workload is missing');
      return `${Object.keys(ours).length} functions, total ${Object.values(ours).reduce((a, b) => a + b, 0).toFixed(0)} us`;
    });
    await browser.close();
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
