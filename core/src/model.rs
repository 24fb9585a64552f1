//! A loaded model: configuration, tokenizer and language model, from the files of
//! one checkpoint directory (docs/spec.md §8). Callers hand over the bytes; this module
//! decides what they mean.

use std::sync::Mutex;

use burn::tensor::{Device, Tensor};

use crate::config::{ConfigOverrides, LlamaType, LlmConfig, DEFAULT_PREFILL_CHUNK};
use crate::error::{ConfigError, Result, WeightError};
use crate::preprocess::{decode_image, padded_resize, DecodeOptions, PaddedSquare, Views};
use crate::vision::{VisionConfig, VisionTower};
use crate::llm::Llm;
use crate::tokenizer::Tokenizer;
use crate::weights::{
    held_bytes, parse_shard_name, ByteSource, CheckpointSource, LoadProgress, ModelParallelSource, PthFile, SafetensorsFile,
    WeightDtype, WeightLoader, WeightSource,
};

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

/// A loaded SPHINX model: tokenizer, language model and, for multimodal
/// checkpoints, the visual encoders.
pub struct SphinxModel {
    pub config: LlmConfig,
    pub vision_config: Option<VisionConfig>,
    pub tokenizer: Tokenizer,
    pub llm: Llm,
    pub vision: Option<VisionTower>,
    /// The projected visual tokens of the last few images, by the SHA-256 of their bytes.
    image_cache: Mutex<Vec<([u8; 32], (PaddedSquare, Tensor<3>))>>,
}

/// A weight source with no tensors, for calling [`SphinxModel::image_tokens`] with
/// resident encoders (`None::<&NoSource>`).
pub struct NoSource;

impl WeightSource for NoSource {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn info(&self, _: &str) -> Option<crate::weights::TensorInfo> {
        None
    }
    async fn read(&self, name: &str) -> Result<crate::weights::HostTensor, WeightError> {
        Err(WeightError::MissingTensor { name: name.into() })
    }
}

/// How many images' visual tokens [`SphinxModel::image_tokens`] keeps.
const IMAGE_CACHE_SIZE: usize = 4;

impl SphinxModel {
    /// Reads the configuration and tokenizer, then the weights tensor by tensor.
    pub async fn load<B: ByteSource>(
        files: ModelFiles<B>,
        device: &Device,
        overrides: &ConfigOverrides,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Self> {
        let source = open_checkpoint(files.checkpoints)?;
        Self::load_from(&files.config_json, &files.meta_json, &files.tokenizer_model, &source, device, overrides, on_progress).await
    }

    /// Loads from any weight source: a checkpoint, HTTP shards, or a mix of two models.
    pub async fn load_from<S: WeightSource>(
        config_json: &str,
        meta_json: &str,
        tokenizer_model: &[u8],
        source: &S,
        device: &Device,
        overrides: &ConfigOverrides,
        on_progress: &mut dyn FnMut(&LoadProgress),
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_model_bytes(tokenizer_model)?;
        let config = LlmConfig::from_json(config_json, meta_json, tokenizer.vocab_size(), overrides)?;
        let json: serde_json::Value = serde_json::from_str(config_json)
            .map_err(|e| ConfigError::Json { file: "config.json".into(), reason: e.to_string() })?;
        let mut vision_config = VisionConfig::for_llama_type(config.llama_type, &json, config.dim)?;
        if let (Some(vc), Some(act)) = (vision_config.as_mut(), overrides.clip_activation) {
            if let Some(clip) = vc.clip.as_mut() {
                clip.act = act;
            }
        }
        let vision_bytes = match &vision_config {
            Some(vc) if !overrides.stream_encoders => 4 * vc.parameter_count(),
            _ => 0,
        };
        let loader = WeightLoader::new(source, device, on_progress).with_weight_dtype(overrides.weight_dtype).with_x_rounded_to_bf16(overrides.round_x_to_bf16);
        let llm_bytes = match loader.half_kind_of("output.weight") {
            Some(_) => config.device_bytes_with_weights(2),
            None => config.device_bytes(),
        };
        let need = llm_bytes + vision_bytes;
        if let Some(have) = overrides.device_memory.filter(|&have| need > have) {
            return Err(ConfigError::TooLarge { need, have }.into());
        }
        if let Some(limit) = overrides.max_buffer_bytes {
            check_buffer_sizes(source, &config, overrides.weight_dtype, limit)?;
        }
        let llm = Llm::load(&config, &loader).await?;
        let vision = match &vision_config {
            Some(vc) => Some(VisionTower::load(vc, &loader, overrides.stream_encoders).await?),
            None => None,
        };
        // Buffers some exporters add that the model recomputes.
        loader.skip_prefix("rope.freqs");
        loader.finish(config.llama_type.name())?;
        Ok(Self { config, vision_config, tokenizer, llm, vision, image_cache: Mutex::new(Vec::new()) })
    }

    pub fn llama_type(&self) -> LlamaType {
        self.config.llama_type
    }

    /// Decodes an image and makes the views this variant's encoders see (docs/spec.md §4).
    pub fn preprocess(&self, image: &[u8], opts: &DecodeOptions) -> Result<(PaddedSquare, Views)> {
        let vc = self.vision_config.as_ref().ok_or_else(|| {
            ConfigError::Invalid(format!("'{}' is a text-only model: it takes no image", self.config.llama_type.name()))
        })?;
        let img = decode_image(image, opts)?;
        let geometry = PaddedSquare::new(img.width, img.height);
        let (_, x) = padded_resize(&img, vc.tiling.image_size);
        Ok((geometry, vc.tiling.views(&x)))
    }

    fn tower(&self) -> Result<&VisionTower> {
        self.vision.as_ref().ok_or_else(|| {
            ConfigError::Invalid(format!("'{}' is a text-only model: it takes no image", self.config.llama_type.name())).into()
        })
    }

    /// The image block to splice after BOS, [1, image_tokens, D], with resident encoders.
    pub fn encode_image(&self, views: &Views) -> Result<Tensor<3>> {
        let tower = self.tower()?;
        let parts = tower.encode_parts(views).ok_or_else(|| {
            ConfigError::Invalid("the encoders are streamed: use encode_image_streaming with the checkpoint".into())
        })?;
        Ok(tower.fuse(parts))
    }

    /// The image block, loading each encoder from `source` for this image only.
    pub async fn encode_image_streaming<S: WeightSource>(&self, views: &Views, source: &S) -> Result<Tensor<3>> {
        let tower = self.tower()?;
        Ok(tower.fuse(tower.encode_parts_streaming(source, views).await?))
    }

    /// Decode, preprocess and encode an image, reusing the visual tokens of a recently
    /// seen identical image. `source` is needed when the encoders are streamed.
    pub async fn image_tokens<S: WeightSource>(
        &self,
        image: &[u8],
        opts: &DecodeOptions,
        source: Option<&S>,
    ) -> Result<(PaddedSquare, Tensor<3>)> {
        // A cryptographic hash: two different images never share an entry.
        let key: [u8; 32] = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update([opts.apply_exif_orientation as u8]);
            h.update(image);
            h.finalize().into()
        };
        if let Some((_, hit)) = self.image_cache.lock().ok().and_then(|c| c.iter().find(|(k, _)| *k == key).cloned()) {
            return Ok(hit);
        }
        let (geometry, views) = self.preprocess(image, opts)?;
        let tokens = match (self.tower()?.is_streaming(), source) {
            (true, Some(s)) => self.encode_image_streaming(&views, s).await?,
            (true, None) => return Err(ConfigError::Invalid("streamed encoders need the checkpoint source".into()).into()),
            (false, _) => self.encode_image(&views)?,
        };
        if let Ok(mut c) = self.image_cache.lock() {
            c.retain(|(k, _)| *k != key);
            c.insert(0, (key, (geometry, tokens.clone())));
            c.truncate(IMAGE_CACHE_SIZE);
        }
        Ok((geometry, tokens))
    }
}

/// Refuses, before anything is allocated, a model with a tensor (as it will be held with
/// `dtype`) or an activation of a prefill chunk that is larger than the device's largest
/// buffer: wgpu would otherwise fail at the first use of that buffer (lavapipe allows
/// 128 MiB, so an f32 TinyLlama's 250 MiB embedding cannot load there while its 16-bit
/// one can). The web manifest states the same bound for `Sphinx.load` (docs/design.md §9).
fn check_buffer_sizes<S: WeightSource>(source: &S, config: &LlmConfig, dtype: WeightDtype, limit: u64) -> Result<()> {
    let held = |name: &str, dtype| source.info(name).map_or(0, |info| held_bytes(name, &info, dtype));
    let largest_tensor = source.names().into_iter().map(|name| (held(&name, dtype), name)).max();
    if let Some((need, name)) = largest_tensor.filter(|&(need, _)| need > limit) {
        let hint = if held(&name, WeightDtype::Bf16) <= limit {
            ": hold the weights in 16 bits (--dtype bf16 or f16) or quantize them (sphinx quantize)"
        } else {
            ": quantize the weights (sphinx quantize --to q8_0 or q4_0)"
        };
        return Err(ConfigError::BufferTooLarge { what: format!("tensor '{name}'"), need, have: limit, hint }.into());
    }
    let activations = config.largest_activation_bytes(DEFAULT_PREFILL_CHUNK);
    if activations > limit {
        let what = format!("a prefill chunk of {DEFAULT_PREFILL_CHUNK} positions (its largest activation)");
        return Err(ConfigError::BufferTooLarge { what, need: activations, have: limit, hint: "" }.into());
    }
    Ok(())
}
