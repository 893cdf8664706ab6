//! Conversions of little-endian element bytes to Rust numbers, byte swapping, and copying
//! strided views into contiguous buffers (for the tensors and arrays of every dtype).

use crate::dtype::DType;
use crate::PickleError;
use half::{bf16, f16};

/// Reverses the bytes of every element in place (big-endian data to little-endian).
pub(crate) fn swap_bytes_in_place(bytes: &mut [u8], elem_size: usize) {
    if elem_size > 1 {
        for chunk in bytes.chunks_exact_mut(elem_size) {
            chunk.reverse();
        }
    }
}

fn elems<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
}

/// Little-endian element bytes to f64 (exact for every dtype except i64/u64 beyond 2^53).
pub(crate) fn le_to_f64(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        DType::Bool => bytes.iter().map(|&b| (b != 0) as u8 as f64).collect(),
        DType::U8 => bytes.iter().map(|&b| b as f64).collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f64).collect(),
        DType::U16 => elems::<2>(bytes)
            .map(|e| u16::from_le_bytes(e) as f64)
            .collect(),
        DType::I16 => elems::<2>(bytes)
            .map(|e| i16::from_le_bytes(e) as f64)
            .collect(),
        DType::U32 => elems::<4>(bytes)
            .map(|e| u32::from_le_bytes(e) as f64)
            .collect(),
        DType::I32 => elems::<4>(bytes)
            .map(|e| i32::from_le_bytes(e) as f64)
            .collect(),
        DType::U64 => elems::<8>(bytes)
            .map(|e| u64::from_le_bytes(e) as f64)
            .collect(),
        DType::I64 => elems::<8>(bytes)
            .map(|e| i64::from_le_bytes(e) as f64)
            .collect(),
        DType::F16 => elems::<2>(bytes)
            .map(|e| f16::from_le_bytes(e).to_f64())
            .collect(),
        DType::BF16 => elems::<2>(bytes)
            .map(|e| bf16::from_le_bytes(e).to_f64())
            .collect(),
        DType::F32 => elems::<4>(bytes)
            .map(|e| f32::from_le_bytes(e) as f64)
            .collect(),
        DType::F64 => elems::<8>(bytes).map(f64::from_le_bytes).collect(),
    }
}

/// Little-endian element bytes to f32 (f16/bf16 widen exactly; f64 and large ints round).
pub(crate) fn le_to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F16 => elems::<2>(bytes)
            .map(|e| f16::from_le_bytes(e).to_f32())
            .collect(),
        DType::BF16 => elems::<2>(bytes)
            .map(|e| bf16::from_le_bytes(e).to_f32())
            .collect(),
        DType::F32 => elems::<4>(bytes).map(f32::from_le_bytes).collect(),
        _ => le_to_f64(dtype, bytes)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
    }
}

/// Little-endian element bytes to i64; only integer and bool dtypes (u64 above i64::MAX is an
/// error rather than a silent wrap).
pub(crate) fn le_to_i64(dtype: DType, bytes: &[u8]) -> Result<Vec<i64>, PickleError> {
    Ok(match dtype {
        DType::Bool => bytes.iter().map(|&b| (b != 0) as i64).collect(),
        DType::U8 => bytes.iter().map(|&b| b as i64).collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        DType::U16 => elems::<2>(bytes)
            .map(|e| u16::from_le_bytes(e) as i64)
            .collect(),
        DType::I16 => elems::<2>(bytes)
            .map(|e| i16::from_le_bytes(e) as i64)
            .collect(),
        DType::U32 => elems::<4>(bytes)
            .map(|e| u32::from_le_bytes(e) as i64)
            .collect(),
        DType::I32 => elems::<4>(bytes)
            .map(|e| i32::from_le_bytes(e) as i64)
            .collect(),
        DType::I64 => elems::<8>(bytes).map(i64::from_le_bytes).collect(),
        DType::U64 => elems::<8>(bytes)
            .map(|e| i64::try_from(u64::from_le_bytes(e)))
            .collect::<Result<_, _>>()
            .map_err(|_| PickleError::DTypeMismatch {
                wanted: "i64 (u64 value above i64::MAX)",
                found: dtype,
            })?,
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {
            return Err(PickleError::DTypeMismatch {
                wanted: "i64",
                found: dtype,
            })
        }
    })
}

/// Little-endian f16 element bytes to `f16` values; only for F16 data (no silent rounding).
pub(crate) fn le_to_f16(dtype: DType, bytes: &[u8]) -> Result<Vec<f16>, PickleError> {
    if dtype != DType::F16 {
        return Err(PickleError::DTypeMismatch {
            wanted: "f16",
            found: dtype,
        });
    }
    Ok(elems::<2>(bytes).map(f16::from_le_bytes).collect())
}

/// Copies the elements of a strided view (strides and offset in elements) into a new
/// C-contiguous buffer. The caller has checked that every index lies inside `src`.
pub(crate) fn gather_strided(
    src: &[u8],
    elem_size: usize,
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * elem_size);
    if numel == 0 {
        return out;
    }
    let ndim = shape.len();
    if ndim == 0 {
        out.extend_from_slice(&src[offset * elem_size..(offset + 1) * elem_size]);
        return out;
    }
    // The innermost dimension is copied as one run when it is dense, element by element
    // otherwise; the outer dimensions advance like an odometer.
    let inner = shape[ndim - 1];
    let inner_stride = strides[ndim - 1];
    let mut index = vec![0usize; ndim - 1];
    let mut base = offset;
    loop {
        if inner_stride == 1 {
            out.extend_from_slice(&src[base * elem_size..(base + inner) * elem_size]);
        } else {
            for i in 0..inner {
                let at = (base + i * inner_stride) * elem_size;
                out.extend_from_slice(&src[at..at + elem_size]);
            }
        }
        let mut d = ndim - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            index[d] += 1;
            base += strides[d];
            if index[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            index[d] = 0;
        }
    }
}

/// Largest element index a strided view touches, or None for an empty view; None also when
/// the arithmetic overflows (the caller reports that as out of bounds).
pub(crate) fn max_strided_index(
    shape: &[usize],
    strides: &[usize],
    offset: usize,
) -> Option<Option<usize>> {
    if shape.contains(&0) {
        return Some(None);
    }
    let mut max = offset;
    for (&n, &s) in shape.iter().zip(strides) {
        max = max.checked_add((n - 1).checked_mul(s)?)?;
    }
    Some(Some(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transposed_matrix() {
        // 2x3 matrix stored row-major, read as its 3x2 transpose.
        let src: Vec<u8> = (0u8..6).collect();
        let out = gather_strided(&src, 1, &[3, 2], &[1, 3], 0);
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn gather_with_offset_and_zero_stride() {
        let src: Vec<u8> = (0u8..10).collect();
        let out = gather_strided(&src, 1, &[2, 3], &[0, 2], 1);
        assert_eq!(out, vec![1, 3, 5, 1, 3, 5]);
        let scalar = gather_strided(&src, 2, &[], &[], 2);
        assert_eq!(scalar, vec![4, 5]);
    }

    #[test]
    fn max_index_checks() {
        assert_eq!(max_strided_index(&[2, 3], &[3, 1], 4), Some(Some(9)));
        assert_eq!(max_strided_index(&[0, 3], &[3, 1], 4), Some(None));
        assert_eq!(max_strided_index(&[usize::MAX, 3], &[3, 1], 4), None);
    }

    #[test]
    fn conversions() {
        let bytes = f16::from_f32(1.5).to_le_bytes();
        assert_eq!(le_to_f32(DType::F16, &bytes), vec![1.5]);
        assert_eq!(le_to_i64(DType::I8, &[0xff]).unwrap(), vec![-1]);
        assert!(le_to_i64(DType::F32, &[0; 4]).is_err());
        assert!(le_to_i64(DType::U64, &u64::MAX.to_le_bytes()).is_err());
    }
}
