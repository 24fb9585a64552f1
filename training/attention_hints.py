"""Attention hints during the base's training (training only: they shape where two
attention heads look, and add nothing to the saved model).

Answering "the red circle" with a box takes two hops that a from-scratch 4-layer LLM
finds late: bring the expression's words to the answer, then look at the image patches
that match them. The hints supervise both, at every answer token of a turn that names
an object or a shape: head 0 of layer 0 should attend to the turn's naming words, and
head 0 of layer 1 to the patches of the named object (a patch belongs to an object when
its centre lies in the object's box, as in dense_supervision.py) or, for a count, to the
pooled token, which dense supervision makes carry the counts (an average over patches
cannot count). The loss is −log of the attention mass on the targets.
"""
import re

import torch

import dense_supervision as dense
import shapes

WORDS_LAYER, PATCHES_LAYER, HEAD = 0, 1, 0


def turn_hints(instruction, targets):
    """(the instruction's naming phrase, the image-block indices it points at) or None."""
    m = re.search(r"describes: the (\w+) (\w+)\.$", instruction)
    if m:
        return f"{m[1]} {m[2]}", dense.PATCHES.start + (targets["colour"] == dense.COLOURS.index(m[1])).nonzero().flatten()
    m = re.match(r"What colour is the (\w+)\?", instruction)
    if m:
        return m[1], dense.PATCHES.start + (targets["shape"] == shapes.SHAPES.index(m[1])).nonzero().flatten()
    m = re.match(r"How many (\w+) are there\?", instruction)
    if m:
        return m[1], torch.tensor([dense.POOLED])
    return None


def hint(text, phrase, encode):
    """The token indices of the last occurrence of " phrase" in `text` (ids with BOS)."""
    at = text.rindex(" " + phrase)
    return list(range(len(encode(text[:at])), len(encode(text[:at + 1 + len(phrase)]))))


def loss(kept, hints, image_len):
    """kept: {layer: (q, k)} from llm_hidden; hints: per sequence, a list of
    (answer token indices, naming token indices, image-block indices)."""
    total, n = torch.zeros(()), 0
    for layer, key in ((WORDS_LAYER, "words"), (PATCHES_LAYER, "patches")):
        q, k = kept[layer]
        hd = q.shape[-1]
        for b, seq_hints in enumerate(hints):
            for answer, words, patches in seq_hints:
                targets = [image_len + j for j in words] if key == "words" else (1 + patches).tolist()  # after BOS
                if not targets:
                    continue
                rows = torch.tensor([image_len + j - 1 for j in answer])      # where answer token j is predicted
                scores = q[b, rows, HEAD] @ k[b, :, HEAD].T / hd ** 0.5          # [rows, S]
                scores = scores.masked_fill(torch.arange(k.shape[1])[None] > rows[:, None], float("-inf"))
                p = scores.softmax(-1)[:, targets].sum(-1)
                total, n = total - torch.log(p + 1e-6).sum(), n + len(answer)
    return total / max(n, 1)
