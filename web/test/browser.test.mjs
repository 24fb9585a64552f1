// Headless-Chromium test of the wasm package (run by .ci/run after `wasm-bindgen`):
// serves web/pkg, this page and a converted tiny model on 127.0.0.1, loads the model
// through the real fetch + Cache API path on WebGPU (SwiftShader), and checks that
// the greedy answer equals the native runtime's, that a second load comes from the
// cache, and that a browser without WebGPU gets a clear error.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { join, extname, resolve } from "node:path";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";

const root = resolve(new URL("../..", import.meta.url).pathname);
const sphinx = process.env.SPHINX_BIN;
const modelDir = mkdtempSync(join(tmpdir(), "sphinx-web-model-"));
const fixture = join(root, "tests/fixtures/models/tiny-llama-mp2");
execFileSync(sphinx, ["convert", "--web", fixture, join(modelDir, "m")]);
const prompt = "What's in the image?";
const native = execFileSync(sphinx, ["generate", "--model", fixture, "--prompt", prompt, "--temperature", "0", "--max-tokens", "16", "--device", "cpu"], { stdio: ["ignore", "pipe", "ignore"] }).toString().replace(/\n$/, "");

const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
const server = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const file = path.startsWith("/model/") ? join(modelDir, "m", path.slice(7))
    : path.startsWith("/pkg/") ? join(root, "web", path) : join(root, "web/test", path);
  try {
    const body = await readFile(file);
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${server.address().port}/page.html?max=16`;

const common = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-gpu-sandbox"];
const webgpu = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=native"];
let failures = 0;
const check = (cond, what) => { console.log(`${cond ? "ok" : "FAIL"} - ${what}`); if (!cond) failures++; };

const userDir = mkdtempSync(join(tmpdir(), "sphinx-chromium-"));
let ctx = await chromium.launchPersistentContext(userDir, { executablePath: "/usr/bin/chromium", headless: true, args: [...common, ...webgpu] });
let page = await ctx.newPage();
page.on("console", (m) => console.log("  [page]", m.text()));
await page.goto(url);
const first = await page.evaluate(() => window.__sphinx);
check(first.ok, `loads and answers on WebGPU (${first.error ?? ""})`);
if (first.ok) {
  check(first.text === native, `greedy answer equals native: ${JSON.stringify(first.text)} vs ${JSON.stringify(native)}`);
  check(first.streamed === first.text, "streamed pieces add up to the answer");
  const last = first.progress.at(-1) ?? [0, 1];
  check(last[0] === last[1] && last[1] > 0, `progress reached ${last[0]} of ${last[1]} bytes`);
  console.log(`time to load ${first.loadMs.toFixed(0)} ms, to first token ${first.firstTokenMs.toFixed(0)} ms`);
}
await page.goto(url);
const second = await page.evaluate(() => window.__sphinx);
check(second.ok && second.fromCache > 0, `second load comes from the Cache API (${second.fromCache} shards)`);
await page.screenshot({ path: join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "browser-test.png") });
await ctx.close();

ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "sphinx-chromium-")), { executablePath: "/usr/bin/chromium", headless: true, args: [...common, "--disable-gpu", "--disable-features=WebGPU"] });
page = await ctx.newPage();
await page.goto(url);
const none = await page.evaluate(() => window.__sphinx);
check(!none.ok && /WebGPU is not available/.test(none.error ?? ""), `no WebGPU gives a clear error: ${none.error}`);
await ctx.close();
server.close();
process.exit(failures ? 1 : 0);
