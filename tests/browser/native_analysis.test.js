// The native viewer's analysis options (issue 15), each given on the command line as the browser
// takes them in its URL: the sandwich view, readable names, collapsed recursion, tag breakdown with a
// value against the rest, diff modes, search with exclusions and focus on matches. Runs the viewer under
// Xvfb with --screenshot and --status-json, checks the status object and the screenshots' pixels (kept
// in the artifacts folder: look at them), and checks that the settings a view reports ("Copy link")
// give the same view when passed back on the command line.
//
// usage: node tests/browser/native_analysis.test.js --viewer PATH --pyro PATH --data DIR --out DIR
'use strict';

const fs = require('fs');
const path = require('path');
const { spawnSync, execFileSync } = require('child_process');
const h = require('./harness');

const DEFAULTS = { viewer: '', pyro: '', data: 'build/testdata', out: 'build/native-artifacts' };
const REQUIRED = ['viewer', 'pyro'];
const USAGE = 'native_analysis.test.js --viewer PATH --pyro PATH --data DIR --out DIR';

const { expect, finish } = h.checker();
const BACKGROUND = [28, 29, 34];

function run(args, name, viewerArgs) {
  const png = path.join(args.out, name + '.png');
  const json = path.join(args.out, name + '.json');
  for (const f of [png, json]) fs.rmSync(f, { force: true });
  const result = spawnSync('xvfb-run', ['-a', '-s', '-screen 0 1600x1000x24', args.viewer, '--size', '1400x900',
                                        '--scale', '1', '--screenshot', png, '--status-json', json, ...viewerArgs],
                           { encoding: 'utf8', timeout: 300000 });
  const out = { code: result.status, stderr: (result.stderr || '') + (result.error ? String(result.error) : '') };
  try { out.status = JSON.parse(fs.readFileSync(json, 'utf8')); } catch (e) { out.status = null; }
  try { out.image = h.decodePng(fs.readFileSync(png)); } catch (e) { out.image = null; }
  console.log(`  ${name}: exit ${out.code}, screenshot ${png}`);
  if (!out.status || !out.image) expect(false, `${name}: the viewer wrote a status and a screenshot`, out.stderr.slice(-800));
  else expect(out.code === 0 && out.status.error === '', `${name}: no error`, [out.code, out.status.error]);
  return out;
}

function painted(image, rect) {
  const distinct = h.distinctColours(image, rect);
  const share = h.countPixels(image, rect, (r, g, b) =>
    Math.abs(r - BACKGROUND[0]) + Math.abs(g - BACKGROUND[1]) + Math.abs(b - BACKGROUND[2]) > 40).share;
  return { distinct, share };
}

// `pyro query --format table`: function -> {self, total}.
function tableOf(args, file) {
  const text = execFileSync(args.pyro, ['query', file, 'ride-sharing-app', '--format', 'table'],
                            { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const rows = new Map();
  for (const line of text.split('\n').slice(1)) {
    const m = /^\s*(\d+)\s+\S+\s+(\d+)\s+\S+\s{2}(.*)$/.exec(line);
    if (m) rows.set(m[3], { self: Number(m[1]), total: Number(m[2]) });
  }
  return rows;
}

function main() {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, REQUIRED);
  fs.mkdirSync(args.out, { recursive: true });
  const rideshare = path.join(args.data, 'rideshare.pyro');
  const table = tableOf(args, rideshare);
  expect(table.size > 400, 'pyro query --format table lists the functions', table.size);

  console.log('sandwich view from the command line');
  const fn = 'rideshare::find_nearest_vehicle(Region, Vehicle)';
  let r = run(args, 'native-analysis-sandwich', ['--view', 'sandwich', '--function', fn, rideshare]);
  if (r.status) {
    const s = r.status;
    expect(s.view === 'sandwich' && s.function === fn && s.sandwich.found, 'the sandwich view of the function', s.sandwich);
    expect(s.sandwich.total === table.get(fn).total && s.sandwich.self === table.get(fn).self,
           'its totals are pyro query --format table\'s', [s.sandwich, table.get(fn)]);
    expect(s.flame.callers.total === s.sandwich.total && s.flame.callees.total === s.sandwich.total,
           'both graphs total the function', [s.flame.callers.total, s.flame.callees.total]);
    for (const g of ['callers', 'callees']) {
      const p = painted(r.image, s.widgets['flame.' + g]);
      expect(s.flame[g].drawn_blocks >= 3 && p.distinct >= 4, `${g} graph drawn`, [s.flame[g].drawn_blocks, p]);
    }
  }

  console.log('short names, merged names, collapsed recursion');
  r = run(args, 'native-analysis-names-short', ['--names', 'short', rideshare]);
  const full = run(args, 'native-analysis-names-full', [rideshare]);
  if (r.status && full.status) {
    expect(r.status.names === 'short' && r.status.flame.main.nodes === full.status.flame.main.nodes,
           'short names draw the same tree', [r.status.flame.main.nodes, full.status.flame.main.nodes]);
    expect(r.status.table.first_labels.every((l) => !/\(/.test(l)) && r.status.table.first.some((n) => /\(/.test(n)),
           'the table shows short labels of full names', r.status.table);
  }
  r = run(args, 'native-analysis-names-merged', ['--names', 'merged', rideshare]);
  if (r.status && full.status) {
    expect(r.status.flame.main.nodes < full.status.flame.main.nodes && r.status.flame.main.total === full.status.flame.main.total,
           'merged names merge the json::parse overloads, the total stays', [r.status.flame.main.nodes, full.status.flame.main.nodes]);
  }
  r = run(args, 'native-analysis-recursion', ['--recursion', 'all', rideshare]);
  if (r.status && full.status) {
    expect(r.status.flame.main.depth < full.status.flame.main.depth && r.status.flame.main.total === full.status.flame.main.total,
           'collapsing recursion makes the parser\'s stacks shorter', [r.status.flame.main.depth, full.status.flame.main.depth]);
  }

  console.log('tag breakdown, a value against the rest, diff modes');
  r = run(args, 'native-analysis-breakdown', ['--breakdown', 'region', '--compare', 'region=eu-north', '--view', 'diff', rideshare]);
  if (r.status) {
    const s = r.status;
    const shares = s.breakdown.lines.reduce((sum, l) => sum + l.share, 0);
    expect(s.breakdown.key === 'region' && s.breakdown.lines.length === 3 && Math.abs(shares - 1) < 1e-9,
           'three lines whose shares add up to 1', s.breakdown);
    expect(s.compare && s.compare.key === 'region' && s.compare.value === 'eu-north' && s.view === 'diff',
           'the diff of eu-north against the rest', s.compare);
    expect(s.ranges.left.from === s.ranges.right.from && s.ranges.left.until === s.ranges.right.until,
           'over one range', s.ranges);
    const timeline = s.widgets.timeline;
    const lineBlue = h.countPixels(r.image, timeline, (red, g, b) => b > 200 && g > 150 && red < 120);
    expect(lineBlue.count > 100, 'the timeline draws the breakdown\'s lines', lineBlue.count);
    const rect = s.widgets['flame.diff'];
    expect(h.countPixels(r.image, rect, h.isRed).count > 200, 'eu-north\'s heavier find_nearest_vehicle is red');
  }
  for (const mode of ['share', 'per_second', 'absolute']) {
    r = run(args, `native-analysis-diff-${mode}`, ['--view', 'diff', '--diff-mode', mode, '--from', '1700000000', '--until',
                                                    '1700000100', '--right-from', '1700000300', '--right-until', '1700000600',
                                                    rideshare]);
    if (r.status) {
      expect(r.status.diff_mode === mode && r.status.table.sort === 'change', `diff mode ${mode}, table by change`,
             [r.status.diff_mode, r.status.table.sort]);
      if (mode === 'absolute') expect(r.status.table.first[0] === 'main', 'absolute: the 3x longer right range grows main most', r.status.table.first);
      if (mode === 'share') expect(/check_driver_availability|mutex/.test(r.status.table.first[0]), 'share: the mutex grew most', r.status.table.first);
    }
  }

  console.log('search: regular expressions, exclusions, focus on matches');
  r = run(args, 'native-analysis-search', ['--search', 'json::parse_(value|array) -array', '--focus-matches', '1', rideshare]);
  if (r.status) {
    const s = r.status;
    expect(s.matched_functions === 1 && s.search_terms.length === 2 && s.search_terms[1].exclude,
           'one function matches json::parse_(value|array) without -array', [s.matched_functions, s.search_terms]);
    expect(s.matched_share > 0 && s.matched_share < 0.2, 'its share', s.matched_share);
    const rect = s.widgets['flame.main'];
    const dim = h.countPixels(r.image, rect, (red, g, b) => red < 110 && g < 110 && b < 110 && Math.abs(red - 28) + Math.abs(g - 29) + Math.abs(b - 34) > 20);
    expect(dim.count > 2000, 'focus on matches dims the frames off the matching stacks', dim.count);
  }

  console.log('a link\'s settings, back on the command line, give the same view');
  r = run(args, 'native-analysis-link-a', ['--view', 'sandwich', '--function', 'json::parse_value(json::Cursor&)', '--names', 'short',
                                           '--recursion', 'direct', '--search', 'json', '--theme', 'light',
                                           '--focus', 'json::parse_value(json::Cursor&);json::parse_array(json::Cursor&)', rideshare]);
  if (r.status) {
    const again = [];
    for (const [key, value] of Object.entries(r.status.settings)) again.push('--' + key.replace(/_/g, '-'), value);
    const b = run(args, 'native-analysis-link-b', [...again, rideshare]);
    if (b.status) {
      const pick = (s) => JSON.stringify({ settings: s.settings, link: s.link, sandwich: s.sandwich.total, focus: s.focus,
                                           callees: s.flame.callees && s.flame.callees.focus_path, table: s.table.first });
      expect(pick(b.status) === pick(r.status), 'the same settings, focus and totals', [pick(r.status), pick(b.status)]);
      expect(r.status.flame.callees.focus_path.length === 2, 'the focus applies to the callees graph', r.status.flame.callees.focus_path);
    }
  }
  finish(`screenshots in ${args.out}`);
}

main();
