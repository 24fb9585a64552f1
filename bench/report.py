"""Turns the JSON lines of bench/peers.py into bench/results/<machine>.md and .json.

    python bench/report.py rows.jsonl [--machine 2xEPYC-AVX2] [--shape tinyllama] [--weights DIR]

The table has one row per system: weights dtype, weights bytes in memory, load time, peak
RSS, prefill and decode tok/s. A second table sets each runtime row against the best peer
(every non-runtime row that ran) in each column: load and RSS as runtime / best (lower is
better, so < 1 means the runtime wins), prefill and decode as runtime / best (> 1 wins).
"""
import argparse
import sys
import json
import os
import platform
import re
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def default_machine():
    """A short description, not the host name: <cores>x<CPU family>-<widest SIMD>."""
    model = cpu_model()
    fam = next((w for w in ("EPYC", "Ryzen", "Threadripper", "Xeon", "Core", "Graviton", "Neoverse")
                if w.lower() in model.lower()), re.sub(r"[^A-Za-z0-9]+", "", model.split()[0] if model.split() else "CPU"))
    fl = cpu_flags()
    simd = ("AVX512" if "avx512f" in fl else "AVX2" if "avx2" in fl else "AVX" if "avx" in fl
            else "NEON" if ("asimd" in fl or "neon" in fl) else "SSE")
    return f"{os.cpu_count()}x{fam}-{simd}"


def mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def lavapipe():
    try:
        out = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = re.findall(r"deviceName\s*=\s*(.+)", out)
    drivers = re.findall(r"driverInfo\s*=\s*(.+)", out)
    return "; ".join(f"{n.strip()} / {d.strip()}" for n, d in zip(names, drivers)) or None


def fmt_bytes(n):
    if n is None:
        return "–"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}" if unit == "GiB" else f"{n / div:.0f} {unit}"
    return f"{n} B"


def fmt_num(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def best(rows, key, lower):
    cands = [(r[key], r["system"]) for r in rows if r.get(key) is not None]
    if not cands:
        return None, None
    return min(cands) if lower else max(cands)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", help="JSON lines from bench/peers.py")
    ap.add_argument("--machine", default=None, help="short machine name (default: e.g. 2xEPYC-AVX2)")
    ap.add_argument("--shape", default=None)
    ap.add_argument("--weights", default=None, help="the weights directory (reads its manifest.json)")
    ap.add_argument("--outdir", default=os.path.join(HERE, "results"))
    ap.add_argument("--stem", default=None, help="file name without extension (default: the machine name)")
    ap.add_argument("--versions", default=None, help="JSON file of package versions (bench/run.sh writes it)")
    a = ap.parse_args()

    rows, agreement = [], None
    with open(a.rows) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            if "agreement" in d:
                agreement = d
            elif "round" in d:
                continue  # one round of several: the system's median row follows
            else:
                rows.append(d)
    # A later row for the same system replaces an earlier one (reruns append).
    by_name = {}
    for r in rows:
        by_name[r["system"]] = r
    rows = list(by_name.values())

    machine = a.machine or default_machine()
    manifest = {}
    if a.weights and os.path.exists(os.path.join(a.weights, "manifest.json")):
        with open(os.path.join(a.weights, "manifest.json")) as f:
            manifest = json.load(f)
    model = manifest.get("model", {})
    shape = a.shape or model.get("shape", "?")
    versions = {}
    if a.versions and os.path.exists(a.versions):
        with open(a.versions) as f:
            versions.update(json.load(f))
    for r in rows:
        for k, v in (r.get("versions") or {}).items():
            if v:
                versions.setdefault(k, v)
    lp = lavapipe()
    if lp:
        versions.setdefault("vulkan device", lp)
    llama_info = next((r.get("notes", "") for r in rows if r.get("kind") == "llamacpp" and r.get("status") == "ok"
                       and r.get("device") == "cpu"), "")

    threads = next((r["threads"] for r in rows if "threads" in r), None)
    n = next((r["prompt_tokens"] for r in rows if "prompt_tokens" in r), None)
    m = next((r["decode_tokens"] for r in rows if "decode_tokens" in r), None)
    date = time.strftime("%Y-%m-%d %H:%M")

    ok = [r for r in rows if r.get("status") == "ok"]
    peers = [r for r in ok if r.get("kind") not in ("runtime", "reference")]
    runtime = [r for r in rows if r.get("kind") == "runtime"]

    md = [f"# Benchmark: {machine}, shape {shape}", ""]
    md.append(f"- date: {date}")
    md.append(f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores), memory {fmt_bytes(mem_total())}")
    md.append(f"- threads: {threads} (every system pinned to the first {threads} cores when that is fewer than all)")
    if model:
        md.append(f"- model: random LLaMA, dim {model.get('dim')}, {model.get('n_layers')} layers, "
                  f"{model.get('n_heads')}/{model.get('n_kv_heads')} heads, FFN {model.get('ffn')}, "
                  f"vocab {model.get('vocab_size')}, {model.get('params', 0) / 1e6:.0f} M parameters, seed {model.get('seed')}")
    md.append(f"- prompt: {n} random token ids (same for every peer), then {m} greedy decode steps")
    rounds = max((r.get("rounds", 1) for r in rows), default=1)
    if rounds > 1:
        md.append(f"- rounds: {rounds}, every other one in reverse order; load, prefill and decode are each system's "
                  "median (decode of every round below the tables), peak RSS its largest")
    md.append("- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if llama_info:
        md.append(f"- llama.cpp CPU build: {llama_info}")
    md.append("")
    md.append("| system | weights dtype | weights in memory | load s | peak RSS | prefill tok/s | decode tok/s "
              "| prefill tok/s, 2nd | RSS after imports | status |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = r.get("status")
        note = "ok" if st == "ok" else f"{st}: {str(r.get('reason', '')).splitlines()[0][:80] if r.get('reason') else ''}"
        dev = r.get("device") or ""
        name = r["system"] + (f" ({dev})" if dev and dev not in ("cpu",) and not r["system"].startswith("llamacpp-vulkan") else "")
        rss = r.get("peak_rss_bytes") if st == "ok" else None
        md.append(f"| {name} | {r.get('weights_dtype')} | {fmt_bytes(r.get('weights_bytes'))} | "
                  f"{fmt_num(r.get('load_s'), 2)} | {fmt_bytes(rss)} | "
                  f"{fmt_num(r.get('prefill_tok_s'))} | {fmt_num(r.get('decode_tok_s'))} | "
                  f"{fmt_num(r.get('prefill2_tok_s'))} | {fmt_bytes(r.get('import_rss_bytes'))} | {note} |")
    md.append("")

    ratios = []
    if peers:
        cols = [("load_s", True, "load"), ("peak_rss_bytes", True, "peak RSS"),
                ("prefill_tok_s", False, "prefill"), ("decode_tok_s", False, "decode")]
        bests = {k: best(peers, k, lower) for k, lower, _ in cols}
        md.append("Best peer per column: " + "; ".join(
            f"{label} {bests[k][1]}" for k, _, label in cols if bests[k][1]))
        md.append("")
        md.append("| runtime row | load / best | peak RSS / best | prefill / best | decode / best |")
        md.append("|---|---|---|---|---|")
        for r in runtime:
            cells, rr = [], {"system": r["system"], "against": "best peer per column"}
            for k, lower, _ in cols:
                b = bests[k][0]
                v = r.get(k) if r.get("status") == "ok" else None
                rr[k] = v / b if v is not None and b else None
                cells.append("–" if rr[k] is None else f"{rr[k]:.2f}")
            ratios.append(rr)
            md.append(f"| {r['system']} | " + " | ".join(cells) + " |")
        md.append("")
        # The same against peers holding the weights in the same dtype (bf16 / f16 / f32).
        same = []
        for r in runtime:
            ps = [p for p in peers if p.get("weights_dtype") == r.get("weights_dtype")]
            if not ps or r.get("status") != "ok":
                continue
            cells, rr = [], {"system": r["system"], "against": f"best {r.get('weights_dtype')} peer per column"}
            for k, lower, _ in cols:
                b, who = best(ps, k, lower)
                v = r.get(k)
                rr[k] = v / b if v is not None and b else None
                cells.append("–" if rr[k] is None else f"{rr[k]:.2f} ({who})")
            ratios.append(rr)
            same.append(f"| {r['system']} | " + " | ".join(cells) + " |")
        if same:
            md.append("Against the best peer with the same weights dtype:")
            md.append("")
            md.append("| runtime row | load / best | peak RSS / best | prefill / best | decode / best |")
            md.append("|---|---|---|---|---|")
            md += same
            md.append("")
        md.append("Load and peak RSS: < 1 means the runtime uses less. Prefill and decode: > 1 means the runtime is faster.")
        md.append("")
    if rounds > 1:
        md.append("Decode tok/s of each round (round 1 first):")
        md.append("")
        md += [f"    {r['system']:<22} " + "  ".join(f"{v:.1f}" for v in r.get("decode_tok_s_rounds", [])) for r in ok]
        md.append("")
    # Recomputed over the rows kept (a rerun of one system appends its own agreement line).
    try:
        sys.path.insert(0, HERE)
        sys.dont_write_bytecode = True
        from peers import agreement as agree
        lines, strict = agree([dict(r) for r in rows])
        agreement = {"agreement": lines, "torch_f32_equals_llamacpp_f32": strict}
    except Exception as e:  # the logits files may be gone: keep what peers.py wrote
        print(f"report: agreement not recomputed ({e})", file=sys.stderr)
    if agreement:
        md.append("Agreement with torch f32 (same prompt ids):")
        md.append("")
        md += [f"    {line.strip()}" for line in agreement.get("agreement", [])]
        md.append("")
    md.append("RSS after imports: the peer's process before it loads the model (Python, torch or llama.cpp "
              "libraries), part of its peak RSS.")
    md.append("")
    md.append("Prefill tok/s is the first forward over the prompt, one-time costs included (lavapipe compiles its "
              "shaders then); the 2nd prefill repeats it after the decode steps with the KV cache emptied "
              "(the runtime's own repeat when its JSON has prefill_cold_s).")
    md.append("")
    md.append("Measured by bench/run.sh (see bench/README.md). Weights bytes: the model's tensors as each system "
              "holds them (torch: parameters; llama.cpp: llama_model_size; runtime: its own report, else the file).")

    os.makedirs(a.outdir, exist_ok=True)
    stem = a.stem or machine
    md_path = os.path.join(a.outdir, f"{stem}.md")
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    js = {"machine": machine, "date": date, "cpu": cpu_model(), "logical_cores": os.cpu_count(),
          "memory_bytes": mem_total(), "threads": threads, "shape": shape, "model": model,
          "prompt_tokens": n, "decode_tokens": m, "versions": versions, "rows": rows,
          "runtime_vs_best_peer": ratios, "agreement": agreement}
    with open(os.path.join(a.outdir, f"{stem}.json"), "w") as f:
        json.dump(js, f, indent=1)
    print(md_path)


if __name__ == "__main__":
    main()
