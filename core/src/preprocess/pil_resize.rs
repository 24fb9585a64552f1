//! Pillow's bicubic resize (`Image.resize(size, BICUBIC)`, libImaging/Resample.c),
//! reproduced bit for bit: the a = −0.5 cubic, support widened by the downscale
//! factor, coefficients normalised then turned into 22-bit fixed point, a
//! horizontal pass then a vertical pass, rounding and clipping to 8 bits after each.

use super::images::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 2.0;

/// Pillow's `bicubic_filter` (a = −0.5).
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index, tap count, and fixed-point weights (`ksize` each).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `0..in_size`.
fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for x in 0..xmax {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for x in 0..xmax {
            if ww != 0.0 {
                k[x] /= ww;
            }
        }
        for (x, w) in k.iter().take(xmax).enumerate() {
            let f = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if *w < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, weights }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes only the width: `rows` of `img` (all columns) → out_w columns.
fn horizontal(img: &RgbImage, rows: std::ops::Range<usize>, out_w: usize) -> RgbImage {
    let c = coeffs(img.width, out_w);
    let h = rows.len();
    let mut out = vec![0u8; out_w * h * 3];
    for (oy, y) in rows.enumerate() {
        let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        for xx in 0..out_w {
            let (xmin, n) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &w) in k.iter().enumerate() {
                let p = &row[(x + xmin) * 3..(x + xmin) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] = ss[ch].wrapping_add((p[ch] as i32).wrapping_mul(w));
                }
            }
            let o = (oy * out_w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage::new(out_w, h, out)
}

/// Resizes only the height, with bounds relative to `img`'s first row `row0`.
fn vertical(img: &RgbImage, in_h: usize, row0: usize, out_h: usize) -> RgbImage {
    let c = coeffs(in_h, out_h);
    let w = img.width;
    let mut out = vec![0u8; w * out_h * 3];
    for yy in 0..out_h {
        let (ymin, n) = c.bounds[yy];
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        for xx in 0..w {
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (y, &wt) in k.iter().enumerate() {
                let i = ((y + ymin - row0) * w + xx) * 3;
                for ch in 0..3 {
                    ss[ch] = ss[ch].wrapping_add((img.data[i + ch] as i32).wrapping_mul(wt));
                }
            }
            let o = (yy * w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage::new(w, out_h, out)
}

/// `img.resize((out_w, out_h), Image.BICUBIC)` for an RGB image.
pub fn pil_resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    let vc = coeffs(img.height, out_h);
    // Rows the vertical pass reads (ImagingResampleInner's ybox_first / ybox_last).
    let first = vc.bounds.first().map_or(0, |b| b.0);
    let last = vc.bounds.last().map_or(img.height, |b| b.0 + b.1);
    match (need_h, need_v) {
        (false, false) => img.clone(),
        (true, false) => horizontal(img, 0..img.height, out_w),
        (false, true) => vertical(img, img.height, 0, out_h),
        (true, true) => {
            let tmp = horizontal(img, first..last, out_w);
            vertical(&tmp, img.height, first, out_h)
        }
    }
}
