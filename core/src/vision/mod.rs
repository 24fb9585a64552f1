//! SPHINX's visual embedding mix (docs/spec.md §0, §3): CLIP ViT-L/14, ConvNeXt-XXL, DINOv2
//! ViT-g/14 and the BLIP-2 Q-Former encode every view; their tokens are fused and
//! projected into the LLM's embedding space (`llama_ens*.py` `encode_image`).

mod blip2;
mod clip;
mod config;
mod convnext;
mod dinov2;
mod layers;
mod tower;

pub use config::{Activation, Blip2Config, ClipConfig, ConvNextConfig, Dinov2Config, VisionConfig};
pub use tower::{EncoderKind, EncoderOutputs, ViewBatches, VisionTower};
