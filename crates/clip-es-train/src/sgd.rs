//! SGD with momentum, weight decay and per-parameter LR multipliers, as `torch.optim.SGD`
//! (dampening 0, no Nesterov): d = g + wd * p; buf = d on the first step, else
//! buf = momentum * buf + d; p -= lr * buf. The LR follows deeplab-pytorch's poly schedule
//! (`libs/utils/lr_scheduler.py` lines 13-31 at 4219467f, stepped after each iteration in
//! `main.py` line 250).

//!
//! burn's own `Sgd` optimizer is not used: the update must be `torch.optim.SGD`'s to the bit
//! (the order of the additions and multiplications above, in f32, per-parameter LR groups by
//! name), and the momentum buffers are checkpointed by parameter name for a bit-identical
//! resume.

use crate::model::Network;
use crate::params::{to_device, to_host, HostTensor, ParamMap};
use burn::tensor::Tensor;
use std::collections::BTreeMap;

/// LR of iteration `iteration` (1-based) of a poly schedule updated every `step` iterations:
/// base * (1 - k / max_iter)^power with k the last multiple of `step` below `iteration`
/// (the base LR while k = 0; past `max_iter` the last value reached, as PyTorch keeps it).
pub fn poly_lr(base: f64, iteration: usize, max_iter: usize, step: usize, power: f64) -> f64 {
    // The scheduler has been stepped with epoch = iteration - 1 before this iteration.
    let e = iteration.saturating_sub(1);
    let mut k = e - e % step.max(1);
    if k > max_iter {
        // get_lr() returns the unchanged LR past the end: the last update that happened.
        k = max_iter - max_iter % step.max(1);
    }
    if k == 0 {
        return base;
    }
    base * (1.0 - k as f64 / max_iter as f64).powf(power)
}

#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// Momentum buffers by parameter name; absent before a parameter's first step.
    pub buffers: BTreeMap<String, Tensor<1>>,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            momentum,
            weight_decay,
            buffers: BTreeMap::new(),
        }
    }

    /// The update of one parameter (flat) with gradient `grad` at LR `lr` (the multiplier
    /// applied) with or without weight decay; keeps its momentum buffer under `name`.
    pub fn update(
        &mut self,
        name: &str,
        value: Tensor<1>,
        grad: &Tensor<1>,
        lr: f64,
        decay: bool,
    ) -> Tensor<1> {
        let mut d = grad.clone();
        if decay && self.weight_decay != 0.0 {
            d = d + value.clone().mul_scalar(self.weight_decay as f32);
        }
        let buf = match self.buffers.remove(name) {
            Some(b) if self.momentum != 0.0 => b.mul_scalar(self.momentum as f32) + d,
            _ => d,
        };
        let value = value - buf.clone().mul_scalar(lr as f32);
        if self.momentum != 0.0 {
            self.buffers.insert(name.to_string(), buf);
        }
        value
    }

    /// One step with base LR `lr` on every trainable parameter of `model`; `group(name)` gives
    /// (LR multiplier, weight decay applies). Parameters without a gradient are left alone (as
    /// PyTorch does for `grad is None`).
    pub fn step(
        &mut self,
        model: &mut Network,
        grads: &BTreeMap<String, Tensor<1>>,
        lr: f64,
        group: &dyn Fn(&str) -> (f64, bool),
    ) {
        struct Step<'a> {
            sgd: &'a mut Sgd,
            grads: &'a BTreeMap<String, Tensor<1>>,
            lr: f64,
            group: &'a dyn Fn(&str) -> (f64, bool),
        }
        impl ParamMap for Step<'_> {
            fn apply<const D: usize>(
                &mut self,
                key: &str,
                trainable: bool,
                t: Tensor<D>,
            ) -> Tensor<D> {
                let Some(g) = self.grads.get(key).filter(|_| trainable) else {
                    return t;
                };
                let (mult, decay) = (self.group)(key);
                let shape = t.dims();
                let flat = t.reshape([shape.iter().product::<usize>()]);
                self.sgd
                    .update(key, flat, g, self.lr * mult, decay)
                    .reshape(shape)
            }
        }
        let net = model.net.clone();
        model.net = net.map_params(&mut Step {
            sgd: self,
            grads,
            lr,
            group,
        });
    }

    /// Momentum buffers as host tensors under `momentum.<name>` (for checkpoints).
    pub fn state(&self, model: &Network) -> BTreeMap<String, HostTensor> {
        let infos = model.net.param_infos();
        self.buffers
            .iter()
            .map(|(k, b)| {
                (
                    format!("momentum.{k}"),
                    HostTensor::new(infos[k].shape.clone(), to_host(b)),
                )
            })
            .collect()
    }

    /// Restores buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, model: &Network, tensors: &BTreeMap<String, HostTensor>) {
        let infos = model.net.param_infos();
        self.buffers.clear();
        for (k, t) in tensors {
            if let Some(name) = k.strip_prefix("momentum.") {
                if infos.get(name).is_some_and(|i| i.trainable) {
                    self.buffers
                        .insert(name.to_string(), to_device(t, &model.device));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_is_stepwise() {
        assert_eq!(poly_lr(1.0, 1, 100, 10, 0.9), 1.0);
        assert_eq!(poly_lr(1.0, 10, 100, 10, 0.9), 1.0);
        let v = poly_lr(1.0, 11, 100, 10, 0.9);
        assert!((v - 0.9f64.powf(0.9)).abs() < 1e-12);
        assert_eq!(poly_lr(1.0, 20, 100, 10, 0.9), v);
        assert!(poly_lr(1.0, 21, 100, 10, 0.9) < v);
    }
}
