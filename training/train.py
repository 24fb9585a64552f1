"""Trains SPHINX-Micro, mixes it with `sphinx mix`, and writes the held-out evaluation
set the runtime's tests score. One command, from the repository root:

    python training/train.py          # ≈ 60 min on a 2-core CPU (see --help for the knobs)

Recipe (the paper's weight mixing, at micro scale):
 1. base: every weight trained (encoders included) on both domains of `shapes.py`;
 2. two fine-tunes of the base, encoders frozen (as SPHINX keeps its encoders frozen):
    one on the "real" domain, one on the "synthetic" domain;
 3. `sphinx mix --beta 0.5` (and a second β) of the two fine-tunes;
 4. every model scored in PyTorch on 200 held-out images per domain (README table);
    the β = 0.5 mix is shipped as `models/sphinx-micro` with its PyTorch greedy answers
    for `tests/fixtures/micro-eval`.
"""
import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import attention_hints
import dense_supervision
import shapes
from micro_model import (ARGS, HERE, TOKENIZER, Transformer, build_encoders, encode, image_tensor, init_llm_and_glue, llm_hidden,
                         load_encoders, save)

ROOT = os.path.abspath(os.path.join(HERE, ".."))
sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
STOPS = ([29871, 13, 2277, 29937], [13, 2277, 29937], [2])  # docs/spec.md §5.3
TRAIN_SEED = 10_000_000
EVAL_SEED = {"real": 0, "synthetic": 1_000_000}


def prompt_text(instruction, answer=None):
    p = SYSTEM + "\n\n###" + f" Human: {instruction}\n###" + " Assistant:"
    return p if answer is None else p + f" {answer}\n###"


def prompt_ids(instruction):
    return [sp.bos_id()] + sp.encode(prompt_text(instruction))


class Vocab:
    """The token ids the task's conversations use (a few hundred of LLaMA's 32000).

    Training keeps embedding and output rows for these only: the softmax runs over them
    plus one constant-zero logit that stands for every other word, whose output rows stay
    zero in the saved model. So the full model's greedy choice is the same as in
    training, and the 32000-way output layer (40% of a step's time) is not computed."""

    def __init__(self):
        texts = [SYSTEM + "\n\n###", " Assistant:", "\n###"]
        for shape in shapes.SHAPES:
            texts.append(f" Human: {shapes.vqa_instruction(f'What colour is the {shape}?')}\n###")
            texts.append(f" Human: {shapes.vqa_instruction(f'How many {shapes.PLURAL[shape]} are there?')}\n###")
            for colour in shapes.COLOURS:
                texts.append(f" Human: {shapes.ground_instruction(f'the {colour} {shape}')}\n###")
                texts.append(f" {colour}\n###")
        texts.append(f" Human: {shapes.CAPTION_INSTRUCTION}\n###")
        texts += [f" {n}\n###" for n in range(4)]
        texts += [" " + shapes.box_text([i / 100, (i + 1) / 100, (i + 2) / 100, (i + 3) / 100]) + "\n###" for i in range(0, 98)]
        kinds = [{"shape": s, "colour": c, "box": (i, 0, 0, 0)} for i, (s, c) in enumerate((s, c) for s in shapes.SHAPES for c in shapes.COLOURS)]
        for a in kinds:
            for b in kinds:
                for domain in ("real", "synthetic"):
                    texts.append(" " + shapes.caption([a, b, {**a, "box": (99, 0, 0, 0)}], domain) + "\n###")
        ids = sorted({i for t in texts for i in sp.encode(t)} | {sp.bos_id()})
        self.ids = torch.tensor(ids)
        self.index = torch.full((sp.get_piece_size(),), -1, dtype=torch.long)
        self.index[self.ids] = torch.arange(len(ids))

    def compact_ids(self, ids):
        c = self.index[torch.as_tensor(ids)]
        if (c < 0).any():
            missing = [sp.id_to_piece(int(i)) for i in torch.as_tensor(ids)[c < 0]]
            raise ValueError(f"tokens outside the training vocabulary: {missing}")
        return c

    def compact(self, w):
        """Full-vocabulary weights → the trained set (rows of the task's tokens)."""
        return {**w, "tok_embeddings.weight": w["tok_embeddings.weight"][self.ids].clone(),
                "output.weight": w["output.weight"][self.ids].clone()}

    def expand(self, w, template):
        """Trained set → full-vocabulary weights: the task's rows written into the
        template's tables (other input rows as initialised, other output rows zero)."""
        out = {k: v.detach().clone() for k, v in w.items()}
        for name in ("tok_embeddings.weight", "output.weight"):
            full = template[name].detach().clone()
            full[self.ids] = w[name].detach()
            out[name] = full
        return out


def photo_jpeg(img, quality):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def conversation(seed, domain, rng, max_turns, max_objects=3):
    """A multi-turn conversation about one image (as SPHINX's training data has): up to
    `max_turns` of its questions in random order. Returns the image tensor, the ids, the
    [start, end) spans of the answers (each with its "\n###"), the image's dense targets
    and the attention hints of its turns."""
    img, items, objects = shapes.all_items(seed, domain, max_objects)
    dense = dense_supervision.targets(objects, *img.size)
    if domain == "real":
        img = photo_jpeg(img, int(rng.integers(80, 96)))
    # Every box question of the image, then others, up to max_turns, in random order.
    ground = [it for it in items if it[0] == "ground"]
    others = [items[i] for i in rng.permutation(len(items)) if items[i][0] != "ground"]
    turns = (ground + others)[:max_turns]
    turns = [turns[i] for i in rng.permutation(len(turns))]
    text, spans, hints, full = SYSTEM + "\n\n###", [], [], None
    ids_of = lambda t: [sp.bos_id()] + sp.encode(t)  # noqa: E731
    for _, instruction, answer, _ in turns:
        text += f" Human: {instruction}"
        named = attention_hints.turn_hints(instruction, dense)
        words = attention_hints.hint(text, named[0], ids_of) if named else None
        text += "\n###" + " Assistant:"
        start = len(ids_of(text))
        text += f" {answer}\n###"
        spans.append((start, len(ids_of(text))))
        if named:
            hints.append((list(range(start, spans[-1][1] - 3)), words, named[1]))
    full = [sp.bos_id()] + sp.encode(text)
    for start, end in spans:
        assert full[end - 3:end] == STOPS[1], text
    return image_tensor(img), full, spans, dense, hints


def batch(step, size, domains, rng, max_turns, max_objects):
    xs, seqs, dense, hints = [], [], [], []
    for b in range(size):
        domain = domains[int(rng.integers(len(domains)))]
        x, full, spans, d, hs = conversation(TRAIN_SEED + step * size + b, domain, rng, max_turns, max_objects)
        xs.append(x)
        seqs.append((spans, full))
        dense.append(d)
        hints.append(hs)
    return torch.stack(xs), seqs, dense, hints


def loss_of(enc, w, x, seqs, vocab, heads=None, dense=None, hints=None):
    """(next-token cross-entropy over the answers, the training-only losses: dense
    supervision of the image tokens and attention hints, or 0 without `heads`); `w`
    holds the compact tables of `vocab`."""
    block = encode(enc, w, x)                      # [B, T, D]
    aux = dense_supervision.loss(heads, block, dense) if heads else torch.zeros(())
    T = block.shape[1]
    L = max(len(f) for _, f in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    for i, (_, f) in enumerate(seqs):
        ids[i, :len(f)] = vocab.compact_ids(f)
    emb = w["tok_embeddings.weight"][ids]
    h = torch.cat([emb[:, :1], block, emb[:, 1:]], dim=1)
    if heads:
        hidden, kept = llm_hidden(w, h, keep_qk=(attention_hints.WORDS_LAYER, attention_hints.PATCHES_LAYER))
        aux = aux + attention_hints.loss(kept, hints, T)
    else:
        hidden = llm_hidden(w, h)
    # Answer token j (j ≥ prompt length) is predicted at the position of token j − 1,
    # which sits after the image block: (j − 1) + T.
    rows, pos, tgt = [], [], []
    for i, (spans, f) in enumerate(seqs):
        for start, end in spans:
            for j in range(start, end):
                rows.append(i)
                pos.append(j - 1 + T)
                tgt.append(f[j])
    logits = hidden[rows, pos] @ w["output.weight"].T                    # [N, V]
    others = torch.zeros(logits.shape[0], 1)                             # every other word
    return F.cross_entropy(torch.cat([logits, others], 1), vocab.compact_ids(tgt)), aux


def train(enc, w, domains, steps, lr, batch_size, train_encoders, seed, label, max_turns, vocab, single_steps=0,
          probe=None, heads=None):
    """AdamW with warm-up and a cosine decay. The first `single_steps` steps show one
    object per image (a curriculum: reading out where an object is comes before picking
    the named one among several). With `heads`, the image tokens are also densely
    supervised (dense_supervision.py). `probe(w, step)` is called every 500 steps."""
    params = list(w.values()) + (list(heads.values()) if heads else [])
    if train_encoders:
        params += [p for m in enc[:5] for p in m.parameters()] + [enc[5]]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(seed)
    warm = min(200, steps // 10)
    t0, avg = time.time(), None
    for step in range(steps):
        f = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * max(f, 0.05)
        x, seqs, dense, hints = batch(seed * 1_000_000 + step, batch_size, domains, rng, max_turns, 1 if step < single_steps else 3)
        lm, aux = loss_of(enc, w, x, seqs, vocab, heads, dense, hints)
        loss = lm + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        now = torch.tensor([lm.item(), aux.item()])
        avg = now if avg is None else 0.98 * avg + 0.02 * now
        if step % 50 == 0 or step == steps - 1:
            print(f"[{label}] step {step}/{steps} loss {avg[0]:.3f} dense {avg[1]:.3f} ({time.time() - t0:.0f} s)", flush=True)
        if probe and step > 0 and step % 500 == 0:
            probe(w, step)
    for p in params:
        p.requires_grad_(False)
    return w


def round_bf16_(tensors):
    with torch.no_grad():
        for t in tensors:
            t.copy_(t.to(torch.bfloat16).float())


# ---- evaluation ------------------------------------------------------------------------

def greedy(block, w, ids, max_new=48):
    """llama_ens.py forward_inference + MetaModel.generate, greedy, with the runtime's stops.
    block: the image block [1, T, D] from `encode`."""
    with torch.no_grad():
        model = Transformer(ARGS, w)
        emb = w["tok_embeddings.weight"][torch.tensor([ids])]
        h = torch.cat([emb[:, :1], block, emb[:, 1:]], dim=1)
        logits, pos, out = model.forward_embeds(h, 0)[0], h.shape[1], []
        for _ in range(max_new):
            out.append(int(logits.argmax()))
            stop = next((s for s in STOPS if out[-len(s):] == s), None)
            if stop:
                return sp.decode(out[:-len(stop)])
            logits = model.forward_inference(torch.tensor([[out[-1]]]), pos)[0]
            pos += 1
        return sp.decode(out)


BOX = re.compile(r"\[([\d.]+),\s*([\d.]+),\s*([\d.]+),\s*([\d.]+)\]")


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score(kind, answer, truth, extra):
    if kind == "vqa":
        return float(answer.strip().lower() == truth.lower())
    if kind == "ground":
        m = BOX.search(answer)
        return float(m is not None and iou([float(v) for v in m.groups()], extra["box"]) >= 0.5)
    return float(answer.strip() == truth)


def eval_set(n):
    """Held-out images (as the files the tests read) and their questions, per domain."""
    out = {}
    for domain in ("real", "synthetic"):
        rows = []
        for i in range(n):
            img, items = shapes.items(EVAL_SEED[domain] + i, domain)
            if domain == "real":
                # JPEG artefacts, then stored losslessly, so the parity test is about the
                # model. (The runtime's JPEG decoder, jpeg/, now equals Pillow's bit for
                # bit; tests/fixtures/gen/make_micro_jpegs.py re-creates these JPEG files
                # and micro_eval answers from them too.)
                img = photo_jpeg(img, 90)
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
            data = buf.getvalue()
            decoded = Image.open(io.BytesIO(data)).convert("RGB")
            rows.append((f"{domain}/{i:04d}.png", data, image_tensor(decoded), items))
        out[domain] = rows
    return out


def evaluate(enc, w, evals, captions=20, keep=False):
    table, answers = {}, []
    for domain, rows in evals.items():
        acc = {"vqa": [], "ground": [], "caption": []}
        for i, (file, _, x, items) in enumerate(rows):
            with torch.no_grad():
                block = encode(enc, w, x[None])
            for kind, instruction, truth, extra in items:
                if kind == "caption" and i >= captions:
                    continue
                a = greedy(block, w, prompt_ids(instruction))
                acc[kind].append(score(kind, a, truth, extra))
                if keep:
                    answers.append({"image": file, "domain": domain, "kind": kind, "instruction": instruction,
                                    "query": extra.get("expression") or (instruction.split("\n")[0] if kind == "vqa" else None),
                                    "truth": truth, "box": extra.get("box"), "torch_answer": a})
        table[domain] = {k: sum(v) / len(v) for k, v in acc.items() if v}
    return table, answers


def load_llm(path):
    """LLM + fusion weights of a checkpoint (.pth from here or safetensors from `sphinx mix`)."""
    if path.endswith(".safetensors"):
        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {k[5:]: v.float() for k, v in sd.items()
            if not any(k.startswith("llma." + p) for p in ("clip.", "openclip_convnext_xxl.", "dinov2_vitg14.", "qformer."))}


EXAMPLE_SEED = 5_000_000


def write_example(model_dir):
    """The bundled example (README's command, the demo's first image): a held-out
    photo-like scene with three shapes, one of each, a red circle among them."""
    seed = EXAMPLE_SEED
    while True:
        img, objects = shapes.scene(seed, "real")
        if len({o["shape"] for o in objects}) == 3 and any(o["shape"] == "circle" and o["colour"] == "red" for o in objects):
            break
        seed += 1
    img.save(os.path.join(model_dir, "example.png"))
    w, h = img.size
    truth = [{**o, "box": list(o["box"]), "normalized": shapes.padded_box(o["box"], w, h)} for o in objects]
    with open(os.path.join(model_dir, "example.json"), "w") as f:
        json.dump({"seed": seed, "domain": "real", "size": [w, h], "objects": truth}, f, indent=1)
    return seed, objects


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-steps", type=int, default=3600, help="the base: both domains, every weight trained")
    ap.add_argument("--single-steps", type=int, default=400, help="the base's first steps, on one object per image")
    ap.add_argument("--lr", type=float, default=1e-3, help="the base's peak learning rate (fine-tunes: 0.3×)")
    ap.add_argument("--from-base", help="skip the base: fine-tune, mix and score this saved base (a --work/base directory)")
    ap.add_argument("--tune-steps", type=int, default=300, help="each domain's fine-tune, encoders frozen")
    ap.add_argument("--max-turns", type=int, default=5, help="questions per training conversation")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-images", type=int, default=200)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "sphinx-micro"))
    ap.add_argument("--sphinx", default=os.path.join(ROOT, "target", "release", "sphinx"), help="the sphinx binary (for `sphinx mix`)")
    ap.add_argument("--other-beta", type=float, default=0.7)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    t_start = time.time()
    os.makedirs(args.work, exist_ok=True)

    vocab = Vocab()
    probe_set = eval_set(30)

    def probe(w, step):
        table, _ = evaluate(enc, vocab.expand(w, template), probe_set, captions=0)
        print(f"    probe at step {step} (30 held-out images per domain): {json.dumps(table)}", flush=True)

    if args.from_base:
        sd = torch.load(os.path.join(args.from_base, "consolidated.00-of-01.model.pth"), map_location="cpu", weights_only=True)["model"]
        enc, base_w = load_encoders(sd), load_llm(os.path.join(args.from_base, "consolidated.00-of-01.model.pth"))
        template = {**base_w, "output.weight": torch.zeros_like(base_w["output.weight"])}
    else:
        enc = build_encoders(seed=1)
        template = init_llm_and_glue(seed=2)
        template["output.weight"] = torch.zeros_like(template["output.weight"])
        w = vocab.compact(init_llm_and_glue(seed=2))
        heads = dense_supervision.init_heads(ARGS.dim, seed=6)
        train(enc, w, ["real", "synthetic"], args.base_steps, args.lr, args.batch, True, 3, "base", args.max_turns, vocab,
              args.single_steps, probe, heads)
        round_bf16_([p for m in enc[:5] for p in m.parameters()] + [enc[5]] + list(w.values()))
        for m in enc[:5]:
            m.eval()
        base_w = vocab.expand(w, template)
        save(enc, base_w, os.path.join(args.work, "base"))
    t_base = time.time() - t_start
    for domain, seed in (("real", 4), ("synthetic", 5)):
        tuned = train(enc, vocab.compact(base_w), [domain], args.tune_steps, args.lr * 0.3, args.batch, False, seed, domain,
                      args.max_turns, vocab, probe=probe)
        round_bf16_(tuned.values())
        save(enc, vocab.expand(tuned, template), os.path.join(args.work, domain))
    t_train = time.time() - t_start
    for beta in (0.5, args.other_beta):
        out = os.path.join(args.work, f"mixed-{beta}")
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([args.sphinx, "mix", "--real", os.path.join(args.work, "real"), "--synthetic",
                        os.path.join(args.work, "synthetic"), "--beta", str(beta), "-o", out], check=True)

    evals = eval_set(args.eval_images)
    results = {}
    models = {"base": "base/consolidated.00-of-01.model.pth", "real-tuned": "real/consolidated.00-of-01.model.pth",
              "synthetic-tuned": "synthetic/consolidated.00-of-01.model.pth", "mixed β=0.5": "mixed-0.5/model.safetensors",
              f"mixed β={args.other_beta}": f"mixed-{args.other_beta}/model.safetensors"}
    for name, rel in models.items():
        shipped = name == "mixed β=0.5"
        results[name], answers = evaluate(enc, load_llm(os.path.join(args.work, rel)), evals, keep=shipped)
        print(name, json.dumps(results[name]), flush=True)
        if shipped:
            shipped_answers = answers

    # Ship the β = 0.5 mix and the held-out set the runtime's tests score.
    model_dir = os.path.join(ROOT, "models", "sphinx-micro")
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(os.path.join(args.work, "mixed-0.5"), model_dir)
    write_example(model_dir)
    fix = os.path.join(ROOT, "tests", "fixtures", "micro-eval")
    shutil.rmtree(fix, ignore_errors=True)
    for domain, rows in evals.items():
        os.makedirs(os.path.join(fix, domain))
        for file, data, _, _ in rows:
            with open(os.path.join(fix, file), "wb") as f:
                f.write(data)
    with open(os.path.join(fix, "items.json"), "w") as f:
        json.dump({"model": "models/sphinx-micro", "items": shipped_answers}, f, indent=1)
    summary = {"results": results, "train_seconds": t_train, "base_seconds": t_base, "total_seconds": time.time() - t_start,
               "args": vars(args), "torch": torch.__version__}
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
