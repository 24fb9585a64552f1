#!/usr/bin/env bash
# Builds the JS package `sphinx-webgpu` into web/dist: the wasm module (release),
# wasm-bindgen's glue (web/dist/wasm/) and the JS API (web/js/). Publish or import
# web/dist as it is: `import { Sphinx } from "./dist/sphinx.js"`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

command -v rustup >/dev/null && rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
# wasm-bindgen-cli must be exactly the version of the wasm-bindgen crate in Cargo.lock.
WBG_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WBG_VERSION"; then
  echo "installing wasm-bindgen-cli $WBG_VERSION" >&2
  cargo install -q wasm-bindgen-cli --version "$WBG_VERSION"
fi

cargo build -p sphinx-web --target wasm32-unknown-unknown --release
rm -rf web/dist
mkdir -p web/dist/wasm
wasm-bindgen --target web --out-dir web/dist/wasm "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sphinx_web.wasm"
cp web/js/package.json web/js/*.js web/js/*.d.ts web/dist/
cp web/README.md web/dist/README.md

wasm=web/dist/wasm/sphinx_web_bg.wasm
js=$(cat web/dist/*.js web/dist/wasm/sphinx_web.js | wc -c)
echo "web/dist: wasm $(wc -c <"$wasm") bytes ($(gzip -9c "$wasm" | wc -c) gzipped), JS $js bytes"
