"""The SPHINX-Micro task: coloured shapes on varied backgrounds, with questions and
answers in SPHINX's own formats (docs/spec.md §6): short-answer VQA (colour, count), grounding
(a box `[x1,y1,x2,y2]` on the padded square, two decimals) and a one-sentence caption.

Two domains, as SPHINX's weight mix needs: "real" (photo-like: textured, noisy,
shaded backgrounds, noise and blur over the shapes too) and "synthetic" (flat colours).
Everything is a pure function of a seed, so held-out sets are reproducible.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (215, 38, 38), "green": (36, 160, 60), "blue": (36, 84, 215),
    "yellow": (240, 205, 30), "purple": (135, 55, 175), "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
NUMBERS = ("zero", "one", "two", "three")
# Flat backgrounds, far from every shape colour.
BACKGROUNDS = ((236, 236, 236), (250, 246, 232), (205, 214, 222), (226, 232, 214), (120, 120, 124), (60, 62, 70))

# The instructions, byte for byte as the runtime's task presets build them
# (core/src/tasks/prompts.rs: vqa, ground, short-caption).
def vqa_instruction(question):
    return f"{question}\nAnswer the question using a single word or phrase."


def ground_instruction(expression):
    return f"Please provide the bounding box coordinate of the region this sentence describes: {expression}."


CAPTION_INSTRUCTION = "Provide a one-sentence caption for the provided image."


def padded_box(box, w, h):
    """Pixel box → [0, 1] coordinates of the padded square (PadToSquare, docs/spec.md §4.1)."""
    side = max(w, h)
    x0 = (h - w) // 2 if w < h else 0
    y0 = (w - h) // 2 if w > h else 0
    x1, y1, x2, y2 = box
    return [(x1 + x0) / side, (y1 + y0) / side, (x2 + x0) / side, (y2 + y0) / side]


def box_text(b):
    return "[" + ",".join(f"{v:.2f}" for v in b) + "]"


def smooth_noise(rng, h, w, cells):
    """Value noise: a coarse random grid, bicubically upsampled."""
    g = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32) / 255


def background(rng, domain, w, h):
    if domain == "synthetic":
        return Image.new("RGB", (w, h), BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], np.float32)
    tint = rng.normal(0, 25, 3)
    tex = sum(smooth_noise(rng, h, w, c) * a for c, a in ((3, 60), (9, 35), (27, 20)))
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    shade = 40 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
    img = base + tint + (tex - tex.mean())[..., None] + shade[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def photo_finish(rng, img):
    """Sensor noise and a little blur over everything (the "real" domain)."""
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    a = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(6, 14), (img.height, img.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def draw_shape(d, shape, box, colour):
    x1, y1, x2, y2 = box
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)


def scene(seed, domain, max_objects=3):
    """An image and its objects: [{shape, colour, box (pixels, x2/y2 exclusive)}].

    1 to `max_objects` objects, each a different colour (so a referring expression is
    never ambiguous; shapes may repeat, which the count questions use), sides 30–50% of
    the image's shorter side, on images of 160–224 px per side."""
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(160, 225, 2))
    img = background(rng, domain, w, h)
    d = ImageDraw.Draw(img)
    n = int(rng.integers(1, max_objects + 1))
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n, replace=False)]
    chosen = [(SHAPES[rng.integers(len(SHAPES))], c) for c in colours]
    objects = []
    for shape, colour in chosen:
        for _ in range(100):
            s = int(rng.uniform(0.30, 0.50) * min(w, h))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            box = (x, y, x + s, y + s)
            if all(box[0] >= o["box"][2] + 3 or box[2] + 3 <= o["box"][0] or box[1] >= o["box"][3] + 3 or box[3] + 3 <= o["box"][1]
                   for o in objects):
                break
        else:
            continue
        draw_shape(d, shape, (box[0], box[1], box[2] - 1, box[3] - 1), COLOURS[colour])
        objects.append({"shape": shape, "colour": colour, "box": box})
    if domain == "real":
        img = photo_finish(rng, img)
    return img, objects


def caption(objects, domain):
    names = [f"{'an' if o['colour'] == 'orange' else 'a'} {o['colour']} {o['shape']}" for o in sorted(objects, key=lambda o: o["box"][0])]
    things = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    ground = "a textured" if domain == "real" else "a plain"
    return f"{things[0].upper()}{things[1:]} on {ground} background."


def all_items(seed, domain, max_objects=3):
    """The image, every question it supports (training's multi-turn conversations: the
    colour of each shape that appears once, the count of each shape, the box of each
    object, and the caption) and its objects."""
    img, objects = scene(seed, domain, max_objects)
    w, h = img.size
    out = []
    for o in objects:
        if sum(p["shape"] == o["shape"] for p in objects) == 1:
            out.append(("vqa", vqa_instruction(f"What colour is the {o['shape']}?"), o["colour"], {}))
    for shape in SHAPES:
        count = sum(o["shape"] == shape for o in objects)
        out.append(("vqa", vqa_instruction(f"How many {PLURAL[shape]} are there?"), str(count), {}))
    for o in objects:
        b = padded_box(o["box"], w, h)
        out.append(("ground", ground_instruction(f"the {o['colour']} {o['shape']}"), box_text(b), {"box": b}))
    out.append(("caption", CAPTION_INSTRUCTION, caption(objects, domain), {}))
    return img, out, objects


def items(seed, domain, with_caption=True):
    """The image and its held-out questions: [(kind, instruction, answer, extra)]."""
    img, objects = scene(seed, domain)
    rng = np.random.default_rng(seed + 7_777_777)
    w, h = img.size
    out = []
    # VQA: the colour of a shape that appears once, or how many of a shape there are.
    unique = [o for o in objects if sum(p["shape"] == o["shape"] for p in objects) == 1]
    if unique and rng.random() < 0.5:
        o = unique[rng.integers(len(unique))]
        out.append(("vqa", vqa_instruction(f"What colour is the {o['shape']}?"), o["colour"], {}))
    else:
        shape = SHAPES[rng.integers(len(SHAPES))]
        count = sum(o["shape"] == shape for o in objects)
        out.append(("vqa", vqa_instruction(f"How many {PLURAL[shape]} are there?"), str(count), {}))
    o = objects[rng.integers(len(objects))]
    expression = f"the {o['colour']} {o['shape']}"
    b = padded_box(o["box"], w, h)
    out.append(("ground", ground_instruction(expression), box_text(b), {"box": b, "expression": expression}))
    if with_caption:
        out.append(("caption", CAPTION_INSTRUCTION, caption(objects, domain), {}))
    return img, out
