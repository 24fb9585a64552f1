//! Turns checkpoint tensors into device tensors, one at a time, checking each
//! name and shape against what the model expects and reporting progress.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use burn::tensor::{Device, Tensor, TensorData};

use sphinx_shaders::{BlockFormat, BlockMatrix, HalfKind, PackedHalves};

use super::{DType, HostTensor, TensorParts, WeightDtype, WeightSource};
use crate::error::{MixError, WeightError};

/// Progress of a weight load, in bytes as stored in the checkpoint.
#[derive(Debug, Clone)]
pub struct LoadProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub tensor: String,
}

pub struct WeightLoader<'a, S: WeightSource> {
    source: &'a S,
    device: Device,
    /// `"llma."` for LLaMA2-Accessory checkpoints, `""` for Meta's original layout.
    prefix: &'static str,
    /// The precision the LLM's matrices are held in ([`WeightLoader::halves`]).
    weight_dtype: WeightDtype,
    round_x_to_bf16: bool,
    used: RefCell<BTreeSet<String>>,
    done: Cell<u64>,
    loaded_elements: Cell<u64>,
    total: u64,
    on_progress: RefCell<&'a mut dyn FnMut(&LoadProgress)>,
}

impl<'a, S: WeightSource> WeightLoader<'a, S> {
    pub fn new(source: &'a S, device: &Device, on_progress: &'a mut dyn FnMut(&LoadProgress)) -> Self {
        let names = source.names();
        let prefix = if names.iter().any(|n| n.starts_with("llma.")) { "llma." } else { "" };
        let total = names.iter().filter_map(|n| source.info(n)).map(|i| i.byte_len() as u64).sum();
        Self {
            source,
            device: device.clone(),
            prefix,
            weight_dtype: WeightDtype::Auto,
            round_x_to_bf16: false,
            used: RefCell::new(BTreeSet::new()),
            done: Cell::new(0),
            loaded_elements: Cell::new(0),
            total,
            on_progress: RefCell::new(on_progress),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Holds the LLM's matrices in `dtype` (default: the checkpoint's own).
    pub fn with_weight_dtype(mut self, dtype: WeightDtype) -> Self {
        self.weight_dtype = dtype;
        self
    }

    /// bf16 matrices multiply x rounded to bf16 on the CPU ([`PackedHalves::round_x`]).
    pub fn with_x_rounded_to_bf16(mut self, round: bool) -> Self {
        self.round_x_to_bf16 = round;
        self
    }

    /// The 16-bit format the matrix `name` (without the `llma.` prefix) is to be held
    /// in, or `None` for f32 — from the chosen dtype and how the checkpoint stores it.
    pub fn half_kind_of(&self, name: &str) -> Option<HalfKind> {
        let stored = self.source.info(&format!("{}{name}", self.prefix))?.dtype;
        self.weight_dtype.half_kind(stored)
    }

    /// The block format the matrix `name` (without the `llma.` prefix) is stored and, with
    /// the default precision, held in; `None` for any other dtype or precision (a
    /// quantized matrix asked for in f32, f16 or bf16 is dequantized on the host).
    pub fn block_format_of(&self, name: &str) -> Option<BlockFormat> {
        let stored = self.source.info(&format!("{}{name}", self.prefix))?.dtype;
        stored.block_format().filter(|_| self.weight_dtype == WeightDtype::Auto)
    }

    /// Loads the matrix `name`, stored in `format`'s blocks, as they are ([`BlockMatrix`]),
    /// requiring `[rows, cols]` with `cols` a multiple of 64. `for_products`: the matrix is
    /// only multiplied with, never gathered by rows, so it may take the device kernels'
    /// own layout ([`BlockMatrix::for_products`]). A mix of two quantized checkpoints is
    /// refused (mix first, then quantize).
    pub async fn blocks(&self, name: &str, shape: [usize; 2], format: BlockFormat, for_products: bool) -> Result<BlockMatrix, WeightError> {
        let full = self.check(name, &shape)?;
        let host = match self.source.read_parts(&full).await? {
            TensorParts::Plain(host) => host,
            TensorParts::Mix { real, .. } => return Err(MixError::Quantized { name: full, dtype: real.dtype.to_string() }.into()),
        };
        if host.dtype != DType::of_blocks(format) {
            return Err(WeightError::UnsupportedDtype { name: full, dtype: host.dtype.to_string() });
        }
        self.account(&full, &host);
        let build = if for_products { BlockMatrix::for_products } else { BlockMatrix::from_blocks };
        build(host.bytes, format, shape, &self.device)
            .ok_or_else(|| WeightError::ShapeMismatch { name: full, expected: shape.to_vec(), got: vec![shape[0], shape[1] / 64 * 64] })
    }

    /// Loads the matrix `name` as packed halves of `kind` ([`PackedHalves`]), requiring
    /// `[rows, cols]` with `cols` even. Halves stored in `kind` are moved to the device
    /// as they are; other floats are rounded to nearest even. A mix is computed on the
    /// host in f32 (β·real + (1−β)·synthetic, as the device does for f32) and then rounded.
    pub async fn halves(&self, name: &str, shape: [usize; 2], kind: HalfKind) -> Result<PackedHalves, WeightError> {
        let full = self.check(name, &shape)?;
        let bytes = match self.source.read_parts(&full).await? {
            TensorParts::Plain(host) => {
                self.account(&full, &host);
                if host.dtype == stored_dtype(kind) {
                    host.bytes
                } else {
                    round_to(kind, &self.values(&full, &host, &shape)?)
                }
            }
            TensorParts::Mix { real, synthetic, beta } => {
                let (a, b) = (self.values(&full, &real, &shape)?, self.values(&full, &synthetic, &shape)?);
                self.account(&full, &real);
                let (wa, wb) = (beta as f32, (1.0 - beta) as f32);
                let mixed: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * wa + y * wb).collect();
                round_to(kind, &mixed)
            }
        };
        PackedHalves::from_le_bytes(bytes, kind, shape, &self.device)
            .map(|p| p.with_x_rounded(self.round_x_to_bf16))
            .ok_or_else(|| WeightError::ShapeMismatch { name: full, expected: shape.to_vec(), got: vec![shape[0], shape[1] / 2 * 2] })
    }

    /// Shape of a tensor by its model name (without the `llma.` prefix).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.source.info(&format!("{}{name}", self.prefix)).map(|i| i.shape)
    }

    /// Loads `name` (without the `llma.` prefix) as f32, requiring `shape`. A tensor of a
    /// mixed source arrives as two parts and is mixed here, on the device.
    pub async fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>, WeightError> {
        let full = self.check(name, &shape)?;
        let upload = |host: &HostTensor| -> Result<Tensor<D>, WeightError> {
            let values = self.values(&full, host, &shape)?;
            Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
        };
        let t = match self.source.read_parts(&full).await? {
            TensorParts::Plain(host) => {
                let t = upload(&host)?;
                self.account(&full, &host);
                t
            }
            TensorParts::Mix { real, synthetic, beta } => {
                let (a, b) = (upload(&real)?, upload(&synthetic)?);
                self.account(&full, &real);
                a.mul_scalar(beta as f32).add(b.mul_scalar((1.0 - beta) as f32))
            }
        };
        Ok(t)
    }

    /// Reads `name` to the host as f32, requiring `shape` (for weights the host reshapes first).
    pub async fn host_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, WeightError> {
        let full = self.check(name, shape)?;
        let host = self.source.read(&full).await?;
        let values = self.values(&full, &host, shape)?;
        self.account(&full, &host);
        Ok(values)
    }

    /// The full name of `name`, checked to exist with `shape`.
    fn check(&self, name: &str, shape: &[usize]) -> Result<String, WeightError> {
        let full = format!("{}{name}", self.prefix);
        let info = self.source.info(&full).ok_or_else(|| WeightError::MissingTensor { name: full.clone() })?;
        if info.shape != shape {
            return Err(WeightError::ShapeMismatch { name: full, expected: shape.to_vec(), got: info.shape });
        }
        Ok(full)
    }

    fn values(&self, full: &str, host: &HostTensor, shape: &[usize]) -> Result<Vec<f32>, WeightError> {
        let values = host
            .to_f32()
            .ok_or_else(|| WeightError::UnsupportedDtype { name: full.to_string(), dtype: host.dtype.to_string() })?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(WeightError::ShapeMismatch { name: full.to_string(), expected: shape.to_vec(), got: vec![values.len()] });
        }
        Ok(values)
    }

    /// Records a loaded tensor and reports progress.
    fn account(&self, full: &str, host: &HostTensor) {
        self.used.borrow_mut().insert(full.to_string());
        self.loaded_elements.set(self.loaded_elements.get() + host.shape.iter().product::<usize>() as u64);
        self.done.set(self.done.get() + host.bytes.len() as u64);
        (self.on_progress.borrow_mut())(&LoadProgress { done_bytes: self.done.get(), total_bytes: self.total, tensor: full.to_string() });
    }

    /// Whether the checkpoint holds `name` (without the `llma.` prefix).
    pub fn has(&self, name: &str) -> bool {
        self.source.info(&format!("{}{name}", self.prefix)).is_some()
    }

    /// Marks every tensor whose name (without `llma.`) satisfies `unused` as deliberately unused.
    pub fn skip_where(&self, unused: impl Fn(&str) -> bool) {
        let mut used = self.used.borrow_mut();
        for n in self.source.names() {
            if unused(n.strip_prefix(self.prefix).unwrap_or(&n)) {
                used.insert(n);
            }
        }
    }

    /// Elements of every tensor loaded so far (skipped ones not counted).
    pub fn loaded_elements(&self) -> u64 {
        self.loaded_elements.get()
    }

    /// Marks every tensor under `prefix` (without `llma.`) as deliberately unused.
    pub fn skip_prefix(&self, prefix: &str) {
        self.skip_where(|n| n.starts_with(prefix));
    }

    /// Fails on the first checkpoint tensor the model did not use.
    pub fn finish(self, arch: &str) -> Result<(), WeightError> {
        let used = self.used.borrow();
        match self.source.names().into_iter().find(|n| !used.contains(n)) {
            Some(name) => Err(WeightError::UnexpectedTensor { name, arch: arch.into() }),
            None => Ok(()),
        }
    }
}

/// The checkpoint dtype whose bytes already are halves of `kind`.
fn stored_dtype(kind: HalfKind) -> DType {
    match kind {
        HalfKind::F16 => DType::F16,
        HalfKind::Bf16 => DType::BF16,
    }
}

/// Little-endian halves of `kind` nearest to `values`.
fn round_to(kind: HalfKind, values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| kind.bits_of(v).to_le_bytes()).collect()
}
