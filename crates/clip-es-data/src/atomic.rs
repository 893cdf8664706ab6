//! Crash-safe output files, one convention for every stage and every file kind (CAMs, masks,
//! reports, checkpoints, feature caches, manifests, pictures): each result is written under a
//! temporary name in the same directory and renamed over its final name only when complete, so
//! an interrupted run never leaves a partial file under a final name and a rerun can skip
//! finished work by existence. The temporary name is `.{final name}.{pid}.partial`
//! ([`temp_path`]); [`remove_stale_partials`] and [`remove_stale_partials_where`] know it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The temporary sibling name used while `path` is being written. It keeps the directory (so
/// the rename is atomic) and carries the process id (so two runs never share a partial file).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Removes the temporary files that interrupted writers of `finals` (final paths, all in one
/// directory) left behind. Only call it for outputs no other live process is writing (e.g. the
/// ids of this process's own shard). Returns how many were removed.
pub fn remove_stale_partials<'a>(
    dir: &Path,
    finals: impl IntoIterator<Item = &'a Path>,
) -> io::Result<usize> {
    let names: std::collections::HashSet<String> = finals
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    remove_stale_partials_where(dir, |name| names.contains(name))
}

/// Removes the temporary files in `dir` (as [`temp_path`] names them) whose final file name
/// satisfies `is_final`, e.g. every checkpoint of a training folder. Returns how many were
/// removed.
pub fn remove_stale_partials_where(
    dir: &Path,
    is_final: impl Fn(&str) -> bool,
) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if final_name_of_partial(&name).is_some_and(&is_final) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The final file name of a temporary file name `.{final}.{pid}.partial`, or `None` for any
/// other name.
pub fn final_name_of_partial(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".partial")?;
    let (final_name, pid) = inner.rsplit_once('.')?;
    (!pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())).then_some(final_name)
}

/// Makes sure results can be written into `dir` before any work is done: creates it (and its
/// parents) and writes, then removes, a small probe file. A `dir` that is a file, a read-only
/// directory or a full disk is reported here, once, instead of after every image was computed.
pub fn probe_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "{}: exists and is not a directory: an output location (--out) must be a folder, not a file",
            dir.display()
        ));
    }
    fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    let probe = dir.join(format!(".clip-es-probe.{}", std::process::id()));
    let written = fs::write(&probe, b"clip-es write probe\n");
    let _ = fs::remove_file(&probe);
    written.map_err(|e| format!("{}: cannot write into the directory: {e}", dir.display()))
}

/// [`probe_dir`] for the directory an output file will be written into.
pub fn probe_file_dir(file: &Path) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!(
            "{}: is a directory, not a file name",
            file.display()
        ));
    }
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => probe_dir(d),
        _ => probe_dir(Path::new(".")),
    }
}

/// Writes `path` atomically: `write` receives the temporary path to create, and the file is
/// renamed into place only if it returns `Ok`. On error the temporary file is removed.
pub fn write_atomic<T, E>(path: &Path, write: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E>
where
    E: From<io::Error>,
{
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir)?;
        }
    }
    let tmp = temp_path(path);
    match write(&tmp) {
        Ok(v) => {
            fs::rename(&tmp, path)?;
            Ok(v)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |tmp| fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_finds_files_and_read_only_directories() {
        let dir = std::env::temp_dir().join(format!("clip-es-probe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        probe_dir(&dir.join("a/b")).unwrap();
        assert!(dir.join("a/b").is_dir());
        assert_eq!(
            fs::read_dir(dir.join("a/b")).unwrap().count(),
            0,
            "probe removed"
        );
        fs::write(dir.join("file"), b"x").unwrap();
        let e = probe_dir(&dir.join("file")).unwrap_err();
        assert!(
            e.contains("not a directory") && e.contains("must be a folder"),
            "{e}"
        );
        let e = probe_dir(&dir.join("file/sub")).unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
        assert!(probe_file_dir(&dir.join("a"))
            .unwrap_err()
            .contains("is a directory"));
        probe_file_dir(&dir.join("a/report.json")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.join("ro");
            fs::create_dir_all(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            // root may write anyway: only check when the permission holds
            if fs::write(ro.join("t"), b"").is_err() {
                let e = probe_dir(&ro).unwrap_err();
                assert!(e.contains("cannot write"), "{e}");
            }
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("clip-es-atomic-{}", std::process::id()));
        let target = dir.join("out.bin");
        let r: io::Result<()> = write_atomic(&target, |tmp| {
            fs::write(tmp, b"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert!(!target.exists());
        assert!(!temp_path(&target).exists());
        write_bytes_atomic(&target, b"whole").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_partials_of_given_outputs_are_removed() {
        let dir = std::env::temp_dir().join(format!("clip-es-stale-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mine = dir.join("a.npz");
        let other = dir.join("b.npz");
        fs::write(dir.join(".a.npz.123.partial"), b"x").unwrap();
        fs::write(dir.join(".b.npz.123.partial"), b"x").unwrap();
        fs::write(dir.join(".a.npz.notapid.partial"), b"x").unwrap();
        assert_eq!(remove_stale_partials(&dir, [mine.as_path()]).unwrap(), 1);
        assert!(!dir.join(".a.npz.123.partial").exists());
        assert!(
            dir.join(".b.npz.123.partial").exists(),
            "{}",
            other.display()
        );
        assert!(dir.join(".a.npz.notapid.partial").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_partials_by_final_name() {
        let dir = std::env::temp_dir().join(format!("clip-es-stale-where-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ckpt = dir.join("checkpoint-10.safetensors");
        let partial = temp_path(&ckpt);
        fs::write(&partial, b"x").unwrap();
        fs::write(dir.join("checkpoint-10.safetensors"), b"kept").unwrap();
        fs::write(dir.join(".notes.txt.1.partial"), b"x").unwrap();
        assert_eq!(
            final_name_of_partial(&partial.file_name().unwrap().to_string_lossy()),
            Some("checkpoint-10.safetensors")
        );
        assert_eq!(final_name_of_partial(".a.partial"), None);
        assert_eq!(final_name_of_partial(".a..partial"), None);
        let n = remove_stale_partials_where(&dir, |n| n.starts_with("checkpoint-")).unwrap();
        assert_eq!(n, 1);
        assert!(!partial.exists());
        assert!(ckpt.exists() && dir.join(".notes.txt.1.partial").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
