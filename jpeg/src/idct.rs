//! Accurate integer inverse DCT ("islow", jidctint.c: CONST_BITS 13, PASS1_BITS 2).
//!
//! Two bit-exact variants:
//! * [`idct_islow`] (default): emulates libjpeg-turbo's x86-64 SIMD kernels
//!   (`jsimd_idct_islow_avx2` / `_sse2`), which is what Pillow wheels run on x86-64: 16-bit
//!   wrapping dequantisation (`pmullw`), 16-bit wrapping `in0±in4` / `z3`/`z4` sums, a 16-bit
//!   saturated workspace (`packssdw`), a whole-block DC-only shortcut in pass 1, no shortcut in
//!   pass 2, and *saturating* output (`packsswb` + 128).
//! * [`idct_islow_c`] (cargo feature `c-idct`): the portable C `jpeg_idct_islow`, with 64-bit
//!   JLONG intermediates and the 10-bit `range_limit[x & RANGE_MASK]` table that *wraps*.
//!
//! Both agree on every realistic image; they differ only when dequantised coefficients are
//! extreme (IDCT outputs beyond about +-512 or 16-bit overflow), e.g. corrupt or adversarial files.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// DESCALE(x, n): round and arithmetic-shift right.
#[inline(always)]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1i64 << (n - 1))) >> n
}

/// libjpeg's post-IDCT range limit: `range_limit[x & RANGE_MASK]` where the table is
/// `sample_range_limit + CENTERJSAMPLE` (jdmaster.c prepare_range_limit_table). The value is
/// masked to 10 bits, reinterpreted as signed in [-512, 511], centred and clamped. Note that this
/// *wraps* for |x| >= 512 exactly as the C code does.
#[inline(always)]
fn range_limit(x: i32) -> u8 {
    let m = x & 1023;
    let s = if m >= 512 { m - 1024 } else { m };
    (s + 128).clamp(0, 255) as u8
}

/// Inverse DCT of one block. `coef` is in natural order (as stored by the entropy decoder),
/// `quant` is the component's multiplier table (quantval cast to `short`, as
/// ISLOW_MULT_TYPE is for 8-bit builds). Writes 8 rows of 8 samples to `out` with row
/// stride `stride`.
pub fn idct_islow_c(coef: &[i16], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    let dq = |i: usize| -> i64 { (coef[i] as i32 * quant[i] as i32) as i64 };

    // Pass 1: columns.
    for c in 0..8 {
        if coef[8 + c] == 0
            && coef[16 + c] == 0
            && coef[24 + c] == 0
            && coef[32 + c] == 0
            && coef[40 + c] == 0
            && coef[48 + c] == 0
            && coef[56 + c] == 0
        {
            let dcval = (dq(c) << PASS1_BITS) as i32;
            for r in 0..8 {
                ws[r * 8 + c] = dcval;
            }
            continue;
        }
        let z2 = dq(16 + c);
        let z3 = dq(48 + c);
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * -FIX_1_847759065;
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let z2 = dq(c);
        let z3 = dq(32 + c);
        let tmp0 = (z2 + z3) << CONST_BITS;
        let tmp1 = (z2 - z3) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;

        let (t0, t1, t2, t3) = odd_part(dq(56 + c), dq(40 + c), dq(24 + c), dq(8 + c));

        let n = CONST_BITS - PASS1_BITS;
        ws[c] = descale(tmp10 + t3, n) as i32;
        ws[56 + c] = descale(tmp10 - t3, n) as i32;
        ws[8 + c] = descale(tmp11 + t2, n) as i32;
        ws[48 + c] = descale(tmp11 - t2, n) as i32;
        ws[16 + c] = descale(tmp12 + t1, n) as i32;
        ws[40 + c] = descale(tmp12 - t1, n) as i32;
        ws[24 + c] = descale(tmp13 + t0, n) as i32;
        ws[32 + c] = descale(tmp13 - t0, n) as i32;
    }

    // Pass 2: rows.
    for r in 0..8 {
        let w = &ws[r * 8..r * 8 + 8];
        let o = &mut out[r * stride..r * stride + 8];
        if w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0 && w[6] == 0 && w[7] == 0 {
            let v = range_limit(descale(w[0] as i64, PASS1_BITS + 3) as i32);
            o.fill(v);
            continue;
        }
        let z2 = w[2] as i64;
        let z3 = w[6] as i64;
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * -FIX_1_847759065;
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let tmp0 = (w[0] as i64 + w[4] as i64) << CONST_BITS;
        let tmp1 = (w[0] as i64 - w[4] as i64) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;

        let (t0, t1, t2, t3) = odd_part(w[7] as i64, w[5] as i64, w[3] as i64, w[1] as i64);

        let n = CONST_BITS + PASS1_BITS + 3;
        o[0] = range_limit(descale(tmp10 + t3, n) as i32);
        o[7] = range_limit(descale(tmp10 - t3, n) as i32);
        o[1] = range_limit(descale(tmp11 + t2, n) as i32);
        o[6] = range_limit(descale(tmp11 - t2, n) as i32);
        o[2] = range_limit(descale(tmp12 + t1, n) as i32);
        o[5] = range_limit(descale(tmp12 - t1, n) as i32);
        o[3] = range_limit(descale(tmp13 + t0, n) as i32);
        o[4] = range_limit(descale(tmp13 - t0, n) as i32);
    }
}

/// Odd part of the islow butterfly; inputs are y7, y5, y3, y1.
#[inline(always)]
fn odd_part(tmp0: i64, tmp1: i64, tmp2: i64, tmp3: i64) -> (i64, i64, i64, i64) {
    let z1 = tmp0 + tmp3;
    let z2 = tmp1 + tmp2;
    let z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    let tmp0 = tmp0 * FIX_0_298631336;
    let tmp1 = tmp1 * FIX_2_053119869;
    let tmp2 = tmp2 * FIX_3_072711026;
    let tmp3 = tmp3 * FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    (
        tmp0 + z1 + z3,
        tmp1 + z2 + z4,
        tmp2 + z2 + z3,
        tmp3 + z1 + z4,
    )
}

/// Default IDCT (see module docs).
#[inline]
pub fn idct_islow(coef: &[i16], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    if cfg!(feature = "c-idct") {
        idct_islow_c(coef, quant, out, stride)
    } else {
        idct_islow_simd(coef, quant, out, stride)
    }
}

#[inline(always)]
fn sat16(x: i32) -> i16 {
    x.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// One 1-D pass of libjpeg-turbo's SSE2/AVX2 islow kernel on 16-bit inputs.
#[inline(always)]
fn simd_1d(i: [i16; 8], n: u32) -> [i16; 8] {
    const F054: i32 = FIX_0_541196100 as i32;
    const F076: i32 = FIX_0_765366865 as i32;
    const F184: i32 = FIX_1_847759065 as i32;
    const F117: i32 = FIX_1_175875602 as i32;
    const F196: i32 = FIX_1_961570560 as i32;
    const F039: i32 = FIX_0_390180644 as i32;
    const F029: i32 = FIX_0_298631336 as i32;
    const F089: i32 = FIX_0_899976223 as i32;
    const F205: i32 = FIX_2_053119869 as i32;
    const F256: i32 = FIX_2_562915447 as i32;
    const F150: i32 = FIX_1_501321110 as i32;
    const F307: i32 = FIX_3_072711026 as i32;
    let w = |k: usize| i[k] as i32;
    // pmaddwd pairs: exact in i32 for these constants.
    let tmp3 = w(2) * (F054 + F076) + w(6) * F054;
    let tmp2 = w(2) * F054 + w(6) * (F054 - F184);
    let tmp0 = (i[0].wrapping_add(i[4]) as i32) << CONST_BITS;
    let tmp1 = (i[0].wrapping_sub(i[4]) as i32) << CONST_BITS;
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);

    let z3 = i[7].wrapping_add(i[3]) as i32;
    let z4 = i[5].wrapping_add(i[1]) as i32;
    let z3p = z3 * (F117 - F196) + z4 * F117;
    let z4p = z3 * F117 + z4 * (F117 - F039);
    let t0 = (w(7) * (F029 - F089) + w(1) * -F089).wrapping_add(z3p);
    let t1 = (w(5) * (F205 - F256) + w(3) * -F256).wrapping_add(z4p);
    let t3 = (w(7) * -F089 + w(1) * (F150 - F089)).wrapping_add(z4p);
    let t2 = (w(5) * -F256 + w(3) * (F307 - F256)).wrapping_add(z3p);

    let d = |x: i32| sat16(x.wrapping_add(1 << (n - 1)) >> n);
    [
        d(tmp10.wrapping_add(t3)),
        d(tmp11.wrapping_add(t2)),
        d(tmp12.wrapping_add(t1)),
        d(tmp13.wrapping_add(t0)),
        d(tmp13.wrapping_sub(t0)),
        d(tmp12.wrapping_sub(t1)),
        d(tmp11.wrapping_sub(t2)),
        d(tmp10.wrapping_sub(t3)),
    ]
}

/// libjpeg-turbo x86-64 SIMD islow emulation (see module docs).
pub fn idct_islow_simd(coef: &[i16], quant: &[i16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i16; 64];
    let dq = |k: usize| coef[k].wrapping_mul(quant[k]);
    if coef[8..64].iter().all(|&c| c == 0) {
        for c in 0..8 {
            let v = dq(c).wrapping_shl(PASS1_BITS);
            for r in 0..8 {
                ws[r * 8 + c] = v;
            }
        }
    } else {
        for c in 0..8 {
            let col = simd_1d(
                std::array::from_fn(|r| dq(r * 8 + c)),
                CONST_BITS - PASS1_BITS,
            );
            for r in 0..8 {
                ws[r * 8 + c] = col[r];
            }
        }
    }
    for r in 0..8 {
        let row = simd_1d(
            std::array::from_fn(|c| ws[r * 8 + c]),
            CONST_BITS + PASS1_BITS + 3,
        );
        let o = &mut out[r * stride..r * stride + 8];
        for c in 0..8 {
            o[c] = (row[c].clamp(-128, 127) + 128) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_only_block() {
        let mut coef = [0i16; 64];
        coef[0] = 10;
        let mut q = [1i16; 64];
        q[0] = 16;
        for f in [idct_islow_c, idct_islow_simd] {
            let mut out = [0u8; 64];
            f(&coef, &q, &mut out, 8);
            // 10*16/8 = 20 -> 148
            assert!(out.iter().all(|&v| v == 148));
        }
    }

    #[test]
    fn range_limit_wraps_like_libjpeg() {
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(300), 255);
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(-300), 0);
        assert_eq!(range_limit(600), 0); // wraps in libjpeg's table
        assert_eq!(range_limit(-600), 255);
    }
}

#[cfg(test)]
mod agree {
    use super::*;

    /// Pseudo-random blocks with realistic magnitudes: the C and SIMD variants must agree.
    #[test]
    fn c_and_simd_agree_on_realistic_blocks() {
        let mut seed: u32 = 12345;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut tested = 0;
        for _ in 0..20000 {
            let mut coef = [0i16; 64];
            let mut q = [0i16; 64];
            let nz = (rnd() % 64) as usize;
            for k in 0..64 {
                q[k] = (1 + rnd() % 40) as i16;
                if k <= nz && rnd() % 3 != 0 {
                    let mag = if k == 0 { 64 } else { 24 };
                    coef[k] = ((rnd() % (2 * mag + 1)) as i32 - mag as i32) as i16;
                }
            }
            // |output| <= sum|dequantised| / 4: stay clear of the C table's wrap at 512.
            let l1: i32 = (0..64).map(|k| (coef[k] as i32 * q[k] as i32).abs()).sum();
            if l1 / 4 >= 500 {
                continue;
            }
            tested += 1;
            let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
            idct_islow_c(&coef, &q, &mut a, 8);
            idct_islow_simd(&coef, &q, &mut b, 8);
            assert_eq!(a, b, "coef {coef:?} q {q:?}");
        }
        assert!(tested > 2000, "only {tested} blocks tested");
    }
}
