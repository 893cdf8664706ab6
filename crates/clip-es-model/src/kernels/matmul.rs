//! Matrix products on strided views, through the `gemm` crate.

use super::isa::parallelism;

/// A strided view of a matrix for [`matmul`]: element (r, c) lives at `ptr[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }
    /// Same layout, starting `offset` elements in (e.g. one head's columns).
    pub fn offset(self, offset: usize) -> Self {
        MatRef {
            data: &self.data[offset..],
            ..self
        }
    }
    fn extent(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * self.rs + (cols - 1) * self.cs + 1
        }
    }
}

/// `dst[m x n] (row stride dst_rs) = alpha * dst + a[m x k] * b[k x n]`, with `alpha` 0 or 1
/// (accumulate). Bounds are checked; the GEMM itself is the `gemm` crate's.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    par: Option<gemm::Parallelism>,
) {
    matmul_scaled(m, n, k, dst, dst_rs, accumulate, a, b, 1.0, par)
}

/// [`matmul`] with the product scaled: `dst = alpha * dst + scale * a * b`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_scaled(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    scale: f32,
    par: Option<gemm::Parallelism>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() >= (m - 1) * dst_rs + n,
        "matmul: destination too small"
    );
    assert!(a.data.len() >= a.extent(m, k), "matmul: lhs too small");
    assert!(b.data.len() >= b.extent(k, n), "matmul: rhs too small");
    let par = par.unwrap_or_else(|| parallelism(2 * m * n * k));
    // SAFETY: the extents of all three operands were checked against their slices above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        )
    }
}
