//! The stage manifest: a small JSON file, `clip-es-<stage>.json` ([`Manifest::path`]), that each stage (cams, masks,
//! train, predict; `run` calls them into sub-folders) keeps in its output folder, recording the
//! stage, the clip-es version and every setting that changes its outputs (the model or
//! checkpoint by a fingerprint of its bytes). Runs skip the outputs that exist, so a rerun with
//! other settings would otherwise mix, or silently keep, results made with the old ones: with
//! the manifest, a rerun whose settings match resumes, a mismatch is refused before any work,
//! naming each differing setting, and `--overwrite` starts afresh and replaces the record.
//!
//! Settings that do not change the outputs (threads, progress, memory limits) are not recorded,
//! and neither is the version: an upgrade does not make a finished folder unusable.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a stage's output folder: one per stage, so that stages may
/// share a folder (`cams` and `masks` writing `.npz` and `.png` files side by side).
pub fn file_name(stage: &str) -> String {
    format!("clip-es-{stage}.json")
}

/// What made a folder of outputs: the stage and its settings as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub stage: String,
    /// The clip-es version that wrote the record (informative, not compared).
    pub version: String,
    pub settings: BTreeMap<String, String>,
}

impl Manifest {
    pub fn new(stage: &str) -> Self {
        Manifest {
            stage: stage.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            settings: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) one setting.
    pub fn set(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.settings.insert(key.to_string(), value.to_string());
        self
    }

    /// Where this stage's manifest lives in `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(file_name(&self.stage))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stage": self.stage,
            "clip_es_version": self.version,
            "settings": self.settings,
        })
    }

    /// The manifest of `stage` in `dir`, if it has one; an unreadable one is an error naming
    /// the file.
    pub fn read(dir: &Path, stage: &str) -> Result<Option<Manifest>, String> {
        let path = dir.join(file_name(stage));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = || {
            format!(
                "{}: not a clip-es stage record (delete it, or use --overwrite to recompute the folder)",
                path.display()
            )
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
        let stage = v["stage"].as_str().ok_or_else(bad)?.to_string();
        let version = v["clip_es_version"].as_str().unwrap_or("").to_string();
        let settings = v["settings"]
            .as_object()
            .ok_or_else(bad)?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(bad)?;
        Ok(Some(Manifest {
            stage,
            version,
            settings,
        }))
    }

    /// Writes the manifest into `dir` atomically (a temporary file renamed into place).
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = self.path(dir);
        let text = serde_json::to_string_pretty(&self.to_json()).expect("JSON of strings") + "\n";
        crate::atomic::write_bytes_atomic(&path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The settings that differ from `old`'s, as `name: old -> new` (a setting one side lacks
    /// shows as `(none)`), leaving out the keys in `ignore`.
    pub fn differences(&self, old: &Manifest, ignore: &[&str]) -> Vec<String> {
        let mut keys: Vec<&String> = self.settings.keys().chain(old.settings.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| !ignore.contains(&k.as_str()))
            .filter_map(|k| {
                let (o, n) = (old.settings.get(k), self.settings.get(k));
                (o != n).then(|| {
                    format!(
                        "{k}: {} -> {}",
                        o.map_or("(none)", |s| s),
                        n.map_or("(none)", |s| s)
                    )
                })
            })
            .collect()
    }

    /// Whether this stage may write into `dir`, whose current outputs are described by its
    /// manifest: yes with `overwrite`, into a folder without outputs, or when the recorded
    /// settings equal these (keys in `ignore` aside); otherwise an error naming the folder and
    /// every differing setting. `has_outputs` says whether `dir` holds outputs of this stage;
    /// such outputs without a manifest (an older clip-es, or files put there by hand) are
    /// refused too, since nothing says what made them. Writes nothing.
    pub fn check(
        &self,
        dir: &Path,
        overwrite: bool,
        has_outputs: bool,
        ignore: &[&str],
    ) -> Result<(), String> {
        if overwrite {
            return Ok(());
        }
        let how = "use --overwrite to recompute them, or another --out";
        match Self::read(dir, &self.stage)? {
            None if has_outputs => Err(format!(
                "{} holds {} outputs without a record of the settings that made them ({}): {how}",
                dir.display(),
                self.stage,
                file_name(&self.stage)
            )),
            None => Ok(()),
            Some(old) => {
                let diff = self.differences(&old, ignore);
                if diff.is_empty() || !has_outputs {
                    Ok(())
                } else {
                    Err(format!(
                        "{} holds {} outputs made with other settings ({}); {how}",
                        dir.display(),
                        self.stage,
                        diff.join(", ")
                    ))
                }
            }
        }
    }

    /// [`Manifest::check`], then records these settings in `dir` (unless the record already
    /// says the same), before the stage does any work.
    pub fn claim(&self, dir: &Path, overwrite: bool, has_outputs: bool) -> Result<(), String> {
        self.check(dir, overwrite, has_outputs, &[])?;
        match Self::read(dir, &self.stage) {
            Ok(Some(old)) if old.settings == self.settings => Ok(()),
            _ => self.write(dir),
        }
    }
}

/// Whether `dir` directly holds a file whose extension is one of `extensions`.
pub fn holds_files(dir: &Path, extensions: &[&str]) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let p = e.path();
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| extensions.iter().any(|w| x.eq_ignore_ascii_case(w)))
        })
    })
}

/// Bytes hashed in full; larger files are sampled.
const FULL_HASH_LIMIT: u64 = 16 << 20;
/// Samples of a large file: this many blocks, the first at the start and the last at the end.
const SAMPLES: u64 = 16;
const SAMPLE_BYTES: u64 = 1 << 20;

/// A cheap identity of a model or checkpoint file: its size and a 64-bit FNV-1a hash of its
/// bytes (of 16 evenly spaced 1 MiB blocks for a file over 16 MiB: about 70 ms for a 600 MB
/// file), as `SIZE bytes, fnv1a HEX`. Two checkpoints of one network differ in their
/// header (the iteration) and throughout their weights, so the blocks tell them apart.
pub fn fingerprint(path: &Path) -> Result<String, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    let mut hash = Fnv::default();
    if size <= FULL_HASH_LIMIT {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(err)?;
        hash.update(&buf);
    } else {
        let mut buf = vec![0u8; SAMPLE_BYTES as usize];
        for k in 0..SAMPLES {
            let at = (size - SAMPLE_BYTES) * k / (SAMPLES - 1);
            f.seek(SeekFrom::Start(at)).map_err(err)?;
            f.read_exact(&mut buf).map_err(err)?;
            hash.update(&buf);
        }
    }
    Ok(format!("{size} bytes, fnv1a {:016x}", hash.0))
}

/// The identity of a model given by name or path: the name, and where it names a local file
/// or folder, the fingerprint of that file (of each weights file of the folder).
pub fn model_identity(spec: &str) -> Result<String, String> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(format!("{spec} ({})", fingerprint(p)?));
    }
    if p.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{spec}: {e}"))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                f.is_file()
                    && f.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "safetensors" | "bin" | "pt" | "pth"))
            })
            .collect();
        files.sort();
        let prints = files
            .iter()
            .map(|f| {
                Ok(format!(
                    "{}: {}",
                    f.file_name().unwrap_or_default().to_string_lossy(),
                    fingerprint(f)?
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(format!("{spec} ({})", prints.join("; ")));
    }
    Ok(spec.to_string())
}

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("clip-es-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_mismatch_names_each_setting_and_overwrite_replaces_the_record() {
        let dir = temp("mismatch");
        let mut a = Manifest::new("masks");
        a.set("confidence", 0.95).set("crf", "default");
        a.claim(&dir, false, false).unwrap();
        std::fs::write(dir.join("x.png"), b"").unwrap();
        assert!(a.claim(&dir, false, true).is_ok(), "same settings resume");
        let mut b = a.clone();
        b.set("confidence", 0.5).set("extra", 1);
        let e = b.claim(&dir, false, true).unwrap_err();
        assert!(e.contains("confidence: 0.95 -> 0.5"), "{e}");
        assert!(e.contains("extra: (none) -> 1"), "{e}");
        assert!(e.contains("--overwrite"), "{e}");
        assert!(b.check(&dir, false, true, &["confidence", "extra"]).is_ok());
        b.claim(&dir, true, true).unwrap();
        assert_eq!(Manifest::read(&dir, "masks").unwrap().unwrap(), b);
        // Another stage keeps its own record beside it.
        Manifest::new("cams").claim(&dir, false, false).unwrap();
        assert!(dir.join("clip-es-cams.json").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_without_a_record_are_refused() {
        let dir = temp("old");
        std::fs::write(dir.join("x.npz"), b"").unwrap();
        assert!(holds_files(&dir, &["npz", "npy"]));
        assert!(!holds_files(&dir, &["png"]));
        let e = Manifest::new("cams").claim(&dir, false, true).unwrap_err();
        assert!(e.contains("without a record"), "{e}");
        std::fs::write(dir.join("clip-es-cams.json"), b"{").unwrap();
        let e = Manifest::read(&dir, "cams").unwrap_err();
        assert!(e.contains("clip-es-cams.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_tell_files_apart_cheaply() {
        let dir = temp("fp");
        let (a, b) = (dir.join("a"), dir.join("b"));
        // Larger than the full-hash limit: sampled; a change inside the last block shows.
        let mut bytes = vec![7u8; (FULL_HASH_LIMIT + 12345) as usize];
        std::fs::write(&a, &bytes).unwrap();
        let last = bytes.len() - 10;
        bytes[last] = 8;
        std::fs::write(&b, &bytes).unwrap();
        let (fa, fb) = (fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        assert_ne!(fa, fb);
        assert!(fa.starts_with(&format!("{} bytes", bytes.len())), "{fa}");
        assert_eq!(fa, fingerprint(&a).unwrap());
        assert!(fingerprint(&dir.join("missing"))
            .unwrap_err()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
