//! The layers both networks are built from, as burn modules: a convolution with fixed stride,
//! padding and dilation ([`Conv`]), deeplab-pytorch's frozen batch norm ([`FrozenBatchNorm`],
//! `libs/models/resnet.py` lines 26-45 with `freeze_bn`: the stored statistics as a constant
//! affine map) and the conv + BN unit of ResNet ([`ConvBn`]).
//!
//! Parameters are `Param` fields, so burn's module traversal reaches them; the field names are
//! the PyTorch state-dict names (`weight`, `bias`, `running_mean`, `running_var`, `conv`, `bn`),
//! which is how checkpoint keys follow from module paths (see [`crate::params`]).

use crate::params::to_host;
use burn::module::{Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation::relu, Device, Tensor, TensorData};

/// deeplab-pytorch's (and PyTorch's) batch-norm epsilon.
pub const BN_EPS: f32 = 1e-5;

/// A 2-D convolution with square stride, padding and dilation and an optional bias.
#[derive(Module, Debug)]
pub struct Conv {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl Conv {
    /// A convolution of the given weights `[out, in, k, k]` (row-major) and bias.
    pub fn new(
        shape: [usize; 4],
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        (stride, padding, dilation): (usize, usize, usize),
        device: &Device,
    ) -> Self {
        Conv {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), device)),
            bias: bias.map(|b| {
                Param::from_tensor(Tensor::from_data(TensorData::new(b, [shape[0]]), device))
            }),
            stride,
            padding,
            dilation,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (s, p, d) = (self.stride, self.padding, self.dilation);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new([s, s], [p, p], [d, d], 1),
        )
    }
}

/// Batch norm with frozen statistics: `y = x * scale + shift` with `scale = weight /
/// sqrt(running_var + eps)` and `shift = bias - running_mean * scale`, computed once on the
/// host (in f32) by [`FrozenBatchNorm::fold`] whenever the buffers change. The four
/// buffers are parameters of the module (so they are saved and loaded by name) but never
/// trained: [`crate::params`] tells them apart by this module type.
#[derive(Module, Debug)]
pub struct FrozenBatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
    /// `[1, C, 1, 1]`, from the buffers.
    #[module(skip)]
    scale: Tensor<4>,
    #[module(skip)]
    shift: Tensor<4>,
}

impl FrozenBatchNorm {
    /// The identity map (weight 1, bias 0, mean 0, variance 1), PyTorch's initial state.
    pub fn identity(channels: usize, device: &Device) -> Self {
        let buffer = |v: f32| {
            Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![v; channels], [channels]),
                device,
            ))
            .set_require_grad(false)
        };
        let zero = || Tensor::<4>::zeros([1, channels, 1, 1], device);
        FrozenBatchNorm {
            weight: buffer(1.0),
            bias: buffer(0.0),
            running_mean: buffer(0.0),
            running_var: buffer(1.0),
            scale: zero(),
            shift: zero(),
        }
        .fold()
    }

    /// Recomputes the affine map from the buffers.
    pub fn fold(mut self) -> Self {
        let (w, b) = (to_host(&self.weight.val()), to_host(&self.bias.val()));
        let (m, v) = (
            to_host(&self.running_mean.val()),
            to_host(&self.running_var.val()),
        );
        let c = w.len();
        let scale: Vec<f32> = (0..c).map(|i| w[i] / (v[i] + BN_EPS).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| b[i] - m[i] * scale[i]).collect();
        let device = self.weight.val().device();
        let t = |d: Vec<f32>| Tensor::<4>::from_data(TensorData::new(d, [1, c, 1, 1]), &device);
        self.scale = t(scale);
        self.shift = t(shift);
        self
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x * self.scale.clone() + self.shift.clone()
    }
}

/// A bias-free convolution followed by frozen batch norm, with or without a ReLU (ResNet's
/// conv + BN unit; deeplab-pytorch's `_ConvBnReLU`).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv,
    pub bn: FrozenBatchNorm,
    pub relu: bool,
}

impl ConvBn {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.bn.forward(self.conv.forward(x));
        if self.relu {
            relu(y)
        } else {
            y
        }
    }
}
