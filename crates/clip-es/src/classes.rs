//! The classes of a dataset: one type for the CAM stage (names, prompt texts, background words,
//! box threshold) and for masks and evaluation (label ids, background first). Presets for
//! PASCAL VOC 2012 (20 classes) and COCO 2014 (80), spelled as the reference spells them
//! (`clip_text.py`: `class_names`, `new_class_names`, `BACKGROUND_CATEGORY`, and their COCO
//! twins; see docs/algorithm.md, "Text side"), or read from a class file.
//!
//! Label ids: 0 is background, foreground class `k` (0-based, the CAM file's key) is label
//! `k + 1`, and 255 marks unconfident or ignored pixels. Labels are stored as `u8`, so a class
//! set holds at most [`MAX_CLASSES`] foreground classes; the parser enforces it.

use std::path::Path;

/// A user's text file (class file, background words, vocabulary, templates) as a string, its
/// UTF-8 byte-order mark dropped: editors on Windows write one, and it would otherwise become
/// part of the first name. Every reader of such files goes through here (split and label files
/// strip it in [`crate::datasets::read_id_file`]).
pub fn read_text_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Label id of the background.
pub const BACKGROUND_LABEL: u8 = 0;
/// Label id of pixels that are ignored (ground-truth boundaries) or not confident (pseudo masks):
/// the one ignore label of every stage.
pub use clip_es_data::IGNORE_LABEL;
/// Most foreground classes a class set may hold: labels 1..=254, 0 background, 255 ignored.
pub const MAX_CLASSES: usize = IGNORE_LABEL as usize - 1;
/// Largest valid CAM key (0-based foreground class index): label `MAX_CLASS_KEY + 1` = 254.
pub const MAX_CLASS_KEY: i64 = MAX_CLASSES as i64 - 1;

/// A dataset's classes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSet {
    /// Canonical foreground names, as annotations and label files spell them (index = CAM key).
    pub names: Vec<String>,
    /// The text put into the template for each class: the name with synonyms.
    pub prompt_names: Vec<String>,
    /// Background words whose classes compete in the softmax (CLIP-ES background suppression).
    pub background: Vec<String>,
    /// CAA box threshold for this dataset (0.4 VOC, 0.7 COCO).
    pub box_threshold: f64,
}

/// One class of a [`ClassSet`] as `segment` shows it: its name, the text put into the prompt
/// template (synonyms separated by commas, as the reference fuses them), its label value and
/// its colour. [`ClassSet::segment_classes`] and [`ClassSet::from_segment_classes`] convert
/// between the two.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentClass {
    pub name: String,
    pub prompt: String,
    pub id: u8,
    pub colour: crate::viz::Rgb,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A class or background-word file (or preset name) that cannot be used.
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
    #[error("{path}: {count} classes besides background; at most {MAX_CLASSES} (label ids are 8-bit, 255 is reserved)")]
    TooMany { path: String, count: usize },
}

impl ClassSet {
    /// The classes with their label values (position + 1) and VOC-palette colours; at most
    /// [`MAX_CLASSES`].
    pub fn segment_classes(&self) -> Result<Vec<SegmentClass>, String> {
        if self.names.len() > MAX_CLASSES {
            return Err(format!(
                "{} classes; at most {MAX_CLASSES} (label values 1..254; 255 marks pixels that are not confident)",
                self.names.len()
            ));
        }
        Ok(self
            .names
            .iter()
            .zip(&self.prompt_names)
            .enumerate()
            .map(|(i, (n, p))| SegmentClass {
                name: n.clone(),
                prompt: p.clone(),
                id: (i + 1) as u8,
                colour: crate::viz::voc_colour((i + 1) as u8),
            })
            .collect())
    }

    /// The class set of `classes` (in their order: class `k` is CAM key `k`), with these
    /// background words and CAA box threshold.
    pub fn from_segment_classes(
        classes: &[SegmentClass],
        background: Vec<String>,
        box_threshold: f64,
    ) -> Self {
        ClassSet {
            names: classes.iter().map(|c| c.name.clone()).collect(),
            prompt_names: classes.iter().map(|c| c.prompt.clone()).collect(),
            background,
            box_threshold,
        }
    }

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
    /// file then also serves `clip-es eval`, where background is label 0). The background
    /// words default to COCO's 23 generic ones and the box threshold to 0.4. At most
    /// [`MAX_CLASSES`] classes.
    pub fn from_spec(spec: &str) -> Result<Self, ClassFileError> {
        match spec {
            "voc" => Ok(Self::voc()),
            "coco" => Ok(Self::coco()),
            path => Self::from_file(Path::new(path)),
        }
    }

    /// A class file (see [`ClassSet::from_spec`]).
    pub fn from_file(path: &Path) -> Result<Self, ClassFileError> {
        let p = path.display().to_string();
        let text = read_text_file(path).map_err(|source| ClassFileError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse_class_text(&text, &p)
    }

    /// Classes from the text of a class file; `origin` names it in errors.
    pub fn parse_class_text(text: &str, origin: &str) -> Result<Self, ClassFileError> {
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
            let parse_error = |message: String| ClassFileError::Parse {
                path: origin.to_string(),
                line: i + 1,
                message,
            };
            if name.is_empty() || prompt.is_empty() {
                return Err(parse_error("empty class name or prompt".into()));
            }
            if set.names.iter().any(|n| n == name) {
                return Err(parse_error(format!("class `{name}` listed twice")));
            }
            set.names.push(name.to_string());
            set.prompt_names.push(prompt.to_string());
        }
        if set.names.is_empty() {
            return Err(ClassFileError::Empty {
                path: origin.to_string(),
            });
        }
        if set.names.len() > MAX_CLASSES {
            return Err(ClassFileError::TooMany {
                path: origin.to_string(),
                count: set.names.len(),
            });
        }
        Ok(set)
    }

    /// Classes given directly (e.g. from Python or an open-vocabulary query): each name is also
    /// its prompt text; COCO's background words; box threshold 0.4.
    pub fn from_names(names: &[String]) -> Result<Self, ClassFileError> {
        let text: Vec<String> = names.iter().map(|n| n.replace(['\n', '\r'], " ")).collect();
        // An empty name would vanish as a blank line of the class text and shift the others.
        if let Some(i) = text.iter().position(|n| n.trim().is_empty()) {
            return Err(ClassFileError::Parse {
                path: "<names>".into(),
                line: 1 + i,
                message: "empty class name".into(),
            });
        }
        if let Some(bad) = text
            .iter()
            .find(|n| n.contains(':') || n.trim().starts_with('#'))
        {
            return Err(ClassFileError::Parse {
                path: "<names>".into(),
                line: 1 + text.iter().position(|n| n == bad).unwrap_or(0),
                message: format!("class name `{bad}` may not contain `:` or start with `#`"),
            });
        }
        Self::parse_class_text(&text.join("\n"), "<names>")
    }

    /// [`ClassSet::from_spec`] with its background words replaced when `background` is given
    /// (see [`ClassSet::background_from_spec`]).
    pub fn from_specs(spec: &str, background: Option<&str>) -> Result<Self, ClassFileError> {
        let mut set = Self::from_spec(spec)?;
        if let Some(bg) = background {
            set.background = Self::background_from_spec(bg)?;
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
                let text =
                    read_text_file(Path::new(path)).map_err(|source| ClassFileError::Io {
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

    /// Number of foreground classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Number of label ids in use: background + the foreground classes.
    pub fn num_labels(&self) -> usize {
        self.names.len() + 1
    }

    /// The name of each label id: `background`, then the foreground names.
    pub fn label_names(&self) -> Vec<String> {
        std::iter::once("background".to_string())
            .chain(self.names.iter().cloned())
            .collect()
    }
}

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

pub const VOC_PROMPT_NAMES: [&str; 20] = [
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

pub const VOC_BACKGROUND: [&str; 25] = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road",
    "rock", "street", "valley", "bridge", "sign",
];

// The reference's spellings, quirks included ("sknowboard", "glove" for "baseball glove").
pub const COCO_PROMPT_NAMES: [&str; 80] = [
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

pub const COCO_BACKGROUND: [&str; 23] = [
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
    "street", "valley", "bridge",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_classes_are_a_view_of_the_class_set() {
        let voc = ClassSet::voc();
        let classes = voc.segment_classes().unwrap();
        assert_eq!(classes.len(), 20);
        assert_eq!((classes[0].id, classes[19].id), (1, 20));
        assert_eq!(classes[14].prompt, voc.prompt_names[14]);
        assert_eq!(classes[0].colour, crate::viz::voc_colour(1));
        let back =
            ClassSet::from_segment_classes(&classes, voc.background.clone(), voc.box_threshold);
        assert_eq!(back, voc);
        let mut too_many = voc.clone();
        too_many.names = (0..255).map(|i| format!("c{i}")).collect();
        too_many.prompt_names = too_many.names.clone();
        assert!(too_many
            .segment_classes()
            .unwrap_err()
            .contains("at most 254"));
    }
    use crate::test_dir;

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
        let labels = voc.label_names();
        assert_eq!((labels.len(), voc.num_labels()), (21, 21));
        assert_eq!(
            (labels[0].as_str(), labels[15].as_str()),
            ("background", "person")
        );
        let labels = coco.label_names();
        assert_eq!(labels.len(), 81);
        assert_eq!(
            (labels[1].as_str(), labels[80].as_str()),
            ("person", "toothbrush")
        );
        assert_eq!(ClassSet::from_spec("voc").unwrap(), voc);
    }

    #[test]
    fn class_file_parses_synonyms_and_rejects_duplicates() {
        let dir = test_dir::unique("classes-synonyms");
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
        assert_eq!(set.label_names(), vec!["background", "cat", "person"]);
        std::fs::write(&f, "cat\ncat\n").unwrap();
        let err = ClassSet::from_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("classes.txt:2") && err.contains("twice"),
            "{err}"
        );
        std::fs::write(&f, "background\n").unwrap();
        assert!(ClassSet::from_file(&f).is_err());
        assert!(ClassSet::from_file(&dir.join("missing.txt")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_class_limit_is_enforced_when_parsed() {
        let names: Vec<String> = (0..MAX_CLASSES).map(|i| format!("c{i}")).collect();
        assert_eq!(ClassSet::from_names(&names).unwrap().num_labels(), 255);
        let mut more = names.clone();
        more.push("one too many".into());
        let err = ClassSet::from_names(&more).unwrap_err().to_string();
        assert!(err.contains("255 classes") && err.contains("254"), "{err}");
        assert!(ClassSet::from_names(&["a: b".to_string()]).is_err());
        assert_eq!(MAX_CLASS_KEY, 253);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_name() {
        let dir = std::env::temp_dir().join(format!("clip-es-classes-bom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let classes = dir.join("classes.txt");
        std::fs::write(&classes, "\u{feff}cat\ndog: dog;puppy\n").unwrap();
        let set = ClassSet::from_file(&classes).unwrap();
        assert_eq!(set.names, ["cat", "dog"]);
        assert_eq!(set.prompt_names[0], "cat");
        let words = dir.join("background.txt");
        std::fs::write(&words, "\u{feff}ground\nsky\n").unwrap();
        let bg = ClassSet::background_from_spec(words.to_str().unwrap()).unwrap();
        assert_eq!(bg, ["ground", "sky"]);
        // A mark elsewhere than at the start is the user's text and stays.
        std::fs::write(&words, "ground\n\u{feff}sky\n").unwrap();
        let bg = ClassSet::background_from_spec(words.to_str().unwrap()).unwrap();
        assert_eq!(bg[1], "\u{feff}sky");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
