// Browser test of the WebAssembly viewer: headless Chromium loads the static build with test files and
// clicks through it with real mouse and keyboard events at the rectangles the viewer reports in
// window.pyroscopeViewer.status(). Asserts on that state and on pixels of real screenshots, which are
// kept in the artifacts folder (look at them).
//
// usage: node tests/browser/viewer.test.js --site build/wasm --data DIR --out DIR [--pyro build/tools/pyro]
//   --pyro: also test share files (`pyro export-html`) opened from file://.
//   DIR (data) holds rideshare.pyro, deep.pyro, sample.folded, corrupt.pyro (make_test_data writes them).
'use strict';

const fs = require('fs');
const path = require('path');
const h = require('./harness');

const DEFAULTS = { site: 'build/wasm', data: 'build/testdata', out: 'build/browser-artifacts', pyro: '' };
const REQUIRED = [];
const USAGE = 'viewer.test.js --site DIR --data DIR --out DIR [--pyro PYRO]';

const { expect, exception, finish } = h.checker();
const { sleep, status, settle, waitFor, widget, stableWidget, click, drag, screenshot, painted, findBlock, openViewer } =
  require('./viewer_page').viewerPage(expect);

async function testMainFlow(browser, base, out) {
  console.log('main flow: rideshare.pyro');
  const page = await openViewer(browser, base, '?file=data/rideshare.pyro');
  let s = await waitFor(page, (st) => st.flame_painted && st.files.length === 1, 'the flame graph');
  expect(s.error === '', 'no error after loading', s.error);
  expect(s.app === 'ride-sharing-app', 'the app with the most series is selected', s.app);
  expect(JSON.stringify(s.tags.region) === '["ap-south","eu-north","us-east"]', 'tag explorer lists the region values',
         s.tags);
  const all = s.flame.main.total;
  expect(all > 0 && s.flame.main.drawn_blocks > 5, 'flame graph drawn with samples', s.flame.main);
  expect(s.flame.main.merged_blocks >= 1, 'runs of narrow nodes are merged into blocks', s.flame.main);
  expect(s.timeline.samples === all, 'timeline sums to the flame graph total', [s.timeline.samples, all]);
  let image = await screenshot(page, out, '01-loaded.png');
  const flameRect = widget(s, 'flame.main');
  const p = painted(image, flameRect, [28, 29, 34]);
  expect(p.distinct >= 8 && p.share > 0.15, 'flame graph area is painted (many colours)', p);

  // Idle: no input, no frames.
  const idleStart = (await status(page)).frames;
  await sleep(1500);
  const idleEnd = (await status(page)).frames;
  expect(idleEnd === idleStart, 'an idle viewer draws no frames', [idleStart, idleEnd]);

  // Pick a tag.
  await click(page, 'tag:region=eu-north', { fx: 0.1 });
  s = await waitFor(page, (st) => (st.selected_tags.region || []).join() === 'eu-north', 'region=eu-north selected');
  expect(/region="eu-north"/.test(s.selector), 'selector filters on the tag', s.selector);
  s = await waitFor(page, (st) => st.flame.main.total < all, 'filtered flame graph');
  expect(s.flame.main.total > 0 && s.flame.main.total < all, 'tag filter shrinks the flame graph',
         [s.flame.main.total, all]);
  expect(s.timeline.samples === s.flame.main.total, 'timeline follows the tag filter', [s.timeline.samples]);
  const filtered = s.flame.main.total;

  // Comparison: two ranges on the timeline.
  await click(page, 'view.comparison');
  s = await waitFor(page, (st) => st.view === 'comparison', 'comparison view');
  const [tx, ty, tw, th] = widget(s, 'timeline');
  await click(page, 'drag.left');
  await drag(page, [tx + tw * 0.05, ty + th * 0.4], [tx + tw * 0.35, ty + th * 0.4]);
  s = await waitFor(page, (st) => st.ranges.left.from > st.span.from, 'left range selected by dragging');
  const span = s.span.until - s.span.from;
  const left = s.ranges.left;
  expect(Math.abs(left.from - (s.span.from + 0.05 * span)) <= 20 && Math.abs(left.until - (s.span.from + 0.35 * span)) <= 20,
         'left range matches the drag (5%..35%)', [left, s.span]);
  await click(page, 'drag.right');
  expect((await status(page)).drag_target === 'right', 'radio switches the drag to the right range');
  await drag(page, [tx + tw * 0.6, ty + th * 0.4], [tx + tw * 0.95, ty + th * 0.4]);
  s = await waitFor(page, (st) => st.ranges.right.from > s.span.from + 0.5 * span, 'right range selected by dragging');
  expect(s.ranges.left.from === left.from, 'left range kept when selecting the right one', s.ranges);
  expect(s.flame.left.total > 0 && s.flame.right.total > 0, 'both flame graphs have samples',
         [s.flame.left.total, s.flame.right.total]);
  expect(s.flame.left.total + s.flame.right.total < filtered, 'the two ranges hold less than the whole span',
         [s.flame.left.total, s.flame.right.total, filtered]);
  image = await screenshot(page, out, '02-comparison.png');
  const timelineRect = widget(s, 'timeline');
  const pink = h.countPixels(image, timelineRect, (r, g, b) => r > 180 && g < 150 && b > 120 && r > b);
  const blue = h.countPixels(image, timelineRect, (r, g, b) => b > 180 && r < 140);
  expect(pink.count > 100 && blue.count > 100, 'timeline shows the left range pink and the right one blue',
         [pink.count, blue.count]);
  for (const side of ['left', 'right']) {
    const q = painted(image, widget(s, 'flame.' + side), [28, 29, 34]);
    expect(q.distinct >= 6 && q.share > 0.1, `${side} flame graph painted`, q);
  }

  // Diff.
  await click(page, 'view.diff');
  s = await waitFor(page, (st) => st.view === 'diff' && st.flame.diff && st.flame.diff.drawn_blocks > 0, 'diff view');
  expect(s.flame.diff.left_total === s.flame.left?.total || s.flame.diff.left_total > 0, 'diff has a left side',
         s.flame.diff);
  expect(s.table.sort === 'change' && /check_driver_availability|mutex/.test(s.table.first[0]),
         'diff table sorted by change starts with what grew most', s.table);
  image = await screenshot(page, out, '03-diff.png');
  const diffRect = widget(s, 'flame.diff');
  const red = h.countPixels(image, diffRect, h.isRed);
  const green = h.countPixels(image, diffRect, h.isGreen);
  expect(red.count > 300, 'diff flame graph has red (grew) blocks', red.count);
  expect(green.count > 300, 'diff flame graph has green (shrank) blocks', green.count);

  // Search.
  await click(page, 'search');
  await page.keyboard.type('json', { delay: 40 });
  s = await waitFor(page, (st) => st.search === 'json', 'search term applied');
  expect(s.matched_share > 0 && s.matched_share < 1, 'search reports the matched share', s.matched_share);
  expect(s.table.rows >= 1 && s.table.first.every((n) => /json/i.test(n)), 'table filtered by the search', s.table);
  image = await screenshot(page, out, '04-search.png');
  const highlight = h.countPixels(image, widget(s, 'flame.diff'), (r, g, b) => b > 200 && r < 110 && g > 120);
  expect(highlight.count > 50, 'matches are highlighted in the flame graph', highlight.count);
  await page.keyboard.press('Escape');
  s = await waitFor(page, (st) => st.search === '', 'search cleared with Escape');

  // Focus a node by clicking it, then go back with the breadcrumb.
  await page.mouse.move(5, 5);
  const block = await findBlock(page, 'diff', 'flame.diff', 3, (n) => /^rideshare::(order|parse)/.test(n));
  expect(block !== null, 'found a block by hovering the flame graph', block);
  if (block) {
    await page.mouse.click(block.x, block.y);
    await settle(page);
    s = await waitFor(page, (st) => st.flame.diff.focus_path.length > 0, 'focus after a click');
    expect(s.flame.diff.focus_path[s.flame.diff.focus_path.length - 1] === block.name,
           'clicked block is focused', s.flame.diff.focus_path);
    expect(s.flame.diff.focus_total < s.flame.diff.total, 'focused subtree is smaller than the whole',
           [s.flame.diff.focus_total, s.flame.diff.total]);
    await screenshot(page, out, '05-focus.png');
    expect(!!s.widgets['crumbs.crumb.0'], 'breadcrumb shown for the focus');
    await click(page, 'crumbs.crumb.0');
    s = await waitFor(page, (st) => st.flame.diff.focus_path.length === 0, 'breadcrumb back to the root');
  }

  // Keyboard: orientation, theme, table sort.
  await page.mouse.move(5, 5);
  await page.keyboard.press('1');
  s = await waitFor(page, (st) => st.view === 'single', 'key 1: single view');
  await page.keyboard.press('f');
  s = await waitFor(page, (st) => st.orientation === 'flame', 'key f: flame orientation');
  await click(page, 'theme');
  s = await waitFor(page, (st) => st.theme === 'light', 'theme button: light');
  image = await screenshot(page, out, '06-light-flame.png');
  const light = h.countPixels(image, widget(s, 'sidebar'), (r, g, b) => r > 200 && g > 200 && b > 200);
  expect(light.share > 0.5, 'light theme paints light panels', light.share);
  await click(page, 'table.header.Function');
  s = await waitFor(page, (st) => st.table.sort === 'name', 'table sorted by function name');
  expect(s.table.first.length > 1 && s.table.first[0] <= s.table.first[1], 'names ascending', s.table.first);

  // Frame times: zoom the flame graph for 60 frames.
  await page.evaluate(() => window.pyroscopeViewer.benchZoom(60));
  s = await waitFor(page, (st) => !st.bench.running && st.bench.frames.length === 60, 'zoom benchmark frames', 60000);
  const ui = s.bench.ui_frames.slice().sort((a, b) => a - b);
  console.log(`  frame times while zooming: UI p50 ${ui[30].toFixed(2)} ms, max ${ui[59].toFixed(2)} ms; ` +
              `whole frame p50 ${s.bench.frames.slice().sort((a, b) => a - b)[30].toFixed(2)} ms`);
  expect(page.pageErrors.length === 0, 'no page errors', page.pageErrors);
  await page.close();
}

async function testErrorsAndFormats(browser, base, out, dataDir) {
  console.log('corrupt file');
  let page = await openViewer(browser, base, '?file=data/corrupt.pyro');
  let s = await waitFor(page, (st) => st.error !== '', 'an error for the corrupt file');
  expect(/corrupt\.pyro/.test(s.error) && s.error.length > 20, 'error names the file and the problem', s.error);
  expect(s.files.length === 0, 'nothing opened from the corrupt file', s.files);
  const image = await screenshot(page, out, '07-corrupt.png');
  const banner = widget(s, 'error');
  const red = h.countPixels(image, banner, (r, g, b) => r > 110 && g < 60 && b < 60);
  expect(red.share > 0.5, 'error banner painted', red.share);
  await page.close();

  console.log('missing file');
  page = await openViewer(browser, base, '?file=data/does-not-exist.pyro');
  s = await waitFor(page, (st) => st.error !== '', 'an error for a missing file');
  expect(/404/.test(s.error), 'HTTP status in the error', s.error);
  await page.close();

  console.log('folded text and several files at once');
  page = await openViewer(browser, base, '?file=data/sample.folded&file=data/deep.pyro');
  s = await waitFor(page, (st) => st.files.length === 2 && st.flame_painted, 'two files as one data set');
  expect(s.apps.includes('sample') && s.apps.includes('deep-app'), 'apps of both files listed', s.apps);
  await click(page, 'app');
  expect(!!(await stableWidget(page, 'app:sample')), 'application combo opens with its items');
  await click(page, 'app:sample');
  s = await waitFor(page, (st) => st.app === 'sample' && st.flame.main.total > 0, 'folded app selected');
  expect(s.flame.main.total === 205, 'folded text imported with all its samples', s.flame.main.total);

  console.log('a gzipped pprof heap profile: its types and units (stb inflates it in the browser)');
  await page.close();
  page = await openViewer(browser, base, '?file=data/heap.pb.gz');
  s = await waitFor(page, (st) => st.app === 'heap' && st.flame_painted, 'the pprof opened');
  expect(s.files[0].kind === 'pprof' && s.error === '', 'told by its content, no error', [s.files, s.error]);
  expect(JSON.stringify(s.types) === JSON.stringify(['alloc_space', 'inuse_space']) && s.type === 'alloc_space' &&
         s.unit === 'bytes', 'both profile types, the first selected, in bytes', [s.types, s.type, s.unit]);
  expect(s.flame.main.total === 80 * 1024 * 1024, 'alloc_space holds every byte of the profile', s.flame.main.total);
  await click(page, 'type');
  await click(page, 'type:inuse_space');
  s = await waitFor(page, (st) => st.type === 'inuse_space' && st.flame.main.total > 0, 'inuse_space selected');
  expect(s.aggregation === 'average' && s.flame.main.total === 4 * 1024 * 1024, 'inuse_space: 4 MiB, an average',
         [s.aggregation, s.flame.main.total]);
  const cacheFill = await findBlock(page, 'main', 'flame.main', 2, (n) => /cache::fill/.test(n));
  if (expect(cacheFill !== null, 'found cache::fill by hovering', cacheFill)) {
    await page.mouse.move(cacheFill.x, cacheFill.y);
    await settle(page, 3);
    await screenshot(page, out, '08a-heap-pprof.png');
  }
  await page.close();
  page = await openViewer(browser, base, '?file=data/sample.folded&file=data/deep.pyro');
  await waitFor(page, (st) => st.files.length === 2 && st.flame_painted, 'two files again');

  console.log('10,000-frame stacks');
  await click(page, 'app');
  await click(page, 'app:deep-app');
  s = await waitFor(page, (st) => st.app === 'deep-app' && st.flame.main.depth > 0, 'deep app selected');
  expect(s.flame.main.depth === 10001, 'all 10,000 frames laid out (plus the root)', s.flame.main.depth);
  const deepBlock = await findBlock(page, 'main', 'flame.main', 8, (n) => /level_7\(/.test(n));
  if (expect(deepBlock !== null, 'found a frame of the deep stack by hovering', deepBlock)) {
    await page.mouse.click(deepBlock.x, deepBlock.y);
    s = await waitFor(page, (st) => st.flame.main.focus_path.length === 8, 'deep frame focused');
  }
  // Scroll far down the 10,000 rows with the wheel (each notch is three rows).
  const [fx, fy, fw, fh] = widget(s, 'flame.main');
  await page.mouse.move(fx + fw / 2, fy + fh / 2);
  for (let i = 0; i < 40; i++) {
    await page.mouse.wheel(0, 100 * 50);
    await settle(page, 1);
  }
  s = await status(page);
  expect(s.flame.main.scroll_y > 1000 * s.flame.main.row_height, 'scrolled past row 1,000', s.flame.main.scroll_y);
  expect(s.flame.main.drawn_blocks > 5, 'deep rows are drawn after scrolling', s.flame.main.drawn_blocks);
  await screenshot(page, out, '08-deep.png');
  await page.close();

  console.log('HiDPI (device pixel ratio 2)');
  page = await openViewer(browser, base, '?file=data/rideshare.pyro', 2);
  s = await waitFor(page, (st) => st.flame_painted, 'the flame graph at ratio 2');
  expect(s.scale === 2 && s.pixelRatio === 2, 'UI scaled by the device pixel ratio', [s.scale, s.pixelRatio]);
  await click(page, 'view.diff');
  s = await waitFor(page, (st) => st.view === 'diff', 'a click in CSS pixels lands on the right widget');
  const hidpi = await screenshot(page, out, '09-hidpi.png');
  expect(hidpi.width === 2800, 'screenshot has device pixels', hidpi.width);
  const [dx, dy, dw, dh] = widget(s, 'flame.diff');
  const red2 = h.countPixels(hidpi, [dx * 2, dy * 2, dw * 2, dh * 2], h.isRed);
  expect(red2.count > 1000, 'diff painted at full resolution', red2.count);
  await page.close();

  console.log('open button and file picker; drag and drop');
  page = await openViewer(browser, base, '');
  s = await waitFor(page, (st) => !!st.widgets.open, 'the first frame of an empty viewer');  // drawn asynchronously
  expect(s.files.length === 0 && !!s.widgets.open, 'empty viewer shows the Open button');
  const chooser = page.waitForEvent('filechooser');
  await click(page, 'open');
  const fileChooser = await chooser;
  await fileChooser.setFiles(path.join(dataDir, 'rideshare.pyro'));
  s = await waitFor(page, (st) => st.files.length === 1 && st.flame_painted, 'file from the picker');
  expect(s.files[0].name === 'rideshare.pyro', 'picker file opened', s.files);
  const folded = fs.readFileSync(path.join(dataDir, 'sample.folded'));
  await page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'dropped.folded'));
    window.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, Array.from(folded));
  s = await waitFor(page, (st) => st.files.length === 1 && st.files[0].name === 'dropped.folded', 'dropped file');
  expect(s.app === 'dropped' && s.error === '', 'dropped folded file opened as its own data set', [s.app, s.error]);
  await page.close();
}

// Embedding: a host page with iframes of different queries and sizes, each with its own flame graph;
// bad parameters show a message inside their frame.
async function testEmbedding(browser, base, out) {
  console.log('embedding: a host page with two iframes and a bad one');
  const data = 'file=data/rideshare.pyro';
  const frames = [
    { id: 'eu', width: 640, height: 320, query: `${data}&embed=1&query=${encodeURIComponent('ride-sharing-app{region="eu-north"}')}` },
    { id: 'car', width: 420, height: 260,
      query: `${data}&embed=1&view=flamegraph&query=${encodeURIComponent('ride-sharing-app{vehicle="car"}')}&from=now-1000w&until=now` },
    { id: 'bad', width: 420, height: 200, query: `${data}&embed=1&view=sideways&veiw=diff` },
  ];
  const host = '<!doctype html><body style="margin:0;background:#fff">' + frames.map((f) =>
    `<iframe id="${f.id}" src="${base}/?${f.query}" width="${f.width}" height="${f.height}" ` +
    'style="border:0;display:block;margin:8px"></iframe>').join('') + '</body>';
  fs.writeFileSync(path.join(out, 'embed-host.html'), host);
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  page.on('pageerror', (e) => console.log('  page error: ' + e.message));
  await page.goto(base + '/artifacts/embed-host.html');
  const frameOf = (id) => page.frames().find((f) => f.url().includes(frames.find((x) => x.id === id).query));
  const frameStatus = async (id, predicate, what) => {
    const deadline = Date.now() + 30000;
    let s = null;
    while (Date.now() < deadline) {
      const frame = frameOf(id);
      s = frame ? await frame.evaluate(() => (window.pyroscopeViewer && window.pyroscopeViewer.ready
        ? window.pyroscopeViewer.status() : null)).catch(() => null) : null;
      if (s && predicate(s)) return s;
      await sleep(100);
    }
    expect(false, 'timed out waiting for ' + what, s && { error: s.error, view: s.view });
    return s;
  };
  const eu = await frameStatus('eu', (st) => st.flame_painted, 'the eu-north frame');
  const car = await frameStatus('car', (st) => st.flame_painted, 'the car frame');
  const bad = await frameStatus('bad', (st) => st.error !== '' && st.flame_painted, 'the bad frame\'s message');
  expect(eu.selector === 'ride-sharing-app.cpu{region="eu-north"}', 'first frame queries eu-north', eu.selector);
  expect(car.selector === 'ride-sharing-app.cpu{vehicle="car"}', 'second frame queries car', car.selector);
  expect(car.panels === 'flamegraph' && car.view === 'single', 'view=flamegraph', [car.view, car.panels]);
  expect(eu.flame.main.total > 0 && car.flame.main.total > 0 && eu.flame.main.total !== car.flame.main.total,
         'each frame shows its own totals', [eu.flame.main.total, car.flame.main.total]);
  expect(!eu.widgets.sidebar && !eu.widgets.timeline, 'embed shows no sidebar or timeline', Object.keys(eu.widgets));
  expect(!!eu.widgets['embed.search'], 'embed has a search box');
  // Each flame graph fits its frame: as wide as the frame, less the window padding.
  for (const [s, f] of [[eu, frames[0]], [car, frames[1]]]) {
    const [, , w, hgt] = s.widgets['flame.main'];
    expect(w > f.width - 40 && w <= f.width && hgt > f.height - 90 && hgt <= f.height,
           `the ${f.id} flame graph fits its ${f.width}x${f.height} frame`, [w, hgt]);
  }
  expect(/view must be flamegraph, table, both, comparison or diff, not 'sideways'/.test(bad.error),
         'the bad frame says what is wrong with view=', bad.error);
  expect(/unknown setting 'veiw'/.test(bad.error), 'and names the misspelt parameter', bad.error);
  expect(bad.flame_painted, 'the data still shows under the message', bad.flame.main.total);

  // The same selection through the full viewer's app/tags parameters gives the same totals.
  const full = await openViewer(browser, base, `?${data}&app=ride-sharing-app&tags=region=eu-north`);
  const fs2 = await waitFor(full, (st) => st.flame_painted && st.selector.includes('eu-north'), 'full viewer, eu-north');
  expect(fs2.flame.main.total === eu.flame.main.total, 'embedded total equals the full viewer\'s', [fs2.flame.main.total, eu.flame.main.total]);
  await full.close();

  // A search typed into the embedded frame highlights matches there only.
  const euFrame = frameOf('eu');
  const [sx, sy, sw, sh] = eu.widgets['embed.search'];
  const box = await page.locator('#eu').boundingBox();
  await page.mouse.click(box.x + sx + sw / 2, box.y + sy + sh / 2);
  await sleep(500);  // the box takes the keys once a frame has seen the click (before that: shortcuts)
  await page.keyboard.type('mutex');
  const themed = await frameOf('eu').evaluate(() => window.pyroscopeViewer.status());
  expect(themed.theme === eu.theme, 'typing into the search box is not taken as shortcuts', [eu.theme, themed.theme]);
  const searched = await frameStatus('eu', (st) => st.search === 'mutex', 'search in the frame');
  expect(searched.flame.main.matched_share > 0, 'search matches inside the embedded flame graph', searched.flame.main.matched_share);
  const carAfter = await euFrame.evaluate(() => 0).then(() => frameOf('car').evaluate(() => window.pyroscopeViewer.status()));
  expect(carAfter.search === '', 'the other frame is not affected', carAfter.search);

  await sleep(300);
  const image = h.decodePng(await page.screenshot({ path: path.join(out, '10-embed-host.png') }));
  for (const f of frames) {
    const r = await page.locator('#' + f.id).boundingBox();
    const painted = h.countPixels(image, [r.x, r.y, r.width, r.height], (r0, g, b) => !(r0 > 250 && g > 250 && b > 250));
    expect(painted.share > 0.5, `frame ${f.id} painted at its size`, painted.share);
  }
  const br = await page.locator('#bad').boundingBox();
  const red = h.countPixels(image, [br.x, br.y, br.width, br.height], (r0, g, b) => r0 > 110 && g < 60 && b < 60);
  expect(red.count > 500, 'the bad frame shows its message in a red banner', red.count);
  await page.close();
}

// A share file from `pyro export-html` opens from file:// with no server, showing the saved selection
// and view; its totals are those of the same selection in the served viewer.
async function testShareFile(browser, base, args) {
  console.log('share file (pyro export-html) from file://');
  const { execFileSync } = require('child_process');
  const share = path.resolve(args.out, 'share-eu-north.html');
  try { fs.unlinkSync(share); } catch (e) { /* absent */ }
  execFileSync(args.pyro, ['export-html', path.join(args.data, 'rideshare.pyro'), 'ride-sharing-app{region="eu-north"}',
                           '--view', 'flamegraph', '--viewer', args.site, '-o', share], { stdio: 'inherit' });
  const size = fs.statSync(share).size;
  expect(size > 500000 && size < 8000000, 'one self-contained file of a few MB', size);
  const html = fs.readFileSync(share, 'utf8');
  expect(!/src="viewer(-page)?\.js"/.test(html) && !/viewer\.wasm"/.test(html), 'no references to other files');

  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const requests = [];
  page.on('request', (r) => { if (!r.url().startsWith('file:') && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) requests.push(r.url()); });
  await page.goto('file://' + share);
  const s = await waitFor(page, (st) => st.flame_painted, 'the shared flame graph');
  const full = await openViewer(browser, base, '?file=data/rideshare.pyro&app=ride-sharing-app&tags=region=eu-north');
  const f = await waitFor(full, (st) => st.flame_painted && st.selector.includes('eu-north'), 'the served viewer');
  await full.close();
  expect(s.flame.main.total === f.flame.main.total && s.flame.main.total > 0, 'shared totals equal the served viewer\'s',
         [s.flame.main.total, f.flame.main.total]);
  expect(s.app === 'ride-sharing-app' && s.panels === 'flamegraph', 'saved app and view restored', [s.app, s.panels]);
  expect(s.error === '' && requests.length === 0, 'no error and no network request', [s.error, requests]);
  const image = await screenshot(page, args.out, '11-share-file.png');
  const [x, y, w, hh] = widget(s, 'flame.main');
  const painted = h.countPixels(image, [x, y, w, Math.min(hh, 8 * s.flame.main.row_height)],
                                (r, g, b) => r > 150 && g > 60 && b < 120);
  expect(painted.count > 2000, 'flame graph drawn from the share file', painted.count);
  await page.close();
}

// Export > item: opens the menu, clicks the item, saves the download as out/saveAs and checks that it
// is named after the app and the range (app-FROM-UNTIL.extension). Returns the saved path.
async function exportDownload(page, item, out, saveAs, extension) {
  await click(page, 'export');
  expect(!!(await stableWidget(page, 'export:' + item)), `the Export menu shows ${item}`);
  const download = page.waitForEvent('download', { timeout: 30000 });
  await click(page, 'export:' + item);
  const file = await download;
  const saved = path.resolve(out, saveAs);
  await file.saveAs(saved);
  expect(new RegExp(`^ride-sharing-app-\\d+-\\d+\\.${extension}$`).test(file.suggestedFilename()),
         `the ${item} download is named after app and range`, file.suggestedFilename());
  return saved;
}

// Exports from the viewer: the folded download is what `pyro export-folded` writes for the same
// selection, and importing it gives the same tree back; the PNG is the flame graph's pixels.
async function testFoldedExport(browser, base, args) {
  console.log('folded export from the viewer');
  const { execFileSync } = require('child_process');
  const page = await openViewer(browser, base, '?file=data/rideshare.pyro&app=ride-sharing-app&tags=region=eu-north');
  await waitFor(page, (st) => st.flame_painted && st.selector.includes('eu-north'), 'eu-north selected');
  const exported = await exportDownload(page, 'folded', args.out, 'exported-eu-north.folded', 'folded');
  const cli = path.resolve(args.out, 'cli-eu-north.folded');
  for (const f of [cli, path.resolve(args.out, 'roundtrip.pyro'), path.resolve(args.out, 'roundtrip.folded')]) {
    try { fs.unlinkSync(f); } catch (e) { /* absent */ }
  }
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'] };
  execFileSync(args.pyro, ['export-folded', path.join(args.data, 'rideshare.pyro'), 'ride-sharing-app{region="eu-north"}',
                           '-o', cli], quiet);
  const text = fs.readFileSync(exported, 'utf8');
  expect(text.length > 100 && text === fs.readFileSync(cli, 'utf8'), 'the download equals pyro export-folded',
         [text.length, fs.statSync(cli).size]);
  execFileSync(args.pyro, ['import-folded', exported, '--app', 'roundtrip', '--at', '1700000000',
                           '-o', path.resolve(args.out, 'roundtrip.pyro')], quiet);
  execFileSync(args.pyro, ['export-folded', path.resolve(args.out, 'roundtrip.pyro'), 'roundtrip{}',
                           '-o', path.resolve(args.out, 'roundtrip.folded')], quiet);
  expect(fs.readFileSync(path.resolve(args.out, 'roundtrip.folded'), 'utf8') === text,
         'folded export -> import -> the same tree');

  // PNG of the flame graph: the canvas' pixels in the graph's rectangle, without the menu.
  const shown = await status(page);
  const pngPath = await exportDownload(page, 'png', args.out, '12-exported-flame-graph.png', 'png');
  const image = h.decodePng(fs.readFileSync(pngPath));
  const [, , gw, gh] = widget(shown, 'flame.main');
  expect(Math.abs(image.width - gw) <= 2 && Math.abs(image.height - gh) <= 2, 'PNG is the flame graph\'s size',
         [image.width, image.height, gw, gh]);
  const blocks = h.countPixels(image, [0, 0, image.width, Math.min(image.height, 6 * shown.flame.main.row_height)],
                               (r, g, b) => r > 150 && g > 60 && b < 120);
  expect(blocks.share > 0.3, 'PNG shows the flame graph\'s blocks', blocks.share);
  await page.close();
}

// Slice and share file from the viewer's Export menu, in the diff view: the .pyro holds the selected
// series in both ranges and nothing else (the same stacks as `pyro query` of the source gives), and the
// share .html opens from file:// with no server in the same view, ranges, tags and totals.
async function testSliceAndShareExport(browser, base, args) {
  console.log('slice and share file from the viewer');
  const { execFileSync } = require('child_process');
  const page = await openViewer(browser, base, '?file=data/rideshare.pyro&app=ride-sharing-app&tags=region=eu-north');
  const loaded = await waitFor(page, (st) => st.flame_painted && st.selector.includes('eu-north'), 'eu-north selected');
  const { from, until } = loaded.span;
  const step = 10, blocks = Math.floor((until - from) / step);
  const left = { from: from + 2 * step, until: from + Math.floor(blocks / 3) * step };
  const right = { from: from + Math.floor(blocks / 2) * step, until: until - 3 * step };
  for (const [k, v] of [['view', 'diff'], ['from', left.from], ['until', left.until], ['right_from', right.from],
                        ['right_until', right.until]]) {
    await page.evaluate(([key, value]) => window.pyroscopeViewer.setting(key, value), [k, String(v)]);
  }
  const shown = await waitFor(page, (st) => st.view === 'diff' && st.flame.diff && st.flame.diff.right_total > 0 &&
                                            st.ranges.right.from === right.from, 'the diff of two ranges');
  expect(shown.share_unavailable === '', 'Share is available in the served viewer', shown.share_unavailable);

  const quiet = { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] };
  const folded = (file, range) => execFileSync(args.pyro, ['query', file, 'ride-sharing-app{region="eu-north"}',
                                                           '--from', String(range.from), '--until', String(range.until)], quiet);
  const slicePath = await exportDownload(page, 'slice', args.out, 'exported-slice.pyro', 'pyro');
  const source = path.join(args.data, 'rideshare.pyro');
  for (const [name, range] of [['left', left], ['right', right]]) {
    const want = folded(source, range), got = folded(slicePath, range);
    expect(want.length > 100 && got === want, `the slice's ${name} range has the source's stacks`, [got.length, want.length]);
  }
  const everything = (file) => execFileSync(args.pyro, ['query', file, 'ride-sharing-app', '--format', 'timeline'], quiet);
  const samples = everything(slicePath).trim().split('\n').map((line) => line.split(/\s+/).map(Number))
    .filter(([, n]) => n > 0);
  const inRanges = samples.every(([t]) => (t >= left.from && t < left.until) || (t >= right.from && t < right.until));
  expect(samples.length > 0 && inRanges, 'the slice has no blocks outside the two ranges', samples.length);
  const info = execFileSync(args.pyro, ['info', slicePath], quiet);
  expect(/series +3\b/.test(info) && !/us-east|ap-south/.test(info), 'the slice holds the eu-north series only',
         info.split('\n').filter((l) => /series|region/.test(l)));

  const sharePath = await exportDownload(page, 'share', args.out, 'exported-share.html', 'html');
  await page.close();

  const opened = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const requests = [];
  opened.on('request', (r) => { if (!/^(file|data|blob):/.test(r.url())) requests.push(r.url()); });
  await opened.goto('file://' + sharePath);
  const s = await waitFor(opened, (st) => st.flame_painted && st.view === 'diff', 'the share file\'s diff');
  expect(s.ranges.left.from === left.from && s.ranges.left.until === left.until &&
         s.ranges.right.from === right.from && s.ranges.right.until === right.until, 'the share file keeps both ranges',
         s.ranges);
  expect(JSON.stringify(s.selected_tags) === JSON.stringify(shown.selected_tags), 'and the checked tags',
         [s.selected_tags, shown.selected_tags]);
  expect(s.flame.diff.left_total === shown.flame.diff.left_total && s.flame.diff.right_total === shown.flame.diff.right_total,
         'and the totals of both sides', [s.flame.diff, shown.flame.diff].map((d) => [d.left_total, d.right_total]));
  expect(s.error === '' && requests.length === 0, 'no error and no network request', [s.error, requests]);
  expect(s.share_unavailable.includes('share file'), 'a share file says why it cannot share itself', s.share_unavailable);
  const image = await screenshot(opened, args.out, '13-exported-share-file.png');
  const area = widget(s, 'flame.diff');
  const red = h.countPixels(image, area, (r, g, b) => r > 150 && g < 110 && b < 110);
  const green = h.countPixels(image, area, (r, g, b) => g > 120 && r < 120 && b < 130);
  expect(red.count > 200 && green.count > 200, 'the diff colours are drawn from the share file', [red.count, green.count]);
  await opened.close();
}

(async () => {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, REQUIRED);
  fs.mkdirSync(args.out, { recursive: true });
  for (const f of ['index.html', 'viewer.js', 'viewer.wasm']) {
    if (!fs.existsSync(path.join(args.site, f))) {
      console.error(`viewer.test.js: ${path.join(args.site, f)} is missing: run viewer/build-wasm.sh first`);
      process.exit(1);
    }
  }
  const { server, url } = await h.serveStatic({ '/': args.site, '/data/': args.data, '/artifacts/': args.out });
  const browser = await h.launchBrowser();
  try {
    await testMainFlow(browser, url, args.out);
    await testErrorsAndFormats(browser, url, args.out, args.data);
    await testEmbedding(browser, url, args.out);
    if (args.pyro) {
      await testShareFile(browser, url, args);
      await testFoldedExport(browser, url, args);
      await testSliceAndShareExport(browser, url, args);
    } else {
      console.log('share files, slices and folded export: not tested (no --pyro)');
    }
  } catch (e) {
    exception(e);
  } finally {
    await browser.close();
    server.close();
  }
  finish(`screenshots in ${args.out}`);
})();
