#!/usr/bin/env python3
"""Write JPEG test fixtures and Pillow's decode of each (the ground truth for jpeg-exact).

Usage (venv outside the repo):
    python3 -m venv /work/jpeg-venv && /work/jpeg-venv/bin/pip install Pillow numpy
    /work/jpeg-venv/bin/python gen/make_jpeg_fixtures.py [--out fixtures]

For every NAME.jpg it writes the expected output of `Image.open(f).convert("RGB")`:
NAME.rgb (raw packed RGB) when that is at most 1 MiB, else NAME.rowhash (one FNV-1a-64 hex
hash per RGB row). fixtures/manifest.tsv lists: name, width, height, expectation, note.
Expectation is `ok` (must decode bit-exactly), `pillow_error` (Pillow fails: we must Err), or
`unsupported` (Pillow decodes it, jpeg-exact deliberately rejects it for now).

Besides Pillow's encoder it uses libjpeg-turbo's cjpeg/jpegtran if installed
(`apt-get install libjpeg-turbo-progs`) for sampling factors, scan scripts and arithmetic
coding that Pillow cannot write.
"""
import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, features

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MAX_RAW = 1 << 20


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def patch_dqt(data: bytes, qval: int) -> bytes:
    """Set every entry of every DQT table (before the first SOS) to qval (8-bit tables: & 255)."""
    d = bytearray(data)
    i = 2
    while i + 4 <= len(d):
        assert d[i] == 0xFF
        m, seglen = d[i + 1], (d[i + 2] << 8) | d[i + 3]
        if m == 0xDB:
            p = i + 4
            while p < i + 2 + seglen:
                pq = d[p] >> 4
                p += 1
                for k in range(64):
                    if pq:
                        d[p + 2 * k], d[p + 2 * k + 1] = qval >> 8, qval & 255
                    else:
                        d[p + k] = qval & 255
                p += 128 if pq else 64
        if m == 0xDA:
            break
        i += 2 + seglen
    return bytes(d)


def strip_markers(data: bytes, marker: int) -> bytes:
    """Remove every marker segment `marker` (headers only, up to each SOS header)."""
    out = bytearray(data[:2])
    i = 2
    while i < len(data):
        if data[i] != 0xFF or data[i + 1] in (0x00, 0xD9) or 0xD0 <= data[i + 1] <= 0xD7:
            out.append(data[i])
            i += 1
            continue
        m, seglen = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        if m != marker:
            out += data[i:i + 2 + seglen]
        i += 2 + seglen
        if m == 0xDA:  # copy entropy data up to the next real marker
            while i < len(data) and not (data[i] == 0xFF and data[i + 1] not in (0, *range(0xD0, 0xD8))):
                out.append(data[i])
                i += 1
    return bytes(out)


def segments(data: bytes):
    """(offset, marker, length) of the header segments up to and including the first SOS."""
    i = 2
    while i < len(data):
        m, seglen = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        yield i, m, seglen
        if m == 0xDA:
            return
        i += 2 + seglen


def patch_adobe(data: bytes, transform: int) -> bytes:
    d = bytearray(data)
    for i, m, _ in segments(data):
        if m == 0xEE and d[i + 4:i + 9] == b"Adobe":
            d[i + 4 + 11] = transform
            return bytes(d)
    raise ValueError("no Adobe marker")


JFIF_APP0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def pattern(w, h, seed=1):
    """Colourful test image: gradients, a sharp-edged shape, saturated patches and noise."""
    rng = np.random.default_rng(seed + w * 1000 + h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 120 * np.sin(x / max(w, 1) * 6.3 + y / 7.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], -1)
    # hard-edged saturated blocks (provoke IDCT and colour overshoot)
    m = ((x // 5 + y // 3) % 4 == 0)
    img[m] = [255, 0, 255]
    m2 = ((x - w / 2) ** 2 + (y - h / 2) ** 2) < (min(w, h) / 3) ** 2
    img[m2] = [0, 255, 0]
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


class Gen:
    def __init__(self, out):
        self.out = out
        self.rows = []
        os.makedirs(out, exist_ok=True)

    def add(self, name, data: bytes, expect="ok", note=""):
        path = os.path.join(self.out, name + ".jpg")
        with open(path, "wb") as f:
            f.write(data)
        for ext in (".rgb", ".rowhash"):
            if os.path.exists(os.path.join(self.out, name + ext)):
                os.remove(os.path.join(self.out, name + ext))
        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = im.convert("RGB")
            w, h = rgb.size
            raw = rgb.tobytes()
        except Exception as e:  # noqa: BLE001 - any Pillow failure is the expectation
            self.rows.append((name, 0, 0, "pillow_error", f"{type(e).__name__}: {e}"))
            return
        if len(raw) <= MAX_RAW:
            with open(os.path.join(self.out, name + ".rgb"), "wb") as f:
                f.write(raw)
        else:
            stride = w * 3
            with open(os.path.join(self.out, name + ".rowhash"), "w") as f:
                for y in range(h):
                    f.write("%016x\n" % fnv1a64(raw[y * stride:(y + 1) * stride]))
        self.rows.append((name, w, h, expect, note))

    def pillow(self, name, im, expect="ok", note="", **kw):
        buf = io.BytesIO()
        im.save(buf, "JPEG", **kw)
        self.add(name, buf.getvalue(), expect, note or "pillow " + " ".join(f"{k}={v}" for k, v in kw.items() if k != "exif"))

    def write_manifest(self):
        with open(os.path.join(self.out, "manifest.tsv"), "w") as f:
            f.write(f"# Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}, "
                    f"Image.core.jpeglib_version {Image.core.jpeglib_version}\n")
            f.write("# name\twidth\theight\texpect\tnote\n")
            for r in self.rows:
                f.write("\t".join(str(c) for c in r) + "\n")


def run(cmd, stdin=None):
    return subprocess.run(cmd, input=stdin, capture_output=True, check=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "fixtures"))
    args = ap.parse_args()
    g = Gen(os.path.abspath(args.out))

    sizes = [(1, 1), (2, 2), (3, 3), (5, 4), (17, 13), (33, 7), (7, 33), (64, 48), (250, 181)]
    subs = {"444": "4:4:4", "422": "4:2:2", "420": "4:2:0"}
    for (w, h) in sizes:
        im = pattern(w, h)
        for tag, sub in subs.items():
            g.pillow(f"base_{tag}_{w}x{h}", im, quality=85, subsampling=sub)
            g.pillow(f"prog_{tag}_{w}x{h}", im, quality=85, subsampling=sub, progressive=True)
        g.pillow(f"gray_base_{w}x{h}", im.convert("L"), quality=85)
        g.pillow(f"gray_prog_{w}x{h}", im.convert("L"), quality=85, progressive=True)

    im = pattern(64, 48, seed=7)
    for q in (1, 10, 50, 95, 100):
        g.pillow(f"q{q}_420_64x48", im, quality=q, subsampling="4:2:0")
        g.pillow(f"q{q}_444_64x48", im, quality=q, subsampling="4:4:4")
    g.pillow("q100_prog_420_64x48", im, quality=100, subsampling="4:2:0", progressive=True)
    g.pillow("optimize_420_64x48", im, quality=80, optimize=True)
    g.pillow("rst_rows1_420_65x49", pattern(65, 49), quality=80, restart_marker_rows=1)
    g.pillow("rst_blocks3_444_41x23", pattern(41, 23), quality=80, subsampling="4:4:4", restart_marker_blocks=3)
    g.pillow("rst_blocks1_prog_420_41x23", pattern(41, 23), quality=80, progressive=True, restart_marker_blocks=1)
    g.pillow("rgb_keep_40x30", pattern(40, 30), quality=90, keep_rgb=True)
    g.pillow("cmyk_31x17", pattern(31, 17).convert("CMYK"), quality=90)
    g.pillow("comment_icc_20x20", pattern(20, 20), quality=90, comment=b"hello", icc_profile=b"\0" * 300)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: must NOT be applied
    exif[0x010F] = "jpeg-exact"
    g.pillow("exif_orient6_48x32", pattern(48, 32), quality=88, exif=exif.tobytes())

    # Photos from the repository / shared data.
    seen = set()
    for p in sorted(glob.glob(os.path.join(REPO, "tests/fixtures/images/*.jpg"))
                    + glob.glob(os.path.join(REPO, "tests/fixtures/images/synthetic/*.jpg"))
                    + glob.glob("/work/shared/data/*.jpg") + glob.glob("/work/shared/data/images/*.jpg")):
        data = open(p, "rb").read()
        key = fnv1a64(data[:4096]) ^ len(data)
        if key in seen:
            continue
        seen.add(key)
        g.add("photo_" + os.path.splitext(os.path.basename(p))[0].replace("-", "_"), data, note=p)

    # Extreme dequantised coefficients: IDCT overflow, where libjpeg-turbo's x86-64 SIMD
    # kernel (saturating, 16-bit) and its C code (10-bit wrapping range_limit) disagree.
    q100 = open(os.path.join(g.out, "q100_444_64x48.jpg"), "rb").read()
    for qv in (8, 64, 255):
        g.add(f"overflow_dqt{qv}_444_64x48", patch_dqt(q100, qv), note=f"all DQT entries patched to {qv}")
    q1 = os.path.join(g.out, "cjpeg_q1_16bit_dqt.jpg")

    # Corrupt inputs (Pillow fails, so must we).
    good = open(os.path.join(g.out, "base_420_64x48.jpg"), "rb").read()
    g.add("bad_truncated_half", good[: len(good) // 2], note="truncated in scan data")
    g.add("bad_truncated_header", good[:100], note="truncated in headers")
    prog = open(os.path.join(g.out, "prog_420_64x48.jpg"), "rb").read()
    g.add("bad_prog_no_eoi", prog[:-2], note="progressive without EOI")
    # Corrupt but decodable by libjpeg (warnings only): entropy data cut short, then EOI.
    # libjpeg zero-fills the MCU that runs out and leaves the rest of the scan blank.
    def cut_scan(data, frac, which=-1):
        """Drop the tail of scan `which`'s entropy data, keeping every marker after it."""
        soss = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
        s0 = soss[which] + 2 + ((data[soss[which] + 2] << 8) | data[soss[which] + 3])
        end = s0
        while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
            end += 1
        cut = s0 + int((end - s0) * frac)
        return data[:cut] + data[end:]
    g.add("corrupt_base_short_scan_eoi", cut_scan(good, 0.6), note="scan data cut at 60%, EOI appended")
    g.add("corrupt_prog_short_last_scan", cut_scan(prog, 0.5), note="last progressive scan cut at 50%")
    g.add("corrupt_prog_short_first_scan", cut_scan(prog, 0.5, 0), note="first (DC) scan cut at 50%")
    # Colour-space signalling (jdapimin.c default_decompress_parms).
    cmyk = open(os.path.join(g.out, "cmyk_31x17.jpg"), "rb").read()
    g.add("adobe_ycck_31x17", patch_adobe(cmyk, 2), note="CMYK data relabelled YCCK (transform 2)")
    g.add("adobe_cmyk_unknown_transform", patch_adobe(cmyk, 7), note="transform 7 -> YCCK")
    g.add("cmyk_no_adobe", strip_markers(cmyk, 0xEE), note="4 components, no Adobe: plain CMYK")
    rgbk = open(os.path.join(g.out, "rgb_keep_40x30.jpg"), "rb").read()
    g.add("rgb_adobe_plus_jfif", rgbk[:2] + JFIF_APP0 + rgbk[2:], note="JFIF wins over Adobe: YCbCr")
    g.add("adobe_transform_unknown_3c", patch_adobe(rgbk, 5), note="transform 5 -> YCbCr")
    g.add("no_markers_ids_123", strip_markers(strip_markers(good, 0xE0), 0xEE), note="ids 1,2,3 -> YCbCr")
    base_std = io.BytesIO()
    pattern(40, 24).save(base_std, "JPEG", quality=80)  # Pillow/libjpeg default: Annex K tables
    g.add("mjpeg_no_dht_40x24", strip_markers(base_std.getvalue(), 0xC4),
          note="DHT removed: sequential decoder falls back to the standard tables")
    g.add("bad_prog_no_dht", strip_markers(prog, 0xC4), note="progressive decoder has no fallback")
    g.add("corrupt_base_garbage_before_eoi", good[:-2] + b"garbage\x00\xff\x00" + good[-2:],
          note="extraneous bytes between scan and EOI")

    cjpeg, jpegtran = shutil.which("cjpeg"), shutil.which("jpegtran")
    if cjpeg and jpegtran:
        with tempfile.TemporaryDirectory() as td:
            ppm = os.path.join(td, "in.ppm")
            pgm = os.path.join(td, "in.pgm")
            pattern(45, 27, seed=3).save(ppm)
            pattern(45, 27, seed=3).convert("L").save(pgm)
            script = os.path.join(td, "scans.txt")

            def cj(name, *opts, src=ppm, expect="ok", note=None):
                try:
                    data = run([cjpeg, *opts, src])
                except subprocess.CalledProcessError as e:
                    print("cjpeg failed", name, e.stderr.decode(), file=sys.stderr)
                    return
                g.add(name, data, expect, note or "cjpeg " + " ".join(opts))

            for s in ("1x2", "4x1", "1x4", "4x2", "2x4", "3x1", "3x2", "2x2,2x1,1x2", "1x2,1x1,2x2",
                      "2x1,1x1,2x1", "2x2,1x1,2x2", "4x1,2x1,1x1"):
                cj("cjpeg_s" + s.replace(",", "_"), "-sample", s, "-quality", "85")
                cj("cjpeg_prog_s" + s.replace(",", "_"), "-sample", s, "-quality", "85", "-progressive")
            cj("cjpeg_fract_s3x1_2x1_1x1", "-sample", "3x1,2x1,1x1")
            cj("cjpeg_rst1_420", "-restart", "1", "-sample", "2x2")
            cj("cjpeg_rst2b_422", "-restart", "2B", "-sample", "2x1")
            cj("cjpeg_prog_rst1b_420", "-restart", "1B", "-progressive")
            cj("cjpeg_arith_420", "-arithmetic", expect="unsupported")
            cj("cjpeg_rgb", "-rgb", "-quality", "90")
            rgbc = open(os.path.join(g.out, "cjpeg_rgb.jpg"), "rb").read()
            g.add("rgb_ids_no_markers", strip_markers(strip_markers(rgbc, 0xE0), 0xEE),
                  note="component ids R,G,B and no JFIF/Adobe -> RGB")
            cj("cjpeg_q1_16bit_dqt", "-quality", "1")
            cj("cjpeg_q100_444", "-quality", "100", "-sample", "1x1")
            cj("cjpeg_gray_prog", "-grayscale", "-progressive", src=pgm)
            cj("cjpeg_gray_2x2", "-sample", "2x2", src=pgm)
            with open(script, "w") as f:
                f.write("0;\n1;\n2;\n")
            cj("cjpeg_seq_noninterleaved", "-scans", script)
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 1;\n0: 1-5, 0, 2;\n0: 1-5, 2, 1;\n0,1,2: 0-0, 1, 0;\n"
                        "1: 1-63, 0, 0;\n2: 1-63, 0, 0;\n0: 6-63, 0, 1;\n0: 6-63, 1, 0;\n0: 1-5, 1, 0;\n")
            cj("cjpeg_prog_custom_script", "-scans", script)
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 0;\n0: 1-63, 0, 0;\n")  # chroma AC never sent
            cj("cjpeg_prog_incomplete", "-scans", script,
               note="block smoothing applies (chroma AC never sent)")
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 0;\n")  # DC only: smoothing re-estimates DC too
            cj("cjpeg_prog_dc_only", "-scans", script, note="DC-only progressive: DC+AC smoothing")
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 1;\n0: 1-2, 0, 2;\n1: 1-63, 0, 0;\n")  # partial bits
            cj("cjpeg_prog_partial_bits", "-scans", script, note="successive approximation left unfinished")
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 0;\n0: 1-5, 0, 0;\n")
            for smp in ("2x2", "2x1", "1x2"):
                cj(f"cjpeg_prog_incomplete_s{smp}", "-scans", script, "-sample", smp,
                   note="block smoothing, sampling " + smp)
            ppm2 = os.path.join(td, "in2.ppm")
            pattern(45, 20, seed=5).save(ppm2)  # odd number of luma block rows with v=2
            ppm3 = os.path.join(td, "in3.ppm")
            pattern(77, 41, seed=6).save(ppm3)
            for smp in ("2x2", "1x2"):
                cj(f"cjpeg_prog_incomplete_s{smp}_45x20", "-scans", script, "-sample", smp, src=ppm2,
                   note="block smoothing, partial last iMCU row")
                cj(f"cjpeg_prog_incomplete_s{smp}_77x41", "-scans", script, "-sample", smp, src=ppm3,
                   note="block smoothing")
            inc = open(os.path.join(g.out, "cjpeg_prog_incomplete_s2x2_77x41.jpg"), "rb").read()
            g.add("corrupt_prog_incomplete_cut", cut_scan(inc, 0.5),
                  note="smoothing + data cut mid-scan (uses previous scan's coef_bits below the cut)")
            with open(script, "w") as f:
                f.write("0,1,2: 0-0, 0, 0;\n")
            cj("cjpeg_prog_dc_only_77x41", "-scans", script, src=ppm3, note="DC-only progressive")
            with open(script, "w") as f:
                f.write("0: 0-0, 0, 0;\n0: 1-5, 0, 1;\n")
            cj("cjpeg_prog_incomplete_gray", "-scans", script, src=pgm, note="block smoothing, grey")
            with open(script, "w") as f:
                f.write("0: 0-0, 0, 0;\n")
            cj("cjpeg_prog_dc_only_gray", "-scans", script, src=pgm, note="DC-only grey")
            base = open(os.path.join(g.out, "base_420_250x181.jpg"), "rb").read()
            g.add("jpegtran_prog_from_base", run([jpegtran, "-progressive", "-copy", "all"], base), note="jpegtran -progressive")
            g.add("jpegtran_rst_from_base", run([jpegtran, "-restart", "3B"], base), note="jpegtran -restart 3B")
    else:
        print("cjpeg/jpegtran not found: skipping libjpeg-turbo-progs fixtures", file=sys.stderr)

    if os.path.exists(q1):
        q1 = open(q1, "rb").read()
        for qv in (4000, 40000, 65535):
            g.add(f"overflow_dqt16_{qv}", patch_dqt(q1, qv), note=f"16-bit DQT entries patched to {qv}")

    g.write_manifest()
    n = {}
    for r in g.rows:
        n[r[3]] = n.get(r[3], 0) + 1
    print(f"wrote {len(g.rows)} fixtures to {g.out}: {n}")


if __name__ == "__main__":
    main()
