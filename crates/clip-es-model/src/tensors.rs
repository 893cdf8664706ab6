//! Named-tensor access for building the encoders: anything that can hand out a tensor by its
//! OpenAI state-dict name (`visual.transformer.resblocks.0.attn.in_proj_weight`, ...) can feed
//! [`crate::vision::VisionTransformer::new`] and [`crate::text::TextTransformer::new`].

use candle_core::Tensor;
use std::collections::HashMap;

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
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
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

/// Converts a candle tensor after checking its shape and that its values are finite.
pub fn tensor_to_f32(name: &str, t: &Tensor, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    if t.dims() != shape {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    check_finite(name, &v)?;
    Ok(v)
}

impl TensorSource for HashMap<String, Tensor> {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let t = self
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        tensor_to_f32(name, t, shape)
    }

    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError> {
        let t = self
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.elem_count() != 1 {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![],
                got: t.dims().to_vec(),
            });
        }
        let v = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        check_finite(name, &v)?;
        Ok(v[0])
    }
}

impl TensorSource for crate::weights::ClipWeights {
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.tensors().tensor_f32(name, shape)
    }

    fn scalar_f32(&self, name: &str) -> Result<f32, ModelError> {
        self.tensors().scalar_f32(name)
    }
}
