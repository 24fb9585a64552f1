// The model side of the package: calls the wasm module. It runs inside the Web Worker
// (worker.js) by default, or in the page with `Sphinx.load(url, { worker: false })`.
// Everything that decides what the model computes is in the wasm (sphinx-core).
import init, { Sphinx as WasmSphinx, tasks, parseAnswer, lastPanic } from "./wasm/sphinx_web.js";

let ready = null;

function initWasm(wasmUrl) {
  ready ??= init(wasmUrl ? { module_or_path: wasmUrl } : undefined);
  return ready;
}

/** An error as a plain record that survives postMessage: { kind, message }. */
export function errorRecord(e) {
  if (e && e.name === "SphinxError" && e.kind) return { kind: e.kind, message: e.message };
  if (e instanceof WebAssembly.RuntimeError) {
    let panic = null;
    try { panic = lastPanic(); } catch { /* the instance is gone */ }
    return { kind: "internal", message: `the runtime stopped: ${panic ?? e.message}; load the model again`, fatal: true };
  }
  return { kind: "internal", message: String((e && e.message) || e) };
}

/** Runs one operation of the package's protocol; `emit(type, payload)` streams events. */
export class Backend {
  model = null;

  async run(op, args, emit) {
    switch (op) {
      case "load": {
        await initWasm(args.wasmUrl);
        this.model?.dispose();
        this.model = null;
        this.model = await WasmSphinx.load(args.url, args.options ?? {}, (p) => emit("progress", p));
        return this.model.info;
      }
      case "generate":
      case "chat": {
        const image = args.image ? new Uint8Array(args.image) : undefined;
        return await this.loaded()[op](args.options ?? {}, image, (text) => emit("token", text));
      }
      case "resetChat":
        return this.loaded().resetChat();
      case "dispose":
        this.model?.dispose();
        this.model = null;
        return null;
      case "tasks":
        await initWasm(args.wasmUrl);
        return tasks();
      case "parseAnswer":
        await initWasm(args.wasmUrl);
        return parseAnswer(args.text, args.width, args.height);
      default:
        throw Object.assign(new Error(`unknown operation '${op}'`), { name: "SphinxError", kind: "internal" });
    }
  }

  loaded() {
    if (!this.model) throw Object.assign(new Error("no model is loaded"), { name: "SphinxError", kind: "input" });
    return this.model;
  }
}
