//! numpy `.npy` files and numpy arrays inside pickles.
//!
//! Mirrors numpy's `lib/format.py` (magic `\x93NUMPY`, header versions 1.0 / 2.0 / 3.0, the
//! header dict with `descr`, `fortran_order`, `shape`; object arrays stored as a pickle of the
//! array) and the pickled form of `ndarray.__reduce__`: `numpy.core.multiarray._reconstruct`
//! (numpy >= 2: `numpy._core.multiarray._reconstruct`) then BUILD with `__setstate__`'s
//! `(version, shape, dtype, is_fortran, raw data)`, the dtype itself pickled as
//! `numpy.dtype(code, False, True)` with BUILD state `(3, byte order, ...)`.
//!
//! The CLIP-ES reference (`generate_cams_voc12.py`) saves each image's CAMs as
//! `np.save(path, {"keys": int64 array, "attn_highres": float16 array})`: a 0-d object array
//! whose pickle holds that dict; [`read_npy_dict`] reads it back.

use crate::dtype::DType;
use crate::elements::{self, swap_bytes_in_place};
use crate::value::Value;
use crate::vm::unpickle_prefix;
use crate::PickleError;
use half::f16;
use std::path::Path;

/// A dense array: C order, little-endian element bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `numel() * dtype.size()` bytes, C order, little-endian.
    pub data: Vec<u8>,
}

impl NdArray {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Every element as f32 (f16/bf16 exactly; f64 and big ints rounded).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        elements::le_to_f32(self.dtype, &self.data)
    }

    /// Every element as f64 (exact except i64/u64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        elements::le_to_f64(self.dtype, &self.data)
    }

    /// Every element as i64; an error for float dtypes.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, PickleError> {
        elements::le_to_i64(self.dtype, &self.data)
    }

    /// The elements of an f16 array; an error for other dtypes.
    pub fn to_f16_vec(&self) -> Result<Vec<f16>, PickleError> {
        elements::le_to_f16(self.dtype, &self.data)
    }
}

/// What a `.npy` file holds.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyContent {
    /// A numeric or bool array.
    Array(NdArray),
    /// An object array (`descr` `|O`): its elements in C order. For `np.save(path, some_dict)`
    /// the shape is `[]` and `items` holds the one dict.
    Object {
        shape: Vec<usize>,
        items: Vec<Value>,
    },
}

/// What a pickled `numpy.ndarray` (or numpy scalar) decodes to.
#[derive(Clone, Debug, PartialEq)]
pub enum PickledArray {
    Numeric(NdArray),
    Object {
        shape: Vec<usize>,
        items: Vec<Value>,
    },
}

fn file_label(path: &Path) -> String {
    path.display().to_string()
}

/// Reads a `.npy` file (numeric array or pickled object array).
pub fn read_npy(path: &Path) -> Result<NpyContent, PickleError> {
    let label = file_label(path);
    let bytes = std::fs::read(path).map_err(|e| PickleError::io(&label, e))?;
    parse_npy(&bytes, &label)
}

/// Reads a `.npy` file that holds a pickled dict of arrays (what the reference's `np.save` of
/// a dict writes) as `(key, array)` pairs in the dict's order.
pub fn read_npy_dict(path: &Path) -> Result<Vec<(String, NdArray)>, PickleError> {
    let label = file_label(path);
    let content = read_npy(path)?;
    match content {
        NpyContent::Object { shape, mut items } if shape.is_empty() && items.len() == 1 => {
            arrays_from_dict(items.pop().expect("one item"), &label)
        }
        NpyContent::Object { shape, .. } => Err(PickleError::format(
            &label,
            format!("object array of shape {shape:?}, expected a 0-d array holding a dict"),
        )),
        NpyContent::Array(a) => Err(PickleError::format(
            &label,
            format!("plain {} array, expected a pickled dict of arrays", a.dtype),
        )),
    }
}

/// Parses the bytes of a `.npy` file; `source` names it in errors.
pub fn parse_npy(bytes: &[u8], source: &str) -> Result<NpyContent, PickleError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() + 2 || !bytes.starts_with(MAGIC) {
        return Err(PickleError::format(
            source,
            "not a .npy file (no \\x93NUMPY magic)",
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start): (usize, usize) = match major {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or_else(|| PickleError::format(source, "truncated .npy header"))?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| PickleError::format(source, "truncated .npy header"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => {
            return Err(PickleError::format(
                source,
                format!(".npy format version {major}.{minor} not supported"),
            ))
        }
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| PickleError::format(source, "truncated .npy header"))?;
    // Versions 1 and 2 store the header in Latin-1, version 3 in UTF-8; the keys and values
    // numpy writes are ASCII either way.
    let header: String = if major == 3 {
        String::from_utf8_lossy(&bytes[header_start..data_start]).into_owned()
    } else {
        bytes[header_start..data_start]
            .iter()
            .map(|&b| b as char)
            .collect()
    };
    let header = parse_header(&header)
        .map_err(|msg| PickleError::format(source, format!("bad .npy header: {msg}")))?;
    let data = &bytes[data_start..];

    if header
        .descr
        .trim_start_matches(['|', '<', '>', '='])
        .starts_with('O')
    {
        let (value, _) = unpickle_prefix(data, source, data_start)?;
        return match array_from_value(value, source)? {
            PickledArray::Object { shape, items } => Ok(NpyContent::Object { shape, items }),
            PickledArray::Numeric(a) => Ok(NpyContent::Array(a)),
        };
    }
    let (dtype, big_endian) = parse_descr(&header.descr).ok_or_else(|| {
        PickleError::format(source, format!("dtype {:?} not supported", header.descr))
    })?;
    let nbytes = checked_nbytes(&header.shape, dtype).ok_or_else(|| {
        PickleError::format(source, format!("shape {:?} too large", header.shape))
    })?;
    if data.len() < nbytes {
        return Err(PickleError::format(
            source,
            format!(
                "truncated data: shape {:?} of {} needs {nbytes} bytes, file has {}",
                header.shape,
                dtype,
                data.len()
            ),
        ));
    }
    let array = dense_array(
        dtype,
        header.shape,
        &data[..nbytes],
        big_endian,
        header.fortran_order,
    );
    Ok(NpyContent::Array(array))
}

fn checked_nbytes(shape: &[usize], dtype: DType) -> Option<usize> {
    shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
}

/// Builds a C-order little-endian array from raw element bytes in file order.
fn dense_array(
    dtype: DType,
    shape: Vec<usize>,
    raw: &[u8],
    big_endian: bool,
    fortran_order: bool,
) -> NdArray {
    let mut data = if fortran_order && shape.len() > 1 {
        // Column-major: the first index varies fastest.
        let mut strides = Vec::with_capacity(shape.len());
        let mut s = 1usize;
        for &d in &shape {
            strides.push(s);
            s *= d;
        }
        elements::gather_strided(raw, dtype.size(), &shape, &strides, 0)
    } else {
        raw.to_vec()
    };
    if big_endian {
        swap_bytes_in_place(&mut data, dtype.size());
    }
    NdArray { dtype, shape, data }
}

/// `<f4` -> (F32, little-endian); `>i8` -> (I64, big-endian); `|u1` -> (U8, -).
fn parse_descr(descr: &str) -> Option<(DType, bool)> {
    let (big_endian, code) = match descr.as_bytes().first()? {
        b'<' | b'|' | b'=' => (false, &descr[1..]),
        b'>' => (true, &descr[1..]),
        _ => (false, descr),
    };
    Some((DType::from_numpy_code(code)?, big_endian))
}

struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A Python literal, as far as `.npy` headers use them.
#[derive(Debug)]
enum Literal {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    Seq(Vec<Literal>),
    Dict(Vec<(Literal, Literal)>),
}

fn parse_header(text: &str) -> Result<NpyHeader, String> {
    let mut parser = LiteralParser {
        s: text.as_bytes(),
        i: 0,
    };
    let Literal::Dict(pairs) = parser.literal(0)? else {
        return Err("header is not a dict".into());
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| matches!(k, Literal::Str(s) if s == key))
            .map(|(_, v)| v)
    };
    let descr = match get("descr") {
        Some(Literal::Str(s)) => s.clone(),
        Some(_) => return Err("structured dtypes are not supported".into()),
        None => return Err("no 'descr'".into()),
    };
    let fortran_order = match get("fortran_order") {
        Some(Literal::Bool(b)) => *b,
        _ => return Err("no boolean 'fortran_order'".into()),
    };
    let shape = match get("shape") {
        Some(Literal::Seq(items)) => items
            .iter()
            .map(|d| match d {
                Literal::Int(n) => {
                    usize::try_from(*n).map_err(|_| "negative dimension".to_string())
                }
                _ => Err("non-integer dimension".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("no tuple 'shape'".into()),
    };
    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
    })
}

struct LiteralParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LiteralParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, depth: usize) -> Result<Literal, String> {
        if depth > 32 {
            return Err("nested too deeply".into());
        }
        self.skip_ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err("unexpected end".into());
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut pairs = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Ok(Literal::Dict(pairs));
                    }
                    let k = self.literal(depth + 1)?;
                    if !self.eat(b':') {
                        return Err("expected ':'".into());
                    }
                    let v = self.literal(depth + 1)?;
                    pairs.push((k, v));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            return Ok(Literal::Dict(pairs));
                        }
                        return Err("expected ',' or '}'".into());
                    }
                }
            }
            b'(' | b'[' => {
                let close = if c == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(close) {
                        return Ok(Literal::Seq(items));
                    }
                    items.push(self.literal(depth + 1)?);
                    if !self.eat(b',') {
                        if self.eat(close) {
                            return Ok(Literal::Seq(items));
                        }
                        return Err("expected ',' or closing bracket".into());
                    }
                }
            }
            b'\'' | b'"' => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != c {
                    if self.s[self.i] == b'\\' {
                        return Err("escapes in header strings are not supported".into());
                    }
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err("unterminated string".into());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Literal::Str(text))
            }
            b'0'..=b'9' | b'-' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                // Python 2 numpy wrote longs as `3L`.
                let text = std::str::from_utf8(&self.s[start..self.i]).expect("ascii");
                if self.s.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                text.parse()
                    .map(Literal::Int)
                    .map_err(|_| format!("bad int {text:?}"))
            }
            _ => {
                for (word, lit) in [
                    ("True", Literal::Bool(true)),
                    ("False", Literal::Bool(false)),
                    ("None", Literal::None),
                ] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(lit);
                    }
                }
                Err(format!("unexpected character {:?}", c as char))
            }
        }
    }
}

// ---- numpy arrays inside pickles -----------------------------------------------------------

fn is_numpy_multiarray(module: &str) -> bool {
    module == "numpy.core.multiarray" || module == "numpy._core.multiarray"
}

/// Decodes a pickled `numpy.dtype` object to (dtype, big-endian?); object dtypes give None.
fn dtype_from_value(value: &Value, source: &str) -> Result<Option<(DType, bool)>, PickleError> {
    let obj = value
        .as_object()
        .filter(|o| o.callable_global() == Some(("numpy", "dtype")))
        .ok_or_else(|| {
            PickleError::format(
                source,
                format!("expected a numpy.dtype, found a {}", value.kind()),
            )
        })?;
    let code = obj
        .args_seq()
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| PickleError::format(source, "numpy.dtype without a type code argument"))?;
    if code.starts_with('O') {
        return Ok(None);
    }
    let dtype = DType::from_numpy_code(code).ok_or_else(|| {
        PickleError::format(source, format!("numpy dtype {code:?} not supported"))
    })?;
    // __setstate__'s tuple: (version, byte order, subarray, names, fields, elsize, alignment,
    // flags); without state numpy assumes native (little-endian here).
    let order = obj
        .state
        .as_ref()
        .and_then(Value::as_seq)
        .and_then(|s| s.get(1))
        .and_then(Value::as_str)
        .unwrap_or("=");
    if let Some(fields) = obj
        .state
        .as_ref()
        .and_then(Value::as_seq)
        .and_then(|s| s.get(3))
    {
        if *fields != Value::None {
            return Err(PickleError::format(
                source,
                "structured numpy dtypes are not supported",
            ));
        }
    }
    Ok(Some((dtype, order == ">")))
}

fn shape_from_value(value: &Value, source: &str) -> Result<Vec<usize>, PickleError> {
    let dims = value
        .as_seq()
        .ok_or_else(|| PickleError::format(source, format!("array shape is a {}", value.kind())))?;
    dims.iter()
        .map(|d| {
            d.as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| PickleError::format(source, format!("bad array dimension {d:?}")))
        })
        .collect()
}

/// Decodes a pickled numpy array (`_reconstruct` + `__setstate__`) or numpy scalar
/// (`multiarray.scalar(dtype, bytes)`).
pub fn array_from_value(value: Value, source: &str) -> Result<PickledArray, PickleError> {
    let Value::Object(obj) = value else {
        return Err(PickleError::format(
            source,
            format!("expected a pickled numpy array, found a {}", value.kind()),
        ));
    };
    let obj = *obj;
    match obj.callable_global() {
        Some((m, "_reconstruct")) if is_numpy_multiarray(m) => {}
        Some((m, "scalar")) if is_numpy_multiarray(m) => {
            let args = obj.args_seq();
            let (Some(dtype), Some(raw)) = (args.first(), args.get(1).and_then(Value::as_bytes))
            else {
                return Err(PickleError::format(
                    source,
                    "numpy scalar without dtype and bytes",
                ));
            };
            let (dtype, big_endian) = dtype_from_value(dtype, source)?
                .ok_or_else(|| PickleError::format(source, "numpy object scalar not supported"))?;
            if raw.len() != dtype.size() {
                return Err(PickleError::format(
                    source,
                    "numpy scalar of the wrong byte size",
                ));
            }
            return Ok(PickledArray::Numeric(dense_array(
                dtype,
                vec![],
                raw,
                big_endian,
                false,
            )));
        }
        _ => {
            return Err(PickleError::format(
                source,
                format!("expected a pickled numpy array, found {:?}", obj.callable),
            ))
        }
    }
    let Some(Value::Tuple(mut state)) = obj.state else {
        return Err(PickleError::format(
            source,
            "numpy array without a __setstate__ tuple",
        ));
    };
    // (version, shape, dtype, is_fortran, data), or without version from old numpy.
    if state.len() == 5 {
        state.remove(0);
    }
    let [shape, dtype, fortran, data]: [Value; 4] = state.try_into().map_err(|s: Vec<Value>| {
        PickleError::format(
            source,
            format!("numpy array state of {} items", s.len() + 1),
        )
    })?;
    let shape = shape_from_value(&shape, source)?;
    let fortran_order = fortran.as_bool().unwrap_or(false);
    match dtype_from_value(&dtype, source)? {
        None => {
            let Value::List(items) = data else {
                return Err(PickleError::format(
                    source,
                    "object array data is not a list",
                ));
            };
            let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if numel != Some(items.len()) {
                return Err(PickleError::format(
                    source,
                    format!(
                        "object array of shape {shape:?} holds {} items",
                        items.len()
                    ),
                ));
            }
            // numpy lists object elements in C order whatever the layout flag says
            // (`_getlist_pkl` walks a C-order iterator).
            Ok(PickledArray::Object { shape, items })
        }
        Some((dtype, big_endian)) => {
            let nbytes = checked_nbytes(&shape, dtype).ok_or_else(|| {
                PickleError::format(source, format!("array shape {shape:?} too large"))
            })?;
            let raw = match data {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_bytes(),
                other => {
                    return Err(PickleError::format(
                        source,
                        format!("array data is a {}, expected bytes", other.kind()),
                    ))
                }
            };
            if raw.len() != nbytes {
                return Err(PickleError::format(
                    source,
                    format!(
                        "array of shape {shape:?} and dtype {dtype} needs {nbytes} bytes, pickle has {}",
                        raw.len()
                    ),
                ));
            }
            let array = if !fortran_order && !big_endian {
                NdArray {
                    dtype,
                    shape,
                    data: raw,
                }
            } else {
                dense_array(dtype, shape, &raw, big_endian, fortran_order)
            };
            Ok(PickledArray::Numeric(array))
        }
    }
}

/// A pickled dict `{str: numpy array or numpy scalar}` as `(key, array)` pairs.
pub fn arrays_from_dict(value: Value, source: &str) -> Result<Vec<(String, NdArray)>, PickleError> {
    let Value::Dict(pairs) = value else {
        return Err(PickleError::format(
            source,
            format!(
                "expected a pickled dict of arrays, found a {}",
                value.kind()
            ),
        ));
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let Value::String(key) = k else {
                return Err(PickleError::format(
                    source,
                    format!("dict key {k:?} is not a string"),
                ));
            };
            match array_from_value(v, source) {
                Ok(PickledArray::Numeric(a)) => Ok((key, a)),
                Ok(PickledArray::Object { .. }) => Err(PickleError::format(
                    source,
                    format!("value of {key:?} is an object array"),
                )),
                Err(e) => Err(PickleError::format(
                    source,
                    format!("value of {key:?}: {e}"),
                )),
            }
        })
        .collect()
}

// ---- writing ----------------------------------------------------------------------------------

/// numpy's type string for a dtype (`<f2`, `|u1`...); bf16 has none.
fn numpy_descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::U16 => "<u2",
        DType::I16 => "<i2",
        DType::U32 => "<u4",
        DType::I32 => "<i4",
        DType::U64 => "<u8",
        DType::I64 => "<i8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::BF16 => return None,
    })
}

fn check_array(array: &NdArray, label: &str) -> Result<&'static str, PickleError> {
    let descr = numpy_descr(array.dtype).ok_or(PickleError::DTypeMismatch {
        wanted: "a numpy dtype",
        found: array.dtype,
    })?;
    if checked_nbytes(&array.shape, array.dtype) != Some(array.data.len()) {
        return Err(PickleError::format(
            label,
            format!(
                "{} bytes do not match shape {:?} of {}",
                array.data.len(),
                array.shape,
                array.dtype
            ),
        ));
    }
    Ok(descr)
}

/// `(3,)`, `(2, 5)`, `()` as Python writes tuples.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// The magic, version and header of a `.npy` file, padded as numpy pads it (to a multiple of
/// 64 bytes, ending in a newline).
fn npy_preamble(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    let (version, len_size) = if header.len() + 11 < 65536 {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let unpadded = 6 + 2 + len_size + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if len_size == 2 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out
}

/// The bytes of a `.npy` file holding `array` (what `np.save(path, array)` writes).
pub fn encode_npy(array: &NdArray) -> Result<Vec<u8>, PickleError> {
    let descr = check_array(array, "<array>")?;
    let mut out = npy_preamble(descr, &array.shape);
    out.extend_from_slice(&array.data);
    Ok(out)
}

/// The bytes of a `.npy` file holding a pickled dict of arrays, as the CLIP-ES reference's
/// `np.save(path, {"keys": ..., "attn_highres": ...})` writes (a 0-d object array, pickle
/// protocol 3, arrays as `numpy.core.multiarray._reconstruct` + `__setstate__`), readable by
/// `np.load(path, allow_pickle=True).item()` with numpy 1.x and 2.x.
pub fn encode_npy_dict(arrays: &[(String, NdArray)]) -> Result<Vec<u8>, PickleError> {
    let mut p = PickleWriter(vec![0x80, 3]);
    p.reconstruct_prefix();
    p.0.extend_from_slice(&[b'(', b'K', 1, b')']);
    p.dtype("O8", "|", 63);
    p.0.extend_from_slice(&[0x89, b']', b'}', b'(']);
    for (key, array) in arrays {
        let label = format!("<array {key:?}>");
        let descr = check_array(array, &label)?;
        if array.data.len() > u32::MAX as usize {
            return Err(PickleError::format(
                &label,
                "arrays over 4 GiB cannot be pickled with protocol 3",
            ));
        }
        p.unicode(key);
        p.reconstruct_prefix();
        p.0.extend_from_slice(&[b'(', b'K', 1, b'(']);
        for &d in &array.shape {
            p.int(d as i64);
        }
        p.0.push(b't');
        p.dtype(&descr[1..], &descr[..1], 0);
        p.0.push(0x89);
        p.0.push(b'B');
        p.0.extend_from_slice(&(array.data.len() as u32).to_le_bytes());
        p.0.extend_from_slice(&array.data);
        p.0.extend_from_slice(b"tb");
    }
    // SETITEMS into the dict, APPEND it to the object list, close the state tuple, BUILD.
    p.0.extend_from_slice(b"uatb.");
    let mut out = npy_preamble("|O", &[]);
    out.extend_from_slice(&p.0);
    Ok(out)
}

struct PickleWriter(Vec<u8>);

impl PickleWriter {
    fn int(&mut self, v: i64) {
        match i32::try_from(v) {
            Ok(v) => {
                self.0.push(b'J');
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                self.0.extend_from_slice(&[0x8a, 8]);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    fn unicode(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// `_reconstruct(ndarray, (0,), b'b')`: an empty array that BUILD fills.
    fn reconstruct_prefix(&mut self) {
        self.0
            .extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n");
        self.0
            .extend_from_slice(&[b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
    }

    /// `numpy.dtype(code, False, True)` with BUILD state `(3, order, None, None, None, -1, -1,
    /// flags)`, as `dtype.__reduce__` gives it.
    fn dtype(&mut self, code: &str, order: &str, flags: u8) {
        self.0.extend_from_slice(b"cnumpy\ndtype\n");
        self.unicode(code);
        self.0
            .extend_from_slice(&[0x89, 0x88, 0x87, b'R', b'(', b'K', 3]);
        self.unicode(order);
        self.0.extend_from_slice(b"NNN");
        self.int(-1);
        self.int(-1);
        self.0.extend_from_slice(&[b'K', flags, b't', b'b']);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_v1(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn big_endian_fortran_int_array() {
        // 2x3 int16 array [[1,2,3],[4,5,6]] stored column-major big-endian.
        let data: Vec<u8> = [1i16, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let file = npy_v1(
            "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3), }\n",
            &data,
        );
        let NpyContent::Array(a) = parse_npy(&file, "t.npy").unwrap() else {
            panic!()
        };
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_i64_vec().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn header_errors_name_the_file() {
        let file = npy_v1(
            "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        let err = parse_npy(&file, "c.npy").unwrap_err().to_string();
        assert!(
            err.starts_with("c.npy: dtype \"<c8\" not supported"),
            "{err}"
        );
        let file = npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
            &[0; 8],
        );
        let err = parse_npy(&file, "t.npy").unwrap_err().to_string();
        assert!(err.contains("truncated data"), "{err}");
        let err = parse_npy(b"PK\x03\x04", "z.npy").unwrap_err().to_string();
        assert!(err.contains("not a .npy file"), "{err}");
    }

    #[test]
    fn empty_and_scalar_shapes() {
        let file = npy_v1(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
            &2.5f64.to_le_bytes(),
        );
        let NpyContent::Array(a) = parse_npy(&file, "s.npy").unwrap() else {
            panic!()
        };
        assert_eq!((a.shape.len(), a.to_f64_vec()), (0, vec![2.5]));
        let file = npy_v1(
            "{'descr': '|b1', 'fortran_order': False, 'shape': (0, 3), }",
            &[],
        );
        let NpyContent::Array(a) = parse_npy(&file, "e.npy").unwrap() else {
            panic!()
        };
        assert_eq!((a.shape, a.data.len()), (vec![0, 3], 0));
    }
}
