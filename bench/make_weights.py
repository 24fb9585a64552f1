"""Writes one set of seeded random LLaMA weights in every format the benchmark's systems read.

    python bench/make_weights.py --shape tiny --out /tmp/sphinx-bench/tiny
    python bench/make_weights.py --shape llama2-7b --out DIR --formats runtime-bf16,gguf-q4_0

The weights are drawn once, tensor by tensor (normal(0, 0.02) rounded to bf16, norms 1), so
every format holds the same numbers up to its own storage type: bf16, f16 and f32 copies are
exact copies (f16 only rounds the rare values under 2^-14), q8_0 / q4_0 are those numbers
quantized. Each output file is streamed: its header is written first from the known shapes,
then each tensor as it is drawn, so host memory stays at about one tensor.

Layouts (all computing the same function):
  runtime-{bf16,f16,f32}  DIR/runtime{,-f16,-f32}/: LLaMA2-Accessory keys (`llma.layers.0.attention.wq.weight`, ...)
                          in one model.safetensors, config.json / meta.json / tokenizer.model as
                          tests/fixtures/gen/make_fixtures.py writes them. wq / wk in Meta's layout:
                          rotary on interleaved pairs (x[2i], x[2i+1]).
  hf                      DIR/hf/: transformers LlamaForCausalLM, model.safetensors in bf16. q_proj / k_proj
                          permuted per head so rotate-half rotary computes what interleaved rotary does
                          on the Meta layout (the permutation of transformers' LLaMA conversion script).
  gguf-{f32,f16,q8_0,q4_0} DIR/gguf/model-*.gguf: llama architecture, SentencePiece vocab from
                          tokenizer.model. llama.cpp's llama rotary is on interleaved pairs (ggml's
                          "normal" rope mode), so attn_q / attn_k keep Meta's layout, unpermuted.
                          Norms stay f32; in q8_0 / q4_0 every 2-D weight is quantized ("pure", no
                          mixed types) except one whose rows are not whole 32-blocks, kept f16.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOKENIZER_CANDIDATES = [
    os.path.join(REPO, "shared", "data", "llama2-tokenizer.model"),
    "/work/shared/data/llama2-tokenizer.model",
    os.path.join(REPO, "tests", "fixtures", "tokenizer", "llama2-tokenizer.model"),
]

VOCAB = 32000
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
MAX_SEQ_LEN = 4096
STD = 0.02

# multiple_of is what makes LLaMA's FFN rule (int(2*4*dim/3) rounded up) give the FFN width.
SHAPES = {
    "tiny": dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn=688, multiple_of=16),
    "tinyllama": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn=5632, multiple_of=256),
    "llama2-7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn=11008, multiple_of=256),
}

FORMATS = ["runtime-bf16", "runtime-f16", "runtime-f32", "hf",
           "gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]
# f32 copies of the 7B shape are 27 GB each: more than this machine's memory, so skipped by default.
DEFAULT_SKIP = {"llama2-7b": {"runtime-f32", "gguf-f32"}}

RUNTIME_DIRS = {"runtime-bf16": "runtime", "runtime-f16": "runtime-f16", "runtime-f32": "runtime-f32"}


def ffn_rule(dim, multiple_of):
    h = int(2 * (4 * dim) / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def tensor_plan(s):
    """(Meta name, shape) in the order the tensors are drawn."""
    d, hd = s["dim"], s["dim"] // s["n_heads"]
    q, kv, f = s["n_heads"] * hd, s["n_kv_heads"] * hd, s["ffn"]
    plan = [("tok_embeddings.weight", (VOCAB, d))]
    for i in range(s["n_layers"]):
        p = f"layers.{i}."
        plan += [(p + "attention.wq.weight", (q, d)), (p + "attention.wk.weight", (kv, d)),
                 (p + "attention.wv.weight", (kv, d)), (p + "attention.wo.weight", (d, q)),
                 (p + "feed_forward.w1.weight", (f, d)), (p + "feed_forward.w2.weight", (d, f)),
                 (p + "feed_forward.w3.weight", (f, d)),
                 (p + "attention_norm.weight", (d,)), (p + "ffn_norm.weight", (d,))]
    plan += [("norm.weight", (d,)), ("output.weight", (VOCAB, d))]
    return plan


def draw(name, shape, index, seed):
    """The master tensor (bf16): its own generator, so any tensor can be redrawn alone."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return (torch.randn(shape, generator=g) * STD).to(torch.bfloat16)


# --- names in the other layouts --------------------------------------------------------------
HF_LAYER = {"attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
            "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
            "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
            "feed_forward.w3.weight": "mlp.up_proj.weight", "attention_norm.weight": "input_layernorm.weight",
            "ffn_norm.weight": "post_attention_layernorm.weight"}
GGUF_LAYER = {"attention.wq.weight": "attn_q.weight", "attention.wk.weight": "attn_k.weight",
              "attention.wv.weight": "attn_v.weight", "attention.wo.weight": "attn_output.weight",
              "feed_forward.w1.weight": "ffn_gate.weight", "feed_forward.w2.weight": "ffn_down.weight",
              "feed_forward.w3.weight": "ffn_up.weight", "attention_norm.weight": "attn_norm.weight",
              "ffn_norm.weight": "ffn_norm.weight"}
TOP = {"tok_embeddings.weight": ("model.embed_tokens.weight", "token_embd.weight"),
       "norm.weight": ("model.norm.weight", "output_norm.weight"),
       "output.weight": ("lm_head.weight", "output.weight")}


def split_layer(name):
    if not name.startswith("layers."):
        return None, name
    _, i, rest = name.split(".", 2)
    return int(i), rest


def hf_name(name):
    i, rest = split_layer(name)
    return TOP[name][0] if i is None else f"model.layers.{i}.{HF_LAYER[rest]}"


def gguf_name(name):
    i, rest = split_layer(name)
    return TOP[name][1] if i is None else f"blk.{i}.{GGUF_LAYER[rest]}"


def rotate_half_layout(w, n_heads):
    """Meta (interleaved pairs) -> Hugging Face (rotate-half) rows of a q/k projection.

    Within each head, output row j*(hd/2) + i takes input row 2*i + j (j in {0, 1}): the
    pair members that rotate together move from adjacent rows to rows hd/2 apart."""
    out_f, in_f = w.shape
    hd = out_f // n_heads
    return w.reshape(n_heads, hd // 2, 2, in_f).transpose(1, 2).reshape(out_f, in_f)


# --- safetensors, streamed --------------------------------------------------------------------
ST_DTYPES = {torch.bfloat16: ("BF16", 2), torch.float16: ("F16", 2), torch.float32: ("F32", 4)}


class SafetensorsStream:
    """A safetensors file written tensor by tensor: the header (names, dtypes, shapes, byte
    ranges) goes first, computed from the plan; then each tensor's bytes, in plan order."""

    def __init__(self, path, entries, dtype, metadata=None):
        self.path, self.dtype = path, dtype
        name, size = ST_DTYPES[dtype]
        header, off = {}, 0
        if metadata:
            header["__metadata__"] = metadata
        self.order = []
        for n, shape in entries:
            nb = int(np.prod(shape)) * size
            header[n] = {"dtype": name, "shape": list(shape), "data_offsets": [off, off + nb]}
            self.order.append((n, nb))
            off += nb
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.f = open(path + ".partial", "wb")
        self.f.write(struct.pack("<Q", len(raw)) + raw)
        self.next = 0
        self.data_bytes = off

    def write(self, name, t):
        n, nb = self.order[self.next]
        assert n == name, (n, name)
        t = t.to(self.dtype).contiguous()
        b = (t.view(torch.int16) if self.dtype == torch.bfloat16 else t).numpy().tobytes()
        assert len(b) == nb, (name, len(b), nb)
        self.f.write(b)
        self.next += 1

    def close(self):
        assert self.next == len(self.order), f"{self.path}: {self.next} of {len(self.order)} tensors written"
        self.f.close()
        os.replace(self.path + ".partial", self.path)


# --- GGUF, streamed ---------------------------------------------------------------------------
def sentencepiece_vocab(tokenizer_path):
    import sentencepiece as spm
    from gguf import TokenType
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    return dict(tokens=tokens, scores=scores, types=types, bos=sp.bos_id(), eos=sp.eos_id(), unk=sp.unk_id())


class GgufStream:
    def __init__(self, path, kind, s, plan, vocab, shape_name):
        import gguf
        from gguf import GGMLQuantizationType as Q, LlamaFileType as FT
        self.gguf, self.path, self.kind = gguf, path, kind
        self.qtype = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[kind]
        w = gguf.GGUFWriter(path + ".partial", "llama")
        w.add_name(f"sphinx-bench random {shape_name}")
        w.add_context_length(MAX_SEQ_LEN)
        w.add_embedding_length(s["dim"])
        w.add_block_count(s["n_layers"])
        w.add_feed_forward_length(s["ffn"])
        w.add_head_count(s["n_heads"])
        w.add_head_count_kv(s["n_kv_heads"])
        w.add_rope_dimension_count(s["dim"] // s["n_heads"])
        w.add_rope_freq_base(ROPE_THETA)
        w.add_layer_norm_rms_eps(NORM_EPS)
        w.add_vocab_size(VOCAB)
        w.add_file_type({"f32": FT.ALL_F32, "f16": FT.MOSTLY_F16, "q8_0": FT.MOSTLY_Q8_0, "q4_0": FT.MOSTLY_Q4_0}[kind])
        if kind in ("q8_0", "q4_0"):
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab["tokens"])
        w.add_token_scores(vocab["scores"])
        w.add_token_types(vocab["types"])
        w.add_bos_token_id(vocab["bos"])
        w.add_eos_token_id(vocab["eos"])
        w.add_unk_token_id(vocab["unk"])
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        self.types = {}
        self.data_bytes = 0
        for name, shape in plan:
            t = self.type_for(shape)
            self.types[name] = t
            if t == Q.F32:
                nb = int(np.prod(shape)) * 4
                w.add_tensor_info(gguf_name(name), shape, np.dtype(np.float32), nb)
            elif t == Q.F16:
                nb = int(np.prod(shape)) * 2
                w.add_tensor_info(gguf_name(name), shape, np.dtype(np.float16), nb)
            else:
                bshape = gguf.quant_shape_to_byte_shape(shape, t)
                nb = int(np.prod(bshape))
                w.add_tensor_info(gguf_name(name), bshape, np.dtype(np.uint8), nb, raw_dtype=t)
            self.data_bytes += nb
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        self.w = w

    def type_for(self, shape):
        Q = self.gguf.GGMLQuantizationType
        if len(shape) == 1 or self.qtype == Q.F32:
            return Q.F32
        if self.qtype == Q.F16:
            return Q.F16
        block = self.gguf.GGML_QUANT_SIZES[self.qtype][0]
        return self.qtype if shape[-1] % block == 0 else Q.F16

    def write(self, name, t):
        Q = self.gguf.GGMLQuantizationType
        qt = self.types[name]
        a = t.float().numpy()
        if qt == Q.F32:
            out = a
        elif qt == Q.F16:
            out = a.astype(np.float16)
        else:
            # In slices of rows, so the quantizer's temporaries stay small for the 7B tensors.
            step = max(1, (16 << 20) // a.shape[-1])
            out = np.concatenate([self.gguf.quants.quantize(a[i:i + step], qt) for i in range(0, a.shape[0], step)])
        self.w.write_tensor_data(out)

    def close(self):
        self.w.close()
        os.replace(self.path + ".partial", self.path)

    def fallbacks(self):
        return sorted({gguf_name(n).split(".", 2)[-1] for n, t in self.types.items()
                       if t != self.qtype and t not in (self.gguf.GGMLQuantizationType.F32,)})


# --- model directories ------------------------------------------------------------------------
def runtime_config(s):
    """config.json as tests/fixtures/gen/make_fixtures.py writes it (dataclasses.asdict(ModelArgs))."""
    return {"dim": s["dim"], "n_layers": s["n_layers"], "n_heads": s["n_heads"], "n_kv_heads": s["n_kv_heads"],
            "vocab_size": VOCAB, "norm_eps": NORM_EPS, "rope_theta": ROPE_THETA, "max_batch_size": 32,
            "max_seq_len": MAX_SEQ_LEN, "rope_scaling": None, "multiple_of": s["multiple_of"],
            "ffn_dim_multiplier": None}


def hf_config(s):
    from transformers import LlamaConfig
    c = LlamaConfig(hidden_size=s["dim"], intermediate_size=s["ffn"], num_hidden_layers=s["n_layers"],
                    num_attention_heads=s["n_heads"], num_key_value_heads=s["n_kv_heads"],
                    head_dim=s["dim"] // s["n_heads"], vocab_size=VOCAB, rms_norm_eps=NORM_EPS,
                    rope_theta=ROPE_THETA, max_position_embeddings=MAX_SEQ_LEN, tie_word_embeddings=False,
                    bos_token_id=1, eos_token_id=2, hidden_act="silu")
    c.architectures = ["LlamaForCausalLM"]
    d = c.to_dict()
    d["dtype"] = "bfloat16"
    d["torch_dtype"] = "bfloat16"
    return d


def find_tokenizer(arg):
    for p in ([arg] if arg else []) + TOKENIZER_CANDIDATES:
        if p and os.path.isfile(p):
            return p
    raise SystemExit("no tokenizer.model found (pass --tokenizer PATH to the LLaMA-2 SentencePiece model)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", default="default",
                    help="comma list of " + ",".join(FORMATS) + "; 'all'; or 'default' (all but the 7B f32 files)")
    ap.add_argument("--tokenizer", default=None, help="LLaMA-2 tokenizer.model (default: shared/data/llama2-tokenizer.model)")
    ap.add_argument("--force", action="store_true", help="rewrite formats that are already there")
    a = ap.parse_args()

    s = dict(SHAPES[a.shape])
    assert ffn_rule(s["dim"], s["multiple_of"]) == s["ffn"], "multiple_of does not give the FFN width"
    if a.formats == "default":
        formats = [f for f in FORMATS if f not in DEFAULT_SKIP.get(a.shape, set())]
    elif a.formats == "all":
        formats = list(FORMATS)
    else:
        formats = [f.strip() for f in a.formats.split(",") if f.strip()]
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise SystemExit(f"unknown formats {bad}; choose from {FORMATS}")
    tok = find_tokenizer(a.tokenizer)
    os.makedirs(a.out, exist_ok=True)
    plan = tensor_plan(s)
    n_params = sum(int(np.prod(sh)) for _, sh in plan)
    ident = {"shape": a.shape, "seed": a.seed, "std": STD, "params": n_params, **s, "vocab_size": VOCAB,
             "norm_eps": NORM_EPS, "rope_theta": ROPE_THETA}

    man_path = os.path.join(a.out, "manifest.json")
    manifest = {}
    if os.path.exists(man_path):
        with open(man_path) as f:
            manifest = json.load(f)
        if manifest.get("model") != ident:
            print(f"{a.out} holds other weights ({manifest.get('model')}); rewriting every format")
            manifest = {}
    manifest["model"] = ident
    manifest.setdefault("formats", {})
    todo = [f for f in formats if a.force or f not in manifest["formats"]]
    if not todo:
        print(f"{a.out}: {', '.join(formats)} already written")
        return

    print(f"shape {a.shape}: {n_params / 1e6:.1f} M parameters; writing {', '.join(todo)} to {a.out}")
    writers = {}
    for fmt in todo:
        if fmt.startswith("runtime-"):
            d = os.path.join(a.out, RUNTIME_DIRS[fmt])
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(runtime_config(s), f, indent=2)
            with open(os.path.join(d, "meta.json"), "w") as f:
                json.dump({"llama_type": "llama"}, f)
            shutil.copyfile(tok, os.path.join(d, "tokenizer.model"))
            dt = {"runtime-bf16": torch.bfloat16, "runtime-f16": torch.float16, "runtime-f32": torch.float32}[fmt]
            writers[fmt] = SafetensorsStream(os.path.join(d, "model.safetensors"),
                                             [("llma." + n, sh) for n, sh in plan], dt)
        elif fmt == "hf":
            d = os.path.join(a.out, "hf")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(hf_config(s), f, indent=2)
            writers[fmt] = SafetensorsStream(os.path.join(d, "model.safetensors"),
                                             [(hf_name(n), sh) for n, sh in plan], torch.bfloat16,
                                             metadata={"format": "pt"})
        else:
            d = os.path.join(a.out, "gguf")
            os.makedirs(d, exist_ok=True)
            if "vocab" not in locals():
                vocab = sentencepiece_vocab(tok)
            kind = fmt.split("-", 1)[1]
            writers[fmt] = GgufStream(os.path.join(d, f"model-{kind}.gguf"), kind, s, plan, vocab, a.shape)

    t0 = time.time()
    timing = {f: 0.0 for f in writers}
    for idx, (name, shape) in enumerate(plan):
        w = draw(name, shape, idx, a.seed)
        for fmt, wr in writers.items():
            t1 = time.time()
            if fmt == "hf":
                t = w
                if name.endswith("attention.wq.weight"):
                    t = rotate_half_layout(w, s["n_heads"])
                elif name.endswith("attention.wk.weight"):
                    t = rotate_half_layout(w, s["n_kv_heads"])
                wr.write(hf_name(name), t)
            elif fmt.startswith("runtime-"):
                wr.write("llma." + name, w)
            else:
                wr.write(name, w)
            timing[fmt] += time.time() - t1
        if idx % 20 == 0 or idx == len(plan) - 1:
            print(f"  {idx + 1}/{len(plan)} tensors, {time.time() - t0:.0f} s", flush=True)

    for fmt, wr in writers.items():
        wr.close()
        info = {"path": os.path.relpath(wr.path if fmt.startswith("gguf") else os.path.dirname(wr.path), a.out),
                "weights_bytes": wr.data_bytes, "file_bytes": os.path.getsize(wr.path),
                "write_s": round(timing[fmt], 2)}
        if fmt.startswith("gguf"):
            info["f16_fallback_tensors"] = wr.fallbacks()
        manifest["formats"][fmt] = info
        print(f"  {fmt}: {info['path']} ({info['file_bytes'] / 1e6:.1f} MB)")
        with open(man_path, "w") as f:
            json.dump(manifest, f, indent=2)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
