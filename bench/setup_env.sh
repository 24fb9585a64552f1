#!/usr/bin/env bash
# Creates (or reuses) the benchmark's Python environment outside the repository and
# builds llama-cpp-python from source, once per version / CMake flags / CPU.
#
#   bench/setup_env.sh            # venv + peers + llama-cpp-python (CPU, and Vulkan if possible)
#   bench/setup_env.sh --no-vulkan
#
# Environment:
#   SPHINX_BENCH_VENV    the venv (default $HOME/.cache/sphinx-bench-venv)
#   SPHINX_BENCH_WHEELS  built llama-cpp-python wheels (default $HOME/.cache/sphinx-bench-wheels)
#   BENCH_BUILD_JOBS     parallel compile jobs for the llama.cpp builds (default 1)
#   BENCH_NICE           niceness of the builds (default 19)
#   BENCH_RETRY_BUILD    set to retry a build that failed before (else it is skipped)
#
# Prints the venv's python path as its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$HERE/requirements.txt"
VENV="${SPHINX_BENCH_VENV:-$HOME/.cache/sphinx-bench-venv}"
WHEELS="${SPHINX_BENCH_WHEELS:-$HOME/.cache/sphinx-bench-wheels}"
JOBS="${BENCH_BUILD_JOBS:-1}"
NICE="${BENCH_NICE:-19}"
WANT_VULKAN=1
for a in "$@"; do
  case "$a" in
    --no-vulkan) WANT_VULKAN=0 ;;
    *) echo "setup_env.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

log() { echo "[setup] $*" >&2; }
pin() { grep -E "^$1==" "$REQ" | head -1 | cut -d= -f3; }

PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check -q)

# --- the peers (everything but llama-cpp-python) -------------------------------------
REQ_HASH="$(sha256sum "$REQ" | cut -c1-16)"
STAMP="$VENV/.bench-req-$REQ_HASH"
if [ ! -f "$STAMP" ]; then
  TORCH_V="$(pin torch)"
  if curl -fsS -m 15 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
    log "installing torch==$TORCH_V from the PyTorch CPU index"
    "${PIP[@]}" install --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple "torch==$TORCH_V"
  else
    log "PyTorch CPU index unreachable; installing torch==$TORCH_V from PyPI (CUDA build, used on the CPU)"
    "${PIP[@]}" install "torch==$TORCH_V"
  fi
  log "installing the other pinned packages"
  grep -vE '^(#|$|torch==|llama-cpp-python==)' "$REQ" > "$VENV/.bench-req-rest.txt"
  nice -n "$NICE" "${PIP[@]}" install -r "$VENV/.bench-req-rest.txt"
  touch "$STAMP"
fi

# --- llama-cpp-python, built from source ------------------------------------------------
LCPP_V="$(pin llama-cpp-python)"
CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2 | tr ' ' '\n' | sort | tr -d '\n' | sha256sum | cut -c1-8)"
BASE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"

# build_wheel NAME CMAKE_ARGS -> prints the wheel path
build_wheel() {
  local name="$1" args="$2"
  local key
  key="$(printf '%s|%s|%s' "$LCPP_V" "$args" "$CPU_FLAGS" | sha256sum | cut -c1-12)"
  local dir="$WHEELS/$name-$LCPP_V-$key"
  local whl
  whl="$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$whl" ] && [ -f "$dir/FAILED" ] && [ -z "${BENCH_RETRY_BUILD:-}" ]; then
    log "the $name build failed before (see $dir/build.log); BENCH_RETRY_BUILD=1 tries again"
    return 1
  fi
  if [ -z "$whl" ]; then
    rm -f "$dir/FAILED"
    mkdir -p "$dir"
    log "building llama-cpp-python==$LCPP_V ($name: $args), nice $NICE, $JOBS job(s); log: $dir/build.log"
    local t0=$SECONDS
    # The venv's bin first: ggml-vulkan configures its shader generator as a nested CMake
    # project that looks for ninja (and cmake) on PATH.
    if ! env PATH="$VENV/bin:$PATH" CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" MAKEFLAGS="-j$JOBS" \
         nice -n "$NICE" "$PY" -m pip --disable-pip-version-check -v wheel --no-cache-dir --no-deps \
         --no-build-isolation --no-binary llama-cpp-python -w "$dir" "llama-cpp-python==$LCPP_V" \
         > "$dir/build.log" 2>&1; then
      log "build $name FAILED after $((SECONDS - t0)) s; tail of $dir/build.log:"
      tail -20 "$dir/build.log" >&2
      touch "$dir/FAILED"
      return 1
    fi
    whl="$(ls "$dir"/llama_cpp_python-*.whl | head -1)"
    # pip must not hand back a wheel it cached for other CMake flags (hence --no-cache-dir).
    if [ "$name" = vulkan ] && ! "$PY" -c "import sys, zipfile; sys.exit(not any('libggml-vulkan' in n for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$whl"; then
      log "the $name wheel has no libggml-vulkan: not a Vulkan build"
      rm -f "$whl"
      touch "$dir/FAILED"
      return 1
    fi
    echo "$((SECONDS - t0))" > "$dir/build-seconds"
    log "built $name in $((SECONDS - t0)) s: $whl"
  fi
  echo "$whl"
}

if CPU_WHL="$(build_wheel cpu "$BASE_ARGS")"; then
  if ! "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$LCPP_V' else 1)" 2>/dev/null \
     || [ "$(cat "$VENV/.bench-lcpp-cpu" 2>/dev/null)" != "$CPU_WHL" ]; then
    "${PIP[@]}" install --force-reinstall --no-deps "$CPU_WHL"
    "${PIP[@]}" install "$CPU_WHL"   # its dependencies (diskcache, jinja2, ...)
    echo "$CPU_WHL" > "$VENV/.bench-lcpp-cpu"
  fi
else
  log "no llama.cpp CPU build: its rows will fail"
fi

# llama.cpp's Vulkan backend needs headers newer than Debian 12's libvulkan-dev (1.3.239
# lacks VK_EXT_layer_settings). Then Debian 13's libvulkan-dev .deb is fetched with apt-get
# (a private apt state: the system's sources and packages are not touched) and unpacked into
# the wheel cache; only its headers are used, against the system's libvulkan.
VK_HEADERS_DEB="${BENCH_VK_HEADERS_DEB:-libvulkan-dev=1.4.309.0-1}"
vulkan_include() {
  if grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h 2>/dev/null; then
    echo /usr/include
    return 0
  fi
  local root="$WHEELS/vulkan-headers-${VK_HEADERS_DEB#*=}"
  if [ ! -f "$root/usr/include/vulkan/vulkan_core.h" ]; then
    log "system Vulkan headers too old; fetching Debian trixie's $VK_HEADERS_DEB (headers only)"
    local apt="$WHEELS/apt-trixie"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources" "$apt/prefs" "$root"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > "$apt/sources/trixie.sources"
    local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources"
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
                -o Dir::Etc::Preferences=/dev/null -o "Dir::Etc::PreferencesParts=$apt/prefs"
                -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" -qq update >&2 || return 1
    (cd "$apt" && rm -f ./*.deb && apt-get "${opts[@]}" -qq download "$VK_HEADERS_DEB" >&2) || return 1
    dpkg-deb -x "$apt"/libvulkan-dev_*.deb "$root" || return 1
  fi
  echo "$root/usr/include"
}

# The Vulkan build goes into its own folder, put first on sys.path by peers.py for the
# llama.cpp Vulkan rows only, so the CPU rows never touch a Vulkan device.
VK_DIR="$VENV/llama-cpp-vulkan"
if [ "$WANT_VULKAN" = 1 ]; then
  # ggml-vulkan's CMake also needs SPIRV-Headers' package files (Debian: spirv-headers);
  # without them its configure step fails after the CPU build has taken its time.
  if [ -f /usr/include/vulkan/vulkan.h ] && command -v glslc > /dev/null \
     && compgen -G '/usr/share/cmake/SPIRV-Headers*/SPIRV-HeadersConfig.cmake' > /dev/null \
     && VK_INC="$(vulkan_include)"; then
    if VK_WHL="$(build_wheel vulkan "$BASE_ARGS -DGGML_VULKAN=on -DVulkan_INCLUDE_DIR=$VK_INC")"; then
      if [ "$(cat "$VK_DIR/.wheel" 2>/dev/null)" != "$VK_WHL" ]; then
        rm -rf "$VK_DIR"
        "${PIP[@]}" install --no-deps --target "$VK_DIR" "$VK_WHL"
        echo "$VK_WHL" > "$VK_DIR/.wheel"
      fi
    else
      log "no Vulkan build: the llama.cpp Vulkan rows will be reported as missing"
      rm -rf "$VK_DIR"
    fi
  else
    log "Vulkan headers or glslc missing (apt-get install libvulkan-dev glslc spirv-headers): no llama.cpp Vulkan rows"
  fi
fi
echo "$PY"
