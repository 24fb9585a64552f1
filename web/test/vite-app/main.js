// A bundled app, as users write one: the package is imported by its name and Vite
// bundles its Web Worker and wasm file. browser.test.mjs loads the build output.
import { Sphinx } from "sphinx-webgpu";

window.answer = async (modelUrl, prompt) => {
  const model = await Sphinx.load(modelUrl);
  const result = await model.generate({ prompt, maxTokens: 16, temperature: 0 });
  await model.dispose();
  return result.text;
};
window.appReady = true;
