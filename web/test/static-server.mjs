// The static file server of the browser scripts (browser.test.mjs, decode-rate.mjs), on
// 127.0.0.1: `route(pathname)` gives the file to send, or `{ json }` to send a value
// itself; a file that cannot be read is a 404.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname } from "node:path";

const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".jpg": "image/jpeg", ".png": "image/png" };

/** Starts the server; resolves to { server, origin }. */
export async function serveFiles(route) {
  const server = createServer(async (req, res) => {
    try {
      const answer = await route(decodeURIComponent(new URL(req.url, "http://x").pathname));
      if (answer?.json !== undefined) {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify(answer.json));
      }
      const body = await readFile(answer);
      res.writeHead(200, { "content-type": types[extname(answer)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}
