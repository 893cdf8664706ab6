//! Split files and label-id files: which images a stage processes (the reference's
//! `voc12/train_aug.txt`-style lists, COCO's `id l1 l2 ...` lines, and deeplab-pytorch's
//! `/JPEGImages/<id>.jpg /SegmentationClass/<id>.png` lines). One reader for every stage, so a
//! split file that works for one stage works for all of them.
//!
//! A line's first token names the image. A plain token is the id itself; a token holding `/` is
//! a path in the deeplab-pytorch layout, and the id is the file stem of its last component
//! (`/JPEGImages/2007_000032.jpg` -> `2007_000032`). Either way the id must pass [`check_id`].
//! The tokens after a plain id are its image-level labels; the tokens after a path are the other
//! paths of that layout (the ground-truth mask), not labels, and are dropped.

use crate::check_id;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a split or label file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum IdFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The image id a line's first token names: the token itself, or, for a deeplab-pytorch path
/// (a token holding `/`), the file stem of its last component; checked with [`check_id`].
pub fn id_of_token(token: &str) -> Result<String, String> {
    let id = if token.contains('/') {
        let last = token.rsplit('/').next().unwrap_or_default();
        match Path::new(last).file_stem().and_then(|s| s.to_str()) {
            Some(stem) if !stem.is_empty() && last != ".." && last != "." => stem.to_string(),
            _ => {
                return Err(format!(
                    "`{}` is a path without a file name: a split line names an image by its id or by its image path (`/JPEGImages/<id>.jpg`)",
                    token.escape_debug()
                ))
            }
        }
    } else {
        token.to_string()
    };
    check_id(&id)?;
    Ok(id)
}

/// Reads a split or label file: ids in order, with the labels listed after each id (none for
/// deeplab-pytorch path lines). Blank lines are skipped; a UTF-8 byte-order mark is skipped; a
/// line that is not UTF-8, an id that is not a plain file name ([`check_id`]), a repeated id, or
/// a file without any id is an error naming the line.
pub fn read_id_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, IdFileError> {
    let bytes = std::fs::read(path).map_err(|source| IdFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let parse_err = |line: usize, message: String| IdFileError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(raw).map_err(|e| {
            parse_err(
                i + 1,
                format!(
                    "not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        let mut tokens = line.split_whitespace();
        let Some(first) = tokens.next() else {
            continue;
        };
        let id = id_of_token(first).map_err(|m| parse_err(i + 1, m))?;
        let labels = if first.contains('/') {
            Vec::new()
        } else {
            tokens.map(String::from).collect()
        };
        if let Some(earlier) = seen.insert(id.clone(), i + 1) {
            return Err(parse_err(
                i + 1,
                format!("id `{id}` already listed on line {earlier}"),
            ));
        }
        out.push((id, labels));
    }
    if out.is_empty() {
        return Err(parse_err(
            1,
            "no image ids (the file is empty or blank)".into(),
        ));
    }
    Ok(out)
}

/// Image ids of a split file, in order ([`read_id_file`] without the labels).
pub fn read_split(path: &Path) -> Result<Vec<String>, IdFileError> {
    Ok(read_id_file(path)?.into_iter().map(|(id, _)| id).collect())
}

/// The image file of an id: `<dir>/<id>` if the id has an extension and names a file, else
/// `<dir>/<id>.<ext>` for the usual extensions (`.jpg` first, as VOC and COCO store them).
pub fn image_path(dir: &Path, id: &str) -> Result<PathBuf, String> {
    let direct = dir.join(id);
    if Path::new(id).extension().is_some() && direct.is_file() {
        return Ok(direct);
    }
    for ext in ["jpg", "jpeg", "png", "JPG", "JPEG", "PNG", "bmp", "webp"] {
        let p = dir.join(format!("{id}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no image file for `{id}` in {} (tried {id}.jpg, .jpeg, .png, ...)",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("clip-es-data-split-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn deeplab_lines_give_the_same_ids_as_plain_ids() {
        let d = TempDir::new("deeplab");
        let plain = d.0.join("plain.txt");
        let deeplab = d.0.join("deeplab.txt");
        std::fs::write(&plain, "2007_000032\n2007_000039\nphoto.x\n").unwrap();
        std::fs::write(
            &deeplab,
            "/JPEGImages/2007_000032.jpg /SegmentationClass/2007_000032.png\n\
             JPEGImages/2007_000039.jpg\n/a/b/photo.x.jpg\n",
        )
        .unwrap();
        assert_eq!(read_split(&plain).unwrap(), read_split(&deeplab).unwrap());
        // the mask path after the image path is not a label
        assert!(read_id_file(&deeplab)
            .unwrap()
            .iter()
            .all(|(_, l)| l.is_empty()));
    }

    #[test]
    fn path_tokens_are_checked_like_plain_ids() {
        assert_eq!(id_of_token("/JPEGImages/x.jpg").unwrap(), "x");
        assert_eq!(id_of_token("x.jpg").unwrap(), "x.jpg");
        for bad in ["/JPEGImages/", "/JPEGImages/..", "a/.", "..", "a\\b"] {
            assert!(id_of_token(bad).is_err(), "{bad}");
        }
        let d = TempDir::new("bad");
        let split = d.0.join("split.txt");
        std::fs::write(&split, "a\n/JPEGImages/\n").unwrap();
        let e = read_split(&split).unwrap_err().to_string();
        assert!(
            e.contains("split.txt:2:") && e.contains("without a file name"),
            "{e}"
        );
        // an id named twice, once as a path and once plainly, is one image listed twice
        std::fs::write(&split, "/JPEGImages/a.jpg\na\n").unwrap();
        let e = read_split(&split).unwrap_err().to_string();
        assert!(
            e.contains("split.txt:2: id `a` already listed on line 1"),
            "{e}"
        );
    }

    #[test]
    fn bom_bad_bytes_blank_lines_and_empty_files() {
        let d = TempDir::new("bom");
        let split = d.0.join("split.txt");
        std::fs::write(&split, b"\xEF\xBB\xBFa 1\r\n\r\nb\r\n").unwrap();
        let lines = read_id_file(&split).unwrap();
        assert_eq!(
            lines,
            [("a".into(), vec!["1".into()]), ("b".into(), vec![])]
        );
        std::fs::write(&split, b"a\nb\xC3\n").unwrap();
        let e = read_id_file(&split).unwrap_err().to_string();
        assert!(e.contains("split.txt:2: not UTF-8"), "{e}");
        std::fs::write(&split, b" \n\n").unwrap();
        let e = read_split(&split).unwrap_err().to_string();
        assert!(e.contains("no image ids"), "{e}");
        let e = read_split(&d.0.join("missing.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.txt"), "{e}");
    }
}
