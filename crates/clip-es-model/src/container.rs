//! Reading tensor containers, whatever the model: safetensors files (memory-mapped, one or
//! several shards) and PyTorch archives (`torch.save` zip or legacy pickle streams and
//! TorchScript archives, read by clip-es-pickle, a pickle VM that executes nothing). The file
//! kind is sniffed from the first bytes. The result is a [`TensorStore`]: stored names,
//! shapes, element types and the bytes, borrowed from the mapping where possible.
//!
//! CLIP's key naming lives in [`crate::weights`]; another model (e.g. a segmentation
//! network's checkpoints) reads its files with [`Checkpoint`] and names its own tensors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use crate::error::WeightsError;

/// An opened checkpoint: memory-mapped safetensors shards or a PyTorch archive.
pub enum Checkpoint {
    Safetensors(Vec<MappedFile>),
    Torch(TorchFile),
}

impl Checkpoint {
    /// Opens one file, sniffing its kind (safetensors or PyTorch).
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let container = sniff(&read_magic(path)?);
        match container {
            Container::Safetensors => Ok(Checkpoint::Safetensors(vec![MappedFile::open(path)?])),
            Container::TorchZip | Container::LegacyPickle => {
                Ok(Checkpoint::Torch(TorchFile::open(path, &container)?))
            }
            Container::Unknown => Err(WeightsError::UnknownFormat {
                path: path.to_path_buf(),
                reason: "neither a safetensors file, a PyTorch .pt archive nor a directory".into(),
            }),
        }
    }

    /// Opens the shards of a sharded safetensors checkpoint.
    pub fn open_shards(paths: &[PathBuf]) -> Result<Self, WeightsError> {
        Ok(Checkpoint::Safetensors(
            paths
                .iter()
                .map(|p| MappedFile::open(p))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// All tensors of the checkpoint.
    pub fn store(&self) -> Result<TensorStore<'_>, WeightsError> {
        match self {
            Checkpoint::Safetensors(files) => {
                let mut store = TensorStore::new();
                for file in files {
                    let parsed = file.parse()?;
                    add_safetensors(&mut store, file, &parsed);
                }
                Ok(store)
            }
            Checkpoint::Torch(t) => Ok(t.store()),
        }
    }
}

/// Writes tensors (name, element type, shape, little-endian bytes) as a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, StoredDType, Vec<usize>, Vec<u8>)],
) -> Result<(), WeightsError> {
    use safetensors::Dtype as S;
    let bad = |reason: String| WeightsError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in tensors {
        let dt = match dtype {
            StoredDType::F64 => S::F64,
            StoredDType::F32 => S::F32,
            StoredDType::F16 => S::F16,
            StoredDType::BF16 => S::BF16,
            StoredDType::I64 => S::I64,
            StoredDType::Other(n) => return Err(bad(format!("cannot write {n} tensor `{name}`"))),
        };
        let view = safetensors::tensor::TensorView::new(dt, shape.clone(), data)
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::tensor::serialize_to_file(views, None, path).map_err(|e| bad(e.to_string()))
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    /// Another type (e.g. int32, uint8, bool): listed, never read as weights.
    Other(&'static str),
}

impl StoredDType {
    /// Bytes per element of the floating-point types (None for the others).
    pub fn size(self) -> Option<usize> {
        match self {
            StoredDType::F64 => Some(8),
            StoredDType::F32 => Some(4),
            StoredDType::F16 | StoredDType::BF16 => Some(2),
            StoredDType::I64 | StoredDType::Other(_) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoredDType::F64 => "float64",
            StoredDType::F32 => "float32",
            StoredDType::F16 => "float16",
            StoredDType::BF16 => "bfloat16",
            StoredDType::I64 => "int64",
            StoredDType::Other(n) => n,
        }
    }
}

/// A stored tensor: shape, element type and its bytes in row-major order (little-endian).
#[derive(Clone, Debug)]
pub struct StoredTensor<'a> {
    pub shape: Vec<usize>,
    pub dtype: StoredDType,
    pub data: Cow<'a, [u8]>,
    /// The file holding it (a shard of a sharded checkpoint, or the archive).
    pub file: &'a Path,
}

impl StoredTensor<'_> {
    /// The values as float32 (floating-point types, widened exactly or rounded from float64).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        self.dtype
            .size()
            .map(|_| decode_f32(&self.data, self.dtype))
    }

    /// The values of an int64 tensor.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        (self.dtype == StoredDType::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect()
        })
    }

    /// The values of a float64 tensor, exactly.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        (self.dtype == StoredDType::F64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect()
        })
    }
}

/// A set of named stored tensors, whatever the container.
#[derive(Clone, Debug, Default)]
pub struct TensorStore<'a> {
    tensors: BTreeMap<String, StoredTensor<'a>>,
}

impl<'a> TensorStore<'a> {
    pub fn new() -> Self {
        TensorStore {
            tensors: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, name: String, tensor: StoredTensor<'a>) {
        self.tensors.insert(name, tensor);
    }

    /// A tensor by its stored name.
    pub fn get(&self, name: &str) -> Option<&StoredTensor<'a>> {
        self.tensors.get(name)
    }

    /// The stored names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensors by name, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StoredTensor<'a>)> + '_ {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.shape.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Drops a `module.` prefix (models saved from DataParallel), as OpenAI's loader does.
    pub fn strip_module_prefix(self) -> Self {
        if !self.tensors.keys().all(|k| k.starts_with("module.")) {
            return self;
        }
        let tensors = self
            .tensors
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
        TensorStore { tensors }
    }

    /// The tensor `name` as float32 values, checked against `expected` (a shape with the same
    /// number of elements is accepted only for the 0-d `logit_scale`, which some files store
    /// as shape `[1]`).
    pub fn read_f32(
        &self,
        name: &str,
        expected: &[usize],
        fallback: &Path,
    ) -> Result<Vec<f32>, WeightsError> {
        let raw = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: fallback.to_path_buf(),
                name: name.to_string(),
            })?;
        let path = raw.file;
        let scalar_ok = expected.is_empty() && raw.shape.iter().product::<usize>() == 1;
        if raw.shape != expected && !scalar_ok {
            return Err(WeightsError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: raw.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let Some(size) = raw.dtype.size() else {
            return Err(WeightsError::DType {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: raw.dtype.name().to_string(),
            });
        };
        let count: usize = raw.shape.iter().product();
        if raw.data.len() != count * size {
            return Err(WeightsError::BadTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                reason: format!(
                    "{} bytes of data for {count} {} values",
                    raw.data.len(),
                    raw.dtype.name()
                ),
            });
        }
        Ok(decode_f32(&raw.data, raw.dtype))
    }

    /// Storage type of a model's tensors: that of `probe`, a tensor every such model has
    /// (float32 when absent).
    pub fn stored_dtype(&self, probe: &str) -> StoredDType {
        self.tensors
            .get(probe)
            .map(|t| t.dtype)
            .unwrap_or(StoredDType::F32)
    }
}

/// Little-endian floats to f32 (f16 / bf16 widen exactly).
pub fn decode_f32(bytes: &[u8], dtype: StoredDType) -> Vec<f32> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    match dtype {
        StoredDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StoredDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        StoredDType::F16 | StoredDType::BF16 => {
            let bits: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut out = vec![0f32; bits.len()];
            if dtype == StoredDType::F16 {
                bits.reinterpret_cast::<half::f16>()
                    .convert_to_f32_slice(&mut out);
            } else {
                bits.reinterpret_cast::<half::bf16>()
                    .convert_to_f32_slice(&mut out);
            }
            out
        }
        StoredDType::I64 | StoredDType::Other(_) => Vec::new(),
    }
}

/// What a file is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Safetensors,
    /// A zip archive: `torch.save` (state dict) or `torch.jit.save` (TorchScript).
    TorchZip,
    /// The legacy (pre-1.6) non-zip `torch.save` stream.
    LegacyPickle,
    Unknown,
}

pub fn read_magic(path: &Path) -> Result<Vec<u8>, WeightsError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| io_error(path, e))?;
    let mut buf = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut buf)
        .map_err(|e| io_error(path, e))?;
    Ok(buf)
}

pub fn sniff(magic: &[u8]) -> Container {
    if magic.starts_with(b"PK\x03\x04") {
        return Container::TorchZip;
    }
    if magic.len() >= 9 && magic[8] == b'{' {
        return Container::Safetensors;
    }
    // a pickle stream (protocol 2+) starts with PROTO: torch.save's legacy format
    if magic.len() >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
        return Container::LegacyPickle;
    }
    Container::Unknown
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> WeightsError {
    WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A memory-mapped safetensors file.
pub struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        // SAFETY: the map is read-only and lives as long as the tensors are decoded from it;
        // a file truncated by another process while mapped could fault, which is the usual
        // caveat of memory-mapped model loading.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
        })
    }

    pub fn parse(&self) -> Result<SafeTensors<'_>, WeightsError> {
        SafeTensors::deserialize(&self.map).map_err(|e| WeightsError::Safetensors {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

/// Adds the tensors of a parsed safetensors file to `store` (borrowing the mapped bytes).
pub fn add_safetensors<'a>(
    store: &mut TensorStore<'a>,
    file: &'a MappedFile,
    parsed: &SafeTensors<'a>,
) {
    use safetensors::Dtype as S;
    for (name, view) in parsed.iter() {
        let dtype = match view.dtype() {
            S::F64 => StoredDType::F64,
            S::F32 => StoredDType::F32,
            S::F16 => StoredDType::F16,
            S::BF16 => StoredDType::BF16,
            S::I64 => StoredDType::I64,
            S::I32 => StoredDType::Other("int32"),
            S::I16 => StoredDType::Other("int16"),
            S::I8 => StoredDType::Other("int8"),
            S::U8 => StoredDType::Other("uint8"),
            S::BOOL => StoredDType::Other("bool"),
            _ => StoredDType::Other("an unsupported type"),
        };
        store.insert(
            name.to_string(),
            StoredTensor {
                shape: view.shape().to_vec(),
                dtype,
                data: Cow::Borrowed(view.data()),
                file: &file.path,
            },
        );
    }
}

/// The tensors of a PyTorch archive (read by clip-es-pickle), named as in `state_dict()`.
pub struct TorchFile {
    path: PathBuf,
    tensors: Vec<(String, clip_es_pickle::TorchTensor)>,
    torchscript: bool,
}

impl TorchFile {
    pub fn open(path: &Path, container: &Container) -> Result<Self, WeightsError> {
        let tensors = clip_es_pickle::read_torch_archive(path)?;
        let torchscript = matches!(container, Container::TorchZip) && is_torchscript(path)?;
        Ok(TorchFile {
            path: path.to_path_buf(),
            tensors,
            torchscript,
        })
    }

    /// Whether the archive is TorchScript (`torch.jit.save`).
    pub fn is_torchscript(&self) -> bool {
        self.torchscript
    }

    pub fn store(&self) -> TensorStore<'_> {
        use clip_es_pickle::DType as P;
        let mut store = TensorStore::new();
        for (name, t) in &self.tensors {
            let dtype = match t.dtype {
                P::F64 => StoredDType::F64,
                P::F32 => StoredDType::F32,
                P::F16 => StoredDType::F16,
                P::BF16 => StoredDType::BF16,
                P::I64 => StoredDType::I64,
                other => StoredDType::Other(other.name()),
            };
            store.insert(
                name.clone(),
                StoredTensor {
                    shape: t.shape.clone(),
                    dtype,
                    data: t.contiguous_le_bytes(),
                    file: &self.path,
                },
            );
        }
        store
    }
}

/// A `torch.jit.save` archive holds the module's code (`<root>/code/`) and `constants.pkl`
/// next to `data.pkl`; a `torch.save` archive holds only data.
pub fn is_torchscript(path: &Path) -> Result<bool, WeightsError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| WeightsError::Torch {
            path: path.to_path_buf(),
            reason: format!("not a valid zip archive: {e}"),
        })?;
    let found = zip.file_names().flatten().any(|n| {
        let n: &str = &n;
        n.ends_with("/constants.pkl") || n.contains("/code/")
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_and_bf16_decode_exactly() {
        let values = [0.0f32, 1.0, -2.5, 65504.0, 6.1035156e-5];
        let f16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        assert_eq!(decode_f32(&f16, StoredDType::F16), values);
        let bf16: Vec<u8> = [1.0f32, -2.5, 3.0e38]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let back = decode_f32(&bf16, StoredDType::BF16);
        assert_eq!(&back[..2], &[1.0, -2.5]);
        assert_eq!(back[2], half::bf16::from_f32(3.0e38).to_f32());
    }

    #[test]
    fn sniffing() {
        assert!(matches!(sniff(b"PK\x03\x04rest"), Container::TorchZip));
        assert!(matches!(
            sniff(b"\x10\0\0\0\0\0\0\0{\"a\""),
            Container::Safetensors
        ));
        assert!(matches!(
            sniff(b"\x80\x02\x8a\x0a"),
            Container::LegacyPickle
        ));
        assert!(matches!(sniff(b"hello world"), Container::Unknown));
        assert!(matches!(sniff(b""), Container::Unknown));
    }
}
