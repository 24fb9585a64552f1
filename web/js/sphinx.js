// sphinx-webgpu: SPHINX, the multi-modal LLM, in the browser on WebGPU.
//
//   import { Sphinx } from "sphinx-webgpu";
//   const model = await Sphinx.load("https://example.org/sphinx-tiny/", { onProgress });
//   const result = await model.generate({ task: "ground", query: "the red square", image }, (t) => out.append(t));
//   result.answer.entities[0].boxes[0].pixels;   // [x1, y1, x2, y2] in the image's pixels
//
// The model runs in a Web Worker (worker.js) so the page stays responsive; pass
// { worker: false } to run it in the calling thread. Option and result types are
// generated from the Rust core (types.d.ts); errors are SphinxError with a `kind`.

/** An error of the runtime; `kind` is one of types.d.ts's ErrorKind. */
export class SphinxError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "SphinxError";
    this.kind = kind;
  }
}

const toError = (r) => new SphinxError(r?.kind ?? "internal", r?.message ?? String(r));

/** Calls into a backend in a Web Worker. */
class WorkerTransport {
  constructor() {
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.pending = new Map();
    this.next = 0;
    this.dead = null;
    this.worker.addEventListener("message", ({ data }) => this.receive(data));
    this.worker.addEventListener("error", (ev) => {
      ev.preventDefault?.();
      this.die({ kind: "internal", message: `the model's worker failed: ${ev.message ?? "unknown error"}` });
    });
  }

  receive({ id, type, payload, value, error }) {
    if (type === "fatal") return this.die(error);
    const call = this.pending.get(id);
    if (!call) return;
    if (type === "progress") call.handlers.onProgress?.(payload);
    else if (type === "token") call.handlers.onToken?.(payload);
    else {
      this.pending.delete(id);
      if (type === "result") call.resolve(value);
      else call.reject(toError(error));
    }
  }

  die(error) {
    this.dead ??= error;
    for (const call of this.pending.values()) call.reject(toError(error));
    this.pending.clear();
    this.worker.terminate();
  }

  call(op, args, handlers = {}) {
    if (this.dead) return Promise.reject(toError(this.dead));
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, handlers });
      this.worker.postMessage({ id, op, args });
    });
  }

  close() {
    this.worker.terminate();
    this.dead ??= { kind: "input", message: "this model was disposed" };
  }
}

/** Calls into a backend in this thread. */
class LocalTransport {
  async call(op, args, handlers = {}) {
    const { Backend, errorRecord } = await import("./backend.js");
    this.backend ??= new Backend();
    try {
      return await this.backend.run(op, args, (type, payload) =>
        type === "progress" ? handlers.onProgress?.(payload) : handlers.onToken?.(payload));
    } catch (e) {
      throw toError(errorRecord(e));
    }
  }

  close() {}
}

/** Image bytes from a Uint8Array, ArrayBuffer, Blob/File or URL. */
async function imageBytes(image) {
  if (image == null) return undefined;
  if (image instanceof Uint8Array) return image.slice();
  if (image instanceof ArrayBuffer) return new Uint8Array(image.slice(0));
  if (typeof Blob !== "undefined" && image instanceof Blob) return new Uint8Array(await image.arrayBuffer());
  if (typeof image === "string" || image instanceof URL) {
    const r = await fetch(image);
    if (!r.ok) throw new SphinxError("download", `fetching the image ${image}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  }
  throw new SphinxError("input", "image must be a Uint8Array, ArrayBuffer, Blob or URL");
}

/** The model's base URL, from itself or from its manifest's URL. */
const absolute = (url) =>
  new URL(String(url), globalThis.location?.href ?? undefined).href.replace(/\/manifest\.json$/, "").replace(/\/$/, "");

async function splitRequest(request) {
  const { image, ...options } = request ?? {};
  return { options, image: await imageBytes(image) };
}

export class Sphinx {
  #transport;
  #info;

  constructor(transport, info) {
    this.#transport = transport;
    this.#info = info;
  }

  /**
   * Loads a `sphinx convert --web` directory (its URL, or its manifest.json's). Checks WebGPU, the adapter's limits and
   * the storage quota before downloading; shards are verified and cached.
   */
  static async load(url, { onProgress, worker = true, wasmUrl, ...options } = {}) {
    const transport = worker ? new WorkerTransport() : new LocalTransport();
    if (options.mix?.with) options.mix = { ...options.mix, with: absolute(options.mix.with) };
    try {
      const info = await transport.call("load", { url: absolute(url), options, wasmUrl }, { onProgress });
      return new Sphinx(transport, info);
    } catch (e) {
      transport.close();
      throw e;
    }
  }

  /** What the model is: type, image tokens, context length, shards from the cache. */
  get info() {
    return this.#info;
  }

  /** One question, optionally about an image; resolves to the AskResult. */
  async generate(request, onToken) {
    return this.#transport.call("generate", await splitRequest(request), { onToken });
  }

  /** Continues the conversation (an `image` starts a new one about it). */
  async chat(request, onToken) {
    return this.#transport.call("chat", await splitRequest(request), { onToken });
  }

  /** Forgets the conversation `chat` continues. */
  resetChat() {
    return this.#transport.call("resetChat", {});
  }

  /**
   * The answer as an async iterator of text pieces; `.result` resolves to the AskResult.
   *   const s = model.stream({ prompt }); for await (const t of s) out.append(t); await s.result;
   */
  stream(request, { chat = false } = {}) {
    const queue = [];
    let wake = null;
    let done = false;
    const push = (t) => { queue.push(t); wake?.(); };
    const result = (chat ? this.chat(request, push) : this.generate(request, push)).finally(() => { done = true; wake?.(); });
    const pieces = (async function* () {
      for (;;) {
        if (queue.length) yield queue.shift();
        else if (done) break;
        else await new Promise((r) => (wake = r));
      }
      await result;
    })();
    pieces.result = result;
    return pieces;
  }

  /** The task presets (TaskPreset[]). */
  tasks() {
    return this.#transport.call("tasks", {});
  }

  /** Boxes, points and their drawing for an answer text about a width × height image. */
  parseAnswer(text, width, height) {
    return this.#transport.call("parseAnswer", { text, width, height });
  }

  /** Frees the model (and its worker). */
  async dispose() {
    try {
      await this.#transport.call("dispose", {});
    } finally {
      this.#transport.close();
    }
  }
}

const css = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;

/**
 * Draws an AskResult's `drawing` (boxes, keypoints, skeleton, labels; image pixels)
 * on a 2D canvas context, scaled by `scale` (canvas pixels per image pixel).
 */
export function renderDrawing(ctx, drawing, scale = 1) {
  ctx.save();
  for (const c of drawing) {
    ctx.strokeStyle = ctx.fillStyle = css(c.color);
    if (c.kind === "rect") {
      ctx.lineWidth = c.width;
      ctx.strokeRect(c.x1 * scale, c.y1 * scale, (c.x2 - c.x1) * scale, (c.y2 - c.y1) * scale);
    } else if (c.kind === "line") {
      ctx.lineWidth = c.width;
      ctx.beginPath();
      ctx.moveTo(c.x1 * scale, c.y1 * scale);
      ctx.lineTo(c.x2 * scale, c.y2 * scale);
      ctx.stroke();
    } else if (c.kind === "disc") {
      ctx.beginPath();
      ctx.arc(c.x * scale, c.y * scale, c.radius, 0, 2 * Math.PI);
      ctx.fill();
    } else if (c.kind === "label") {
      ctx.font = "12px sans-serif";
      const w = ctx.measureText(c.text).width + 6;
      ctx.fillStyle = css(c.background);
      ctx.fillRect(c.x * scale, c.y * scale, w, 16);
      ctx.fillStyle = css(c.color);
      ctx.fillText(c.text, c.x * scale + 3, c.y * scale + 12);
    }
  }
  ctx.restore();
}
