//! The plain references the kernels are tested against: the same results from Burn's
//! own operations and host-side conversions, with nothing of the kernels' code.

use burn::tensor::Tensor;

use crate::{BlockFormat, BlockMatrix, PackedHalves};

/// The packed matrix widened to f32 on the host, uploaded as a dense tensor.
pub async fn unpack_halves(w: &PackedHalves) -> Tensor<2> {
    let [rows, cols] = w.dims();
    let data = w.words.clone().into_data_async().await.expect("packed words read back");
    let words: Vec<u32> = data.try_into_vec().expect("packed words are u32");
    let values: Vec<f32> = words
        .iter()
        .flat_map(|&word| [w.kind.value_of(word as u16), w.kind.value_of((word >> 16) as u16)])
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, [rows, cols]), &w.words.device())
}

/// `x · Wᵀ` with Burn's matmul on the widened weight.
pub async fn matvec_packed(x: Tensor<2>, w: &PackedHalves) -> Tensor<2> {
    x.matmul(unpack_halves(w).await.transpose())
}

/// `x · Wᵀ` as the CPU backend defines it for bf16 W with [`PackedHalves::round_x`]
/// (`flex_bf16.rs`): each value of x first rounded to bf16, then Burn's matmul on the
/// widened weight.
pub async fn matvec_packed_rounded(x: Tensor<2>, w: &PackedHalves) -> Tensor<2> {
    let dims = x.dims();
    let device = x.device();
    let values: Vec<f32> = x.into_data_async().await.expect("x read back").try_into_vec().expect("f32 x");
    let rounded: Vec<f32> = values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    matvec_packed(Tensor::from_data(burn::tensor::TensorData::new(rounded, dims), &device), w).await
}

/// The block matrix's values computed on the host (`BlockFormat::dequantize`), uploaded
/// as a dense tensor.
pub async fn dequantize_blocks(w: &BlockMatrix) -> Tensor<2> {
    let [rows, cols] = w.dims();
    let data = w.words.clone().into_data_async().await.expect("block words read back");
    let words: Vec<u32> = data.try_into_vec().expect("block words are u32");
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut values = vec![0f32; rows * cols];
    if w.interleaved {
        crate::interleaved::dequantize(&bytes, &mut values, rows, w.format);
    } else {
        w.format.dequantize(&bytes, &mut values);
    }
    Tensor::from_data(burn::tensor::TensorData::new(values, [rows, cols]), &w.words.device())
}

/// `x · Wᵀ` with Burn's matmul on the dequantized weight.
pub async fn matvec_blocks(x: Tensor<2>, w: &BlockMatrix) -> Tensor<2> {
    x.matmul(dequantize_blocks(w).await.transpose())
}

/// `x · Wᵀ` as the CPU backend defines it: x's rows first rounded to q8_0 blocks (each
/// value replaced by its quant times its block's scale), then Burn's matmul on the
/// dequantized weight.
pub async fn matvec_blocks_rounded(x: Tensor<2>, w: &BlockMatrix) -> Tensor<2> {
    let [rows, cols] = x.dims();
    let device = x.device();
    let values: Vec<f32> = x.into_data_async().await.expect("x read back").try_into_vec().expect("f32 x");
    let mut blocks = Vec::new();
    BlockFormat::Q8_0.quantize(&values, &mut blocks);
    let mut rounded = vec![0f32; rows * cols];
    BlockFormat::Q8_0.dequantize(&blocks, &mut rounded);
    matvec_blocks(Tensor::from_data(burn::tensor::TensorData::new(rounded, [rows, cols]), &device), w).await
}

/// RMSNorm with Burn's operations, as the model computed it before the kernel.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f32) -> Tensor<D> {
    let mean_square = x.clone().powi_scalar(2).mean_dim(D - 1);
    let inv = mean_square.add_scalar(eps).sqrt().recip();
    let mut shape = [1i32; D];
    shape[D - 1] = -1;
    x.mul(inv).mul(weight.clone().reshape(shape))
}

/// The rotary embedding with Burn's operations (slices, products, a stack), as the
/// model computed it before the kernel. x [B, S, H, hd]; cos, sin [positions, hd/2].
pub fn rope(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>, start: usize) -> Tensor<4> {
    let [b, s, h, hd] = x.dims();
    let half = hd / 2;
    let cos = cos.clone().slice([start..start + s, 0..half]).reshape([1, s, 1, half]);
    let sin = sin.clone().slice([start..start + s, 0..half]).reshape([1, s, 1, half]);
    let pairs = x.reshape([b, s, h, half, 2]);
    let x0 = pairs.clone().slice([0..b, 0..s, 0..h, 0..half, 0..1]).reshape([b, s, h, half]);
    let x1 = pairs.slice([0..b, 0..s, 0..h, 0..half, 1..2]).reshape([b, s, h, half]);
    let r0 = x0.clone().mul(cos.clone()).sub(x1.clone().mul(sin.clone()));
    let r1 = x0.mul(sin).add(x1.mul(cos));
    Tensor::stack::<5>(vec![r0, r1], 4).reshape([b, s, h, hd])
}

/// `silu(gate) ⊙ up` with Burn's operations, as the model computed it before the kernel.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(gate).mul(up)
}

/// Causal attention with Burn's operations (scores, a mask, softmax, the weighted sum),
/// with the arguments of [`crate::attention`].
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, keys: usize, start: usize, seq: usize, scale: f32) -> Tensor<3> {
    let [g, r, hd] = q.dims();
    let (k, v) = (k.slice([0..g, 0..keys, 0..hd]), v.slice([0..g, 0..keys, 0..hd]));
    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(scale); // [G, R, keys]
    let device = scores.device();
    let row_pos: Vec<i64> = (0..r).map(|i| (start + i % seq) as i64).collect();
    let row_pos = Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(row_pos, [r]), &device);
    let key_pos = Tensor::<1, burn::tensor::Int>::arange(0..keys as i64, &device);
    let hidden = key_pos.reshape([1, keys]).expand([r, keys]).greater(row_pos.reshape([r, 1]).expand([r, keys]));
    let scores = scores.mask_fill(hidden.unsqueeze::<3>().expand([g, r, keys]), f32::NEG_INFINITY);
    burn::tensor::activation::softmax(scores, 2).matmul(v)
}

/// Mixtral's sparse FFN with Burn's operations, token by token, routed on the host by
/// [`crate::route_token`] (the rule the model's prefill path uses), with the arguments
/// of [`crate::moe_ffn`].
pub async fn moe_ffn(x: Tensor<2>, gate_scores: Tensor<2>, w1: &Tensor<2>, w2: &Tensor<2>, w3: &Tensor<2>, k: usize) -> Tensor<2> {
    let [n, d] = x.dims();
    let e = gate_scores.dims()[1];
    let f = w1.dims()[0] / e;
    let scores: Vec<f32> = gate_scores.into_data_async().await.expect("scores read back").try_into_vec().expect("f32 scores");
    let expert = |w: &Tensor<2>, e: usize| w.clone().narrow(0, e * f, f); // [F, D]
    let rows: Vec<Tensor<2>> = (0..n)
        .map(|t| {
            let xt = x.clone().narrow(0, t, 1); // [1, D]
            let mut y = Tensor::<2>::zeros([1, d], &xt.device());
            for (ex, weight) in crate::route_token(&scores[t * e..(t + 1) * e], k) {
                let h = swiglu(xt.clone().matmul(expert(w1, ex).transpose()), xt.clone().matmul(expert(w3, ex).transpose()));
                y = y.add(h.matmul(expert(w2, ex)).mul_scalar(weight));
            }
            y
        })
        .collect();
    Tensor::cat(rows, 0)
}
