//! The instruction set the multiversioned kernels run with (detected once per process), and
//! the threads they may use.

/// The instruction sets the multiversioned kernels may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    Generic,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, DQ, VL (with AVX2 and FMA).
    Avx512,
}

/// The best instruction set of this CPU, detected once per process.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Generic
    })
}

/// Number of threads the kernels may use (rayon's pool).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

pub(super) fn parallelism(flops: usize) -> gemm::Parallelism {
    // Small products are faster on one thread than with the fork-join overhead.
    if flops < 4_000_000 || num_threads() == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}
