//! A loaded model: configuration, tokenizer and language model, from the files of
//! one checkpoint directory (spec §8). Callers hand over the bytes; this module
//! decides what they mean.

use burn::tensor::Device;

use crate::config::{ConfigOverrides, LlamaType, LlmConfig};
use crate::error::{Result, WeightError};
use crate::llm::Llm;
use crate::tokenizer::Tokenizer;
use crate::weights::{
    parse_shard_name, ByteSource, CheckpointSource, LoadProgress, ModelParallelSource, PthFile, SafetensorsFile,
    WeightLoader, WeightSource,
};

/// Checkpoint keys (without `llma.`) that belong to the visual half of a
/// multimodal SPHINX checkpoint.
pub const VISUAL_PREFIXES: [&str; 8] =
    ["clip.", "openclip_convnext_xxl.", "dinov2_vitg14.", "qformer.", "visual_proj.", "qformer_proj.", "start_img", "end_img"];

/// The raw contents of a model directory.
pub struct ModelFiles<B: ByteSource> {
    /// `config.json` (or `params.json`).
    pub config_json: String,
    pub meta_json: String,
    pub tokenizer_model: Vec<u8>,
    /// Either every `consolidated.NN-of-MM.model.pth` shard or one `*.safetensors`.
    pub checkpoints: Vec<B>,
}

/// Opens the checkpoint files as one weight source: model-parallel `.pth` shards
/// (all ranks required, merged on read) or a single safetensors file.
pub fn open_checkpoint<B: ByteSource>(files: Vec<B>) -> Result<CheckpointSource<B>, WeightError> {
    let file_name = |b: &B| b.name().rsplit(['/', '\\']).next().unwrap_or("").to_string();
    if files.iter().any(|f| file_name(f).ends_with(".safetensors")) {
        if files.len() != 1 {
            return Err(WeightError::NoCheckpoint(format!(
                "expected one .safetensors file, found {} checkpoint files",
                files.len()
            )));
        }
        let f = files.into_iter().next().ok_or_else(|| WeightError::NoCheckpoint("no files".into()))?;
        return Ok(CheckpointSource::Safetensors(SafetensorsFile::open(f)?));
    }
    let mut shards: Vec<(usize, usize, B)> = Vec::new();
    for f in files {
        let name = file_name(&f);
        let (rank, world) = parse_shard_name(&name).ok_or_else(|| {
            WeightError::NoCheckpoint(format!("'{name}' is not named consolidated.NN-of-MM.model.pth"))
        })?;
        shards.push((rank, world, f));
    }
    let world = shards.first().map(|s| s.1).ok_or_else(|| WeightError::NoCheckpoint("no checkpoint files".into()))?;
    shards.sort_by_key(|s| s.0);
    for r in 0..world {
        if !shards.iter().any(|s| s.0 == r && s.1 == world) {
            return Err(WeightError::NoCheckpoint(format!(
                "shard consolidated.{r:02}-of-{world:02}.model.pth is missing"
            )));
        }
    }
    if shards.len() != world {
        return Err(WeightError::NoCheckpoint(format!("{} shard files for a {world}-way model", shards.len())));
    }
    let files = shards.into_iter().map(|s| PthFile::open(s.2)).collect::<Result<Vec<_>, _>>()?;
    Ok(CheckpointSource::Pth(ModelParallelSource::new(files)?))
}

/// A text model: what SPHINX's language half needs to answer.
pub struct TextModel {
    pub config: LlmConfig,
    pub tokenizer: Tokenizer,
    pub llm: Llm,
}

impl TextModel {
    /// Reads the configuration and tokenizer, then the weights tensor by tensor.
    pub async fn load<B: ByteSource>(
        files: ModelFiles<B>,
        device: &Device,
        overrides: &ConfigOverrides,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_model_bytes(&files.tokenizer_model)?;
        let config = LlmConfig::from_json(&files.config_json, &files.meta_json, tokenizer.vocab_size(), overrides)?;
        let source = open_checkpoint(files.checkpoints)?;
        let llm = Self::load_llm(&config, &source, device, on_progress).await?;
        Ok(Self { config, tokenizer, llm })
    }

    /// Loads the LLM from any weight source, checking that every tensor is used.
    pub async fn load_llm<S: WeightSource>(
        config: &LlmConfig,
        source: &S,
        device: &Device,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Llm> {
        let loader = WeightLoader::new(source, device, on_progress);
        let llm = Llm::load(config, &loader).await?;
        if config.llama_type.is_multimodal() {
            log::warn!(
                "'{}' is a multimodal checkpoint: its visual encoders are not used by this build (text only)",
                config.llama_type.name()
            );
            VISUAL_PREFIXES.iter().for_each(|p| loader.skip_prefix(p));
        }
        // Buffers some exporters add that the model recomputes.
        loader.skip_prefix("rope.freqs");
        loader.finish(config.llama_type.name())?;
        Ok(llm)
    }

    pub fn llama_type(&self) -> LlamaType {
        self.config.llama_type
    }
}
