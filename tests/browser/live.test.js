// The browser viewer served by `pyro serve` (docs/serve.md, "The served viewer"), in headless Chromium:
//  - opened with no file, it finds the server (/api/info) and goes live: the last 15 minutes of every
//    application pushed, asked for again every `refresh=` seconds; the flame graph's total is the
//    server's own total for the range (its JSON API, asked separately);
//  - data pushed after the page opened appears without a reload, and what the user chose (the app,
//    a search) stays across refreshes; a new application appears in the list;
//  - the range menu changes what is asked (`from=now-5m`) and the address (`live=now-5m`); Pause stops
//    the refreshes, Resume asks at once;
//  - a server that goes away: the bar says the refresh failed and the data shown stays;
//  - a server with --token: without the token the bar says how to give it (#token=); with it, live;
//  - a plain static server does not turn live mode on, nor is it asked for /api/info (the page goes live
//    only when its own response carried `Server-Timing: pyro-serve`).
// Screenshots of the live page and of the failed refresh are checked by pixels (the bar's green dot,
// a painted flame graph) and looked at by hand.
//
// usage: node tests/browser/live.test.js --site build/wasm --pyro PATH/TO/pyro --out DIR
'use strict';

const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const { spawn } = require('child_process');
const h = require('./harness');

const DEFAULTS = { site: 'build/wasm', pyro: '', out: 'build/browser-artifacts/live' };
const USAGE = 'live.test.js --site DIR --pyro PATH/TO/pyro --out DIR';

const { expect, exception, finish } = h.checker();
const { sleep, status, waitFor, click, screenshot, painted, openViewer } = require('./viewer_page').viewerPage(expect);

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port;
      server.close(() => resolve(port));
    });
  });
}

function request(port, method, target, body = null, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: target, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (body !== null) req.write(body);
    req.end();
  });
}

async function startServer(pyro, site, data, port, extra = []) {
  fs.mkdirSync(data, { recursive: true });
  const log = fs.openSync(path.join(data, '..', `serve-${port}.log`), 'a');
  const child = spawn(pyro, ['serve', '--data', data, '--bind', `127.0.0.1:${port}`, '--viewer', site, ...extra],
                      { stdio: ['ignore', log, log] });
  for (let i = 0; i < 400; i++) {
    try {
      await request(port, 'GET', '/index.html');
      return child;
    } catch (e) {
      if (child.exitCode !== null) break;
      await sleep(50);
    }
  }
  throw new Error(`pyro serve did not start on port ${port}`);
}

function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) { resolve(); return; }
    child.on('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

// A folded push of one 10 s block `ago` seconds back.
async function push(port, name, folded, ago, headers = {}) {
  const now = Math.floor(Date.now() / 1000);
  const from = now - (now % 10) - ago;
  const target = `/ingest?name=${encodeURIComponent(name)}&from=${from}&until=${from + 10}&format=folded`;
  const r = await request(port, 'POST', target, folded, { 'Content-Type': 'text/plain', ...headers });
  if (r.status !== 200) throw new Error(`push ${name}: HTTP ${r.status} ${r.body}`);
}

// The server's own total for an app over the last `range`, from its JSON API.
async function serverTotal(port, app, range = 'now-15m', headers = {}) {
  const r = await request(port, 'GET', `/api/query?query=${encodeURIComponent(app + '{}')}&from=${range}&until=now`,
                          null, headers);
  return r.status === 200 ? JSON.parse(r.body).query.total : -1;
}

const live = (page) => page.evaluate(() => window.pyroscopeViewer.live);

async function waitForLive(page, predicate, what, timeout = 30000) {
  const start = Date.now();
  let l = null;
  while (Date.now() - start < timeout) {
    l = await live(page);
    if (predicate(l)) return l;
    await sleep(100);
  }
  expect(false, 'timed out waiting for ' + what, l);
  return l;
}

async function testLive(browser, args, work) {
  const port = await freePort();
  const server = await startServer(args.pyro, args.site, path.join(work, 'data'), port);
  try {
    await push(port, 'liveshop.cpu{region=eu-north}', 'main;checkout;hot_alpha 300\nmain;idle 20\n', 60);
    await push(port, 'liveshop.cpu{region=us-east}', 'main;checkout;hot_alpha 100\nmain;browse 40\n', 30);
    const shopTotal = await serverTotal(port, 'liveshop');
    // Folded pushes without sampleRate are CPU samples at 100 Hz: stored as 10 ms of CPU time each.
    const NS = 10000000;
    expect(shopTotal === 460 * NS, 'the server holds the pushes (460 samples of liveshop, in ns)', shopTotal);

    const page = await openViewer(browser, `http://127.0.0.1:${port}`, '?refresh=2');
    let l = await waitForLive(page, (x) => x.active && x.loads >= 1, 'the page to go live');
    expect(l.range === 'now-15m' && l.refreshSeconds === 2, 'live over the last 15 minutes, refreshed every 2 s', l);
    expect(/format=pyro/.test(l.lastUrl) && /from=now-15m/.test(l.lastUrl), 'it asks the server for a .pyro slice of that range', l.lastUrl);
    let s = await waitFor(page, (st) => st.files.length === 1 && st.app === 'liveshop' && st.flame.main.total > 0, 'the live data');
    expect(s.flame.main.total === shopTotal, `the flame graph's total is the server's (${shopTotal})`, s.flame.main.total);
    const bar = await page.evaluate(() => {
      const b = document.getElementById('live-bar').getBoundingClientRect();
      const c = document.getElementById('canvas').getBoundingClientRect();
      return { hidden: document.getElementById('live-bar').hidden, barHeight: b.height, canvasTop: c.top,
               note: document.getElementById('live-note').textContent, range: document.getElementById('live-range').value };
    });
    expect(!bar.hidden && bar.canvasTop === bar.barHeight && bar.barHeight > 0, 'the live bar sits above the canvas', bar);
    expect(/^updated [0-9:]{8} · 2 series · [0-9.]+ (bytes|KB|MB) · every 2 s$/.test(bar.note), 'the bar says when and how much', bar.note);
    const image = await screenshot(page, args.out, 'live.png');
    const dot = h.countPixels(image, [0, 0, 40, 30], h.isGreen);
    expect(dot.count >= 10, 'the screenshot shows the green live dot', dot);
    const flame = painted(image, [0, 300, 1400, 500], [0x17, 0x17, 0x1c]);
    expect(flame.distinct >= 4 && flame.share > 0.05, 'and a painted viewer below it', flame);

    // What the user chose stays; new data and a new application come in without a reload.
    expect(await page.evaluate(() => window.pyroscopeViewer.setting('search', 'hot_alpha')), 'a search is set');
    const loadsBefore = (await live(page)).loads;
    await push(port, 'liveshop.cpu{region=eu-north}', 'main;checkout;hot_beta 500\n', 10);
    await push(port, 'livecart.cpu{}', 'main;cart;add_item 70\n', 10);
    const newTotal = await serverTotal(port, 'liveshop');
    s = await waitFor(page, (st) => st.flame.main.total === newTotal, `the new total (${newTotal}) without a reload`, 20000);
    l = await live(page);
    expect(l.loads > loadsBefore, 'by a refresh', { before: loadsBefore, after: l.loads });
    expect(s.app === 'liveshop' && /(^|&)search=hot_alpha(&|$)/.test(s.link), 'the app and the search stayed', { app: s.app, link: s.link });
    expect(s.apps && s.apps.includes('livecart'), 'the new application is in the list', s.apps);
    const beta = await page.evaluate(() => window.pyroscopeViewer.settingNow('app', 'livecart'));
    s = await waitFor(page, (st) => st.app === 'livecart', 'the new app selected');
    expect(beta.ok && s.flame.main.total === 70 * NS, 'its data is there (70 samples)', s.flame.main.total);
    expect(await page.evaluate(() => window.pyroscopeViewer.setting('app', 'liveshop')), 'back to liveshop');

    // The range menu: what is asked and the address follow.
    await page.selectOption('#live-range', 'now-5m');
    l = await waitForLive(page, (x) => x.range === 'now-5m' && /from=now-5m/.test(x.lastUrl) && x.loads > 0, 'the 5-minute range');
    expect(new URL(page.url()).searchParams.get('live') === 'now-5m', 'the address says live=now-5m', page.url());
    await click(page, 'copy_link');
    const link = await page.evaluate(() => window.pyroscopeViewer.lastLink);
    expect(/[?&]live=now-5m/.test(link) && !/[?&](from|until)=/.test(link),
           'a copied link carries the live range, not the absolute one', link);

    // Pause and resume.
    await page.click('#live-pause');
    const paused = (await live(page)).loads;
    await push(port, 'liveshop.cpu{region=eu-north}', 'main;checkout;hot_gamma 5\n', 10);
    await sleep(5000);
    l = await live(page);
    expect(l.paused && l.loads === paused, 'paused: no refresh in 5 s', l);
    await page.click('#live-pause');
    l = await waitForLive(page, (x) => !x.paused && x.loads > paused, 'Resume to refresh at once', 5000);
    const gammaTotal = await serverTotal(port, 'liveshop', 'now-5m');
    s = await waitFor(page, (st) => st.flame.main.total === gammaTotal, `the total after Resume (${gammaTotal})`, 10000);

    // The server goes away: the bar says so and the data stays.
    const shown = s.flame.main.total;
    await stopServer(server);
    l = await waitForLive(page, (x) => x.failures >= 1, 'a failed refresh', 15000);
    s = await status(page);
    expect(/refresh failed/.test(l.note) && /data shown is from before/.test(l.note), 'the bar says the refresh failed', l.note);
    expect(s.files.length === 1 && s.flame.main.total === shown && !s.error, 'and the data shown stays', { total: s.flame.main.total, error: s.error });
    const failed = await screenshot(page, args.out, 'live-failed.png');
    const red = h.countPixels(failed, [0, 0, 40, 30], (r, g, b) => r > 180 && g < 120 && b < 120);
    expect(red.count >= 10, 'the screenshot shows the dot red', red);
    const errors = page.pageErrors.filter((e) => !/ERR_CONNECTION_REFUSED/.test(e));  // the stopped server's
    expect(errors.length === 0, 'no page errors but the refused connections', page.pageErrors);
    await page.close();
  } finally {
    await stopServer(server);
  }
}

async function testToken(browser, args, work) {
  const port = await freePort();
  const server = await startServer(args.pyro, args.site, path.join(work, 'data-token'), port, ['--token', 's3cret']);
  try {
    await push(port, 'secured.cpu{}', 'main;guarded 42\n', 20, { Authorization: 'Bearer s3cret' });
    let page = await openViewer(browser, `http://127.0.0.1:${port}`, '?refresh=0');
    let l = await waitForLive(page, (x) => x.active && x.failures >= 1, 'the refused first load');
    expect(/HTTP 401/.test(l.lastError) && /#token=/.test(l.lastError), 'without the token: the bar says how to give it', l.lastError);
    await page.close();
    page = await openViewer(browser, `http://127.0.0.1:${port}`, '?refresh=0#token=s3cret');
    l = await waitForLive(page, (x) => x.loads >= 1, 'the load with the token');
    const s = await waitFor(page, (st) => st.app === 'secured', 'the secured app');
    expect(s.flame.main.total === 42 * 10000000 && l.failures === 0, 'with #token=: live, 42 samples', { total: s.flame.main.total, l });
    await page.close();
  } finally {
    await stopServer(server);
  }
}

async function testStaticServer(browser, args) {
  const { server, url } = await h.serveStatic({ '/': args.site });
  try {
    const page = await openViewer(browser, url, '');
    await sleep(1500);
    const l = await live(page);
    const hidden = await page.evaluate(() => document.getElementById('live-bar').hidden);
    expect(!l.active && hidden, 'a plain static server: no live mode, no bar', l);
    expect(page.pageErrors.length === 0, 'and no request for an /api/ address it does not have (no 404 logged)',
           page.pageErrors);
    await page.close();
  } finally {
    server.close();
  }
}

(async () => {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE, ['pyro']);
  fs.mkdirSync(args.out, { recursive: true });
  for (const f of ['index.html', 'viewer.js', 'viewer.wasm']) {
    if (!fs.existsSync(path.join(args.site, f))) {
      console.error(`live.test.js: ${path.join(args.site, f)} is missing: run viewer/build-wasm.sh first`);
      process.exit(1);
    }
  }
  const work = path.join(args.out, 'work');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const browser = await h.launchBrowser();
  try {
    for (const run of [() => testLive(browser, args, work), () => testToken(browser, args, work),
                       () => testStaticServer(browser, args)]) {
      try { await run(); } catch (e) { exception(e); }
    }
  } finally {
    await browser.close();
  }
  finish(`screenshots in ${args.out}`);
})();
