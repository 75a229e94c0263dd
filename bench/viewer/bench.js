// Viewer benchmark, in one headless Chromium run: time from navigation to the first painted flame graph
// and peak memory for the profile `gen_folded.py 100000 1` writes (100k distinct stacks, ~196 MB of
// folded text), opened by
//   (a) our WebAssembly viewer as folded text,
//   (b) our viewer as a .pyro file of the same data (made with the `pyro` tool),
//   (c) speedscope (npm `speedscope`, its static release served locally, #profileURL=).
// Then the frame times of our viewer zooming the 2.7M-node flame graph, (e) (b) with SwiftShader for
// WebGL only, and (f) (b) in a browser launched for the page. Each case gets a fresh browser; all but
// (f) first let it start its GPU process (see warmUp), as a browser a user already has open has.
// The analysis views: (g) the sandwich view of the heaviest functions of the 2.7M-node tree, and (h)
// the tag breakdown of a 30-day file (four regions, a block every 10 s; `make_test_data DIR --month`).
//
// usage: node bench/viewer/bench.js [--site build/wasm] [--gen ../shared/bench/gen_folded.py]
//                                   [--pyro build/tools/pyro] [--work build/bench-viewer] [--runs 1]
//                                   [--make-test-data build/tests/browser/make_test_data]
//                                   [--cases abcdefgh]  (a subset, e.g. `--cases b`; the summary needs a, b, c)
// Memory: peak JS heap from V8's trace events (GC "before" sizes and the timeline's heap counters, which
// are recorded even while the page's main thread is busy), the WebAssembly memory at the end (it never
// shrinks, so it is its peak), and the peak resident set (VmHWM) of the renderer process.
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const h = require('../../tests/browser/harness');

const repo = path.resolve(__dirname, '../..');

function parseArgs(argv) {
  const args = {
    site: path.join(repo, 'build/wasm'),
    gen: path.resolve(repo, '../shared/bench/gen_folded.py'),
    pyro: '',
    work: path.join(repo, 'build/bench-viewer'),
    runs: '1',
    timeout: '300',
    cases: 'abcdefgh',
    'make-test-data': '',
  };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      console.error(`usage: bench.js [--site DIR] [--gen gen_folded.py] [--pyro PYRO] [--work DIR] [--runs N] ` +
                    `[--timeout S] [--make-test-data PATH] [--cases abcdefgh] (bad argument '${argv[i]}')`);
      process.exit(2);
    }
    args[key] = argv[i + 1];
  }
  if (!/^[abcdefgh]+$/.test(args.cases)) {
    console.error(`bench.js: --cases takes letters of a to h (the cases below), not '${args.cases}'`);
    process.exit(2);
  }
  return args;
}

// The newest build of a program under build*/ (build/tools/pyro, build/rel/tools/pyro, ...).
function findBuilt(given, sub, what) {
  if (given) return given;
  const candidates = [];
  for (const dir of fs.readdirSync(repo)) {
    if (!dir.startsWith('build')) continue;
    candidates.push(path.join(repo, dir, sub));
    try {
      for (const inner of fs.readdirSync(path.join(repo, dir))) candidates.push(path.join(repo, dir, inner, sub));
    } catch (e) { /* not a folder */ }
  }
  const found = candidates.filter((c) => { try { return fs.statSync(c).isFile(); } catch (e) { return false; } });
  found.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!found.length) {
    console.error(`bench.js: no ${what} found under build*/: build it or pass its path`);
    process.exit(1);
  }
  return found[0];
}
function findPyroTool(given) { return findBuilt(given, 'tools/pyro', 'pyro tool (cmake --build BUILD --target pyro; --pyro)'); }

// The 30-day file of case (h).
function prepareMonth(args) {
  const month = path.join(args.work, 'month.pyro');
  if (!fs.existsSync(month)) {
    const tool = findBuilt(args['make-test-data'], 'tests/browser/make_test_data',
                           'make_test_data (a build with -DPYROSCOPE_BUILD_VIEWER=ON; --make-test-data)');
    console.log(`writing ${month} with ${tool} --month`);
    execFileSync(tool, [args.work, '--month'], { stdio: 'inherit' });
  }
  return month;
}

function prepareData(args) {
  fs.mkdirSync(args.work, { recursive: true });
  const folded = path.join(args.work, 'gen100k.folded');
  const pyro = path.join(args.work, 'gen100k.pyro');
  if (!fs.existsSync(folded)) {
    if (!fs.existsSync(args.gen)) {
      console.error(`bench.js: generator ${args.gen} not found (pass --gen)`);
      process.exit(1);
    }
    console.log(`generating ${folded} with ${args.gen} 100000 1`);
    const fd = fs.openSync(folded + '.tmp', 'w');
    execFileSync('python3', [args.gen, '100000', '1'], { stdio: ['ignore', fd, 'inherit'] });
    fs.closeSync(fd);
    fs.renameSync(folded + '.tmp', folded);
  }
  if (!fs.existsSync(pyro) || fs.statSync(pyro).mtimeMs < fs.statSync(folded).mtimeMs) {
    const tool = findPyroTool(args.pyro);
    console.log(`converting to ${pyro} with ${tool}`);
    try { fs.unlinkSync(pyro); } catch (e) { /* absent */ }
    execFileSync(tool, ['import-folded', folded, '-o', pyro, '--app', 'gen100k', '--at', '1700000000'],
                 { stdio: 'inherit' });
  }
  return { folded, pyro };
}

// Peak JS heap seen in the trace: GC events carry the heap size before collecting, and the timeline's
// UpdateCounters carry jsHeapSizeUsed.
function peakHeapFromTrace(buffer) {
  let peak = 0;
  let events;
  try {
    const trace = JSON.parse(buffer.toString('utf8'));
    events = Array.isArray(trace) ? trace : trace.traceEvents || [];
  } catch (e) {
    return 0;
  }
  for (const e of events) {
    const a = e.args || {};
    for (const v of [a.usedHeapSizeBefore, a.usedHeapSizeAfter, a.data && a.data.jsHeapSizeUsed]) {
      if (typeof v === 'number' && v > peak) peak = v;
    }
  }
  return peak;
}

async function rendererPeakRss(browser) {
  let peak = 0;
  try {
    const session = await browser.newBrowserCDPSession();
    const info = await session.send('SystemInfo.getProcessInfo');
    for (const p of info.processInfo) {
      if (p.type !== 'renderer') continue;
      const status = fs.readFileSync(`/proc/${p.id}/status`, 'utf8');
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    }
  } catch (e) {
    return 0;
  }
  return peak;
}

const MB = (n) => (n / (1 << 20)).toFixed(0) + ' MB';
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One case in a fresh browser: returns {paintMs, heapPeak, heapEnd, wasmBytes, rssPeak, status?}.
// A user opens the viewer in a browser that is already running. Chromium starts its GPU process with
// the browser, and for about a second after a launch the first WebGL context of any page waits for it
// (SwiftShader start-up, measured 0.7-1.1 s here); a page that waits that long gets its context in
// 20-70 ms. So, unless `cold`, a first page makes a WebGL context (returning once the GPU process is
// up) and closes before the measured navigation; case (f) keeps the freshly launched browser.
async function warmUp(browser) {
  const page = await browser.newPage();
  await page.evaluate(() => { document.createElement('canvas').getContext('webgl2'); });
  await page.close();
}

async function runCase(name, base, target, kind, args, screenshotPath, browserArgs = [], cold = false) {
  const browser = await h.launchBrowser(browserArgs);
  try {
    if (!cold) await warmUp(browser);
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    if (kind === 'speedscope') {
      // speedscope sets the title to "<profile> - speedscope" once the profile is imported; the flame
      // graph is painted in the animation frames that follow.
      await page.addInitScript(() => {
        window.__paintMs = null;
        new MutationObserver(() => {
          if (window.__paintMs === null && / - speedscope$/.test(document.title)) {
            window.__paintMs = -1;
            requestAnimationFrame(() => requestAnimationFrame(() => { window.__paintMs = performance.now(); }));
          }
        }).observe(document, { subtree: true, childList: true, characterData: true });
      });
    }
    await browser.startTracing(page, {
      categories: ['disabled-by-default-v8.gc', 'v8', 'devtools.timeline', 'disabled-by-default-devtools.timeline'],
    });
    await page.goto(base + target);
    const deadline = Date.now() + Number(args.timeout) * 1000;
    let paintMs = null;
    while (Date.now() < deadline) {
      paintMs = await page.evaluate((k) => {
        if (k === 'speedscope') return window.__paintMs > 0 ? window.__paintMs : null;
        const v = window.pyroscopeViewer;
        if (v && v.pageErrors.length) return -1;
        return v && v.firstFlamePaintMs ? v.firstFlamePaintMs : null;
      }, kind).catch(() => null);
      if (paintMs !== null) break;
      await sleep(100);
    }
    const trace = await browser.stopTracing();
    const result = { name, paintMs, heapPeak: peakHeapFromTrace(trace) };
    const metrics = await page.evaluate(() => ({
      heapEnd: performance.memory ? performance.memory.usedJSHeapSize : 0,
      wasmBytes: window.Module && window.Module.HEAPU8 ? window.Module.HEAPU8.length : 0,
    }));
    Object.assign(result, metrics);
    result.heapPeak = Math.max(result.heapPeak, result.heapEnd);
    if (kind !== 'speedscope') {
      result.status = await page.evaluate(() => {
        const s = window.pyroscopeViewer.status();
        const v = window.pyroscopeViewer;
        return { error: s.error, load_ms: s.load_ms, log: s.log, flame: s.flame.main, pageErrors: s.pageErrors,
                 ready_ms: v.readyMs, timings: v.timings, marks: v.marks };
      });
    }
    await sleep(500);
    await page.screenshot({ path: screenshotPath });
    result.rssPeak = await rendererPeakRss(browser);
    if (kind.startsWith('ours-zoom')) {
      // Frame times while zooming the whole tree in and out (120 frames), plus the page's frame rate.
      const frames = 120;
      const fps = page.evaluate((n) => new Promise((resolve) => {
        const times = [];
        function tick(t) {
          times.push(t);
          if (times.length < n) requestAnimationFrame(tick);
          else resolve(times);
        }
        window.pyroscopeViewer.benchZoom(n);
        requestAnimationFrame(tick);
      }), frames);
      const times = await fps;
      const s = await page.evaluate(() => window.pyroscopeViewer.status());
      const intervals = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
      const ui = s.bench.ui_frames.slice().sort((a, b) => a - b);
      const whole = s.bench.frames.slice().sort((a, b) => a - b);
      const pct = (v, p) => v.length ? v[Math.min(v.length - 1, Math.floor(p * (v.length - 1) + 0.5))] : 0;
      result.zoom = {
        frames: ui.length,
        ui_p50: pct(ui, 0.5), ui_p95: pct(ui, 0.95), ui_max: pct(ui, 1),
        frame_p50: pct(whole, 0.5), frame_p95: pct(whole, 0.95),
        interval_p50: pct(intervals, 0.5), interval_p95: pct(intervals, 0.95),
        drawn_blocks: s.flame.main.drawn_blocks, nodes: s.flame.main.nodes,
      };
    }
    return result;
  } finally {
    await browser.close();
  }
}

// Opens our viewer on a file in a fresh browser (GPU process started) and waits for the first paint.
async function openOurs(base, target, args) {
  const browser = await h.launchBrowser();
  await warmUp(browser);
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(base + target);
  await page.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.firstFlamePaintMs, null,
                             { timeout: Number(args.timeout) * 1000 });
  return { browser, page };
}

const status = (page) => page.evaluate(() => window.pyroscopeViewer.status());
async function waitStatus(page, predicate, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await status(page);
    if (predicate(s)) return s;
    if (Date.now() > deadline) throw new Error('timed out; status: ' + JSON.stringify({ error: s.error, log: s.log }));
    await sleep(30);
  }
}

// A figure of the main threads of the browser's renderer processes (the page's WebAssembly runs on its
// main thread), added up over them: read(pid) reads it from /proc. null where /proc does not say.
async function rendererMainSum(browser, read) {
  try {
    const session = await browser.newBrowserCDPSession();
    const info = await session.send('SystemInfo.getProcessInfo');
    let sum = 0;
    for (const p of info.processInfo) if (p.type === 'renderer') sum += read(p.id);
    await session.detach();
    return sum;
  } catch (e) {
    return null;
  }
}

// CPU time (ms) those threads have run, from the scheduler's own count (/proc/PID/task/PID/schedstat,
// nanoseconds). On a loaded machine the wall time also holds the time the page waited for a core;
// this does not.
async function rendererMainCpuMs(browser) {
  const ns = await rendererMainSum(browser, (pid) =>
    Number(fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]));
  return ns === null ? null : ns / 1e6;
}

// Their minor page faults (/proc/PID/task/PID/stat, field 10): a first touch of a WebAssembly memory
// page the page had not used yet is one, and costs the call its time.
function rendererMainMinorFaults(browser) {
  return rendererMainSum(browser, (pid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  });
}

// (g) The sandwich view of the heaviest functions of the 2.7M-node tree: the setting, the sandwich
// (callers and callees from the exact tree) and the layout of both graphs, as the page's
// settingNow() times them (and the renderer's CPU time over the call), then the first frame that
// draws them.
async function runSandwich(base, args) {
  const { browser, page } = await openOurs(base, '/?file=data/gen100k.pyro', args);
  try {
    let s = await waitStatus(page, (st) => st.table.rows > 0 && st.table.sort === 'total');
    const heaviest = s.table.first.slice(0, 5);
    await page.evaluate(() => window.pyroscopeViewer.settingNow('view', 'sandwich'));
    const results = [];
    for (const fn of heaviest) {
      // A user picks a function on an idle page. Right after the frames before, headless Chromium's
      // software GPU (SwiftShader, in the GPU process) is still drawing them on the same two cores:
      // the call then waited 40-90 ms of its wall time for a core (bench/README.md).
      await sleep(1000);
      if (results.length === 0) {
        const warm = (await status(page)).warm_up_ms;
        if (warm !== undefined) console.log(`  before it, the idle page's warm-up of the analysis code: ${warm < 0 ? 'not run' : warm.toFixed(1) + ' ms'}`);
      }
      const faultsBefore = await rendererMainMinorFaults(browser);
      const cpuBefore = await rendererMainCpuMs(browser);
      const r = await page.evaluate((name) => window.pyroscopeViewer.settingNow('function', name), fn);
      const cpuAfter = await rendererMainCpuMs(browser);
      const faultsAfter = await rendererMainMinorFaults(browser);
      const faults = faultsBefore === null || faultsAfter === null ? null : faultsAfter - faultsBefore;
      const cpuMs = cpuBefore === null || cpuAfter === null ? null : cpuAfter - cpuBefore;
      const frames = (await status(page)).frames;
      s = await waitStatus(page, (st) => st.frames >= frames + 2 && st.sandwich.function === fn);

      results.push({ function: fn, ms: r.ms, cpu_ms: cpuMs, minor_faults: faults, sandwich_ms: s.sandwich.ms, layout_ms: s.sandwich.layout_ms,
                     callers_nodes: s.sandwich.callers_nodes, callees_nodes: s.sandwich.callees_nodes,
                     total: s.sandwich.total, frame_ms: s.frame_ms, ui_ms: s.ui_ms });
      console.log(`  sandwich of ${fn}: ${r.ms.toFixed(1)} ms, renderer CPU ${cpuMs === null ? '?' : cpuMs.toFixed(1)} ms, ${faults ?? '?'} minor faults (sandwich ${s.sandwich.ms.toFixed(1)} ms, layout ` +
                  `${s.sandwich.layout_ms.toFixed(1)} ms; callers ${s.sandwich.callers_nodes} nodes, callees ` +
                  `${s.sandwich.callees_nodes} nodes), then a frame of ${s.frame_ms.toFixed(1)} ms (UI ${s.ui_ms.toFixed(1)} ms)`);
    }
    await page.screenshot({ path: path.join(args.work, 'sandwich.png') });
    return results;
  } finally {
    await browser.close();
  }
}

// (h) The tag breakdown over the 30-day file: its queries (a timeline per value and one per value over
// the selected range), as the session times them, and the frame that draws them.
async function runBreakdown(base, args) {
  const { browser, page } = await openOurs(base, '/?file=data/month.pyro', args);
  try {
    const results = [];
    for (let i = 0; i < 3; i++) {
      const frames = (await status(page)).frames;
      const t0 = Date.now();
      await page.evaluate((k) => window.pyroscopeViewer.setting('breakdown', k), i % 2 === 0 ? 'region' : '');
      if (i % 2 === 1) { await waitStatus(page, (st) => st.breakdown.key === ''); continue; }
      const s = await waitStatus(page, (st) => st.frames > frames && st.breakdown.key === 'region' && st.breakdown.lines.length > 0);
      results.push({ ms: s.breakdown.ms, values: s.breakdown.values, points: s.breakdown.lines[0].points,
                     span_days: (s.span.until - s.span.from) / 86400, frame_ms: s.frame_ms, ui_ms: s.ui_ms,
                     wall_ms: Date.now() - t0 });
      console.log(`  breakdown by region over ${((s.span.until - s.span.from) / 86400).toFixed(0)} days ` +
                  `(${s.breakdown.values} values, ${s.breakdown.lines[0].points} points): ${s.breakdown.ms.toFixed(1)} ms ` +
                  `of queries, in a frame of ${s.frame_ms.toFixed(1)} ms (UI ${s.ui_ms.toFixed(1)} ms)`);
    }
    await page.screenshot({ path: path.join(args.work, 'breakdown.png') });
    return results;
  } finally {
    await browser.close();
  }
}

(async () => {
  const args = parseArgs(process.argv);
  const data = prepareData(args);
  if (args.cases.includes('h')) prepareMonth(args);
  const speedscopeDir = path.join(repo, 'node_modules/speedscope/dist/release');
  if (!fs.existsSync(path.join(speedscopeDir, 'index.html'))) {
    console.error('bench.js: node_modules/speedscope is missing: run `npm ci`');
    process.exit(1);
  }
  const { server, url } = await h.serveStatic({ '/': args.site, '/data/': args.work, '/speedscope/': speedscopeDir });
  const wasmSize = ['viewer.wasm', 'viewer.js', 'viewer.data', 'index.html', 'viewer-page.js']
    .reduce((sum, f) => sum + fs.statSync(path.join(args.site, f)).size, 0);
  console.log(`profile: ${data.folded} (${MB(fs.statSync(data.folded).size)}), ${data.pyro} ` +
              `(${MB(fs.statSync(data.pyro).size)}); viewer static folder ${MB(wasmSize)} ` +
              `(viewer.wasm ${(fs.statSync(path.join(args.site, 'viewer.wasm')).size / 1024).toFixed(0)} KB)`);
  // The last case only measures frames: headless Chromium paces animation frames by an emulated vsync
  // that software WebGL (SwiftShader) keeps missing, so the frame rate there is the renderer's; with
  // the frame rate limit off, frames come as fast as the viewer and the renderer can make them.
  const cases = [
    ['(a) ours, folded text', '/?file=data/gen100k.folded', 'ours-zoom'],
    ['(b) ours, .pyro', '/?file=data/gen100k.pyro', 'ours'],
    ['(c) speedscope', '/speedscope/index.html#profileURL=' + encodeURIComponent('/data/gen100k.folded'), 'speedscope'],
    ['(d) ours, .pyro, zooming without the frame rate limit', '/?file=data/gen100k.pyro', 'ours-zoom-unlimited',
     ['--disable-gpu-vsync', '--disable-frame-rate-limit']],
    // Without a GPU, the first WebGL context of the page above waits 0.3-1.5 s for Chromium's GPU
    // process to start SwiftShader. With SwiftShader for WebGL only (what Chromium falls back to when
    // the GPU is unusable) it comes in ~10 ms, but every frame is then read back (~90 ms a frame).
    ['(e) ours, .pyro, SwiftShader for WebGL only', '/?file=data/gen100k.pyro', 'ours-webgl-only',
     ['--use-angle=swiftshader-webgl']],
    // (b) navigated to right after the browser's launch, its GPU process still starting.
    ['(f) ours, .pyro, in a browser launched for it', '/?file=data/gen100k.pyro', 'ours-cold', [], true],
  ];
  const results = [];
  const analysis = { sandwich: [], breakdown: [] };
  try {
    for (let run = 0; run < Number(args.runs); run++) {
      if (args.cases.includes('g')) {
        console.log('(g) ours, .pyro: the sandwich view of the five heaviest functions');
        analysis.sandwich.push(...await runSandwich(url, args));
      }
      if (args.cases.includes('h')) {
        console.log('(h) ours: the tag breakdown of a 30-day file');
        analysis.breakdown.push(...await runBreakdown(url, args));
      }
      for (const [name, target, kind, browserArgs, cold] of cases) {
        if (!args.cases.includes(name[1])) continue;
        const shot = path.join(args.work, `${kind}-${run}.png`);
        const r = await runCase(name, url, target, kind, args, shot, browserArgs || [], cold || false);
        r.run = run;
        results.push(r);
        console.log(`${name}: first flame graph ${r.paintMs === null ? 'never (timeout)' : (r.paintMs / 1000).toFixed(2) + ' s'}` +
                    `, peak JS heap ${MB(r.heapPeak)}, wasm memory ${MB(r.wasmBytes)}, renderer peak RSS ${MB(r.rssPeak)}` +
                    `  [${shot}]`);
        if (r.status) {
          const t = r.status.timings[0] || {};
          const f = (v) => (v === undefined || v === null ? '?' : (v / 1000).toFixed(2) + ' s');
          console.log(`    runtime ready ${f(r.status.ready_ms)}, file read ${f(t.read)}` +
                      (t.parseMs ? ` (parsing while reading: ${f(t.parseMs)})` : '') + `, opened ${f(t.opened)}, ` +
                      `painted ${f(r.paintMs)}; viewer log: ${r.status.log.join('; ')}`);
          console.log(`    start-up: ${Object.entries(r.status.marks || {}).map(([k, v]) => `${k} ${f(v)}`).join(', ')}`);
        }
        if (r.zoom) {
          const z = r.zoom;
          console.log(`    zooming ${z.nodes} nodes (${z.drawn_blocks} blocks drawn): UI p50 ${z.ui_p50.toFixed(2)} ms, ` +
                      `p95 ${z.ui_p95.toFixed(2)} ms; whole frame p50 ${z.frame_p50.toFixed(1)} ms; ` +
                      `animation frame interval p50 ${z.interval_p50.toFixed(1)} ms, p95 ${z.interval_p95.toFixed(1)} ms`);
        }
        if (r.status && (r.status.error || r.status.pageErrors.length)) {
          console.log(`    errors: ${r.status.error} ${r.status.pageErrors.join('; ')}`);
        }
      }
    }
  } finally {
    server.close();
  }
  const zoom = (prefix) => (results.find((r) => r.name.startsWith(prefix) && r.zoom) || {}).zoom || null;
  const best = (prefix, key) => Math.min(...results.filter((r) => r.name.startsWith(prefix) && r[key] > 0).map((r) => r[key]));
  const a = best('(a)', 'paintMs'), b = best('(b)', 'paintMs'), c = best('(c)', 'paintMs');
  const memory = (prefix) => Math.max(...results.filter((r) => r.name.startsWith(prefix)).map((r) => r.heapPeak + r.wasmBytes));
  const memA = memory('(a)'), memC = memory('(c)');
  const summary = {
    paint_seconds: { folded: a / 1000, pyro: b / 1000, speedscope: c / 1000,
                     pyro_swiftshader_webgl_only: best('(e)', 'paintMs') / 1000,
                     pyro_browser_just_launched: best('(f)', 'paintMs') / 1000 },
    // Every run's figure, not only the best one: this machine's runs spread by 10-20 %.
    paint_seconds_every_run: Object.fromEntries(['(a)', '(b)', '(c)', '(d)', '(e)', '(f)'].map((p) => [
      p, results.filter((r) => r.name.startsWith(p)).map((r) => (r.paintMs > 0 ? r.paintMs / 1000 : null))])
      .filter(([, v]) => v.length)),
    speedup_folded_vs_speedscope: c / a,
    memory_bytes: { folded_js_heap_plus_wasm: memA, speedscope_js_heap: memC },
    memory_ratio_folded_vs_speedscope: memA / memC,
    targets: {
      'folded at least 3x faster than speedscope': c / a >= 3,
      'folded at most 1/4 of speedscope memory': memA / memC <= 0.25,
      'pyro under one second': b < 1000,
      'pyro under one second in a browser launched for it': args.cases.includes('f') ? best('(f)', 'paintMs') < 1000 : null,
    },
    static_folder_bytes: wasmSize,
    zoom_frames: { paced: zoom('(a)'), unlimited: zoom('(d)') },
    analysis: {
      sandwich_heaviest_ms: analysis.sandwich.length ? Math.max(...analysis.sandwich.map((r) => r.ms)) : null,
      breakdown_30_days_ms: analysis.breakdown.length ? Math.max(...analysis.breakdown.map((r) => r.ms)) : null,
      targets: {
        'sandwich of the heaviest function under 150 ms': analysis.sandwich.length ? analysis.sandwich[0].ms < 150 : null,
        'tag breakdown over 30 days under 300 ms': analysis.breakdown.length ? Math.max(...analysis.breakdown.map((r) => r.ms)) < 300 : null,
      },
      sandwich: analysis.sandwich,
      breakdown: analysis.breakdown,
    },
    load_average: require('os').loadavg(),
  };
  console.log(JSON.stringify(summary, null, 2));
  fs.writeFileSync(path.join(args.work, 'results.json'), JSON.stringify({ summary, results }, null, 2));
})().catch((e) => { console.error(e); process.exit(1); });
