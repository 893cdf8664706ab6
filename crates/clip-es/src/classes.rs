//! Class lists for evaluation and display, background first: PASCAL VOC 2012 (21 classes) and
//! COCO 2014 (81), named as the reference names them (`clip_text.py`: `class_names`,
//! `class_names_coco`), or read from a user file.

use std::path::Path;

/// PASCAL VOC 2012 names (reference `class_names`), without background.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// COCO 2014 names (reference `class_names_coco`), without background.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorbike",
    "aeroplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "sofa",
    "pottedplant",
    "bed",
    "diningtable",
    "toilet",
    "tvmonitor",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// The classes of a dataset, index 0 being background: ground-truth value `c` is class `c`,
/// and CAM key `k` is class `k + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassList {
    pub names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassListError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ClassList {
    /// VOC: background + 20 classes.
    pub fn voc() -> Self {
        Self::with_background(&VOC_CLASSES)
    }

    /// COCO: background + 80 classes.
    pub fn coco() -> Self {
        Self::with_background(&COCO_CLASSES)
    }

    fn with_background(names: &[&str]) -> Self {
        ClassList {
            names: std::iter::once("background")
                .chain(names.iter().copied())
                .map(String::from)
                .collect(),
        }
    }

    /// `voc`, `coco`, or a class file as `clip-es cams --dataset` reads it (see
    /// [`crate::prompts::ClassSet::from_spec`]: one class per line, `name` or
    /// `name: prompt text`, an optional first line `background`); background becomes class 0.
    /// At most 254 classes besides background (255 is the ignore value of the masks).
    pub fn parse(spec: &str) -> Result<Self, ClassListError> {
        let set = crate::prompts::ClassSet::from_spec(spec).map_err(|e| match e {
            crate::prompts::ClassFileError::Io { source, .. } => ClassListError::Io {
                path: spec.to_string(),
                source,
            },
            other => ClassListError::Invalid {
                path: spec.to_string(),
                message: other.to_string(),
            },
        })?;
        if set.names.len() > 254 {
            return Err(ClassListError::Invalid {
                path: spec.to_string(),
                message: format!(
                    "{} classes besides background; at most 254",
                    set.names.len()
                ),
            });
        }
        Ok(ClassList {
            names: std::iter::once("background".to_string())
                .chain(set.names)
                .collect(),
        })
    }

    /// A class file (see [`ClassList::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, ClassListError> {
        Self::parse(&path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lists() {
        let voc = ClassList::voc();
        assert_eq!(voc.len(), 21);
        assert_eq!(voc.names[0], "background");
        assert_eq!(voc.names[15], "person");
        let coco = ClassList::coco();
        assert_eq!(coco.len(), 81);
        assert_eq!(coco.names[1], "person");
        assert_eq!(coco.names[80], "toothbrush");
        assert_eq!(ClassList::parse("voc").unwrap(), voc);
    }

    #[test]
    fn class_file() {
        let dir = std::env::temp_dir().join(format!("clip-es-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.txt");
        std::fs::write(&f, "# mine\nbackground\n\ncat\n dog \n").unwrap();
        assert_eq!(
            ClassList::parse(f.to_str().unwrap()).unwrap().names,
            vec!["background", "cat", "dog"]
        );
        // The file `clip-es cams --dataset` takes gives the same list.
        std::fs::write(&f, "cat\ndog: dog,puppy\n").unwrap();
        assert_eq!(
            ClassList::from_file(&f).unwrap().names,
            vec!["background", "cat", "dog"]
        );
        std::fs::write(&f, "background\n").unwrap();
        assert!(ClassList::from_file(&f).is_err());
        assert!(ClassList::from_file(&dir.join("missing.txt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
