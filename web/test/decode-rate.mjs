// By hand, never in CI: the browser's decode and prefill rates next to the native
// binary's on the same machine and model (README, Performance; docs/design.md §9, "The browser's
// per-call cost"). With --profile it also samples the page's CPU while it decodes
// (Chromium's profiler over the DevTools protocol) and prints where the time went.
//
//   SPHINX_BIN=target/release/sphinx node web/test/decode-rate.mjs [--model DIR] [--tokens 24] [--runs 3] [--profile]
//
// Needs web/dist (web/build.sh), Debian's Chromium and web/test's npm packages.
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { serveFiles } from "./static-server.mjs";

const root = resolve(new URL("../..", import.meta.url).pathname);
const { values: opt } = parseArgs({ options: {
  model: { type: "string", default: join(root, "tests/fixtures/models/tiny-llama-mp2") },
  tokens: { type: "string", default: "24" },
  runs: { type: "string", default: "3" },
  profile: { type: "boolean", default: false },
} });
const sphinx = process.env.SPHINX_BIN ?? join(root, "target/release/sphinx");
const tokens = Number(opt.tokens);
const runs = Number(opt.runs);
// Progress on stderr: a large model on SwiftShader takes many minutes per stage.
const t0 = Date.now();
const progress = (what) => console.error(`[${((Date.now() - t0) / 1000).toFixed(0)} s] ${what}`);
const prompt = "What's in the image?";
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

const rates = (xs) => xs.map((r) => r.toPrecision(3)).join(", ");
progress("converting for the web");
const work = mkdtempSync(join(tmpdir(), "sphinx-decode-rate-"));
execFileSync(sphinx, ["convert", "--web", opt.model, join(work, "model")], { stdio: "ignore" });
const { server, origin } = await serveFiles((path) => {
  const [, top, ...rest] = path.split("/");
  return top === "models" ? join(work, ...rest) : join(root, "web", top, ...rest);
});
const profileDir = mkdtempSync(join(tmpdir(), "sphinx-chromium-"));
const ctx = await chromium.launchPersistentContext(profileDir, {
  executablePath: "/usr/bin/chromium", headless: true,
  args: ["--no-sandbox", "--no-first-run", "--disable-gpu-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=native"],
});
const page = await ctx.newPage();
await page.goto(`${origin}/test/page.html`);
await page.waitForFunction(() => window.sphinxReady);
progress("page ready; loading the model and a 4-token warm-up answer");
// In the page's own thread (no worker), so that the profiler sees the wasm.
const adapter = await page.evaluate(async () => {
  const { vendor, architecture } = (await navigator.gpu.requestAdapter()).info;
  window.model = await window.sphinx.Sphinx.load("/models/model", { worker: false });
  await window.model.generate({ prompt: "Hello", maxTokens: 4, temperature: 0 });
  return `${vendor} ${architecture}`;
});
const cdp = opt.profile ? await ctx.newCDPSession(page) : null;
if (cdp) {
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
  await cdp.send("Profiler.start");
}
const browserAnswers = [];
for (let i = 0; i < runs; i++) {
  progress(`browser (${adapter}): answer ${i + 1} of ${runs}`);
  browserAnswers.push(await page.evaluate(async ([prompt, maxTokens]) => {
    const { promptTokens, prefillMs, tokensPerSecond } = await window.model.generate({ prompt, maxTokens, temperature: 0 });
    return { prefill: promptTokens / (prefillMs / 1000), decode: tokensPerSecond, promptTokens };
  }, [prompt, tokens]));
}
const promptTokens = browserAnswers[0].promptTokens;
// Native, warm as the page is after its first answer: `sphinx bench` repeats its prefill
// (of as many tokens as the page's prompt) and takes the median decode step after warm-up.
progress("native runs (sphinx bench)");
const native = Array.from({ length: runs }, () => JSON.parse(execFileSync(sphinx, ["bench", "--model", opt.model, "--device", "wgpu",
  "--prompt-tokens", String(promptTokens), "--decode-tokens", String(tokens), "--json"], { stdio: ["ignore", "pipe", "ignore"] })).llm);
const side = (what, browser, nat) =>
  console.log(`${what}: browser (${adapter}) ${rates(browser)} tok/s, native wgpu ${rates(nat)} tok/s, browser / native (medians) ${(median(browser) / median(nat)).toFixed(2)}`);
side("decode", browserAnswers.map((a) => a.decode), native.map((n) => n.decode_tok_s));
side(`prefill (${promptTokens} tokens)`, browserAnswers.map((a) => a.prefill), native.map((n) => n.prefill_tok_s));
if (cdp) {
  // Self time per function over the answers.
  const { profile } = await cdp.send("Profiler.stop");
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  profile.samples.forEach((id, i) => {
    const f = nodes.get(id).callFrame;
    const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}`;
    self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  for (const [key, ms] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${ms.toFixed(1).padStart(9)} ms  ${key}`);
}
await ctx.close();
server.close();
// The converted model (as large as the model) and the browser profile: this run made both.
for (const dir of [work, profileDir]) rmSync(dir, { recursive: true, force: true });
