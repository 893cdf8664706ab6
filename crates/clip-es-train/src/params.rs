//! Named parameters: the trainable tensors of a network (flat, on the training device) and its
//! frozen buffers (batch-norm statistics, kept on the host as loaded), under the key names of the
//! PyTorch state dict they mirror, so checkpoints and PyTorch weights share one naming.

use crate::error::{Result, TrainError};
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

/// A trainable parameter: its shape and its value as a flat tensor without autodiff.
#[derive(Clone, Debug)]
pub struct Param {
    pub shape: Vec<usize>,
    pub value: Tensor<1>,
}

/// The parameters of a network.
#[derive(Clone, Debug)]
pub struct ParamStore {
    pub device: Device,
    pub trainable: BTreeMap<String, Param>,
    pub frozen: BTreeMap<String, HostTensor>,
}

pub fn to_device(t: &HostTensor, device: &Device) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
}

pub fn to_host(t: &Tensor<1>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor data")
}

impl ParamStore {
    pub fn new(device: &Device) -> Self {
        ParamStore {
            device: device.clone(),
            trainable: BTreeMap::new(),
            frozen: BTreeMap::new(),
        }
    }

    pub fn add_trainable(&mut self, name: &str, t: HostTensor) {
        let value = to_device(&t, &self.device);
        self.trainable.insert(
            name.to_string(),
            Param {
                shape: t.shape,
                value,
            },
        );
    }

    pub fn add_frozen(&mut self, name: &str, t: HostTensor) {
        self.frozen.insert(name.to_string(), t);
    }

    pub fn trainable_host(&self) -> BTreeMap<String, HostTensor> {
        self.trainable
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    HostTensor::new(p.shape.clone(), to_host(&p.value)),
                )
            })
            .collect()
    }

    /// Overwrites parameters and buffers from named host tensors (a state dict). Every tensor the
    /// network has must be present with the right shape unless `allow_missing` accepts the name
    /// (used to skip the classifier when loading ImageNet/COCO backbones); extra names are ignored
    /// and returned.
    pub fn load(
        &mut self,
        source: &Path,
        tensors: &BTreeMap<String, HostTensor>,
        allow_missing: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let bad = |message: String| TrainError::Weights {
            path: source.to_path_buf(),
            message,
        };
        let mut used = std::collections::BTreeSet::new();
        for (name, p) in self.trainable.iter_mut() {
            match tensors.get(name) {
                Some(t) => {
                    if t.shape != p.shape {
                        return Err(bad(format!(
                            "{name}: shape {:?}, expected {:?}",
                            t.shape, p.shape
                        )));
                    }
                    p.value = to_device(t, &self.device);
                    used.insert(name.clone());
                }
                None if allow_missing(name) => {}
                None => return Err(bad(format!("missing tensor {name}"))),
            }
        }
        for (name, f) in self.frozen.iter_mut() {
            match tensors.get(name) {
                Some(t) => {
                    if t.shape != f.shape {
                        return Err(bad(format!(
                            "{name}: shape {:?}, expected {:?}",
                            t.shape, f.shape
                        )));
                    }
                    *f = t.clone();
                    used.insert(name.clone());
                }
                None if allow_missing(name) => {}
                None => return Err(bad(format!("missing tensor {name}"))),
            }
        }
        Ok(tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect())
    }

    /// A trainable tensor with its shape, from the given (possibly autodiff) flat values.
    pub fn shaped<const D: usize>(
        &self,
        values: &BTreeMap<String, Tensor<1>>,
        name: &str,
    ) -> Tensor<D> {
        let p = self
            .trainable
            .get(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        let shape: [usize; D] = p
            .shape
            .clone()
            .try_into()
            .unwrap_or_else(|_| panic!("{name}: rank"));
        values[name].clone().reshape(shape)
    }
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
