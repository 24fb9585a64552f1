//! Upsampling (jdsample.c, do_fancy_upsampling = TRUE) and colour conversion (jdcolor.c),
//! working on whole component planes. libjpeg works on row groups with "context rows"
//! (jdmainct.c); its edge behaviour is equivalent to clamping the neighbouring row index to
//! [0, downsampled_height - 1] (make_funny_pointers at the top, set_bottom_pointers at the
//! bottom), and the fancy filters only read columns [0, downsampled_width).

use crate::JpegError;

/// One decoded component plane (IDCT output, including block padding).
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    /// compptr->downsampled_width / downsampled_height
    pub ds_w: usize,
    pub ds_h: usize,
    pub h: usize,
    pub v: usize,
}

/// Upsample one component to `out_w` x `out_h` (the image size), as libjpeg selects
/// per component in jinit_upsampler.
pub fn upsample(
    p: &Plane,
    max_h: usize,
    max_v: usize,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<u8>, JpegError> {
    let mut out = vec![0u8; out_w * out_h];
    let row = |r: usize| &p.data[r * p.stride..r * p.stride + p.ds_w];
    let clamp_row = |r: isize| -> usize { r.clamp(0, p.ds_h as isize - 1) as usize };

    if p.h == max_h && p.v == max_v {
        for y in 0..out_h {
            out[y * out_w..(y + 1) * out_w].copy_from_slice(&row(y)[..out_w]);
        }
    } else if p.h * 2 == max_h && p.v == max_v {
        let mut tmp = vec![0u8; p.ds_w * 2];
        for y in 0..out_h {
            let inp = row(y);
            if p.ds_w > 2 {
                h2v1_fancy(inp, &mut tmp);
            } else {
                for (i, &s) in inp.iter().enumerate() {
                    tmp[2 * i] = s;
                    tmp[2 * i + 1] = s;
                }
            }
            out[y * out_w..(y + 1) * out_w].copy_from_slice(&tmp[..out_w]);
        }
    } else if p.h == max_h && p.v * 2 == max_v {
        // h1v2_fancy_upsample (C version on x86; libjpeg-turbo >= 2.1)
        for y in 0..out_h {
            let r = y / 2;
            let (near, far, bias) = if y % 2 == 0 {
                (row(r), row(clamp_row(r as isize - 1)), 1)
            } else {
                (row(r), row(clamp_row(r as isize + 1)), 2)
            };
            let o = &mut out[y * out_w..(y + 1) * out_w];
            for x in 0..out_w {
                o[x] = ((near[x] as i32 * 3 + far[x] as i32 + bias) >> 2) as u8;
            }
        }
    } else if p.h * 2 == max_h && p.v * 2 == max_v {
        let mut tmp = vec![0u8; p.ds_w * 2];
        for y in 0..out_h {
            let r = y / 2;
            if p.ds_w > 2 {
                let far = if y % 2 == 0 {
                    clamp_row(r as isize - 1)
                } else {
                    clamp_row(r as isize + 1)
                };
                h2v2_fancy(row(r), row(far), &mut tmp);
            } else {
                for (i, &s) in row(r).iter().enumerate() {
                    tmp[2 * i] = s;
                    tmp[2 * i + 1] = s;
                }
            }
            out[y * out_w..(y + 1) * out_w].copy_from_slice(&tmp[..out_w]);
        }
    } else if max_h.is_multiple_of(p.h) && max_v.is_multiple_of(p.v) {
        let he = max_h / p.h;
        let ve = max_v / p.v;
        for y in 0..out_h {
            let inp = row(y / ve);
            let o = &mut out[y * out_w..(y + 1) * out_w];
            for x in 0..out_w {
                o[x] = inp[x / he];
            }
        }
    } else {
        return Err(JpegError::Unsupported("fractional sampling factors"));
    }
    Ok(out)
}

fn h2v1_fancy(inp: &[u8], out: &mut [u8]) {
    let n = inp.len();
    let at = |i: usize| inp[i] as i32;
    out[0] = inp[0];
    out[1] = ((at(0) * 3 + at(1) + 2) >> 2) as u8;
    for c in 1..n - 1 {
        let v = at(c) * 3;
        out[2 * c] = ((v + at(c - 1) + 1) >> 2) as u8;
        out[2 * c + 1] = ((v + at(c + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((at(n - 1) * 3 + at(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = inp[n - 1];
}

fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let cs = |i: usize| near[i] as i32 * 3 + far[i] as i32;
    let mut this = cs(0);
    let mut next = cs(1);
    out[0] = ((this * 4 + 8) >> 4) as u8;
    out[1] = ((this * 3 + next + 7) >> 4) as u8;
    let mut last = this;
    this = next;
    for c in 1..n - 1 {
        next = cs(c + 1);
        out[2 * c] = ((this * 3 + last + 8) >> 4) as u8;
        out[2 * c + 1] = ((this * 3 + next + 7) >> 4) as u8;
        last = this;
        this = next;
    }
    out[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    out[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i64 = 1 << (SCALEBITS - 1);

fn fix(x: f64) -> i64 {
    (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64
}

/// jdcolor.c build_ycc_rgb_table.
pub struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    pub fn new() -> Self {
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256usize {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    /// ycc_rgb_convert for one pixel.
    #[inline]
    pub fn convert(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = y as i32;
        let (cb, cr) = (cb as usize, cr as usize);
        let g = ((self.cb_g[cb] + self.cr_g[cr]) >> SCALEBITS) as i32;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + g),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

impl Default for YccTables {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pillow's CMYK -> RGB (Convert.c cmyk2rgb), applied to the *inverted* ("CMYK;I") samples.
#[inline]
pub fn cmyk_to_rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = 255 - k as i32;
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let f = |v: u8| clamp(nk - muldiv255(v as i32, nk));
    [f(c), f(m), f(y)]
}
