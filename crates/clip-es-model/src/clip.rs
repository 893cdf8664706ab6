//! A whole CLIP model ready to encode: resolved files, both towers, the logit scale and the
//! matching tokenizer (reference `clip/clip.py` `load` and `tokenize`).

use crate::backend::Backend;
use crate::config::ClipConfig;
use crate::hub::{resolve_model, HubError, ModelFiles, TokenizerFiles};
use crate::tensors::{ModelError, TakeTensors, TensorSource};
use crate::text::TextTransformer;
use crate::vision::VisionTransformer;
use crate::weights::{ClipWeights, WeightsError};
use clip_es_tokenizer::{ClipTokenizer, TokenizerError};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path}: {source}")]
    Model { path: PathBuf, source: ModelError },
    #[error(
        "{path}: the tokenizer has {tokenizer} tokens but the model's vocabulary only {model}"
    )]
    VocabMismatch {
        path: PathBuf,
        tokenizer: usize,
        model: usize,
    },
}

/// OpenAI CLIP with its tokenizer.
pub struct Clip {
    config: ClipConfig,
    files: ModelFiles,
    vision: VisionTransformer,
    text: TextTransformer,
    /// `exp(logit_scale)`: 100 for the released models.
    logit_scale: f32,
    tokenizer: ClipTokenizer,
}

impl Clip {
    /// Resolves `spec` (a local directory or file, a Hugging Face id, or an OpenAI name such as
    /// `ViT-B/16`) and loads it.
    pub fn load(spec: &str) -> Result<Self, ClipError> {
        Self::from_files(resolve_model(spec)?)
    }

    pub fn from_files(files: ModelFiles) -> Result<Self, ClipError> {
        let weights = ClipWeights::load(&files.weights)?;
        let tokenizer = match &files.tokenizer {
            TokenizerFiles::BundledOpenAi => ClipTokenizer::openai()?,
            TokenizerFiles::HuggingFace { dir, .. } => ClipTokenizer::from_hf_dir(dir)?,
        };
        let config = weights.config().clone();
        let path = files.weights.clone();
        if tokenizer.vocab_size() > config.text.vocab_size {
            return Err(ClipError::VocabMismatch {
                path,
                tokenizer: tokenizer.vocab_size(),
                model: config.text.vocab_size,
            });
        }
        let model_err = |source| ClipError::Model {
            path: path.clone(),
            source,
        };
        let eps = config.layer_norm_eps;
        // The towers take the weights' buffers over (moved, not copied).
        let src = TakeTensors::new(weights.into_tensors());
        let logit_scale = src.scalar_f32("logit_scale").map_err(model_err)?.exp();
        let vision = VisionTransformer::new(&src, &config.vision, config.embed_dim, eps)
            .map_err(model_err)?;
        let text =
            TextTransformer::new(&src, &config.text, config.embed_dim, eps).map_err(model_err)?;
        Ok(Clip {
            config,
            files,
            vision,
            text,
            logit_scale,
            tokenizer,
        })
    }

    /// Both towers on another backend.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.vision = self.vision.with_backend(backend.clone());
        self.text = self.text.with_backend(backend);
        self
    }

    /// The model's sizes.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Where the weights and the tokenizer came from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The image tower.
    pub fn vision(&self) -> &VisionTransformer {
        &self.vision
    }

    /// The image tower alone (the text tower and tokenizer are dropped: the training decoder
    /// needs image features only).
    pub fn into_vision(self) -> VisionTransformer {
        self.vision
    }

    /// The text tower.
    pub fn text(&self) -> &TextTransformer {
        &self.text
    }

    /// `exp(logit_scale)`: 100 for the released models.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Tokenizes and encodes texts (not normalised), batch x embed_dim.
    pub fn encode_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, ClipError> {
        let ctx = self.config.text.context_length;
        let batch = self.tokenizer.tokenize(texts, ctx, false)?;
        let ids: Vec<Vec<u32>> = (0..batch.rows()).map(|i| batch.row(i).to_vec()).collect();
        let eots = batch.eot_positions();
        self.text
            .encode_at(&ids, &eots)
            .map_err(|source| ClipError::Model {
                path: self.files.weights.clone(),
                source,
            })
    }
}
