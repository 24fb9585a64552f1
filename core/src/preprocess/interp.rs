//! PyTorch's `F.interpolate` on a [C, H, W] f32 tensor, as SPHINX's in-model views use
//! it (docs/spec.md §4.2): bicubic with A = −0.75, `align_corners=False`, no antialias, taps
//! clamped to the border; and the default `nearest` mode, `src = floor(dst · in/out)`.

use super::images::Planar;

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// For each output index: the 4 clamped source indices and their weights.
fn taps(in_size: usize, out_size: usize, scale: f32) -> Vec<([usize; 4], [f32; 4])> {
    (0..out_size)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let base = real.floor();
            let t = real - base;
            let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
            let idx = std::array::from_fn(|j| (base as i64 - 1 + j as i64).clamp(0, in_size as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// Bicubic resize to `out_h`×`out_w`, scale `in/out` (torch's default without `scale_factor`).
pub fn torch_bicubic(x: &Planar, out_h: usize, out_w: usize) -> Planar {
    torch_bicubic_scaled(x, out_h, out_w, x.height as f32 / out_h as f32, x.width as f32 / out_w as f32)
}

/// Bicubic resize with explicit source/destination coordinate scales (`1 / scale_factor`).
pub fn torch_bicubic_scaled(x: &Planar, out_h: usize, out_w: usize, scale_h: f32, scale_w: f32) -> Planar {
    if out_h == x.height && out_w == x.width && scale_h == 1.0 && scale_w == 1.0 {
        return x.clone();
    }
    let ty = taps(x.height, out_h, scale_h);
    let tx = taps(x.width, out_w, scale_w);
    let mut data = Vec::with_capacity(x.channels * out_h * out_w);
    for c in 0..x.channels {
        for (yi, yw) in &ty {
            for (xi, xw) in &tx {
                let mut acc = 0f32;
                for j in 0..4 {
                    let row = (c * x.height + yi[j]) * x.width;
                    let mut r = 0f32;
                    for i in 0..4 {
                        r += xw[i] * x.data[row + xi[i]];
                    }
                    acc += yw[j] * r;
                }
                data.push(acc);
            }
        }
    }
    Planar { channels: x.channels, height: out_h, width: out_w, data }
}

/// Nearest resize (`F.interpolate`'s default mode).
pub fn torch_nearest(x: &Planar, out_h: usize, out_w: usize) -> Planar {
    let index = |o: usize, inp: usize, out: usize| -> usize {
        if inp == out {
            o
        } else if out == 2 * inp {
            o >> 1
        } else {
            (((o as f32) * (inp as f32 / out as f32)).floor() as usize).min(inp - 1)
        }
    };
    let mut data = Vec::with_capacity(x.channels * out_h * out_w);
    for c in 0..x.channels {
        for oy in 0..out_h {
            let row = (c * x.height + index(oy, x.height, out_h)) * x.width;
            for ox in 0..out_w {
                data.push(x.data[row + index(ox, x.width, out_w)]);
            }
        }
    }
    Planar { channels: x.channels, height: out_h, width: out_w, data }
}
