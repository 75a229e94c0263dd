// Takes the screenshots of docs/walkthrough.md: headless Chromium (playwright-core, through the viewer's
// browser-test harness) opens the WebAssembly viewer on the demo's three .pyro files and clicks through
// the walkthrough: the whole service, region=eu-north, a light vs a heavy period side by side, the diff.
// Each step is checked against the viewer's status() before its screenshot is taken, so a screenshot
// never shows a state other than the one the walkthrough describes.
//
// usage: node examples/rideshare/walkthrough_screenshots.js --site DIR --data DIR --out DIR [--period S]
//   --site    the built viewer (viewer/build-wasm.sh DIR), e.g. out/demo/site
//   --data    the folder with rideshare-{us-east,eu-north,ap-south}.pyro (scripts/demo.sh's output)
//   --out     where the PNGs go (docs/images)
//   --period  the demo's mutex period in seconds (default 30, scripts/demo.sh's default)
'use strict';

const fs = require('fs');
const path = require('path');
const h = require('../../tests/browser/harness');

function parseArgs(argv) {
  const args = { site: 'out/demo/site', data: 'out/demo', out: 'docs/images', period: '30' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      console.error(`usage: walkthrough_screenshots.js --site DIR --data DIR --out DIR [--period S] (bad argument '${argv[i]}')`);
      process.exit(2);
    }
    args[key] = argv[i + 1];
  }
  args.period = Number(args.period);
  if (!(args.period > 0) || args.period % 10 !== 0) {
    console.error('--period must be a positive multiple of 10 seconds');
    process.exit(2);
  }
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const status = (page) => page.evaluate(() => window.pyroscopeViewer.status());

async function waitFor(page, predicate, what, timeout = 60000) {
  const start = Date.now();
  let s = null;
  while (Date.now() - start < timeout) {
    s = await page.evaluate(() => (window.pyroscopeViewer && window.pyroscopeViewer.ready ? window.pyroscopeViewer.status() : null));
    if (s && predicate(s)) return s;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(s && { error: s.error, view: s.view, ranges: s.ranges, timeline: s.timeline, span: s.span })}`);
}

function widget(s, name) {
  const rect = s.widgets[name];
  if (!rect) throw new Error(`widget '${name}' is not on screen; have: ${Object.keys(s.widgets).join(', ')}`);
  return rect;
}

// Press and release in different frames (ImGui needs that), and software WebGL on a busy machine can
// take a few hundred milliseconds per frame: hold the button long enough for a frame to see it.
async function click(page, name, fx = 0.5) {
  const [x, y, w, hgt] = widget(await status(page), name);
  await page.mouse.move(x + fx * w, y + 0.5 * hgt);
  await sleep(100);
  await page.mouse.down();
  await sleep(frameMs(await status(page)));
  await page.mouse.up();
  await sleep(frameMs(await status(page)));
}

const frameMs = (s) => Math.min(2000, Math.max(150, 2 * (s.frame_ms_max || s.frame_ms || 100)));

async function drag(page, from, to) {
  const pause = frameMs(await status(page));
  await page.mouse.move(from[0], from[1]);
  await sleep(100);
  await page.mouse.down();
  await sleep(pause);
  for (let i = 1; i <= 8; i++) {
    await page.mouse.move(from[0] + ((to[0] - from[0]) * i) / 8, from[1]);
    await sleep(pause / 4);
  }
  await sleep(pause);
  await page.mouse.up();
  await sleep(pause);
}

// Hovers the flame graph `graph` (widget flame.<graph>) to find a block whose name starts with `name`:
// scans rows top-down at several x positions. Leaves the mouse there, so the tooltip shows.
async function hoverBlock(page, graph, name) {
  const s = await status(page);
  const [x, y, w] = widget(s, 'flame.' + graph);
  const g = s.flame[graph];
  const rowH = g.row_height / s.pixelRatio;
  for (let depth = 0; depth < g.depth + 1; depth++) {
    for (const fx of [0.5, 0.3, 0.7, 0.15, 0.85, 0.05, 0.95]) {
      await page.mouse.move(x + fx * w, y + (depth + 0.5) * rowH - g.scroll_y / s.pixelRatio);
      await sleep(70);
      const hovered = (await status(page)).flame[graph].hovered;
      if (hovered.startsWith(name)) return hovered;
    }
  }
  throw new Error(`no block named ${name}... in the ${graph} flame graph`);
}

async function shoot(page, out, name) {
  await sleep(300);  // let the tooltip settle for a frame or two
  const file = path.join(out, name);
  await page.screenshot({ path: file });
  console.log(`  ${file} (${Math.round(fs.statSync(file).size / 1024)} KB)`);
}

// The first whole period of the wanted kind (heavy: even periods of the unix clock) inside the span,
// skipping the span's first and last blocks (partial: the servers start before and stop after the load).
function period(span, length, heavy) {
  for (let t = Math.ceil((span.from + 10) / length) * length; t + length <= span.until - 10; t += length) {
    if (((t / length) % 2 === 0) === heavy) return { from: t, until: t + length };
  }
  throw new Error(`no whole ${heavy ? 'heavy' : 'light'} period of ${length} s in the data`);
}

async function main() {
  const args = parseArgs(process.argv);
  fs.mkdirSync(args.out, { recursive: true });
  const files = ['us-east', 'eu-north', 'ap-south'].map((r) => `rideshare-${r}.pyro`);
  for (const f of files) {
    if (!fs.existsSync(path.join(args.data, f))) throw new Error(`${path.join(args.data, f)} is missing: run scripts/demo.sh first`);
  }
  const { server, url } = await h.serveStatic({ '/': args.site, '/data/': args.data });
  const browser = await h.launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${url}/?${files.map((f) => 'file=data/' + f).join('&')}`);
    await page.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
    let s = await waitFor(page, (st) => st.flame_painted && st.files.length === 3, 'the three files');
    if (s.error) throw new Error('viewer error: ' + s.error);

    // 1. The whole service: order_car is the widest node under the request handling.
    console.log('1. all regions');
    const hovered = await hoverBlock(page, 'main', 'order_car');
    console.log('   hovering ' + hovered);
    await shoot(page, args.out, 'walkthrough-1-all-regions.png');

    // 2. Select region=eu-north in the tag explorer.
    console.log('2. region=eu-north');
    const all = s.flame.main.total;
    await click(page, 'tag:region=eu-north', 0.1);
    s = await waitFor(page, (st) => (st.selected_tags.region || []).join() === 'eu-north' && st.flame.main.total < all,
                      'region=eu-north selected');
    await hoverBlock(page, 'main', 'mutex_lock');
    await shoot(page, args.out, 'walkthrough-2-eu-north.png');

    // 3. Comparison: a light period (left, pink) against a heavy one (right, blue), picked by dragging
    //    on the timeline.
    console.log('3. comparison');
    const light = period(s.span, args.period, false);
    const heavy = period(s.span, args.period, true);
    await click(page, 'view.comparison');
    s = await waitFor(page, (st) => st.view === 'comparison', 'comparison view');
    const [tx, ty, tw, th] = widget(s, 'timeline');
    const at = (t) => tx + ((t - s.timeline.from) / (s.timeline.until - s.timeline.from)) * tw;
    // Drag from a little inside each period: the viewer snaps ranges to whole 10 s blocks.
    await click(page, 'drag.left');
    await waitFor(page, (st) => st.drag_target === 'left', 'dragging sets the left range');
    await drag(page, [at(light.from + 2), ty + th * 0.5], [at(light.until - 2), ty + th * 0.5]);
    await click(page, 'drag.right');
    await waitFor(page, (st) => st.drag_target === 'right', 'dragging sets the right range');
    await drag(page, [at(heavy.from + 2), ty + th * 0.5], [at(heavy.until - 2), ty + th * 0.5]);
    s = await waitFor(page, (st) => st.ranges.right.from === heavy.from && st.ranges.right.until === heavy.until &&
                                    st.ranges.left.from === light.from && st.ranges.left.until === light.until,
                      'left = light period, right = heavy period');
    console.log(`   left ${JSON.stringify(s.ranges.left)} (light ${JSON.stringify(light)}), right ${JSON.stringify(s.ranges.right)} (heavy ${JSON.stringify(heavy)})`);
    await page.mouse.move(5, 795);  // no tooltip: both graphs in full view
    await shoot(page, args.out, 'walkthrough-3-comparison.png');

    // 4. Diff of the same two ranges: mutex_lock red (grew), the rest green (shrank).
    console.log('4. diff');
    await click(page, 'view.diff');
    s = await waitFor(page, (st) => st.view === 'diff' && st.flame.diff && st.flame.diff.drawn_blocks > 0, 'diff view');
    console.log('   table sorted by ' + s.table.sort + ', first rows: ' + s.table.first.slice(0, 3).join(' | '));
    await hoverBlock(page, 'diff', 'mutex_lock');
    await shoot(page, args.out, 'walkthrough-4-diff.png');
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch((e) => {
  console.error('walkthrough_screenshots: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
