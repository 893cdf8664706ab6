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

/// Converts a candle tensor after checking its shape.
pub fn tensor_to_f32(name: &str, t: &Tensor, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
    if t.dims() != shape {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
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
        Ok(t.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?[0])
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
