//! Inter-block smoothing of progressive JPEGs whose low-frequency AC coefficients are not
//! (fully) transmitted: libjpeg-turbo's jdcoefct.c `decompress_smooth_data` (the 5x5-DC
//! version of libjpeg-turbo >= 2.1), reproduced including its row-index quirks.

/// Per-component information needed for smoothing one component.
pub struct SmoothComp<'a> {
    pub coefs: &'a [i16],
    /// Blocks per allocated row, allocated block rows.
    pub stride: usize,
    /// width_in_blocks / height_in_blocks
    pub bw: usize,
    pub bh: usize,
    pub v: usize,
    /// quantval (natural order), as JLONG.
    pub quant: [u16; 64],
    /// coef_bits latched for this component (zigzag 0..10) and for the previous scan.
    pub bits: [i32; 10],
    pub prev_bits: [i32; 10],
}

/// Calls `emit(block_row, block_col, workspace)` for every real block of the component, with
/// the smoothed coefficient block that libjpeg passes to the IDCT.
pub fn smooth_component(
    c: &SmoothComp,
    total_imcu_rows: usize,
    last_good_imcu_row: usize,
    mut emit: impl FnMut(usize, usize, &[i16; 64]),
) {
    let last_imcu = total_imcu_rows - 1;
    let last_col = c.bw as i64 - 1;
    let q = |pos: usize| c.quant[pos] as i64;
    let (q00, q01, q10, q20, q11, q02) = (q(0), q(1), q(8), q(16), q(9), q(2));
    let (q03, q12, q21, q30) = (q(3), q(10), q(17), q(24));
    let dc_at = |row: usize, col: i64| -> i32 {
        let col = col.clamp(0, last_col.max(0)) as usize;
        let row = row.min(c.coefs.len() / 64 / c.stride.max(1) - 1);
        c.coefs[(row * c.stride + col) * 64] as i32
    };

    for imcu in 0..total_imcu_rows {
        let block_rows = if imcu < last_imcu {
            c.v
        } else {
            match c.bh % c.v {
                0 => c.v,
                r => r,
            }
        };
        let bits = if imcu > last_good_imcu_row {
            &c.prev_bits
        } else {
            &c.bits
        };
        let change_dc = bits[1..10].iter().all(|&b| b == -1);
        let image_block_rows = (block_rows * total_imcu_rows) as i64;
        for block_row in 0..block_rows {
            let actual = imcu * c.v + block_row;
            if actual >= c.bh {
                continue;
            }
            let ibr = (imcu * block_rows + block_row) as i64;
            let prev = if ibr > 0 { actual - 1 } else { actual };
            let pprev = if ibr > 1 { actual - 2 } else { prev };
            let next = if ibr < image_block_rows - 1 {
                actual + 1
            } else {
                actual
            };
            let nnext = if ibr < image_block_rows - 2 {
                actual + 2
            } else {
                next
            };
            let rows = [pprev, prev, actual, next, nnext];
            for b in 0..c.bw {
                // dc[r][k] = DC(5*r + k + 1) in libjpeg's naming.
                let mut dc = [[0i64; 5]; 5];
                for (dc_row, &row) in dc.iter_mut().zip(rows.iter()) {
                    for (k, v) in dc_row.iter_mut().enumerate() {
                        *v = dc_at(row, b as i64 + k as i64 - 2) as i64;
                    }
                }
                let d = |n: usize| dc[(n - 1) / 5][(n - 1) % 5];
                let off = (actual * c.stride + b) * 64;
                let mut ws = [0i16; 64];
                ws.copy_from_slice(&c.coefs[off..off + 64]);

                // AC01
                if bits[1] != 0 && ws[1] == 0 {
                    let num = q00
                        * if change_dc {
                            -d(1) - d(2) + d(4) + d(5) - 3 * d(6) + 13 * d(7) - 13 * d(9)
                                + 3 * d(10)
                                - 3 * d(11)
                                + 38 * d(12)
                                - 38 * d(14)
                                + 3 * d(15)
                                - 3 * d(16)
                                + 13 * d(17)
                                - 13 * d(19)
                                + 3 * d(20)
                                - d(21)
                                - d(22)
                                + d(24)
                                + d(25)
                        } else {
                            -7 * d(11) + 50 * d(12) - 50 * d(14) + 7 * d(15)
                        };
                    ws[1] = predict(num, q01, bits[1]);
                }
                // AC10
                if bits[2] != 0 && ws[8] == 0 {
                    let num = q00
                        * if change_dc {
                            -d(1) - 3 * d(2) - 3 * d(3) - 3 * d(4) - d(5) - d(6)
                                + 13 * d(7)
                                + 38 * d(8)
                                + 13 * d(9)
                                - d(10)
                                + d(16)
                                - 13 * d(17)
                                - 38 * d(18)
                                - 13 * d(19)
                                + d(20)
                                + d(21)
                                + 3 * d(22)
                                + 3 * d(23)
                                + 3 * d(24)
                                + d(25)
                        } else {
                            -7 * d(3) + 50 * d(8) - 50 * d(18) + 7 * d(23)
                        };
                    ws[8] = predict(num, q10, bits[2]);
                }
                // AC20
                if bits[3] != 0 && ws[16] == 0 {
                    let num = q00
                        * if change_dc {
                            d(3) + 2 * d(7) + 7 * d(8) + 2 * d(9)
                                - 5 * d(12)
                                - 14 * d(13)
                                - 5 * d(14)
                                + 2 * d(17)
                                + 7 * d(18)
                                + 2 * d(19)
                                + d(23)
                        } else {
                            -d(3) + 13 * d(8) - 24 * d(13) + 13 * d(18) - d(23)
                        };
                    ws[16] = predict(num, q20, bits[3]);
                }
                // AC11
                if bits[4] != 0 && ws[9] == 0 {
                    let num = q00
                        * if change_dc {
                            -d(1) + d(5) + 9 * d(7) - 9 * d(9) - 9 * d(17) + 9 * d(19) + d(21)
                                - d(25)
                        } else {
                            d(10) + d(16) - 10 * d(17) + 10 * d(19) - d(2) - d(20) + d(22) - d(24)
                                + d(4)
                                - d(6)
                                + 10 * d(7)
                                - 10 * d(9)
                        };
                    ws[9] = predict(num, q11, bits[4]);
                }
                // AC02
                if bits[5] != 0 && ws[2] == 0 {
                    let num = q00
                        * if change_dc {
                            2 * d(7) - 5 * d(8) + 2 * d(9) + d(11) + 7 * d(12) - 14 * d(13)
                                + 7 * d(14)
                                + d(15)
                                + 2 * d(17)
                                - 5 * d(18)
                                + 2 * d(19)
                        } else {
                            -d(11) + 13 * d(12) - 24 * d(13) + 13 * d(14) - d(15)
                        };
                    ws[2] = predict(num, q02, bits[5]);
                }
                if change_dc {
                    // AC03
                    if bits[6] != 0 && ws[3] == 0 {
                        let num = q00 * (d(7) - d(9) + 2 * d(12) - 2 * d(14) + d(17) - d(19));
                        ws[3] = predict(num, q03, bits[6]);
                    }
                    // AC12
                    if bits[7] != 0 && ws[10] == 0 {
                        let num = q00 * (d(7) - 3 * d(8) + d(9) - d(17) + 3 * d(18) - d(19));
                        ws[10] = predict(num, q12, bits[7]);
                    }
                    // AC21
                    if bits[8] != 0 && ws[17] == 0 {
                        let num = q00 * (d(7) - d(9) - 3 * d(12) + 3 * d(14) + d(17) - d(19));
                        ws[17] = predict(num, q21, bits[8]);
                    }
                    // AC30
                    if bits[9] != 0 && ws[24] == 0 {
                        let num = q00 * (d(7) + 2 * d(8) + d(9) - d(17) - 2 * d(18) - d(19));
                        ws[24] = predict(num, q30, bits[9]);
                    }
                    // DC
                    let num = q00
                        * (-2 * d(1) - 6 * d(2) - 8 * d(3) - 6 * d(4) - 2 * d(5) - 6 * d(6)
                            + 6 * d(7)
                            + 42 * d(8)
                            + 6 * d(9)
                            - 6 * d(10)
                            - 8 * d(11)
                            + 42 * d(12)
                            + 152 * d(13)
                            + 42 * d(14)
                            - 8 * d(15)
                            - 6 * d(16)
                            + 6 * d(17)
                            + 42 * d(18)
                            + 6 * d(19)
                            - 6 * d(20)
                            - 2 * d(21)
                            - 6 * d(22)
                            - 8 * d(23)
                            - 6 * d(24)
                            - 2 * d(25));
                    ws[0] = predict(num, q00, 0);
                }
                emit(actual, b, &ws);
            }
        }
    }
}

/// `pred` computation of decompress_smooth_data (C truncating division, Al clamp, JCOEF cast).
fn predict(num: i64, q: i64, al: i32) -> i16 {
    let cap = |p: i64| {
        if al > 0 && p >= (1i64 << al) {
            (1i64 << al) - 1
        } else {
            p
        }
    };
    let p = if num >= 0 {
        cap(((q << 7) + num) / (q << 8))
    } else {
        -cap(((q << 7) - num) / (q << 8))
    };
    p as i32 as i16
}
