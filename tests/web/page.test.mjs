// The headless-browser test of the page `biref serve` shows at GET /.
//
// Usage: node page.test.mjs BIREF_BINARY IMAGE ARTIFACT_DIR
//   (or the environment: BIREF_BIN, BIREF_WEB_IMAGE, BIREF_ARTIFACT_DIR; CHROMIUM overrides
//    /usr/bin/chromium)
//
// It starts `biref serve` on a synthetic model and a free port, opens the page in Debian's
// chromium (headless, driven by puppeteer-core), uploads the image through input#file and checks
// what the page shows: the model list, the original, the mask and the cut-out at the image's
// size, the download links and the PNG behind them; then uploads a text file and checks the page
// shows the server's error. Screenshots go to ARTIFACT_DIR/web-page.png and web-page-error.png.
// Exit code 0: pass; anything else: fail, with the reason on stderr. Every wait is bounded, and
// the server and the browser are always ended, also on a timeout.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const MODEL = "synthetic:swin_v1_t";
const MODEL_NAME = "swin_v1_t"; // the name the server derives from synthetic:swin_v1_t
const SERVER_START_S = 120;     // model load + listen
const RESULT_S = 90;            // upload -> body[data-state=done]
const STEP_S = 30;              // page load, model list, error answer, image decode, one fetch
const WATCHDOG_S = 270;         // the whole test, below the ctest TIMEOUT (300 s)

class TestFailure extends Error {}
function fail(message) { throw new TestFailure(message); }
function log(message) { process.stdout.write(`web-page: ${message}\n`); }

// ---- arguments and prerequisites ---------------------------------------------------------------

const [argBinary, argImage, argArtifacts] = process.argv.slice(2);
const binary = argBinary || process.env.BIREF_BIN;
const imagePath = argImage || process.env.BIREF_WEB_IMAGE;
const artifactDir = argArtifacts || process.env.BIREF_ARTIFACT_DIR;
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";

function checkPrerequisites() {
  if (!binary || !imagePath || !artifactDir)
    fail("usage: node page.test.mjs BIREF_BINARY IMAGE ARTIFACT_DIR " +
         "(or set BIREF_BIN, BIREF_WEB_IMAGE, BIREF_ARTIFACT_DIR)");
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 18) fail(`node ${process.versions.node} is too old: puppeteer-core needs node >= 18`);
  if (!existsSync(binary)) fail(`the biref binary ${binary} does not exist: build it with scripts/build.sh`);
  if (!existsSync(imagePath)) fail(`the test image ${imagePath} does not exist`);
  if (!existsSync(chromium))
    fail(`${chromium} does not exist: install Debian's chromium with ` +
         "'apt-get install -y --no-install-recommends chromium' (scripts/install-deps.sh)");
  if (!existsSync(path.join(HERE, "node_modules", "puppeteer-core")))
    fail(`${path.join(HERE, "node_modules")} lacks puppeteer-core: run scripts/install-test-npm-deps.sh ` +
         "(npm ci in tests/web)");
}

// The width and height of a PNG or JPEG file, read from its header.
function imageSize(file) {
  const b = readFileSync(file);
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47 && b.toString("latin1", 12, 16) === "IHDR")
    return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) { i++; continue; }
      const marker = b[i + 1];
      if (marker === 0xff) { i++; continue; }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { i += 2; continue; }
      const length = b.readUInt16BE(i + 2);
      const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (sof) return { width: b.readUInt16BE(i + 7), height: b.readUInt16BE(i + 5) };
      i += 2 + length;
    }
  }
  fail(`the test image ${file} is not a PNG or JPEG whose size this test can read`);
}

// ---- bounded waits -----------------------------------------------------------------------------

function withTimeout(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TestFailure(`timed out after ${seconds} s: ${what}`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// ---- the server --------------------------------------------------------------------------------

let server = null;     // the biref serve child process
let serverLog = "";    // its stderr and stdout, for the failure message
let browserProcess = null;

function startServer() {
  const args = ["serve", "--model", MODEL, "--size", "256x256", "--port", "0"];
  log(`starting ${binary} ${args.join(" ")}`);
  server = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise((resolve) => server.once("exit", (code, signal) => resolve({ code, signal })));
  server.exitedPromise = exited;
  const listening = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      serverLog += chunk.toString();
      if (serverLog.length > 200000) serverLog = serverLog.slice(-100000);
      const m = /listening on http:\/\/([0-9.]+):(\d+)\//.exec(serverLog);
      if (m) resolve({ host: m[1], port: Number(m[2]) });
    };
    server.stderr.on("data", onData);
    server.stdout.on("data", onData);
    server.once("error", (e) => reject(new TestFailure(`could not start ${binary}: ${e.message}`)));
    exited.then(({ code, signal }) =>
      reject(new TestFailure(`biref serve exited (code ${code}, signal ${signal}) before listening`)));
  });
  return withTimeout(listening, SERVER_START_S, "biref serve to print 'listening on http://…/'");
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  server.kill("SIGTERM");
  try {
    await withTimeout(server.exitedPromise, 10, "biref serve to exit on SIGTERM");
  } catch {
    log("biref serve did not exit within 10 s of SIGTERM; killing it");
    server.kill("SIGKILL");
    await withTimeout(server.exitedPromise, 5, "biref serve to exit on SIGKILL").catch(() => {});
  }
}

// Synchronous last resort (watchdog, signals, exit): no child outlives the test.
function killChildrenNow() {
  for (const p of [server, browserProcess])
    if (p && p.exitCode === null && p.signalCode === null) {
      try { p.kill("SIGKILL"); } catch { /* already gone */ }
    }
}
process.on("exit", killChildrenNow);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"])
  process.on(signal, () => { log(`got ${signal}; ending the server and the browser`); killChildrenNow(); process.exit(2); });

// ---- the browser -------------------------------------------------------------------------------

const CHROMIUM_FLAGS = [
  // Without the background-networking flags chromium keeps calling home, which floods a closed
  // network and slows the test down.
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage", // containers often have a 64 MiB /dev/shm
  "--window-size=1280,900",
];

async function launchBrowser(puppeteer, userDataDir) {
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true, // puppeteer-core passes --headless=new
    args: CHROMIUM_FLAGS,
    userDataDir,
    timeout: STEP_S * 1000 * 2,
    protocolTimeout: STEP_S * 1000 * 2,
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false, // ours end everything
    defaultViewport: { width: 1280, height: 900 },
  });
  browserProcess = browser.process();
  return browser;
}

async function closeBrowser(browser) {
  if (!browser) return;
  try {
    await withTimeout(browser.close(), 10, "chromium to close");
  } catch (e) {
    log(`${e.message}; killing it`);
    killChildrenNow();
  }
}

// ---- the page checks ---------------------------------------------------------------------------

async function pageState(page) {
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    info: document.getElementById("info").textContent,
  }));
}

// Waits (bounded) until body[data-state] is one of `states`; returns the state and #status.
async function waitForState(page, states, seconds, what) {
  try {
    await page.waitForFunction((wanted) => wanted.includes(document.body.dataset.state),
                               { timeout: seconds * 1000, polling: 50 }, states);
  } catch (e) {
    const now = await pageState(page).catch(() => ({ state: "?", status: "?" }));
    fail(`timed out after ${seconds} s waiting for ${what} (data-state ${states.join("/")}); ` +
         `the page is in state '${now.state}' with status '${now.status}'`);
  }
  return pageState(page);
}

// The PNG behind a link's blob URL, fetched by the page: its signature, IHDR and bytes.
async function fetchLinkedPng(page, linkId) {
  return page.evaluate(async (id) => {
    const href = document.getElementById(id).href;
    const response = await fetch(href);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const view = new DataView(bytes.buffer);
    const signature = [137, 80, 78, 71, 13, 10, 26, 10];
    const isPng = bytes.length >= 33 && signature.every((v, i) => bytes[i] === v) &&
                  String.fromCharCode(...bytes.slice(12, 16)) === "IHDR";
    return {
      href, status: response.status, type: response.headers.get("content-type"), length: bytes.length,
      isPng, width: isPng ? view.getUint32(16) : 0, height: isPng ? view.getUint32(20) : 0,
      colorType: isPng ? bytes[25] : -1,
    };
  }, linkId);
}

// Decodes img#mask and img#cutout through a canvas: the mask's grey against the cut-out's alpha.
async function compareMaskAndAlpha(page) {
  return page.evaluate(() => {
    const pixels = (img) => {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    };
    const mask = pixels(document.getElementById("mask"));
    const cutout = pixels(document.getElementById("cutout"));
    let maxDiff = 0, sum = 0, min = 255, max = 0;
    for (let i = 0; i < mask.length; i += 4) {
      maxDiff = Math.max(maxDiff, Math.abs(mask[i] - cutout[i + 3]));
      sum += mask[i]; min = Math.min(min, mask[i]); max = Math.max(max, mask[i]);
    }
    const n = mask.length / 4;
    return { maxDiff, mean: sum / n, min, max, pixels: n, same: mask.length === cutout.length };
  });
}

async function imagesLoaded(page, ids, seconds) {
  try {
    await page.waitForFunction((list) => list.every((id) => {
      const img = document.getElementById(id);
      return img.getAttribute("src") && img.complete;
    }), { timeout: seconds * 1000, polling: 50 }, ids);
  } catch {
    fail(`timed out after ${seconds} s waiting for ${ids.map((i) => "img#" + i).join(", ")} to load`);
  }
  return page.evaluate((list) => Object.fromEntries(list.map((id) => {
    const img = document.getElementById(id);
    return [id, { src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight,
                  shownWidth: img.clientWidth, shownHeight: img.clientHeight }];
  })), ids);
}

async function runChecks(page, base, size, work) {
  const pageErrors = [];
  const consoleLines = [];
  const segmentAnswers = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("response", (r) => {
    if (r.url().includes("/v1/segment"))
      segmentAnswers.push(`${r.status()} ${new URL(r.url()).search} cache=${r.headers()["x-biref-cache"] || "-"}`);
  });
  page.setDefaultTimeout(STEP_S * 1000);
  page.setDefaultNavigationTimeout(STEP_S * 1000);
  await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: "light" }]);

  // 1. The page loads and lists the model.
  let t0 = performance.now();
  let response;
  try {
    response = await page.goto(base, { waitUntil: "load", timeout: STEP_S * 1000 });
  } catch (e) {
    fail(`chromium could not open ${base}: ${e.message}`);
  }
  if (!response || response.status() !== 200)
    fail(`GET ${base} answered ${response ? response.status() : "nothing"}`);
  try {
    await page.waitForFunction(
      (name) => [...document.querySelectorAll("#model option")].some((o) => o.value === name),
      { timeout: STEP_S * 1000, polling: 50 }, MODEL_NAME);
  } catch {
    const options = await page.$$eval("#model option", (os) => os.map((o) => `${o.value}=${o.textContent}`));
    const now = await pageState(page);
    fail(`the model <select> never listed '${MODEL_NAME}' within ${STEP_S} s: options [${options.join(", ")}], ` +
         `status '${now.status}'`);
  }
  const selected = await page.$eval("#model", (s) => ({ value: s.value, text: s.selectedOptions[0]?.textContent }));
  if (selected.value !== MODEL_NAME) fail(`the model <select> has '${selected.value}' selected, not '${MODEL_NAME}'`);
  const idle = await pageState(page);
  if (idle.state !== "idle") fail(`after loading, the page is in state '${idle.state}' ('${idle.status}'), not idle`);
  const pageLoadMs = performance.now() - t0;
  log(`page loaded, model list shows '${selected.text}' (${pageLoadMs.toFixed(0)} ms)`);

  // 2. Upload the image: the page must reach "done", never "error".
  const input = await page.$("input#file");
  if (!input) fail("the page has no input#file");
  t0 = performance.now();
  await input.uploadFile(path.resolve(imagePath));
  const done = await waitForState(page, ["done", "error"], RESULT_S, "the result of the upload");
  const resultMs = performance.now() - t0;
  if (done.state === "error") fail(`the page shows an error after uploading ${imagePath}: '${done.status}'`);
  log(`upload -> done in ${resultMs.toFixed(0)} ms; the page says '${done.status}' / '${done.info}'`);
  log(`segment answers: ${segmentAnswers.join("; ")}`);
  if (!/^Done in [0-9.]+ s\.$/.test(done.status)) fail(`unexpected #status after success: '${done.status}'`);
  if (!done.info.includes(MODEL_NAME)) fail(`#info '${done.info}' does not name the model ${MODEL_NAME}`);

  // 3. The three images loaded, the mask and the cut-out at the image's own size.
  const images = await imagesLoaded(page, ["original", "mask", "cutout"], STEP_S);
  for (const [id, img] of Object.entries(images)) {
    if (img.width !== size.width || img.height !== size.height)
      fail(`img#${id} decoded at ${img.width}x${img.height}, not the image's ${size.width}x${size.height}`);
    if (img.shownWidth < 100 || img.shownHeight < 50)
      fail(`img#${id} is shown at only ${img.shownWidth}x${img.shownHeight} CSS pixels`);
  }
  log(`original, mask and cut-out decoded at ${size.width}x${size.height}, shown at ` +
      `${images.mask.shownWidth}x${images.mask.shownHeight}`);

  // 4. The download links: blob URLs with file names, enabled.
  const base_name = path.basename(imagePath).replace(/\.[^.]*$/, "");
  const links = await page.evaluate(() => ["download-mask", "download-cutout"].map((id) => {
    const a = document.getElementById(id);
    return { id, href: a.getAttribute("href"), download: a.getAttribute("download"),
             disabled: a.getAttribute("aria-disabled") };
  }));
  for (const link of links) {
    if (!link.href || !link.href.startsWith("blob:")) fail(`a#${link.id} has no blob: href (got '${link.href}')`);
    if (!link.download) fail(`a#${link.id} has no download attribute`);
    if (link.disabled !== "false") fail(`a#${link.id} is still aria-disabled='${link.disabled}'`);
  }
  const wanted = { "download-mask": `${base_name}.mask.png`, "download-cutout": `${base_name}.cutout.png` };
  for (const link of links)
    if (link.download !== wanted[link.id])
      fail(`a#${link.id} downloads as '${link.download}', expected '${wanted[link.id]}'`);

  // 5. The PNGs behind the links: a grey mask and an RGBA cut-out at the image's size.
  const maskPng = await withTimeout(fetchLinkedPng(page, "download-mask"), STEP_S, "fetching the mask's blob URL");
  const cutoutPng = await withTimeout(fetchLinkedPng(page, "download-cutout"), STEP_S, "fetching the cut-out's blob URL");
  for (const [what, png, colorType] of [["mask", maskPng, 0], ["cut-out", cutoutPng, 6]]) {
    if (png.status !== 200 || !png.isPng)
      fail(`the ${what} link (${png.href}) does not give a PNG: status ${png.status}, ${png.length} bytes, type ${png.type}`);
    if (png.width !== size.width || png.height !== size.height)
      fail(`the ${what} PNG is ${png.width}x${png.height}, not ${size.width}x${size.height}`);
    if (png.colorType !== colorType)
      fail(`the ${what} PNG has colour type ${png.colorType}, expected ${colorType} (${colorType ? "RGBA" : "grey"})`);
  }
  log(`mask.png ${maskPng.length} bytes (grey), cutout.png ${cutoutPng.length} bytes (RGBA), type ${maskPng.type}`);
  const alpha = await compareMaskAndAlpha(page);
  if (!alpha.same) fail("the mask and the cut-out decode to different sizes in the page");
  if (alpha.maxDiff > 1) fail(`the cut-out's alpha differs from the mask by up to ${alpha.maxDiff} (of 255)`);
  log(`cut-out alpha == mask (max diff ${alpha.maxDiff}); mask mean ${alpha.mean.toFixed(1)}, ` +
      `range ${alpha.min}..${alpha.max} over ${alpha.pixels} pixels`);

  await page.screenshot({ path: path.join(artifactDir, "web-page.png"), fullPage: true });
  log(`screenshot ${path.join(artifactDir, "web-page.png")}`);

  // 6. The error path: a text file; the page shows the server's JSON error and no stale result.
  const textFile = path.join(work, "not-an-image.txt");
  writeFileSync(textFile, "this is not an image\n");
  segmentAnswers.length = 0;
  t0 = performance.now();
  await input.uploadFile(textFile);
  // Only "error" ends this wait: the page is still "done" from the image until the change event.
  const failed = await waitForState(page, ["error"], STEP_S, "the error answer for a text file");
  if (failed.state !== "error")
    fail(`uploading a text file left the page in state '${failed.state}' ('${failed.status}'), not error`);
  if (!/request body|not an image/.test(failed.status))
    fail(`#status after a bad upload does not carry the server's message: '${failed.status}'`);
  log(`text upload -> error in ${(performance.now() - t0).toFixed(0)} ms: '${failed.status}' (${segmentAnswers.join("; ")})`);
  const stale = await page.evaluate(() => ({
    mask: document.getElementById("mask").getAttribute("src"),
    cutout: document.getElementById("cutout").getAttribute("src"),
    links: ["download-mask", "download-cutout"].map((id) => {
      const a = document.getElementById(id);
      return a.getAttribute("href") === null && a.getAttribute("aria-disabled") === "true";
    }),
    original: (() => {
      const img = document.getElementById("original");
      return { src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth };
    })(),
  }));
  if (stale.mask || stale.cutout) fail("after the failed upload the page still shows the previous mask or cut-out");
  if (!stale.links.every(Boolean)) fail("after the failed upload the download links are still enabled");
  // The text file cannot be shown: img#original must be empty, not a broken-image icon. Its error
  // event comes from decoding, so wait (bounded) for it.
  try {
    await page.waitForFunction(() => {
      const img = document.getElementById("original");
      return !img.getAttribute("src") || (img.complete && img.naturalWidth > 0);
    }, { timeout: 10000, polling: 50 });
  } catch {
    fail(`after uploading a text file img#original shows a broken image (src ${stale.original.src}, ` +
         `complete ${stale.original.complete}, naturalWidth ${stale.original.width})`);
  }
  await page.screenshot({ path: path.join(artifactDir, "web-page-error.png"), fullPage: true });
  log(`screenshot ${path.join(artifactDir, "web-page-error.png")}`);

  if (pageErrors.length) fail(`the page threw: ${pageErrors.join(" | ")}`);
  return { pageLoadMs, resultMs, consoleLines };
}

// ---- main --------------------------------------------------------------------------------------

async function main() {
  checkPrerequisites();
  const size = imageSize(imagePath);
  mkdirSync(artifactDir, { recursive: true });
  let puppeteer;
  try {
    puppeteer = (await import("puppeteer-core")).default;
  } catch (e) {
    fail(`cannot load puppeteer-core (${e.message}): run scripts/install-test-npm-deps.sh`);
  }

  const work = mkdtempSync(path.join(tmpdir(), "biref-web-"));
  let browser = null;
  const watchdog = setTimeout(() => {
    process.stderr.write(`web-page: FAIL: the whole test ran past ${WATCHDOG_S} s; ending the server and the browser\n`);
    killChildrenNow();
    process.exit(3);
  }, WATCHDOG_S * 1000);
  try {
    const t0 = performance.now();
    const { host, port } = await startServer();
    const base = `http://${host}:${port}/`;
    log(`server listening on ${base} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const t1 = performance.now();
    browser = await launchBrowser(puppeteer, path.join(work, "profile"));
    log(`${await browser.version()} started in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
    const page = await browser.newPage();
    const result = await runChecks(page, base, size, work);
    log(`PASS: page load ${result.pageLoadMs.toFixed(0)} ms, image ${size.width}x${size.height} -> ` +
        `mask and cut-out shown in ${(result.resultMs / 1000).toFixed(2)} s`);
  } catch (e) {
    if (serverLog) process.stderr.write(`--- biref serve output (tail) ---\n${serverLog.slice(-3000)}\n---\n`);
    throw e;
  } finally {
    await closeBrowser(browser);
    await stopServer();
    clearTimeout(watchdog);
    rmSync(work, { recursive: true, force: true, maxRetries: 3 });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`web-page: FAIL: ${e instanceof TestFailure ? e.message : e.stack || e}\n`);
    killChildrenNow();
    process.exit(1);
  });
