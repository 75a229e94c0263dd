// Browser tests of docs/security.md, in headless Chromium with the WebAssembly viewer:
//  - share files: a search, a checked tag value, a tag key and frame names that try to end the page's
//    <script> elements (`</SCRIPT>`, `</ScRiPt>`) or to derail the HTML parser (`<!--<script>`) are
//    exported with Export > Share, and the .html opened from file:// shows them as text: no dialog, no
//    script of its own, exactly the page's three scripts. An application named like that (the name
//    rules forbid it, a file can hold it) cannot be shared at all;
//  - a server that lies about Content-Length (4 GB + 64 KB, more than the memory, more or less than it
//    sends, absent) gives an error or the file, and never a write outside a malloc'd block (every write
//    into the WebAssembly heap is checked against the blocks the page allocated);
//  - a malformed file= (bad %-escape, no URL) is named in the red banner; the page still runs;
//  - file= downloads carry no cookies; a failed malloc in the page throws instead of writing at 0.
//
// usage: node tests/browser/security.test.js --site build/wasm --data DIR --out DIR
//   DIR (data) holds hostile.pyro and rideshare.pyro (make_test_data writes them).
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const h = require('./harness');

const DEFAULTS = { site: 'build/wasm', data: 'build/testdata', out: 'build/browser-artifacts/security' };
const USAGE = 'security.test.js --site DIR --data DIR --out DIR';

const { expect, exception, finish } = h.checker();
const { sleep, status, waitFor, widget, click, stableWidget, screenshot, openViewer } =
  require('./viewer_page').viewerPage(expect);

// As tests/browser/make_test_data.cpp writes them into hostile.pyro.
const HOSTILE_VALUE = '</SCRIPT><SCRIPT>alert(location.href)</SCRIPT>';
const HOSTILE_COMMENT = '<!--<script>';
const HOSTILE_KEY = 'k</ScRiPt><script>alert(4)</script>';
const HOSTILE_FRAME = '</ScRiPt><!--<script>alert(2)//';
const HOSTILE_APP = '</SCRIPT><SCRIPT>alert(3)</SCRIPT>';

const query = (params) => '?' + Object.entries(params).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

// Export > Share: clicks the menu, returns the saved .html's path (or null when no download came).
async function exportShare(page, saveAs, timeout = 30000) {
  await click(page, 'export');
  await stableWidget(page, 'export:share');
  const download = page.waitForEvent('download', { timeout }).catch(() => null);
  await click(page, 'export:share');
  const file = await download;
  if (!file) return null;
  await file.saveAs(saveAs);
  return saveAs;
}

// A downloaded share file holds exactly its three scripts and no other script tag or comment, in any
// case. False (after reporting) when there is no file or it does not.
function checkShareFile(saved) {
  if (!expect(saved !== null, 'Export > Share downloads a share file')) return false;
  const html = fs.readFileSync(saved, 'utf8');
  const count = (re) => (html.match(re) || []).length;
  return expect(count(/<script/gi) === 3 && count(/<\/script/gi) === 3 && count(/<!--/g) === 0,
                'the file has its three scripts and no other script tag or comment in any case',
                [count(/<script/gi), count(/<\/script/gi), count(/<!--/g)]);
}

// Opens a share file from file:// and records every dialog (dismissed) and page error.
async function openShare(browser, file) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.dialogs = [];
  page.pageErrors = [];
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => page.pageErrors.push(e.message));
  await page.goto('file://' + file);
  return page;
}

// The share attack: hostile strings come in through the address (tags, search) and the data (tag
// key, frame names), the user shares, the .html is opened elsewhere.
async function testShareFiles(browser, base, out) {
  const cases = [
    { name: 'closing tags', tag: HOSTILE_VALUE, search: '</ScRiPt><!--<script>', file: 'share-closing-tags.html',
      screenshot: 'share-closing-tags.png' },
    { name: '<!--<script>', tag: HOSTILE_COMMENT, search: HOSTILE_COMMENT, file: 'share-comment.html',
      screenshot: 'share-comment.png' },
  ];
  for (const c of cases) {
    console.log(`share file with ${c.name} in the search and a checked tag value`);
    const page = await openViewer(browser, base, query({
      file: 'data/hostile.pyro', app: 'hostile-app', tags: 'env=' + c.tag, search: c.search }));
    const shown = await waitFor(page, (st) => st.flame_painted && (st.selected_tags.env || [])[0] === c.tag,
                                `hostile-app{env=${c.tag}}`);
    expect(shown.search === c.search && shown.error === '', 'the viewer takes the search and tag from the address',
           [shown.search, shown.error]);
    const saved = await exportShare(page, path.resolve(out, c.file));
    await page.close();
    if (!checkShareFile(saved)) continue;
    const opened = await openShare(browser, saved);
    const s = await waitFor(opened, (st) => st.flame_painted, 'the share file\'s flame graph');
    expect(opened.dialogs.length === 0, 'no dialog opens', opened.dialogs);
    const scripts = await opened.evaluate(() => document.scripts.length);
    expect(scripts === 3, 'the page has exactly its three scripts', scripts);
    if (!s) {  // the page never started (timed out above)
      await opened.close();
      continue;
    }
    expect(s.search === c.search, 'the search is the hostile text, as text', s.search);
    expect(JSON.stringify(s.selected_tags) === JSON.stringify({ env: [c.tag] }), 'and so is the checked tag value',
           s.selected_tags);
    expect(!!s.widgets[`tag:env=${c.tag}`] && !!s.widgets[`tag:${HOSTILE_KEY}=v`],
           'the tag explorer draws the hostile value and key as labels', Object.keys(s.widgets).filter((k) => k.startsWith('tag:')));
    expect(s.table.first.includes(HOSTILE_FRAME), 'the table lists the hostile frame name', s.table.first);
    expect(s.error === '' && opened.pageErrors.length === 0, 'no error, no page error', [s.error, opened.pageErrors]);
    const image = await screenshot(opened, out, c.screenshot);
    const [x, y, w, hh] = widget(s, 'flame.main');
    const blocks = h.countPixels(image, [x, y, w, Math.min(hh, 6 * s.flame.main.row_height)], (r, g, b) => r > 150 && g > 60 && b < 120);
    expect(blocks.count > 1000, 'the flame graph is drawn', blocks.count);
    await sleep(500);  // a script that slipped through would have run by now
    expect(opened.dialogs.length === 0, 'still no dialog', opened.dialogs);
    await opened.close();
  }

  // The session selects an application by name, not through selector text, so an application named
  // with closing tags can be shared too: its name must stay data in the share file.
  console.log('an application named with closing tags is shared as text');
  const page = await openViewer(browser, base, query({ file: 'data/hostile.pyro', app: HOSTILE_APP }));
  const s = await waitFor(page, (st) => st.app === HOSTILE_APP && st.flame_painted, 'the hostile application selected');
  expect(s.apps.includes(HOSTILE_APP), 'the application list holds the name as text', s.apps);
  const saved = await exportShare(page, path.resolve(out, 'share-app.html'));
  await page.close();
  if (!checkShareFile(saved)) return;
  const opened = await openShare(browser, saved);
  const shared = await waitFor(opened, (st) => st.flame_painted, 'the share file\'s flame graph');
  expect(shared && shared.app === HOSTILE_APP, 'it opens on the application, its name as text', shared && shared.app);
  await sleep(500);  // a script that slipped through would have run by now
  expect(opened.dialogs.length === 0 && opened.pageErrors.length === 0, 'no dialog, no page error',
         [opened.dialogs, opened.pageErrors]);
  await screenshot(opened, out, 'share-app.png');
  await opened.close();
}

// A server on 127.0.0.1 that lies: each path answers with the Content-Length and body of its case,
// and allows cross-origin reads (as a server a file= link may point at).
function serveLies(cases) {
  const server = net.createServer((socket) => {
    let head = '';
    socket.on('data', (chunk) => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const requestPath = head.split(' ')[1] || '/';
      const c = cases[requestPath.split('?')[0]];
      if (!c) { socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'); return; }
      const lines = ['HTTP/1.1 200 OK', 'Content-Type: application/octet-stream', 'Access-Control-Allow-Origin: *',
                     'Access-Control-Expose-Headers: Content-Length', 'Cache-Control: no-store', 'Connection: close'];
      if (c.length !== null) lines.push('Content-Length: ' + c.length);
      socket.write(lines.join('\r\n') + '\r\n\r\n');
      socket.end(c.body);
    });
    socket.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

// Wraps the page's _malloc/_realloc/_free and Uint8Array.prototype.set: every write into the
// WebAssembly heap must land inside a block the page allocated, at the size WebAssembly saw (a wasm32
// size_t is the number modulo 2^32). Violations are collected in window.heapCheck.violations.
async function checkHeapWrites(page) {
  await page.evaluate(() => {
    const M = window.Module;
    // Emscripten binds each export on its first call by replacing Module._name: bind them now, or the
    // first call would replace the wrappers below.
    M._free(M._realloc(M._malloc(16), 32));
    const blocks = new Map();
    const check = window.heapCheck = { violations: [], allocations: [] };
    const malloc = M._malloc, realloc = M._realloc, free = M._free;
    M._malloc = (n) => {
      const p = malloc(n);
      check.allocations.push(n);
      if (p) blocks.set(p, n >>> 0);
      return p;
    };
    M._realloc = (p, n) => {
      const q = realloc(p, n);
      check.allocations.push(n);
      if (q) { blocks.delete(p); blocks.set(q, n >>> 0); }
      return q;
    };
    M._free = (p) => { blocks.delete(p); return free(p); };
    const set = Uint8Array.prototype.set;
    Uint8Array.prototype.set = function (source, offset = 0) {
      if (this.buffer === M.HEAPU8.buffer && this.byteOffset === 0) {
        const end = offset + source.length;
        let inside = false;
        for (const [p, n] of blocks) if (offset >= p && end <= p + n) { inside = true; break; }
        if (!inside && check.violations.length < 20) check.violations.push({ offset, length: source.length });
      }
      return set.call(this, source, offset);
    };
  });
}

async function testLyingServer(browser, base, data) {
  const file = fs.readFileSync(path.join(data, 'rideshare.pyro'));
  const junk = (n) => Buffer.alloc(n, 0x5a);
  const { server, url } = await serveLies({
    '/over-4g.pyro': { length: 2 ** 32 + 65536, body: junk(4 << 20) },
    '/over-memory.pyro': { length: 3000000000, body: junk(1 << 20) },
    '/more-than-sent.bin': { length: 100 << 20, body: file },
    '/less-than-sent.bin': { length: 1000, body: file },
    '/absent.pyro': { length: null, body: file },
  });
  try {
    const page = await openViewer(browser, base, '');
    await waitFor(page, (st) => !!st.widgets.open, 'an empty viewer');
    page.on('crash', () => page.pageErrors.push('the page crashed'));
    await checkHeapWrites(page);
    const open = async (name) => {
      await page.evaluate((u) => window.pyroscopeViewer.open(u), url + '/' + name);
      const s = await waitFor(page, (st) => !st.busy, `${name} handled`);
      const heap = await page.evaluate(() => window.heapCheck);
      return { s, heap };
    };
    for (const [name, length] of [['over-4g.pyro', 2 ** 32 + 65536], ['over-memory.pyro', 3000000000]]) {
      console.log(`Content-Length ${length}, ${name === 'over-4g.pyro' ? '4 MB' : '1 MB'} sent`);
      const { s, heap } = await open(name);
      expect(heap.violations.length === 0, 'no write outside an allocated block', heap.violations);
      expect(heap.allocations.every((n) => Number.isSafeInteger(n) && n <= 2 ** 31), 'no allocation beyond the memory',
             heap.allocations.filter((n) => n > 2 ** 31));
      expect(s.error.includes(String(length)) && /more than the viewer can hold/.test(s.error),
             'the banner names the length and why it is refused', s.error);
    }
    console.log('Content-Length 100 MB, the 300 KB file sent');
    let { s, heap } = await open('more-than-sent.bin');
    expect(heap.violations.length === 0, 'no write outside an allocated block', heap.violations);
    expect(s.error !== '' && s.files.length === 0, 'a download cut short is an error', s.error);
    console.log('Content-Length 1000, the whole file sent');
    ({ s, heap } = await open('less-than-sent.bin'));
    expect(heap.violations.length === 0, 'no write outside an allocated block', heap.violations);
    expect(s.error !== '' || (s.files.length === 1 && s.files[0].bytes <= 1000), 'a file of at most 1000 bytes or an error',
           [s.error, s.files]);
    console.log('no Content-Length');
    ({ s, heap } = await open('absent.pyro'));
    expect(heap.violations.length === 0, 'no write outside an allocated block', heap.violations);
    expect(s.error === '' && s.files.length === 1 && s.files[0].bytes === file.length, 'the whole file opens',
           [s.error, s.files]);
    const total = s.flame.main.total;
    await page.evaluate(() => window.pyroscopeViewer.open('data/rideshare.pyro'));
    s = await waitFor(page, (st) => !st.busy && st.files.length === 1 && st.files[0].name === 'rideshare.pyro', 'a served file');
    expect(s.error === '' && s.flame.main.total === total && total > 0, 'the viewer still works: the same file served honestly',
           [s.error, s.flame.main.total, total]);
    const errors = page.pageErrors.filter((e) => !/ERR_CONTENT_LENGTH_MISMATCH/.test(e));  // the lies, as Chromium logs them
    expect(errors.length === 0, 'no page errors', page.pageErrors);
    await page.close();
  } finally {
    server.close();
  }
}

async function testBadFileParameter(browser, base, out) {
  for (const [value, pattern] of [['a%25E0.pyro', /file 'a%E0\.pyro' has a malformed %-escape/],
                                  ['http://[::1', /file 'http:\/\/\[::1' is not a URL/]]) {
    console.log(`file=${value} beside a good file`);
    const page = await openViewer(browser, base, `?file=${value}&file=data/rideshare.pyro`).catch((e) => {
      expect(false, 'the page starts', String(e.message || e));
      return null;
    });
    if (!page) continue;
    const s = await waitFor(page, (st) => st.flame_painted && st.error !== '', 'the good file and a message');
    expect(pattern.test(s.error), 'the banner names the bad file parameter', s.error);
    expect(s.files.length === 1 && s.files[0].name === 'rideshare.pyro', 'the good file opens', s.files);
    if (value.startsWith('a')) {
      const image = await screenshot(page, out, 'bad-file-parameter.png');
      const red = h.countPixels(image, widget(s, 'error'), (r, g, b) => r > 110 && g < 60 && b < 60);
      expect(red.share > 0.5, 'in the red banner', red.share);
    }
    await page.close();
  }
}

async function testNoCookies(browser, base, requests) {
  console.log('file= downloads carry no cookies');
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  await context.addCookies([{ name: 'session', value: 'secret', url: base }]);
  const page = await context.newPage();
  requests.length = 0;
  await page.goto(base + '/?file=data/rideshare.pyro&file=data/sample.folded');
  await page.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
  const s = await waitFor(page, (st) => st.files.length === 2 && st.flame_painted, 'both files');
  expect(s.error === '', 'both files open', s.error);
  const pageRequest = requests.find((r) => r.url.startsWith('/?file='));
  expect(pageRequest && pageRequest.cookie.includes('session=secret'), 'the page itself is requested with the cookie',
         pageRequest);
  const data = requests.filter((r) => r.url.startsWith('/data/'));
  expect(data.length >= 2 && data.every((r) => !r.cookie.includes('session')), 'the file= downloads are not', data);
  await context.close();
}

async function testFailedMalloc(browser, base) {
  console.log('a failed malloc in the page');
  const page = await openViewer(browser, base, '');
  await waitFor(page, (st) => !!st.widgets.open, 'an empty viewer');
  const result = await page.evaluate(() => {
    const M = window.Module;
    const before = Array.from(M.HEAPU8.slice(0, 64));
    const malloc = M._malloc;
    M._malloc = () => 0;
    let thrown = '';
    try { window.pyroscopeViewer.setting('search', 'a string that needs memory'); } catch (e) { thrown = String(e.message || e); }
    M._malloc = malloc;
    return { thrown, same: Array.from(M.HEAPU8.slice(0, 64)).every((v, i) => v === before[i]) };
  });
  expect(/out of memory/.test(result.thrown), 'the page throws "out of memory"', result.thrown);
  expect(result.same, 'and writes nothing at address 0');
  await page.close();
}

(async () => {
  const args = h.parseArgs(process.argv, DEFAULTS, USAGE);
  fs.mkdirSync(args.out, { recursive: true });
  for (const f of ['index.html', 'viewer.js', 'viewer.wasm', 'viewer-single.js']) {
    if (!fs.existsSync(path.join(args.site, f))) {
      console.error(`security.test.js: ${path.join(args.site, f)} is missing: run viewer/build-wasm.sh first`);
      process.exit(1);
    }
  }
  const requests = [];
  const { server, url } = await h.serveStatic({ '/': args.site, '/data/': args.data },
                                              (req) => requests.push({ url: req.url, cookie: req.headers.cookie || '' }));
  const browser = await h.launchBrowser();
  try {
    // Each part on its own: one that fails (or hangs until its timeout) does not hide the others.
    for (const run of [() => testShareFiles(browser, url, args.out), () => testLyingServer(browser, url, args.data),
                       () => testBadFileParameter(browser, url, args.out), () => testNoCookies(browser, url, requests),
                       () => testFailedMalloc(browser, url)]) {
      try { await run(); } catch (e) { exception(e); }
    }
  } finally {
    await browser.close();
    server.close();
  }
  finish(`screenshots in ${args.out}`);
})();
