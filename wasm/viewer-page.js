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

  const SETTINGS = ['view', 'search', 'theme', 'orientation', 'colour', 'color', 'app', 'tags', 'from', 'until',
                    'right_from', 'right_until', 'embed'];
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
    if (ready) {
      withCString(String(message), (ptr) => Module._pv_set_error(ptr));
    } else {
      fatal(message);
    }
  }

  function withCString(text, fn) {
    const length = Module.lengthBytesUTF8(text) + 1;
    const ptr = Module._malloc(length);
    Module.stringToUTF8(text, ptr, length);
    try { return fn(ptr); } finally { Module._free(ptr); }
  }

  function formatBytes(n) {
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MB';
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KB';
    return n + ' bytes';
  }

  const nextPaint = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

  // Streams a body into malloc'd WebAssembly memory; returns {ptr, size}. `expected` may be 0 (unknown).
  async function readIntoHeap(stream, expected, onProgress) {
    let capacity = Math.max(expected, 1 << 16);
    let ptr = Module._malloc(capacity);
    if (!ptr) throw new Error('out of memory allocating ' + formatBytes(capacity));
    let size = 0;
    const reader = stream.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (size + value.length > capacity) {
          capacity = Math.max(size + value.length, capacity * 2);
          const grown = Module._realloc(ptr, capacity);
          if (!grown) throw new Error('out of memory growing to ' + formatBytes(capacity));
          ptr = grown;
        }
        Module.HEAPU8.set(value, ptr + size);  // HEAPU8 is re-read: memory growth replaces it
        size += value.length;
        onProgress(size);
      }
    } catch (e) {
      Module._free(ptr);
      throw e;
    }
    return { ptr, size };
  }

  // sources: [{name, size, modified (unix s), open: async () => ReadableStream}]
  async function openSources(sources) {
    if (!ready || busy || sources.length === 0) return false;
    busy = true;
    const loaded = [];
    let ok = false;
    try {
      const total = sources.reduce((sum, s) => sum + (s.size || 0), 0);
      let before = 0;
      for (const source of sources) {
        const label = sources.length > 1 ? `Loading ${source.name} (${loaded.length + 1} of ${sources.length})`
                                         : `Loading ${source.name}`;
        showOverlay(label, '', total ? 0 : null);
        let lastUpdate = 0;
        const stream = await source.open();
        const { ptr, size } = await readIntoHeap(stream, source.size || 0, (done) => {
          const now = performance.now();
          if (now - lastUpdate < 50) return;
          lastUpdate = now;
          const all = before + done;
          overlayProgress.value = total ? all / total : 0;
          if (!total) overlayProgress.removeAttribute('value');
          overlayDetail.textContent = formatBytes(all) + (total ? ' of ' + formatBytes(total) : '');
        });
        before += size;
        loaded.push({ name: source.name, ptr, size, modified: source.modified || 0 });
      }
      showOverlay('Opening ' + loaded.map((f) => f.name).join(', '), formatBytes(before), null);
      await nextPaint();
      Module._pv_open_begin();
      for (const file of loaded) {
        withCString(file.name, (namePtr) => Module._pv_open_add(namePtr, file.ptr, file.size, file.modified));
        file.ptr = 0;  // owned by the viewer now
      }
      ok = Module._pv_open_end() === 1;
    } catch (e) {
      for (const file of loaded) if (file.ptr) Module._free(file.ptr);
      reportError(e && e.message ? e.message : String(e));
    } finally {
      busy = false;
      if (!pageErrors.length || ready) hideOverlay();
      if (ready) Module._pv_redraw();
    }
    return ok;
  }

  function fileSources(files) {
    return Array.from(files).map((f) => ({
      name: f.name, size: f.size, modified: Math.floor(f.lastModified / 1000), open: async () => f.stream(),
    }));
  }

  function urlSources(urls) {
    return urls.map((url) => {
      const name = decodeURIComponent(new URL(url, location.href).pathname.split('/').pop() || url);
      const source = { name, size: 0, modified: 0 };
      source.open = async () => {
        let response;
        try {
          response = await fetch(url);
        } catch (e) {
          throw new Error(`${url}: download failed (${e.message})`);
        }
        if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
        const length = Number(response.headers.get('Content-Length') || 0);
        const encoded = response.headers.get('Content-Encoding');
        source.size = encoded ? 0 : length;  // a compressed body's length is not the bytes we get
        const modified = Date.parse(response.headers.get('Last-Modified') || '');
        if (modified) source.modified = Math.floor(modified / 1000);
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
    for (const key of SETTINGS) {
      const value = params.get(key);
      if (value === null) continue;
      withCString(key, (k) => withCString(value, (v) => Module._pv_setting(k, v)));
    }
    // ?file=a.pyro&file=b.pyro (or one comma-separated list) open together as one data set.
    const files = params.getAll('file').flatMap((f) => f.split(',')).filter((f) => f.length);
    if (files.length) openSources(urlSources(files));
  }

  const Module = window.Module = {
    canvas,
    print: (text) => console.log(text),
    printErr: (text) => console.warn(text),
    locateFile: (path) => path,
    onViewerReady() {
      ready = true;
      resize();
      canvas.focus();
      startFromUrl();
    },
    onFirstFlamePaint(ms) { api.firstFlamePaintMs = ms; },
    openFilePicker() { fileInput.click(); },
    onFatal(message) { fatal(message); },
    onAbort(what) { fatal('The viewer stopped: ' + what); },
    monitorRunDependencies(left) {
      if (!ready && left > 0) showOverlay('Starting the viewer', 'downloading WebAssembly', null);
      if (left === 0) hideOverlay();
    },
  };

  const api = window.pyroscopeViewer = {
    firstFlamePaintMs: null,
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
