//! [`SphinxOps`] on Burn's cube backend (wgpu natively and in the browser): launches
//! the kernels of `kernels.rs`.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::{CubeCount, CubeDim};

use crate::{kernels, SphinxOps};

/// Units per cube in the reductions: a power of two within WebGPU's guaranteed 256.
const REDUCE_BLOCK: usize = 64;
/// Units per cube in element-wise kernels.
const ELEMENTWISE_BLOCK: usize = 256;
/// WebGPU guarantees 65535 workgroups per grid dimension.
const MAX_GRID: usize = 65_535;

/// A grid of at least `cubes` cubes over x and y, `z` deep.
fn grid(cubes: usize, z: usize) -> CubeCount {
    let x = cubes.clamp(1, MAX_GRID);
    CubeCount::Static(x as u32, cubes.div_ceil(x).max(1) as u32, z as u32)
}

fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

impl SphinxOps for CubeBackend {
    fn matvec_packed(x: CubeTensor, w: CubeTensor, bf16: bool) -> CubeTensor {
        assert_eq!((x.dtype, w.dtype), (DType::F32, DType::U32), "matvec_packed: x f32, w u32 words");
        let (x, w) = (into_contiguous(x), into_contiguous(w));
        let (rows, inp) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (n_out, words) = (w.meta.shape()[0], w.meta.shape()[1]);
        assert_eq!(inp, 2 * words, "matvec_packed: x has {inp} columns, w {words} words per row");
        assert!(rows <= MAX_GRID, "matvec_packed: {rows} rows exceed one grid dimension");
        let out = empty_f32(&x, Shape::new([rows, n_out]));
        let client = x.client.clone();
        // SAFETY: every index the kernel reads or writes is below the bound it checks
        // (o < n_out, c < words) or fixed by the shapes asserted above.
        unsafe {
            kernels::matvec_packed_kernel::launch_unchecked(
                &client,
                grid(n_out, rows),
                CubeDim::new_1d(REDUCE_BLOCK as u32),
                x.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                REDUCE_BLOCK,
                bf16,
            )
        };
        out
    }

    fn unpack_halves(w: CubeTensor, bf16: bool) -> CubeTensor {
        assert_eq!(w.dtype, DType::U32, "unpack_halves: u32 words");
        let w = into_contiguous(w);
        let (rows, words) = (w.meta.shape()[0], w.meta.shape()[1]);
        let out = empty_f32(&w, Shape::new([rows, 2 * words]));
        let client = w.client.clone();
        // SAFETY: the kernel guards i < w.len(), and out holds 2 · w.len() elements.
        unsafe {
            kernels::unpack_halves_kernel::launch_unchecked(
                &client,
                grid((rows * words).div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                bf16,
            )
        };
        out
    }
}
