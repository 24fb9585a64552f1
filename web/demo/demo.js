// The demo page: load a model, give it an image, ask a task or chat, watch the answer
// stream in and its boxes and keypoints appear on the image. All model work happens in
// the package's Web Worker; this file is only UI.
import { Sphinx, SphinxError, renderDrawing } from "../dist/sphinx.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CACHE_NAME = "sphinx-web-weights";
const MAX_CANVAS = 512;

let model = null;
let image = null; // { bytes, bitmap }
let busy = false;

const setState = (s) => (document.body.dataset.state = s);
const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;

function showError(e) {
  const box = $("error");
  box.hidden = false;
  box.textContent = e instanceof SphinxError ? `${e.kind}: ${e.message}` : String(e?.message ?? e);
  setState("error");
}

function clearError() {
  $("error").hidden = true;
}

async function showCacheInfo() {
  const parts = [];
  if (model) parts.push(`${model.info.shardsFromCache} of ${model.info.shards} shards came from the cache`);
  if (navigator.storage?.estimate) {
    const { usage, quota } = await navigator.storage.estimate();
    parts.push(`browser storage: ${mib(usage)} used of ${mib(quota)}`);
  }
  $("cache-info").textContent = parts.join(" · ");
}

async function load() {
  clearError();
  setState("loading");
  $("ask").disabled = $("draw").disabled = true;
  await model?.dispose().catch(() => {});
  model = null;
  const url = new URL($("model-url").value, location.href);
  $("status").textContent = `Loading ${url}…`;
  $("progress").value = 0;
  const t0 = performance.now();
  try {
    model = await Sphinx.load(url, {
      onProgress: (p) => {
        $("progress").max = p.totalBytes;
        $("progress").value = p.doneBytes;
        $("status").textContent = `${mib(p.doneBytes)} of ${mib(p.totalBytes)}${p.cached ? " (cached)" : ""}`;
      },
    });
  } catch (e) {
    $("status").textContent = "Not loaded.";
    return showError(e);
  }
  const i = model.info;
  $("status").textContent = `Loaded ${i.llamaType} in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
    (i.multimodal ? `, ${i.imageTokens} tokens per image` : ", text only");
  const tasks = await model.tasks();
  $("task").replaceChildren(...tasks.map((t) => new Option(`${t.name} — ${t.description.replace(/ ?\(--(\w+)\)/, " ($1)")}`, t.name)));
  $("task").value = tasks.some((t) => t.name === "ground") ? "ground" : tasks[0].name;
  $("ask").disabled = $("draw").disabled = false;
  if (!image && i.multimodal) await loadExample(url);
  await showCacheInfo();
  setState("ready");
}

async function setImage(file) {
  clearError();
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const bitmap = await createImageBitmap(new Blob([bytes]));
    image = { bytes, bitmap };
    await model?.resetChat();
    $("history").replaceChildren();
    paint([]);
    document.body.dataset.image = `${bitmap.width}x${bitmap.height}`;
  } catch (e) {
    showError(new Error(`cannot read that image: ${e.message ?? e}`));
  }
}

/** The model's example image (`example.png` next to its manifest), if it has one. */
async function loadExample(url) {
  for (const name of ["example.png", "example.jpg"]) {
    const r = await fetch(`${url.href.replace(/\/$/, "")}/${name}`).catch(() => null);
    if (r?.ok) return setImage(await r.blob());
  }
}

/** The image with `drawing` (image pixels) over it. */
function paint(drawing) {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  if (!image) return ctx.clearRect(0, 0, canvas.width, canvas.height);
  const { bitmap } = image;
  const scale = Math.min(1, MAX_CANVAS / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  renderDrawing(ctx, drawing, scale);
}

function request() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const options = {
    maxTokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
  };
  if (mode === "chat") return { mode, options: { ...options, prompt: $("message").value } };
  const region = $("region").value.trim();
  return {
    mode,
    options: {
      ...options,
      task: $("task").value,
      ...($("query").value.trim() ? { query: $("query").value.trim() } : {}),
      ...(region ? { region: region.split(/[,\s]+/).map(Number) } : {}),
    },
  };
}

async function ask() {
  if (!model || busy) return;
  clearError();
  busy = true;
  $("ask").disabled = true;
  setState("answering");
  const { mode, options } = request();
  const out = $("answer");
  out.textContent = "";
  $("stats").textContent = "";
  try {
    const imageBytes = image && (mode === "task" || !$("history").childElementCount) ? image.bytes : undefined;
    const call = mode === "chat" ? model.chat.bind(model) : model.generate.bind(model);
    const result = await call({ ...options, image: imageBytes }, (t) => (out.textContent += t));
    out.textContent = result.text;
    paint(result.drawing);
    if (mode === "chat") addTurn(options.prompt, result.text);
    $("stats").textContent = `${result.promptTokens} prompt tokens, first token after ${result.prefillMs.toFixed(0)} ms; ` +
      `${result.generatedTokens} tokens at ${result.tokensPerSecond.toFixed(1)} tok/s (${result.stop.replace(/_/g, " ")})`;
    window.demoResult = result;
    setState("done");
  } catch (e) {
    showError(e);
  } finally {
    busy = false;
    $("ask").disabled = false;
  }
}

function addTurn(question, answer) {
  for (const [who, text] of [["You", question], ["SPHINX", answer]]) {
    const div = document.createElement("div");
    div.className = "turn";
    div.innerHTML = `<span class="who"></span>: <span></span>`;
    div.children[0].textContent = who;
    div.children[1].textContent = text;
    $("history").append(div);
  }
  $("message").value = "";
}

async function drawPasted() {
  if (!model || !image) return showError(new Error("load a model and an image first"));
  clearError();
  const parsed = await model.parseAnswer($("answer-text").value, image.bitmap.width, image.bitmap.height);
  paint(parsed.drawing);
  window.demoResult = parsed;
  setState("drawn");
}

$("model-url").value = params.get("model") ?? "../models/default";
$("load").onclick = load;
$("ask").onclick = ask;
$("draw").onclick = drawPasted;
$("new-chat").onclick = async () => { await model?.resetChat(); $("history").replaceChildren(); };
$("clear-cache").onclick = async () => { await caches.delete(CACHE_NAME); await showCacheInfo(); };
$("file").onchange = (e) => e.target.files[0] && setImage(e.target.files[0]);
for (const input of document.querySelectorAll("input[name=mode]")) {
  input.onchange = () => {
    const chat = input.value === "chat" && input.checked;
    $("chat-row").hidden = !chat;
    $("task-row").hidden = chat;
  };
}
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) setImage(e.dataTransfer.files[0]);
};
$("message").onkeydown = (e) => e.key === "Enter" && ask();
showCacheInfo();
if (params.get("autoload") !== "0") load();
