//! DeepLab-v2 (Chen et al., TPAMI 2017) as deeplab-pytorch builds and trains it, the network the
//! CLIP-ES paper trains on its pseudo masks (paper section 4.1, "segmentation network"; see
//! docs/training.md). Mirrors kazuto1011/deeplab-pytorch at 4219467f: `libs/models/resnet.py`
//! lines 26-112 (Caffe-style bottleneck: the stride sits in the 1x1 `reduce` conv; stem
//! max-pool 3/2/1 with ceil mode), `libs/models/deeplabv2.py` lines 20-62 (dilations 2 and 4 in
//! the last two stages, output stride 8; ASPP branches summed) and `libs/models/msc.py` lines
//! 13-48 (inputs at 1.0, 0.75, 0.5 and the pixel-wise max of the logits).
//!
//! The backbone comes in two styles ([`Backbone`]): deeplab-pytorch's Caffe ResNet above, and
//! torchvision's ResNet v1.5 (stride in the 3x3 conv, stem max-pool without ceil mode,
//! `replace_stride_with_dilation=[False, True, True]`) for torchvision ImageNet weights (see
//! [`crate::torchvision`]). Both use our parameter names.
//!
//! Widths and depths are parameters so tests run a tiny network; `DeepLabConfig::resnet101`
//! is the paper's. Batch norm is frozen (deeplab-pytorch's `freeze_bn`): each BN is the
//! constant affine map of its stored statistics and is not trained.
//!
//! The network is a burn module ([`DeepLabV2`]: `layer1` the stem, `layer2`..`layer5` the
//! bottleneck stages, `aspp` the classifier branches) built by [`DeepLabConfig::init`]; its
//! checkpoint keys are deeplab-pytorch's (`layer2.block1.reduce.conv.weight`,
//! `aspp.c0.bias`, ...; [`DeepLabV2::checkpoint_key`]).

use crate::layers::{Conv, ConvBn, FrozenBatchNorm};
use crate::rng::Rng;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{activation::relu, Device, Tensor, TensorData};

/// Where the backbone strides and dilates; the parameter names are the same for both.
#[derive(Config, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// deeplab-pytorch's Caffe ResNet (`libs/models/resnet.py`): the stride of a stage's first
    /// bottleneck in its 1x1 `reduce` conv, stem max-pool 3/2/1 with ceil mode, dilations 2 and
    /// 4 in every block of the last two stages.
    Caffe,
    /// torchvision's ResNet v1.5 (`torchvision/models/resnet.py`, `Bottleneck` and
    /// `_make_layer`) with `replace_stride_with_dilation=[False, True, True]`: the stride in the
    /// 3x3 `conv3x3`, stem max-pool 3/2/1 without ceil mode, dilation 2 in the fourth stage and
    /// 4 in the fifth except in each one's first block, which keeps the previous dilation (1,
    /// then 2) as torchvision's `previous_dilation` does. Output stride 8.
    Torchvision,
}

// Not derived: burn's `Config` derive does not carry `#[default]` on an enum's variant.
#[allow(clippy::derivable_impls)]
impl Default for Backbone {
    fn default() -> Self {
        Backbone::Caffe
    }
}

impl Backbone {
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Caffe => "caffe",
            Backbone::Torchvision => "torchvision",
        }
    }
    pub fn parse(s: &str) -> Option<Backbone> {
        match s {
            "caffe" => Some(Backbone::Caffe),
            "torchvision" => Some(Backbone::Torchvision),
            _ => None,
        }
    }
}

/// One bottleneck's geometry: input and output widths, the strides of its `reduce` (1x1) and
/// `conv3x3`, and the 3x3's dilation (also its padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    cin: usize,
    cout: usize,
    reduce_stride: usize,
    conv_stride: usize,
    dilation: usize,
}

/// The largest stem width [`DeepLabConfig::validate`] accepts (ResNet-101's is 64).
pub const MAX_WIDTH: usize = 256;
/// The most bottlenecks per stage (ResNet-152 has 36).
pub const MAX_BLOCKS: usize = 64;
/// The largest ASPP rate (deeplab-pytorch's largest is 24).
pub const MAX_RATE: usize = 512;

#[derive(Config, Debug, PartialEq)]
pub struct DeepLabConfig {
    pub n_classes: usize,
    /// Stem width; stage widths are 4, 8, 16 and 32 times it (64 for ResNet-101).
    pub width: usize,
    /// Bottlenecks per stage ([3, 4, 23, 3] for ResNet-101).
    pub blocks: [usize; 4],
    /// ASPP dilation rates ([6, 12, 18, 24]).
    pub rates: Vec<usize>,
    /// Extra input scales of multi-scale training/inference ([0.5, 0.75]); empty for none.
    pub msc_scales: Vec<f32>,
    /// Caffe (deeplab-pytorch's init) or torchvision (torchvision ImageNet weights).
    pub style: Backbone,
}

impl DeepLabConfig {
    pub fn resnet101(n_classes: usize) -> Self {
        DeepLabConfig {
            n_classes,
            width: 64,
            blocks: [3, 4, 23, 3],
            rates: vec![6, 12, 18, 24],
            msc_scales: vec![0.5, 0.75],
            style: Backbone::Caffe,
        }
    }

    /// Checks the shape's ranges (before anything is allocated): a zero width, block count or
    /// rate, or a non-positive input scale would panic inside the network, and huge ones exhaust
    /// memory before the first iteration.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=crate::loss::MAX_CLASSES).contains(&self.n_classes) {
            return Err(format!(
                "--num-classes (classes, background included) must be in 2..={}, got {}",
                crate::loss::MAX_CLASSES,
                self.n_classes
            ));
        }
        if !(1..=MAX_WIDTH).contains(&self.width) {
            return Err(format!(
                "--width (the stem width) must be in 1..={MAX_WIDTH}, got {}",
                self.width
            ));
        }
        if let Some(b) = self.blocks.iter().find(|b| !(1..=MAX_BLOCKS).contains(*b)) {
            return Err(format!(
                "--blocks (bottlenecks per stage) must each be in 1..={MAX_BLOCKS}, got {b}"
            ));
        }
        if self.rates.is_empty() || self.rates.len() > 16 {
            return Err(format!(
                "--rates (the ASPP rates) takes 1 to 16 rates, got {}",
                self.rates.len()
            ));
        }
        if let Some(r) = self.rates.iter().find(|r| !(1..=MAX_RATE).contains(*r)) {
            return Err(format!(
                "--rates (the ASPP rates) must each be in 1..={MAX_RATE}, got {r}"
            ));
        }
        if self.msc_scales.len() > 8 {
            return Err(format!(
                "--msc-scales takes at most 8 scales, got {}",
                self.msc_scales.len()
            ));
        }
        if let Some(s) = self
            .msc_scales
            .iter()
            .find(|s| !(s.is_finite() && **s > 0.0 && **s <= 1.0))
        {
            return Err(format!(
                "--msc-scales (the extra input scales) must each be in (0, 1], got {s}"
            ));
        }
        Ok(())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"n_classes": self.n_classes, "width": self.width, "blocks": self.blocks,
            "rates": self.rates, "msc_scales": self.msc_scales, "style": self.style.name()})
    }

    /// The inverse of [`DeepLabConfig::to_json`]; a missing `style` is Caffe (checkpoints written
    /// before the torchvision option), an unknown one `None`.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let us = |k: &str| v.get(k)?.as_u64().map(|x| x as usize);
        let list = |k: &str| -> Option<Vec<f64>> {
            v.get(k)?.as_array()?.iter().map(|x| x.as_f64()).collect()
        };
        let b = list("blocks")?;
        Some(DeepLabConfig {
            n_classes: us("n_classes")?,
            width: us("width")?,
            blocks: [
                *b.first()? as usize,
                *b.get(1)? as usize,
                *b.get(2)? as usize,
                *b.get(3)? as usize,
            ],
            rates: list("rates")?.into_iter().map(|x| x as usize).collect(),
            msc_scales: list("msc_scales")?.into_iter().map(|x| x as f32).collect(),
            style: match v.get("style") {
                None => Backbone::Caffe,
                Some(s) => Backbone::parse(s.as_str()?)?,
            },
        })
    }

    /// The geometry of block `b` (from 0) of stage `s` (0..4, our layer2..layer5).
    fn block(&self, s: usize, b: usize) -> Block {
        let ch = |p: usize| self.width << p;
        let (cin, cout) = [
            (ch(0), ch(2)),
            (ch(2), ch(3)),
            (ch(3), ch(4)),
            (ch(4), ch(5)),
        ][s];
        let cin = if b == 0 { cin } else { cout };
        // Only the second stage strides (by 2, in its first block); the last two dilate.
        let stride = if s == 1 && b == 0 { 2 } else { 1 };
        let dil = [1, 1, 2, 4][s];
        match self.style {
            Backbone::Caffe => Block {
                cin,
                cout,
                reduce_stride: stride,
                conv_stride: 1,
                dilation: dil,
            },
            Backbone::Torchvision => Block {
                cin,
                cout,
                reduce_stride: 1,
                conv_stride: stride,
                // torchvision's `previous_dilation`: a dilated stage's first block keeps the
                // dilation of the stage before.
                dilation: if b == 0 && s >= 2 { dil / 2 } else { dil },
            },
        }
    }
}

/// The stem (deeplab-pytorch's `layer1`): a 7x7 conv + BN + ReLU at stride 2 (the max-pool
/// follows in [`DeepLabV2::features`]).
#[derive(Module, Debug)]
pub struct Stem {
    pub conv1: ConvBn,
}

/// A bottleneck (deeplab-pytorch's `_Bottleneck`): 1x1 `reduce`, 3x3 `conv3x3`, 1x1 `increase`,
/// plus the `shortcut` projection in a stage's first block.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub reduce: ConvBn,
    pub conv3x3: ConvBn,
    pub increase: ConvBn,
    pub shortcut: Option<ConvBn>,
}

impl Bottleneck {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let r = self.reduce.forward(x.clone());
        let r = self.conv3x3.forward(r);
        let r = self.increase.forward(r);
        let sc = match &self.shortcut {
            Some(s) => s.forward(x),
            None => x,
        };
        relu(r + sc)
    }
}

/// The network: a burn module whose parameters are the convolutions' weights and the ASPP
/// biases, and whose frozen batch-norm statistics are buffers.
#[derive(Module, Debug)]
pub struct DeepLabV2 {
    pub layer1: Stem,
    pub layer2: Vec<Bottleneck>,
    pub layer3: Vec<Bottleneck>,
    pub layer4: Vec<Bottleneck>,
    pub layer5: Vec<Bottleneck>,
    /// One 3x3 conv per ASPP rate (checkpoint keys `aspp.c0`, `aspp.c1`, ...).
    pub aspp: Vec<Conv>,
    #[module(skip)]
    pub config: DeepLabConfig,
}

impl DeepLabConfig {
    /// A randomly initialised network (convs: Kaiming normal, fan-out; ASPP: N(0, 0.01), bias 0;
    /// BN: identity), the same initialisation deeplab-pytorch gives before loading weights. The
    /// random numbers are drawn in forward order from `seed`.
    pub fn init(&self, device: &Device, seed: u64) -> DeepLabV2 {
        let mut rng = Rng::new(seed);
        let mut unit =
            |cin: usize, cout: usize, k: usize, geometry: (usize, usize, usize), relu| {
                let std = (2.0 / (cout * k * k) as f64).sqrt();
                let w: Vec<f32> = (0..cout * cin * k * k)
                    .map(|_| (rng.normal() * std) as f32)
                    .collect();
                ConvBn {
                    conv: Conv::new([cout, cin, k, k], w, None, geometry, device),
                    bn: FrozenBatchNorm::identity(cout, device),
                    relu,
                }
            };
        let layer1 = Stem {
            conv1: unit(3, self.width, 7, (2, 3, 1), true),
        };
        let mut stages: Vec<Vec<Bottleneck>> = Vec::new();
        for s in 0..4 {
            let mut blocks = Vec::new();
            for b in 0..self.blocks[s] {
                let k = self.block(s, b);
                let mid = k.cout / 4;
                let reduce = unit(k.cin, mid, 1, (k.reduce_stride, 0, 1), true);
                let conv3x3 = unit(mid, mid, 3, (k.conv_stride, k.dilation, k.dilation), true);
                let increase = unit(mid, k.cout, 1, (1, 0, 1), false);
                let shortcut = (b == 0).then(|| {
                    unit(
                        k.cin,
                        k.cout,
                        1,
                        (k.reduce_stride * k.conv_stride, 0, 1),
                        false,
                    )
                });
                blocks.push(Bottleneck {
                    reduce,
                    conv3x3,
                    increase,
                    shortcut,
                });
            }
            stages.push(blocks);
        }
        let cin = self.width * 32;
        let aspp = self
            .rates
            .iter()
            .map(|&rate| {
                let n = self.n_classes * cin * 9;
                let w: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.01) as f32).collect();
                Conv::new(
                    [self.n_classes, cin, 3, 3],
                    w,
                    Some(vec![0.0; self.n_classes]),
                    (1, rate, rate),
                    device,
                )
            })
            .collect();
        let mut stages = stages.into_iter();
        let mut stage = || stages.next().expect("four stages");
        DeepLabV2 {
            layer1,
            layer2: stage(),
            layer3: stage(),
            layer4: stage(),
            layer5: stage(),
            aspp,
            config: self.clone(),
        }
    }
}

impl DeepLabV2 {
    /// The checkpoint key of a module path: `layer{s}.{i}` is `layer{s}.block{i+1}`, `aspp.{i}`
    /// is `aspp.c{i}`; the other names are joined by dots as they are.
    pub fn checkpoint_key(path: &[String]) -> String {
        let mut key: Vec<String> = Vec::with_capacity(path.len());
        for (i, name) in path.iter().enumerate() {
            let parent = if i > 0 { path[i - 1].as_str() } else { "" };
            let index = || name.parse::<usize>().expect("a Vec index");
            key.push(match parent {
                "layer2" | "layer3" | "layer4" | "layer5" if i == 1 => {
                    format!("block{}", index() + 1)
                }
                "aspp" if i == 1 => format!("c{}", index()),
                _ => name.clone(),
            });
        }
        key.join(".")
    }

    /// Recomputes the frozen batch norms' affine maps after their buffers were loaded.
    pub fn refresh(mut self) -> Self {
        fn fold(u: ConvBn) -> ConvBn {
            ConvBn {
                bn: u.bn.fold(),
                ..u
            }
        }
        let stage = |blocks: Vec<Bottleneck>| -> Vec<Bottleneck> {
            blocks
                .into_iter()
                .map(|b| Bottleneck {
                    reduce: fold(b.reduce),
                    conv3x3: fold(b.conv3x3),
                    increase: fold(b.increase),
                    shortcut: b.shortcut.map(fold),
                })
                .collect()
        };
        self.layer1.conv1 = fold(self.layer1.conv1);
        self.layer2 = stage(self.layer2);
        self.layer3 = stage(self.layer3);
        self.layer4 = stage(self.layer4);
        self.layer5 = stage(self.layer5);
        self
    }

    /// Optimizer groups of deeplab-pytorch's `main.py` lines 48-67 and 160-181: (LR multiplier,
    /// weight decay applies). ASPP weights 10x, ASPP biases 20x without weight decay.
    pub fn lr_group(name: &str) -> (f64, bool) {
        if name.starts_with("aspp.") {
            if name.ends_with(".bias") {
                (20.0, false)
            } else {
                (10.0, true)
            }
        } else {
            (1.0, true)
        }
    }

    /// The stem conv with its BN and ReLU (before the max-pool), at stride 2.
    pub fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        self.layer1.conv1.forward(x)
    }

    /// The backbone's output (layer5, output stride 8), the input of the ASPP.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = max_pool2d(
            self.stem(x),
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_ceil_mode(self.config.style == Backbone::Caffe),
        );
        for stage in [&self.layer2, &self.layer3, &self.layer4, &self.layer5] {
            for block in stage {
                h = block.forward(h);
            }
        }
        h
    }

    /// Logits at output stride 8 of one input scale (deeplab-pytorch `DeepLabV2.forward`): the
    /// sum of the ASPP branches on [`DeepLabV2::features`].
    pub fn forward_single(&self, x: Tensor<4>) -> Tensor<4> {
        let h = self.features(x);
        let mut out: Option<Tensor<4>> = None;
        for branch in &self.aspp {
            let y = branch.forward(h.clone());
            out = Some(match out {
                None => y,
                Some(o) => o + y,
            });
        }
        out.expect("at least one ASPP rate")
    }

    /// Multi-scale forward (deeplab-pytorch `MSC.forward`): the logits at scale 1, at each extra
    /// scale (input resized by [`resize_by_factor`], as `F.interpolate(x, scale_factor=s)`), and
    /// last the pixel-wise max of all of them resized to the scale-1 logit size (bilinear to a
    /// size, as `F.interpolate(l, size=(H, W))`; this resize is differentiated, through
    /// [`crate::resize::bilinear_resize`]). Training puts
    /// the loss on each; inference uses the last.
    pub fn forward_msc(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let full = self.forward_single(x.clone());
        if self.config.msc_scales.is_empty() {
            return vec![full];
        }
        let [_, _, lh, lw] = full.dims();
        let mut outs = vec![full.clone()];
        let mut max = full;
        for &s in &self.config.msc_scales {
            // The factor as written (0.6, not 0.6000000238): PyTorch gets it as a Python float.
            let factor: f64 = s.to_string().parse().unwrap_or(s as f64);
            let xs = resize_by_factor(x.clone(), factor);
            let l = self.forward_single(xs);
            // As matrix products: burn's GPU backends differentiate `interpolate` as nearest.
            max = max.max_pair(crate::resize::bilinear_resize(l.clone(), [lh, lw]));
            outs.push(l);
        }
        outs.push(max);
        outs
    }
}

/// The two source pixels and weights of each output pixel of a bilinear resize by `factor`
/// along an axis of `n` pixels, as PyTorch's CPU kernel computes them for
/// `F.interpolate(scale_factor=factor, align_corners=False)`: `floor(n * factor)` outputs;
/// the step is `1 / factor` rounded to f32 (the given factor, not the size ratio
/// `n / floor(n * factor)`), the source coordinate `(i + 0.5) * step - 0.5` in f32, negative
/// ones clamped to 0, the last pixel repeated past the edge.
pub fn factor_taps(n: usize, factor: f64) -> Vec<(usize, usize, f32, f32)> {
    let out = (n as f64 * factor) as usize;
    let step = (1.0 / factor) as f32;
    (0..out)
        .map(|i| {
            let src = (step * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n - 1);
            let lambda = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 + 1 < n { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - lambda, lambda)
        })
        .collect()
}

/// deeplab-pytorch's smaller inputs: `F.interpolate(x, scale_factor=factor, mode="bilinear",
/// align_corners=False)` (taps of [`factor_taps`]). Sampling at the size ratio instead (burn's
/// `interpolate` to a size) drifts from it by up to a whole input pixel at the far edge of a
/// 321 crop at 0.75 and 0.5, and changes every training step. The inputs carry no gradient,
/// so this runs on the host; a size below one pixel is kept at one.
pub fn resize_by_factor(x: Tensor<4>, factor: f64) -> Tensor<4> {
    let device = x.device();
    let [n, c, h, w] = x.dims();
    if h == 0 || w == 0 {
        return x;
    }
    let src = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 input");
    let mut ys = factor_taps(h, factor);
    let mut xs = factor_taps(w, factor);
    // A size that rounds down to zero has no PyTorch result; keep one pixel so the network runs.
    if ys.is_empty() {
        ys.push((0, 0, 1.0, 0.0));
    }
    if xs.is_empty() {
        xs.push((0, 0, 1.0, 0.0));
    }
    let (oh, ow) = (ys.len(), xs.len());
    let mut out = vec![0f32; n * c * oh * ow];
    for (plane, dst) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (&(y0, y1, wy0, wy1), row) in ys.iter().zip(dst.chunks_exact_mut(ow)) {
            let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
            for (&(x0, x1, wx0, wx1), o) in xs.iter().zip(row.iter_mut()) {
                let t0 = r0[x0] * wx0 + r0[x1] * wx1;
                let t1 = r1[x0] * wx0 + r1[x1] * wx1;
                *o = t0 * wy0 + t1 * wy1;
            }
        }
    }
    Tensor::<4>::from_data(TensorData::new(out, [n, c, oh, ow]), &device)
}

/// Bilinear resize to `size` with PyTorch's default `align_corners=false` (burn defaults to true):
/// the source coordinate `(i + 0.5) * in / out - 0.5`, as `F.interpolate(size=...)`.
pub fn bilinear(size: [usize; 2]) -> InterpolateOptions {
    InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::param_infos;

    /// The tiny network of `tests/data/tiny_deeplab.pth` (tools/golden_train.py).
    fn tiny() -> DeepLabConfig {
        DeepLabConfig {
            n_classes: 5,
            width: 2,
            blocks: [1, 2, 1, 2],
            rates: vec![6, 12, 18, 24],
            msc_scales: vec![0.5, 0.75],
            style: Backbone::Caffe,
        }
    }

    #[test]
    fn module_paths_name_the_deeplab_pytorch_keys() {
        let net = tiny().init(&Device::flex(), 0);
        let infos = param_infos(&net, DeepLabV2::checkpoint_key);
        let file = crate::Network::read_weights(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_deeplab.pth"),
        )
        .unwrap();
        // The same keys and shapes as deeplab-pytorch's state dict (prefixes dropped).
        let ours: Vec<(&String, &Vec<usize>)> = infos.iter().map(|(k, i)| (k, &i.shape)).collect();
        let theirs: Vec<(&String, &Vec<usize>)> = file.iter().map(|(k, t)| (k, &t.shape)).collect();
        assert_eq!(ours, theirs);
        // The batch-norm statistics are the only buffers; everything else is trained.
        for (k, i) in &infos {
            assert_eq!(i.trainable, !k.contains(".bn."), "{k}");
        }
        assert!(infos.contains_key("layer3.block1.shortcut.bn.running_var"));
        assert!(!infos
            .keys()
            .any(|k| k.starts_with("layer3.block2.shortcut")));
        // burn's own count agrees: every parameter is reached by the module traversal.
        let total: usize = infos
            .values()
            .map(|i| i.shape.iter().product::<usize>())
            .sum();
        assert_eq!(net.num_params(), total);
    }

    #[test]
    fn the_frozen_batch_norm_is_folded_from_loaded_statistics() {
        let device = Device::flex();
        let cfg = DeepLabConfig {
            blocks: [1, 1, 1, 1],
            msc_scales: vec![],
            ..tiny()
        };
        let mut model = crate::Network::deeplab(cfg, &device, 3);
        let mut host = model.net.host_params(false);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..3 * 9 * 9).map(|i| (i % 7) as f32).collect(),
                [1, 3, 9, 9],
            ),
            &device,
        );
        let before = crate::params::to_host(&model.forward_eval(x.clone()));
        // Doubling the stem BN's weight doubles its scale: the loaded buffers reach the forward.
        for v in &mut host.get_mut("layer1.conv1.bn.weight").unwrap().data {
            *v *= 2.0;
        }
        model
            .load_tensors(std::path::Path::new("mem"), host, false)
            .unwrap();
        let after = crate::params::to_host(&model.forward_eval(x));
        assert_ne!(before, after);
    }
}
