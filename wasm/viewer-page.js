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
  async function openSources(sources) {
    if (!ready || busy || sources.length === 0) return false;
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
        showOverlay(label, '', total ? 0 : null);
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
      if (before > (32 << 20)) {
        showOverlay('Opening ' + sources.map((s) => s.name).join(', '), formatBytes(before), null);
        await nextPaint();
      }
      ok = Module._pv_open_end() === 1;
      timing.opened = performance.now();
    } catch (e) {
      Module._pv_open_begin();  // drops what was read so far
      reportError(e && e.message ? e.message : String(e));
    } finally {
      busy = false;
      hideOverlay();
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
      const source = { name, size: 0, modified: 0 };
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
      if (key === 'file') continue;
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
    redraw() { if (ready) Module._pv_redraw(); },
  };
  window.addEventListener('error', (e) => pageErrors.push(String(e.message)));
})();
