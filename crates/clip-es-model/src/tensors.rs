//! Host tensors and named-tensor access for building the encoders: anything that can hand out
//! a tensor by its OpenAI state-dict name (`visual.transformer.resblocks.0.attn.in_proj_weight`,
//! ...) can feed [`crate::vision::VisionTransformer::new`] and
//! [`crate::text::TextTransformer::new`].

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor `{0}` is missing from the weights")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{0}")]
    Input(String),
    #[error("tensor `{name}` holds {count} non-finite value(s) (first: {first} at index {index}): the weights are corrupt")]
    NonFinite {
        name: String,
        count: usize,
        first: f32,
        index: usize,
    },
}

/// A float32 tensor in host memory: its shape and its values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Panics if `data` does not hold exactly the elements of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor of shape {shape:?}"
        );
        Tensor { shape, data }
    }

    pub fn dims(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &[f32] {
        &self.data
    }

    /// The values, moved out.
    pub fn into_values(self) -> Vec<f32> {
        self.data
    }

    /// The value of a tensor with one element (any number of unit dims).
    pub fn scalar(&self) -> Option<f32> {
        (self.data.len() == 1).then(|| self.data[0])
    }
}

/// A source of weights in OpenAI naming.
pub trait TensorSource {
    /// The tensor `name` as `f32` values in row-major order; its shape must equal `shape`.
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError>;

    /// Like [`TensorSource::tensor_f32`] for a scalar stored with any number of unit dims.
    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError>;
}

/// Fails on a NaN or infinity among the values of tensor `name` (one pass at load: a corrupt
/// weight would otherwise turn every CAM into zeros without a word).
pub fn check_finite(name: &str, values: &[f32]) -> Result<(), ModelError> {
    let Some(index) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    Err(ModelError::NonFinite {
        name: name.to_string(),
        count: values[index..].iter().filter(|v| !v.is_finite()).count(),
        first: values[index],
        index,
    })
}

/// The tensor `name` after checking its shape (`None`: one element) and that its values are
/// finite.
fn checked<'a>(
    map: &'a HashMap<String, Tensor>,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<&'a Tensor, ModelError> {
    let t = map
        .get(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let ok = match shape {
        Some(s) => t.dims() == s,
        None => t.data.len() == 1,
    };
    if !ok {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: shape.map_or(vec![], <[usize]>::to_vec),
            got: t.dims().to_vec(),
        });
    }
    check_finite(name, &t.data)?;
    Ok(t)
}

/// Copies the tensors it hands out.
impl TensorSource for HashMap<String, Tensor> {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        Ok(checked(self, name, Some(shape))?.data.clone())
    }

    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError> {
        Ok(checked(self, name, None)?.data[0])
    }
}

/// Hands each tensor out once, moving it (no copy): for building a model from weights that
/// are not needed afterwards.
pub struct TakeTensors(Mutex<HashMap<String, Tensor>>);

impl TakeTensors {
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        TakeTensors(Mutex::new(tensors))
    }
}

impl TensorSource for TakeTensors {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        checked(&map, name, Some(shape))?;
        Ok(map.remove(name).expect("checked above").data)
    }

    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(checked(&map, name, None)?.data[0])
    }
}
