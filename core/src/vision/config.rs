//! Encoder sizes: the full-size presets SPHINX uses (docs/spec.md §3), overridable by a
//! `vision` section in `config.json` (this runtime's extension; official checkpoints
//! have none and get the presets), so tiny test models run the same code.

use serde::Deserialize;
use serde_json::Value;

use crate::config::LlamaType;
use crate::error::ConfigError;
use crate::preprocess::TilingPreset;

/// CLIP's MLP activation (docs/spec.md §3.1): SPHINX was trained with OpenAI's QuickGELU; the
/// official inference code builds exact GELU unless told to load pretrained weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp: usize,
    pub act: Activation,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvNextConfig {
    pub depths: [usize; 4],
    pub dims: [usize; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dinov2Config {
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn_hidden: usize,
    /// Side of the position-embedding grid it was trained with (518 / 14 = 37).
    pub pos_grid: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Blip2Config {
    pub vision_dim: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_mlp: usize,
    pub qformer_dim: usize,
    pub qformer_layers: usize,
    pub qformer_heads: usize,
    pub qformer_mlp: usize,
    pub queries: usize,
}

/// Every encoder of one variant, its tiling, and the LLM width it projects to.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// CLIP and the Q-Former are absent in the Tiny variants.
    pub clip: Option<ClipConfig>,
    pub convnext: ConvNextConfig,
    pub dinov2: Dinov2Config,
    pub blip2: Option<Blip2Config>,
    pub tiling: TilingPreset,
    pub llm_dim: usize,
}

pub const PATCH: usize = 14;
pub const VIT_IMAGE: usize = 224;
/// 16×16 patches + 1 class token.
pub const LOCAL_TOKENS: usize = (VIT_IMAGE / PATCH) * (VIT_IMAGE / PATCH) + 1;

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14.
    pub const VIT_L14: Self = Self { width: 1024, layers: 24, heads: 16, mlp: 4096, act: Activation::QuickGelu };
}
impl ConvNextConfig {
    /// OpenCLIP ConvNeXt-XXLarge trunk.
    pub const XXL: Self = Self { depths: [3, 4, 30, 3], dims: [384, 768, 1536, 3072] };
}
impl Dinov2Config {
    /// DINOv2 ViT-g/14 (`vit_giant2`, SwiGLU hidden 4096).
    pub const VIT_G14: Self = Self { dim: 1536, layers: 40, heads: 24, ffn_hidden: 4096, pos_grid: 37 };
}
impl Blip2Config {
    /// BLIP-2 (blip2-opt-2.7b): EVA ViT-g/14 + Q-Former.
    pub const BLIP2: Self = Self {
        vision_dim: 1408,
        vision_layers: 39,
        vision_heads: 16,
        vision_mlp: 6144,
        qformer_dim: 768,
        qformer_layers: 12,
        qformer_heads: 12,
        qformer_mlp: 3072,
        queries: 32,
    };
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self::VIT_L14
    }
}
impl Default for ConvNextConfig {
    fn default() -> Self {
        Self::XXL
    }
}
impl Default for Dinov2Config {
    fn default() -> Self {
        Self::VIT_G14
    }
}
impl Default for Blip2Config {
    fn default() -> Self {
        Self::BLIP2
    }
}

/// The `vision` section of `config.json`: any field it leaves out keeps the preset.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct VisionSection {
    clip: ClipConfig,
    convnext: ConvNextConfig,
    dinov2: Dinov2Config,
    blip2: Blip2Config,
}

/// Bounds on encoder sizes (docs/design.md §7), far above the full-size presets.
const MAX_WIDTH: usize = 1 << 14;
const MAX_MLP: usize = 1 << 16;
const MAX_LAYERS: usize = 256;
const MAX_GRID: usize = 256;
const MAX_QUERIES: usize = 1024;

impl VisionConfig {
    /// The encoders of a multimodal `llama_type` (None for text-only types), with the
    /// `vision` section of config.json applied over the full-size presets.
    pub fn for_llama_type(t: LlamaType, config: &Value, llm_dim: usize) -> Result<Option<Self>, ConfigError> {
        let Some(tiling) = TilingPreset::for_llama_type(t) else { return Ok(None) };
        let light = matches!(t, LlamaType::LlamaEnsLight | LlamaType::LlamaEns5Light);
        let section = match &config["vision"] {
            Value::Null => VisionSection::default(),
            v => serde_json::from_value(v.clone())
                .map_err(|e| ConfigError::Json { file: "config.json".into(), reason: format!("vision: {e}") })?,
        };
        let VisionSection { clip, convnext, dinov2, blip2 } = section;
        let cfg = Self {
            clip: (!light).then_some(clip),
            convnext,
            dinov2,
            blip2: (!light).then_some(blip2),
            tiling,
            llm_dim,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Every size within bounds and every width divisible by its head count.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut checks: Vec<(&str, usize, usize)> = vec![("dinov2.dim", self.dinov2.dim, MAX_WIDTH), ("dinov2.layers", self.dinov2.layers, MAX_LAYERS),
            ("dinov2.heads", self.dinov2.heads, self.dinov2.dim), ("dinov2.ffn_hidden", self.dinov2.ffn_hidden, MAX_MLP),
            ("dinov2.pos_grid", self.dinov2.pos_grid, MAX_GRID)];
        for i in 0..4 {
            checks.push(("convnext.depths", self.convnext.depths[i], MAX_LAYERS));
            checks.push(("convnext.dims", self.convnext.dims[i], MAX_WIDTH));
        }
        if let Some(c) = self.clip {
            checks.extend([("clip.width", c.width, MAX_WIDTH), ("clip.layers", c.layers, MAX_LAYERS), ("clip.heads", c.heads, c.width), ("clip.mlp", c.mlp, MAX_MLP)]);
        }
        if let Some(b) = self.blip2 {
            checks.extend([
                ("blip2.vision_dim", b.vision_dim, MAX_WIDTH),
                ("blip2.vision_layers", b.vision_layers, MAX_LAYERS),
                ("blip2.vision_heads", b.vision_heads, b.vision_dim),
                ("blip2.vision_mlp", b.vision_mlp, MAX_MLP),
                ("blip2.qformer_dim", b.qformer_dim, MAX_WIDTH),
                ("blip2.qformer_layers", b.qformer_layers, MAX_LAYERS),
                ("blip2.qformer_heads", b.qformer_heads, b.qformer_dim),
                ("blip2.qformer_mlp", b.qformer_mlp, MAX_MLP),
                ("blip2.queries", b.queries, MAX_QUERIES),
            ]);
        }
        if let Some((name, v, max)) = checks.into_iter().find(|&(_, v, max)| v == 0 || v > max) {
            return Err(ConfigError::Invalid(format!("vision.{name} = {v} is outside 1..={max}")));
        }
        let heads_ok = |dim: usize, heads: usize| dim % heads == 0;
        let mut ok = heads_ok(self.dinov2.dim, self.dinov2.heads);
        if let Some(c) = self.clip {
            ok &= heads_ok(c.width, c.heads);
        }
        if let Some(b) = self.blip2 {
            ok &= heads_ok(b.vision_dim, b.vision_heads) && heads_ok(b.qformer_dim, b.qformer_heads);
        }
        if !ok {
            return Err(ConfigError::Invalid("a visual encoder's width is not divisible by its head count".into()));
        }
        Ok(())
    }

    /// Channels of the concatenated local tokens (`visual_proj`'s input): CLIP | ConvNeXt | DINOv2.
    pub fn local_channels(&self) -> usize {
        self.clip.map_or(0, |c| c.width) + self.convnext.dims[3] + self.dinov2.dim
    }

    /// Tokens per view: start_img + (32 Q-Former) + 257 local + end_img.
    pub fn tokens_per_view(&self) -> usize {
        2 + LOCAL_TOKENS + self.blip2.map_or(0, |b| b.queries)
    }

    /// Image tokens spliced after BOS (291 / 1455 / 2910 / 259 / 1295 at full size).
    pub fn image_tokens(&self) -> usize {
        self.tiling.vit.view_count() * self.tokens_per_view()
    }

    /// Parameters of every encoder and the projections.
    pub fn parameter_count(&self) -> u64 {
        let vit = |d: u64, layers: u64, mlp: u64| layers * (4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d);
        let p = (PATCH * PATCH * 3) as u64;
        let tokens = LOCAL_TOKENS as u64;
        let mut n = 0u64;
        if let Some(c) = self.clip {
            let w = c.width as u64;
            n += p * w + w + tokens * w + 4 * w + vit(w, c.layers as u64, c.mlp as u64);
        }
        let cn = self.convnext;
        let mut prev = 3u64;
        for s in 0..4 {
            let c = cn.dims[s] as u64;
            n += if s == 0 { 48 * c + c + 2 * c } else { 2 * prev + 4 * prev * c + c };
            n += cn.depths[s] as u64 * (49 * c + c + 2 * c + 8 * c * c + 4 * c + c + c);
            prev = c;
        }
        n += 2 * prev;
        let g = self.dinov2;
        let d = g.dim as u64;
        let grid = (g.pos_grid * g.pos_grid + 1) as u64;
        n += p * d + d + d + grid * d + 2 * d; // patch embed (+bias), cls token, positions, final norm
        let f = g.ffn_hidden as u64;
        // attention (qkv + proj), SwiGLU (w12: d → 2f, w3: f → d), two LayerNorms, two LayerScales
        n += g.layers as u64 * (4 * d * d + 4 * d + (2 * d * f + 2 * f) + (f * d + d) + 4 * d + 2 * d);
        if let Some(b) = self.blip2 {
            let (v, q) = (b.vision_dim as u64, b.qformer_dim as u64);
            n += p * v + v + v + tokens * v + vit(v, b.vision_layers as u64, b.vision_mlp as u64) + 2 * v;
            let attn = |kv: u64| q * q + q + 2 * (kv * q + q) + q * q + q + 2 * q;
            let ffn = 2 * q * b.qformer_mlp as u64 + b.qformer_mlp as u64 + q + 2 * q;
            let cross = (b.qformer_layers as u64).div_ceil(2);
            n += b.qformer_layers as u64 * (attn(q) + ffn) + cross * attn(v) + 2 * q + b.queries as u64 * q;
            n += q * self.llm_dim as u64 + 3 * self.llm_dim as u64;
        }
        let dm = self.llm_dim as u64;
        n + self.local_channels() as u64 * dm + 3 * dm + 2 * dm
    }
}
