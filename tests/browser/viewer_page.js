// Driving the WebAssembly viewer's page in the browser tests: its state (window.pyroscopeViewer.status()),
// waiting for frames, clicking and dragging the widgets at the rectangles the state reports, hovering
// flame graph rows, screenshots. Used by viewer.test.js and security.test.js.
'use strict';

const path = require('path');
const h = require('./harness');

// The helpers for one test script; expect is its checker's (a wait that times out is a failed check).
function viewerPage(expect) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function status(page) { return page.evaluate(() => window.pyroscopeViewer.status()); }

  // Waits until the viewer has drawn `count` more frames (input makes it draw a few), so what the last
  // event did is in status(). Software WebGL can take a few hundred ms per frame on a busy machine.
  async function settle(page, count = 2, timeout = 10000) {
    const start = (await status(page)).frames;
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      if ((await status(page)).frames >= start + count) return;
      await sleep(20);
    }
  }

  // Polls status() until predicate(status) holds; returns the last status either way.
  async function waitFor(page, predicate, what, timeout = 30000) {
    const start = Date.now();
    let s = null;
    while (Date.now() - start < timeout) {
      s = await page.evaluate(() => (window.pyroscopeViewer ? window.pyroscopeViewer.status() : null));
      if (s && s.ready !== false && predicate(s)) {
        // One more frame, so the widgets on screen (status().widgets) show the new state too.
        await settle(page, 1, 3000);
        return status(page);
      }
      await sleep(50);
    }
    expect(false, 'timed out waiting for ' + what, s && { error: s.error, view: s.view, table: s.table, pageErrors: s.pageErrors });
    return s;
  }

  function widget(s, name) {
    const rect = s.widgets[name];
    if (!rect) throw new Error(`widget '${name}' is not on screen; have: ${Object.keys(s.widgets).join(', ')}`);
    return rect;
  }

  // Waits until a widget is on screen and has not moved for a frame (popups and new panels settle).
  async function stableWidget(page, name, timeout = 10000) {
    const deadline = Date.now() + timeout;
    let previous = null;
    while (Date.now() < deadline) {
      const s = await status(page);
      const rect = s.widgets[name];
      if (rect && previous && rect.join() === previous.join()) return rect;
      previous = rect || null;
      await settle(page, 1, 500);
    }
    throw new Error(`widget '${name}' did not settle on screen; have: ${Object.keys((await status(page)).widgets).join(', ')}`);
  }

  async function click(page, name, options = {}) {
    const [x, y, w, hgt] = await stableWidget(page, name);
    // Move first and let a frame pass, as a hand would: ImGui items that allow overlap (table headers)
    // only take a click once the previous frame saw no other item hovered.
    await page.mouse.move(x + (options.fx ?? 0.5) * w, y + (options.fy ?? 0.5) * hgt);
    await settle(page, 2);  // two: the first may have started before the move arrived
    await page.mouse.down();
    await page.mouse.up();
    await settle(page);
  }

  // A drag in small steps with pauses, so the viewer draws frames in between like under a real hand.
  async function drag(page, from, to, button = 'left') {
    await page.mouse.move(from[0], from[1]);
    await settle(page, 1);
    await page.mouse.down({ button });
    await settle(page, 1);
    const steps = 6;
    for (let i = 1; i <= steps; i++) {
      await page.mouse.move(from[0] + ((to[0] - from[0]) * i) / steps, from[1] + ((to[1] - from[1]) * i) / steps);
      await settle(page, 1);
    }
    await page.mouse.up({ button });
    await settle(page);
  }

  async function screenshot(page, out, name) {
    const file = path.join(out, name);
    const buffer = await page.screenshot({ path: file });
    console.log('  screenshot ' + file);
    return h.decodePng(buffer);
  }

  // Image pixels = CSS pixels at deviceScaleFactor 1.
  function painted(image, rect, background) {
    const distinct = h.distinctColours(image, rect);
    const notBackground = h.countPixels(image, rect, (r, g, b) =>
      Math.abs(r - background[0]) + Math.abs(g - background[1]) + Math.abs(b - background[2]) > 40);
    return { distinct, share: notBackground.share };
  }

  // Hovers along a flame graph row and returns the first block whose name passes accept, with its
  // position: {name, x, y}. Each probe waits for a frame so status().hovered reflects it.
  async function findBlock(page, graphKey, widgetName, depth, accept) {
    const s = await status(page);
    const [x, y, w] = widget(s, widgetName);
    const g = s.flame[graphKey];
    if (s.orientation !== 'icicle') throw new Error('findBlock works in the icicle orientation');
    const rowH = g.row_height / s.pixelRatio;
    const rowY = y + (depth + 0.5) * rowH - g.scroll_y / s.pixelRatio;
    for (let i = 0; i < 40; i++) {
      const px = x + 4 + ((w - 8) * (i + 0.5)) / 40;
      await page.mouse.move(px, rowY);
      await settle(page, 1);
      const hovered = (await status(page)).flame[graphKey].hovered;
      if (hovered && accept(hovered)) return { name: hovered, x: px, y: rowY };
    }
    return null;
  }

  async function openViewer(browser, base, query, deviceScaleFactor = 1) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor });
    page.pageErrors = [];
    page.on('pageerror', (e) => page.pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') page.pageErrors.push(m.text()); });
    await page.goto(base + '/' + query);
    await page.waitForFunction(() => window.pyroscopeViewer && window.pyroscopeViewer.ready, null, { timeout: 60000 });
    return page;
  }

  return { sleep, status, settle, waitFor, widget, stableWidget, click, drag, screenshot, painted, findBlock, openViewer };
}

module.exports = { viewerPage };
