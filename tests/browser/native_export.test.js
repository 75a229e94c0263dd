// The native viewer's Export menu, driven with real X input: the viewer runs in its own Xvfb display,
// xdotool clicks the Export button and each menu item at the rectangles the viewer reports in its
// --live-status file, and the files it writes into its working directory are checked against the pyro
// tool: folded text equal to `pyro export-folded`, a slice with the same stacks as the source, a PNG of
// the flame graph, a share .html whose embedded data is that slice, and a second export that does not
// replace the first.
//
// usage: node tests/browser/native_export.test.js --viewer PATH --data DIR --out DIR --pyro PATH
//                                                 [--viewer-dir DIR]   (the browser viewer, for Share)
'use strict';

const fs = require('fs');
const path = require('path');
const { spawn, spawnSync, execFileSync } = require('child_process');
const h = require('./harness');

const DEFAULTS = { viewer: '', data: '', out: '', pyro: '', 'viewer-dir': '' };
const REQUIRED = ['viewer', 'data', 'out', 'pyro'];
const USAGE = 'native_export.test.js --viewer PATH --data DIR --out DIR --pyro PATH [--viewer-dir DIR]';

const { expect, exception, finish } = h.checker();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A display number no X server uses yet, and an Xvfb on it.
async function startXvfb() {
  for (let n = 90; n < 190; n++) {
    if (fs.existsSync(`/tmp/.X11-unix/X${n}`) || fs.existsSync(`/tmp/.X${n}-lock`)) continue;
    const server = spawn('Xvfb', [`:${n}`, '-screen', '0', '1400x900x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !fs.existsSync(`/tmp/.X11-unix/X${n}`); i++) await sleep(50);
    if (fs.existsSync(`/tmp/.X11-unix/X${n}`)) return { server, display: `:${n}` };
    server.kill();
  }
  throw new Error('no free X display for Xvfb');
}

(async () => {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, REQUIRED);
  const work = path.resolve(args.out, 'exports');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const statusPath = path.resolve(args.out, 'live-status.json');
  fs.rmSync(statusPath, { force: true });
  const source = path.resolve(args.data, 'rideshare.pyro');
  const selector = 'ride-sharing-app{region="eu-north"}';

  const { server, display } = await startXvfb();
  const env = { ...process.env, DISPLAY: display };
  const viewerArgs = ['--size', '1280x800', '--scale', '1', '--live-status', statusPath, source,
                      '--app', 'ride-sharing-app', '--tags', 'region=eu-north'];
  if (args['viewer-dir']) viewerArgs.push('--viewer-dir', path.resolve(args['viewer-dir']));
  const viewer = spawn(path.resolve(args.viewer), viewerArgs, { cwd: work, env, stdio: ['ignore', 'inherit', 'inherit'] });
  let exited = false;
  viewer.on('exit', () => { exited = true; });

  const readStatus = () => { try { return JSON.parse(fs.readFileSync(statusPath, 'utf8')); } catch (e) { return null; } };
  async function waitStatus(predicate, what, timeout = 30000) {
    const start = Date.now();
    let s = null;
    while (Date.now() - start < timeout && !exited) {
      s = readStatus();
      if (s && predicate(s)) return s;
      await sleep(50);
    }
    expect(false, 'timed out waiting for ' + what, s && { error: s.error, exited });
    return s;
  }
  const xdotool = (...a) => spawnSync('xdotool', a, { env, encoding: 'utf8', timeout: 20000 });
  const files = () => fs.readdirSync(work).sort();
  async function waitNewFile(before, pattern, what) {
    const start = Date.now();
    while (Date.now() - start < 30000) {
      const added = files().filter((f) => !before.includes(f) && pattern.test(f));
      if (added.length) {
        const file = path.join(work, added[0]);
        await sleep(200);  // written in one go, but let it land
        return file;
      }
      await sleep(100);
    }
    expect(false, 'timed out waiting for ' + what, files());
    return null;
  }

  try {
    const loaded = await waitStatus((s) => s.flame_painted && s.widgets && s.widgets.export, 'the flame graph');
    const found = xdotool('search', '--sync', '--name', 'pyroscope viewer');
    const window = (found.stdout || '').trim().split('\n')[0];
    expect(!!window, 'xdotool finds the viewer window', found.stderr);
    // Clicks a widget as a person does: the pointer moves onto it, the viewer draws a frame with it
    // hovered, then the button goes down and up. (Moving and clicking in one burst let a loaded
    // viewer take both in one frame, and a menu item sometimes missed the click: CI, 2026-12-03.)
    // The widget's place comes from a frame drawn after the previous click began (not a stale status).
    let lastClickFrame = -1;
    const click = async (name) => {
      const s = await waitStatus((st) => st.frames > lastClickFrame && st.widgets[name], `widget ${name}`);
      const [x, y, w, hh] = s.widgets[name];
      let r = xdotool('mousemove', '--window', window, String(Math.round(x + w / 2)), String(Math.round(y + hh / 2)));
      if (r.status !== 0) expect(false, `xdotool moves to ${name}`, r.stderr);
      for (const start = Date.now(); Date.now() - start < 3000;) {  // no new frame if the pointer was there already
        const st = readStatus();
        if (st && st.frames > s.frames) break;
        await sleep(30);
      }
      // The count is taken before the click: the viewer idles until an event comes, so if it drew its
      // answer to the click before we looked, no later frame would ever come (CI, 2026-12-04).
      const beforeClick = (readStatus() || s).frames;
      r = xdotool('click', '1');
      if (r.status !== 0) expect(false, `xdotool clicks ${name}`, r.stderr);
      lastClickFrame = beforeClick;
    };
    // Export > item: opens the menu, picks the item, returns the file it writes.
    const exportItem = async (item, pattern) => {
      const before = files();
      await click('export');
      await click('export:' + item);
      return waitNewFile(before, pattern, `the ${item} export`);
    };
    const { from, until } = loaded.ranges.left;
    const quiet = { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] };
    const pyro = (...a) => execFileSync(args.pyro, a, quiet);
    const expected = pyro('query', source, selector, '--from', String(from), '--until', String(until));

    console.log('Export > Folded text');
    const folded = await exportItem('folded', /\.folded$/);
    if (folded) {
      expect(/^ride-sharing-app-\d+-\d+\.folded$/.test(path.basename(folded)), 'named after app and range', path.basename(folded));
      const cli = path.resolve(args.out, 'cli-export.folded');
      fs.rmSync(cli, { force: true });
      pyro('export-folded', source, selector, '--from', String(from), '--until', String(until), '-o', cli);
      expect(fs.readFileSync(folded, 'utf8') === fs.readFileSync(cli, 'utf8'), 'equal to pyro export-folded');
    }

    console.log('Export > Flame graph image');
    const shown = readStatus();
    const png = await exportItem('png', /\.png$/);
    if (png) {
      const image = h.decodePng(fs.readFileSync(png));
      const [, , gw, gh] = shown.widgets['flame.main'];
      expect(Math.abs(image.width - gw) <= 2 && Math.abs(image.height - gh) <= 2, 'the PNG has the flame graph\'s size',
             [image.width, image.height, gw, gh]);
      const blocks = h.countPixels(image, [0, 0, image.width, Math.min(image.height, 6 * shown.flame.main.row_height)],
                                   (r, g, b) => r > 150 && g > 60 && b < 120);
      expect(blocks.share > 0.3, 'and shows its blocks (no menu over them)', blocks.share);
    }

    console.log('Export > Slice');
    const slice = await exportItem('slice', /\.pyro$/);
    if (slice) {
      expect(pyro('query', slice, selector, '--from', String(from), '--until', String(until)) === expected,
             'the slice has the stacks of the selection');
      const info = pyro('info', slice);
      expect(/series +3\b/.test(info) && !/us-east|ap-south/.test(info), 'and holds the eu-north series only');
    }

    console.log('Export > Share');
    const s = readStatus();
    // Without --viewer-dir the viewer looks for ../wasm beside its own folder (a build tree).
    if (args['viewer-dir']) expect(s.share_unavailable === '', 'Share is available with --viewer-dir', s.share_unavailable);
    if (s.share_unavailable === '') {
      const share = await exportItem('share', /\.html$/);
      if (share) {
        const html = fs.readFileSync(share, 'utf8');
        expect(!/src="viewer(-page)?\.js"/.test(html), 'the share file refers to no other file');
        const m = /window\.pyroscopeEmbedded = (\{.*?\});/.exec(html);
        const embedded = m ? JSON.parse(m[1]) : null;
        expect(embedded && embedded.settings.app === 'ride-sharing-app' && embedded.settings.tags === 'region=eu-north',
               'it opens with the app and tags', embedded && embedded.settings);
        if (embedded) {
          const data = path.resolve(args.out, 'share-data.pyro');
          fs.writeFileSync(data, Buffer.from(embedded.data, 'base64'));
          expect(pyro('query', data, selector, '--from', String(from), '--until', String(until)) === expected,
                 'its data is the selection');
        }
      }
    } else {
      expect(s.share_unavailable.includes('--viewer-dir'), 'without the browser viewer, Share says what it needs',
             s.share_unavailable);
    }

    console.log('a second export of the same selection');
    const again = await exportItem('folded', /-2\.folded$/);
    expect(!!again && folded && fs.readFileSync(again, 'utf8') === fs.readFileSync(folded, 'utf8'),
           'goes to name-2.folded and leaves the first file alone', files());
    const last = readStatus();
    expect(last.error === '', 'no error shown', last.error);
  } catch (e) {
    exception(e);
  } finally {
    if (!exited) viewer.kill('SIGTERM');
    server.kill();
  }
  finish(`exports in ${work}`);
})();
