"""Scores a checkpoint on a few held-out images (a quick look during training)."""
import sys

import torch

import train as T
from micro_model import encode, load_encoders

path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
torch.set_num_threads(1)
sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
enc, w = load_encoders(sd), T.load_llm(path)
evals = {d: [r for r in rows] for d, rows in T.eval_set(n).items()}
table, _ = T.evaluate(enc, w, evals, captions=5)
print(table)
