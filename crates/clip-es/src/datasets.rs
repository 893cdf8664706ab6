//! Image-level labels for CAM generation (CLIP-ES section 4.1 inputs; reference
//! `generate_cams_voc12.py` reads VOC XML annotations, `generate_cams_coco14.py` a split file
//! of `id l1 l2 ...` lines).
//!
//! Three sources: VOC `Annotations/<id>.xml` (the distinct `<object><name>`s in order of first
//! appearance), a label file of `id l1 l2 ...` lines (class indices or names; COCO's split
//! format), and the labels written on the split file's own lines. A problem with one image
//! (missing XML, unknown class, no labels) is that image's error; the run goes on.

use crate::classes::ClassSet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One image to process.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub id: String,
    pub image: PathBuf,
    /// Class indices, distinct, in order of first appearance.
    pub labels: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    IdFile(#[from] clip_es_data::split::IdFileError),
    #[error("{0}")]
    Config(String),
}

/// Where the labels come from.
#[derive(Clone, Debug)]
pub enum LabelSource {
    /// `<dir>/<id>.xml` VOC annotations.
    VocAnnotations(PathBuf),
    /// Labels per id, as read from a label file or from the split file's lines.
    Listed(HashMap<String, Vec<String>>),
}

/// Why an id cannot name files (one rule for every stage, training included).
pub use clip_es_data::check_id;

/// The image file of an id (one rule for every stage, training included).
pub use clip_es_data::split::image_path;

/// Reads a split or label file: ids in order, with the labels listed after each id
/// ([`clip_es_data::split::read_id_file`]).
pub fn read_id_file(path: &Path) -> Result<Vec<(String, Vec<String>)>, DatasetError> {
    Ok(clip_es_data::split::read_id_file(path)?)
}

/// Image ids of a split file ([`clip_es_data::split::read_split`]): the first token of each
/// line, a deeplab-pytorch image path read as its file stem; label columns are ignored here.
pub fn read_split(path: &Path) -> Result<Vec<String>, DatasetError> {
    Ok(clip_es_data::split::read_split(path)?)
}

/// The ids to process and where their labels come from, from the command-line options.
///
/// Precedence of the label sources: `--annotations` (VOC XML), else `--labels`, else the labels
/// written on the split's lines. When a split lists labels that another source overrides,
/// the third value says so (the CLI prints it).
pub fn plan(
    split: Option<&Path>,
    labels: Option<&Path>,
    annotations: Option<&Path>,
) -> Result<(Vec<String>, LabelSource, Option<String>), DatasetError> {
    let split_lines = split.map(read_id_file).transpose()?;
    let label_lines = labels.map(read_id_file).transpose()?;
    let ids: Vec<String> = match (&split_lines, &label_lines) {
        (Some(s), _) => s.iter().map(|(id, _)| id.clone()).collect(),
        (None, Some(l)) => l.iter().map(|(id, _)| id.clone()).collect(),
        (None, None) => {
            return Err(DatasetError::Config(
                "give --split (and/or --labels) to say which images to process".into(),
            ))
        }
    };
    let split_has_labels = split_lines
        .as_ref()
        .is_some_and(|s| s.iter().any(|(_, l)| !l.is_empty()));
    let note = match (split, annotations, labels) {
        (Some(s), Some(a), _) if split_has_labels => Some(format!(
            "{} lists labels after its ids; they are ignored: the labels come from the VOC annotations in {}",
            s.display(),
            a.display()
        )),
        (Some(s), None, Some(l)) if split_has_labels => Some(format!(
            "{} lists labels after its ids; they are ignored: the labels come from {}",
            s.display(),
            l.display()
        )),
        _ => None,
    };
    let source = if let Some(dir) = annotations {
        LabelSource::VocAnnotations(dir.to_path_buf())
    } else if let Some(l) = label_lines {
        LabelSource::Listed(l.into_iter().collect())
    } else {
        let s = split_lines.expect("split given");
        if s.iter().all(|(_, l)| l.is_empty()) {
            return Err(DatasetError::Config(
                "the split file lists no labels: give --annotations DIR (VOC XML) or --labels FILE (`id l1 l2 ...`)".into(),
            ));
        }
        LabelSource::Listed(s.into_iter().collect())
    };
    Ok((ids, source, note))
}

/// The distinct object names of a VOC annotation, in order of first appearance.
pub fn voc_object_names(xml_path: &Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(xml_path).map_err(|e| format!("{}: {e}", xml_path.display()))?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| format!("{}: invalid XML: {e}", xml_path.display()))?;
    let mut names: Vec<String> = Vec::new();
    for obj in doc.descendants().filter(|n| n.has_tag_name("object")) {
        let name = obj
            .children()
            .find(|n| n.has_tag_name("name"))
            .and_then(|n| n.text())
            .map(str::trim)
            .ok_or_else(|| format!("{}: an <object> without <name>", xml_path.display()))?;
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

impl LabelSource {
    /// Resolves one id into a sample, or a message saying what is wrong with it.
    pub fn sample(&self, id: &str, images: &Path, classes: &ClassSet) -> Result<Sample, String> {
        let raw: Vec<String> = match self {
            LabelSource::VocAnnotations(dir) => voc_object_names(&dir.join(format!("{id}.xml")))?,
            LabelSource::Listed(map) => map
                .get(id)
                .cloned()
                .ok_or_else(|| "no entry in the label file".to_string())?,
        };
        let mut labels = Vec::new();
        for name in &raw {
            let c = classes.resolve(name).ok_or_else(|| {
                format!(
                    "unknown class `{name}` (not a class name or an index below {})",
                    classes.names.len()
                )
            })?;
            if !labels.contains(&c) {
                labels.push(c);
            }
        }
        if labels.is_empty() {
            return Err("no image-level labels".to_string());
        }
        Ok(Sample {
            id: id.to_string(),
            image: image_path(images, id)?,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("clip-es-ds-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn voc_names_are_distinct_in_first_appearance_order() {
        let d = tmpdir("voc");
        let xml = d.join("a.xml");
        std::fs::write(&xml, "<annotation><size><width>5</width></size><object><name>person</name></object><object><name>dog</name></object><object><name>person</name></object></annotation>").unwrap();
        assert_eq!(voc_object_names(&xml).unwrap(), vec!["person", "dog"]);
        std::fs::write(&xml, "<annotation><object>").unwrap();
        assert!(voc_object_names(&xml).unwrap_err().contains("invalid XML"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ids_must_be_plain_file_names() {
        for ok in [
            "2007_000032",
            "COCO_train2014_000000000009",
            "a.b",
            "photo.jpg",
            "-x",
        ] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "..",
            ".",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "x/..",
            "a\0b",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_listed_on_the_split_and_elsewhere_give_a_note() {
        let d = tmpdir("bom");
        let split = d.join("split.txt");
        std::fs::write(&split, b"a 3\n").unwrap();
        let (_, _, note) = plan(Some(&split), None, Some(&d)).unwrap();
        assert!(note.unwrap().contains("VOC annotations"));
        let (_, _, note) = plan(Some(&split), Some(&split), None).unwrap();
        assert!(note.unwrap().contains("labels come from"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn labels_from_split_lines_indices_and_names() {
        let d = tmpdir("split");
        std::fs::write(d.join("x.jpg"), b"").unwrap();
        std::fs::write(d.join("y.png"), b"").unwrap();
        let split = d.join("split.txt");
        std::fs::write(&split, "x 14 dog 14\ny\nz cat\n").unwrap();
        let (ids, src, note) = plan(Some(&split), None, None).unwrap();
        assert_eq!(note, None);
        assert_eq!(ids, vec!["x", "y", "z"]);
        let voc = ClassSet::voc();
        let s = src.sample("x", &d, &voc).unwrap();
        assert_eq!(s.labels, vec![14, 11]);
        assert_eq!(s.image, d.join("x.jpg"));
        assert!(src
            .sample("y", &d, &voc)
            .unwrap_err()
            .contains("no image-level labels"));
        assert!(src
            .sample("z", &d, &voc)
            .unwrap_err()
            .contains("no image file"));
        std::fs::write(&split, "x 14\nx 3\n").unwrap();
        assert!(plan(Some(&split), None, None)
            .unwrap_err()
            .to_string()
            .contains("already listed on line 1"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
