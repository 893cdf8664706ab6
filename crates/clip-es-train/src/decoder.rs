//! The light head: a small convolutional decoder on frozen CLIP ViT-B/16 patch features, in the
//! spirit of WeCLIP (Zhu et al., CVPR 2024: a frozen CLIP backbone with a trained decoder),
//! trained with the same confidence-guided loss as DeepLab-v2 (see docs/training.md).
//!
//! Input: the last block's `ln_1` output at the patch tokens (the activation CLIP-ES takes its
//! Grad-CAM on), channels-first on the patch grid (stride 16). Layers: 1x1 conv to `hidden` +
//! ReLU, then `upsamplings` times a bilinear x2 upsampling (align_corners=false) and a 3x3
//! conv with ReLU (`fuse` at the width of the projection, then `fuse2`, ... each halving it),
//! and a 1x1 conv to the classes: logits at stride 16 / 2^upsamplings (8 by default, like
//! DeepLab-v2's; 4 with two upsamplings, about three times the cost per iteration). The loss is
//! taken at the logit size, so a finer stride lets the decoder follow the CRF-sharpened
//! boundaries and small regions of the pseudo masks more closely (docs/training.md has the
//! measurements).

//!
//! The network is a burn module ([`ClipDecoder`]: `proj`, `fuse` (one conv per upsampling) and
//! `classifier`) built by [`DecoderConfig::init`]; its checkpoint keys are `proj.weight`,
//! `fuse.weight`, `fuse2.weight`, ... ([`ClipDecoder::checkpoint_key`]).

use crate::layers::Conv;
use crate::rng::Rng;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{activation::relu, Device, Tensor};

#[derive(Config, Debug, PartialEq)]
pub struct DecoderConfig {
    pub n_classes: usize,
    /// Feature channels (768 for ViT-B/16).
    pub in_dim: usize,
    pub hidden: usize,
    /// x2 upsampling stages after the projection (logit stride 16 / 2^upsamplings).
    pub upsamplings: usize,
}

/// The largest hidden width [`DecoderConfig::validate`] accepts.
pub const MAX_HIDDEN: usize = 8192;
/// The most x2 upsampling stages (logits at stride 1).
pub const MAX_UPSAMPLINGS: usize = 4;

impl DecoderConfig {
    /// Checks the shape's ranges (before anything is allocated): a zero hidden width panics in
    /// the first convolution, and each upsampling stage quadruples the logits, so more than
    /// four (stride 1) only exhaust memory. `in_dim` comes from the
    /// CLIP model.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=crate::loss::MAX_CLASSES).contains(&self.n_classes) {
            return Err(format!(
                "--num-classes (classes, background included) must be in 2..={}, got {}",
                crate::loss::MAX_CLASSES,
                self.n_classes
            ));
        }
        if !(1..=MAX_HIDDEN).contains(&self.hidden) {
            return Err(format!(
                "--hidden (the decoder width) must be in 1..={MAX_HIDDEN}, got {}",
                self.hidden
            ));
        }
        if self.upsamplings > MAX_UPSAMPLINGS {
            return Err(format!(
                "--upsamplings must be in 0..={MAX_UPSAMPLINGS} (logits at stride 16 / 2^N), got {}",
                self.upsamplings
            ));
        }
        Ok(())
    }

    /// How much finer the logits are than the patch grid.
    pub fn logit_scale(&self) -> usize {
        1 << self.upsamplings
    }

    /// (name, in, out, kernel) of every conv, in forward order.
    fn convs(&self) -> Vec<(String, usize, usize, usize)> {
        let mut v = vec![("proj".to_string(), self.in_dim, self.hidden, 1)];
        let mut c = self.hidden;
        for i in 0..self.upsamplings {
            let name = if i == 0 {
                "fuse".to_string()
            } else {
                format!("fuse{}", i + 1)
            };
            let out = if i == 0 { c } else { (c / 2).max(1) };
            v.push((name, c, out, 3));
            c = out;
        }
        v.push(("classifier".to_string(), c, self.n_classes, 1));
        v
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"n_classes": self.n_classes, "in_dim": self.in_dim, "hidden": self.hidden,
            "upsamplings": self.upsamplings})
    }
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let us = |k: &str| v.get(k)?.as_u64().map(|x| x as usize);
        Some(DecoderConfig {
            n_classes: us("n_classes")?,
            in_dim: us("in_dim")?,
            hidden: us("hidden")?,
            // Checkpoints written before the setting existed had one stage.
            upsamplings: us("upsamplings").unwrap_or(1),
        })
    }
}

/// The decoder: a 1x1 projection, one 3x3 conv after each x2 upsampling, a 1x1 classifier.
#[derive(Module, Debug)]
pub struct ClipDecoder {
    pub proj: Conv,
    /// One per upsampling stage (checkpoint keys `fuse`, `fuse2`, ...).
    pub fuse: Vec<Conv>,
    pub classifier: Conv,
    #[module(skip)]
    pub config: DecoderConfig,
}

impl DecoderConfig {
    /// Kaiming-normal (fan-out) weights from `seed` (the classifier's scaled by 0.1), zero
    /// biases.
    pub fn init(&self, device: &Device, seed: u64) -> ClipDecoder {
        let mut rng = Rng::new(seed);
        let mut convs = Vec::new();
        for (name, cin, cout, k) in self.convs() {
            let std =
                (2.0 / (cout * k * k) as f64).sqrt() * if name == "classifier" { 0.1 } else { 1.0 };
            let w: Vec<f32> = (0..cout * cin * k * k)
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            let pad = k / 2;
            convs.push(Conv::new(
                [cout, cin, k, k],
                w,
                Some(vec![0.0; cout]),
                (1, pad, 1),
                device,
            ));
        }
        let classifier = convs.pop().expect("a classifier");
        let mut convs = convs.into_iter();
        let proj = convs.next().expect("a projection");
        ClipDecoder {
            proj,
            fuse: convs.collect(),
            classifier,
            config: self.clone(),
        }
    }
}

impl ClipDecoder {
    /// The checkpoint key of a module path: `fuse.0` is `fuse`, `fuse.1` is `fuse2`, ...; the
    /// other paths are their names joined by dots.
    pub fn checkpoint_key(path: &[String]) -> String {
        match path {
            [fuse, i, rest @ ..] if fuse == "fuse" => {
                let i: usize = i.parse().expect("a Vec index");
                let stage = if i == 0 {
                    "fuse".to_string()
                } else {
                    format!("fuse{}", i + 1)
                };
                std::iter::once(stage)
                    .chain(rest.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(".")
            }
            _ => path.join("."),
        }
    }

    /// One LR group for all (biases without weight decay).
    pub fn lr_group(name: &str) -> (f64, bool) {
        (1.0, !name.ends_with(".bias"))
    }

    /// Features [N, in_dim, gh, gw] to logits [N, classes, s gh, s gw], s = 2^upsamplings.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = relu(self.proj.forward(x));
        for fuse in &self.fuse {
            let [_, _, gh, gw] = h.dims();
            // As matrix products: burn's GPU backends differentiate `interpolate` as nearest.
            h = crate::resize::bilinear_resize(h, [2 * gh, 2 * gw]);
            h = relu(fuse.forward(h));
        }
        self.classifier.forward(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::param_infos;

    #[test]
    fn module_paths_name_the_checkpoint_keys() {
        let config = DecoderConfig::new(4, 12, 8, 3);
        let net = config.init(&Device::flex(), 0);
        let infos = param_infos(&net, ClipDecoder::checkpoint_key);
        let keys: Vec<(&str, Vec<usize>)> = infos
            .iter()
            .map(|(k, i)| (k.as_str(), i.shape.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("classifier.bias", vec![4]),
                ("classifier.weight", vec![4, 2, 1, 1]),
                ("fuse.bias", vec![8]),
                ("fuse.weight", vec![8, 8, 3, 3]),
                ("fuse2.bias", vec![4]),
                ("fuse2.weight", vec![4, 8, 3, 3]),
                ("fuse3.bias", vec![2]),
                ("fuse3.weight", vec![2, 4, 3, 3]),
                ("proj.bias", vec![8]),
                ("proj.weight", vec![8, 12, 1, 1]),
            ]
        );
        assert!(infos.values().all(|i| i.trainable));
        let x = Tensor::<4>::zeros([1, 12, 3, 5], &Device::flex());
        assert_eq!(net.forward(x).dims(), [1, 4, 24, 40]);
    }
}
