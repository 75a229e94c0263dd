// The page around the WebAssembly viewer: opens files (picker, drag-and-drop, ?file=<url> with a
// progress bar), passes URL settings on, reports errors, keeps the canvas sized to the window, and
// exposes window.pyroscopeViewer for tests and embedding (status(), open(), benchZoom()).
//
// File bytes stream straight into the WebAssembly heap (malloc'd there, then owned by the viewer), so
// a 200 MB profile does not also sit in the JavaScript heap.
'use strict';

(function () {
  const canvas = document.getElementById('canvas');
  const fileInput = document.getElementById('file-input');
  const overlay = document.getElementById('overlay');
  const overlayPanel = document.getElementById('overlay-panel');
  const overlayTitle = document.getElementById('overlay-title');
  const overlayProgress = document.getElementById('overlay-progress');
  const overlayDetail = document.getElementById('overlay-detail');
  const overlayClose = document.getElementById('overlay-close');
  const dropHint = document.getElementById('drop-hint');

  let ready = false;
  let busy = false;
  const pageErrors = [];
  // The data set's file= URLs, for "Copy link"; files from the picker or a drop have none.
  let linkFiles = [];
  let linkMissesFiles = false;

  function showOverlay(title, detail, fraction) {
    overlay.hidden = false;
    overlayPanel.classList.remove('error');
    overlayClose.hidden = true;
    overlayTitle.textContent = title;
    overlayDetail.textContent = detail || '';
    overlayProgress.hidden = false;
    if (fraction === undefined || fraction === null) overlayProgress.removeAttribute('value');
    else overlayProgress.value = fraction;
  }
  function hideOverlay() { overlay.hidden = true; }
  // Errors before the viewer runs (or that stop it) go to the page; the others into the viewer's banner.
  function fatal(message) {
    pageErrors.push(String(message));
    overlay.hidden = false;
    overlayPanel.classList.add('error');
    overlayTitle.textContent = 'The viewer cannot continue';
    overlayDetail.textContent = String(message);
    overlayProgress.hidden = true;
    overlayClose.hidden = false;
  }
  overlayClose.addEventListener('click', hideOverlay);
  function reportError(message) {
    pageErrors.push(String(message));
    try {
      if (ready) {
        withCString(String(message), (ptr) => Module._pv_set_error(ptr));
        return;
      }
    } catch (e) {
      message += ' (' + (e && e.message ? e.message : e) + ')';
    }
    fatal(message);
  }

  function withCString(text, fn) {
    const length = Module.lengthBytesUTF8(text) + 1;
    const ptr = Module._malloc(length);
    if (!ptr) throw new Error('out of memory for a string of ' + formatBytes(length));
    Module.stringToUTF8(text, ptr, length);
    try { return fn(ptr); } finally { Module._free(ptr); }
  }

  // Sizes from outside (Content-Length, a file's size, a download's length) are hostile until checked:
  // each one handed to _malloc / _realloc is a safe integer no larger than the most the WebAssembly
  // memory can grow to (the build's MAXIMUM_MEMORY). A larger number would not fit: wasm32 cuts it to
  // 32 bits (4 GB + 64 KB becomes 64 KB), and the block would be smaller than the bytes written to it.
  let heapMax = 0;
  function heapLimit() { return heapMax || (heapMax = Module._pv_heap_max()); }
  function checkedSize(n, what) {
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}: ${n} is not a byte count`);
    if (n > heapLimit()) throw new Error(`${what}: ${n} bytes is more than the viewer can hold (${formatBytes(heapLimit())})`);
    return n;
  }
  function heapAlloc(n, what) {
    checkedSize(n, what);
    const ptr = Module._malloc(Math.max(1, n));
    if (!ptr) throw new Error(`${what}: out of memory allocating ${formatBytes(n)}`);
    return ptr;
  }
  // Content-Length as a number, or 0 when absent or not a plain decimal number.
  function contentLength(headers) {
    const text = (headers.get('Content-Length') || '').trim();
    return /^[0-9]+$/.test(text) ? Number(text) : 0;
  }

  function formatBytes(n) {
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KB';
    return n + ' bytes';
  }

  const nextPaint = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

  // The next piece of a download; a connection that breaks (or delivers less than its Content-Length)
  // is an error naming the file.
  function readChunk(reader, name) {
    return reader.read().catch((e) => { throw new Error(`${name}: download failed (${e && e.message ? e.message : e})`); });
  }

  const STREAM_CHUNK = 2 << 20;  // folded text reaches the parser in pieces of this size

  // Folded text, told by its content as the viewer tells every format (a perf script is often
  // called .txt too): printable text whose first line ends in " <count>". Everything else goes to the
  // viewer whole, which reads .pyro, pprof, perf script, speedscope and .cpuprofile.
  function looksFolded(name, firstChunk) {
    if (!firstChunk) return false;
    const head = firstChunk.subarray(0, 4096);
    if (head.includes(0)) return false;
    const text = new TextDecoder().decode(head);
    const newline = text.indexOf('\n');
    return /\S\s+\d+\s*$/.test(newline >= 0 ? text.slice(0, newline) : text);
  }

  // Streams folded text into the viewer's parser while it downloads: the text never sits whole in
  // memory, and parsing overlaps the download.
  async function streamFolded(reader, first, name, modified, onProgress, timing) {
    const id = withCString(name, (ptr) => Module._pv_stream_begin(ptr, modified));
    const staging = heapAlloc(STREAM_CHUNK, name);
    let filled = 0, total = 0, ok = true;
    timing.parseMs = timing.parseMs || 0;
    const flush = () => {
      const start = performance.now();
      if (filled && ok) ok = Module._pv_stream_chunk(id, staging, filled) === 1;
      timing.parseMs += performance.now() - start;
      filled = 0;
    };
    try {
      let chunk = first;
      while (chunk && ok) {
        let offset = 0;
        while (offset < chunk.length) {
          const n = Math.min(chunk.length - offset, STREAM_CHUNK - filled);
          Module.HEAPU8.set(chunk.subarray(offset, offset + n), staging + filled);
          filled += n;
          offset += n;
          if (filled === STREAM_CHUNK) flush();
        }
        total += chunk.length;
        onProgress(total);
        const { done, value } = await readChunk(reader, name);
        chunk = done ? null : value;
      }
      flush();
      if (!ok) reader.cancel().catch(() => {});  // the error is reported when the batch opens
    } finally {
      Module._free(staging);
    }
    return total;
  }

  // Reads a body into malloc'd WebAssembly memory; returns {ptr, size}. `expected` may be 0 (unknown);
  // it is a hint (a server's Content-Length can lie), so every chunk is checked against the block.
  async function readIntoHeap(reader, first, expected, name, onProgress) {
    let capacity = 0, ptr = 0, size = 0;
    try {
      capacity = checkedSize(Math.max(expected, first ? first.length : 0, 1 << 16), name);
      ptr = heapAlloc(capacity, name);
      let chunk = first;
      while (chunk) {
        if (size + chunk.length > capacity) {
          const needed = checkedSize(size + chunk.length, name);
          const grownCapacity = Math.min(Math.max(needed, capacity * 2), heapLimit());
          const grown = Module._realloc(ptr, grownCapacity);
          if (!grown) throw new Error(`${name}: out of memory growing to ${formatBytes(grownCapacity)}`);
          ptr = grown;
          capacity = grownCapacity;
        }
        if (size + chunk.length > capacity) throw new Error(`${name}: ${size + chunk.length} bytes do not fit a block of ${capacity}`);
        Module.HEAPU8.set(chunk, ptr + size);  // HEAPU8 is re-read: memory growth replaces it
        size += chunk.length;
        onProgress(size);
        const { done, value } = await readChunk(reader, name);
        chunk = done ? null : value;
      }
    } catch (e) {
      if (ptr) Module._free(ptr);
      reader.cancel().catch(() => {});
      throw e;
    }
    return { ptr, size };
  }

  // sources: [{name, size, modified (unix s), open: async () => ReadableStream}]. All of them open
  // together as one data set; .pyro bytes go to the viewer whole, folded text is parsed as it streams.
  // quiet: no progress overlay (live refreshes replace the data in place every few seconds).
  async function openSources(sources, quiet = false) {
    if (!ready || busy || sources.length === 0) return false;
    if (live.active && !sources.every((source) => source.live)) live.stop();  // the user opened files instead
    busy = true;
    let ok = false;
    const timing = { start: performance.now() };
    api.timings.push(timing);
    Module._pv_open_begin();
    try {
      const total = sources.reduce((sum, s) => sum + (s.size || 0), 0);
      let before = 0;
      for (let i = 0; i < sources.length; i++) {
        const source = sources[i];
        const label = sources.length > 1 ? `Loading ${source.name} (${i + 1} of ${sources.length})`
                                         : `Loading ${source.name}`;
        if (!quiet) showOverlay(label, '', total ? 0 : null);
        let lastUpdate = 0;
        const progress = (done) => {
          const now = performance.now();
          if (now - lastUpdate < 200) return;  // each DOM update costs a composite of the canvas
          lastUpdate = now;
          const all = before + done;
          const known = total || source.size;
          if (known) overlayProgress.value = all / (total || source.size);
          else overlayProgress.removeAttribute('value');
          overlayDetail.textContent = formatBytes(all) + (known ? ' of ' + formatBytes(total || source.size) : '');
        };
        const stream = await source.open();
        if (source.whole) {
          // A small .pyro in one piece: one copy into the heap, no per-chunk round trips.
          const bytes = new Uint8Array(await source.whole());
          const ptr = heapAlloc(bytes.length, source.name);
          Module.HEAPU8.set(bytes, ptr);
          withCString(source.name, (namePtr) => Module._pv_open_add(namePtr, ptr, bytes.length, source.modified || 0));
          before += bytes.length;
          continue;
        }
        const reader = stream.getReader();
        const firstRead = await readChunk(reader, source.name);
        const first = firstRead.done ? new Uint8Array(0) : firstRead.value;
        if (looksFolded(source.name, first)) {
          before += await streamFolded(reader, first, source.name, source.modified || 0, progress, timing);
        } else {
          const { ptr, size } = await readIntoHeap(reader, firstRead.done ? null : first, source.size || 0, source.name,
                                                   progress);
          withCString(source.name, (namePtr) => Module._pv_open_add(namePtr, ptr, size, source.modified || 0));
          before += size;
        }
      }
      timing.read = performance.now();
      // Opening parses and checks every byte: for big data sets say so first (costs a frame).
      if (!quiet && before > (32 << 20)) {
        showOverlay('Opening ' + sources.map((s) => s.name).join(', '), formatBytes(before), null);
        await nextPaint();
      }
      ok = Module._pv_open_end() === 1;
      timing.opened = performance.now();
      linkFiles = sources.filter((s) => s.url).map((s) => s.url);
      linkMissesFiles = sources.some((s) => !s.url && !s.live);
    } catch (e) {
      Module._pv_open_begin();  // drops what was read so far
      reportError(e && e.message ? e.message : String(e));
    } finally {
      busy = false;
      if (!quiet) hideOverlay();
      Module._pv_redraw();
    }
    return ok;
  }

  function fileSources(files) {
    return Array.from(files).map((f) => ({
      name: f.name, size: f.size, modified: Math.floor(f.lastModified / 1000), open: async () => f.stream(),
    }));
  }

  // A file= value: {name} (the last part of its path, %-escapes decoded), or {error} saying what is
  // wrong with it (no URL, a malformed %-escape). Never throws: a bad value is named in the banner.
  function parseFileParam(value) {
    let path;
    try {
      path = new URL(value, location.href).pathname;
    } catch (e) {
      return { error: `file '${value}' is not a URL` };
    }
    const last = path.split('/').pop();
    try {
      return { name: decodeURIComponent(last) || value };
    } catch (e) {
      return { error: `file '${value}' has a malformed %-escape` };
    }
  }
  function nameOfUrl(url) { return parseFileParam(url).name || url; }
  function fileParams() {
    return new URLSearchParams(location.search).getAll('file').flatMap((f) => f.split(',')).filter((f) => f.length);
  }
  // file= downloads send no cookies or HTTP authentication (docs/security.md): an address someone sends
  // you must not make the viewer read a page with your login, whatever the origin.
  const FETCH_OPTIONS = { credentials: 'omit' };

  // .pyro files are compact: below 64 MB they are read in one piece (much faster than chunk by chunk
  // when the page is busy); folded text and big files stream, with progress.
  function readsWhole(name, response) {
    const length = contentLength(response.headers);
    return /\.pyro$/i.test(name) && response.ok && !response.headers.get('Content-Encoding') &&
           length > 0 && length < (64 << 20);
  }

  // ?file= downloads start with the page, while the WebAssembly runtime is still starting. A .pyro file
  // is fetched by a worker: the page's own thread is busy starting the runtime and WebGL then, and a
  // body it has to receive arrives several times slower (6.6 MB: ~0.55 s instead of ~0.1 s here).
  // The worker hands the bytes over without a copy; anything it should not read whole (too big,
  // compressed, an error status) is fetched again by the page, which streams it or reports it.
  const WORKER_SOURCE = `onmessage = async (event) => {
    const url = event.data;
    postMessage({ url, started: true });
    try {
      const response = await fetch(url, ${JSON.stringify(FETCH_OPTIONS)});
      const headers = {};
      for (const key of ['Content-Length', 'Content-Encoding', 'Last-Modified']) headers[key] = response.headers.get(key);
      const text = (headers['Content-Length'] || '').trim();
      const length = /^[0-9]+$/.test(text) ? Number(text) : 0;
      if (!response.ok || headers['Content-Encoding'] || !(length > 0 && length < (64 << 20))) {
        postMessage({ url, refetch: true });
        return;
      }
      const bytes = await response.arrayBuffer();
      postMessage({ url, headers, bytes }, [bytes]);
    } catch (error) {
      postMessage({ url, refetch: true });
    }
  };`;
  // A worker only starts (and so only starts its download) once the page's thread is free for a
  // moment: created while the runtime is starting, it began ~0.2 s late. The runtime's start therefore
  // waits until every such worker has begun (or 150 ms have passed); see Module.preInit.
  const workersStarted = [];
  function fetchInWorker(url) {
    let started;
    workersStarted.push(new Promise((resolve) => { started = resolve; }));
    return new Promise((resolve) => {
      let worker;
      try {
        worker = new Worker(URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' })));
      } catch (e) {
        started();
        resolve(null);  // no workers here (a locked-down page): the page fetches itself
        return;
      }
      worker.onmessage = (event) => {
        started();
        if (event.data.started) { api.marks.fileFetchStarted = performance.now(); return; }
        worker.terminate();
        if (event.data.refetch) { resolve(null); return; }
        api.marks.fileBody = performance.now();
        const headers = new Headers();
        for (const [key, value] of Object.entries(event.data.headers)) if (value !== null) headers.set(key, value);
        const bytes = event.data.bytes;
        resolve({ response: { ok: true, status: 200, statusText: 'OK', headers }, whole: Promise.resolve(bytes) });
      };
      worker.onerror = () => { started(); worker.terminate(); resolve(null); };
      worker.postMessage(new URL(url, location.href).href);
    });
  }
  function fetchOnPage(url) {
    return fetch(url, FETCH_OPTIONS).then((response) => {
      api.marks.fileHeaders = performance.now();
      return { response, whole: readsWhole(nameOfUrl(url), response) ? response.arrayBuffer() : null };
    }, (error) => ({ error }));
  }
  const earlyFetches = new Map();
  for (const url of fileParams()) {
    if (parseFileParam(url).error) continue;  // reported once the viewer runs
    const viaWorker = /\.pyro$/i.test(nameOfUrl(url)) && typeof Worker === 'function';
    earlyFetches.set(url, viaWorker ? fetchInWorker(url).then((got) => got || fetchOnPage(url)) : fetchOnPage(url));
  }

  function urlSources(urls) {
    return urls.map((url) => {
      const name = nameOfUrl(url);
      const source = { name, size: 0, modified: 0, url };
      source.open = async () => {
        const early = earlyFetches.get(url);
        earlyFetches.delete(url);
        const result = await (early || fetchOnPage(url));
        if (result.error) throw new Error(`${url}: download failed (${result.error.message})`);
        const response = result.response;
        if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
        const length = contentLength(response.headers);
        const encoded = response.headers.get('Content-Encoding');
        if (!encoded && length > heapLimit()) {
          if (response.body) response.body.cancel().catch(() => {});
          throw new Error(`${url}: the server announces ${length} bytes (Content-Length), more than the viewer can ` +
                          `hold (${formatBytes(heapLimit())})`);
        }
        source.size = encoded ? 0 : length;  // a compressed body's length is not the bytes we get
        const modified = Date.parse(response.headers.get('Last-Modified') || '');
        if (modified) source.modified = Math.floor(modified / 1000);
        if (result.whole || readsWhole(name, response)) {
          const whole = result.whole || response.arrayBuffer();
          source.whole = () => whole;
          return null;
        }
        return response.body;
      };
      return source;
    });
  }

  fileInput.addEventListener('change', () => {
    const files = fileInput.files;
    if (files && files.length) openSources(fileSources(files));
    fileInput.value = '';
  });

  // Drag and drop anywhere on the page. Capture phase, so the canvas' own handlers never see it.
  let dragDepth = 0;
  window.addEventListener('dragenter', (e) => { e.preventDefault(); dragDepth++; dropHint.hidden = false; }, true);
  window.addEventListener('dragover', (e) => { e.preventDefault(); e.stopPropagation(); }, true);
  window.addEventListener('dragleave', (e) => {
    e.preventDefault();
    if (--dragDepth <= 0) { dragDepth = 0; dropHint.hidden = true; }
  }, true);
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    dragDepth = 0;
    dropHint.hidden = true;
    if (e.dataTransfer && e.dataTransfer.files.length) openSources(fileSources(e.dataTransfer.files));
  }, true);

  // [Live mode] A page served by `pyro serve` (docs/serve.md) shows the server's data over a range that
  // follows the clock (`now-15m` by default; `?live=now-1h` or the bar's menu) and asks for it again every
  // `?refresh=` seconds (10; 0: only on demand). What the user is looking at (app, tags, view, focused
  // frame, search, ...) is kept across refreshes, the ranges follow the new data. A refresh that fails
  // keeps the data shown and says why in the bar. The server's token, if it has one, is read from the
  // address' fragment (#token=...): browsers never send a fragment to a server or in a Referer.
  const PAGE_PARAMS = new Set(['file', 'live', 'refresh']);
  const LIVE_DEFAULT_RANGE = 'now-15m';
  const LIVE_DEFAULT_REFRESH_S = 10;
  const LIVE_RANGE_PATTERN = /^now-[1-9][0-9]{0,5}(s|m|h|d|w)$/;
  const liveBar = document.getElementById('live-bar');
  const liveRange = document.getElementById('live-range');
  const livePause = document.getElementById('live-pause');
  const liveNote = document.getElementById('live-note');
  const live = {
    active: false,
    range: LIVE_DEFAULT_RANGE,
    refreshSeconds: LIVE_DEFAULT_REFRESH_S,
    paused: false,
    loads: 0,          // refreshes that replaced the data shown
    failures: 0,
    empty: 0,          // answers with no series in the range (nothing shown changes)
    lastError: '',
    lastUrl: '',
    note: '',
    timer: null,
    inFlight: null,    // the promise of the load under way

    token() { return new URLSearchParams(location.hash.slice(1)).get('token') || ''; },
    fetchApi(path, timeoutMs) {
      const headers = {};
      const token = live.token();
      if (token) headers.Authorization = 'Bearer ' + token;
      const options = { credentials: 'omit', cache: 'no-store', headers };
      if (timeoutMs && typeof AbortController === 'function') {
        const abort = new AbortController();
        setTimeout(() => abort.abort(), timeoutMs);
        options.signal = abort.signal;
      }
      return fetch(path, options);
    },
    say(text, failed) {
      live.note = text;
      if (liveNote) liveNote.textContent = text;
      document.body.classList.toggle('live-failed', !!failed);
    },
    // The page was served by pyro serve (its static files carry `Server-Timing: pyro-serve`, and its
    // /api/info answers as such) and names no file: go live. Other servers are not asked for /api/info,
    // so their pages log no 404.
    async startIfServed(refresh) {
      if (window.pyroscopeEmbedded || !/^https?:$/.test(location.protocol)) return;
      let marked = false;
      try {
        const navigation = performance.getEntriesByType('navigation')[0];
        marked = !!navigation && (navigation.serverTiming || []).some((entry) => entry.name === 'pyro-serve');
      } catch (e) { /* no navigation timing: not marked */ }
      if (!marked) return;
      let response;
      try {
        response = await live.fetchApi('api/info', 3000);
      } catch (e) {
        return;  // a plain static server, or none
      }
      const text = await response.text().catch(() => '');
      if (response.status === 401 && /pyro serve/.test(text)) {
        live.start(LIVE_DEFAULT_RANGE, refresh);
        return;
      }
      try {
        if (response.ok && JSON.parse(text).server === 'pyro serve') live.start(LIVE_DEFAULT_RANGE, refresh);
      } catch (e) { /* not JSON: not our server */ }
    },
    start(range, refresh) {
      live.active = true;
      let problem = '';
      if (refresh !== null && refresh !== undefined && refresh !== '') {
        const seconds = /^[0-9]{1,4}$/.test(refresh) ? Number(refresh) : NaN;
        if (seconds >= 0 && seconds <= 3600) live.refreshSeconds = seconds;
        else problem = `refresh=${refresh} is not a number of seconds from 0 to 3600; refreshing every ${live.refreshSeconds} s`;
      }
      if (!LIVE_RANGE_PATTERN.test(range)) {
        problem = `live=${range} is not a range like now-15m (s, m, h, d or w); showing ${LIVE_DEFAULT_RANGE}`;
        range = LIVE_DEFAULT_RANGE;
      }
      live.range = range;
      if (![...liveRange.options].some((o) => o.value === range)) liveRange.add(new Option(range, range));
      liveRange.value = range;
      document.body.classList.add('live');
      liveBar.hidden = false;
      resize();
      live.load().then(() => {
        if (problem) live.say(problem, true);
        live.schedule();
      });
    },
    stop() {
      live.active = false;
      clearTimeout(live.timer);
      document.body.classList.remove('live', 'live-paused', 'live-failed');
      liveBar.hidden = true;
      resize();
    },
    schedule() {
      clearTimeout(live.timer);
      if (!live.active || live.refreshSeconds <= 0) return;
      live.timer = setTimeout(async () => {
        if (!live.paused && !document.hidden) await live.load();
        live.schedule();
      }, live.refreshSeconds * 1000);
    },
    load() {
      if (!live.inFlight) live.inFlight = live.loadNow().finally(() => { live.inFlight = null; });
      return live.inFlight;
    },
    async loadNow() {
      if (!live.active || !ready) return false;
      const range = live.range;
      const url = 'api/query?' + new URLSearchParams({ format: 'pyro', query: '{}', from: range, until: 'now' });
      live.lastUrl = url;
      try {
        let response;
        try {
          response = await live.fetchApi(url, 60000);
        } catch (e) {
          throw new Error(`the server did not answer (${e && e.message ? e.message : e})`);
        }
        if (!response.ok) {
          const text = (await response.text().catch(() => '')).trim().slice(0, 300);
          const hint = response.status === 401 ? ' (open this page with #token=TOKEN at the end of its address)' : '';
          throw new Error(`HTTP ${response.status}: ${text || response.statusText}${hint}`);
        }
        const series = Number(response.headers.get('X-Pyro-Series') || '1');
        const length = contentLength(response.headers);
        if (length > heapLimit()) {
          if (response.body) response.body.cancel().catch(() => {});
          throw new Error(`the server has ${formatBytes(length)} for ${range}, more than the viewer can hold; choose a shorter range`);
        }
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (range !== live.range || !live.active) return false;  // the range changed meanwhile: that load wins
        if (series === 0) {
          live.empty++;
          live.lastError = '';
          live.say(`no data in the last ${range.slice(4)} yet: waiting for pushes (checked ${clock()})`);
          return false;
        }
        // What is shown now, but the ranges: they follow the data.
        const kept = [];
        let before = null;
        try { before = api.status(); } catch (e) { /* nothing open yet */ }
        if (before && before.files && before.files.length && typeof before.link === 'string') {
          for (const [key, value] of new URLSearchParams(before.link)) {
            if (!/^(from|until|right_from|right_until)$/.test(key)) kept.push([key, value]);
          }
        }
        const opened = await openSources([{ name: 'live.pyro', size: bytes.length, modified: Math.floor(Date.now() / 1000),
                                             live: true, open: async () => null, whole: () => Promise.resolve(bytes) }], true);
        if (!opened) throw new Error(api.status().error || 'the server\'s data did not open');
        // The app chosen before may have stopped pushing: then the new data's default view, no error.
        const keptApp = kept.find(([key]) => key === 'app');
        if (!keptApp || (api.status().apps || []).includes(keptApp[1])) {
          for (const [key, value] of kept) api.setting(key, value);
        }
        Module._pv_prepare();
        Module._pv_redraw();
        live.loads++;
        live.lastError = '';
        live.say(`updated ${clock()} · ${series} series · ${formatBytes(bytes.length)}` +
                 (live.paused ? ' · paused' : live.refreshSeconds > 0 ? ` · every ${live.refreshSeconds} s` : ''));
        return true;
      } catch (e) {
        live.failures++;
        live.lastError = e && e.message ? e.message : String(e);
        live.say(`refresh failed at ${clock()}: ${live.lastError}` + (live.loads ? ' (the data shown is from before)' : ''), true);
        return false;
      }
    },
    snapshot() {
      return { active: live.active, range: live.range, refreshSeconds: live.refreshSeconds, paused: live.paused,
               loads: live.loads, failures: live.failures, empty: live.empty, lastError: live.lastError,
               lastUrl: live.lastUrl, note: live.note };
    },
  };
  function clock() { return new Date().toTimeString().slice(0, 8); }
  liveRange.addEventListener('change', () => {
    live.range = liveRange.value;
    if (!window.pyroscopeEmbedded && /^https?:$/.test(location.protocol)) {
      try {
        const address = new URL(location.href);
        address.searchParams.set('live', live.range);
        history.replaceState(null, '', address);
      } catch (e) { /* another origin's frame */ }
    }
    live.load().then(() => live.schedule());
    canvas.focus();
  });
  livePause.addEventListener('click', () => {
    live.paused = !live.paused;
    livePause.textContent = live.paused ? 'Resume' : 'Pause';
    document.body.classList.toggle('live-paused', live.paused);
    if (live.paused) live.say(live.note.replace(/ · (every [0-9]+ s|paused)$/, '') + ' · paused');
    else live.load().then(() => live.schedule());
    canvas.focus();
  });

  function resize() {
    if (!ready) return;
    Module._pv_set_size(canvas.clientWidth, canvas.clientHeight, window.devicePixelRatio || 1);
  }
  window.addEventListener('resize', resize);
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());

  function startFromUrl() {
    const params = new URLSearchParams(location.search);
    // Every parameter but file goes to the viewer, which says which ones it does not know: a misspelt
    // one would otherwise be ignored without a word (an embed showing the wrong data).
    for (const [key, value] of params) {
      if (PAGE_PARAMS.has(key)) continue;
      withCString(key, (k) => withCString(value, (v) => Module._pv_setting(k, v)));
    }
    // ?file=a.pyro&file=b.pyro (or one comma-separated list) open together as one data set; a value
    // that is no usable URL is named in the banner, as a bad setting is.
    const files = [];
    for (const value of fileParams()) {
      const parsed = parseFileParam(value);
      if (parsed.error) withCString(parsed.error, (message) => Module._pv_setting_error(message));
      else files.push(value);
    }
    if (files.length) openSources(urlSources(files));
    else if (params.has('live')) live.start(params.get('live') || LIVE_DEFAULT_RANGE, params.get('refresh'));
    else live.startIfServed(params.get('refresh'));
  }

  // A share file (`pyro export-html`) carries its data and the view it was saved with.
  function startFromEmbedded(embedded) {
    for (const [key, value] of Object.entries(embedded.settings || {})) {
      withCString(key, (k) => withCString(String(value), (v) => Module._pv_setting(k, v)));
    }
    const text = atob(embedded.data);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    api.openBytes(embedded.name, bytes);
  }

  function makeContext() {
    // Sized as the window will be (CSS size x device pixel ratio), so no resize follows.
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round((canvas.clientWidth || window.innerWidth) * ratio);
    canvas.height = Math.round((canvas.clientHeight || window.innerHeight) * ratio);
    canvas.getContext('webgl2', { alpha: false, depth: false, stencil: false, antialias: false });
    api.marks.webglContext = performance.now();
  }

  const Module = window.Module = {
    canvas,
    print: (text) => console.log(text),
    printErr: (text) => console.warn(text),
    locateFile: (path) => path,
    // Before the runtime starts (it holds the page's thread for a while): the downloads' workers get
    // the moment they need to begin, then the WebGL context is requested. The first WebGL context of a
    // page takes the GPU process a while to make, and requested now it is made while the files are
    // downloaded and opened; glfwCreateWindow later returns this context (same attributes as the
    // viewer's window hints).
    preInit: [() => {
      if (!workersStarted.length || typeof Module.addRunDependency !== 'function') { makeContext(); return; }
      Module.addRunDependency('downloads-started');
      const timeout = new Promise((resolve) => setTimeout(resolve, 150));
      Promise.race([Promise.all(workersStarted), timeout]).then(() => {
        makeContext();
        Module.removeRunDependency('downloads-started');
      });
    }],
    preRun: [() => { api.marks.preRun = performance.now(); }],
    onRuntimeInitialized() { api.marks.runtimeInitialized = performance.now(); },
    onStartupMark(name, ms) { api.marks[name] = ms; },
    onViewerReady() {
      ready = true;
      api.readyMs = performance.now();
      resize();
      canvas.focus();
      if (window.pyroscopeEmbedded) startFromEmbedded(window.pyroscopeEmbedded);
      else startFromUrl();
    },
    onFirstFlamePaint(ms) { api.firstFlamePaintMs = ms; },
    // Asked before each frame until the viewer has a window: while the files of the address are being
    // read and opened (at most 1.5 s), the viewer works without one and the browser makes its WebGL
    // context meanwhile; the first frame then draws the flame graph at once.
    deferWindow() { return busy && performance.now() - api.readyMs < 1500; },
    openFilePicker() { fileInput.click(); },
    // Export > Share: the viewer makes the share file from this page's own three files.
    async loadShareParts() {
      try {
        const names = ['index.html', 'viewer-page.js', 'viewer-single.js'];
        // The page's own files, next to it: fetched as its scripts were (same origin, the browser's
        // default credentials), so a viewer served behind a login can still make share files.
        const parts = await Promise.all(names.map(async (name) => {
          const response = await fetch(name);
          if (!response.ok) throw new Error(`${name}: HTTP ${response.status} ${response.statusText}`);
          return new Uint8Array(await response.arrayBuffer());
        }));
        const pointers = [];
        try {
          parts.forEach((bytes, i) => {
            const ptr = heapAlloc(bytes.length, names[i]);
            Module.HEAPU8.set(bytes, ptr);
            pointers.push(ptr);
          });
          Module._pv_share_parts(pointers[0], parts[0].length, pointers[1], parts[1].length, pointers[2], parts[2].length);
        } finally {
          pointers.forEach((ptr) => Module._free(ptr));
        }
      } catch (e) {
        const message = 'the viewer\'s files for a share file could not be loaded: ' + (e && e.message ? e.message : e);
        try {
          withCString(message, (ptr) => Module._pv_share_parts_failed(ptr));
        } catch (e2) {
          reportError(message);
        }
      }
      Module._pv_redraw();
    },
    // "Copy link": this page's address with the data set's file= URLs and the viewer's settings (a URL
    // query); shown in the address bar too, so a reload shows this view again.
    copyLink(query) {
      const base = location.href.split(/[?#]/)[0];
      const files = linkFiles.map((u) => 'file=' + encodeURIComponent(u).replace(/%2F/g, '/').replace(/%3A/g, ':'));
      // Live: the range that follows the clock instead of the absolute ranges shown now.
      const liveParams = live.active ? ['live=' + encodeURIComponent(live.range)].concat(
        live.refreshSeconds !== LIVE_DEFAULT_REFRESH_S ? ['refresh=' + live.refreshSeconds] : []) : [];
      if (live.active && query) {
        query = query.split('&').filter((part) => !/^(from|until|right_from|right_until)=/.test(part)).join('&');
      }
      const link = base + '?' + liveParams.concat(files, query ? [query] : []).join('&');
      api.lastLink = link;
      api.lastLinkMissesFiles = linkMissesFiles;
      if (!window.pyroscopeEmbedded && location.protocol !== 'file:') {
        try { history.replaceState(null, '', link); } catch (e) { /* another origin's frame */ }
      }
      try {
        if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(link).catch(() => {});
      } catch (e) { /* no clipboard here: the link is in status().last_link */ }
      return linkMissesFiles ? link + '  (files opened from disk are not in the link)' : link;
    },
    // An export from the viewer: a download of the bytes under the name.
    saveFile(name, bytes) {
      const url = URL.createObjectURL(new Blob([bytes]));
      const link = document.createElement('a');
      link.href = url;
      link.download = name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    },
    onFatal(message) { fatal(message); },
    onAbort(what) { fatal('The viewer stopped: ' + what); },
    monitorRunDependencies(left) {
      if (!ready && left > 0) showOverlay('Starting the viewer', 'downloading WebAssembly', null);
      if (left === 0) hideOverlay();
    },
  };

  const api = window.pyroscopeViewer = {
    firstFlamePaintMs: null,
    lastLink: null,      // what "Copy link" made last
    lastLinkMissesFiles: false,
    readyMs: null,       // performance.now() when the WebAssembly runtime was ready
    timings: [],         // per open: {start, read, opened} in performance.now() ms
    marks: {},           // start-up: preRun, runtimeInitialized (performance.now() ms)
    get ready() { return ready; },
    get busy() { return busy; },
    pageErrors,
    fatal,
    // The viewer's state; widget rectangles are converted to page (CSS) pixels: [x, y, width, height].
    status() {
      if (!ready) return { ready: false, busy, pageErrors };
      const status = JSON.parse(Module.UTF8ToString(Module._pv_status()));
      const rect = canvas.getBoundingClientRect();
      const ratio = canvas.width / rect.width;
      for (const name of Object.keys(status.widgets)) {
        const [x, y, w, h] = status.widgets[name];
        status.widgets[name] = [rect.left + x / ratio, rect.top + y / ratio, w / ratio, h / ratio];
      }
      status.busy = busy;
      status.pageErrors = pageErrors;
      status.pixelRatio = ratio;
      status.wasmHeapBytes = Module.HEAPU8.length;
      return status;
    },
    open(urls) { return openSources(urlSources(Array.isArray(urls) ? urls : [urls])); },
    openBytes(name, bytes) {
      const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
      return openSources([{ name, size: data.length, modified: 0,
                            open: async () => new Blob([data]).stream() }]);
    },
    setting(key, value) {
      return withCString(key, (k) => withCString(String(value), (v) => Module._pv_setting(k, v))) === 1;
    },
    benchZoom(frames) { Module._pv_bench_zoom(frames); },
    // Applies a setting and does the data work it needs now (queries, layouts, a sandwich), so the next
    // status() shows its result without waiting for a frame. Returns {ok, ms}.
    settingNow(key, value) {
      const start = performance.now();
      const ok = api.setting(key, value);
      Module._pv_prepare();
      return { ok, ms: performance.now() - start };
    },
    redraw() { if (ready) Module._pv_redraw(); },
    // Live mode (a page served by pyro serve): its state, and a refresh now (resolves to true when the
    // data shown was replaced).
    get live() { return live.snapshot(); },
    liveRefresh() { return live.load(); },
  };
  window.addEventListener('error', (e) => pageErrors.push(String(e.message)));
})();
