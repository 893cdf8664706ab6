//! CLIP's vision transformer as burn modules (reference `clip/model.py` `VisionTransformer`,
//! `ResidualAttentionBlock`; the same maths as `clip_es_model::vision` and
//! `clip_es_model::transformer` on the CPU kernels) and the Softmax-GradCAM pass of CLIP-ES on
//! it (docs/algorithm.md, "Softmax-GradCAM"; reference `clip/model.py:400-420`,
//! `pytorch_grad_cam/base_cam.py:62-154`; `clip_es::gradcam::softmax_gradcam` is the CPU
//! version).
//!
//! Tensors are batch x tokens x width. The frozen blocks run without autodiff; the gradient
//! pass repeats the last block once per target class (a batch of targets), with the last
//! block's `ln_1` output as the autodiff leaf, so one backward pass gives every target's
//! gradient (each batch element only sees its own target's probability).

use burn::module::Module;
use burn::tensor::{activation, Device, Tensor, TensorData};
use clip_es_model::vision::resize_bilinear_channels_last;
use clip_es_model::{ModelError, TensorSource, VisionConfig};
use std::time::Instant;

/// Layer normalisation over the last dimension, two-pass like the CPU kernel:
/// `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f32,
}

impl LayerNorm {
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        d: usize,
        eps: f32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(LayerNorm {
            weight: upload(
                src.tensor_f32(&format!("{prefix}.weight"), &[d])?,
                [d],
                device,
            ),
            bias: upload(
                src.tensor_f32(&format!("{prefix}.bias"), &[d])?,
                [d],
                device,
            ),
            eps,
        })
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(D - 1);
        let y = centred / var.add_scalar(self.eps).sqrt();
        y * self.weight.clone().unsqueeze::<D>() + self.bias.clone().unsqueeze::<D>()
    }

    fn autodiff(&self) -> Self {
        LayerNorm {
            weight: self.weight.clone().autodiff(),
            bias: self.bias.clone().autodiff(),
            eps: self.eps,
        }
    }
}

/// `x W^T + b`, the weight kept transposed (in x out) so the product needs no transpose.
#[derive(Module, Debug)]
pub struct Linear {
    weight_t: Tensor<2>,
    bias: Tensor<1>,
}

impl Linear {
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        out: usize,
        inp: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let w = src.tensor_f32(&format!("{prefix}.weight"), &[out, inp])?;
        Ok(Linear {
            weight_t: upload(transpose(&w, out, inp), [inp, out], device),
            bias: upload(
                src.tensor_f32(&format!("{prefix}.bias"), &[out])?,
                [out],
                device,
            ),
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let out = self.weight_t.dims()[1];
        let y = x.reshape([b * n, d]).matmul(self.weight_t.clone())
            + self.bias.clone().unsqueeze::<2>();
        y.reshape([b, n, out])
    }

    fn autodiff(&self) -> Self {
        Linear {
            weight_t: self.weight_t.clone().autodiff(),
            bias: self.bias.clone().autodiff(),
        }
    }
}

/// The pre-norm residual block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`, MLP =
/// Linear(d, 4d), QuickGELU, Linear(4d, d).
#[derive(Module, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    /// Packed q, k, v projection, as `nn.MultiheadAttention.in_proj_weight`.
    in_proj: Linear,
    out_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    heads: usize,
}

impl Block {
    fn load(
        src: &dyn TensorSource,
        prefix: &str,
        d: usize,
        heads: usize,
        eps: f32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if heads == 0 || !d.is_multiple_of(heads) {
            return Err(ModelError::Input(format!(
                "{prefix}: width {d} is not divisible into {heads} heads"
            )));
        }
        let p = |s: &str| format!("{prefix}.{s}");
        Ok(Block {
            ln_1: LayerNorm::load(src, &p("ln_1"), d, eps, device)?,
            in_proj: Linear::load_packed(src, &p("attn"), d, device)?,
            out_proj: Linear::load(src, &p("attn.out_proj"), d, d, device)?,
            ln_2: LayerNorm::load(src, &p("ln_2"), d, eps, device)?,
            c_fc: Linear::load(src, &p("mlp.c_fc"), 4 * d, d, device)?,
            c_proj: Linear::load(src, &p("mlp.c_proj"), d, 4 * d, device)?,
            heads,
        })
    }

    /// Multi-head attention of `h` (batch x tokens x width), queries scaled by
    /// `head_dim^-0.5` as `torch.nn.MultiheadAttention`: the output after `out_proj` and every
    /// head's probabilities (batch x heads x tokens x tokens).
    fn attention(&self, h: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let [b, n, d] = h.dims();
        let heads = self.heads;
        let hd = d / heads;
        let qkv = self.in_proj.forward(h);
        let head = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([b, n, heads, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (head(0), head(1), head(2));
        let scores = q
            .mul_scalar((hd as f32).powf(-0.5))
            .matmul(k.swap_dims(2, 3));
        let probs = activation::softmax(scores, 3);
        let out = probs.clone().matmul(v).swap_dims(1, 2).reshape([b, n, d]);
        (self.out_proj.forward(out), probs)
    }

    fn mlp_residual(&self, x: Tensor<3>) -> Tensor<3> {
        let f = self.c_fc.forward(self.ln_2.forward(x.clone()));
        // QuickGELU: x * sigmoid(1.702 x).
        let f = f.clone() * activation::sigmoid(f.mul_scalar(1.702));
        x + self.c_proj.forward(f)
    }

    /// The block from its input `x` and its `ln_1` output `a` (the activation GradCAM explains;
    /// only the attention branch sees it): the output and every head's probabilities.
    fn forward_from_ln_1(&self, x: Tensor<3>, a: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let (attn, probs) = self.attention(a);
        (self.mlp_residual(x + attn), probs)
    }

    fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>) {
        let a = self.ln_1.forward(x.clone());
        self.forward_from_ln_1(x, a)
    }

    fn autodiff(&self) -> Self {
        Block {
            ln_1: self.ln_1.autodiff(),
            in_proj: self.in_proj.autodiff(),
            out_proj: self.out_proj.autodiff(),
            ln_2: self.ln_2.autodiff(),
            c_fc: self.c_fc.autodiff(),
            c_proj: self.c_proj.autodiff(),
            heads: self.heads,
        }
    }
}

impl Linear {
    /// `{prefix}.in_proj_weight` / `{prefix}.in_proj_bias` (3d x d).
    fn load_packed(
        src: &dyn TensorSource,
        prefix: &str,
        d: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let w = src.tensor_f32(&format!("{prefix}.in_proj_weight"), &[3 * d, d])?;
        let b = src.tensor_f32(&format!("{prefix}.in_proj_bias"), &[3 * d])?;
        Ok(Linear {
            weight_t: upload(transpose(&w, 3 * d, d), [d, 3 * d], device),
            bias: upload(b, [3 * d], device),
        })
    }
}

/// The parameters of the tower on the device.
#[derive(Module, Debug)]
pub struct VisionLayers {
    /// `conv1` as a matrix, transposed: (3 * patch * patch) x width, rows in (channel, row,
    /// col) order.
    patch_embed_t: Tensor<2>,
    /// 1 x width.
    class_embedding: Tensor<2>,
    ln_pre: LayerNorm,
    blocks: Vec<Block>,
    ln_post: LayerNorm,
    /// width x embed_dim (`x @ proj`).
    proj: Tensor<2>,
}

/// CLIP ViT image encoder on a burn device, for the CLIP-ES GradCAM pass.
#[derive(Debug)]
pub struct VisionTower {
    layers: VisionLayers,
    config: VisionConfig,
    embed_dim: usize,
    /// The pretrained positional embedding ((grid * grid + 1) x width) on the host: it is
    /// resized to each input's grid there, as the CPU tower does.
    positional_embedding: Vec<f32>,
    device: Device,
}

/// One Softmax-GradCAM pass: the input and the classes it is explained against.
#[derive(Clone, Copy, Debug)]
pub struct GradCamRequest<'a> {
    /// Normalised CHW pixels (3 x height x width), sides multiples of the patch size.
    pub pixels: &'a [f32],
    pub height: usize,
    pub width: usize,
    /// The positional embedding to add ((grid_h * grid_w + 1) x width); `None`:
    /// [`VisionTower::positional_embedding_for`] of the input's grid. CLIP-ES passes its
    /// float16-rounded one.
    pub positional_embedding: Option<&'a [f32]>,
    /// Keep the head-mean attention of blocks `keep_attention_from..layers`.
    pub keep_attention_from: usize,
    /// classes x embed_dim text features (normalised again here, as the reference does).
    pub class_features: &'a [f32],
    /// `exp(logit_scale)` of the model.
    pub logit_scale: f32,
    /// The classes whose softmax probability is explained.
    pub targets: &'a [usize],
}

/// What a GradCAM pass brings back to the host (the fields of
/// `clip_es::gradcam::GradCamOutput`).
#[derive(Clone, Debug)]
pub struct GradCamParts {
    pub grid_h: usize,
    pub grid_w: usize,
    /// The last block's `ln_1` output at the patch tokens (patches x width).
    pub activation: Vec<f32>,
    /// For each target: the gradient of its softmax probability with respect to the
    /// activation, averaged over the patch positions (width values).
    pub channel_weights: Vec<Vec<f32>>,
    /// Softmax over all classes.
    pub probabilities: Vec<f32>,
    /// Head-mean attention of the kept blocks (tokens x tokens each).
    pub attention: Vec<Vec<f32>>,
    /// Seconds up to the class probabilities, and for the gradients and the copies back.
    pub forward_seconds: f64,
    pub backward_seconds: f64,
}

impl VisionTower {
    /// Loads the tower from OpenAI-named weights (`visual.*`) onto `device`: the same names
    /// and shapes as `clip_es_model::VisionTransformer::new`.
    pub fn new(
        src: &dyn TensorSource,
        config: &VisionConfig,
        embed_dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (w, p, g) = (config.width, config.patch_size, config.grid);
        let eps = eps as f32;
        let blocks = (0..config.layers)
            .map(|i| {
                Block::load(
                    src,
                    &format!("visual.transformer.resblocks.{i}"),
                    w,
                    config.heads,
                    eps,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if blocks.is_empty() {
            return Err(ModelError::Input("the vision tower has no blocks".into()));
        }
        let conv = src.tensor_f32("visual.conv1.weight", &[w, 3, p, p])?;
        let layers = VisionLayers {
            patch_embed_t: upload(transpose(&conv, w, 3 * p * p), [3 * p * p, w], device),
            class_embedding: upload(
                src.tensor_f32("visual.class_embedding", &[w])?,
                [1, w],
                device,
            ),
            ln_pre: LayerNorm::load(src, "visual.ln_pre", w, eps, device)?,
            blocks,
            ln_post: LayerNorm::load(src, "visual.ln_post", w, eps, device)?,
            proj: upload(
                src.tensor_f32("visual.proj", &[w, embed_dim])?,
                [w, embed_dim],
                device,
            ),
        };
        Ok(VisionTower {
            layers,
            config: config.clone(),
            embed_dim,
            positional_embedding: src.tensor_f32("visual.positional_embedding", &[g * g + 1, w])?,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    pub fn layers(&self) -> usize {
        self.layers.blocks.len()
    }

    /// Checks an input size and returns its token grid.
    pub fn grid_for(&self, height: usize, width: usize) -> Result<(usize, usize), ModelError> {
        let p = self.config.patch_size;
        if height < p || width < p || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
            return Err(ModelError::Input(format!(
                "image input is {width}x{height}; both sides must be positive multiples of the patch size {p}"
            )));
        }
        Ok((height / p, width / p))
    }

    /// The positional embedding for a grid_h x grid_w token grid, as the CPU tower computes
    /// it: the class position as it is, the pretrained grid resized bilinearly
    /// (`align_corners = false`).
    pub fn positional_embedding_for(&self, grid_h: usize, grid_w: usize) -> Vec<f32> {
        let w = self.config.width;
        let g = self.config.grid;
        let mut out = Vec::with_capacity((grid_h * grid_w + 1) * w);
        out.extend_from_slice(&self.positional_embedding[..w]);
        out.extend(resize_bilinear_channels_last(
            &self.positional_embedding[w..],
            g,
            g,
            grid_h,
            grid_w,
            w,
        ));
        out
    }

    /// Patch embedding (on the device: the image cut into patches by a reshape), class
    /// token, positional embedding and `ln_pre`: 1 x tokens x width.
    fn embed(
        &self,
        pixels: &[f32],
        height: usize,
        width: usize,
        positional_embedding: Option<&[f32]>,
    ) -> Result<Tensor<3>, ModelError> {
        let (gh, gw) = self.grid_for(height, width)?;
        if pixels.len() != 3 * height * width {
            return Err(ModelError::Input(format!(
                "image input has {} values, expected 3 x {height} x {width}",
                pixels.len()
            )));
        }
        let (p, d) = (self.config.patch_size, self.config.width);
        let tokens = gh * gw + 1;
        let pos = match positional_embedding {
            Some(pos) if pos.len() != tokens * d => {
                return Err(ModelError::Input(format!(
                    "positional embedding has {} values, expected {tokens} x {d}",
                    pos.len()
                )))
            }
            Some(pos) => pos.to_vec(),
            None => self.positional_embedding_for(gh, gw),
        };
        let image: Tensor<5> =
            upload(pixels.to_vec(), [3, height, width], &self.device).reshape([3, gh, p, gw, p]);
        // (gy, gx, channel, ky, kx): one row per patch in conv1's weight order.
        let cols = image.permute([1, 3, 0, 2, 4]).reshape([gh * gw, 3 * p * p]);
        let patches = cols.matmul(self.layers.patch_embed_t.clone());
        let x = Tensor::cat(vec![self.layers.class_embedding.clone(), patches], 0)
            + upload(pos, [tokens, d], &self.device);
        Ok(self.layers.ln_pre.forward(x).unsqueeze::<3>())
    }

    /// Softmax-GradCAM at the last block's `ln_1` output, on the device
    /// (`clip_es::gradcam::softmax_gradcam` describes the method). The image embedding is the
    /// patch-mean of `ln_post`, `@ proj`, L2-normalised; the logits are
    /// `logit_scale * cos(image, class)`; softmax runs over all classes; each target's
    /// probability is differentiated with respect to the `ln_1` output A by burn's autodiff,
    /// and the gradient averaged over the patch positions.
    pub fn softmax_gradcam(&self, req: &GradCamRequest) -> Result<GradCamParts, ModelError> {
        let (gh, gw) = self.grid_for(req.height, req.width)?;
        let e = self.embed_dim;
        if req.class_features.is_empty() || !req.class_features.len().is_multiple_of(e) {
            return Err(ModelError::Input(format!(
                "class features must be classes x {e} values"
            )));
        }
        let classes = req.class_features.len() / e;
        if let Some(&t) = req.targets.iter().find(|&&t| t >= classes) {
            return Err(ModelError::Input(format!(
                "target class {t} out of range for {classes} classes"
            )));
        }
        let (patches, tokens, d) = (gh * gw, gh * gw + 1, self.config.width);
        let start = Instant::now();
        let mut x = self.embed(req.pixels, req.height, req.width, req.positional_embedding)?;
        let blocks = &self.layers.blocks;
        let last = blocks.len() - 1;
        let mut attention: Vec<Tensor<2>> = Vec::new();
        for (i, block) in blocks[..last].iter().enumerate() {
            let (y, probs) = block.forward(x);
            x = y;
            if i >= req.keep_attention_from {
                attention.push(head_mean(probs, tokens));
            }
        }
        // The gradient pass: the last block once per target (at least once, for the
        // probabilities), its `ln_1` output the autodiff leaf.
        let batch = req.targets.len().max(1);
        let block = blocks[last].autodiff();
        let a = blocks[last].ln_1.forward(x.clone());
        let activation = a.clone();
        let leaf = a.repeat_dim(0, batch).autodiff().require_grad();
        let (y, probs) = block.forward_from_ln_1(x.autodiff(), leaf.clone());
        if last >= req.keep_attention_from {
            attention.push(head_mean(probs.without_autodiff().narrow(0, 0, 1), tokens));
        }
        let y = self.layers.ln_post.autodiff().forward(y);
        let pooled = y.narrow(1, 1, patches).mean_dim(1).reshape([batch, d]);
        let z = pooled.matmul(self.layers.proj.clone().autodiff());
        let zn = z.clone() / z.powi_scalar(2).sum_dim(1).sqrt();
        let text = upload(req.class_features.to_vec(), [classes, e], &self.device);
        let text = (text.clone() / text.powi_scalar(2).sum_dim(1).sqrt()).autodiff();
        let logits = zn.matmul(text.transpose()).mul_scalar(req.logit_scale);
        let probabilities = activation::softmax(logits, 1);
        let probs_host = to_host(probabilities.clone().without_autodiff().narrow(0, 0, 1))?;
        let forward_seconds = start.elapsed().as_secs_f64();

        let start = Instant::now();
        let channel_weights = if req.targets.is_empty() {
            Vec::new()
        } else {
            // Row k of the mask picks target k's probability: the sum's gradient in batch
            // element k is that probability's alone.
            let mut mask = vec![0f32; batch * classes];
            for (k, &t) in req.targets.iter().enumerate() {
                mask[k * classes + t] = 1.0;
            }
            let mask = upload(mask, [batch, classes], &self.device).autodiff();
            let grads = (probabilities * mask).sum().backward();
            let grad = leaf
                .grad(&grads)
                .ok_or_else(|| ModelError::Input("autodiff gave no GradCAM gradient".into()))?;
            let weights = to_host(grad.narrow(1, 1, patches).mean_dim(1).reshape([batch, d]))?;
            weights.chunks_exact(d).map(<[f32]>::to_vec).collect()
        };
        let activation = to_host(activation.narrow(1, 1, patches))?;
        let attention = attention
            .into_iter()
            .map(to_host)
            .collect::<Result<_, _>>()?;
        Ok(GradCamParts {
            grid_h: gh,
            grid_w: gw,
            activation,
            channel_weights,
            probabilities: probs_host,
            attention,
            forward_seconds,
            backward_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// The head-mean attention of the first batch element: tokens x tokens.
fn head_mean(probs: Tensor<4>, tokens: usize) -> Tensor<2> {
    probs.narrow(0, 0, 1).mean_dim(1).reshape([tokens, tokens])
}

fn upload<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The values of `t` on the host. A GPU reports the failures of the work queued before (a
/// buffer larger than the device allows, its memory exhausted) when a result is read: they
/// come back as an error of this image, with the device's own reason, instead of a panic.
fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    let data = t.try_into_data().map_err(|e| {
        ModelError::Input(crate::device_failure(&e.to_string(), "lower --max-side"))
    })?;
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| ModelError::Input(format!("the device returned no f32 data ({e:?})")))
}

/// The transpose of a row-major rows x cols matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}
