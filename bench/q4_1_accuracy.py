"""Does a 4-bit format with a per-block minimum (llama.cpp's q4_1, WebLLM's q4f16_1)
answer SPHINX-Micro's held-out questions better than q4_0? (Issue 15 asks for it only if
it measurably does.) And what does a q4_0 output head cost against the q8_0 one
`sphinx quantize` keeps? (Issue 15 asks to measure it.)

The LLM's matrices that `sphinx quantize --to q4_0` turns into blocks (docs/design.md
§10: the layers' and the embedding's rows of whole u32 words; the output head at q8_0)
are rounded through each format and back — q4_0 and q8_0 as `BlockFormat::quantize`
does (llama.cpp's reference quantizers), q4_1 as llama.cpp's `quantize_row_q4_1_ref`:
per block of 32, d = (max − min)/15, m = min, q = round((x − m)/d) clamped to 0..15,
d and m stored as f16 — and written as f32 checkpoints, so both formats run through the
same f32 kernels. Each model then answers the same held-out items as
`tests/tests/micro_eval.rs`'s quantized test (the first 50 images per domain) through
`sphinx generate`, scored as that test scores them.

    python3 bench/q4_1_accuracy.py --sphinx target/release/sphinx

Needs numpy only.
"""

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 32


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = np.frombuffer(data[a:b], dtype={"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[info["dtype"]])
        if info["dtype"] == "BF16":
            buf = (buf.astype(np.uint32) << 16).view(np.float32)
        out[name] = buf.astype(np.float32).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def q8_0(w):
    b = w.reshape(-1, BLOCK)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0)
    x = b * inv
    q = np.sign(x) * np.floor(np.abs(x) + 0.5)  # roundf: halves away from zero
    return (q * f16(d)).reshape(w.shape)


def q4_0(w):
    b = w.reshape(-1, BLOCK)
    idx = np.abs(b).argmax(axis=1)
    mx = b[np.arange(len(b)), idx][:, None]
    d = mx / -8.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0)
    q = np.minimum(15, np.trunc(b * inv + 8.5))
    return ((q - 8) * f16(d)).reshape(w.shape)


def q4_1(w):
    b = w.reshape(-1, BLOCK)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d = (hi - lo) / 15.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0)
    q = np.minimum(15, np.trunc((b - lo) * inv + 0.5))
    return (q * f16(d) + f16(lo)).reshape(w.shape)


def is_llm_matrix(name, t):
    """The tensors `stored_form` puts in blocks for a q4_0 model (rows of an even number of blocks)."""
    n = name.removeprefix("llma.")
    held = n in ("tok_embeddings.weight", "output.weight") or (
        n.startswith("layers.") and any(n.endswith(s) for s in ("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight", "w2.weight", "w3.weight"))
    )
    return held and t.ndim == 2 and t.shape[1] % (2 * BLOCK) == 0


def rounded_model(src, out, fmt, head=q8_0):
    tensors = read_safetensors(src / "model.safetensors")
    for name, t in tensors.items():
        if is_llm_matrix(name, t):
            tensors[name] = head(t) if name.endswith("output.weight") else fmt(t)
    out.mkdir(parents=True)
    write_safetensors(out / "model.safetensors", tensors)
    for f in ("config.json", "meta.json", "tokenizer.model"):
        shutil.copy(src / f, out / f)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(sphinx, model, items, fix):
    answers, right = [], {}
    for it in items:
        task = {"vqa": "vqa", "ground": "ground"}.get(it["kind"], "short-caption")
        cmd = [sphinx, "generate", "--model", str(model), "--device", "cpu", "--image", str(fix / it["image"]), "--task", task,
               "--max-tokens", "48", "--temperature", "0", "--json"]
        if it.get("query"):
            cmd += ["--query", it["query"]]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        text = r["text"]
        if it["kind"] == "vqa":
            ok = text.strip().lower() == it["truth"].lower()
        elif it["kind"] == "ground":
            boxes = [b["normalized"] for e in r["answer"]["entities"] for b in e["boxes"]]
            ok = bool(boxes) and iou(boxes[0], it["box"]) >= 0.5
        else:
            ok = text.strip() == it["truth"]
        key = (it["domain"], it["kind"])
        right.setdefault(key, []).append(ok)
        answers.append(text)
    return answers, right


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sphinx", default=str(ROOT / "target/release/sphinx"))
    ap.add_argument("--images-per-domain", type=int, default=50)
    args = ap.parse_args()
    fix = ROOT / "tests/fixtures/micro-eval"
    spec = json.loads((fix / "items.json").read_text())
    src = ROOT / spec["model"]
    items = [i for i in spec["items"] if int(Path(i["image"]).stem) < args.images_per_domain]
    with tempfile.TemporaryDirectory(prefix="sphinx-q4_1-") as tmp:
        models = {"bf16 (as stored)": src}
        for name, fmt, head in (("q4_0", q4_0, q8_0), ("q4_0, head q4_0", q4_0, q4_0), ("q4_1", q4_1, q8_0)):
            models[name] = Path(tmp) / name.replace(", ", "-").replace(" ", "_")
            rounded_model(src, models[name], fmt, head)
        results = {name: evaluate(args.sphinx, m, items, fix) for name, m in models.items()}
    base = results["bf16 (as stored)"][0]
    keys = sorted(next(iter(results.values()))[1])
    print(f"SPHINX-Micro, {len(items)} held-out items; LLM matrices rounded through each format (output head q8_0 unless named), f32 kernels\n")
    print("| model | equal to bf16 | " + " | ".join(f"{d} {k}" for d, k in keys) + " | all |")
    print("|---" * (len(keys) + 3) + "|")
    for name, (answers, right) in results.items():
        equal = sum(a == b for a, b in zip(answers, base))
        cells = [f"{100 * sum(right[k]) / len(right[k]):.1f}%" for k in keys]
        total = sum(sum(v) for v in right.values()) / sum(len(v) for v in right.values())
        print(f"| {name} | {equal}/{len(items)} | " + " | ".join(cells) + f" | {100 * total:.1f}% |")


if __name__ == "__main__":
    sys.exit(main())
