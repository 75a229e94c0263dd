// Shared pieces of the browser tests and the viewer benchmark: a static file server on 127.0.0.1,
// headless system Chromium through playwright-core, a PNG decoder for pixel checks, and helpers that
// click the viewer's widgets at the rectangles its status() reports.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');

const CHROMIUM = process.env.PYROSCOPE_CHROMIUM || '/usr/bin/chromium';
// Headless Chromium has no GPU here: WebGL 2 runs on SwiftShader in the GPU process. (With
// "--use-angle=swiftshader-webgl" the first WebGL context comes in ~10 ms instead of 0.3-0.8 s, but
// every frame is then read back for software compositing: ~90 ms per frame instead of ~2.5 ms. The
// benchmark keeps this configuration, the one the frame rates were measured in.)
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--enable-unsafe-swiftshader', '--use-angle=swiftshader',
  '--ignore-gpu-blocklist', '--enable-precise-memory-info',
];

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm',
  '.json': 'application/json', '.css': 'text/css', '.png': 'image/png', '.data': 'application/octet-stream',
  '.pyro': 'application/octet-stream', '.folded': 'text/plain; charset=utf-8', '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.ico': 'image/x-icon', '.svg': 'image/svg+xml',
};

// mounts: {'/': dir, '/data/': dir, ...}; longest prefix wins. Resolves to {server, url}. onRequest(req),
// if given, sees every request first (tests check the headers a page sends).
function serveStatic(mounts, onRequest = null) {
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const server = http.createServer((req, res) => {
    if (onRequest) onRequest(req);
    const url = new URL(req.url, 'http://127.0.0.1');
    const pathname = decodeURIComponent(url.pathname);
    const prefix = prefixes.find((p) => pathname.startsWith(p));
    if (!prefix) { res.writeHead(404); res.end('not found'); return; }
    const root = path.resolve(mounts[prefix]);
    let file = path.resolve(root, '.' + path.sep + pathname.slice(prefix.length));
    if (!file.startsWith(root)) { res.writeHead(403); res.end('forbidden'); return; }
    fs.stat(file, (err, st) => {
      if (!err && st.isDirectory()) {
        file = path.join(file, 'index.html');
        try { st = fs.statSync(file); } catch (e) { err = e; }
      }
      if (err) { res.writeHead(404, { 'Content-Type': 'text/plain' }); res.end('not found: ' + pathname); return; }
      res.writeHead(200, {
        'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
        'Content-Length': st.size,
        'Last-Modified': st.mtime.toUTCString(),
        'Cache-Control': 'no-store',
      });
      if (req.method === 'HEAD') { res.end(); return; }
      // Small files in one write (as a static server's sendfile would); big ones streamed.
      if (st.size < (64 << 20)) {
        fs.readFile(file, (readError, bytes) => (readError ? res.destroy(readError) : res.end(bytes)));
      } else {
        fs.createReadStream(file).pipe(res);
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

function requirePlaywright() {
  try {
    return require('playwright-core');
  } catch (e) {
    throw new Error('playwright-core is not installed: run `npm ci` in the repository root');
  }
}

async function launchBrowser(extraArgs = []) {
  const { chromium } = requirePlaywright();
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS.concat(extraArgs) });
}

// --- PNG decoding (8-bit RGB / RGBA, not interlaced: what Chromium and stb_image_write produce) -------

function decodePng(buffer) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (!buffer.subarray(0, 8).equals(signature)) throw new Error('not a PNG');
  let offset = 8;
  let width = 0, height = 0, colorType = 0, bitDepth = 0, interlace = 0;
  const idat = [];
  while (offset < buffer.length) {
    const length = buffer.readUInt32BE(offset);
    const type = buffer.toString('ascii', offset + 4, offset + 8);
    const data = buffer.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      bitDepth = data[8];
      colorType = data[9];
      interlace = data[12];
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      break;
    }
    offset += 12 + length;
  }
  if (bitDepth !== 8 || (colorType !== 2 && colorType !== 6) || interlace !== 0) {
    throw new Error(`unsupported PNG: depth ${bitDepth}, colour type ${colorType}, interlace ${interlace}`);
  }
  const channels = colorType === 6 ? 4 : 3;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(width * height * 4);
  let previous = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? line[x - channels] : 0;
      const b = previous[x];
      const c = x >= channels ? previous[x - channels] : 0;
      let v = line[x];
      switch (filter) {
        case 0: break;
        case 1: v += a; break;
        case 2: v += b; break;
        case 3: v += (a + b) >> 1; break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new Error('bad PNG filter ' + filter);
      }
      line[x] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      out[o] = line[x * channels];
      out[o + 1] = line[x * channels + 1];
      out[o + 2] = line[x * channels + 2];
      out[o + 3] = channels === 4 ? line[x * channels + 3] : 255;
    }
    previous = line;
  }
  return { width, height, data: out };
}

// Counts pixels in rect [x, y, w, h] (image pixels) for which predicate(r, g, b) holds.
function countPixels(image, rect, predicate) {
  const [rx, ry, rw, rh] = rect.map((v) => Math.round(v));
  let count = 0, total = 0;
  for (let y = Math.max(0, ry); y < Math.min(image.height, ry + rh); y++) {
    for (let x = Math.max(0, rx); x < Math.min(image.width, rx + rw); x++) {
      const o = (y * image.width + x) * 4;
      total++;
      if (predicate(image.data[o], image.data[o + 1], image.data[o + 2])) count++;
    }
  }
  return { count, total, share: total ? count / total : 0 };
}

// Distinct colours (quantised to 4 bits per channel) in a rect: a painted flame graph has many.
function distinctColours(image, rect) {
  const [rx, ry, rw, rh] = rect.map((v) => Math.round(v));
  const seen = new Set();
  for (let y = Math.max(0, ry); y < Math.min(image.height, ry + rh); y++) {
    for (let x = Math.max(0, rx); x < Math.min(image.width, rx + rw); x++) {
      const o = (y * image.width + x) * 4;
      seen.add(((image.data[o] >> 4) << 8) | ((image.data[o + 1] >> 4) << 4) | (image.data[o + 2] >> 4));
    }
  }
  return seen.size;
}

const isRed = (r, g, b) => r > 170 && g < 110 && b < 110;
const isGreen = (r, g, b) => g > 140 && r < 110 && b < 130;

// --- Test scripts' command lines and checks ----------------------------------------------------------

// `--key value` pairs over the defaults (every key must be one of them); required keys must be given.
// A wrong argument prints the usage line and exits with 2.
function parseArgs(argv, defaults, usage, required = []) {
  const args = { ...defaults };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      console.error(`usage: ${usage} (bad argument '${argv[i]}')`);
      process.exit(2);
    }
    args[key] = argv[i + 1];
  }
  for (const key of required) {
    if (!args[key]) {
      console.error(`usage: ${usage} (--${key} is required)`);
      process.exit(2);
    }
  }
  return args;
}

// The checks of one test script: expect() prints each as ok or FAIL; finish() prints the count and
// the failures and exits non-zero if there were any.
function checker() {
  const failures = [];
  let count = 0;
  return {
    failures,
    expect(condition, message, detail) {
      count++;
      if (condition) {
        console.log('  ok   ' + message);
      } else {
        failures.push(message);
        console.log('  FAIL ' + message + (detail !== undefined ? ' -- ' + JSON.stringify(detail) : ''));
      }
      return condition;
    },
    exception(e) {
      failures.push('exception: ' + (e && e.stack ? e.stack : e));
      console.log('  FAIL exception: ' + (e && e.stack ? e.stack : e));
    },
    finish(where) {
      console.log(`${count - failures.length} of ${count} checks passed; ${where}`);
      if (failures.length) {
        console.log('failures:\n  ' + failures.join('\n  '));
        process.exit(1);
      }
    },
  };
}

module.exports = {
  CHROMIUM, CHROMIUM_ARGS, serveStatic, launchBrowser, decodePng, countPixels, distinctColours, isRed, isGreen,
  parseArgs, checker,
};
