//! The project's kernels (`sphinx-shaders`) against their plain references, on the CPU
//! backend and on wgpu (lavapipe in CI), on shapes that hit the edge cases: one row,
//! one word, odd word counts, rows longer than a workgroup's stride, more outputs than
//! one grid dimension holds, and every 16-bit pattern.

use burn::tensor::{Device, Tensor, TensorData};
use sphinx_shaders::{argmax, attention, matvec_packed, moe_ffn, moe_routes, reference, rms_norm, rope, swiglu, unpack_halves, HalfKind, PackedHalves, MAX_ATTENTION_HEAD_DIM};
use sphinx_tests::devices;

/// Deterministic values in [-1, 1) (a 64-bit LCG; the tests need no crate for it).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

#[test]
fn unpack_halves_widens_every_16_bit_pattern_exactly() {
    // All 65536 patterns: zeros, subnormals, normals, infinities and NaNs of both formats.
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
    for (name, device) in devices() {
        for kind in [HalfKind::F16, HalfKind::Bf16] {
            let w = PackedHalves::from_le_bytes(bytes.clone(), kind, [256, 256], &device).expect("256 x 256 halves");
            let got = read(unpack_halves(&w));
            for (bits, v) in got.iter().enumerate() {
                let want = kind.value_of(bits as u16);
                assert!(
                    v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()),
                    "{name} {}: pattern {bits:#06x} gave {v:e}, want {want:e}",
                    kind.name()
                );
            }
        }
    }
}

fn check_matvec(device: &Device, name: &str, kind: HalfKind, shape: [usize; 3]) {
    check_matvec_rounding(device, name, kind, shape, false);
    if kind == HalfKind::Bf16 {
        check_matvec_rounding(device, name, kind, shape, true);
    }
}

/// `round_x`: x rounded to bf16 on the CPU ([`PackedHalves::round_x`]; the GPU ignores it).
fn check_matvec_rounding(device: &Device, name: &str, kind: HalfKind, [rows, n_out, inp]: [usize; 3], round_x: bool) {
    let seed = (rows * 1_000_003 + n_out * 1009 + inp) as u64;
    let x_values = values(rows * inp, seed);
    let w_values = values(n_out * inp, seed + 1);
    let w = PackedHalves::from_f32(&w_values, kind, [n_out, inp], device).expect("even columns").with_x_rounded(round_x);
    let x = Tensor::<2>::from_data(TensorData::new(x_values.clone(), [rows, inp]), device);
    let got = read(matvec_packed(x.clone(), &w));
    // The CPU multiplies any number of rows (flex_halves.rs; with round_x, bf16 W by x
    // rounded to bf16: flex_bf16.rs); a CPU driver (lavapipe) takes any number in row tiles.
    assert_eq!(w.multiplies_any_rows(), name == "cpu" || sphinx_tests::wgpu_is_cpu_driver(), "{name} {}", kind.name());
    let want = read(match name == "cpu" && kind == HalfKind::Bf16 && round_x {
        true => pollster::block_on(reference::matvec_packed_rounded(x, &w)),
        false => pollster::block_on(reference::matvec_packed(x, &w)),
    });
    assert_eq!(got.len(), rows * n_out);
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        // Only the summation order differs: bound the error by the sum of |terms|.
        let (row, o) = (i / n_out, i % n_out);
        let magnitude: f32 = (0..inp).map(|k| (x_values[row * inp + k] * w_values[o * inp + k]).abs()).sum();
        let tol = 4.0 * f32::EPSILON * magnitude * (inp as f32).sqrt() + 1e-30;
        assert!((g - r).abs() <= tol, "{name} {} {rows}x{n_out}x{inp}: out[{row},{o}] = {g}, reference {r}", kind.name());
    }
}

#[test]
fn matvec_packed_matches_matmul_on_the_widened_weight() {
    let shapes = [
        [1, 1, 2],      // one word
        [1, 7, 6],      // odd outputs, three words
        [1, 130, 4098], // 2049 words: beyond one workgroup's stride, odd
        [3, 65, 130],   // a few rows at once
        [1, 256, 2048], // a decode step of a small LLM
        [9, 10, 70],    // a prefill on the CPU: a partial tile of x rows, of W rows, of columns
        [2, 12, 66],    // four outputs per GPU unit (12 is no multiple of 8)
        [5, 32, 128],   // on the GPU, one tile of 16 rows (11 past the end) × 16 outputs per unit
        [17, 48, 66],   // two row tiles, the second holding one row
    ];
    for (name, device) in devices() {
        for kind in [HalfKind::F16, HalfKind::Bf16] {
            for shape in shapes {
                check_matvec(&device, name, kind, shape);
            }
        }
    }
}

#[test]
fn matvec_packed_covers_many_outputs_and_a_partial_last_workgroup() {
    // 70000 outputs: on the GPU 8750 units of eight outputs, 274 cubes of 32 units, the
    // last one partial. (The grid's wrap into a second dimension is exercised by
    // rms_norm's 70000 rows, one workgroup each.)
    for (name, device) in devices() {
        check_matvec(&device, name, HalfKind::Bf16, [1, 70_000, 4]);
        // More row tiles of 16 than one grid dimension holds (65,535): units step through them.
        check_matvec(&device, name, HalfKind::F16, [65_535 * 16 + 20, 2, 2]);
    }
}

#[test]
fn packing_refuses_odd_columns_and_wrong_byte_counts() {
    let device = Device::flex();
    assert!(PackedHalves::from_le_bytes(vec![0; 6], HalfKind::F16, [1, 3], &device).is_none());
    assert!(PackedHalves::from_le_bytes(vec![0; 6], HalfKind::F16, [2, 2], &device).is_none());
    assert!(PackedHalves::from_le_bytes(vec![0; 8], HalfKind::F16, [2, 2], &device).is_some());
    assert!(PackedHalves::from_le_bytes(vec![0; 8], HalfKind::F16, [usize::MAX, 2], &device).is_none());
}

#[test]
fn rms_norm_matches_burn_ops() {
    // One row, odd widths, a row longer than the workgroup's stride, many rows, and
    // rows beyond one grid dimension (70000 rows of 3).
    for (name, device) in devices() {
        for [rows, d] in [[1, 1], [1, 7], [5, 64], [3, 4097], [130, 288], [70_000, 3]] {
            let x = Tensor::<2>::from_data(TensorData::new(values(rows * d, (rows + d) as u64), [rows, d]), &device);
            let w = Tensor::<1>::from_data(TensorData::new(values(d, d as u64 + 5), [d]), &device);
            let got = read(rms_norm(x.clone(), &w, 1e-5));
            let want = read(reference::rms_norm(x, &w, 1e-5));
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-5 * max_ref.max(1.0), "{name} rms_norm {rows}x{d}: max error {err}");
        }
    }
}

#[test]
fn argmax_takes_the_first_largest_value() {
    // torch.argmax's rule, written out: the first index of the largest value. Values on a
    // coarse grid tie often; rows of one value, of −∞ only (shorter than a workgroup),
    // a vocabulary-sized row with its maximum last, and more rows than one grid dimension.
    let first_max = |row: &[f32]| row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best }) as i64;
    for (name, device) in devices() {
        for [rows, n] in [[1, 1], [4, 7], [3, 300], [2, 32_000], [70_000, 3]] {
            let mut xs: Vec<f32> = values(rows * n, (rows * n) as u64).iter().map(|v| (v * 4.0).round()).collect();
            if n == 7 {
                xs[..7].fill(f32::NEG_INFINITY);
            }
            if n == 32_000 {
                xs[2 * n - 1] = 10.0;
            }
            let got = argmax(Tensor::<2>::from_data(TensorData::new(xs.clone(), [rows, n]), &device));
            let got = got.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
            let want: Vec<i64> = xs.chunks(n).map(first_max).collect();
            assert_eq!(got, want, "{name} argmax of {rows}x{n}");
        }
    }
}

#[test]
fn rope_matches_burn_ops() {
    // [B, S, H, hd] at a start position: one token late in the table, a chunk, one head
    // of two dimensions, several batches, more pairs than one grid dimension of cubes.
    let positions = 4096;
    for (name, device) in devices() {
        let table = |seed| Tensor::<2>::from_data(TensorData::new(values(positions * 64, seed), [positions, 64]), &device);
        let (cos, sin) = (table(1), table(2));
        for ([b, s, h, hd], start) in [([1, 1, 8, 128], 4000), ([1, 37, 4, 128], 5), ([1, 3, 1, 2], 0), ([2, 5, 3, 16], 100), ([1, 300, 32, 128], 17)] {
            let x = Tensor::<4>::from_data(TensorData::new(values(b * s * h * hd, (s + start) as u64), [b, s, h, hd]), &device);
            let (cos, sin) = (cos.clone().narrow(1, 0, hd / 2), sin.clone().narrow(1, 0, hd / 2));
            let got = rope(x.clone(), &cos, &sin, start).into_data().try_into_vec::<f32>().unwrap();
            let want = reference::rope(x, &cos, &sin, start).into_data().try_into_vec::<f32>().unwrap();
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-6, "{name} rope {b}x{s}x{h}x{hd} from {start}: max error {err}");
        }
    }
}

#[test]
fn swiglu_matches_burn_ops() {
    // One value, a partial workgroup, large gates (e^(−g) under- and overflows), and more
    // values than one grid dimension of workgroups holds (65,535 × 256).
    for (name, device) in devices() {
        for n in [1, 255, 5_000, 16_777_300] {
            let big = |seed| values(n, seed).into_iter().map(|v| v * 120.0).collect::<Vec<f32>>();
            let gate = Tensor::<2>::from_data(TensorData::new(big(n as u64), [1, n]), &device);
            let up = Tensor::<2>::from_data(TensorData::new(values(n, n as u64 + 1), [1, n]), &device);
            let got = read(swiglu(gate.clone(), up.clone()));
            let want = read(reference::swiglu(gate, up));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1.0)));
            assert!(err <= 1e-5, "{name} swiglu of {n}: max error {err}");
        }
    }
}

#[test]
fn attention_matches_burn_ops() {
    // [G, R, hd] queries over [G, capacity, hd] caches with `keys` in use, at `start` with
    // `seq` positions per group: one key; one token late in a half-used cache (8 query
    // heads per kv head); a causal chunk of 3 from position 10; more keys than the
    // workgroup's units many times over; the largest head dimension; scores large
    // enough that a softmax without its max would overflow.
    for (name, device) in devices() {
        for ([g, r, hd, capacity], keys, start, seq, gain) in [
            ([1, 1, 2, 1], 1, 0, 1, 1.0),
            ([4, 8, 64, 256], 150, 149, 1, 1.0),
            ([2, 6, 16, 32], 13, 10, 3, 1.0),
            ([3, 2, 128, 1100], 1037, 1036, 1, 1.0),
            ([1, 4, MAX_ATTENTION_HEAD_DIM, 40], 40, 36, 4, 1.0),
            ([2, 1, 32, 64], 64, 63, 1, 12.0),
        ] {
            let t = |dims: [usize; 3], seed| {
                let v = values(dims.iter().product(), seed).into_iter().map(|x| x * gain).collect::<Vec<f32>>();
                Tensor::<3>::from_data(TensorData::new(v, dims), &device)
            };
            let (q, k, v) = (t([g, r, hd], 1), t([g, capacity, hd], 2), t([g, capacity, hd], 3));
            let scale = 1.0 / (hd as f32).sqrt();
            let got = attention(q.clone(), k.clone(), v.clone(), keys, start, seq, scale).into_data().try_into_vec::<f32>().unwrap();
            let want = reference::attention(q, k, v, keys, start, seq, scale).into_data().try_into_vec::<f32>().unwrap();
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Scores grow with gain², their rounding with them.
            assert!(err <= 1e-5 * gain * max_ref.max(1.0), "{name} attention {g}x{r}x{hd} over {keys} of {capacity} from {start}: max error {err}");
        }
    }
}

/// Mixtral's routing rule written out (docs/spec.md §2.7): softmax in f32, the k most
/// probable experts (the smaller index first on equal probabilities), renormalised.
fn spec_route(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let p: Vec<f32> = exp.iter().map(|e| e / sum).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap().then(a.cmp(&b)));
    let total: f32 = order[..k].iter().map(|&e| p[e]).sum();
    order[..k].iter().map(|&e| (e as u32, p[e] / total)).collect()
}

#[test]
fn moe_routing_takes_the_top_k_with_ties_to_the_smaller_expert() {
    // 8 experts; scores on a coarse grid tie often; one token with all scores equal; k = 1,
    // 2 (SPHINX-MoE) and all 8.
    for (name, device) in devices() {
        for (n, k) in [(1, 2), (6, 2), (5, 1), (3, 8)] {
            let e = 8;
            let mut scores: Vec<f32> = values(n * e, (n * k) as u64).iter().map(|v| (v * 3.0).round()).collect();
            scores[..e].fill(0.5);
            let routes = moe_routes(Tensor::<2>::from_data(TensorData::new(scores.clone(), [n, e]), &device), k);
            let routes: Vec<u32> = routes.into_data().convert::<u32>().try_into_vec::<u32>().unwrap();
            for (t, row) in routes.chunks(2 * k).enumerate() {
                let want = spec_route(&scores[t * e..(t + 1) * e], k);
                let ids: Vec<u32> = want.iter().map(|w| w.0).collect();
                assert_eq!(&row[..k], ids.as_slice(), "{name} token {t} of {n}, k {k}");
                for (j, (_, w)) in want.iter().enumerate() {
                    let got = f32::from_bits(row[k + j]);
                    assert!((got - w).abs() <= 1e-6, "{name} token {t}, expert {j}: weight {got}, want {w}");
                }
            }
        }
    }
}

#[test]
fn moe_ffn_matches_burn_ops() {
    // One token and a decode chunk of 3, odd model and expert widths, k = 2 and 1.
    for (name, device) in devices() {
        for (n, d, f, e, k) in [(1, 40, 24, 8, 2), (3, 33, 17, 8, 2), (2, 16, 8, 4, 1)] {
            let t = |len: usize, seed: u64, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(values(len, seed), shape), &device);
            let x = t(n * d, 1, [n, d]);
            let scores = t(n * e, 2, [n, e]).mul_scalar(4.0);
            let (w1, w2, w3) = (t(e * f * d, 3, [e * f, d]), t(e * f * d, 4, [e * f, d]), t(e * f * d, 5, [e * f, d]));
            let got = read(moe_ffn(x.clone(), scores.clone(), &w1, &w2, &w3, k));
            let want = read(pollster::block_on(reference::moe_ffn(x, scores, &w1, &w2, &w3, k)));
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-5 * max_ref.max(1.0), "{name} moe_ffn n {n}, d {d}, f {f}, k {k}: max error {err}");
        }
    }
}
