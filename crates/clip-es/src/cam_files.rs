//! CAM files: the per-image output of the CAM stage (reference: `generate_cams_voc12.py` /
//! `generate_cams_coco14.py`, which `np.save` a dict `{"keys", "attn_highres"}`), read by the
//! mask and evaluation stages (`eval_cam.py`, `eval_cam_with_crf.py`; docs/algorithm.md, "Pseudo masks" and "Evaluation").
//!
//! clip-es writes `<id>.npz`, a numpy zip archive readable with plain `np.load` (no pickle):
//!
//! ```python
//! import numpy as np
//! with np.load("cams/2007_000032.npz") as z:
//!     keys = z["keys"]              # int64 (K,): class indices (0-based, background excluded)
//!     cams = z["attn_highres"]      # float16 (K, H, W): refined CAMs at image resolution
//!     highres = z["highres"] if "highres" in z else None   # optional, float16 (K, H, W)
//! ```
//!
//! It also reads the reference's `<id>.npy` (a pickled dict, through `clip-es-pickle`), so CAMs
//! made by the Python reference can go through the clip-es CRF and evaluator unchanged.

use crate::classes::MAX_CLASS_KEY;
use clip_es_pickle::{DType, NdArray};
use half::f16;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The CAMs of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct CamFile {
    /// Class index (0-based, without background) of each CAM, in the image's label order.
    pub keys: Vec<i64>,
    pub height: usize,
    pub width: usize,
    /// Refined CAMs, `keys.len()` x `height` x `width`, C order.
    pub attn_highres: Vec<f16>,
    /// Unrefined CAMs, same shape, when saved.
    pub highres: Option<Vec<f16>>,
}

/// A CAM file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CamIoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl CamIoError {
    fn format(path: &Path, message: impl Into<String>) -> Self {
        CamIoError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
    fn io(path: &Path, source: std::io::Error) -> Self {
        CamIoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Which CAM array of a file to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CamKind {
    /// `attn_highres`: after class-aware attention affinity (the reference's default).
    #[default]
    AttnHighres,
    /// `highres`: before refinement.
    Highres,
}

impl CamKind {
    pub fn name(self) -> &'static str {
        match self {
            CamKind::AttnHighres => "attn_highres",
            CamKind::Highres => "highres",
        }
    }
}

impl CamFile {
    /// Number of CAMs (labels of the image).
    pub fn num_cams(&self) -> usize {
        self.keys.len()
    }

    /// The requested CAM array, or None when the file lacks it.
    pub fn cams(&self, kind: CamKind) -> Option<&[f16]> {
        match kind {
            CamKind::AttnHighres => Some(&self.attn_highres),
            CamKind::Highres => self.highres.as_deref(),
        }
    }

    /// Checks that the arrays have the shapes the header fields promise.
    pub fn check_shapes(&self) -> Result<(), String> {
        let k = self.keys.len();
        let want = k * self.height * self.width;
        if self.attn_highres.len() != want {
            return Err(format!(
                "attn_highres holds {} values, expected {k} x {} x {}",
                self.attn_highres.len(),
                self.height,
                self.width
            ));
        }
        if let Some(h) = &self.highres {
            if h.len() != want {
                return Err(format!(
                    "highres holds {} values, expected {k} x {} x {}",
                    h.len(),
                    self.height,
                    self.width
                ));
            }
        }
        Ok(())
    }

    /// Checks the file before its CAMs are used and returns the CAM array of `kind`: shapes as
    /// promised, at least one CAM, every key a class id in `0..=MAX_CLASS_KEY` (and below
    /// `n_classes` foreground classes when given), every value finite. The message names the
    /// problem (the caller adds the path).
    pub fn validate(&self, kind: CamKind, n_classes: Option<usize>) -> Result<&[f16], String> {
        self.check_shapes()?;
        if self.keys.is_empty() {
            return Err("no CAMs (the image has no labels)".into());
        }
        if let Some(k) = self
            .keys
            .iter()
            .find(|&&k| !(0..=MAX_CLASS_KEY).contains(&k))
        {
            return Err(format!("class key {k} outside 0..={MAX_CLASS_KEY}"));
        }
        if let Some(n) = n_classes {
            if let Some(k) = self.keys.iter().find(|&&k| k >= n as i64) {
                return Err(format!(
                    "class key {k} does not fit {} classes (with background)",
                    n + 1
                ));
            }
        }
        let cams = self
            .cams(kind)
            .ok_or_else(|| format!("no `{}` array", kind.name()))?;
        if let Some(i) = cams.iter().position(|v| !v.is_finite()) {
            let n = (self.width * self.height).max(1);
            let w = self.width.max(1);
            return Err(format!(
                "{} of CAM {} at pixel ({}, {}) is {}",
                kind.name(),
                i / n,
                i % n % w,
                i % n / w,
                cams[i]
            ));
        }
        Ok(cams)
    }

    /// Writes `path` as an uncompressed `.npz` (like `np.savez`), atomically.
    pub fn write_npz(&self, path: &Path) -> Result<(), CamIoError> {
        self.check_shapes()
            .map_err(|m| CamIoError::format(path, m))?;
        let k = self.keys.len();
        let mut arrays = vec![
            (
                "keys",
                NdArray {
                    dtype: DType::I64,
                    shape: vec![k],
                    data: self.keys.iter().flat_map(|v| v.to_le_bytes()).collect(),
                },
            ),
            (
                "attn_highres",
                f16_array(&self.attn_highres, k, self.height, self.width),
            ),
        ];
        if let Some(h) = &self.highres {
            arrays.push(("highres", f16_array(h, k, self.height, self.width)));
        }
        let mut members = Vec::new();
        for (name, a) in &arrays {
            let bytes = clip_es_pickle::encode_npy(a)
                .map_err(|e| CamIoError::format(path, e.to_string()))?;
            members.push((format!("{name}.npy"), bytes));
        }
        // The archive is assembled in memory, where writing cannot fail, and finished
        // explicitly; only then is it written out, so an I/O error (a full disk) is reported
        // once, by us, and no half-finalised `ZipWriter` is ever dropped.
        let zip_err = |e: zip::result::ZipError| CamIoError::format(path, format!("zip: {e}"));
        let total: usize = members.iter().map(|(_, b)| b.len() + 128).sum();
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(total + 256)));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(members.iter().any(|(_, b)| b.len() >= u32::MAX as usize));
        for (name, bytes) in &members {
            zip.start_file(name.as_str(), options).map_err(zip_err)?;
            zip.write_all(bytes).map_err(|e| CamIoError::io(path, e))?;
        }
        let bytes = zip.finish().map_err(zip_err)?.into_inner();
        crate::atomic::write_bytes_atomic(path, &bytes).map_err(|e| CamIoError::io(path, e))
    }

    /// Reads a `.npz` written by `write_npz` (or `np.savez` / `np.savez_compressed` with the
    /// same arrays) or a reference `.npy` dict, chosen by the file's extension. A corrupt or
    /// hostile file may still make this allocate up to about 1000 times its size (a deflate
    /// stream's largest ratio): the stages use [`CamFile::read_for_image`].
    pub fn read(path: &Path) -> Result<CamFile, CamIoError> {
        Self::read_bounded(path, None)
    }

    /// Reads the CAM file of an image of `height x width` pixels: nothing beyond what CAMs of
    /// that size can take is inflated or allocated (at most [`MAX_CAMS`] maps of 8-byte values
    /// each, keys first), so a small compressed file cannot claim gigabytes. The sizes of the
    /// arrays are checked against the image afterwards by the stages.
    pub fn read_for_image(path: &Path, height: usize, width: usize) -> Result<CamFile, CamIoError> {
        Self::read_bounded(path, Some((height, width)))
    }

    fn read_bounded(path: &Path, image: Option<(usize, usize)>) -> Result<CamFile, CamIoError> {
        let arrays = match path.extension().and_then(|e| e.to_str()) {
            Some("npz") => read_npz_arrays(path, image)?,
            Some("npy") => {
                if let Some((h, w)) = image {
                    let len = std::fs::metadata(path)
                        .map_err(|e| CamIoError::io(path, e))?
                        .len();
                    let most = member_limit(MAX_CAMS, h, w).saturating_mul(2);
                    if len > most {
                        return Err(CamIoError::format(
                            path,
                            format!(
                                "{len} bytes is more than CAMs of a {w}x{h} image can take ({most})"
                            ),
                        ));
                    }
                }
                clip_es_pickle::read_npy_dict(path)
                    .map_err(|e| CamIoError::format(path, strip_path(&e.to_string(), path)))?
            }
            _ => {
                return Err(CamIoError::format(
                    path,
                    "CAM files must end in .npz or .npy",
                ))
            }
        };
        from_arrays(path, arrays)
    }

    /// The CAM file of `id` in `dir`: `<id>.npz`, else the reference's `<id>.npy`.
    pub fn locate(dir: &Path, id: &str) -> Result<PathBuf, CamIoError> {
        let npz = dir.join(format!("{id}.npz"));
        if npz.is_file() {
            return Ok(npz);
        }
        let npy = dir.join(format!("{id}.npy"));
        if npy.is_file() {
            return Ok(npy);
        }
        Err(CamIoError::format(
            &npz,
            "no CAM file (neither .npz nor .npy)",
        ))
    }
}

fn f16_array(v: &[f16], k: usize, h: usize, w: usize) -> NdArray {
    NdArray {
        dtype: DType::F16,
        shape: vec![k, h, w],
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Pickle errors already start with the file name; avoid repeating it.
fn strip_path(message: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

/// Most CAMs one file may hold: one per class, and class ids end below 255 (the mask value
/// of unconfident pixels).
pub const MAX_CAMS: usize = 255;

/// Room for a `.npy` header.
const NPY_HEADER: u64 = 4096;

/// The most bytes a `.npy` member of `k` CAMs of `h x w` may take (float64 values, the widest
/// accepted).
fn member_limit(k: usize, h: usize, w: usize) -> u64 {
    NPY_HEADER.saturating_add(
        (k as u64)
            .saturating_mul(h as u64 * w as u64)
            .saturating_mul(8),
    )
}

/// Inflates one member, never more than `limit` bytes whatever its header claims.
fn read_member(
    path: &Path,
    zip: &mut zip::ZipArchive<std::io::BufReader<std::fs::File>>,
    index: usize,
    name: &str,
    limit: u64,
) -> Result<NdArray, CamIoError> {
    let entry = zip
        .by_index(index)
        .map_err(|e| CamIoError::format(path, e.to_string()))?;
    if entry.size() > limit {
        return Err(CamIoError::format(
            path,
            format!(
                "member {name}.npy claims {} bytes, more than the {limit} it may take",
                entry.size()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CamIoError::format(path, format!("member {name}.npy: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(CamIoError::format(
            path,
            format!("member {name}.npy inflates beyond the {limit} bytes it may take"),
        ));
    }
    let label = format!("{}:{name}.npy", path.display());
    match clip_es_pickle::parse_npy(&bytes, &label)
        .map_err(|e| CamIoError::format(path, e.to_string()))?
    {
        clip_es_pickle::NpyContent::Array(a) => Ok(a),
        clip_es_pickle::NpyContent::Object { .. } => Err(CamIoError::format(
            path,
            format!("member {name}.npy is an object array"),
        )),
    }
}

/// The `.npy` members of a `.npz`, keys first. With the image size, each member is bounded by
/// what CAMs of that size can take; without it, by 1100 times the file size.
fn read_npz_arrays(
    path: &Path,
    image: Option<(usize, usize)>,
) -> Result<Vec<(String, NdArray)>, CamIoError> {
    let file = std::fs::File::open(path).map_err(|e| CamIoError::io(path, e))?;
    let len = file.metadata().map_err(|e| CamIoError::io(path, e))?.len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| CamIoError::format(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let mut members = Vec::new();
    for i in 0..zip.len() {
        let name = zip
            .name_for_index(i)
            .ok_or_else(|| CamIoError::format(path, format!("zip entry {i} has no name")))?
            .map_err(|e| CamIoError::format(path, e.to_string()))?;
        if let Some(n) = name.strip_suffix(".npy") {
            members.push((i, n.to_string()));
        }
    }
    // Keys first: their count bounds the maps.
    members.sort_by_key(|(_, n)| n != "keys");
    let mut arrays: Vec<(String, NdArray)> = Vec::new();
    for (i, name) in members {
        let limit = match image {
            None => len.saturating_mul(1100).max(1 << 20),
            Some(_) if name == "keys" => member_limit(MAX_CAMS, 1, 1),
            Some((h, w)) => {
                let Some((_, keys)) = arrays.iter().find(|(n, _)| n == "keys") else {
                    return Err(CamIoError::format(path, "no `keys` array"));
                };
                if !matches!(name.as_str(), "attn_highres" | "highres") {
                    continue; // not ours: never inflated
                }
                member_limit(keys.shape.iter().product::<usize>().min(MAX_CAMS), h, w)
            }
        };
        let a = read_member(path, &mut zip, i, &name, limit)?;
        arrays.push((name, a));
    }
    Ok(arrays)
}

fn from_arrays(path: &Path, arrays: Vec<(String, NdArray)>) -> Result<CamFile, CamIoError> {
    let get = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a);
    let keys = get("keys").ok_or_else(|| CamIoError::format(path, "no `keys` array"))?;
    if keys.dtype.is_float() || keys.shape.len() != 1 {
        return Err(CamIoError::format(
            path,
            format!(
                "`keys` must be a 1-d integer array, got {} {:?}",
                keys.dtype, keys.shape
            ),
        ));
    }
    let keys = keys
        .to_i64_vec()
        .map_err(|e| CamIoError::format(path, e.to_string()))?;
    let cams = |name: &str| -> Result<Option<(Vec<f16>, usize, usize)>, CamIoError> {
        let Some(a) = get(name) else { return Ok(None) };
        if a.shape.len() != 3 || a.shape[0] != keys.len() {
            return Err(CamIoError::format(
                path,
                format!(
                    "`{name}` has shape {:?}, expected ({}, H, W) for {} keys",
                    a.shape,
                    keys.len(),
                    keys.len()
                ),
            ));
        }
        let v = match a.dtype {
            DType::F16 => a
                .to_f16_vec()
                .map_err(|e| CamIoError::format(path, e.to_string()))?,
            // Other float CAMs are accepted and rounded to float16, the stored precision of
            // the reference.
            DType::F32 | DType::F64 | DType::BF16 => {
                a.to_f32_vec().into_iter().map(f16::from_f32).collect()
            }
            other => {
                return Err(CamIoError::format(
                    path,
                    format!("`{name}` has dtype {other}, expected float16"),
                ))
            }
        };
        Ok(Some((v, a.shape[1], a.shape[2])))
    };
    let (attn_highres, height, width) =
        cams("attn_highres")?.ok_or_else(|| CamIoError::format(path, "no `attn_highres` array"))?;
    let highres = match cams("highres")? {
        Some((v, h, w)) if (h, w) == (height, width) => Some(v),
        Some((_, h, w)) => {
            return Err(CamIoError::format(
                path,
                format!("`highres` is {h}x{w} but `attn_highres` {height}x{width}"),
            ))
        }
        None => None,
    };
    Ok(CamFile {
        keys,
        height,
        width,
        attn_highres,
        highres,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CamFile {
        let (k, h, w) = (2, 3, 4);
        CamFile {
            keys: vec![7, 14],
            height: h,
            width: w,
            attn_highres: (0..k * h * w)
                .map(|i| f16::from_f32(i as f32 / 24.0))
                .collect(),
            highres: Some(
                (0..k * h * w)
                    .map(|i| f16::from_f32(1.0 - i as f32 / 24.0))
                    .collect(),
            ),
        }
    }

    #[test]
    fn npz_round_trip() {
        let dir = std::env::temp_dir().join(format!("clip-es-camio-{}", std::process::id()));
        let path = dir.join("a.npz");
        let cam = sample();
        cam.write_npz(&path).unwrap();
        assert_eq!(CamFile::read(&path).unwrap(), cam);
        let mut no_highres = cam.clone();
        no_highres.highres = None;
        no_highres.write_npz(&path).unwrap();
        assert_eq!(CamFile::read(&path).unwrap(), no_highres);
        assert_eq!(CamFile::locate(&dir, "a").unwrap(), path);
        assert!(CamFile::locate(&dir, "b").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_shapes_and_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("clip-es-camio-bad-{}", std::process::id()));
        let mut cam = sample();
        cam.attn_highres.pop();
        assert!(cam.write_npz(&dir.join("x.npz")).is_err());
        assert!(!dir.join("x.npz").exists());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("y.npz"), b"not a zip").unwrap();
        let e = CamFile::read(&dir.join("y.npz")).unwrap_err().to_string();
        assert!(e.contains("y.npz") && e.contains("zip"), "{e}");
        std::fs::write(dir.join("z.txt"), b"").unwrap();
        assert!(CamFile::read(&dir.join("z.txt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wrong_dimensions_and_dtypes_are_errors() {
        let dir = std::env::temp_dir().join(format!("clip-es-camio-dims-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = NdArray {
            dtype: DType::I64,
            shape: vec![2],
            data: [3i64, 4].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let write = |name: &str, cams: NdArray| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).unwrap();
            let mut zip = zip::ZipWriter::new(file);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for (n, a) in [("keys.npy", &keys), ("attn_highres.npy", &cams)] {
                zip.start_file(n, opts).unwrap();
                zip.write_all(&clip_es_pickle::encode_npy(a).unwrap())
                    .unwrap();
            }
            zip.finish().unwrap();
            CamFile::read(&path).unwrap_err().to_string()
        };
        // A 2-d array (one channel missing).
        let e = write(
            "a.npz",
            NdArray {
                dtype: DType::F16,
                shape: vec![2, 6],
                data: vec![0; 24],
            },
        );
        assert!(
            e.contains("a.npz") && e.contains("[2, 6]") && e.contains("(2, H, W)"),
            "{e}"
        );
        // One CAM for two keys.
        let e = write(
            "b.npz",
            NdArray {
                dtype: DType::F16,
                shape: vec![1, 2, 3],
                data: vec![0; 12],
            },
        );
        assert!(e.contains("[1, 2, 3]"), "{e}");
        // Integer CAMs.
        let e = write(
            "c.npz",
            NdArray {
                dtype: DType::U8,
                shape: vec![2, 2, 3],
                data: vec![0; 12],
            },
        );
        assert!(e.contains("dtype"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_a_reference_npy_dict() {
        let cam = sample();
        let arrays = vec![
            (
                "keys".to_string(),
                NdArray {
                    dtype: DType::I64,
                    shape: vec![2],
                    data: cam.keys.iter().flat_map(|v| v.to_le_bytes()).collect(),
                },
            ),
            (
                "attn_highres".to_string(),
                f16_array(&cam.attn_highres, 2, 3, 4),
            ),
        ];
        let bytes = clip_es_pickle::encode_npy_dict(&arrays).unwrap();
        let dir = std::env::temp_dir().join(format!("clip-es-camio-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.npy");
        std::fs::write(&path, bytes).unwrap();
        let got = CamFile::read(&path).unwrap();
        assert_eq!(got.keys, cam.keys);
        assert_eq!(got.attn_highres, cam.attn_highres);
        assert_eq!(got.highres, None);
        assert_eq!(CamFile::locate(&dir, "r").unwrap(), path);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
