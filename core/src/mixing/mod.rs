//! Weight mixing, SPHINX's domain mix (docs/spec.md §7): θ = β·θ_real + (1−β)·θ_synthetic for
//! two fine-tunes of one model. Which tensors mix, and with which β, is an ordered list
//! of rules; tensors no rule covers (the frozen visual encoders) must be identical in
//! both inputs. Mixing happens tensor by tensor: offline into a new checkpoint, or while
//! loading through [`MixedSource`], so peak memory stays near two tensors.

mod rules;
mod source;

pub use rules::{MixAction, MixRule, MixRules};
pub use source::{mix_tensors, MixedSource};

use crate::config::{ConfigOverrides, LlmConfig};
use crate::error::MixError;
use crate::vision::VisionConfig;

/// Fails unless both `config.json` + `meta.json` pairs describe the same architecture.
pub fn check_same_architecture(real: (&str, &str), synthetic: (&str, &str)) -> Result<(), MixError> {
    let parse = |(config, meta): (&str, &str), which: &str| -> Result<(LlmConfig, Option<VisionConfig>), MixError> {
        let bad = |e: String| MixError::ArchitectureMismatch(format!("the {which} model's configuration: {e}"));
        let c = LlmConfig::from_json(config, meta, 1, &ConfigOverrides::default()).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(config).map_err(|e| bad(e.to_string()))?;
        let v = VisionConfig::for_llama_type(c.llama_type, &json, c.dim).map_err(|e| bad(e.to_string()))?;
        Ok((c, v))
    };
    let (a, b) = (parse(real, "real")?, parse(synthetic, "synthetic")?);
    if a.0.llama_type != b.0.llama_type {
        return Err(MixError::ArchitectureMismatch(format!(
            "llama_type '{}' vs '{}'",
            a.0.llama_type.name(),
            b.0.llama_type.name()
        )));
    }
    if a != b {
        return Err(MixError::ArchitectureMismatch(format!("{:?} vs {:?}", a.0, b.0)));
    }
    Ok(())
}
