//! Model configuration from a checkpoint's `config.json` (or `params.json`) and
//! `meta.json` (docs/spec.md §1, §8): `dataclasses.asdict(ModelArgs)` plus `llama_type`.
//! As in `MetaModel.from_pretrained`, `max_seq_len` defaults to 4096 and overrides
//! the file, and `vocab_size` comes from the tokenizer.

use serde::Deserialize;

use crate::error::ConfigError;

/// The module name in `meta.json` that picks the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaType {
    /// Text-only LLaMA (`accessory/model/LLM/llama.py`).
    Llama,
    /// Text-only Mixtral with the sparse MoE FFN (`mixtral_sparse.py`).
    MixtralSparse,
    LlamaEns,
    LlamaEns5,
    LlamaEns10,
    LlamaEnsLight,
    LlamaEns5Light,
    MixtralSparseEns,
    MixtralSparseEns5,
}

impl LlamaType {
    pub const ALL: [(&'static str, LlamaType); 9] = [
        ("llama", LlamaType::Llama),
        ("mixtral_sparse", LlamaType::MixtralSparse),
        ("llama_ens", LlamaType::LlamaEns),
        ("llama_ens5", LlamaType::LlamaEns5),
        ("llama_ens10", LlamaType::LlamaEns10),
        ("llama_ens_light", LlamaType::LlamaEnsLight),
        ("llama_ens5_light", LlamaType::LlamaEns5Light),
        ("mixtral_sparse_ens", LlamaType::MixtralSparseEns),
        ("mixtral_sparse_ens5", LlamaType::MixtralSparseEns5),
    ];

    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
            ConfigError::UnknownLlamaType(s.into(), Self::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Mixtral-style sparse MoE FFN.
    pub fn is_moe(self) -> bool {
        matches!(self, LlamaType::MixtralSparse | LlamaType::MixtralSparseEns | LlamaType::MixtralSparseEns5)
    }

    /// Whether the checkpoint also holds visual encoders and projections.
    pub fn is_multimodal(self) -> bool {
        !matches!(self, LlamaType::Llama | LlamaType::MixtralSparse)
    }
}

/// Mixtral MoE routing (`ModelArgs.moe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub experts_per_token: usize,
}

/// The language model's shape (docs/spec.md §1, §2).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub llama_type: LlamaType,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    /// FFN hidden size (per expert for MoE).
    pub ffn_hidden: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<f64>,
    pub max_seq_len: usize,
    pub moe: Option<MoeConfig>,
    /// `None` (the default): attention runs in the fused kernel, which holds no scores.
    /// `Some(bytes)`: the reference path of Burn operations, with at most `bytes` of
    /// scores at once (queries in tiles). Heads wider than the kernel takes
    /// ([`sphinx_shaders::MAX_ATTENTION_HEAD_DIM`]) use tiles of
    /// [`DEFAULT_SCORE_TILE_BYTES`] unless told otherwise (docs/design.md §9).
    pub score_tile_bytes: Option<usize>,
}

/// Positions fed per forward pass while prefilling, unless the caller chooses.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Score tiles of the reference attention path when no size is chosen (64 MiB).
pub const DEFAULT_SCORE_TILE_BYTES: usize = 64 << 20;

/// User choices that override the checkpoint's configuration or how it is held.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// Context length; `MetaModel.from_pretrained` uses 4096.
    pub max_seq_len: Option<usize>,
    /// CLIP's MLP activation (QuickGELU unless set; docs/spec.md §3.1).
    pub clip_activation: Option<crate::vision::Activation>,
    /// Keep the visual encoders off the device and load them one at a time for each
    /// image (peak memory: LLM + the largest encoder).
    pub stream_encoders: bool,
    /// Bytes the device can hold, when known: a model that needs more is refused
    /// before anything is allocated.
    pub device_memory: Option<u64>,
    /// The largest buffer the device can allocate and bind, when known (wgpu's
    /// `max_buffer_size` and `max_storage_buffer_binding_size`, the smaller): a model
    /// with a larger tensor or activation is refused before anything is allocated.
    pub max_buffer_bytes: Option<u64>,
    /// The precision the LLM's weight matrices are held in on the device.
    pub weight_dtype: crate::weights::WeightDtype,
    /// bf16 matrices on the CPU multiply activations rounded to bf16 (PyTorch's bf16
    /// numerics, ~1.5× the prefill speed on AVX512-BF16 CPUs) instead of kept in f32
    /// (docs/design.md §9).
    pub round_x_to_bf16: bool,
    /// [`LlmConfig::score_tile_bytes`]: the reference attention path in tiles of this
    /// many bytes of scores; tests make it tiny to exercise the tiling.
    pub score_tile_bytes: Option<usize>,
}

/// Bounds on what a configuration may ask for (docs/design.md §7). They are far above
/// every SPHINX variant (LLaMA-2-13B: dim 5120, 40 layers, FFN 13824) and keep every
/// size computed from them — parameter counts, tables, caches — far from overflow.
pub mod limits {
    pub const MAX_WIDTH: usize = 1 << 16;
    pub const MAX_LAYERS: usize = 1024;
    pub const MAX_FFN: usize = 1 << 20;
    pub const MAX_VOCAB: usize = 1 << 20;
    pub const MAX_EXPERTS: usize = 256;
    /// The longest context: 32 × LLaMA-2's 4096.
    pub const MAX_SEQ_LEN: usize = 1 << 17;
}

/// `config.json` (`dataclasses.asdict(ModelArgs)`) or Meta's `params.json`: the fields
/// the LLM's shape needs; every other field is ignored.
#[derive(Deserialize)]
struct ConfigFile {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    #[serde(default)]
    n_kv_heads: Option<usize>,
    #[serde(default)]
    multiple_of: Option<usize>,
    #[serde(default)]
    ffn_dim_multiplier: Option<f64>,
    #[serde(default)]
    norm_eps: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<f64>,
    /// Mixtral's expert FFN width.
    #[serde(default)]
    hidden_dim: Option<usize>,
    #[serde(default)]
    moe: Option<MoeFile>,
}

#[derive(Deserialize)]
struct MoeFile {
    #[serde(default = "MoeFile::default_experts")]
    num_experts: usize,
    #[serde(default = "MoeFile::default_per_token")]
    num_experts_per_tok: usize,
}

impl MoeFile {
    fn default_experts() -> usize {
        8
    }
    fn default_per_token() -> usize {
        2
    }
}

#[derive(Deserialize)]
struct MetaFile {
    llama_type: String,
}

/// Parses one of a checkpoint's JSON files into `T`, naming the file in the error.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(text: &'a str, file: &str) -> Result<T, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Json { file: file.into(), reason: e.to_string() })
}

pub const DEFAULT_MAX_SEQ_LEN: usize = 4096;

/// `int(2*(4*dim)/3)`, scaled by `ffn_dim_multiplier`, rounded up to `multiple_of` (llama.py
/// FeedForward). `None` when the inputs are out of bounds (zero `multiple_of`, a
/// non-positive or non-finite multiplier, a result past [`limits::MAX_FFN`]).
pub fn llama_ffn_hidden(dim: usize, multiple_of: usize, ffn_dim_multiplier: Option<f64>) -> Option<usize> {
    if multiple_of == 0 || multiple_of > limits::MAX_FFN || dim > limits::MAX_WIDTH {
        return None;
    }
    let mut h = (2.0 * (4 * dim) as f64 / 3.0) as usize;
    if let Some(m) = ffn_dim_multiplier {
        if !(m.is_finite() && m > 0.0 && m * h as f64 <= limits::MAX_FFN as f64) {
            return None;
        }
        h = (m * h as f64) as usize;
    }
    Some(multiple_of * h.div_ceil(multiple_of)).filter(|&h| h <= limits::MAX_FFN)
}

impl LlmConfig {
    /// The released SPHINX checkpoints, by README name.
    pub const VARIANTS: [(&'static str, LlamaType); 8] = [
        ("SPHINX", LlamaType::LlamaEns),
        ("SPHINX-1k", LlamaType::LlamaEns5),
        ("SPHINX-v2-1k", LlamaType::LlamaEns5),
        ("SPHINX-2k", LlamaType::LlamaEns10),
        ("SPHINX-MoE", LlamaType::MixtralSparseEns),
        ("SPHINX-MoE-1k", LlamaType::MixtralSparseEns5),
        ("SPHINX-Tiny", LlamaType::LlamaEnsLight),
        ("SPHINX-Tiny-1k", LlamaType::LlamaEns5Light),
    ];

    /// The full-size LLM of a variant (docs/spec.md §1: LLaMA-2-13B, Mixtral-8x7B, TinyLlama-1.1B).
    pub fn full_size(t: LlamaType) -> Self {
        let base = |dim, n_layers, n_heads, n_kv_heads, ffn_hidden, rope_theta, moe| LlmConfig {
            llama_type: t,
            dim,
            n_layers,
            n_heads,
            n_kv_heads,
            vocab_size: 32000,
            ffn_hidden,
            norm_eps: 1e-5,
            rope_theta,
            rope_scaling: None,
            max_seq_len: DEFAULT_MAX_SEQ_LEN,
            moe,
            score_tile_bytes: None,
        };
        match t {
            LlamaType::MixtralSparse | LlamaType::MixtralSparseEns | LlamaType::MixtralSparseEns5 => {
                base(4096, 32, 32, 8, 14336, 1e6, Some(MoeConfig { num_experts: 8, experts_per_token: 2 }))
            }
            LlamaType::LlamaEnsLight | LlamaType::LlamaEns5Light => base(2048, 22, 32, 4, 5632, 10000.0, None),
            _ => base(5120, 40, 40, 40, 13824, 10000.0, None),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Parses `config.json` + `meta.json` text. `vocab_size` is the tokenizer's size.
    pub fn from_json(
        config: &str,
        meta: &str,
        vocab_size: usize,
        overrides: &ConfigOverrides,
    ) -> Result<Self, ConfigError> {
        let meta: MetaFile = parse_json(meta, "meta.json")?;
        let llama_type = LlamaType::parse(&meta.llama_type)?;
        let c: ConfigFile = parse_json(config, "config.json")?;
        let invalid = |m: String| ConfigError::Invalid(m);
        let (ffn_hidden, moe) = if llama_type.is_moe() {
            let moe = c.moe.unwrap_or(MoeFile { num_experts: 8, num_experts_per_tok: 2 });
            let moe = MoeConfig { num_experts: moe.num_experts, experts_per_token: moe.num_experts_per_tok };
            (c.hidden_dim.unwrap_or(16384), Some(moe))
        } else {
            let multiple_of = c.multiple_of.unwrap_or(256);
            let hidden = llama_ffn_hidden(c.dim, multiple_of, c.ffn_dim_multiplier).ok_or_else(|| {
                invalid(format!("FFN width from dim {}, multiple_of {multiple_of}, ffn_dim_multiplier {:?} is out of bounds", c.dim, c.ffn_dim_multiplier))
            })?;
            (hidden, None)
        };
        let cfg = LlmConfig {
            llama_type,
            dim: c.dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads.unwrap_or(c.n_heads),
            vocab_size,
            ffn_hidden,
            norm_eps: c.norm_eps.unwrap_or(1e-5),
            rope_theta: c.rope_theta.unwrap_or(if llama_type.is_moe() { 1e6 } else { 10000.0 }),
            rope_scaling: c.rope_scaling,
            max_seq_len: overrides.max_seq_len.unwrap_or(DEFAULT_MAX_SEQ_LEN),
            moe,
            score_tile_bytes: overrides.score_tile_bytes.map(|b| b.max(1)),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every size within [`limits`], every divisor non-zero, every float finite and positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use limits::*;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let within = |name: &str, v: usize, max: usize| -> Result<(), ConfigError> {
            if v == 0 || v > max {
                return Err(ConfigError::Invalid(format!("{name} = {v} is outside 1..={max}")));
            }
            Ok(())
        };
        within("dim", self.dim, MAX_WIDTH)?;
        within("n_layers", self.n_layers, MAX_LAYERS)?;
        within("n_heads", self.n_heads, self.dim)?;
        within("n_kv_heads", self.n_kv_heads, self.n_heads)?;
        within("vocab_size", self.vocab_size, MAX_VOCAB)?;
        within("FFN hidden size", self.ffn_hidden, MAX_FFN)?;
        within("max_seq_len", self.max_seq_len, MAX_SEQ_LEN)?;
        if self.dim % self.n_heads != 0 || self.head_dim() % 2 != 0 {
            return bad(format!("dim {} must split into {} heads of even size", self.dim, self.n_heads));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return bad(format!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads));
        }
        for (name, v) in [("norm_eps", Some(self.norm_eps)), ("rope_theta", Some(self.rope_theta)), ("rope_scaling", self.rope_scaling)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return bad(format!("{name} = {v} must be finite and positive"));
                }
            }
        }
        if let Some(m) = self.moe {
            within("moe.num_experts", m.num_experts, MAX_EXPERTS)?;
            within("moe.num_experts_per_tok", m.experts_per_token, m.num_experts)?;
        }
        Ok(())
    }

    /// Bytes on the device once loaded in f32: the weights, the rotary tables for
    /// `2 · max_seq_len` positions, a KV cache filled to `max_seq_len` and the
    /// activations of a prefill chunk of [`DEFAULT_PREFILL_CHUNK`] positions.
    pub fn device_bytes(&self) -> u64 {
        self.device_bytes_with_weights(4)
    }

    /// [`LlmConfig::device_bytes`] with `bytes_per_weight` per parameter (2 for f16/bf16
    /// matrices; the rotary tables, the KV cache and the activations stay f32).
    pub fn device_bytes_with_weights(&self, bytes_per_weight: u64) -> u64 {
        bytes_per_weight * self.parameter_count() + self.state_bytes() + self.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK)
    }

    /// The rotary tables for `2 · max_seq_len` positions and a KV cache filled to
    /// `max_seq_len`, in f32.
    pub fn state_bytes(&self) -> u64 {
        let hd = self.head_dim() as u64;
        let rope = 2 * self.max_seq_len as u64 * hd; // cos and sin, [2 · S, hd / 2] each
        let kv = 2 * self.n_layers as u64 * self.max_seq_len as u64 * self.n_kv_heads as u64 * hd;
        4 * (rope + kv)
    }

    /// Bytes of scores per score tile of the reference attention path, or `None` when
    /// attention runs in the fused kernel.
    pub fn attention_tile_bytes(&self) -> Option<usize> {
        match self.score_tile_bytes {
            Some(bytes) => Some(bytes),
            None if self.head_dim() <= sphinx_shaders::MAX_ATTENTION_HEAD_DIM => None,
            None => Some(DEFAULT_SCORE_TILE_BYTES),
        }
    }

    /// Bytes of attention scores held at once for `c` queries over a full context: none
    /// in the fused kernel, else all of them or one tile.
    fn score_bytes(&self, c: u64) -> u64 {
        self.attention_tile_bytes().map_or(0, |tile| (4 * c * self.n_heads as u64 * self.max_seq_len as u64).min(tile as u64))
    }

    /// The largest single activation buffer of a prefill chunk: a score tile (reference
    /// attention path only), one FFN
    /// hidden tensor, a widened weight tile or the chunk's residual stream.
    pub fn largest_activation_bytes(&self, chunk: usize) -> u64 {
        let c = chunk.clamp(1, self.max_seq_len) as u64;
        let scores = self.score_bytes(c);
        let values = [c * self.ffn_hidden as u64, crate::llm::WIDEN_TILE_VALUES as u64, c * self.dim as u64, self.vocab_size as u64];
        scores.max(4 * values.into_iter().max().unwrap_or(0))
    }

    /// An upper estimate of the activations alive at once while a chunk of `chunk`
    /// positions is prefilled with the context full (all f32, docs/design.md §9): the
    /// residual stream, its normed copy and one layer's output, q/k/v and the attention
    /// output, on the reference attention path one tile of scores three times over
    /// (scores, masked, softmax), the FFN's
    /// three hidden tensors (per routed expert for MoE), one widened weight tile and the
    /// logits.
    pub fn prefill_activation_bytes(&self, chunk: usize) -> u64 {
        let c = chunk.clamp(1, self.max_seq_len) as u64;
        let (d, hd, hq, hkv) = (self.dim as u64, self.head_dim() as u64, self.n_heads as u64, self.n_kv_heads as u64);
        let residual = 3 * c * d;
        let attention = c * hd * (2 * hq + 2 * hkv);
        let experts = self.moe.map_or(1, |m| m.experts_per_token as u64);
        let ffn = 3 * c * self.ffn_hidden as u64 * experts;
        let scores = 3 * self.score_bytes(c);
        4 * (residual + attention + ffn + crate::llm::WIDEN_TILE_VALUES as u64 + self.vocab_size as u64) + scores
    }

    /// Number of LLM parameters.
    /// Bytes of the LLM's weights on the device with its matrices held at `bytes_per_32`
    /// bytes per 32 values (128: f32, 64: f16/bf16, 34: q8_0, 18: q4_0; docs/design.md
    /// §9–10). The output head is q8_0 at most (`sphinx quantize`); the norms, and
    /// SPHINX-MoE's stacked experts (widened on load), are f32 in every case.
    pub fn held_weight_bytes(&self, bytes_per_32: u64) -> u64 {
        let (d, layers) = (self.dim as u64, self.n_layers as u64);
        let norms = d * (2 * layers + 1);
        let experts = self.moe.map_or(0, |m| 3 * m.num_experts as u64 * self.ffn_hidden as u64 * d * layers);
        let head = self.vocab_size as u64 * d;
        let matrices = self.parameter_count() - norms - experts - head;
        let head_per_32 = bytes_per_32.max(34);
        (matrices * bytes_per_32 + head * head_per_32).div_ceil(32) + 4 * (norms + experts)
    }

    pub fn parameter_count(&self) -> u64 {
        let (d, hd) = (self.dim as u64, self.head_dim() as u64);
        let attn = d * hd * (2 * self.n_heads as u64 + 2 * self.n_kv_heads as u64);
        let ffn = match self.moe {
            Some(m) => 3 * m.num_experts as u64 * self.ffn_hidden as u64 * d + m.num_experts as u64 * d,
            None => 3 * self.ffn_hidden as u64 * d,
        };
        let per_layer = attn + ffn + 2 * d;
        2 * self.vocab_size as u64 * d + self.n_layers as u64 * per_layer + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(config: &str, llama_type: &str) -> LlmConfig {
        let meta = format!("{{\"llama_type\": \"{llama_type}\"}}");
        LlmConfig::from_json(config, &meta, 32000, &ConfigOverrides::default()).unwrap()
    }

    #[test]
    fn llama2_13b_shapes() {
        let c = parse(r#"{"dim": 5120, "n_layers": 40, "n_heads": 40, "n_kv_heads": null, "multiple_of": 256,
            "ffn_dim_multiplier": null, "norm_eps": 1e-05, "max_seq_len": 2048, "rope_scaling": null}"#, "llama_ens5");
        assert_eq!((c.ffn_hidden, c.head_dim(), c.n_kv_heads, c.max_seq_len), (13824, 128, 40, 4096));
        assert_eq!(c.rope_theta, 10000.0);
        assert!(c.llama_type.is_multimodal() && !c.llama_type.is_moe());
        // LLaMA-2-13B has 13,015,864,320 parameters.
        assert_eq!(c.parameter_count(), 13_015_864_320);
    }

    #[test]
    fn tinyllama_grouped_kv_heads() {
        let c = parse(r#"{"dim": 2048, "n_layers": 22, "n_heads": 32, "n_kv_heads": 4, "multiple_of": 256}"#, "llama_ens_light");
        assert_eq!((c.ffn_hidden, c.head_dim(), c.n_kv_heads), (5632, 64, 4));
        // TinyLlama-1.1B: 1,100,048,384 parameters.
        assert_eq!(c.parameter_count(), 1_100_048_384);
    }

    #[test]
    fn mixtral_moe() {
        let c = parse(r#"{"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "hidden_dim": 14336,
            "moe": {"num_experts": 8, "num_experts_per_tok": 2}}"#, "mixtral_sparse_ens");
        assert_eq!(c.moe, Some(MoeConfig { num_experts: 8, experts_per_token: 2 }));
        assert_eq!((c.ffn_hidden, c.rope_theta, c.head_dim()), (14336, 1e6, 128));
        // Mixtral-8x7B: 46,702,792,704 parameters.
        assert_eq!(c.parameter_count(), 46_702_792_704);
    }

    #[test]
    fn ffn_formula_with_multiplier() {
        assert_eq!(llama_ffn_hidden(32, 32, Some(1.5)), Some(128));
        assert_eq!(llama_ffn_hidden(4096, 256, None), Some(11008));
        assert_eq!(llama_ffn_hidden(4096, 0, None), None);
        assert_eq!(llama_ffn_hidden(4096, 256, Some(f64::NAN)), None);
    }

    #[test]
    fn absurd_sizes_are_refused_before_any_allocation() {
        let meta = r#"{"llama_type": "llama"}"#;
        for cfg in [
            r#"{"dim": 64, "n_layers": 1000000000, "n_heads": 4}"#,
            r#"{"dim": 1099511627776, "n_layers": 2, "n_heads": 4}"#,
            r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 0}"#,
            r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "rope_theta": 0}"#,
            r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "norm_eps": -1e-5}"#,
            r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 0}"#,
            r#"{"dim": 64, "n_layers": 0, "n_heads": 4}"#,
        ] {
            let e = LlmConfig::from_json(cfg, meta, 100, &Default::default());
            assert!(matches!(e, Err(ConfigError::Invalid(_))), "{cfg}: {e:?}");
        }
        for cfg in [r#"{"dim": -64, "n_layers": 2, "n_heads": 4}"#, r#"{"dim": 64.5, "n_layers": 2, "n_heads": 4}"#] {
            let e = LlmConfig::from_json(cfg, meta, 100, &Default::default());
            assert!(matches!(e, Err(ConfigError::Json { .. })), "{cfg}: {e:?}");
        }
        let long = ConfigOverrides { max_seq_len: Some(100_000_000), ..Default::default() };
        let e = LlmConfig::from_json(r#"{"dim": 64, "n_layers": 2, "n_heads": 4}"#, meta, 100, &long);
        assert!(matches!(e, Err(ConfigError::Invalid(m)) if m.contains("max_seq_len")));
    }

    #[test]
    fn overrides_and_errors() {
        let meta = r#"{"llama_type": "llama"}"#;
        let cfg = r#"{"dim": 64, "n_layers": 2, "n_heads": 4}"#;
        let c = LlmConfig::from_json(cfg, meta, 100, &ConfigOverrides { max_seq_len: Some(128), ..Default::default() }).unwrap();
        assert_eq!(c.max_seq_len, 128);
        let e = LlmConfig::from_json(r#"{"dim": 64, "n_layers": 2, "n_heads": 3}"#, meta, 100, &Default::default());
        assert!(matches!(e, Err(ConfigError::Invalid(_))));
        let e = LlmConfig::from_json(r#"{"n_layers": 2, "n_heads": 4}"#, meta, 100, &Default::default());
        assert!(matches!(e, Err(ConfigError::Json { reason, .. }) if reason.contains("missing field `dim`")));
    }

    #[test]
    fn a_prefill_chunk_of_every_variant_stays_within_512_mib() {
        for (name, t) in LlmConfig::VARIANTS {
            let c = LlmConfig::full_size(t);
            let bytes = c.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK);
            assert!(bytes <= 512 << 20, "{name}: {} MiB", bytes >> 20);
            // The fused kernel holds no scores; the reference path holds one tile, and
            // untiled, a 512-position chunk of LLaMA-2-13B at a 4096 context would hold
            // 3 × 335 MB of them.
            let tiled = LlmConfig { score_tile_bytes: Some(DEFAULT_SCORE_TILE_BYTES), ..c.clone() };
            let untiled = LlmConfig { score_tile_bytes: Some(usize::MAX), ..c.clone() };
            let (tiled, untiled) = (tiled.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK), untiled.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK));
            assert!(bytes < tiled && tiled <= 512 << 20 && tiled < untiled, "{name}: {bytes} < {tiled} < {untiled}");
        }
    }
}
