//! The two trainable networks behind one type, with their checkpoints.

use crate::decoder::{ClipDecoder, DecoderConfig};
use crate::deeplab::{Backbone, DeepLabConfig, DeepLabV2};
use crate::error::{Result, TrainError};
use crate::params::{
    read_safetensors, read_torch_state_dict, write_safetensors, HostTensor, ParamStore,
};
use burn::tensor::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    DeepLabV2,
    ClipDecoder,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::DeepLabV2 => "deeplab-v2",
            Arch::ClipDecoder => "clip-decoder",
        }
    }
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "deeplab-v2" => Some(Arch::DeepLabV2),
            "clip-decoder" => Some(Arch::ClipDecoder),
            _ => None,
        }
    }
    /// (LR multiplier, weight decay applies) of a parameter.
    pub fn lr_group(self, name: &str) -> (f64, bool) {
        match self {
            Arch::DeepLabV2 => DeepLabV2::lr_group(name),
            Arch::ClipDecoder => ClipDecoder::lr_group(name),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Net {
    DeepLab(DeepLabV2),
    Decoder(ClipDecoder),
}

/// A network and its parameters.
#[derive(Clone, Debug)]
pub struct Model {
    pub net: Net,
    pub store: ParamStore,
}

/// Metadata key of checkpoints: a JSON object with `arch`, `config`, `iteration` and the run's
/// settings.
pub const META_KEY: &str = "clip_es_train";

impl Model {
    pub fn deeplab(config: DeepLabConfig, device: &Device, seed: u64) -> Model {
        let (net, store) = DeepLabV2::init(config, device, seed);
        Model {
            net: Net::DeepLab(net),
            store,
        }
    }

    pub fn decoder(config: DecoderConfig, device: &Device, seed: u64) -> Model {
        let (net, store) = ClipDecoder::init(config, device, seed);
        Model {
            net: Net::Decoder(net),
            store,
        }
    }

    pub fn arch(&self) -> Arch {
        match self.net {
            Net::DeepLab(_) => Arch::DeepLabV2,
            Net::Decoder(_) => Arch::ClipDecoder,
        }
    }

    pub fn n_classes(&self) -> usize {
        match &self.net {
            Net::DeepLab(n) => n.config.n_classes,
            Net::Decoder(n) => n.config.n_classes,
        }
    }

    pub fn config_json(&self) -> serde_json::Value {
        match &self.net {
            Net::DeepLab(n) => n.config.to_json(),
            Net::Decoder(n) => n.config.to_json(),
        }
    }

    /// The current parameter values (no autodiff).
    pub fn values(&self) -> BTreeMap<String, Tensor<1>> {
        self.store
            .trainable
            .iter()
            .map(|(k, p)| (k.clone(), p.value.clone()))
            .collect()
    }

    /// The logits the training loss applies to: DeepLab-v2 with MSC gives one per scale plus
    /// their max; the decoder one.
    pub fn forward_train(&self, v: &BTreeMap<String, Tensor<1>>, x: Tensor<4>) -> Vec<Tensor<4>> {
        match &self.net {
            Net::DeepLab(n) => n.forward_msc(&self.store, v, x),
            Net::Decoder(n) => vec![n.forward(&self.store, v, x)],
        }
    }

    /// The logits of inference (DeepLab-v2: the MSC max).
    pub fn forward_eval(&self, x: Tensor<4>) -> Tensor<4> {
        let v = self.values();
        let mut outs = self.forward_train(&v, x);
        outs.pop().expect("one output at least")
    }

    /// Loads weights: a PyTorch state dict (`.pth`/`.pt`, e.g. deeplab-pytorch's init or trained
    /// models: `module.` and `base.` prefixes dropped), a torchvision ResNet state dict (detected
    /// from its keys; renamed and its input normalisation folded into the stem by
    /// [`crate::torchvision::convert`]; needs a [`Backbone::Torchvision`] DeepLab-v2) or a
    /// safetensors file (our checkpoints).
    /// With `init`, tensors the file lacks may be left as initialised if they belong to the
    /// classifier (ASPP / decoder classifier: the class count differs between datasets) and the
    /// classifier is skipped when its shape differs. Returns the names the network did not use.
    pub fn load_weights(&mut self, path: &Path, init: bool) -> Result<Vec<String>> {
        self.load_tensors(path, Self::read_weights(path)?, init)
    }

    /// The tensors of a weights file as [`Model::load_weights`] reads it: a safetensors file
    /// as stored, a PyTorch state dict with its `module.` and `base.` prefixes dropped.
    pub fn read_weights(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        {
            Ok(read_safetensors(path)?.0)
        } else {
            read_torch_state_dict(path, &["module.", "base."])
        }
    }

    /// [`Model::load_weights`] of tensors already read from `path` (which names it in errors).
    pub fn load_tensors(
        &mut self,
        path: &Path,
        mut tensors: BTreeMap<String, HostTensor>,
        init: bool,
    ) -> Result<Vec<String>> {
        if crate::torchvision::is_torchvision(tensors.keys()) {
            let bad = |message: String| TrainError::Weights {
                path: path.to_path_buf(),
                message,
            };
            match &self.net {
                Net::DeepLab(n) if n.config.style == Backbone::Torchvision => {}
                Net::DeepLab(_) => {
                    return Err(bad(
                        "a torchvision ResNet state dict needs the torchvision \
                        backbone style (DeepLabConfig::style = Backbone::Torchvision)"
                            .into(),
                    ))
                }
                Net::Decoder(_) => {
                    return Err(bad(
                        "a torchvision ResNet state dict cannot initialise the clip-decoder".into(),
                    ))
                }
            }
            tensors = crate::torchvision::convert(tensors).map_err(bad)?;
        }
        let head = |n: &str| n.starts_with("aspp.") || n.starts_with("classifier.");
        if init {
            let shapes: BTreeMap<String, Vec<usize>> = self
                .store
                .trainable
                .iter()
                .map(|(k, p)| (k.clone(), p.shape.clone()))
                .collect();
            tensors.retain(|k, t| !(head(k) && shapes.get(k).is_some_and(|s| *s != t.shape)));
        }
        let allow = move |n: &str| init && head(n);
        let unused = self.store.load(path, &tensors, &allow)?;
        if let Net::DeepLab(n) = &mut self.net {
            n.refresh(&self.store);
        }
        Ok(unused)
    }

    /// Writes a checkpoint: parameters and buffers under their names, `extra` tensors (the
    /// optimizer state) and the metadata JSON under [`META_KEY`].
    pub fn save(
        &self,
        path: &Path,
        extra: BTreeMap<String, HostTensor>,
        meta: serde_json::Value,
    ) -> Result<()> {
        let mut tensors = self.store.trainable_host();
        tensors.extend(
            self.store
                .frozen
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        tensors.extend(extra);
        let mut m = meta;
        m["arch"] = self.arch().name().into();
        m["config"] = self.config_json();
        let metadata: BTreeMap<String, String> = [(META_KEY.to_string(), m.to_string())]
            .into_iter()
            .collect();
        write_safetensors(path, &tensors, &metadata)
    }

    /// Rebuilds a model from a checkpoint; also returns all its tensors (for the optimizer
    /// state) and its metadata JSON.
    pub fn open(
        path: &Path,
        device: &Device,
    ) -> Result<(Model, BTreeMap<String, HostTensor>, serde_json::Value)> {
        let bad = |m: &str| TrainError::Weights {
            path: path.to_path_buf(),
            message: m.to_string(),
        };
        let (tensors, metadata) = read_safetensors(path)?;
        let meta: serde_json::Value = metadata
            .get(META_KEY)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                bad("no clip-es training metadata (not a `clip-es train` checkpoint)")
            })?;
        let arch = meta["arch"]
            .as_str()
            .and_then(Arch::parse)
            .ok_or_else(|| bad("unknown arch"))?;
        // The shape is checked as the training stage checks it: a crafted or damaged
        // checkpoint must not panic or exhaust memory while the network is built.
        let mut model = match arch {
            Arch::DeepLabV2 => {
                let c = DeepLabConfig::from_json(&meta["config"])
                    .ok_or_else(|| bad("bad deeplab config"))?;
                c.validate().map_err(|e| bad(&e))?;
                Model::deeplab(c, device, 0)
            }
            Arch::ClipDecoder => {
                let c = DecoderConfig::from_json(&meta["config"])
                    .ok_or_else(|| bad("bad decoder config"))?;
                c.validate().map_err(|e| bad(&e))?;
                Model::decoder(c, device, 0)
            }
        };
        model.store.load(path, &tensors, &|_| false)?;
        if let Net::DeepLab(n) = &mut model.net {
            n.refresh(&model.store);
        }
        Ok((model, tensors, meta))
    }
}
