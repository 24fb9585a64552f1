// The package's Web Worker: receives { id, op, args }, answers with
// { id, type: "progress" | "token" | "result" | "error", ... }. A crash of the wasm
// (a bug, never bad input) is reported as { type: "fatal" } so the page can tell.
import { Backend, errorRecord } from "./backend.js";

const backend = new Backend();
const post = (m) => self.postMessage(m);

const fatal = (e) => post({ type: "fatal", error: { ...errorRecord(e), fatal: true } });
self.addEventListener("error", (ev) => fatal(ev.error ?? ev.message));
self.addEventListener("unhandledrejection", (ev) => fatal(ev.reason));

self.addEventListener("message", async ({ data: { id, op, args } }) => {
  try {
    const value = await backend.run(op, args ?? {}, (type, payload) => post({ id, type, payload }));
    post({ id, type: "result", value });
  } catch (e) {
    const error = errorRecord(e);
    post({ id, type: error.fatal ? "fatal" : "error", error });
  }
});
