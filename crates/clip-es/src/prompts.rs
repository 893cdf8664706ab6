//! The text side of CLIP-ES (paper section 3.1 and 4.1; reference `clip_text.py` and
//! `zeroshot_classifier` in `generate_cams_voc12.py`): class names with synonyms, background
//! words, prompt templates, and the text classifier built from them.

use crate::classes::{COCO_CLASSES, VOC_CLASSES};
use std::path::Path;

/// The prompt template of the paper (the one with the lowest "sharpness").
pub const DEFAULT_TEMPLATE: &str = "a clean origami {}.";

/// A dataset's foreground classes for CAM generation.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSet {
    /// Canonical names, as annotations and label files spell them (index = class id).
    pub names: Vec<String>,
    /// The text put into the template for each class: the name with synonyms.
    pub prompt_names: Vec<String>,
    /// Background words whose classes compete in the softmax (CLIP-ES background suppression).
    pub background: Vec<String>,
    /// CAA box threshold for this dataset (0.4 VOC, 0.7 COCO).
    pub box_threshold: f64,
}

const VOC_PROMPT_NAMES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird avian",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair seat",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person with clothes,people,human",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor screen",
];

const VOC_BACKGROUND: [&str; 25] = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road",
    "rock", "street", "valley", "bridge", "sign",
];

// The reference's spellings, quirks included ("sknowboard", "glove" for "baseball glove").
const COCO_PROMPT_NAMES: [&str; 80] = [
    "person with clothes,people,human",
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
    "bird avian",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack,bag",
    "umbrella,parasol",
    "handbag,purse",
    "necktie",
    "suitcase",
    "frisbee",
    "skis",
    "sknowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "dessertspoon",
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
    "chair seat",
    "sofa",
    "pottedplant",
    "bed",
    "diningtable",
    "toilet",
    "tvmonitor screen",
    "laptop",
    "mouse",
    "remote control",
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
    "hairdrier,blowdrier",
    "toothbrush",
];

const COCO_BACKGROUND: [&str; 23] = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
    "street", "valley", "bridge",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ClassFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: no classes")]
    Empty { path: String },
}

impl ClassSet {
    /// PASCAL VOC 2012: 20 classes, 25 background words, box threshold 0.4.
    pub fn voc() -> Self {
        ClassSet {
            names: strings(&VOC_CLASSES),
            prompt_names: strings(&VOC_PROMPT_NAMES),
            background: strings(&VOC_BACKGROUND),
            box_threshold: 0.4,
        }
    }

    /// MS COCO 2014: 80 classes, 23 background words, box threshold 0.7.
    pub fn coco() -> Self {
        ClassSet {
            names: strings(&COCO_CLASSES),
            prompt_names: strings(&COCO_PROMPT_NAMES),
            background: strings(&COCO_BACKGROUND),
            box_threshold: 0.7,
        }
    }

    /// A preset name (`voc`, `coco`) or a class file.
    ///
    /// Class file: one class per line, `name` or `name: prompt text` (the prompt text may list
    /// synonyms, e.g. `person: person with clothes,people,human`); blank lines and lines
    /// starting with `#` are skipped, and so is a first class named `background` (the same
    /// file then also serves `clip-es eval`, where background is class 0). The background
    /// words default to COCO's 23 generic ones and the box threshold to 0.4.
    pub fn from_spec(spec: &str) -> Result<Self, ClassFileError> {
        match spec {
            "voc" => Ok(Self::voc()),
            "coco" => Ok(Self::coco()),
            path => Self::from_file(Path::new(path)),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ClassFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClassFileError::Io {
            path: p.clone(),
            source,
        })?;
        let mut set = ClassSet {
            names: vec![],
            prompt_names: vec![],
            background: strings(&COCO_BACKGROUND),
            box_threshold: 0.4,
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, prompt) = match line.split_once(':') {
                Some((n, t)) => (n.trim(), t.trim()),
                None => (line, line),
            };
            if set.names.is_empty() && name.eq_ignore_ascii_case("background") {
                continue;
            }
            if name.is_empty() || prompt.is_empty() {
                return Err(ClassFileError::Parse {
                    path: p,
                    line: i + 1,
                    message: "empty class name or prompt".into(),
                });
            }
            if set.names.iter().any(|n| n == name) {
                return Err(ClassFileError::Parse {
                    path: p,
                    line: i + 1,
                    message: format!("class `{name}` listed twice"),
                });
            }
            set.names.push(name.to_string());
            set.prompt_names.push(prompt.to_string());
        }
        if set.names.is_empty() {
            return Err(ClassFileError::Empty { path: p });
        }
        Ok(set)
    }

    /// Background words: a preset (`voc`, `coco`, `none`) or a file with one word per line.
    pub fn background_from_spec(spec: &str) -> Result<Vec<String>, ClassFileError> {
        match spec {
            "voc" => Ok(strings(&VOC_BACKGROUND)),
            "coco" => Ok(strings(&COCO_BACKGROUND)),
            "none" => Ok(vec![]),
            path => {
                let text = std::fs::read_to_string(path).map_err(|source| ClassFileError::Io {
                    path: path.to_string(),
                    source,
                })?;
                Ok(text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect())
            }
        }
    }

    /// The class index of a label as written in an annotation or label file: a canonical name,
    /// or a 0-based index.
    pub fn resolve(&self, label: &str) -> Option<usize> {
        if let Some(i) = self.names.iter().position(|n| n == label) {
            return Some(i);
        }
        label
            .parse::<usize>()
            .ok()
            .filter(|&i| i < self.names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_reference_sizes() {
        let voc = ClassSet::voc();
        assert_eq!(
            (
                voc.names.len(),
                voc.prompt_names.len(),
                voc.background.len()
            ),
            (20, 20, 25)
        );
        let coco = ClassSet::coco();
        assert_eq!(
            (
                coco.names.len(),
                coco.prompt_names.len(),
                coco.background.len()
            ),
            (80, 80, 23)
        );
        assert_eq!(coco.resolve("teddy bear"), Some(77));
        assert_eq!(coco.resolve("79"), Some(79));
        assert_eq!(coco.resolve("80"), None);
        assert_eq!(voc.resolve("person"), Some(14));
    }

    #[test]
    fn class_file_parses_synonyms_and_rejects_duplicates() {
        let dir = std::env::temp_dir().join(format!("clip-es-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("classes.txt");
        std::fs::write(
            &f,
            "# my classes\nbackground\ncat\nperson: person with clothes,people,human\n\n",
        )
        .unwrap();
        let set = ClassSet::from_file(&f).unwrap();
        assert_eq!(set.names, vec!["cat", "person"]);
        assert_eq!(
            set.prompt_names,
            vec!["cat", "person with clothes,people,human"]
        );
        std::fs::write(&f, "cat\ncat\n").unwrap();
        let err = ClassSet::from_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("classes.txt:2") && err.contains("twice"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
