"""Dense supervision of the image tokens during the base's training (training only: the
heads are dropped when the model is saved, so the shipped model is plain SPHINX).

Trained from scratch on one hour of CPU, the encoders and the LLM did not discover in
time where objects are: grounding stayed near 15–20% while answers had the right form.
So, as detectors' deep supervision does, linear heads on the fused tokens that the LLM
reads (the output of `visual_proj`, docs/spec.md §3.5) ask of every patch token whether it lies
in an object's box, that object's colour, shape and box, and of the pooled token how
many of each shape and which colours the image holds. Grounding then comes down to
attending to the patches of the named colour and copying out their box.
"""
import torch
import torch.nn.functional as F

import shapes

GRID = 16                    # CLIP / DINOv2 patches per side at 224 px (patch 14)
PATCHES = slice(10, 10 + GRID * GRID)   # image block: start_img, 8 queries, pooled, 256 patches, end_img
POOLED = 9
COLOURS = list(shapes.COLOURS)
N_PATCH_OUT = 1 + len(COLOURS) + len(shapes.SHAPES) + 4
N_POOLED_OUT = len(shapes.SHAPES) * len(shapes.NUMBERS) + len(COLOURS)


def targets(objects, w, h):
    """Per-patch and per-image targets of one scene (boxes on the padded square)."""
    centre = (torch.arange(GRID) + 0.5) / GRID
    cy, cx = torch.meshgrid(centre, centre, indexing="ij")
    cx, cy = cx.reshape(-1), cy.reshape(-1)
    colour = torch.full((GRID * GRID,), -1, dtype=torch.long)
    shape = torch.full((GRID * GRID,), -1, dtype=torch.long)
    box = torch.zeros(GRID * GRID, 4)
    for o in objects:
        b = shapes.padded_box(o["box"], w, h)
        inside = (cx >= b[0]) & (cx < b[2]) & (cy >= b[1]) & (cy < b[3])
        colour[inside] = COLOURS.index(o["colour"])
        shape[inside] = shapes.SHAPES.index(o["shape"])
        box[inside] = torch.tensor(b)
    counts = torch.tensor([sum(o["shape"] == s for o in objects) for s in shapes.SHAPES])
    present = torch.tensor([float(any(o["colour"] == c for o in objects)) for c in COLOURS])
    return {"colour": colour, "shape": shape, "box": box, "counts": counts, "present": present}


def init_heads(dim, seed):
    g = torch.Generator().manual_seed(seed)
    return {"patch": torch.randn(N_PATCH_OUT, dim, generator=g) / dim ** 0.5, "patch_b": torch.zeros(N_PATCH_OUT),
            "pooled": torch.randn(N_POOLED_OUT, dim, generator=g) / dim ** 0.5, "pooled_b": torch.zeros(N_POOLED_OUT)}


def loss(heads, block, batch_targets):
    """block: the image block [B, 267, D] the LLM reads; batch_targets: `targets` per image."""
    t = {k: torch.stack([bt[k] for bt in batch_targets]) for k in batch_targets[0]}
    p = block[:, PATCHES] @ heads["patch"].T + heads["patch_b"]          # [B, 256, N_PATCH_OUT]
    n_col, n_shape = len(COLOURS), len(shapes.SHAPES)
    inside = t["colour"] >= 0
    objectness = F.binary_cross_entropy_with_logits(p[..., 0], inside.float())
    colour = F.cross_entropy(p[..., 1:1 + n_col][inside], t["colour"][inside])
    shape = F.cross_entropy(p[..., 1 + n_col:1 + n_col + n_shape][inside], t["shape"][inside])
    box = F.l1_loss(p[..., -4:][inside], t["box"][inside])
    q = block[:, POOLED] @ heads["pooled"].T + heads["pooled_b"]         # [B, N_POOLED_OUT]
    counts = F.cross_entropy(q[:, :n_shape * len(shapes.NUMBERS)].reshape(-1, len(shapes.NUMBERS)), t["counts"].reshape(-1))
    present = F.binary_cross_entropy_with_logits(q[:, -n_col:], t["present"])
    return objectness + colour + shape + 10 * box + counts + present
