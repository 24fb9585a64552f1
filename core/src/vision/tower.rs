//! The fusion of every encoder into the LLM's token stream (docs/spec.md §3.5, `llama_ens*.py`
//! `encode_image` + `forward_inference`): per view, 32 Q-Former tokens through
//! `qformer_proj`, then 257 local tokens — CLIP | ConvNeXt | DINOv2 concatenated on
//! channels — through `visual_proj`, wrapped in `start_img` … `end_img`; views in order.

use burn::tensor::{Device, Tensor, TensorData};

use super::blip2::Blip2;
use super::clip::ClipVision;
use super::config::{VisionConfig, VIT_IMAGE};
use super::convnext::ConvNext;
use super::dinov2::Dinov2;
use super::layers::{Dense, LayerNorm};
use crate::error::WeightError;
use crate::preprocess::{Planar, Views, CLIP_MEAN, CLIP_STD};
use crate::weights::{WeightLoader, WeightSource};

/// DINOv2's own input statistics (ImageNet).
const DINO_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const DINO_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// ConvNeXt and ViT tokens share one 16×16 grid.
const TOKEN_GRID: usize = VIT_IMAGE / 14;

/// `nn.Sequential(nn.Linear(in, D), nn.LayerNorm(D))`.
#[derive(Debug, Clone)]
struct Projector {
    linear: Dense,
    norm: LayerNorm,
}

impl Projector {
    async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, inp: usize, out: usize) -> Result<Self, WeightError> {
        Ok(Self { linear: Dense::load(l, &format!("{p}.0"), out, inp).await?, norm: LayerNorm::load(l, &format!("{p}.1"), out, 1e-5).await? })
    }
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.norm.forward(self.linear.forward(x))
    }
}

/// Checkpoint prefixes (without `llma.`) of the four encoders.
const ENCODER_PREFIXES: [&str; 4] = ["clip.", "openclip_convnext_xxl.", "dinov2_vitg14.", "qformer."];

async fn load_clip<S: WeightSource>(cfg: &VisionConfig, l: &WeightLoader<'_, S>) -> Result<Option<ClipVision>, WeightError> {
    Ok(match cfg.clip {
        Some(c) => Some(ClipVision::load(l, "clip.visual", c).await?),
        None => None,
    })
}

async fn load_blip2<S: WeightSource>(cfg: &VisionConfig, l: &WeightLoader<'_, S>) -> Result<Option<Blip2>, WeightError> {
    Ok(match cfg.blip2 {
        Some(b) => Some(Blip2::load(l, "qformer", b).await?),
        None => None,
    })
}

/// Every encoder's output per view, before projection (for tests and inspection).
pub struct EncoderOutputs {
    /// [V, 257, W] each (CLIP and Q-Former are `None` in the Tiny variants; Q-Former is [V, 32, Dq]).
    pub clip: Option<Tensor<3>>,
    pub convnext: Tensor<3>,
    pub dinov2: Tensor<3>,
    pub qformer: Option<Tensor<3>>,
}

/// The encoder families of SPHINX's visual embedding mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    Clip,
    ConvNext,
    Dinov2,
    QFormer,
}

impl EncoderKind {
    pub const ALL: [EncoderKind; 4] = [Self::Clip, Self::ConvNext, Self::Dinov2, Self::QFormer];

    pub fn name(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::ConvNext => "convnext",
            Self::Dinov2 => "dinov2",
            Self::QFormer => "qformer",
        }
    }
}

/// An image's views uploaded once for every encoder: vit [V, 3, 224, 224] (CLIP,
/// DINOv2, Q-Former) and convnext [V, 3, S, S].
pub struct ViewBatches {
    vit: Tensor<4>,
    convnext: Tensor<4>,
}

/// The four encoders (the heavy part: ≈3.4 B parameters at full size).
#[derive(Debug, Clone)]
struct Encoders {
    clip: Option<ClipVision>,
    convnext: ConvNext,
    dinov2: Dinov2,
    blip2: Option<Blip2>,
}

#[derive(Debug, Clone)]
pub struct VisionTower {
    cfg: VisionConfig,
    /// `None` when the encoders are streamed from the checkpoint for each image.
    encoders: Option<Encoders>,
    visual_proj: Projector,
    qformer_proj: Option<Projector>,
    /// start_img, end_img: [1, 1, D]
    start_img: Tensor<3>,
    end_img: Tensor<3>,
    device: Device,
}

impl VisionTower {
    /// Checkpoint keys (without `llma.`) that are stored but never used for images.
    pub const UNUSED: [&'static str; 7] = [
        "clip.visual.proj",
        "clip.token_embedding.",
        "clip.positional_embedding",
        "clip.ln_final.",
        "clip.text_projection",
        "clip.logit_scale",
        "dinov2_vitg14.mask_token",
    ];

    /// Loads the projections and, unless `stream`, the encoders. Streamed encoders are
    /// marked as deferred here and loaded by [`Self::encode_parts_streaming`].
    pub async fn load<S: WeightSource>(cfg: &VisionConfig, l: &WeightLoader<'_, S>, stream: bool) -> Result<Self, WeightError> {
        let d = cfg.llm_dim;
        let encoders = if stream {
            ENCODER_PREFIXES.iter().for_each(|p| l.skip_prefix(p));
            None
        } else {
            Some(Encoders {
                clip: load_clip(cfg, l).await?,
                convnext: ConvNext::load(l, "openclip_convnext_xxl", cfg.convnext).await?,
                dinov2: Dinov2::load(l, "dinov2_vitg14", cfg.dinov2).await?,
                blip2: load_blip2(cfg, l).await?,
            })
        };
        let qformer_proj = match cfg.blip2 {
            Some(b) => Some(Projector::load(l, "qformer_proj", b.qformer_dim, d).await?),
            None => None,
        };
        let tower = Self {
            encoders,
            visual_proj: Projector::load(l, "visual_proj", cfg.local_channels(), d).await?,
            start_img: l.tensor("start_img", [1, 1, d]).await?,
            end_img: l.tensor("end_img", [1, 1, d]).await?,
            qformer_proj,
            cfg: cfg.clone(),
            device: l.device().clone(),
        };
        Self::UNUSED.iter().for_each(|p| l.skip_prefix(p));
        Ok(tower)
    }

    /// Whether the encoders are loaded per image instead of kept on the device.
    pub fn is_streaming(&self) -> bool {
        self.encoders.is_none()
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Views stacked into a batch on the device: [V, 3, S, S].
    fn batch(&self, views: &[Planar]) -> Tensor<4> {
        let s = views.first().map_or(0, |v| v.height);
        let data: Vec<f32> = views.iter().flat_map(|v| v.data.iter().copied()).collect();
        Tensor::from_data(TensorData::new(data, [views.len(), 3, s, s]), &self.device)
    }

    /// `(x · clip_std + clip_mean − dino_mean) / dino_std`, per channel. x: [V, 3, S, S]
    fn to_dino_stats(&self, x: Tensor<4>) -> Tensor<4> {
        let col = |v: [f32; 3]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), &self.device);
        let shift: [f32; 3] = std::array::from_fn(|c| CLIP_MEAN[c] - DINO_MEAN[c]);
        x.mul(col(CLIP_STD)).add(col(shift)).div(col(DINO_STD))
    }

    /// The views on the device: the ViTs' batch and ConvNeXt's.
    pub fn view_batches(&self, views: &Views) -> ViewBatches {
        ViewBatches { vit: self.batch(&views.vit), convnext: self.batch(&views.convnext) }
    }

    /// Runs one resident encoder family on the views: [V, tokens, width]. `None` when the
    /// variant has no such encoder or the encoders are streamed.
    pub fn run_encoder(&self, kind: EncoderKind, b: &ViewBatches) -> Option<Tensor<3>> {
        let e = self.encoders.as_ref()?;
        match kind {
            EncoderKind::Clip => e.clip.as_ref().map(|c| c.forward(b.vit.clone())),
            EncoderKind::ConvNext => Some(ConvNext::tokens(e.convnext.forward(b.convnext.clone()), TOKEN_GRID)),
            EncoderKind::Dinov2 => Some(e.dinov2.forward(self.to_dino_stats(b.vit.clone()))),
            EncoderKind::QFormer => e.blip2.as_ref().map(|q| q.forward(b.vit.clone())),
        }
    }

    /// Runs every resident encoder on the views (None if they are streamed).
    pub fn encode_parts(&self, views: &Views) -> Option<EncoderOutputs> {
        self.encoders.as_ref()?;
        let b = self.view_batches(views);
        Some(EncoderOutputs {
            clip: self.run_encoder(EncoderKind::Clip, &b),
            convnext: self.run_encoder(EncoderKind::ConvNext, &b)?,
            dinov2: self.run_encoder(EncoderKind::Dinov2, &b)?,
            qformer: self.run_encoder(EncoderKind::QFormer, &b),
        })
    }

    /// Runs the encoders one at a time, each loaded from `source` and dropped after use,
    /// so at most one encoder's weights are on the device.
    pub async fn encode_parts_streaming<S: WeightSource>(&self, source: &S, views: &Views) -> Result<EncoderOutputs, WeightError> {
        let mut quiet = |_: &crate::weights::LoadProgress| {};
        let l = WeightLoader::new(source, &self.device, &mut quiet);
        let vit = self.batch(&views.vit);
        let clip = match load_clip(&self.cfg, &l).await? {
            Some(c) => Some(c.forward(vit.clone())),
            None => None,
        };
        let convnext = ConvNext::load(&l, "openclip_convnext_xxl", self.cfg.convnext).await?;
        let convnext = ConvNext::tokens(convnext.forward(self.batch(&views.convnext)), TOKEN_GRID);
        let dinov2 = Dinov2::load(&l, "dinov2_vitg14", self.cfg.dinov2).await?.forward(self.to_dino_stats(vit.clone()));
        let qformer = match load_blip2(&self.cfg, &l).await? {
            Some(b) => Some(b.forward(vit)),
            None => None,
        };
        Ok(EncoderOutputs { clip, convnext, dinov2, qformer })
    }

    /// The image block spliced after BOS with resident encoders: [1, V · tokens_per_view, D].
    pub fn encode(&self, views: &Views) -> Option<Tensor<3>> {
        self.encode_parts(views).map(|p| self.fuse(p))
    }

    /// Projects and wraps encoder outputs: [1, V · (2 + 32 + 257), D].
    pub fn fuse(&self, parts: EncoderOutputs) -> Tensor<3> {
        let mut local = Vec::with_capacity(3);
        local.extend(parts.clip);
        local.push(parts.convnext);
        local.push(parts.dinov2);
        let local = self.visual_proj.forward(Tensor::cat(local, 2)); // [V, 257, D]
        let v = local.dims()[0];
        let tokens = match (&self.qformer_proj, parts.qformer) {
            (Some(p), Some(q)) => Tensor::cat(vec![p.forward(q), local], 1),
            _ => local,
        };
        let block = Tensor::cat(vec![self.start_img.clone().repeat_dim(0, v), tokens, self.end_img.clone().repeat_dim(0, v)], 1);
        let [v, t, d] = block.dims();
        block.reshape([1, v * t, d])
    }
}
