"""SPHINX-Micro: the SPHINX architecture (`llama_ens`, docs/spec.md §1, §3.5: CLIP ViT, ConvNeXt,
DINOv2 and a BLIP-2 Q-Former fused into a LLaMA) at a size a CPU trains in an hour.

The encoders are the upstream libraries' own modules and the LLM is the fixture
generator's transcription of LLaMA2-Accessory's `llama.py` (tests/fixtures/gen), so what
is trained here is exactly what the runtime loads: the checkpoint is written in the
official layout (`consolidated.00-of-01.model.pth`, `llma.`-prefixed keys, bf16).
"""
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures", "gen"))

import make_vision_fixtures as mvf  # noqa: E402
from llm_reference import ModelArgs, Transformer, apply_rotary_emb, precompute_freqs_cis, rms_norm  # noqa: E402
from make_fixtures import TOKENIZER, config_json  # noqa: E402
from make_image_fixtures import normalise, pad_to_square  # noqa: E402

LLAMA_TYPE = "llama_ens"
IMAGE_SIZE = 224
ARGS = ModelArgs(dim=128, n_layers=4, n_heads=4, multiple_of=32, max_seq_len=512)
VISION = {
    "clip": {"width": 48, "layers": 2, "heads": 2, "mlp": 192, "act": "quick_gelu"},
    "convnext": {"depths": [1, 1, 1, 1], "dims": [16, 24, 32, 48]},
    "dinov2": {"dim": 48, "layers": 2, "heads": 2, "ffn_hidden": 128, "pos_grid": 37},
    "blip2": {"vision_dim": 32, "vision_layers": 1, "vision_heads": 2, "vision_mlp": 64,
              "qformer_dim": 32, "qformer_layers": 2, "qformer_heads": 2, "qformer_mlp": 64, "queries": 8},
}
mvf.VISION = VISION  # the fixture generator's key mapping reads the sizes from here


def sincos_2d(grid, dim):
    """[1 + grid², dim]: a zero class-token row, then each patch's (x, y) in [0, 1) as
    sin/cos at dim/4 frequencies from π to 8π (smooth enough to survive DINOv2's
    resize of its position grid)."""
    n = dim // 4
    freq = math.pi * 8 ** (torch.arange(n) / max(1, n - 1))
    ys, xs = torch.meshgrid(torch.arange(grid) / grid, torch.arange(grid) / grid, indexing="ij")
    x, y = xs.reshape(-1, 1) * freq, ys.reshape(-1, 1) * freq
    pe = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    pe = torch.cat([pe, torch.zeros(pe.shape[0], dim - pe.shape[1])], dim=1)
    return torch.cat([torch.zeros(1, dim), pe])


def build_encoders(seed):
    """The four encoder families at micro size, with their libraries' own initialisation,
    except the ViTs' learned position embeddings, which start as 2D sin/cos (as MAE's
    do): boxes are read from where an object's patches are, and a random start hides
    that behind the patch contents for thousands of steps. The ffn sizes follow the
    fixture generator's (DINOv2: SwiGLU at mlp_ratio 4)."""
    torch.manual_seed(seed)
    enc = mvf.build_encoders(None, VISION, library_init=True)
    clip, _, dino, bvis, _, _ = enc
    with torch.no_grad():
        clip.positional_embedding.copy_(sincos_2d(16, VISION["clip"]["width"]))
        dino.embeddings.position_embeddings.copy_(sincos_2d(VISION["dinov2"]["pos_grid"], VISION["dinov2"]["dim"])[None])
        bvis.embeddings.position_embedding.copy_(sincos_2d(16, VISION["blip2"]["vision_dim"])[None])
    return enc


def init_llm_and_glue(seed):
    """LLaMA weights (N(0, 0.02), unit norms) and the fusion projections, as a dict."""
    g = torch.Generator().manual_seed(seed)
    a, hd = ARGS, ARGS.dim // ARGS.n_heads
    n = lambda *s: 0.02 * torch.randn(*s, generator=g)  # noqa: E731
    w = {"tok_embeddings.weight": n(a.vocab_size, a.dim), "norm.weight": torch.ones(a.dim), "output.weight": n(a.vocab_size, a.dim)}
    F_ = a.ffn_hidden()
    for i in range(a.n_layers):
        p = f"layers.{i}."
        w.update({p + "attention.wq.weight": n(a.n_heads * hd, a.dim), p + "attention.wk.weight": n(a.kv_heads * hd, a.dim),
                  p + "attention.wv.weight": n(a.kv_heads * hd, a.dim), p + "attention.wo.weight": n(a.dim, a.n_heads * hd),
                  p + "feed_forward.w1.weight": n(F_, a.dim), p + "feed_forward.w2.weight": n(a.dim, F_),
                  p + "feed_forward.w3.weight": n(F_, a.dim),
                  p + "attention_norm.weight": torch.ones(a.dim), p + "ffn_norm.weight": torch.ones(a.dim)})
    v = VISION
    ens = v["clip"]["width"] + v["convnext"]["dims"][-1] + v["dinov2"]["dim"]
    q = v["blip2"]["qformer_dim"]
    for name, fan_in in (("visual_proj", ens), ("qformer_proj", q)):
        w.update({name + ".0.weight": torch.randn(a.dim, fan_in, generator=g) / fan_in ** 0.5, name + ".0.bias": torch.zeros(a.dim),
                  name + ".1.weight": torch.ones(a.dim), name + ".1.bias": torch.zeros(a.dim)})
    w["start_img"], w["end_img"] = n(1, 1, a.dim), n(1, 1, a.dim)
    return w


FREQS = precompute_freqs_cis(ARGS.dim // ARGS.n_heads, ARGS.max_seq_len * 2, ARGS.rope_theta)


def llm_hidden(w, h, keep_qk=()):
    """Training forward of llama.py over whole sequences: h [B, S, D] → final-norm hidden
    [B, S, D]. With `keep_qk` (layer indices), also {layer: (q, k)}, each [B, S, H, hd]
    after RoPE, for attention_hints.py."""
    a = ARGS
    B, S, _ = h.shape
    hd = a.dim // a.n_heads
    kept = {}
    for i in range(a.n_layers):
        p = f"layers.{i}."
        x = rms_norm(h, w[p + "attention_norm.weight"], a.norm_eps)
        q = (x @ w[p + "attention.wq.weight"].T).view(B, S, a.n_heads, hd)
        k = (x @ w[p + "attention.wk.weight"].T).view(B, S, a.kv_heads, hd)
        v = (x @ w[p + "attention.wv.weight"].T).view(B, S, a.kv_heads, hd)
        q, k = apply_rotary_emb(q, k, FREQS[:S])
        if i in keep_qk:
            kept[i] = (q, k)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        h = h + o.transpose(1, 2).reshape(B, S, -1) @ w[p + "attention.wo.weight"].T
        x = rms_norm(h, w[p + "ffn_norm.weight"], a.norm_eps)
        h = h + (F.silu(x @ w[p + "feed_forward.w1.weight"].T) * (x @ w[p + "feed_forward.w3.weight"].T)) @ w[p + "feed_forward.w2.weight"].T
    out = rms_norm(h, w["norm.weight"], a.norm_eps)
    return (out, kept) if keep_qk else out


def image_tensor(img):
    """Pillow image → the normalised 224² tensor the official transform makes (docs/spec.md §4.1)."""
    return normalise(pad_to_square(img.convert("RGB")).resize((IMAGE_SIZE, IMAGE_SIZE), 3))  # 3 = BICUBIC


def encode(enc, w, x):
    """x [B, 3, 224, 224] → the image block [B, 1 + 8 + 257 + 1, D] (llama_ens.py encode_image)."""
    b = x.shape[0]
    w = {**w, "start_img": w["start_img"].expand(b, -1, -1), "end_img": w["end_img"].expand(b, -1, -1)}
    return mvf.encode_image(LLAMA_TYPE, enc, w, x)[1]


def save(enc, w, out_dir):
    """The official layout: consolidated.00-of-01.model.pth ({"model": llma.* bf16}), config, meta, tokenizer."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with torch.no_grad():
        sd = {"llma." + k: v.detach().to(torch.bfloat16).clone() for k, v in w.items()}
        encs = list(enc[:5]) + [enc[5].detach()]
        sd.update({"llma." + k: v.detach().to(torch.bfloat16).clone() for k, v in mvf.vision_state(LLAMA_TYPE, encs).items()})
    torch.save({"model": sd}, os.path.join(out_dir, "consolidated.00-of-01.model.pth"))
    cfg = config_json(ARGS)
    cfg["vision"] = VISION
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"llama_type": LLAMA_TYPE}, f)
    shutil.copy(TOKENIZER, os.path.join(out_dir, "tokenizer.model"))


def load_encoders(sd):
    """The encoders of a checkpoint's state dict (`llma.`-prefixed, official key names),
    as the library modules `build_encoders` makes: the inverse of `mvf.vision_state`."""
    enc = build_encoders(0)
    clip, conv, dino, bvis, bqf, _ = enc
    f = {k[5:]: v.float() for k, v in sd.items()}
    strip = lambda prefix: {k[len(prefix):]: v for k, v in f.items() if k.startswith(prefix)}  # noqa: E731
    clip.load_state_dict(strip("clip.visual."))
    conv.load_state_dict(strip("openclip_convnext_xxl."))
    bvis.load_state_dict(strip("qformer.vision_model."))
    bqf.load_state_dict(strip("qformer.qformer."))
    d, dim, layers = strip("dinov2_vitg14."), VISION["dinov2"]["dim"], VISION["dinov2"]["layers"]
    hf = {name: d[repo] for name, repo in mvf.dinov2_key_pairs(layers)}
    for i in range(layers):
        a = f"encoder.layer.{i}.attention.attention."
        for t in ("weight", "bias"):
            for j, n in enumerate(mvf.QKV):
                hf[a + n + "." + t] = d[f"blocks.{i}.attn.qkv.{t}"][j * dim:(j + 1) * dim]
    dino.load_state_dict(hf)
    query = f["qformer.query_tokens"]
    for m in (clip, conv, dino, bvis, bqf):
        m.eval().requires_grad_(False)
    return [clip, conv, dino, bvis, bqf, query]
