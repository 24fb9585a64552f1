//! `PadToSquare` and `ToTensor` + `Normalize` of `accessory/data/transform.py` (docs/spec.md §4.1).

use super::images::{Planar, RgbImage};

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];
/// `tuple(int(x * 255) for x in CLIP_MEAN)`: truncated, not rounded.
pub const PAD_COLOR: [u8; 3] = [122, 116, 104];

/// Centres the image on a max(w, h) square of [`PAD_COLOR`], at floor offsets.
pub fn pad_to_square(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let (x0, y0) = if w > h { (0, (w - h) / 2) } else { ((h - w) / 2, 0) };
    let mut out = RgbImage::filled(side, side, PAD_COLOR);
    for y in 0..h {
        let src = &img.data[y * w * 3..(y + 1) * w * 3];
        let at = ((y + y0) * side + x0) * 3;
        out.data[at..at + w * 3].copy_from_slice(src);
    }
    out
}

/// `(v / 255 − mean) / std` per channel, in f32 as torch computes it → [3, H, W].
pub fn normalize(img: &RgbImage) -> Planar {
    let n = img.width * img.height;
    let mut data = vec![0f32; 3 * n];
    for c in 0..3 {
        let plane = &mut data[c * n..(c + 1) * n];
        for (i, v) in plane.iter_mut().enumerate() {
            *v = (img.data[i * 3 + c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Planar { channels: 3, height: img.height, width: img.width, data }
}

/// The inverse of [`normalize`], rounded and clamped to 8 bits (for looking at views).
pub fn denormalize_to_rgb(x: &Planar) -> RgbImage {
    let n = x.width * x.height;
    let mut data = vec![0u8; 3 * n];
    for c in 0..3 {
        for i in 0..n {
            let v = (x.data[c * n + i] * CLIP_STD[c] + CLIP_MEAN[c]) * 255.0;
            data[i * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    RgbImage::new(x.width, x.height, data)
}
