// Builds the test app into web/test/vite-app/dist.
export default {
  root: new URL(".", import.meta.url).pathname,
  base: "./",
  logLevel: "warn",
  build: { target: "esnext", outDir: "dist", emptyOutDir: true },
  worker: { format: "es" },
};
