"""Runs each system of the benchmark in its own process and prints one JSON line per system.

    python bench/peers.py --weights DIR --threads 2 --prompt-tokens 128 --decode-tokens 32 --out rows.jsonl

Every system gets the same seeded random prompt ids (BOS, then N-1 ids drawn from the
vocabulary), runs one prefill of all N ids, then M greedy decode steps of one token each.
  prefill tok/s = N / time of that first forward (logits of the last position only)
  decode tok/s  = 1 / median time of a decode step, the first two steps left out as warm-up
  prefill2      = the prefill again after the decode steps, KV cache emptied (one-time costs
                  such as shader compilation or allocator growth are out of it); peers only
  load s        = time to build the model from the weight files (page cache warmed first)
  peak RSS      = the child process's ru_maxrss (os.wait4), file pages of mapped weights included
Children are pinned with taskset to the first T cores when T < nproc, and get OMP / MKL /
RAYON / LP (lavapipe) thread counts of T.

Systems (see --systems):
  torch-f32, torch-bf16                  PyTorch + transformers LlamaForCausalLM on DIR/hf, KV cache
  llamacpp-cpu-{f32,f16,q8_0,q4_0}      llama-cpp-python (CPU build) on DIR/gguf/model-*.gguf
  llamacpp-vulkan-{f16,q4_0}            the Vulkan build, every layer offloaded (lavapipe here)
  runtime-cpu-{bf16,f16,f32,q8_0,q4_0}  `sphinx bench --device cpu` on DIR/runtime{,-f16,-f32,-q8_0,-q4_0}
                                        (the q8_0 / q4_0 directories written by `sphinx quantize`)
  runtime-cpu-q4_0pure                  DIR/runtime-q4_0-pure: `sphinx quantize --to q4_0 --head q4_0`, every
                                        matrix q4_0 like the gguf (runtime-cpu-q4_0 keeps its head q8_0)
  runtime-cpu-bf16act                   runtime-cpu-bf16 with --bf16-activations (activations rounded to
                                        bf16 before each product, as PyTorch's bf16 and llama.cpp do)
  runtime-wgpu-{bf16,f32,q4_0}          `sphinx bench --device wgpu`
  reference-f32                         not in 'all': the repository's fp32 reference forward
                                        (tests/fixtures/gen/llm_reference.py) on DIR/runtime, a
                                        correctness check for small shapes

A system whose weights, package or binary is missing is reported with status "missing",
one that fails with status "failed" and the tail of its output; neither stops the run.
With --rounds R every system runs R times (every other round in reverse order) and a last
line per system gives the medians (its rows of each round carry "round").
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VOCAB = 32000

ALL_SYSTEMS = ["torch-f32", "torch-bf16",
               "llamacpp-cpu-f32", "llamacpp-cpu-f16", "llamacpp-cpu-q8_0", "llamacpp-cpu-q4_0",
               "llamacpp-vulkan-f16", "llamacpp-vulkan-q4_0",
               "runtime-cpu-bf16", "runtime-cpu-bf16act", "runtime-cpu-f16", "runtime-cpu-f32", "runtime-cpu-q8_0", "runtime-cpu-q4_0", "runtime-cpu-q4_0pure",
               "runtime-wgpu-bf16", "runtime-wgpu-f32", "runtime-wgpu-q4_0"]


def prompt_ids(n, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [1] + [int(x) for x in rng.integers(3, VOCAB, size=n - 1)]


def decode_rate(step_s):
    import statistics
    steps = step_s[2:] if len(step_s) > 2 else step_s
    return 1.0 / statistics.median(steps) if steps else None


def dump_logits(a, logits):
    """Saves the prefill's last-position logits for the parent's agreement check."""
    if a.dump_logits:
        import numpy as np
        np.save(a.dump_logits, np.asarray(logits, dtype=np.float32))


def self_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss():
    """VmRSS now: taken after the imports, before the model, to show the interpreter's share."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- children ---------------------------------------------------------------------------------
def child_torch(a):
    import torch
    import transformers
    from transformers import LlamaForCausalLM
    torch.set_num_threads(a.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    ids = prompt_ids(a.prompt_tokens, a.seed)
    import_rss = current_rss()
    t0 = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=dtype)
    model.eval()
    load_s = time.perf_counter() - t0
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.inference_mode():
        x = torch.tensor([ids])
        t0 = time.perf_counter()
        out = model(input_ids=x, use_cache=True, logits_to_keep=1)
        tok = int(out.logits[0, -1].argmax())
        prefill_s = time.perf_counter() - t0
        dump_logits(a, out.logits[0, -1].float().numpy())
        past, tokens, steps = out.past_key_values, [tok], []
        for _ in range(a.decode_tokens):
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            tok = int(out.logits[0, -1].argmax())
            steps.append(time.perf_counter() - t0)
            past = out.past_key_values
            tokens.append(tok)
        del past, out
        t0 = time.perf_counter()
        out = model(input_ids=x, use_cache=True, logits_to_keep=1)
        int(out.logits[0, -1].argmax())
        prefill2_s = time.perf_counter() - t0
    return dict(load_s=load_s, weights_bytes=weights_bytes, prefill_s=prefill_s, prefill2_s=prefill2_s, step_s=steps,
                greedy_tokens=tokens, device="cpu", threads_used=torch.get_num_threads(), import_rss_bytes=import_rss,
                versions={"torch": torch.__version__, "transformers": transformers.__version__},
                notes=f"attn={model.config._attn_implementation}")


def child_llamacpp(a):
    import ctypes
    import numpy as np
    if a.vulkan_dir:
        sys.path.insert(0, a.vulkan_dir)
    import llama_cpp
    ids = prompt_ids(a.prompt_tokens, a.seed)
    import_rss = current_rss()
    n_ctx = a.prompt_tokens + a.decode_tokens + 16
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=n_ctx, n_batch=max(512, a.prompt_tokens),
                          n_ubatch=max(512, a.prompt_tokens), n_threads=a.threads, n_threads_batch=a.threads,
                          n_gpu_layers=a.gpu_layers, use_mmap=True, logits_all=False, verbose=a.verbose)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def last_logits():
        p = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))

    t0 = time.perf_counter()
    llm.eval(ids)
    tok = int(last_logits().argmax())
    prefill_s = time.perf_counter() - t0
    dump_logits(a, last_logits().copy())
    tokens, steps = [tok], []
    for _ in range(a.decode_tokens):
        t0 = time.perf_counter()
        llm.eval([tok])
        tok = int(last_logits().argmax())
        steps.append(time.perf_counter() - t0)
        tokens.append(tok)
    llm.reset()  # the next eval clears the KV cache from position 0
    t0 = time.perf_counter()
    llm.eval(ids)
    int(last_logits().argmax())
    prefill2_s = time.perf_counter() - t0
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    weights_bytes = int(llama_cpp.llama_model_size(llm._model.model))
    dev = "vulkan" if a.gpu_layers else "cpu"
    return dict(load_s=load_s, weights_bytes=weights_bytes, prefill_s=prefill_s, prefill2_s=prefill2_s, step_s=steps,
                greedy_tokens=tokens, device=dev, versions={"llama-cpp-python": llama_cpp.__version__},
                import_rss_bytes=import_rss,
                notes=f"flash_attn=off; {info}")


def child_reference(a):
    """The repository's fp32 transcription of LLaMA2-Accessory's forward
    (tests/fixtures/gen/llm_reference.py) on the runtime-layout weights: a check that the
    runtime's layout, the HF permutation and the GGUF metadata all describe one model."""
    import torch
    from safetensors.torch import load_file
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures", "gen"))
    from llm_reference import ModelArgs, Transformer
    torch.set_num_threads(a.threads)
    with open(os.path.join(a.model, "config.json")) as f:
        c = json.load(f)
    args = ModelArgs(dim=c["dim"], n_layers=c["n_layers"], n_heads=c["n_heads"], n_kv_heads=c.get("n_kv_heads"),
                     multiple_of=c.get("multiple_of", 256), ffn_dim_multiplier=c.get("ffn_dim_multiplier"),
                     norm_eps=c.get("norm_eps", 1e-5), rope_theta=c.get("rope_theta", 10000.0),
                     max_seq_len=a.prompt_tokens + a.decode_tokens + 8)
    ids = prompt_ids(a.prompt_tokens, a.seed)
    t0 = time.perf_counter()
    sd = load_file(os.path.join(a.model, "model.safetensors"))
    w = {k[len("llma."):] if k.startswith("llma.") else k: v.float() for k, v in sd.items()}
    del sd
    model = Transformer(args, w)
    load_s = time.perf_counter() - t0
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = model.forward_inference(torch.tensor([ids]), 0)[0]
        tok = int(logits.argmax())
        prefill_s = time.perf_counter() - t0
        dump_logits(a, logits.numpy())
        pos, tokens, steps = len(ids), [tok], []
        for _ in range(a.decode_tokens):
            t0 = time.perf_counter()
            tok = int(model.forward_inference(torch.tensor([[tok]]), pos)[0].argmax())
            steps.append(time.perf_counter() - t0)
            pos += 1
            tokens.append(tok)
        t0 = time.perf_counter()
        int(model.forward_inference(torch.tensor([ids]), 0)[0].argmax())
        prefill2_s = time.perf_counter() - t0
    return dict(load_s=load_s, weights_bytes=sum(v.numel() * 4 for v in w.values()), prefill_s=prefill_s,
                prefill2_s=prefill2_s,
                step_s=steps, greedy_tokens=tokens, device="cpu", versions={"torch": torch.__version__},
                notes="tests/fixtures/gen/llm_reference.py, f32, no KV-cache tricks")


def run_child(a):
    fn = {"torch": child_torch, "llamacpp": child_llamacpp, "reference": child_reference}[a.kind]
    r = fn(a)
    r["prefill_tokens"] = a.prompt_tokens
    r["prefill_tok_s"] = a.prompt_tokens / r["prefill_s"]
    r["prefill2_tok_s"] = a.prompt_tokens / r["prefill2_s"]
    r["decode_tokens"] = a.decode_tokens
    r["decode_tok_s"] = decode_rate(r["step_s"])
    r["self_peak_rss_bytes"] = self_rss()
    print("BENCH_RESULT " + json.dumps(r), flush=True)


# --- the parent -------------------------------------------------------------------------------
def lavapipe_index():
    """GGML_VK_VISIBLE_DEVICES for lavapipe: llama.cpp skips CPU-type Vulkan devices unless named."""
    if os.environ.get("GGML_VK_VISIBLE_DEVICES"):
        return os.environ["GGML_VK_VISIBLE_DEVICES"]
    try:
        out = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "0"
    idx = None
    for line in out.splitlines():
        m = re.match(r"\s*GPU(\d+):", line)
        if m:
            idx = m.group(1)
        if "deviceName" in line and idx is not None:
            if "llvmpipe" in line or "lavapipe" in line.lower():
                return idx
    return "0"


def prewarm(path):
    """Reads the weight files once so every system loads from the page cache."""
    paths = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in sorted(os.listdir(path))]
    for p in paths:
        if os.path.isfile(p):
            with open(p, "rb") as f:
                while f.read(64 << 20):
                    pass


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def spawn(cmd, env, timeout, log_path):
    """Runs cmd; returns (returncode, output text, ru_maxrss bytes of that child)."""
    with open(log_path, "w+b") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                status = -9
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status) if status != -9 else -9
        log.seek(0)
        text = log.read().decode(errors="replace")
    return p.returncode, text, ru.ru_maxrss * 1024


def system_spec(name, a):
    """(kind, weights path, dtype label, extra) for a system name."""
    w = a.weights
    if name.startswith("torch-"):
        return "torch", os.path.join(w, "hf"), name.split("-")[1]
    if name.startswith("llamacpp-"):
        _, dev, q = name.split("-")
        return "llamacpp-" + dev, os.path.join(w, "gguf", f"model-{q}.gguf"), q
    if name == "reference-f32":
        return "reference", os.path.join(w, "runtime"), "f32"
    if name.startswith("runtime-"):
        _, dev, dt = name.split("-")
        dt = dt.removesuffix("act")  # bf16act: the bf16 weights, another flag
        pure = dt.endswith("pure")  # q4_0pure: the output head in q4_0 too, as in the gguf
        dt = dt.removesuffix("pure")
        d = "runtime" if dt == "bf16" else f"runtime-{dt}" + ("-pure" if pure else "")
        return "runtime-" + dev, os.path.join(w, d), dt
    raise SystemExit(f"unknown system {name}; choose from {ALL_SYSTEMS}")


def weights_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
               if f.endswith(".safetensors"))


def runtime_version(binary):
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        v = (r.stdout.strip() or r.stderr.strip()).splitlines()
        return v[0].removeprefix("sphinx ").strip() if v else None
    except OSError:
        return None


def parse_runtime_json(text):
    """The runtime's report: the last JSON object it printed (one line or pretty-printed) that
    carries decode_tok_s, at the top level or under "llm"; the "llm" fields are lifted up."""
    def accept(d):
        if not isinstance(d, dict):
            return None
        flat = dict(d)
        if isinstance(d.get("llm"), dict):
            for k, v in d["llm"].items():
                flat.setdefault(k, v)
        return flat if "decode_tok_s" in flat else None

    dec = json.JSONDecoder()
    found, i = None, text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        found = accept(obj) or found
        i = text.find("{", end)
    return found


def run_system(name, a, env_base, vk_index, logdir):
    kind, path, dtype = system_spec(name, a)
    row = {"system": name, "kind": kind.split("-")[0], "weights_dtype": dtype, "weights_path": path,
           "threads": a.threads, "prompt_tokens": a.prompt_tokens, "decode_tokens": a.decode_tokens,
           "seed": a.seed}
    if not os.path.exists(path):
        return {**row, "status": "missing", "reason": f"no weights at {path} (bench/make_weights.py)"}
    env = dict(env_base)
    taskset = ["taskset", "-c", f"0-{a.threads - 1}"] if a.threads < os.cpu_count() else []
    if kind.startswith("llamacpp-vulkan") or kind == "runtime-wgpu":
        env["LP_NUM_THREADS"] = str(a.threads)
    if kind == "torch":
        # torch upcasts to f32 in memory for the f32 row: 2x the bf16 file.
        need = weights_size(path) * (2 if dtype == "f32" else 1)
        avail = mem_available()
        if avail and need > 0.9 * avail:
            return {**row, "status": "skipped", "reason": f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"}
    if kind.startswith("llamacpp"):
        vk = kind == "llamacpp-vulkan"
        if vk:
            if not (a.vulkan_dir and os.path.isdir(os.path.join(a.vulkan_dir, "llama_cpp"))):
                return {**row, "status": "missing", "reason": "no Vulkan build of llama-cpp-python (bench/setup_env.sh)"}
            env["GGML_VK_VISIBLE_DEVICES"] = vk_index
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "llamacpp", "--model", path,
               "--gpu-layers", "-1" if vk else "0"] + (["--vulkan-dir", a.vulkan_dir] if vk else [])
    elif kind in ("torch", "reference"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--model", path, "--dtype", dtype]
    else:
        if not (a.runtime_bin and os.access(a.runtime_bin, os.X_OK)):
            return {**row, "status": "missing", "reason": f"no runtime binary at {a.runtime_bin}"}
        env["RAYON_NUM_THREADS"] = str(a.threads)
        cmd = [a.runtime_bin, "bench", "--model", path, "--device", kind.split("-")[1],
               "--prompt-tokens", str(a.prompt_tokens), "--decode-tokens", str(a.decode_tokens), "--json"]
        if name.endswith("act"):
            cmd.append("--bf16-activations")
    if kind in ("torch", "reference", "llamacpp-cpu", "llamacpp-vulkan"):
        cmd += ["--threads", str(a.threads), "--prompt-tokens", str(a.prompt_tokens),
                "--decode-tokens", str(a.decode_tokens), "--seed", str(a.seed)]
    if not kind.startswith("runtime"):
        row["logits_file"] = os.path.join(logdir, f"{name}.prefill-logits.npy")
        cmd += ["--dump-logits", row["logits_file"]]
    prewarm(path)
    log_path = os.path.join(logdir, f"{name}.log")
    t0 = time.time()
    rc, text, rss = spawn(taskset + cmd, env, a.timeout, log_path)
    row.update(wall_s=round(time.time() - t0, 2), peak_rss_bytes=rss, command=" ".join(taskset + cmd), log=log_path)
    if kind.startswith("runtime"):
        row["versions"] = {"sphinx": runtime_version(a.runtime_bin)}
        r = parse_runtime_json(text) if rc == 0 else None
        if r is None:
            tail = "\n".join(text.strip().splitlines()[-6:])
            status = "missing" if ("unrecognized subcommand" in text or "unexpected argument" in text) else "failed"
            return {**row, "status": status, "reason": f"exit {rc}: {tail}"}
        n = r.get("prefill_tokens", r.get("prompt_tokens", a.prompt_tokens))
        row.update(status="ok", runtime_json=r, load_s=r.get("load_s"), prompt_tokens=n,
                   prefill_tok_s=r.get("prefill_tok_s"), decode_tok_s=r.get("decode_tok_s"),
                   device=r.get("device"), self_peak_rss_bytes=r.get("peak_rss_bytes"))
        # Like the peers' rows: "prefill" is the process's first prefill, "prefill2" a repeat
        # on a fresh cache. A runtime that reports both (prefill_cold_s, then prefill_s /
        # prefill_tok_s for the repeat) is mapped onto them.
        if r.get("prefill_cold_s"):
            row["prefill_tok_s"] = n / r["prefill_cold_s"]
            row["prefill2_tok_s"] = r.get("prefill_tok_s")
        if r.get("weights_bytes"):
            row["weights_bytes"], row["weights_bytes_from"] = r["weights_bytes"], "runtime"
        elif r.get("device_bytes_in_use") and kind == "runtime-wgpu":
            row["weights_bytes"], row["weights_bytes_from"] = r["device_bytes_in_use"], "device allocator after load"
        else:
            row["weights_bytes"], row["weights_bytes_from"] = weights_size(path), "file"
        # Its greedy tokens are compared only when it ran on the same prompt ids.
        if "greedy_tokens" in r and r.get("prompt_ids") == prompt_ids(a.prompt_tokens, a.seed):
            row["greedy_tokens"] = r["greedy_tokens"]
        return row
    res = None
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            res = json.loads(line[len("BENCH_RESULT "):])
    if rc != 0 or res is None:
        tail = "\n".join(text.strip().splitlines()[-8:])
        return {**row, "status": "failed", "reason": f"exit {rc}: {tail}"}
    if kind == "llamacpp-vulkan":
        m = re.search(r"ggml_vulkan: \d+ = ([^\n|]+)", text)
        res["device"] = f"vulkan: {m.group(1).strip()}" if m else "vulkan"
        if "No devices found" in text or "offloaded 0/" in text:
            return {**row, "status": "failed", "reason": "llama.cpp found no Vulkan device (set GGML_VK_VISIBLE_DEVICES)"}
    row.update(status="ok", **{k: v for k, v in res.items() if k != "prefill_tokens"})
    return row


# f32 systems agree to ~1e-3 x std (llama.cpp keeps its KV cache in f16); a q/k layout with
# the wrong rotary pairing is off by ~0.2 x std on the tiny shape, with the same greedy tokens
# (attention is nearly uniform in weights this small), so the logits are what the check reads.
LOGIT_TOLERANCE = 1e-2


def logit_gap(ref, r):
    """Max |difference| of the prefill's last logits, relative to the reference logits' std."""
    import numpy as np
    try:
        x, y = np.load(ref["logits_file"]), np.load(r["logits_file"])
    except (KeyError, OSError, ValueError):
        return ""
    if x.shape != y.shape:
        return ""
    rel = float(np.abs(x - y).max() / x.std())
    r["prefill_logits_max_rel_diff"] = rel
    return f"; prefill logits max |diff| = {rel:.1e} x std"


# Figures that a row of several rounds gives as the median of its rounds.
ROUND_FIGURES = ("load_s", "prefill_tok_s", "decode_tok_s", "prefill2_tok_s")


def median_row(rounds):
    """One system's rows of several rounds as one row: the first round's fields, each of
    ROUND_FIGURES the median of the rounds (their values kept in `<figure>_rounds`), peak
    RSS the largest; a system that failed in any round keeps that round's row."""
    failed = next((r for r in rounds if r.get("status") != "ok"), None)
    if failed is not None:
        return {k: v for k, v in failed.items() if k != "round"} | {"rounds": len(rounds)}
    row = {k: v for k, v in rounds[0].items() if k != "round"} | {"rounds": len(rounds)}
    for key in ROUND_FIGURES:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
            row[key + "_rounds"] = values
    row["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rounds)
    return row


def agreement(rows):
    """Greedy tokens of each system against torch f32 (or llama.cpp f32 when torch f32 is absent).
    Returns (report lines, whether torch f32 and llama.cpp f32 agree exactly or None)."""
    ok = {r["system"]: r for r in rows if r.get("status") == "ok" and r.get("greedy_tokens")}
    ref_name = next((n for n in ("torch-f32", "llamacpp-cpu-f32", "reference-f32") if n in ok), None)
    if ref_name is None:
        return ["agreement: no f32 row with greedy tokens"], None
    ref = ok[ref_name]["greedy_tokens"]
    lines, exact = [], {}
    for name, r in ok.items():
        if name == ref_name:
            continue
        t = r["greedy_tokens"]
        same = 0
        while same < min(len(t), len(ref)) and t[same] == ref[same]:
            same += 1
        lines.append(f"  {name:22s} first {same:3d}/{len(ref)} greedy tokens equal to {ref_name}'s"
                     + logit_gap(ok[ref_name], r))
        rel = r.get("prefill_logits_max_rel_diff")
        exact[name] = (same == len(ref) == len(t), rel)

    def verdict(name):
        tokens_equal, rel = exact[name]
        good = tokens_equal and rel is not None and rel < LOGIT_TOLERANCE
        what = (f"greedy tokens {'EQUAL' if tokens_equal else 'DIFFERENT'}, prefill logits "
                + (f"max |diff| {rel:.1e} x std (tolerance {LOGIT_TOLERANCE:g})" if rel is not None else "not compared"))
        return good, what

    checks = []
    strict = None
    if ref_name == "torch-f32" and "llamacpp-cpu-f32" in exact:
        strict, what = verdict("llamacpp-cpu-f32")
        checks.append(f"CHECK torch f32 vs llama.cpp f32: {'PASS' if strict else 'FAIL'}: {what} (torch: {ref})")
    if ref_name == "torch-f32" and "reference-f32" in exact:
        good, what = verdict("reference-f32")
        checks.append(f"CHECK torch f32 vs repository reference f32: {'PASS' if good else 'FAIL'}: {what}")
        if strict is not None:
            strict = strict and good
    return checks + lines, strict


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", choices=["torch", "llamacpp", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    ap.add_argument("--gpu-layers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--dump-logits", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vulkan-dir", default=os.environ.get("SPHINX_BENCH_VULKAN_DIR"),
                    help="folder holding the Vulkan build's llama_cpp package (default: $VENV/llama-cpp-vulkan)")
    ap.add_argument("--verbose", action="store_true", help="llama.cpp's own log")
    ap.add_argument("--weights", help="directory written by bench/make_weights.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234, help="seed of the prompt ids")
    ap.add_argument("--systems", default="all", help="comma list, or 'all': " + ",".join(ALL_SYSTEMS))
    ap.add_argument("--runtime-bin", default=None, help="the sphinx binary (runtime rows)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per system")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every system this many times, alternating the order; the row of each is the median")
    ap.add_argument("--out", help="append the JSON lines here too")
    ap.add_argument("--logdir", default=None)
    ap.add_argument("--check", action="store_true",
                    help="exit 3 unless torch f32 and llama.cpp f32 (and reference f32, if run) pick the same "
                         "greedy tokens and their prefill logits agree within LOGIT_TOLERANCE x std")
    a = ap.parse_args()
    if a.child:
        a.kind = a.child
        a.verbose = a.verbose or a.child == "llamacpp" and a.gpu_layers != 0
        return run_child(a)

    if not a.weights:
        ap.error("--weights is required")
    if a.vulkan_dir is None:
        a.vulkan_dir = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "llama-cpp-vulkan")
    systems = ALL_SYSTEMS if a.systems == "all" else [s.strip() for s in a.systems.split(",") if s.strip()]
    for s in systems:
        if s not in ALL_SYSTEMS + ["reference-f32"]:
            ap.error(f"unknown system {s}; choose from {ALL_SYSTEMS + ['reference-f32']}")
    logdir = a.logdir or tempfile.mkdtemp(prefix="sphinx-bench-logs-")
    os.makedirs(logdir, exist_ok=True)
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[k] = str(a.threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    vk_index = lavapipe_index() if any("vulkan" in s for s in systems) else "0"
    out = open(a.out, "a") if a.out else None

    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    by_round = []
    for k in range(a.rounds):
        # Every other round in reverse order, so a drift of the machine (this VM's memory
        # bandwidth moves from minute to minute) does not always favour the same systems.
        order = systems if k % 2 == 0 else systems[::-1]
        rows = {}
        for s in order:
            print(f"[peers] {s} ..." + (f" (round {k + 1} of {a.rounds})" if a.rounds > 1 else ""), file=sys.stderr, flush=True)
            round_logs = os.path.join(logdir, f"round-{k + 1}") if a.rounds > 1 else logdir
            os.makedirs(round_logs, exist_ok=True)
            row = run_system(s, a, env, vk_index, round_logs)
            row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            if a.rounds > 1:
                row["round"] = k + 1
            rows[s] = row
            emit(row)
            brief = (f"load {row['load_s']:.2f} s, prefill {row['prefill_tok_s']:.1f} tok/s, decode {row['decode_tok_s']:.1f} tok/s, "
                     f"peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB") if row["status"] == "ok" else row.get("reason", "")
            print(f"[peers] {s}: {row['status']}: {brief}", file=sys.stderr, flush=True)
        by_round.append(rows)
    rows = [median_row([r[s] for r in by_round]) for s in systems] if a.rounds > 1 else list(by_round[0].values())
    if a.rounds > 1:
        for row in rows:
            emit(row)
    lines, strict = agreement(rows)
    for line in lines:
        print(line, file=sys.stderr)
    if out:
        out.write(json.dumps({"agreement": lines, "torch_f32_equals_llamacpp_f32": strict}) + "\n")
        out.close()
    if a.check and strict is not True:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
