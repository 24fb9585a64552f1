"""Looks into a checkpoint during training (not part of the recipe):

    python training/probe.py CKPT [N]    # VQA / grounding / caption on N held-out images per domain
    python training/probe.py CKPT --position
        # how linearly the fused visual tokens encode their patch's (x, y): R² of a ridge
        # probe fitted on 30 images and scored on 10 others
"""
import sys

import torch

import shapes
import train as T
from micro_model import encode, image_tensor, load_encoders


def position_r2(enc, w):
    xs = torch.stack([image_tensor(shapes.scene(9_000_000 + i, "real" if i % 2 else "synthetic")[0]) for i in range(40)])
    with torch.no_grad():
        block = encode(enc, w, xs)                 # [B, 1 + 8 + 257 + 1, D]
    patches = block[:, 10:266, :]                  # after start_img, 8 queries and the pooled token
    b, n, d = patches.shape
    g = torch.arange(n)
    coords = torch.stack([(g % 16).float(), (g // 16).float()], 1) / 16
    x = torch.cat([patches.reshape(-1, d), torch.ones(b * n, 1)], 1)
    y = coords.repeat(b, 1)
    tr, te = slice(0, 30 * n), slice(30 * n, b * n)
    fit = torch.linalg.solve(x[tr].T @ x[tr] + 1e-2 * torch.eye(d + 1), x[tr].T @ y[tr])
    err = x[te] @ fit - y[te]
    return (1 - (err ** 2).sum(0) / ((y[te] - y[te].mean(0)) ** 2).sum(0)).tolist()


def main():
    path = sys.argv[1]
    torch.set_num_threads(1)
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    enc, w = load_encoders(sd), T.load_llm(path)
    if "--position" in sys.argv:
        print("R² of patch (x, y):", position_r2(enc, w))
        return
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    table, _ = T.evaluate(enc, w, T.eval_set(n), captions=5)
    print(table)


if __name__ == "__main__":
    main()
