//! Element types shared by PyTorch tensors and numpy arrays.
//!
//! Mirrors the dtype tables of `torch/storage.py` (typed storage class names such as
//! `HalfStorage`) and numpy's array-interface type strings (`<f2`, `|u1`, `|b1`...).
//! Converting element bytes to numbers is in `elements`.

/// Element type of a tensor or an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Short name, as in the task's vocabulary (`f16`, `bf16`, `i64`, `bool`...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::U64 => "u64",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// The dtype of a PyTorch typed storage class (`torch.HalfStorage` -> F16).
    pub fn from_torch_storage(name: &str) -> Option<DType> {
        Some(match name {
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype named by a `torch.<name>` global (`torch.float16`), as in `_rebuild_tensor_v3`.
    pub fn from_torch_dtype(name: &str) -> Option<DType> {
        Some(match name {
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "float32" | "float" => DType::F32,
            "float64" | "double" => DType::F64,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "uint16" => DType::U16,
            "uint32" => DType::U32,
            "uint64" => DType::U64,
            "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype of a numpy kind+size code without byte order (`f2`, `i8`, `b1`, `u1`...).
    pub fn from_numpy_code(code: &str) -> Option<DType> {
        Some(match code {
            "b1" | "?" => DType::Bool,
            "u1" | "B" => DType::U8,
            "i1" | "b" => DType::I8,
            "u2" | "H" => DType::U16,
            "i2" | "h" => DType::I16,
            "u4" | "I" => DType::U32,
            "i4" | "i" => DType::I32,
            "u8" | "Q" => DType::U64,
            "i8" | "q" => DType::I64,
            "f2" | "e" => DType::F16,
            "f4" | "f" => DType::F32,
            "f8" | "d" => DType::F64,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
