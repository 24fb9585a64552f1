// Headless-Chromium test of the JS package (web/dist, built by web/build.sh), run by
// .ci/run. It serves the package and tiny fixture models converted by `sphinx convert
// --web` on 127.0.0.1, drives Debian's Chromium on WebGPU (SwiftShader) with
// playwright-core, and checks the browser against the native runtime: the same greedy
// tokens for text, image + task, chat and a loading-time mix; typed errors for a bad
// image, a bad request, a full quota and a browser without WebGPU; a second load from
// the Cache API; then the demo served by `sphinx serve-demo`, with an answer's box read
// back from its canvas; a model quantized to q4_0; and the package bundled into an app
// by Vite. A screenshot of the demo is saved.
import { copyFile, readFile } from "node:fs/promises";
import { execFileSync, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";
import { serveFiles } from "./static-server.mjs";

const root = resolve(new URL("../..", import.meta.url).pathname);
const sphinx = process.env.SPHINX_BIN;
const outDir = process.env.CARGO_TARGET_DIR ?? join(root, "target");
const fixtures = join(root, "tests/fixtures");
const work = mkdtempSync(join(tmpdir(), "sphinx-web-test-"));
const models = { text: "tiny-llama-mp2", vision: "tiny-sphinx", real: "tiny-mix-real", synthetic: "tiny-mix-synthetic" };
for (const [name, dir] of Object.entries(models)) {
  execFileSync(sphinx, ["convert", "--web", join(fixtures, "models", dir), join(work, name)], { stdio: "ignore" });
}
const native = (args) =>
  execFileSync(sphinx, [...args, "--temperature", "0", "--device", "cpu"], { stdio: ["pipe", "pipe", "ignore"] }).toString();
const image = join(fixtures, "images/caption1.jpg");
const prompt = "What's in the image?";
const ground = { task: "ground", query: "the blue backpack" };
const want = {
  text: native(["generate", "--model", join(fixtures, "models", models.text), "--prompt", prompt, "--max-tokens", "16"]).replace(/\n$/, ""),
  ground: JSON.parse(native(["generate", "--model", join(fixtures, "models", models.vision), "--image", image,
    "--task", ground.task, "--query", ground.query, "--max-tokens", "12", "--json"])).text,
  mix: native(["generate", "--model", join(fixtures, "models", models.real), "--mix-with", join(fixtures, "models", models.synthetic),
    "--beta", "0.5", "--prompt", "Hello", "--max-tokens", "16"]).replace(/\n$/, ""),
};
// SPHINX-Micro quantized to q4_0 (`sphinx quantize`) and converted: the block kernels in the browser.
const micro = join(root, "models/sphinx-micro");
execFileSync(sphinx, ["quantize", micro, "--to", "q4_0", "-o", join(work, "micro-q4_0")], { stdio: "ignore" });
execFileSync(sphinx, ["convert", "--web", join(work, "micro-q4_0"), join(work, "q4")], { stdio: "ignore" });
await copyFile(join(micro, "example.png"), join(work, "example.png"));
const quantizedGround = { task: "ground", query: "the green triangle" };
want.q4 = JSON.parse(native(["generate", "--model", join(work, "micro-q4_0"), "--image", join(micro, "example.png"),
  "--task", quantizedGround.task, "--query", quantizedGround.query, "--max-tokens", "24", "--json"])).text;
// `sphinx chat` prints one answer per line.
const chatTurns = ["Describe the image.", "What colour is it?"];
want.chat = execFileSync(sphinx, ["chat", "--model", join(fixtures, "models", models.vision), "--image", image, "--temperature", "0",
  "--max-tokens", "8", "--device", "cpu"], { input: chatTurns.join("\n") + "\n", stdio: ["pipe", "pipe", "ignore"] }).toString().split("\n").slice(0, 2);

const { server, origin } = await serveFiles(async (path) => {
  if (path === "/models/huge/manifest.json") {
    // The text model's manifest, claiming it needs 1 TiB buffers.
    const m = JSON.parse(await readFile(join(work, "text/manifest.json"), "utf8"));
    m.requirements.max_storage_buffer_binding_size = m.requirements.max_buffer_size = 2 ** 40;
    return { json: m };
  }
  const [, top, ...rest] = path.split("/");
  return top === "models" ? join(work, ...rest) : top === "images" ? join(fixtures, "images", ...rest)
    : top === "vite" ? join(root, "web/test/vite-app/dist", ...rest) : join(root, "web", top, ...rest);
});

const common = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu-sandbox"];
const webgpu = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=native"];
// Chromium occasionally dies while starting up (a SIGSEGV seen once in ~10 launches on
// these machines): a launch gets three tries; a crash after start-up still fails.
const browser = async (args) => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "sphinx-chromium-")), { executablePath: "/usr/bin/chromium", headless: true, args: [...common, ...args] });
    } catch (e) {
      if (attempt === 3) throw e;
      console.log(`  [chromium failed to start: ${e.message.split("\n")[0]}; retrying]`);
    }
  }
};
let failures = 0;
const check = (cond, what) => { console.log(`${cond ? "ok" : "FAIL"} - ${what}`); if (!cond) failures++; };
const open = async (ctx, url) => {
  const page = await ctx.newPage();
  page.on("console", (m) => console.log("  [page]", m.text()));
  page.on("pageerror", (e) => console.log("  [page error]", e.message));
  await page.goto(url);
  return page;
};
// Runs `fn(sphinx, ...args)` in the page; errors come back as { error: { name, kind, message } }.
const inPage = (page, fn, ...args) => page.evaluate(async ([src, args]) => {
  await new Promise((r) => { const t = () => (window.sphinxReady ? r() : setTimeout(t, 10)); t(); });
  try {
    return await (0, eval)(`(${src})`)(window.sphinx, ...args);
  } catch (e) {
    return { error: { name: e?.name, kind: e?.kind, message: String(e?.message ?? e) } };
  }
}, [fn.toString(), args]);

let ctx = await browser(webgpu);
let page = await open(ctx, `${origin}/test/page.html`);

// 1. Text: the greedy answer streams and equals native; progress reaches the total.
const text = await inPage(page, async (s, prompt) => {
  const progress = [];
  const t0 = performance.now();
  const model = await s.Sphinx.load("/models/text", { onProgress: (p) => progress.push(p) });
  const tLoad = performance.now();
  let first = null, streamed = "", maxGap = 0, last = performance.now();
  const timer = setInterval(() => { const now = performance.now(); maxGap = Math.max(maxGap, now - last); last = now; }, 10);
  const r = await model.generate({ prompt, maxTokens: 16, temperature: 0 }, (t) => { first ??= performance.now(); streamed += t; });
  clearInterval(timer);
  const pieces = [];
  const stream = model.stream({ prompt, maxTokens: 16, temperature: 0 });
  for await (const p of stream) pieces.push(p);
  const again = await stream.result;
  await model.dispose();
  return { text: r.text, streamed, iterated: pieces.join(""), again: again.text, progress, info: model.info, loadMs: tLoad - t0, firstTokenMs: first - tLoad, maxGap, decodeTokS: again.tokensPerSecond };
}, prompt);
check(!text.error, `text model loads and answers in a worker ${JSON.stringify(text.error ?? "")}`);
if (!text.error) {
  check(text.text === want.text, `greedy answer equals native: ${JSON.stringify(text.text)} vs ${JSON.stringify(want.text)}`);
  check(text.streamed === text.text, "onToken pieces add up to the answer");
  check(text.iterated === text.text && text.again === text.text, "the async iterator yields the same answer");
  const last = text.progress.at(-1);
  check(last && last.doneBytes === last.totalBytes && last.totalBytes > 0, `progress reached ${last?.doneBytes} of ${last?.totalBytes} bytes`);
  // A report, not a check: compare with `sphinx generate --json --device wgpu` on the same model (README, Performance).
  console.log(`text model: load ${text.loadMs.toFixed(0)} ms, first token ${text.firstTokenMs.toFixed(0)} ms, decode ${text.decodeTokS.toFixed(1)} tok/s, longest main-thread gap while generating ${text.maxGap.toFixed(0)} ms`);
}

// 2. Image + task, chat with the image kept, bad input that the instance survives.
const vision = await inPage(page, async (s, ground, chatTurns) => {
  const model = await s.Sphinx.load("/models/vision");
  const image = await (await fetch("/images/caption1.jpg")).arrayBuffer();
  const t0 = performance.now();
  const r = await model.generate({ ...ground, image, maxTokens: 12, temperature: 0 });
  const ms = performance.now() - t0;
  const chat = [];
  chat.push((await model.chat({ prompt: chatTurns[0], image, maxTokens: 8, temperature: 0 })).text);
  chat.push((await model.chat({ prompt: chatTurns[1], maxTokens: 8, temperature: 0 })).text);
  const errors = {};
  for (const [name, req] of [["image", { prompt: "hi", image: new Uint8Array([0xff, 0xd8, 0xff, 0, 1, 2]) }], ["task", { task: "teleport" }], ["region", { task: "keypoints" }]]) {
    errors[name] = await model.generate({ ...req, maxTokens: 2 }).then(() => null, (e) => ({ name: e.name, kind: e.kind, message: e.message }));
  }
  const after = await model.generate({ ...ground, image, maxTokens: 12, temperature: 0 });
  return { text: r.text, drawing: r.drawing, info: model.info, ms, chat, errors, after: after.text };
}, ground, chatTurns);
check(!vision.error, `multimodal model answers a grounding task about an image ${JSON.stringify(vision.error ?? "")}`);
if (!vision.error) {
  check(vision.text === want.ground, `image + task greedy answer equals native: ${JSON.stringify(vision.text)} vs ${JSON.stringify(want.ground)}`);
  check(JSON.stringify(vision.chat) === JSON.stringify(want.chat), `two chat turns about the image equal native \`sphinx chat\`: ${JSON.stringify(vision.chat)} vs ${JSON.stringify(want.chat)}`);
  check(vision.errors.image?.kind === "image" && vision.errors.image.name === "SphinxError", `a corrupt image is a SphinxError of kind image: ${vision.errors.image?.message}`);
  check(vision.errors.task?.kind === "input" && /unknown task 'teleport'/.test(vision.errors.task.message), `an unknown task is an input error: ${vision.errors.task?.message}`);
  check(vision.errors.region?.kind === "input" && /needs a region/.test(vision.errors.region.message), `a task without its region is an input error: ${vision.errors.region?.message}`);
  check(vision.after === vision.text, "the instance still answers after those errors");
  console.log(`multimodal model: ${vision.info.imageTokens} image tokens, image + 12 tokens in ${vision.ms.toFixed(0)} ms`);
}

// 3. Weight mixing while loading, in the browser.
const mix = await inPage(page, async (s) => {
  const model = await s.Sphinx.load("/models/real", { mix: { with: "/models/synthetic", beta: 0.5 } });
  return (await model.generate({ prompt: "Hello", maxTokens: 16, temperature: 0 })).text;
});
check(typeof mix === "string" && mix === want.mix, `mixed while loading (β = 0.5) equals native --mix-with: ${JSON.stringify(mix)} vs ${JSON.stringify(want.mix)}`);

// 3b. The q4_0 model: its blocks stay blocks on the GPU and give the native answer.
const q4 = await inPage(page, async (s, ground) => {
  const model = await s.Sphinx.load("/models/q4");
  const image = await (await fetch("/models/example.png")).arrayBuffer();
  const text = (await model.generate({ ...ground, image, maxTokens: 24, temperature: 0 })).text;
  await model.dispose();
  return text;
}, quantizedGround);
check(typeof q4 === "string" && q4 === want.q4, `a q4_0 model (sphinx quantize) answers as native: ${JSON.stringify(q4)} vs ${JSON.stringify(want.q4)}`);

// 4. Limits too small: refused before any shard is downloaded. A second load (given
// as the manifest's URL) comes from the Cache API.
const requested = [];
page.on("request", (r) => requested.push(new URL(r.url()).pathname));
const limits = await inPage(page, async (s) => s.Sphinx.load("/models/huge").then(() => null, (e) => ({ kind: e.kind, message: e.message })));
check(limits?.kind === "limits" && /limits are too small/.test(limits.message) && !requested.some((p) => p.startsWith("/models/huge/shard")),
  `a GPU whose limits are too small is refused before downloading: ${limits?.message}`);
await page.reload();
const cached = await inPage(page, async (s) => (await s.Sphinx.load("/models/text/manifest.json")).info);
check(!cached.error && cached.shardsFromCache === cached.shards && cached.shards > 0, `second load comes from the Cache API (${cached.shardsFromCache} of ${cached.shards} shards)`);

// The package bundled by Vite (vite-app, built by `npm test` / .ci/run) works the same.
await page.goto(`${origin}/vite/index.html`);
const bundled = await page.evaluate(async (prompt) => {
  await new Promise((r) => { const t = () => (window.appReady ? r() : setTimeout(t, 10)); t(); });
  return window.answer("/models/text", prompt).catch((e) => `error: ${e.message}`);
}, prompt);
check(bundled === want.text, `a Vite-bundled app gives the same answer: ${JSON.stringify(bundled)}`);
await ctx.close();

// 5. A storage quota too small for the weights: a clear error before downloading; cache: false still loads.
ctx = await browser(webgpu);
page = await ctx.newPage();
await page.addInitScript(() => { navigator.storage.estimate = async () => ({ usage: 0, quota: 1024 }); });
await page.goto(`${origin}/test/page.html`);
const quota = await inPage(page, async (s) => {
  const err = await s.Sphinx.load("/models/text", { worker: false }).then(() => null, (e) => ({ kind: e.kind, message: e.message }));
  const noCache = await s.Sphinx.load("/models/text", { worker: false, cache: false });
  return { err, ok: (await noCache.generate({ prompt: "Hi", maxTokens: 2, temperature: 0 })).generatedTokens };
});
check(quota.err?.kind === "quota" && /not enough browser storage/.test(quota.err.message), `a full quota is a quota error: ${quota.err?.message ?? JSON.stringify(quota)}`);
check(quota.ok > 0, "with { cache: false } the model loads anyway (in the page, without a worker)");
await ctx.close();

// 6. No WebGPU: a clear error.
ctx = await browser(["--disable-gpu", "--disable-features=WebGPU"]);
page = await open(ctx, `${origin}/test/page.html`);
const none = await inPage(page, async (s) => s.Sphinx.load("/models/text").then(() => null, (e) => ({ kind: e.kind, message: e.message })));
check(none?.kind === "webgpu-unavailable" && /WebGPU is not available/.test(none.message), `no WebGPU gives a clear error: ${none?.message}`);
await ctx.close();

// 7. The demo, served by `sphinx serve-demo` with its default model (SPHINX-Micro): it
// opens the model's example image, and a grounding answer's box lands on the red circle.
const example = JSON.parse(await readFile(join(micro, "example.json"), "utf8"));
const circle = example.objects.find((o) => o.shape === "circle" && o.colour === "red");
want.demo = JSON.parse(native(["generate", "--model", micro, "--image", join(micro, "example.png"), "--task", "ground",
  "--query", "the red circle", "--max-tokens", "48", "--json"])).text;
const demo = spawn(sphinx, ["serve-demo", "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
const demoUrl = await new Promise((res, rej) => {
  demo.stdout.on("data", (d) => { const m = /http:\/\/127\.0\.0\.1:\d+\/demo\//.exec(d.toString()); if (m) res(m[0]); });
  demo.on("exit", (c) => rej(new Error(`serve-demo exited with ${c}`)));
});
ctx = await browser(webgpu);
page = await open(ctx, demoUrl);
await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 120000 });
check(await page.evaluate(() => document.body.dataset.state) === "ready", `the demo loads its default model: ${await page.textContent("#status")} ${await page.textContent("#error")}`);
check(await page.evaluate(() => document.body.dataset.image) === example.size.join("x"), "the demo opens the model's example image");
const demoAnswer = await askDemo(page, "ground", "the red circle", 48);
check(demoAnswer === want.demo, `the demo streams the native runtime's answer: ${JSON.stringify(demoAnswer)} vs ${JSON.stringify(want.demo)}`);
const drawn = await page.evaluate(() => {
  const canvas = document.getElementById("canvas");
  const [w] = document.body.dataset.image.split("x").map(Number);
  const scale = canvas.width / w;
  const rect = window.demoResult.drawing.find((c) => c.kind === "rect");
  if (!rect) return null;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const px = (x, y) => Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3));
  const midY = ((rect.y1 + rect.y2) / 2) * scale;
  return { rect, box: window.demoResult.answer.entities[0].boxes[0].normalized, edge: px(rect.x1 * scale + 0.5, midY), outside: px(rect.x1 * scale - 4, midY) };
});
const near = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 40);
const overlap = (a, b) => {
  const ix = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])), iy = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  return (ix * iy) / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy);
};
check(drawn && overlap(drawn.box, circle.normalized) >= 0.5, `the answer's box is on the red circle: ${JSON.stringify(drawn?.box)} vs ${JSON.stringify(circle.normalized)}`);
check(drawn && near(drawn.edge, drawn.rect.color) && !near(drawn.outside, drawn.rect.color),
  `the box is drawn on the canvas: edge pixel ${drawn?.edge} ≈ ${drawn?.rect.color}, just outside ${drawn?.outside}`);
const shot = join(outDir, "browser-demo.png");
await page.screenshot({ path: shot, fullPage: true });
console.log(`screenshot: ${shot}`);

// 7b. The demo loads the q4_0 model given in its URL and gives the native answer.
await copyFile(join(micro, "example.png"), join(work, "q4", "example.png"));
page = await open(ctx, `${origin}/demo/index.html?model=/models/q4`);
await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 120000 });
check(await page.evaluate(() => document.body.dataset.state) === "ready", `the demo loads a q4_0 model: ${await page.textContent("#status")} ${await page.textContent("#error")}`);
const demoQ4 = await askDemo(page, quantizedGround.task, quantizedGround.query, 24);
check(demoQ4 === want.q4, `the demo's q4_0 answer equals native: ${JSON.stringify(demoQ4)} vs ${JSON.stringify(want.q4)}`);
await ctx.close();
demo.kill();
server.close();
process.exit(failures ? 1 : 0);

/** Asks the demo on `page` a task about its image, greedily; the answer's text. */
async function askDemo(page, task, query, maxTokens) {
  await page.selectOption("#task", task);
  await page.fill("#query", query);
  await page.fill("#max-tokens", String(maxTokens));
  await page.fill("#temperature", "0");
  await page.click("#ask");
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, { timeout: 120000 });
  return page.textContent("#answer");
}
