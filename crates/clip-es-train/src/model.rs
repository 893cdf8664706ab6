//! The two trainable networks behind one type, with their checkpoints: the parameters and
//! frozen buffers of the burn module under their checkpoint keys ([`crate::params`]).

use crate::decoder::{ClipDecoder, DecoderConfig};
use crate::deeplab::{Backbone, DeepLabConfig, DeepLabV2};
use crate::error::{Result, TrainError};
use crate::params::{
    host_params, load_params, map_params, param_infos, read_safetensors, read_torch_state_dict,
    visit_params, write_safetensors, HostTensor, KeyFn, ParamInfo, ParamMap, ParamVisit,
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

/// One network per model, never stored in bulk: the size difference of the variants costs
/// nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Net {
    DeepLab(DeepLabV2),
    Decoder(ClipDecoder),
}

impl Net {
    /// The table from module paths to checkpoint keys.
    fn key_fn(&self) -> KeyFn {
        match self {
            Net::DeepLab(_) => DeepLabV2::checkpoint_key,
            Net::Decoder(_) => ClipDecoder::checkpoint_key,
        }
    }

    /// The logits the training loss applies to: DeepLab-v2 with MSC gives one per scale plus
    /// their max; the decoder one.
    pub fn forward_train(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        match self {
            Net::DeepLab(n) => n.forward_msc(x),
            Net::Decoder(n) => vec![n.forward(x)],
        }
    }

    /// Passes every parameter through `f` under its checkpoint key (frozen buffers included,
    /// flagged untrainable). A map that changes batch-norm buffers calls [`Net::refresh`] after.
    pub fn map_params<F: ParamMap>(self, f: &mut F) -> Net {
        let key = self.key_fn();
        match self {
            Net::DeepLab(n) => Net::DeepLab(map_params(n, key, f)),
            Net::Decoder(n) => Net::Decoder(map_params(n, key, f)),
        }
    }

    /// Refolds DeepLab-v2's frozen batch norms from their buffers.
    pub fn refresh(self) -> Net {
        match self {
            Net::DeepLab(n) => Net::DeepLab(n.refresh()),
            other => other,
        }
    }

    /// Shows `f` every parameter under its checkpoint key.
    pub fn visit_params<F: ParamVisit>(&self, f: &mut F) {
        let key = self.key_fn();
        match self {
            Net::DeepLab(n) => visit_params(n, key, f),
            Net::Decoder(n) => visit_params(n, key, f),
        }
    }

    /// Every parameter's shape and whether it is trained, by checkpoint key.
    pub fn param_infos(&self) -> BTreeMap<String, ParamInfo> {
        let key = self.key_fn();
        match self {
            Net::DeepLab(n) => param_infos(n, key),
            Net::Decoder(n) => param_infos(n, key),
        }
    }

    /// The parameters on the host by checkpoint key (without the frozen buffers when
    /// `trainable_only`).
    pub fn host_params(&self, trainable_only: bool) -> BTreeMap<String, HostTensor> {
        let key = self.key_fn();
        match self {
            Net::DeepLab(n) => host_params(n, key, trainable_only),
            Net::Decoder(n) => host_params(n, key, trainable_only),
        }
    }

    /// The network with its trainable parameters as autodiff leaves that require a gradient
    /// (the frozen buffers stay constants): what one training step differentiates.
    pub fn with_autodiff(&self) -> Net {
        struct Leaves;
        impl ParamMap for Leaves {
            fn apply<const D: usize>(
                &mut self,
                _: &str,
                trainable: bool,
                t: Tensor<D>,
            ) -> Tensor<D> {
                if trainable {
                    t.autodiff().require_grad()
                } else {
                    t
                }
            }
        }
        let key = self.key_fn();
        match self.clone() {
            Net::DeepLab(n) => Net::DeepLab(map_params(n, key, &mut Leaves)),
            Net::Decoder(n) => Net::Decoder(map_params(n, key, &mut Leaves)),
        }
    }

    /// The gradients of the trainable parameters of a [`Net::with_autodiff`] network, flat and
    /// without autodiff, by checkpoint key (parameters the loss does not reach are absent).
    pub fn gradients(&self, grads: &burn::tensor::Gradients) -> BTreeMap<String, Tensor<1>> {
        struct Collect<'a>(&'a burn::tensor::Gradients, BTreeMap<String, Tensor<1>>);
        impl ParamVisit for Collect<'_> {
            fn visit<const D: usize>(&mut self, key: &str, trainable: bool, t: &Tensor<D>) {
                if !trainable {
                    return;
                }
                if let Some(g) = t.grad(self.0) {
                    let n = g.shape().num_elements();
                    self.1
                        .insert(key.to_string(), g.without_autodiff().reshape([n]));
                }
            }
        }
        let mut c = Collect(grads, BTreeMap::new());
        self.visit_params(&mut c);
        c.1
    }
}

/// A network and the device its parameters live on.
#[derive(Clone, Debug)]
pub struct Network {
    pub net: Net,
    pub device: Device,
}

/// Key prefixes dropped from PyTorch state dicts: `module.` of `DataParallel`, `base.` of
/// deeplab-pytorch's `MSC` wrapper (the rest of each key is then the checkpoint key).
pub const STATE_DICT_PREFIXES: [&str; 2] = ["module.", "base."];

/// Metadata key of checkpoints: a JSON object with `arch`, `config`, `iteration` and the run's
/// settings.
pub const META_KEY: &str = "clip_es_train";

impl Network {
    pub fn deeplab(config: DeepLabConfig, device: &Device, seed: u64) -> Network {
        Network {
            net: Net::DeepLab(config.init(device, seed)),
            device: device.clone(),
        }
    }

    pub fn decoder(config: DecoderConfig, device: &Device, seed: u64) -> Network {
        Network {
            net: Net::Decoder(config.init(device, seed)),
            device: device.clone(),
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

    /// The logits the training loss applies to ([`Net::forward_train`]), without autodiff.
    pub fn forward_train(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        self.net.forward_train(x)
    }

    /// The logits of inference (DeepLab-v2: the MSC max).
    pub fn forward_eval(&self, x: Tensor<4>) -> Tensor<4> {
        let mut outs = self.forward_train(x);
        outs.pop().expect("one output at least")
    }

    /// The trainable parameters on the host, by checkpoint key.
    pub fn trainable_host(&self) -> BTreeMap<String, HostTensor> {
        self.net.host_params(true)
    }

    /// Replaces trainable parameters by the given values (same shapes; names of parameters the
    /// network lacks are ignored): a test's way to set a network to reference weights.
    pub fn set_params(&mut self, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
        let infos = self.net.param_infos();
        for (k, t) in tensors {
            if let Some(i) = infos.get(k) {
                if i.shape != t.shape {
                    return Err(TrainError::Config(format!(
                        "{k}: shape {:?}, expected {:?}",
                        t.shape, i.shape
                    )));
                }
            }
        }
        struct Set<'a>(&'a BTreeMap<String, HostTensor>);
        impl ParamMap for Set<'_> {
            fn apply<const D: usize>(&mut self, key: &str, _: bool, t: Tensor<D>) -> Tensor<D> {
                match self.0.get(key) {
                    Some(h) => {
                        let shape: [usize; D] = h.shape.clone().try_into().expect("checked");
                        Tensor::from_data(
                            burn::tensor::TensorData::new(h.data.clone(), shape),
                            &t.device(),
                        )
                    }
                    None => t,
                }
            }
        }
        self.net = self.net.clone().map_params(&mut Set(tensors)).refresh();
        Ok(())
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

    /// The tensors of a weights file as [`Network::load_weights`] reads it: a safetensors file
    /// as stored, a PyTorch state dict with its `module.` and `base.` prefixes dropped.
    pub fn read_weights(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        {
            Ok(read_safetensors(path)?.0)
        } else {
            read_torch_state_dict(path, &STATE_DICT_PREFIXES)
        }
    }

    /// [`Network::load_weights`] of tensors already read from `path` (which names it in errors).
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
            let infos = self.net.param_infos();
            tensors.retain(|k, t| {
                !(head(k)
                    && infos
                        .get(k)
                        .is_some_and(|i| i.trainable && i.shape != t.shape))
            });
        }
        let allow = move |n: &str| init && head(n);
        let (net, unused) = load_net(self.net.clone(), path, &tensors, &allow)?;
        self.net = net;
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
        let mut tensors = self.net.host_params(false);
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
    ) -> Result<(Network, BTreeMap<String, HostTensor>, serde_json::Value)> {
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
                Network::deeplab(c, device, 0)
            }
            Arch::ClipDecoder => {
                let c = DecoderConfig::from_json(&meta["config"])
                    .ok_or_else(|| bad("bad decoder config"))?;
                c.validate().map_err(|e| bad(&e))?;
                Network::decoder(c, device, 0)
            }
        };
        let (net, _) = load_net(model.net, path, &tensors, &|_| false)?;
        model.net = net;
        Ok((model, tensors, meta))
    }
}

/// [`load_params`] on either network (DeepLab-v2's batch norms refolded after).
fn load_net(
    net: Net,
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    allow_missing: &dyn Fn(&str) -> bool,
) -> Result<(Net, Vec<String>)> {
    Ok(match net {
        Net::DeepLab(n) => {
            let (n, unused) =
                load_params(n, DeepLabV2::checkpoint_key, path, tensors, allow_missing)?;
            (Net::DeepLab(n.refresh()), unused)
        }
        Net::Decoder(n) => {
            let (n, unused) =
                load_params(n, ClipDecoder::checkpoint_key, path, tensors, allow_missing)?;
            (Net::Decoder(n), unused)
        }
    })
}
