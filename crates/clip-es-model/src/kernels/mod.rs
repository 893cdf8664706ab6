//! CPU kernels for the transformer hot path, behind [`crate::backend::Cpu`]: matrix products
//! (the `gemm` crate), layer norm, QuickGELU, row softmax and multi-head attention, each with
//! the activation-only backward pass a gradient-based explanation needs (docs/algorithm.md,
//! "Softmax-GradCAM").
//!
//! Why hand-written: at the token counts of CAM inputs (500x375 -> 769 tokens) a generic tensor
//! library's attention spends most of its time in a softmax over 12 x N x N and in per-head
//! batched matmuls with copies. Here each head runs two strided GEMMs straight on the packed QKV
//! buffer and an in-place vectorised softmax, heads in parallel. The elementwise kernels are
//! compiled for AVX-512 / AVX2+FMA and picked at run time, so one binary runs everywhere.
//!
//! All matrices are row-major `f32` slices; shapes are passed explicitly.

/// Runs `$body` compiled for the best instruction set available at run time. The body is
/// written once as plain loops; LLVM vectorises it for each target-feature set.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                match simd_level() {
                    // SAFETY: `simd_level` detected these features on this CPU.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdLevel::Generic => {}
                }
            }
            generic($($arg),*)
        }
    };
}

// Declared after the macro: `macro_rules!` is visible in the modules declared below it.
mod activations;
mod attention;
mod isa;
mod layers;
mod matmul;
#[cfg(test)]
mod tests;

pub use activations::{
    add_assign, fast_exp, quick_gelu_backward_inplace, quick_gelu_inplace, scale_inplace,
    softmax_inplace,
};
pub use attention::{
    attention_backward_row_sum, attention_forward, AttentionShape, KeepProbs, ATTENTION_ROW_BLOCK,
};
pub use isa::{num_threads, simd_level, SimdLevel};
pub use layers::{LayerNorm, LayerNormCache, Linear};
pub use matmul::{matmul, matmul_scaled, MatRef};
