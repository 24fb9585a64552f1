//! Mixing one tensor, and a weight source that mixes two sources as it is read.

use half::{bf16, f16};

use super::rules::{MixAction, MixRules};
use crate::error::{MixError, WeightError};
use crate::weights::{DType, HostTensor, TensorInfo, TensorParts, WeightSource};

/// Mixes one tensor pair by `action`: `β·real + (1−β)·synthetic` in f32 (as torch computes
/// `beta * a.float() + (1 - beta) * b.float()`), stored back in the inputs' dtype with
/// round-to-nearest-even.
pub fn mix_tensors(name: &str, real: HostTensor, synthetic: HostTensor, action: MixAction) -> Result<HostTensor, MixError> {
    if real.shape != synthetic.shape {
        return Err(MixError::ShapeMismatch { name: name.into(), real: real.shape, synthetic: synthetic.shape });
    }
    if real.dtype != synthetic.dtype {
        return Err(MixError::DtypeMismatch { name: name.into(), real: real.dtype.to_string(), synthetic: synthetic.dtype.to_string() });
    }
    if real.dtype.block_format().is_some() && matches!(action, MixAction::Beta(_)) {
        return Err(MixError::Quantized { name: name.into(), dtype: real.dtype.to_string() });
    }
    match action {
        MixAction::Real => Ok(real),
        MixAction::Synthetic => Ok(synthetic),
        MixAction::RequireIdentical if real.bytes == synthetic.bytes => Ok(real),
        MixAction::RequireIdentical => Err(MixError::NotIdentical { name: name.into() }),
        MixAction::Beta(beta) => {
            let (wa, wb) = (beta as f32, (1.0 - beta) as f32);
            // Element by element, so memory holds only the two inputs and the output.
            fn mix<const N: usize>(a: &[u8], b: &[u8], f: impl Fn([u8; N], [u8; N]) -> [u8; N]) -> Vec<u8> {
                let mut out = Vec::with_capacity(a.len());
                for (x, y) in a.chunks_exact(N).zip(b.chunks_exact(N)) {
                    let (mut xa, mut yb) = ([0u8; N], [0u8; N]);
                    xa.copy_from_slice(x);
                    yb.copy_from_slice(y);
                    out.extend_from_slice(&f(xa, yb));
                }
                out
            }
            let bytes = match real.dtype {
                DType::F32 => mix(&real.bytes, &synthetic.bytes, |x, y| (wa * f32::from_le_bytes(x) + wb * f32::from_le_bytes(y)).to_le_bytes()),
                DType::BF16 => mix(&real.bytes, &synthetic.bytes, |x, y| {
                    bf16::from_f32(wa * bf16::from_le_bytes(x).to_f32() + wb * bf16::from_le_bytes(y).to_f32()).to_le_bytes()
                }),
                DType::F16 => mix(&real.bytes, &synthetic.bytes, |x, y| {
                    f16::from_f32(wa * f16::from_le_bytes(x).to_f32() + wb * f16::from_le_bytes(y).to_f32()).to_le_bytes()
                }),
                _ => return Err(MixError::UnsupportedDtype { name: name.into(), dtype: real.dtype.to_string() }),
            };
            Ok(HostTensor { dtype: real.dtype, shape: real.shape, bytes })
        }
    }
}

/// Whether every element of a float tensor is finite (without widening it whole).
fn all_finite(t: &HostTensor) -> bool {
    match t.dtype {
        DType::F32 => t.bytes.chunks_exact(4).all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        DType::BF16 => t.bytes.chunks_exact(2).all(|c| bf16::from_le_bytes([c[0], c[1]]).is_finite()),
        DType::F16 => t.bytes.chunks_exact(2).all(|c| f16::from_le_bytes([c[0], c[1]]).is_finite()),
        _ => true,
    }
}

/// Two checkpoints of one architecture read as their mix.
pub struct MixedSource<A: WeightSource, B: WeightSource> {
    real: A,
    synthetic: B,
    rules: MixRules,
    check_finite: bool,
}

impl<A: WeightSource, B: WeightSource> MixedSource<A, B> {
    /// Checks that both hold the same tensor names, shapes and dtypes, naming the first
    /// difference, and that every β is in [0, 1] unless extrapolation is allowed.
    pub fn new(real: A, synthetic: B, rules: MixRules, allow_extrapolation: bool) -> Result<Self, MixError> {
        rules.validate(allow_extrapolation)?;
        let (ra, sb) = (real.names(), synthetic.names());
        if let Some(n) = ra.iter().find(|n| !sb.contains(n)) {
            return Err(MixError::KeyMismatch { name: n.clone(), missing_in: "synthetic".into() });
        }
        if let Some(n) = sb.iter().find(|n| !ra.contains(n)) {
            return Err(MixError::KeyMismatch { name: n.clone(), missing_in: "real".into() });
        }
        for n in &ra {
            let (a, b) = (real.info(n), synthetic.info(n));
            if let (Some(a), Some(b)) = (a, b) {
                if a.shape != b.shape {
                    return Err(MixError::ShapeMismatch { name: n.clone(), real: a.shape, synthetic: b.shape });
                }
                if a.dtype != b.dtype {
                    return Err(MixError::DtypeMismatch { name: n.clone(), real: a.dtype.to_string(), synthetic: b.dtype.to_string() });
                }
            }
        }
        // An extrapolating β can overflow: such mixes are always checked for NaN/Inf.
        let check_finite = rules.extrapolates();
        Ok(Self { real, synthetic, rules, check_finite })
    }

    /// Fail on NaN or ±Inf in a mixed tensor (always on when a β extrapolates).
    pub fn check_finite(mut self, yes: bool) -> Self {
        self.check_finite |= yes;
        self
    }

    pub fn rules(&self) -> &MixRules {
        &self.rules
    }

    fn finite(&self, name: &str, t: &HostTensor) -> Result<(), MixError> {
        if self.check_finite && !all_finite(t) {
            return Err(MixError::NonFinite { name: name.into() });
        }
        Ok(())
    }
}

impl<A: WeightSource, B: WeightSource> WeightSource for MixedSource<A, B> {
    fn names(&self) -> Vec<String> {
        self.real.names()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.real.info(name)
    }

    /// The mixed tensor, on the host (offline mixing).
    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        let (a, b) = (self.real.read(name).await?, self.synthetic.read(name).await?);
        let t = mix_tensors(name, a, b, self.rules.action(name))?;
        self.finite(name, &t)?;
        Ok(t)
    }

    /// Both tensors and β, so the loader mixes them on the device (an extrapolating β is
    /// mixed and checked on the host).
    async fn read_parts(&self, name: &str) -> Result<TensorParts, WeightError> {
        match self.rules.action(name) {
            MixAction::Beta(beta) if (0.0..=1.0).contains(&beta) => {
                let (a, b) = (self.real.read(name).await?, self.synthetic.read(name).await?);
                if a.shape != b.shape || a.dtype != b.dtype {
                    // Reported with the full message by the host path.
                    mix_tensors(name, a.clone(), b.clone(), MixAction::Beta(beta))?;
                }
                Ok(TensorParts::Mix { real: a, synthetic: b, beta })
            }
            _ => Ok(TensorParts::Plain(self.read(name).await?)),
        }
    }
}
