// Browser test of the viewer's analysis features (issue 15), with real mouse and keyboard events in
// headless Chromium: the sandwich view (and its totals for every function of the rideshare data against
// `pyro query --format table`), tag breakdown over time with one click to a value against the rest,
// short and merged C++ names, collapsed recursion, diff modes, search with regular expressions and
// exclusions and focus on matches, the keyboard, and permalinks (Copy link, then the link in a new page
// gives the same status). Screenshots are kept in the artifacts folder: look at them.
//
// usage: node tests/browser/analysis.test.js --site build/wasm --data DIR --out DIR --pyro build/tools/pyro
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const h = require('./harness');

const DEFAULTS = { site: 'build/wasm', data: 'build/testdata', out: 'build/browser-artifacts', pyro: '' };
const REQUIRED = ['pyro'];
const USAGE = 'analysis.test.js --site DIR --data DIR --out DIR --pyro PYRO';

const { expect, exception, finish } = h.checker();
const { sleep, status, settle, waitFor, widget, stableWidget, click, screenshot, painted, findBlock, openViewer } =
  require('./viewer_page').viewerPage(expect);

const BACKGROUND = [28, 29, 34];
const FILE = '?file=data/rideshare.pyro';

// `pyro query --format table` of the whole rideshare app (or of file's selector): [{name, self, total}].
function pyroTable(args, file = path.join(args.data, 'rideshare.pyro'), selector = 'ride-sharing-app') {
  const text = execFileSync(args.pyro, ['query', file, selector, '--format', 'table'],
                            { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const rows = [];
  for (const line of text.split('\n').slice(1)) {
    const m = /^\s*(\d+)\s+\S+\s+(\d+)\s+\S+\s{2}(.*)$/.exec(line);
    if (m) rows.push({ name: m[3], self: Number(m[1]), total: Number(m[2]) });
  }
  return rows;
}

async function rightClick(page, x, y) {
  await page.mouse.move(x, y);
  await settle(page, 2);
  await page.mouse.down({ button: 'right' });
  await page.mouse.up({ button: 'right' });
  await settle(page);
}

async function key(page, name) {
  await page.keyboard.press(name);
  await settle(page, 2);
}

async function testSandwich(browser, base, args) {
  console.log('sandwich view: right-click a block, pick functions in the table, every function\'s totals');
  const page = await openViewer(browser, base, FILE);
  let s = await waitFor(page, (st) => st.flame_painted && st.table.rows > 0, 'the flame graph and its table');
  // Left idle after its first flame graph, the page runs the analysis code once on a made-up tree, so
  // V8 has optimised it before the first sandwich (viewer::warm_up_analysis).
  s = await waitFor(page, (st) => st.warm_up_ms >= 0, 'the idle page\'s warm-up of the analysis code');
  expect(s.warm_up_ms < 2000, 'the warm-up is short', s.warm_up_ms);
  await page.mouse.move(5, 5);
  const block = await findBlock(page, 'main', 'flame.main', 4, (n) => /find_nearest_vehicle/.test(n));
  if (expect(block !== null, 'found find_nearest_vehicle by hovering', block)) {
    await rightClick(page, block.x, block.y);
    await click(page, 'flame.main.menu.sandwich');
    s = await waitFor(page, (st) => st.view === 'sandwich' && st.sandwich.found, 'the sandwich view');
    expect(s.function === block.name, 'the right-clicked function is the sandwich\'s', [s.function, block.name]);
    expect(s.flame.callers.total === s.sandwich.total && s.flame.callees.total === s.sandwich.total,
           'callers and callees both total the function', [s.flame.callers.total, s.flame.callees.total, s.sandwich.total]);
    const image = await screenshot(page, args.out, '20-sandwich.png');
    for (const g of ['callers', 'callees']) {
      const p = painted(image, widget(s, 'flame.' + g), BACKGROUND);
      expect(p.distinct >= 4 && s.flame[g].drawn_blocks >= 3, `the ${g} graph is painted`, [p, s.flame[g].drawn_blocks]);
    }
  }
  // In the sandwich view a table row picks the function.
  s = await status(page);
  const firstRow = s.table.first[0];
  await click(page, 'table.row.0', { fx: 0.2 });
  s = await waitFor(page, (st) => st.function === firstRow && st.sandwich.found, 'a table row picks the function');
  expect(s.sandwich.total > 0, 'its sandwich', s.sandwich);

  // Every function of the data: the sandwich's totals are pyro query --format table's, to the sample.
  const table = pyroTable(args);
  expect(table.length > 400, 'pyro query --format table lists the functions', table.length);
  const tableBefore = (await waitFor(page, (st) => st.table.rows > 0, 'the table')).table;
  const results = await page.evaluate((names) => names.map((name) => {
    const r = window.pyroscopeViewer.settingNow('function', name);
    const st = window.pyroscopeViewer.status();
    return { name, found: st.sandwich.found, total: st.sandwich.total, self: st.sandwich.self,
             callers: st.sandwich.callers_nodes, ms: r.ms };
  }), table.map((r) => r.name));
  const wrong = results.filter((r, i) => !r.found || r.total !== table[i].total || r.self !== table[i].self);
  expect(wrong.length === 0, `the sandwich of each of the ${table.length} functions totals what pyro query --format table says`,
         wrong.slice(0, 5));
  // The table lists the view tree's functions: a new sandwich leaves it as it is (building it again
  // cost each sandwich a pass over the whole tree).
  s = await waitFor(page, (st) => st.table.rows > 0, 'the table after the sandwiches');
  expect(s.table.builds === tableBefore.builds && s.table.rows === tableBefore.rows,
         'the sandwiches did not build the function table again', [tableBefore.builds, s.table.builds]);
  const slowest = Math.max(...results.map((r) => r.ms));
  console.log(`  ${results.length} sandwiches, slowest ${slowest.toFixed(1)} ms (setting, sandwich and layout)`);

  // A recursive function counts once: the parser's parse_value calls itself through parse_array.
  const recursive = table.find((r) => r.name === 'json::parse_value(json::Cursor&)');
  s = await waitFor(page, () => true, 'a frame');
  await page.evaluate(() => window.pyroscopeViewer.settingNow('function', 'json::parse_value(json::Cursor&)'));
  s = await waitFor(page, (st) => st.function === 'json::parse_value(json::Cursor&)' && st.flame.callees.total > 0, 'the recursive parser');
  expect(recursive && s.sandwich.total === recursive.total && s.flame.callees.depth >= 7,
         'the recursive parser: counted once, its recursion inside the callees', [s.sandwich, recursive, s.flame.callees.depth]);
  await screenshot(page, args.out, '21-sandwich-recursive.png');
  expect(page.pageErrors.length === 0, 'no page errors', page.pageErrors);
  await page.close();

  // The view from the URL, with short names.
  const fn = 'rideshare::check_driver_availability(Region)';
  const direct = await openViewer(browser, base, `${FILE}&view=sandwich&function=${encodeURIComponent(fn)}&names=short`);
  s = await waitFor(direct, (st) => st.sandwich.found && st.flame.callees.drawn_blocks > 0, 'sandwich from the URL');
  const row = table.find((r) => r.name === fn);
  expect(s.view === 'sandwich' && s.names === 'short' && s.sandwich.total === row.total, 'view, function and names from the URL',
         [s.view, s.names, s.sandwich.total, row.total]);
  const image = await screenshot(direct, args.out, '22-sandwich-url-short-names.png');
  expect(painted(image, widget(s, 'flame.callers'), BACKGROUND).distinct >= 4, 'painted');
  await direct.close();
}

async function testBreakdown(browser, base, args) {
  console.log('tag breakdown over time; a value; its diff against the rest');
  const page = await openViewer(browser, base, FILE);
  let s = await waitFor(page, (st) => st.flame_painted, 'the flame graph');
  await click(page, 'breakdown');
  await click(page, 'breakdown:region');
  s = await waitFor(page, (st) => st.breakdown.key === 'region' && st.breakdown.lines.length === 3, 'a line per region');
  const shares = s.breakdown.lines.reduce((sum, l) => sum + l.share, 0);
  expect(Math.abs(shares - 1) < 1e-9 && s.breakdown.lines[0].value === 'eu-north',
         'eu-north has the biggest share; the shares add up to 1', s.breakdown.lines);
  expect(s.breakdown.range_samples === s.flame.main.total, 'the lines add up to the selection', [s.breakdown.range_samples, s.flame.main.total]);
  console.log(`  breakdown of the test data: ${s.breakdown.ms.toFixed(2)} ms`);
  let image = await screenshot(page, args.out, '23-breakdown.png');
  const timeline = widget(s, 'timeline');
  // eu-north in sky blue on top; ap-south (orange) and us-east (green) differ by a little and overlap.
  const sky = h.countPixels(image, timeline, (r, g, b) => Math.abs(r - 86) < 30 && Math.abs(g - 180) < 30 && b > 200);
  const orange = h.countPixels(image, timeline, (r, g, b) => r > 200 && Math.abs(g - 159) < 30 && b < 60);
  const green = h.countPixels(image, timeline, (r, g, b) => r < 40 && Math.abs(g - 158) < 30 && Math.abs(b - 115) < 30);
  expect(sky.count > 100 && orange.count + green.count > 100, 'the timeline draws the lines in their colours',
         [sky.count, orange.count, green.count]);

  await click(page, 'legend:eu-north', { fx: 0.3 });
  s = await waitFor(page, (st) => (st.selected_tags.region || []).join() === 'eu-north', 'a click selects eu-north');
  expect(s.breakdown.lines.length === 3, 'the other lines stay', s.breakdown.lines.length);
  await click(page, 'legend.diff:eu-north');
  s = await waitFor(page, (st) => st.view === 'diff' && st.compare && st.flame.diff && st.flame.diff.drawn_blocks > 0,
                    'one click: eu-north against the rest');
  expect(s.compare.key === 'region' && s.compare.value === 'eu-north' && s.ranges.left.from === s.ranges.right.from &&
         s.ranges.left.until === s.ranges.right.until, 'the diff of eu-north against the rest over one range', [s.compare, s.ranges]);
  expect(JSON.stringify(s.selected_tags) === '{}', 'the region choice gives way to the comparison', s.selected_tags);
  expect(s.flame.diff.left_total + s.flame.diff.right_total === s.breakdown.range_samples, 'both sides: all regions',
         [s.flame.diff.left_total, s.flame.diff.right_total]);
  image = await screenshot(page, args.out, '24-eu-north-vs-rest.png');
  const rect = widget(s, 'flame.diff');
  expect(h.countPixels(image, rect, h.isRed).count > 300, 'what eu-north does more is red', h.countPixels(image, rect, h.isRed).count);
  expect(/compare=region%3Deu-north/.test(s.link), 'the link carries the comparison', s.link);
  await page.close();
}

async function testNamesRecursionDiffModes(browser, base, args) {
  console.log('short and merged names, collapsed recursion, diff modes');
  const page = await openViewer(browser, base, FILE);
  let s = await waitFor(page, (st) => st.flame_painted && st.table.rows > 0, 'the flame graph');
  const full = s.flame.main;
  await click(page, 'names');
  await click(page, 'names:short');
  s = await waitFor(page, (st) => st.names === 'short' && st.table.first_labels.length > 0, 'short names');
  expect(s.table.first_labels.every((l) => !l.includes('(')) && s.table.first.some((n) => n.includes('(')),
         'the table shows short labels; its rows are still the full names', s.table);
  expect(s.flame.main.nodes === full.nodes, 'short labels draw the same tree', [s.flame.main.nodes, full.nodes]);
  // The keyboard's frame has a short label and a full name.
  await page.mouse.move(5, 5);
  await key(page, 'ArrowDown');
  for (let i = 0; i < 4; i++) await key(page, 'ArrowDown');
  s = await status(page);
  expect(s.flame.main.selected.includes('(') && !s.flame.main.selected_label.includes('('),
         'a frame: full name, short label', [s.flame.main.selected, s.flame.main.selected_label]);
  await screenshot(page, args.out, '25-short-names.png');
  await click(page, 'names');
  await click(page, 'names:merged');
  s = await waitFor(page, (st) => st.names === 'merged' && st.flame.main.nodes < full.nodes, 'merged names');
  expect(s.flame.main.total === full.total && s.table.first.every((n) => !n.includes('(')),
         'the overloads merged, the total kept', [s.flame.main.nodes, full.nodes]);
  await click(page, 'recursion');
  await click(page, 'recursion:all');
  s = await waitFor(page, (st) => st.recursion === 'all' && st.flame.main.depth < full.depth, 'recursion collapsed');
  expect(s.flame.main.total === full.total, 'the total kept', [s.flame.main.total, full.total]);
  await screenshot(page, args.out, '26-merged-names-recursion-collapsed.png');

  // Diff modes, on two ranges of different lengths.
  await page.evaluate(() => {
    for (const [k, v] of [['names', 'full'], ['recursion', 'keep'], ['view', 'diff'], ['from', '1700000000'], ['until', '1700000100'],
                          ['right_from', '1700000300'], ['right_until', '1700000600']]) window.pyroscopeViewer.setting(k, v);
  });
  s = await waitFor(page, (st) => st.view === 'diff' && st.flame.diff && st.table.rows > 0 && st.table.sort === 'change', 'the diff');
  expect(/check_driver_availability|mutex/.test(s.table.first[0]), 'share: the mutex grew most', s.table.first);
  const first = {};
  for (const mode of ['per_second', 'absolute', 'share']) {
    await click(page, 'diff_mode');
    await click(page, 'diff_mode:' + mode);
    s = await waitFor(page, (st) => st.diff_mode === mode && st.table.rows > 0, 'diff mode ' + mode);
    first[mode] = s.table.first;
    expect(s.link.includes(mode === 'share' ? 'view=diff' : 'diff_mode=' + mode), `the link says ${mode}`, s.link);
    if (mode === 'per_second') await screenshot(page, args.out, '27-diff-per-second.png');
  }
  expect(first.absolute[0] === 'main' && first.share[0] !== 'main', 'absolute: main grew most (a 3x longer range); share: not main',
         first);
  expect(page.pageErrors.length === 0, 'no page errors', page.pageErrors);
  await page.close();
}

async function testSearchAndKeys(browser, base, args) {
  console.log('search: regex, exclusion, share, focus on matches; the keyboard');
  const page = await openViewer(browser, base, FILE);
  let s = await waitFor(page, (st) => st.flame_painted, 'the flame graph');
  await click(page, 'search');
  await page.keyboard.type('json::parse_(value|array) -array', { delay: 20 });
  s = await waitFor(page, (st) => st.search === 'json::parse_(value|array) -array', 'the search');
  expect(s.matched_functions === 1 && s.search_terms.length === 2 && s.search_terms[0].regex && s.search_terms[1].exclude,
         'a regex term and an exclusion: one function', [s.matched_functions, s.search_terms]);
  expect(s.matched_share > 0 && s.matched_share < 0.1 && s.table.rows === 1, 'its share; the table shows it alone',
         [s.matched_share, s.table.rows]);
  let image = await screenshot(page, args.out, '28-search.png');
  const rect = widget(s, 'flame.main');
  const brightBefore = h.countPixels(image, rect, (r, g, b) => r > 180 && g > 90);
  await click(page, 'focus_matches', { fx: 0.2 });
  s = await waitFor(page, (st) => st.focus_matches, 'focus on matches');
  image = await screenshot(page, args.out, '29-focus-on-matches.png');
  const brightAfter = h.countPixels(image, rect, (r, g, b) => r > 180 && g > 90);
  expect(brightAfter.count < brightBefore.count * 0.8, 'the frames off the matching stacks are dimmed',
         [brightBefore.count, brightAfter.count]);

  // The keyboard: '/' searches, Esc clears; arrows move, Enter focuses, Esc goes up; '?' lists the keys.
  await page.mouse.move(5, 5);
  await click(page, 'focus_matches', { fx: 0.2 });
  await page.mouse.click(5, 5);
  await settle(page);
  await key(page, 'Escape');
  s = await waitFor(page, (st) => st.search === '', 'Esc clears the search');
  await key(page, '/');
  await page.keyboard.type('mutex', { delay: 20 });
  s = await waitFor(page, (st) => st.search === 'mutex', '/ focuses the search box');
  await key(page, 'Escape');
  s = await waitFor(page, (st) => st.search === '', 'Esc in the box clears it');
  await page.mouse.click(5, 5);
  await settle(page);
  for (const k of ['ArrowDown', 'ArrowDown', 'ArrowDown']) await key(page, k);
  s = await status(page);
  const third = s.flame.main.selected;
  expect(third !== '' && third !== 'total', 'arrows down: a frame three levels down', third);
  await key(page, 'ArrowRight');
  s = await status(page);
  expect(s.flame.main.selected !== third && s.flame.main.selected !== '', 'arrow right: its neighbour', s.flame.main.selected);
  const neighbour = s.flame.main.selected;
  await key(page, 'ArrowUp');
  await key(page, 'ArrowDown');
  await key(page, 'Enter');
  s = await waitFor(page, (st) => st.flame.main.focus_path.length === 3, 'Enter focuses the frame');
  await screenshot(page, args.out, '30-keyboard-focus.png');
  await key(page, 'Escape');
  s = await waitFor(page, (st) => st.flame.main.focus_path.length === 2, 'Esc goes up one level');
  expect(s.focus.length === 2, 'the focus is a setting (for links)', s.focus);
  await page.keyboard.type('?');
  s = await waitFor(page, (st) => !!st.widgets['help.close'], '? lists the keys');
  await screenshot(page, args.out, '31-keys.png');
  await click(page, 'help.close');
  // S: the sandwich of the keyboard's frame.
  await key(page, 'ArrowDown');
  s = await status(page);
  const selected = s.flame.main.selected;
  await key(page, 's');
  s = await waitFor(page, (st) => st.view === 'sandwich' && st.sandwich.found, 'S: the sandwich of the selected frame');
  expect(s.function === selected, 'of the selected frame', [s.function, selected, neighbour]);
  expect(page.pageErrors.length === 0, 'no page errors', page.pageErrors);
  await page.close();
}

// The parts of the status a link must reproduce: everything the view shows, nothing about frames,
// timings, the mouse or widget positions.
function viewState(s) {
  const graph = (g) => g && { total: g.total, nodes: g.nodes, depth: g.depth, focus_path: g.focus_path,
                               focus_total: g.focus_total, view_left: g.view_left, view_width: g.view_width };
  const flame = {};
  for (const [k, g] of Object.entries(s.flame)) flame[k] = graph(g);
  return {
    files: s.files.map((f) => f.name), app: s.app, type: s.type, selected_tags: s.selected_tags, selector: s.selector,
    view: s.view, panels: s.panels, names: s.names, recursion: s.recursion, diff_mode: s.diff_mode, function: s.function,
    search: s.search, focus_matches: s.focus_matches, focus: s.focus, compare: s.compare, breakdown: s.breakdown.key,
    breakdown_lines: s.breakdown.lines.map((l) => [l.value, l.samples]), theme: s.theme, orientation: s.orientation,
    colour: s.colour, ranges: s.ranges, settings: s.settings, link: s.link, matched_share: s.matched_share,
    matched_functions: s.matched_functions, sandwich: [s.sandwich.found, s.sandwich.total, s.sandwich.self], flame,
    table: { rows: s.table.rows, sort: s.table.sort, first: s.table.first },
  };
}

async function testPermalinks(browser, base, args) {
  console.log('permalinks: Copy link, then the link in a new page shows the same view');
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  page.pageErrors = [];
  page.on('pageerror', (e) => page.pageErrors.push(e.message));
  await page.goto(base + '/' + FILE);
  await page.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
  let s = await waitFor(page, (st) => st.flame_painted, 'the flame graph');
  // A state built by hand, through the UI: a tag, names, recursion, a breakdown, a search, a focus.
  await click(page, 'tag:vehicle=car', { fx: 0.1 });
  await waitFor(page, (st) => (st.selected_tags.vehicle || []).join() === 'car', 'vehicle=car');
  await click(page, 'names');
  await click(page, 'names:short');
  await click(page, 'recursion');
  await click(page, 'recursion:direct');
  await click(page, 'breakdown');
  await click(page, 'breakdown:region');
  await click(page, 'search');
  await page.keyboard.type('rideshare -metrics', { delay: 20 });
  await click(page, 'theme');
  await page.mouse.click(5, 5);
  await settle(page);
  for (const k of ['ArrowDown', 'ArrowDown', 'ArrowDown', 'Enter']) await key(page, k);
  s = await waitFor(page, (st) => st.focus.length === 3 && st.search === 'rideshare -metrics' && st.breakdown.lines.length === 3,
                    'the state to link to');
  // Then the sandwich of a function in the comparison of eu-north with the rest... as a second link.
  await click(page, 'copy_link');
  s = await waitFor(page, (st) => st.last_link.startsWith(base), 'Copy link');
  let clipboard = '';
  try { clipboard = await page.evaluate(() => navigator.clipboard.readText()); } catch (e) { clipboard = 'unreadable: ' + e.message; }
  expect(clipboard === s.last_link, 'the link is on the clipboard', [clipboard, s.last_link]);
  expect(page.url() === s.last_link, 'and in the address bar', page.url());
  const before = viewState(await status(page));
  const image = await screenshot(page, args.out, '32-permalink-before.png');

  const again = await context.newPage();
  again.pageErrors = [];
  await again.goto(s.last_link);
  await again.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
  await waitFor(again, (st) => st.flame_painted && st.breakdown.lines.length === 3 && st.table.rows > 0, 'the linked view');
  await settle(again, 3);
  const after = viewState(await status(again));
  const differs = Object.keys(before).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
  expect(differs.length === 0, 'reloading the link reproduces the view: the same status', differs.map((k) => [k, before[k], after[k]]));
  const image2 = await screenshot(again, args.out, '33-permalink-after.png');
  const flameRect = widget(await status(again), 'flame.main');
  const p1 = painted(image, flameRect, [252, 252, 252]), p2 = painted(image2, flameRect, [252, 252, 252]);
  expect(Math.abs(p1.share - p2.share) < 0.02, 'and the same picture', [p1, p2]);

  // A second link: the sandwich view in the comparison... the diff of eu-north against the rest with a
  // diff mode, and the sandwich of a function with merged names.
  for (const [settings, what] of [
    [[['compare', 'region=eu-north'], ['view', 'diff'], ['diff_mode', 'absolute'], ['focus_matches', '1'], ['search', 'geo']],
     'the diff of eu-north against the rest, absolute'],
    [[['view', 'sandwich'], ['names', 'merged'], ['function', 'json::parse'], ['focus', 'json::parse;json::parse_value']],
     'the sandwich of a merged function, focused'],
  ]) {
    await page.evaluate((list) => { for (const [k, v] of list) window.pyroscopeViewer.setting(k, v); }, settings);
    await waitFor(page, (st) => settings.every(([k]) => k in st.settings || k === 'view'), what);
    await settle(page, 3);
    await click(page, 'copy_link');
    s = await status(page);
    const first = viewState(s);
    const linked = await context.newPage();
    await linked.goto(s.last_link);
    await linked.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
    await waitFor(linked, (st) => st.flame_painted && st.view === first.view && st.table.rows > 0, 'the linked ' + what);
    await settle(linked, 3);
    const second = viewState(await status(linked));
    const diff = Object.keys(first).filter((k) => JSON.stringify(first[k]) !== JSON.stringify(second[k]));
    expect(diff.length === 0, `the link of ${what} reproduces it`, diff.map((k) => [k, first[k], second[k]]));
    await screenshot(linked, args.out, what.includes('sandwich') ? '35-permalink-sandwich.png' : '34-permalink-compare.png');
    await linked.close();
  }
  expect(page.pageErrors.length === 0 && again.pageErrors.length === 0, 'no page errors', [page.pageErrors, again.pageErrors]);
  await context.close();
}

// A typed profile: the heap profile (pprof, bytes) imported twice with a region tag. The sandwich,
// short names and the tag breakdown show bytes, and the sandwich's totals are pyro query's.
async function testTypedProfile(browser, base, args) {
  console.log('the analysis views on a heap profile (alloc_space, bytes): sandwich, short names, breakdown');
  const file = path.join(args.data, 'heap-regions.pyro');
  fs.rmSync(file, { force: true });
  for (const region of ['eu-north', 'us-east']) {
    execFileSync(args.pyro, ['import', path.join(args.data, 'heap.pb.gz'), '-o', file, '--app', 'heap', '--tags', 'region=' + region,
                             '--at', '1700000000'], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const table = pyroTable(args, file, 'heap.alloc_space{}');
  const fn = 'cache::fill(unsigned long)';
  const row = table.find((r) => r.name === fn);
  expect(!!row && row.total > 0, 'pyro query lists cache::fill in the heap profile', table);
  const page = await openViewer(browser, base,
                                `?file=data/heap-regions.pyro&type=alloc_space&view=sandwich&function=${encodeURIComponent(fn)}` +
                                '&names=short&breakdown=region');
  const s = await waitFor(page, (st) => st.sandwich.found && st.flame.callees && st.flame.callees.drawn_blocks > 0 &&
                                        st.breakdown.lines.length === 2, 'the sandwich and breakdown of a heap profile');
  expect(s.type === 'alloc_space' && s.unit === 'bytes', 'the type and its unit', [s.type, s.unit]);
  expect(row && s.sandwich.total === row.total && s.sandwich.self === row.self, 'the sandwich totals pyro query\'s, in bytes',
         [s.sandwich, row]);
  expect(s.flame.callers.total === s.sandwich.total && s.flame.callees.total === s.sandwich.total, 'both graphs total it',
         [s.flame.callers.total, s.flame.callees.total]);
  expect(Math.abs(s.breakdown.lines[0].share - 0.5) < 1e-9, 'two regions, half each', s.breakdown.lines);
  const image = await screenshot(page, args.out, '37-heap-sandwich-breakdown-short-names.png');
  expect(painted(image, widget(s, 'flame.callers'), BACKGROUND).distinct >= 4, 'painted');
  expect(page.pageErrors.length === 0, 'no page errors', page.pageErrors);
  await page.close();
}

// Embedded: the sandwich view fills an iframe too.
async function testEmbed(browser, base, args) {
  console.log('embedding the sandwich view');
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  const fn = encodeURIComponent('rideshare::find_nearest_vehicle(Region, Vehicle)');
  await page.setContent(`<iframe id="f" width="860" height="640" style="border:0"
    src="${base}/${FILE}&embed=1&view=sandwich&function=${fn}&names=short"></iframe>`);
  const frame = page.frames().find((f) => f.name() === '' && f !== page.mainFrame()) || page.frames()[1];
  await frame.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready &&
                                     window.pyroscopeViewer.status().sandwich.found &&
                                     window.pyroscopeViewer.status().flame.callees.drawn_blocks > 0, null, { timeout: 60000 });
  const s = await frame.evaluate(() => window.pyroscopeViewer.status());
  expect(s.view === 'sandwich' && !!s.widgets['flame.callers'] && !!s.widgets['flame.callees'] && !s.widgets['timeline'],
         'the embed shows the callers and callees only', Object.keys(s.widgets));
  await sleep(300);
  await page.screenshot({ path: path.join(args.out, '36-embed-sandwich.png') });
  console.log('  screenshot ' + path.join(args.out, '36-embed-sandwich.png'));
  // An embed's view is fixed by its URL: it never runs the idle warm-up (viewer::warm_up_analysis),
  // which a page of many embeds would pay once each.
  await sleep(700);
  const idle = await frame.evaluate(() => window.pyroscopeViewer.status());
  expect(idle.first_flame_paint_ms >= 0 && idle.warm_up_ms === -1, 'an idle embed does not warm up',
         [idle.first_flame_paint_ms, idle.warm_up_ms]);
  await page.close();
}

(async () => {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, REQUIRED);
  fs.mkdirSync(args.out, { recursive: true });
  const { server, url } = await h.serveStatic({ '/': args.site, '/data/': args.data });
  const browser = await h.launchBrowser();
  try {
    await testSandwich(browser, url, args);
    await testBreakdown(browser, url, args);
    await testNamesRecursionDiffModes(browser, url, args);
    await testSearchAndKeys(browser, url, args);
    await testPermalinks(browser, url, args);
    await testEmbed(browser, url, args);
    await testTypedProfile(browser, url, args);
  } catch (e) {
    exception(e);
  } finally {
    await browser.close();
    server.close();
  }
  finish(`screenshots in ${args.out}`);
})();
