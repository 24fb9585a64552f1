//! `sphinx-shaders`: SPHINX's own compute kernels, run through Burn's wgpu backend
//! on every target, each beside a plain-tensor reference implementation and a test
//! that the two agree (docs/design.md §3, §6).
//!
//! The model currently runs entirely on Burn's built-in operations; the first
//! kernels planned here are the decode-time hot spots: a matrix-vector product
//! straight from quantized weights, attention over the KV cache for one new token,
//! and fused RMSNorm + RoPE.
