// Screenshot test of the native viewer: runs pyroscope-viewer under Xvfb (xvfb-run) with
// --screenshot and --status-json, then checks the status object and the pixels of the PNG (kept in the
// artifacts folder: look at them).
//
// usage: node tests/browser/native.test.js --viewer PATH --data DIR --out DIR
'use strict';

const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const h = require('./harness');

const DEFAULTS = { viewer: '', data: 'build/testdata', out: 'build/native-artifacts' };
const REQUIRED = ['viewer'];
const USAGE = 'native.test.js --viewer PATH --data DIR --out DIR';

const { expect, finish } = h.checker();

// Runs the viewer once; returns {status, image, code, stderr}.
function run(args, name, viewerArgs) {
  const png = path.join(args.out, name + '.png');
  const json = path.join(args.out, name + '.json');
  for (const f of [png, json]) fs.rmSync(f, { force: true });
  const result = spawnSync('xvfb-run', ['-a', '-s', '-screen 0 1600x1000x24', args.viewer, '--size', '1280x800',
                                        '--scale', '1', '--screenshot', png, '--status-json', json, ...viewerArgs],
                           { encoding: 'utf8', timeout: 300000 });
  const out = { code: result.status, stderr: (result.stderr || '') + (result.error ? String(result.error) : '') };
  try { out.status = JSON.parse(fs.readFileSync(json, 'utf8')); } catch (e) { out.status = null; }
  try { out.image = h.decodePng(fs.readFileSync(png)); } catch (e) { out.image = null; }
  console.log(`  ${name}: exit ${out.code}, screenshot ${png}`);
  return out;
}

function main() {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, REQUIRED);
  fs.mkdirSync(args.out, { recursive: true });
  const data = (f) => path.join(args.data, f);

  console.log('single view');
  let r = run(args, 'native-single', [data('rideshare.pyro')]);
  if (expect(r.status && r.image, 'viewer wrote a status and a screenshot', r.stderr.slice(-500))) {
    const s = r.status;
    expect(r.code === 0 && s.error === '', 'no error', [r.code, s.error]);
    expect(s.app === 'ride-sharing-app' && s.flame.main.total > 0, 'rideshare app drawn', s.flame.main);
    expect(r.image.width === 1280 && r.image.height === 800, 'screenshot has the window size',
           [r.image.width, r.image.height]);
    const [x, y, w, hgt] = s.widgets['flame.main'];
    const distinct = h.distinctColours(r.image, [x, y, w, hgt]);
    const painted = h.countPixels(r.image, [x, y, w, hgt], (red, g, b) => Math.abs(red - 28) + Math.abs(g - 29) + Math.abs(b - 34) > 40);
    expect(distinct >= 8 && painted.share > 0.1, 'flame graph painted', { distinct, share: painted.share });
  }

  console.log('diff view, light theme, search');
  r = run(args, 'native-diff', ['--view', 'diff', '--theme', 'light', '--search', 'json', data('rideshare.pyro')]);
  if (expect(r.status && r.image, 'viewer wrote a status and a screenshot', r.stderr.slice(-500))) {
    const s = r.status;
    expect(s.view === 'diff' && s.flame.diff && s.flame.diff.drawn_blocks > 0, 'diff drawn', s.flame);
    expect(s.search === 'json' && s.matched_share > 0, 'search applied from the command line', s.matched_share);
    const rect = s.widgets['flame.diff'];
    // Search dims what does not match; the matched json::parse shrank, so green stays strong.
    const green = h.countPixels(r.image, rect, h.isGreen);
    expect(green.count > 200, 'shrunk (green) match visible in the diff', green.count);
    const light = h.countPixels(r.image, s.widgets.sidebar, (red, g, b) => red > 200 && g > 200 && b > 200);
    expect(light.share > 0.5, 'light theme', light.share);
  }
  r = run(args, 'native-diff-colours', ['--view', 'diff', data('rideshare.pyro')]);
  if (r.status && r.image) {
    const rect = r.status.widgets['flame.diff'];
    const red = h.countPixels(r.image, rect, h.isRed), green = h.countPixels(r.image, rect, h.isGreen);
    expect(red.count > 300 && green.count > 300, 'diff has red and green blocks', [red.count, green.count]);
  }

  console.log('folded text, 10,000-frame stacks, flame orientation');
  r = run(args, 'native-deep', ['--app', 'deep-app', '--orientation', 'flame', data('deep.pyro'), data('sample.folded')]);
  if (expect(r.status && r.image, 'viewer wrote a status and a screenshot', r.stderr.slice(-500))) {
    const s = r.status;
    expect(s.apps.includes('sample') && s.files.some((f) => f.kind === 'folded'), 'folded file opened as an app', s.apps);
    expect(s.flame.main.depth === 10001 && s.flame.main.drawn_blocks > 0, '10,000 frames deep, drawn', s.flame.main);
  }

  console.log('corrupt file');
  r = run(args, 'native-corrupt', [data('corrupt.pyro')]);
  if (expect(r.status && r.image, 'viewer wrote a status and a screenshot', r.stderr.slice(-500))) {
    expect(/corrupt\.pyro: .*corrupt/.test(r.status.error), 'readable error', r.status.error);
    const banner = r.status.widgets.error;
    expect(banner && h.countPixels(r.image, banner, (red, g, b) => red > 110 && g < 60 && b < 60).share > 0.5,
           'error banner painted');
  }

  finish(`screenshots in ${args.out}`);
}

main();
