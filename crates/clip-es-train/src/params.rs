//! Named parameters: a network's parameters and frozen buffers under the key names of the
//! PyTorch state dict they mirror, so checkpoints and PyTorch weights share one naming.
//!
//! The networks are burn modules ([`crate::deeplab::DeepLabV2`], [`crate::decoder::ClipDecoder`]);
//! burn's module traversal ([`ModuleMapper`], [`ModuleVisitor`]) walks their `Param` fields, and
//! a network's [`KeyFn`] turns the module path into the checkpoint key. Here: the walks, loading
//! a state dict into a module by key, and the PyTorch and safetensors readers and writer.

use crate::error::{Result, TrainError};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::Path;

/// A host tensor: shape and row-major f32 data.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape and data disagree"
        );
        HostTensor { shape, data }
    }
    pub fn filled(shape: Vec<usize>, v: f32) -> Self {
        let n = shape.iter().product();
        HostTensor {
            shape,
            data: vec![v; n],
        }
    }
}

/// The module type name burn's traversal reports for the fields of `layers::FrozenBatchNorm`
/// (statistics that are loaded and saved but never trained).
pub(crate) const FROZEN_CONTAINER: &str = "Struct:FrozenBatchNorm";

pub fn to_device(t: &HostTensor, device: &Device) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
}

pub fn to_host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data")
}

/// The checkpoint key of a parameter from its module path (the field names and `Vec` indices
/// burn's traversal reports, the parameter's own field last). Each network gives its table.
pub type KeyFn = fn(&[String]) -> String;

/// What [`map_params`] does to each float parameter of a module.
pub trait ParamMap {
    /// The new value of the parameter `key`; `trainable` is false for frozen buffers.
    fn apply<const D: usize>(&mut self, key: &str, trainable: bool, value: Tensor<D>) -> Tensor<D>;
}

/// What [`visit_params`] does with each float parameter of a module.
pub trait ParamVisit {
    fn visit<const D: usize>(&mut self, key: &str, trainable: bool, value: &Tensor<D>);
}

/// The module path during a traversal: (name, type of the module the name is a field of).
#[derive(Default)]
struct PathStack(Vec<(String, String)>);

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn key(&self, key: KeyFn) -> String {
        let names: Vec<String> = self.0.iter().map(|(n, _)| n.clone()).collect();
        key(&names)
    }
    /// Batch-norm statistics are buffers, never trained.
    fn trainable(&self) -> bool {
        self.0
            .last()
            .is_none_or(|(_, container)| container != FROZEN_CONTAINER)
    }
}

struct Mapper<'a, F> {
    path: PathStack,
    key: KeyFn,
    f: &'a mut F,
}

impl<F: ParamMap> ModuleMapper for Mapper<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.key(self.key);
        let trainable = self.path.trainable();
        param.map(|t| self.f.apply(&key, trainable, t))
    }
}

struct Visitor<'a, F> {
    path: PathStack,
    key: KeyFn,
    f: &'a mut F,
}

impl<F: ParamVisit> ModuleVisitor for Visitor<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let key = self.path.key(self.key);
        self.f.visit(&key, self.path.trainable(), &param.val());
    }
}

/// Rebuilds `module` with every float parameter passed through `f` under its checkpoint key.
pub fn map_params<M: Module, F: ParamMap>(module: M, key: KeyFn, f: &mut F) -> M {
    module.map(&mut Mapper {
        path: PathStack::default(),
        key,
        f,
    })
}

/// Shows `f` every float parameter of `module` under its checkpoint key.
pub fn visit_params<M: Module, F: ParamVisit>(module: &M, key: KeyFn, f: &mut F) {
    module.visit(&mut Visitor {
        path: PathStack::default(),
        key,
        f,
    })
}

/// A parameter as stored: name, shape, whether it is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    pub shape: Vec<usize>,
    pub trainable: bool,
}

/// The parameters of `module` (trained ones and frozen buffers) by checkpoint key.
pub fn param_infos<M: Module>(module: &M, key: KeyFn) -> BTreeMap<String, ParamInfo> {
    struct Infos(BTreeMap<String, ParamInfo>);
    impl ParamVisit for Infos {
        fn visit<const D: usize>(&mut self, key: &str, trainable: bool, value: &Tensor<D>) {
            let shape = value.dims().to_vec();
            self.0
                .insert(key.to_string(), ParamInfo { shape, trainable });
        }
    }
    let mut infos = Infos(BTreeMap::new());
    visit_params(module, key, &mut infos);
    infos.0
}

/// Every parameter of `module` copied to the host, by checkpoint key; `trainable_only` leaves
/// the frozen buffers out.
pub fn host_params<M: Module>(
    module: &M,
    key: KeyFn,
    trainable_only: bool,
) -> BTreeMap<String, HostTensor> {
    struct Host(BTreeMap<String, HostTensor>, bool);
    impl ParamVisit for Host {
        fn visit<const D: usize>(&mut self, key: &str, trainable: bool, value: &Tensor<D>) {
            if trainable || !self.1 {
                let t = HostTensor::new(value.dims().to_vec(), to_host(value));
                self.0.insert(key.to_string(), t);
            }
        }
    }
    let mut host = Host(BTreeMap::new(), trainable_only);
    visit_params(module, key, &mut host);
    host.0
}

/// Overwrites the parameters and buffers of `module` from named host tensors (a state dict).
/// Every tensor the module has must be present with the right shape unless `allow_missing`
/// accepts the name (used to skip the classifier when loading ImageNet/COCO backbones); the
/// module is checked whole before anything is replaced. Returns the module and the names of
/// `tensors` it did not use.
pub fn load_params<M: Module>(
    module: M,
    key: KeyFn,
    source: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    allow_missing: &dyn Fn(&str) -> bool,
) -> Result<(M, Vec<String>)> {
    let bad = |message: String| TrainError::Weights {
        path: source.to_path_buf(),
        message,
    };
    let infos = param_infos(&module, key);
    // Trainable parameters first, then buffers, each in name order: the first error reported is
    // the one the name-keyed store reported.
    let order = infos
        .iter()
        .filter(|(_, i)| i.trainable)
        .chain(infos.iter().filter(|(_, i)| !i.trainable));
    for (name, info) in order {
        match tensors.get(name) {
            Some(t) if t.shape != info.shape => {
                return Err(bad(format!(
                    "{name}: shape {:?}, expected {:?}",
                    t.shape, info.shape
                )))
            }
            Some(_) => {}
            None if allow_missing(name) => {}
            None => return Err(bad(format!("missing tensor {name}"))),
        }
    }
    struct Load<'a>(&'a BTreeMap<String, HostTensor>);
    impl ParamMap for Load<'_> {
        fn apply<const D: usize>(&mut self, key: &str, _: bool, value: Tensor<D>) -> Tensor<D> {
            match self.0.get(key) {
                Some(t) => {
                    let shape: [usize; D] = t.shape.clone().try_into().expect("checked rank");
                    Tensor::from_data(TensorData::new(t.data.clone(), shape), &value.device())
                }
                None => value,
            }
        }
    }
    let module = map_params(module, key, &mut Load(tensors));
    let unused = tensors
        .keys()
        .filter(|k| !infos.contains_key(*k))
        .cloned()
        .collect();
    Ok((module, unused))
}

/// Reads a PyTorch state dict (`torch.save` zip archive) into host tensors, dropping the
/// `module.` (DataParallel) prefix and the given extra prefix (e.g. `base.` of deeplab-pytorch's
/// MSC wrapper) and integer buffers (`num_batches_tracked`).
pub fn read_torch_state_dict(path: &Path, strip: &[&str]) -> Result<BTreeMap<String, HostTensor>> {
    let entries = clip_es_pickle::read_torch_archive(path).map_err(|e| TrainError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (mut name, t) in entries {
        if !t.dtype.is_float() {
            continue;
        }
        for p in strip {
            if let Some(rest) = name.strip_prefix(p) {
                name = rest.to_string();
            }
        }
        out.insert(name, HostTensor::new(t.shape.clone(), t.to_f32_vec()));
    }
    Ok(out)
}

/// Reads every f32 tensor of a safetensors file, with its metadata.
pub fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, HostTensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |message: String| TrainError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "{name}: dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((out, metadata))
}

/// Writes named f32 host tensors and string metadata as safetensors, atomically (temp + rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes_of: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes_of
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .expect("view"),
            )
        })
        .collect();
    let meta: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
    let data =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| TrainError::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    // A failed write (a full disk) leaves no partial file behind.
    clip_es_data::atomic::write_bytes_atomic(path, &data).map_err(|e| TrainError::io(path, e))
}
