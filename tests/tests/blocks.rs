//! llama.cpp's q8_0 and q4_0 block formats (`sphinx_shaders::BlockFormat`) against the
//! numpy implementation of their definition (tests/fixtures/gen/make_block_fixtures.py,
//! itself checked against the `gguf` package's quantizer), and the block kernels against
//! Burn's matmul on the host-dequantized weight, on the CPU backend and on wgpu.

use burn::tensor::{Device, Tensor, TensorData};
use sphinx_core::mixing::{mix_tensors, MixAction};
use sphinx_core::weights::{write_safetensors, DType, HostTensor, MemoryBytes, SafetensorsFile, TensorInfo, WeightSource, BLOCKS_METADATA_KEY};
use sphinx_shaders::{dequantize_blocks, dequantize_rows, matvec_blocks, reference, round_to_q8_0, BlockFormat, BlockMatrix, BLOCK};
use sphinx_tests::craft::safetensors_raw;
use sphinx_tests::{devices, fixtures};

/// Deterministic values in [-1, 1), a few blocks per row scaled up so blocks differ in scale.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if (i / BLOCK) % 3 == 0 { v * 8.0 } else { v }
        })
        .collect()
}

fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

fn quantize(format: BlockFormat, values: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::new();
    format.quantize(values, &mut bytes);
    bytes
}

/// The fixture's tensors as raw bytes, by name.
fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join("reference/blocks.safetensors");
    let file = SafetensorsFile::open(MemoryBytes::new("blocks.safetensors", std::fs::read(&path).expect("blocks fixture"))).expect("a safetensors file");
    pollster::block_on(file.read(name)).unwrap_or_else(|e| panic!("{name}: {e}")).bytes
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn quantizing_and_dequantizing_equal_the_python_reference_bit_for_bit() {
    let input = f32s(&fixture("input"));
    for format in BlockFormat::ALL {
        let want = fixture(format.name());
        let got = quantize(format, &input);
        assert_eq!(got.len(), want.len(), "{}: block bytes", format.name());
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            let block = i / format.block_bytes();
            panic!("{}: block {block} (byte {} of it) is {:?}, the reference {:?}", format.name(), i % format.block_bytes(),
                &got[block * format.block_bytes()..][..format.block_bytes()], &want[block * format.block_bytes()..][..format.block_bytes()]);
        }
        let want_values = f32s(&fixture(&format!("{}_values", format.name())));
        let mut values = vec![0f32; input.len()];
        format.dequantize(&want, &mut values);
        for (i, (g, w)) in values.iter().zip(&want_values).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{}: value {i} is {g:e}, the reference {w:e}", format.name());
        }
    }
}

fn check_matvec(device: &Device, name: &str, format: BlockFormat, [rows, n_out, inp]: [usize; 3]) {
    let seed = (rows * 1_000_003 + n_out * 1009 + inp) as u64;
    check_products(device, name, format, [rows, n_out, inp], &values(rows * inp, seed), seed + 1);
}

/// `matvec_blocks` of x (`x_values`, [rows, inp]) and a weight of `values(.., w_seed)`
/// against Burn's matmul of the two rounded and dequantized on the host.
fn check_products(device: &Device, name: &str, format: BlockFormat, [rows, n_out, inp]: [usize; 3], x_values: &[f32], w_seed: u64) {
    let w_values = values(n_out * inp, w_seed);
    let plain = BlockMatrix::from_blocks(quantize(format, &w_values), format, [n_out, inp], device).expect("whole block pairs");
    // Laid out for products: the CPU interleaves rows in whole groups of eight.
    let w = BlockMatrix::for_products(quantize(format, &w_values), format, [n_out, inp], device).expect("whole block pairs");
    assert_eq!(w.interleaved, name == "cpu" && n_out % 8 == 0, "{name} {} {n_out} rows", format.name());
    assert_eq!(w.multiplies_any_rows(), w.interleaved || (name == "wgpu" && sphinx_tests::wgpu_is_cpu_driver()));
    assert_eq!(w.dims(), [n_out, inp]);
    let mut dequantized = vec![0f32; n_out * inp];
    format.dequantize(&quantize(format, &w_values), &mut dequantized);
    let mut x_rounded = vec![0f32; rows * inp];
    BlockFormat::Q8_0.dequantize(&quantize(BlockFormat::Q8_0, x_values), &mut x_rounded);
    let x = Tensor::<2>::from_data(TensorData::new(x_values.to_vec(), [rows, inp]), device);
    let got = read(matvec_blocks(x.clone(), &w));
    // Every backend rounds x to q8_0 blocks first, as llama.cpp does.
    let want = read(pollster::block_on(reference::matvec_blocks_rounded(x, &plain)));
    assert_eq!(got.len(), rows * n_out);
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        // The kernels scale each block's sum once; the reference scales every value. Both
        // are sums of the same products: bound the difference by the sum of |terms|.
        let (row, o) = (i / n_out, i % n_out);
        let magnitude: f32 = (0..inp).map(|k| (x_rounded[row * inp + k] * dequantized[o * inp + k]).abs()).sum();
        let tol = 8.0 * f32::EPSILON * magnitude * (inp as f32).sqrt() + 1e-30;
        assert!((g - r).abs() <= tol, "{name} {} {rows}x{n_out}x{inp}: out[{row},{o}] = {g}, reference {r}", format.name());
    }
}

#[test]
fn matvec_blocks_matches_matmul_on_the_dequantized_weight() {
    let shapes = [
        [1, 1, 64],     // one pair of blocks
        [1, 7, 192],    // odd outputs, six blocks
        [3, 65, 128],   // a few rows at once, a partial workgroup
        [1, 256, 2048], // a decode step of a small LLM
        [1, 3, 5632],   // TinyLlama's FFN width: 176 blocks
        [3, 24, 192],   // three groups of eight rows (interleaved on the CPU), three rows of x
        [2, 8, 5632],   // one group over TinyLlama's FFN width
        [2, 12, 128],   // four outputs per GPU unit (12 is no multiple of 8)
        [1, 10, 64],    // two outputs per GPU unit
        [1, 328, 64],   // 41 units of eight outputs: two cubes of 32 units, the last partial
        [5, 32, 128],   // on the GPU, one tile of 16 rows (11 past the end) × 16 outputs per unit
        [33, 40, 192],  // three row tiles, the last holding one row; 8 outputs per unit
    ];
    for (name, device) in devices() {
        for format in BlockFormat::ALL {
            for shape in shapes {
                check_matvec(&device, name, format, shape);
            }
        }
    }
}

/// x's rounding to q8_0 where it is delicate, the same on every backend: quants exactly
/// halfway between two integers (rounded away from zero), a block of zeros, a block
/// whose scale is below f16's normal range, one whose scale rounds up to the next power
/// of two, and NaN (skipped for the scale, a zero quant).
#[test]
fn x_is_rounded_to_q8_0_as_on_the_host() {
    let x = delicate_blocks(); // [3, 64]
    for (name, device) in devices() {
        for format in BlockFormat::ALL {
            check_products(&device, name, format, [3, 16, 2 * BLOCK], &x, 11);
        }
    }
}

/// Six blocks of x whose rounding to q8_0 is delicate (see above).
fn delicate_blocks() -> Vec<f32> {
    let ties: Vec<f32> = (0..BLOCK).map(|j| if j == 0 { 127.0 } else { j as f32 - 16.5 }).collect(); // d = 1
    let scaled_ties: Vec<f32> = ties.iter().map(|v| v * 1024.0).collect(); // d = 1024
    let tiny: Vec<f32> = (0..BLOCK).map(|j| (j as f32 - 15.0) * 3e-5).collect(); // d ≈ 3.8e-6, 63.4 · 2⁻²⁴
    let carry: Vec<f32> = (0..BLOCK).map(|j| if j == 3 { -127.0 * 0.999_97 } else { j as f32 * 0.01 }).collect(); // d → 1.0
    let mut nan = values(BLOCK, 7);
    nan[5] = f32::NAN;
    let zeros = vec![0f32; BLOCK];
    [ties, zeros, tiny, scaled_ties, carry, nan].concat()
}

/// `round_to_q8_0` (the x a prefill through widened tiles multiplies) equals the host's
/// quantizer and dequantizer bit for bit, on the delicate blocks above and ordinary rows
/// (on drivers whose f32 division is correctly rounded, as lavapipe's and SwiftShader's).
#[test]
fn round_to_q8_0_equals_the_host_exactly() {
    let x: Vec<f32> = [delicate_blocks(), values(26 * BLOCK, 3)].concat(); // [8, 128]
    let mut want = vec![0f32; x.len()];
    BlockFormat::Q8_0.dequantize(&quantize(BlockFormat::Q8_0, &x), &mut want);
    for (name, device) in devices() {
        let got = read(round_to_q8_0(Tensor::<2>::from_data(TensorData::new(x.clone(), [8, 4 * BLOCK]), &device)));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}: value {i} ({}) is {g:e}, the host's {w:e}", x[i]);
        }
    }
}

#[test]
fn dequantize_blocks_equals_the_host_exactly() {
    // Rows of two blocks, one unit per block over all rows; the last workgroup partial.
    let [rows, cols] = [4099, 64];
    let w_values = values(rows * cols, 7);
    for (name, device) in devices() {
        for format in BlockFormat::ALL {
            let bytes = quantize(format, &w_values);
            let mut want = vec![0f32; rows * cols];
            format.dequantize(&bytes, &mut want);
            let w = BlockMatrix::from_blocks(bytes.clone(), format, [rows, cols], &device).expect("whole block pairs");
            let got = read(dequantize_blocks(w.words.clone(), format));
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), r.to_bits(), "{name} {}: value {i} is {g:e}, the host's {r:e}", format.name());
            }
            // Whole groups of rows of a matrix laid out for products (interleaved on the CPU).
            let groups = rows / 8 * 8;
            let w = BlockMatrix::for_products(bytes[..groups * bytes.len() / rows].to_vec(), format, [groups, cols], &device).expect("whole block pairs");
            let got = read(dequantize_rows(&w, 16, groups - 24));
            for (i, (g, r)) in got.iter().zip(&want[16 * cols..]).enumerate() {
                assert_eq!(g.to_bits(), r.to_bits(), "{name} {} rows 16..: value {i} is {g:e}, the host's {r:e}", format.name());
            }
        }
    }
}

#[test]
fn block_matrices_refuse_partial_blocks_and_wrong_byte_counts() {
    let device = Device::flex();
    for format in BlockFormat::ALL {
        let pair = 2 * format.block_bytes();
        assert!(BlockMatrix::from_blocks(vec![0; pair], format, [1, 64], &device).is_some());
        // One block per row leaves rows that are not whole u32 words.
        assert!(BlockMatrix::from_blocks(vec![0; pair], format, [2, 32], &device).is_none());
        assert!(BlockMatrix::from_blocks(vec![0; pair - 1], format, [1, 64], &device).is_none());
        assert!(BlockMatrix::from_blocks(vec![0; pair], format, [1, 48], &device).is_none());
        assert!(BlockMatrix::from_blocks(vec![0; pair], format, [usize::MAX, 64], &device).is_none());
    }
}

fn open(bytes: Vec<u8>) -> Result<SafetensorsFile<MemoryBytes>, sphinx_core::SphinxError> {
    SafetensorsFile::open(MemoryBytes::new("crafted.safetensors", bytes)).map_err(Into::into)
}

#[test]
fn block_tensors_round_trip_through_safetensors_and_dequantize_on_read() {
    let values = values(4 * 64, 3);
    for format in BlockFormat::ALL {
        let t = HostTensor { dtype: DType::of_blocks(format), shape: vec![4, 64], bytes: quantize(format, &values) };
        let plain = HostTensor { dtype: DType::F32, shape: vec![2], bytes: [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect() };
        let file = write_safetensors(&[("w".into(), t.clone()), ("n".into(), plain)], &Default::default()).expect("written");
        let read = open(file).expect("opens");
        assert_eq!(read.info("w"), Some(TensorInfo { dtype: DType::of_blocks(format), shape: vec![4, 64] }));
        assert_eq!(read.info("n").map(|i| i.dtype), Some(DType::F32));
        let back = pollster::block_on(read.read("w")).expect("reads");
        assert_eq!(back.bytes, t.bytes);
        let mut want = vec![0f32; values.len()];
        format.dequantize(&t.bytes, &mut want);
        assert_eq!(back.to_f32(), Some(want), "{}: f32 readers get the blocks' values", format.name());
    }
}

#[test]
fn bad_block_metadata_is_a_clear_error() {
    let row = |n: usize| vec![0u8; n];
    let file = |blocks: &str, dtype: &str, shape: &str, bytes: usize| {
        let header = format!(
            r#"{{"__metadata__":{{"{BLOCKS_METADATA_KEY}":{blocks:?}}},"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,{bytes}]}}}}"#
        );
        safetensors_raw(&header, &row(bytes))
    };
    let cases = [
        (file(r#"{"w":"q5_k"}"#, "U8", "[1,34]", 34), "unknown block format"),
        (file(r#"{"x":"q8_0"}"#, "U8", "[1,34]", 34), "does not hold"),
        (file(r#"{"w":"q8_0"}"#, "U8", "[1,35]", 35), "whole q8_0 blocks"),
        (file(r#"{"w":"q4_0"}"#, "F32", "[1,9]", 36), "whole q4_0 blocks"),
        (file(r#"{"w":"q8_0"}"#, "U8", "[34]", 34), "whole q8_0 blocks"),
        (file("not json", "U8", "[1,34]", 34), BLOCKS_METADATA_KEY),
    ];
    for (bytes, want) in cases {
        let err = open(bytes).err().expect("refused").to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
}

#[test]
fn quantized_tensors_are_not_mixed() {
    let format = BlockFormat::Q8_0;
    let t = HostTensor { dtype: DType::of_blocks(format), shape: vec![1, 64], bytes: quantize(format, &values(64, 5)) };
    let err = mix_tensors("w", t.clone(), t, MixAction::Beta(0.5)).err().expect("refused").to_string();
    assert!(err.contains("mix the 16- or 32-bit checkpoints first, then quantize"), "{err}");
}
