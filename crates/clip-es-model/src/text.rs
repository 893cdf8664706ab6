//! CLIP's text transformer (docs/algorithm.md, "Text side"; reference `clip/model.py`
//! `CLIP.encode_text`): token + positional embedding, causal residual blocks, `ln_final`, the
//! hidden state at the end-of-text token (the largest id of each sequence) `@ text_projection`.

use crate::backend::{cpu, Backend};
use crate::config::TextConfig;
use crate::kernels::LayerNorm;
use crate::tensors::{ModelError, TensorSource};
use crate::transformer::{layer_norm, project_row, ResidualBlock};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct TextTransformer {
    config: TextConfig,
    embed_dim: usize,
    /// vocab x width.
    token_embedding: Vec<f32>,
    /// context x width.
    positional_embedding: Vec<f32>,
    blocks: Vec<ResidualBlock>,
    ln_final: LayerNorm,
    /// width x embed_dim.
    text_projection: Vec<f32>,
    backend: Arc<dyn Backend>,
}

impl TextTransformer {
    /// Builds the tower from OpenAI-named weights (`token_embedding.weight`, `transformer.*`, ...).
    pub fn new(
        src: &dyn TensorSource,
        config: &TextConfig,
        embed_dim: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        let w = config.width;
        let eps = eps as f32;
        let blocks = (0..config.layers)
            .map(|i| {
                ResidualBlock::new(
                    src,
                    &format!("transformer.resblocks.{i}"),
                    w,
                    config.heads,
                    eps,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TextTransformer {
            config: config.clone(),
            embed_dim,
            token_embedding: src.tensor_f32("token_embedding.weight", &[config.vocab_size, w])?,
            positional_embedding: src
                .tensor_f32("positional_embedding", &[config.context_length, w])?,
            blocks,
            ln_final: layer_norm(src, "ln_final", w, eps)?,
            text_projection: src.tensor_f32("text_projection", &[w, embed_dim])?,
            backend: cpu(),
        })
    }

    /// The same tower running on another backend.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = backend;
        self
    }

    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Output dimension of the projection (the joint embedding space).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// [`TextTransformer::encode_at`] at the end-of-text positions of the sequences: the first
    /// maximum of each (the end-of-text token has the largest id).
    pub fn encode(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let eots: Vec<usize> = ids
            .iter()
            .map(|seq| {
                seq.iter()
                    .enumerate()
                    .fold(0, |best, (i, &v)| if v > seq[best] { i } else { best })
            })
            .collect();
        self.encode_at(ids, &eots)
    }

    /// Encodes token sequences (each exactly `context_length` ids, as `clip.tokenize` makes
    /// them), reading each at its end-of-text position `eots[b]` (the tokenizer knows it).
    /// Returns batch x embed_dim, not normalised.
    ///
    /// The mask is causal, so the state at the end-of-text token depends only on the tokens up
    /// to it: the padding after the longest prompt is never computed (prompts are ~10 tokens
    /// of 77), which gives the same values several times faster.
    pub fn encode_at(&self, ids: &[Vec<u32>], eots: &[usize]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (ctx, w, e) = (
            self.config.context_length,
            self.config.width,
            self.embed_dim,
        );
        let batch = ids.len();
        if eots.len() != batch {
            return Err(ModelError::Input(format!(
                "{} end-of-text positions for {batch} sequences",
                eots.len()
            )));
        }
        for (b, seq) in ids.iter().enumerate() {
            if seq.len() != ctx {
                return Err(ModelError::Input(format!(
                    "token sequence {b} has {} ids, expected {ctx}",
                    seq.len()
                )));
            }
            if eots[b] >= ctx {
                return Err(ModelError::Input(format!(
                    "end-of-text position {} of sequence {b} is outside the context of {ctx}",
                    eots[b]
                )));
            }
            if let Some(&id) = seq
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(ModelError::Input(format!(
                    "token id {id} is outside the model's vocabulary of {}",
                    self.config.vocab_size
                )));
            }
        }
        let len = eots.iter().max().map_or(0, |m| m + 1);
        let mut x = vec![0f32; batch * len * w];
        for (b, seq) in ids.iter().enumerate() {
            for (t, &id) in seq[..len].iter().enumerate() {
                let id = id as usize;
                let row = &mut x[(b * len + t) * w..][..w];
                for ((r, &te), &pe) in row
                    .iter_mut()
                    .zip(&self.token_embedding[id * w..][..w])
                    .zip(&self.positional_embedding[t * w..][..w])
                {
                    *r = te + pe;
                }
            }
        }
        let be = self.backend.as_ref();
        for block in &self.blocks {
            block.forward_batch(be, &mut x, batch, len, true);
        }
        Ok(eots
            .iter()
            .enumerate()
            .map(|(b, &eot)| {
                let h = be.layer_norm(&self.ln_final, &x[(b * len + eot) * w..][..w]);
                project_row(&h, &self.text_projection, e)
            })
            .collect())
    }
}
