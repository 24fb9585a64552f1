//! Decode-step products on the CPU backend, on their own: the seven matrices of
//! TinyLlama-1.1B's layers (dim 2048, FFN 5632, 4 KV heads of 64) for `LAYERS` layers, one
//! row of x each, in every weight format the CPU multiplies directly. Prints the time
//! per layer and the weight bytes read per second, the figure a decode step is bound by.
//!
//!     [FORMATS=bf16,q4_0] [ROWS=128] cargo run -p sphinx-shaders --example cpu_matvec [-- LAYERS [REPEATS]]
//!
//! (defaults: every format, one row of x (a decode step; ROWS=128 times a prefill's
//! products instead), 4 layers, the median of 20 passes).
//!
//! A measuring tool for kernel work (docs/design.md §9), not a test: `sphinx bench` and
//! `bench/` measure the whole model against the peers.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use sphinx_shaders::{matvec_blocks, matvec_packed, BlockFormat, BlockMatrix, HalfKind, PackedHalves};

/// [n_out, n_in] of a layer's products: wq, wk, wv, wo, w1, w3, w2.
const LAYER: [[usize; 2]; 7] = [[2048, 2048], [256, 2048], [256, 2048], [2048, 2048], [5632, 2048], [5632, 2048], [2048, 5632]];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        })
        .collect()
}

enum Weights {
    Halves(PackedHalves),
    Blocks(BlockMatrix),
}

impl Weights {
    fn new(format: &str, shape: [usize; 2], seed: u64, device: &Device) -> Self {
        let w = values(shape[0] * shape[1], seed);
        match format {
            "bf16" | "bf16-rounded-x" => Weights::Halves(PackedHalves::from_f32(&w, HalfKind::Bf16, shape, device).expect("even columns").with_x_rounded(format != "bf16")),
            "f16" => Weights::Halves(PackedHalves::from_f32(&w, HalfKind::F16, shape, device).expect("even columns")),
            name => {
                let block = BlockFormat::from_name(name).expect("a block format");
                let mut bytes = Vec::new();
                block.quantize(&w, &mut bytes);
                Weights::Blocks(BlockMatrix::for_products(bytes, block, shape, device).expect("whole blocks"))
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Weights::Halves(w) => w.device_bytes(),
            Weights::Blocks(w) => w.device_bytes(),
        }
    }

    fn times(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Weights::Halves(w) => matvec_packed(x, w),
            Weights::Blocks(w) => matvec_blocks(x, w),
        }
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("LAYERS [REPEATS]")).collect();
    let (layers, repeats) = (args.first().copied().unwrap_or(4), args.get(1).copied().unwrap_or(20));
    let device = Device::flex();
    let rows: usize = std::env::var("ROWS").map_or(1, |r| r.parse().expect("ROWS: a number of rows of x"));
    let formats = std::env::var("FORMATS").unwrap_or_else(|_| "bf16,bf16-rounded-x,f16,q8_0,q4_0".into());
    for format in formats.split(',') {
        // Each product's W [n_out, n_in] and its rows of x [rows, n_in].
        let mut products = Vec::new();
        for layer in 0..layers {
            for (i, &shape) in LAYER.iter().enumerate() {
                let w = Weights::new(format, shape, (layer * LAYER.len() + i) as u64, &device);
                let x = Tensor::<2>::from_data(TensorData::new(values(rows * shape[1], 99), [rows, shape[1]]), &device);
                products.push((w, x));
            }
        }
        let bytes: usize = products.iter().map(|(w, _)| w.bytes()).sum();
        let pass = || {
            for (w, x) in &products {
                let _ = w.times(x.clone());
            }
        };
        pass();
        let mut times: Vec<f64> = (0..repeats)
            .map(|_| {
                let t = Instant::now();
                pass();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{format:>15}: {:.3} ms/layer, {:.1} GB/s of weights, 22 layers {:.1} ms ({:.1} tok/s bound)",
            median / layers as f64 * 1e3,
            bytes as f64 / median / 1e9,
            median / layers as f64 * 22e3,
            (rows * layers) as f64 / (median * 22.0)
        );
    }
}
