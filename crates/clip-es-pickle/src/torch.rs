//! PyTorch checkpoints: `torch.save` zip archives, TorchScript archives (`torch.jit.save`,
//! e.g. OpenAI's published `ViT-B-16.pt` that the CLIP-ES reference loads through
//! `clip.load`), and the legacy pre-1.6 non-zip `torch.save` stream.
//!
//! Mirrors `torch/serialization.py` (`_load` for zip archives: `<root>/data.pkl`, storages in
//! `<root>/data/<key>`, `<root>/byteorder`; `_legacy_load`: magic number, protocol version and
//! sys-info pickles, the object pickle, the storage key list, then each storage as an int64
//! element count and raw bytes) and `torch/_utils.py` (`_rebuild_tensor_v2`, `_rebuild_tensor_v3`,
//! `_rebuild_parameter`). Storages are persistent ids
//! `('storage', torch.<Type>Storage, key, location, numel[, view metadata])`.
//!
//! For TorchScript archives `data.pkl` holds the module tree: `__torch__.*` objects whose BUILD
//! state dicts map attribute names to submodules, parameters, buffers and plain attributes.
//! Tensors are named by their attribute path from the root (`visual.conv1.weight`), which is
//! what the module's `state_dict()` calls them; non-tensor attributes (`training`...) are
//! skipped.

use crate::dtype::DType;
use crate::elements::{self, gather_strided, max_strided_index, swap_bytes_in_place};
use crate::npy::NdArray;
use crate::value::{Object, Value};
use crate::vm::{unpickle, unpickle_prefix};
use crate::PickleError;
use half::f16;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;

/// The raw bytes of one storage, shared by every tensor that views it.
#[derive(Debug)]
pub struct TorchStorage {
    /// The storage's key in the archive (`data/<key>`).
    pub key: String,
    pub dtype: DType,
    /// True when the archive was written on a big-endian machine.
    pub big_endian: bool,
    buffer: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl TorchStorage {
    /// The storage's bytes in the archive's byte order.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }

    /// Number of elements of `dtype` the storage holds.
    pub fn numel(&self) -> usize {
        self.len / self.dtype.size()
    }
}

/// Where a tensor's data lives, before its storage is read.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// In elements, as `tensor.stride()`.
    pub strides: Vec<usize>,
    /// In elements, as `tensor.storage_offset()`.
    pub storage_offset: usize,
    pub storage_key: String,
}

/// A tensor of a PyTorch archive: a strided view of a (possibly shared) storage.
#[derive(Clone, Debug)]
pub struct TorchTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// In elements.
    pub strides: Vec<usize>,
    /// In elements.
    pub storage_offset: usize,
    pub storage: Arc<TorchStorage>,
}

impl TorchTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are dense in C order (dimensions of size 1 may have any stride,
    /// as in `torch.Tensor.is_contiguous`).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }

    /// The elements in C order as little-endian bytes: borrowed from the storage when the
    /// tensor is contiguous and the archive little-endian, copied once otherwise.
    pub fn contiguous_le_bytes(&self) -> Cow<'_, [u8]> {
        let size = self.dtype.size();
        let numel = self.numel();
        if numel == 0 {
            return Cow::Borrowed(&[]);
        }
        let storage = self.storage.bytes();
        let mut out = if self.is_contiguous() {
            let start = self.storage_offset * size;
            Cow::Borrowed(&storage[start..start + numel * size])
        } else {
            Cow::Owned(gather_strided(
                storage,
                size,
                &self.shape,
                &self.strides,
                self.storage_offset,
            ))
        };
        if self.storage.big_endian && size > 1 {
            swap_bytes_in_place(out.to_mut(), size);
        }
        out
    }

    /// Every element as f32 (f16/bf16 exactly; f64 and big ints rounded).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        elements::le_to_f32(self.dtype, &self.contiguous_le_bytes())
    }

    /// Every element as f64 (exact except i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        elements::le_to_f64(self.dtype, &self.contiguous_le_bytes())
    }

    /// Every element as i64; an error for float dtypes.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, PickleError> {
        elements::le_to_i64(self.dtype, &self.contiguous_le_bytes())
    }

    /// The elements of an f16 tensor; an error for other dtypes.
    pub fn to_f16_vec(&self) -> Result<Vec<f16>, PickleError> {
        elements::le_to_f16(self.dtype, &self.contiguous_le_bytes())
    }

    /// A dense C-order little-endian copy.
    pub fn to_ndarray(&self) -> NdArray {
        NdArray {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: self.contiguous_le_bytes().into_owned(),
        }
    }
}

/// Reads every tensor of a PyTorch archive (zip `torch.save`, TorchScript, or legacy
/// `torch.save`), named as in `state_dict()`, in pickle order.
pub fn read_torch_archive(path: &Path) -> Result<Vec<(String, TorchTensor)>, PickleError> {
    TorchArchive::open(path)?.load_all()
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

enum Container {
    Zip {
        zip: zip::ZipArchive<Box<dyn ReadSeek>>,
        /// `<root>/` (the folder holding data.pkl), or empty.
        prefix: String,
        /// Length of the whole archive, the bound for any entry's claimed size.
        archive_len: u64,
    },
    Legacy {
        buffer: Arc<Vec<u8>>,
        /// Storage key -> (start, byte length) in `buffer`.
        records: HashMap<String, (usize, usize)>,
    },
}

/// What the pickle says about a storage.
#[derive(Clone, Copy, Debug)]
struct StorageDesc {
    dtype: DType,
    numel: usize,
}

/// An opened archive: the tensor table is parsed, storages are read on demand (each once).
pub struct TorchArchive {
    label: String,
    container: Container,
    big_endian: bool,
    tensors: Vec<(String, TensorInfo)>,
    storages: HashMap<String, StorageDesc>,
    loaded: HashMap<String, Arc<TorchStorage>>,
}

impl std::fmt::Debug for TorchArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchArchive")
            .field("file", &self.label)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl TorchArchive {
    /// Opens an archive file and parses its tensor table.
    pub fn open(path: &Path) -> Result<Self, PickleError> {
        let label = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|e| PickleError::io(&label, e))?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| PickleError::io(&label, e))?;
        if n >= 2 && magic[..2] == *b"PK" {
            file.rewind().map_err(|e| PickleError::io(&label, e))?;
            let reader: Box<dyn ReadSeek> = Box::new(std::io::BufReader::new(file));
            Self::open_zip(reader, label)
        } else {
            let mut bytes = magic[..n].to_vec();
            file.read_to_end(&mut bytes)
                .map_err(|e| PickleError::io(&label, e))?;
            Self::open_legacy(bytes, label)
        }
    }

    /// Parses an archive held in memory; `label` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Self, PickleError> {
        if bytes.starts_with(b"PK") {
            Self::open_zip(Box::new(std::io::Cursor::new(bytes)), label.to_string())
        } else {
            Self::open_legacy(bytes, label.to_string())
        }
    }

    /// The tensors' names and layouts, in pickle order, without reading any data.
    pub fn tensor_infos(&self) -> &[(String, TensorInfo)] {
        &self.tensors
    }

    /// Reads one tensor by name (its storage is read once and shared with later calls).
    pub fn load(&mut self, name: &str) -> Result<TorchTensor, PickleError> {
        let info = self
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, info)| info.clone())
            .ok_or_else(|| PickleError::format(&self.label, format!("no tensor named {name:?}")))?;
        self.tensor_from_info(&info)
    }

    /// Reads every tensor, in pickle order.
    pub fn load_all(mut self) -> Result<Vec<(String, TorchTensor)>, PickleError> {
        let tensors = std::mem::take(&mut self.tensors);
        tensors
            .into_iter()
            .map(|(name, info)| Ok((name, self.tensor_from_info(&info)?)))
            .collect()
    }

    fn tensor_from_info(&mut self, info: &TensorInfo) -> Result<TorchTensor, PickleError> {
        let storage = self.storage(&info.storage_key)?;
        Ok(TorchTensor {
            dtype: info.dtype,
            shape: info.shape.clone(),
            strides: info.strides.clone(),
            storage_offset: info.storage_offset,
            storage,
        })
    }

    fn storage(&mut self, key: &str) -> Result<Arc<TorchStorage>, PickleError> {
        if let Some(s) = self.loaded.get(key) {
            return Ok(s.clone());
        }
        let desc = self.storages[key];
        let nbytes = desc.numel * desc.dtype.size();
        let label = &self.label;
        let (buffer, start) = match &mut self.container {
            Container::Zip {
                zip,
                prefix,
                archive_len,
            } => {
                let name = format!("{prefix}data/{key}");
                let mut entry = zip.by_name(&name).map_err(|e| {
                    PickleError::format(label, format!("cannot read storage {name}: {e}"))
                })?;
                check_entry(&entry, &name, *archive_len, label)?;
                if entry.size() < nbytes as u64 {
                    return Err(PickleError::format(
                        label,
                        format!(
                            "storage {name} has {} bytes, its tensors need {nbytes}",
                            entry.size()
                        ),
                    ));
                }
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(|e| {
                    PickleError::format(
                        label,
                        format!("truncated zip archive: storage {name}: {e}"),
                    )
                })?;
                (Arc::new(bytes), 0)
            }
            Container::Legacy { buffer, records } => {
                let &(start, len) = records.get(key).ok_or_else(|| {
                    PickleError::format(label, format!("storage {key} is not in the file"))
                })?;
                if len < nbytes {
                    return Err(PickleError::format(
                        label,
                        format!("storage {key} has {len} bytes, its tensors need {nbytes}"),
                    ));
                }
                (buffer.clone(), start)
            }
        };
        let storage = Arc::new(TorchStorage {
            key: key.to_string(),
            dtype: desc.dtype,
            big_endian: self.big_endian,
            buffer,
            start,
            len: nbytes,
        });
        self.loaded.insert(key.to_string(), storage.clone());
        Ok(storage)
    }

    fn open_zip(mut reader: Box<dyn ReadSeek>, label: String) -> Result<Self, PickleError> {
        let archive_len = reader
            .seek(std::io::SeekFrom::End(0))
            .and_then(|len| reader.rewind().map(|_| len))
            .map_err(|e| PickleError::io(&label, e))?;
        let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
            PickleError::format(&label, format!("truncated or corrupt zip archive: {e}"))
        })?;
        // The root folder is named after the file when it was saved (`ViT-B-16/`, `archive/`).
        let pkl_name = zip
            .file_names()
            .filter_map(Result::ok)
            .filter(|n| n.as_ref() == "data.pkl" || n.ends_with("/data.pkl"))
            .min_by_key(|n| n.matches('/').count())
            .map(|n| n.into_owned())
            .ok_or_else(|| PickleError::format(&label, "zip archive without data.pkl"))?;
        let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();
        let pkl = read_entry(&mut zip, &pkl_name, archive_len, &label)?;
        let big_endian = match zip.index_for_name(&format!("{prefix}byteorder")) {
            Some(_) => {
                let name = format!("{prefix}byteorder");
                let order = read_entry(&mut zip, &name, archive_len, &label)?;
                match order.trim_ascii() {
                    b"little" => false,
                    b"big" => true,
                    other => {
                        return Err(PickleError::format(
                            &label,
                            format!("unknown byteorder {:?}", String::from_utf8_lossy(other)),
                        ))
                    }
                }
            }
            // Archives from before the record existed were written little-endian.
            None => false,
        };
        let source = format!("{label}:{pkl_name}");
        let root = unpickle(&pkl, &source)?;
        let (tensors, storages) = tensor_table(&root, &source)?;
        Ok(TorchArchive {
            label,
            container: Container::Zip {
                zip,
                prefix,
                archive_len,
            },
            big_endian,
            tensors,
            storages,
            loaded: HashMap::new(),
        })
    }

    fn open_legacy(bytes: Vec<u8>, label: String) -> Result<Self, PickleError> {
        if bytes.first() != Some(&0x80) {
            return Err(PickleError::format(
                &label,
                "not a PyTorch archive (neither a zip archive nor a legacy torch.save stream)",
            ));
        }
        let mut pos = 0usize;
        let mut next = |what: &str| -> Result<Value, PickleError> {
            let (value, used) = unpickle_prefix(&bytes[pos..], &format!("{label} ({what})"), pos)?;
            pos += used;
            Ok(value)
        };
        // torch/serialization.py MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
        const MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
        if next("magic number")? != Value::BigInt(MAGIC_LE.to_vec()) {
            return Err(PickleError::format(
                &label,
                "not a PyTorch archive (bad magic number)",
            ));
        }
        let version = next("protocol version")?;
        if version != Value::Int(1001) {
            return Err(PickleError::format(
                &label,
                format!("legacy torch.save protocol {version:?} not supported"),
            ));
        }
        let sys_info = next("sys info")?;
        let big_endian = sys_info.dict_get("little_endian").and_then(Value::as_bool) == Some(false);
        let root = next("object")?;
        let keys = next("storage keys")?;
        let source = format!("{label} (object)");
        let (tensors, storages) = tensor_table(&root, &source)?;
        let keys = keys
            .as_seq()
            .ok_or_else(|| PickleError::format(&label, "storage key list is not a list"))?;
        let mut records = HashMap::new();
        for key in keys {
            let key = storage_key(key)
                .ok_or_else(|| PickleError::format(&label, format!("bad storage key {key:?}")))?;
            let desc = storages.get(&key).ok_or_else(|| {
                PickleError::format(&label, format!("storage {key} is not used by the pickle"))
            })?;
            let header = bytes.get(pos..pos + 8).ok_or_else(|| {
                PickleError::format(&label, format!("truncated file at storage {key}"))
            })?;
            let header: [u8; 8] = header.try_into().expect("8 bytes");
            let numel = if big_endian {
                u64::from_be_bytes(header)
            } else {
                u64::from_le_bytes(header)
            };
            let len = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(desc.dtype.size()))
                .filter(|&len| len <= bytes.len() - pos - 8)
                .ok_or_else(|| {
                    PickleError::format(&label, format!("truncated file at storage {key}"))
                })?;
            records.insert(key, (pos + 8, len));
            pos += 8 + len;
        }
        Ok(TorchArchive {
            label,
            container: Container::Legacy {
                buffer: Arc::new(bytes),
                records,
            },
            big_endian,
            tensors,
            storages,
            loaded: HashMap::new(),
        })
    }
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// PyTorch writes every entry uncompressed; a size beyond the archive's is corruption (and
/// must not become an allocation).
fn check_entry<R: Read>(
    entry: &zip::read::ZipFile<'_, R>,
    name: &str,
    archive_len: u64,
    label: &str,
) -> Result<(), PickleError> {
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(PickleError::format(
            label,
            format!(
                "{name} is compressed ({}); PyTorch archives store entries uncompressed",
                entry.compression()
            ),
        ));
    }
    if entry.size() > archive_len {
        return Err(PickleError::format(
            label,
            format!(
                "truncated or corrupt zip archive: {name} claims {} bytes",
                entry.size()
            ),
        ));
    }
    Ok(())
}

fn read_entry(
    zip: &mut zip::ZipArchive<Box<dyn ReadSeek>>,
    name: &str,
    archive_len: u64,
    label: &str,
) -> Result<Vec<u8>, PickleError> {
    let mut entry = zip
        .by_name(name)
        .map_err(|e| PickleError::format(label, format!("cannot read {name}: {e}")))?;
    check_entry(&entry, name, archive_len, label)?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| PickleError::format(label, format!("truncated zip archive: {name}: {e}")))?;
    Ok(bytes)
}

fn storage_key(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

type TensorTable = (Vec<(String, TensorInfo)>, HashMap<String, StorageDesc>);

/// Finds every tensor in the unpickled object with its dotted name.
fn tensor_table(root: &Value, source: &str) -> Result<TensorTable, PickleError> {
    let mut walker = Walker {
        source,
        tensors: Vec::new(),
        storages: HashMap::new(),
    };
    walker.walk(root, "", 0)?;
    Ok((walker.tensors, walker.storages))
}

struct Walker<'a> {
    source: &'a str,
    tensors: Vec<(String, TensorInfo)>,
    storages: HashMap<String, StorageDesc>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Walker<'_> {
    fn error(&self, name: &str, msg: impl std::fmt::Display) -> PickleError {
        let what = if name.is_empty() { "root object" } else { name };
        PickleError::format(self.source, format!("{what}: {msg}"))
    }

    /// Dicts (state dicts, checkpoints) and module objects (TorchScript `__torch__.*`, or a
    /// pickled `nn.Module` whose `_parameters` / `_buffers` / `_modules` do not add to the
    /// name) are walked; tensors are recorded; everything else is skipped.
    fn walk(&mut self, value: &Value, prefix: &str, depth: usize) -> Result<(), PickleError> {
        if depth > 200 {
            return Err(self.error(prefix, "objects nested too deeply"));
        }
        if let Some(info) = self.tensor(value, prefix)? {
            self.tensors.push((prefix.to_string(), info));
            return Ok(());
        }
        let pairs: &[(Value, Value)] = match value {
            Value::Dict(pairs) => pairs,
            Value::Object(obj) => match &obj.state {
                Some(Value::Dict(pairs)) => pairs,
                // `__setstate__` tuples of (dict, slots) from copyreg.
                Some(Value::Tuple(parts)) if matches!(parts.first(), Some(Value::Dict(_))) => {
                    match &parts[0] {
                        Value::Dict(pairs) => pairs,
                        _ => unreachable!("matched above"),
                    }
                }
                _ => &obj.dict_items,
            },
            _ => return Ok(()),
        };
        let is_module_state = matches!(value, Value::Object(_));
        for (key, item) in pairs {
            let Some(key) = key_text(key) else { continue };
            let name = if is_module_state
                && matches!(key.as_str(), "_parameters" | "_buffers" | "_modules")
            {
                prefix.to_string()
            } else {
                join(prefix, &key)
            };
            self.walk(item, &name, depth + 1)?;
        }
        Ok(())
    }

    /// A tensor built by `torch._utils._rebuild_*`, or None when `value` is not one.
    fn tensor(&mut self, value: &Value, name: &str) -> Result<Option<TensorInfo>, PickleError> {
        let Some(obj) = value.as_object() else {
            return Ok(None);
        };
        let Some(("torch._utils", func)) = obj.callable_global() else {
            return Ok(None);
        };
        let args = obj.args_seq();
        match func {
            "_rebuild_tensor" | "_rebuild_tensor_v2" => {
                if args.len() < 4 {
                    return Err(self.error(name, format!("{func} with {} arguments", args.len())));
                }
                self.strided(&args[0], &args[1], &args[2], &args[3], None, name)
                    .map(Some)
            }
            "_rebuild_tensor_v3" => {
                if args.len() < 7 {
                    return Err(self.error(name, format!("{func} with {} arguments", args.len())));
                }
                let dtype = args[6]
                    .as_global()
                    .and_then(|(m, n)| (m == "torch").then_some(n))
                    .and_then(DType::from_torch_dtype)
                    .ok_or_else(|| {
                        self.error(name, format!("dtype {:?} not supported", args[6]))
                    })?;
                self.strided(&args[0], &args[1], &args[2], &args[3], Some(dtype), name)
                    .map(Some)
            }
            "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
                let Some(data) = args.first() else {
                    return Err(self.error(name, format!("{func} without data")));
                };
                match self.tensor(data, name)? {
                    Some(info) => Ok(Some(info)),
                    None => Err(self.error(name, "parameter data is not a tensor")),
                }
            }
            f if f.starts_with("_rebuild_") => {
                Err(self.error(name, format!("tensor kind torch._utils.{f} not supported")))
            }
            _ => Ok(None),
        }
    }

    fn strided(
        &mut self,
        storage: &Value,
        offset: &Value,
        size: &Value,
        stride: &Value,
        tensor_dtype: Option<DType>,
        name: &str,
    ) -> Result<TensorInfo, PickleError> {
        let dims = |v: &Value, what: &str| -> Result<Vec<usize>, PickleError> {
            v.as_seq()
                .ok_or_else(|| self.error(name, format!("{what} is a {}", v.kind())))?
                .iter()
                .map(|d| {
                    d.as_i64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| self.error(name, format!("bad {what} entry {d:?}")))
                })
                .collect()
        };
        let shape = dims(size, "size")?;
        let strides = dims(stride, "stride")?;
        if shape.len() != strides.len() {
            return Err(self.error(name, "size and stride lengths differ"));
        }
        let mut storage_offset = offset
            .as_i64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(name, format!("bad storage offset {offset:?}")))?;

        let Value::PersistentId(pid) = storage else {
            return Err(self.error(
                name,
                format!("storage is a {}, not a persistent id", storage.kind()),
            ));
        };
        let parts = pid.as_seq().unwrap_or(&[]);
        if parts.len() < 5 || parts[0].as_str() != Some("storage") {
            return Err(self.error(name, format!("unexpected storage id {pid:?}")));
        }
        let (module, type_name) = parts[1]
            .as_global()
            .ok_or_else(|| self.error(name, format!("storage type {:?}", parts[1])))?;
        if !module.starts_with("torch") {
            return Err(self.error(name, format!("storage type {module}.{type_name}")));
        }
        let key = storage_key(&parts[2])
            .ok_or_else(|| self.error(name, format!("bad storage key {:?}", parts[2])))?;
        let mut numel = parts[4]
            .as_i64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(name, format!("bad storage size {:?}", parts[4])))?;
        let dtype = match (DType::from_torch_storage(type_name), tensor_dtype) {
            (Some(d), None) => d,
            (Some(d), Some(t)) if d == t => d,
            (_, Some(t)) if type_name == "UntypedStorage" => {
                // An untyped storage counts bytes.
                numel /= t.size();
                t
            }
            _ => {
                return Err(self.error(
                    name,
                    format!("storage type {module}.{type_name} not supported"),
                ))
            }
        };
        // Legacy view metadata: (view key, offset into the root storage, view size).
        if let Some(view) = parts.get(5).and_then(Value::as_seq) {
            let view_offset = view
                .get(1)
                .and_then(Value::as_i64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.error(name, "bad storage view offset"))?;
            storage_offset = storage_offset
                .checked_add(view_offset)
                .ok_or_else(|| self.error(name, "bad storage view offset"))?;
        }

        match self.storages.get(&key) {
            Some(desc) if desc.dtype != dtype => {
                return Err(self.error(
                    name,
                    format!("storage {key} viewed as both {} and {dtype}", desc.dtype),
                ))
            }
            Some(desc) => numel = numel.max(desc.numel),
            None => {}
        }
        if numel.checked_mul(dtype.size()).is_none() {
            return Err(self.error(name, "storage too large"));
        }
        match max_strided_index(&shape, &strides, storage_offset) {
            Some(None) => {}
            Some(Some(max)) if max < numel => {}
            _ => {
                return Err(self.error(
                    name,
                    format!(
                        "shape {shape:?} with strides {strides:?} at offset {storage_offset} \
                         exceeds its storage of {numel} elements"
                    ),
                ))
            }
        }
        self.storages
            .insert(key.clone(), StorageDesc { dtype, numel });
        Ok(TensorInfo {
            dtype,
            shape,
            strides,
            storage_offset,
            storage_key: key,
        })
    }
}

/// `torch._utils` object helper for readers that walk the [`Value`] tree themselves: true for
/// the tensor constructors the archive reader understands.
pub fn is_tensor_object(obj: &Object) -> bool {
    matches!(
        obj.callable_global(),
        Some((
            "torch._utils",
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ))
    )
}
