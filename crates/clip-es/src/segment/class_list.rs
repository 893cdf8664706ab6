//! The classes a photo is segmented into: typed by the user (with synonyms), taken from a
//! preset, or the label-free vocabulary; and the background words that remain beside them.

use crate::classes::{ClassSet, SegmentClass, MAX_CLASSES};
use crate::viz;

/// A problem with the class names given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClassError(pub String);

/// The classes of a preset or class file, with its ids (position + 1) and VOC-palette colours.
pub fn preset_classes(set: &ClassSet) -> Result<Vec<SegmentClass>, ClassError> {
    set.segment_classes().map_err(ClassError)
}

/// The default vocabulary of label-free tagging: the VOC classes (ids 1..20, VOC prompts), then
/// the COCO classes not among them (COCO prompts), with COCO's background words (VOC's also
/// list `keyboard` and `sign`, which COCO has as classes) and VOC's box threshold.
pub fn default_vocabulary() -> ClassSet {
    let mut set = ClassSet::voc();
    let coco = ClassSet::coco();
    for (n, p) in coco.names.iter().zip(&coco.prompt_names) {
        if !set.names.contains(n) {
            set.names.push(n.clone());
            set.prompt_names.push(p.clone());
        }
    }
    set.background = coco.background;
    set
}

/// Parses `--classes`: classes separated by `,`, synonyms of one class by `;`
/// (`"cat,sofa,person with clothes;people"`). With a preset, every name must be one of its
/// classes (its prompts, synonyms and ids are used) and the result holds indices into the
/// preset; free names get ids 1..k in the order given and distinct colours.
pub fn parse_classes(
    text: &str,
    preset: Option<&[SegmentClass]>,
) -> Result<Vec<SegmentClass>, ClassError> {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    if items.len() > MAX_CLASSES {
        return Err(ClassError(format!(
            "--classes: {} classes; at most {MAX_CLASSES} (label values 1..254; 255 marks pixels that are not confident)",
            items.len()
        )));
    }
    let colours = viz::distinct_colours(items.len());
    let mut out: Vec<SegmentClass> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let synonyms: Vec<&str> = item.split(';').map(str::trim).collect();
        if synonyms.iter().any(|s| s.is_empty()) {
            return Err(ClassError(format!(
                "--classes: empty class name (item {} of {text:?})",
                i + 1
            )));
        }
        let name = synonyms[0];
        // `Cat` and `cat` would be two classes with the same prompt, splitting its pixels.
        if let Some(first) = out
            .iter()
            .find(|c| c.name.to_lowercase() == name.to_lowercase())
        {
            return Err(ClassError(if first.name == name {
                format!("--classes: `{name}` is given twice")
            } else {
                format!(
                    "--classes: `{}` and `{name}` name the same class (names are compared ignoring case)",
                    first.name
                )
            }));
        }
        let class = match preset {
            Some(p) => {
                if synonyms.len() > 1 {
                    return Err(ClassError(format!(
                        "--classes: `{item}`: a preset's classes take their synonyms from the preset; give the class name alone"
                    )));
                }
                p.iter().find(|c| c.name == name).cloned().ok_or_else(|| {
                    let names: Vec<&str> = p.iter().map(|c| c.name.as_str()).collect();
                    ClassError(format!(
                        "--classes: `{name}` is not a class of the dataset (its classes: {})",
                        names.join(", ")
                    ))
                })?
            }
            None => SegmentClass {
                name: name.to_string(),
                prompt: synonyms.join(","),
                id: (i + 1) as u8,
                colour: colours[i],
            },
        };
        out.push(class);
    }
    Ok(out)
}

/// The background words less those that name one of the classes (a class "grass" would
/// otherwise compete with the background word "grass").
pub fn background_without_classes(mut words: Vec<String>, classes: &[SegmentClass]) -> Vec<String> {
    words.retain(|w| !classes.iter().any(|c| c.name.eq_ignore_ascii_case(w)));
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_classes_with_synonyms() {
        let c = parse_classes("cat, sofa ,person with clothes;people", None).unwrap();
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cat", "sofa", "person with clothes"]);
        assert_eq!(c[2].prompt, "person with clothes,people");
        assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_ne!(c[0].colour, c[1].colour);
    }

    #[test]
    fn preset_classes_keep_their_ids_and_prompts() {
        let voc = preset_classes(&ClassSet::voc()).unwrap();
        let c = parse_classes("person,diningtable", Some(&voc)).unwrap();
        assert_eq!((c[0].id, c[1].id), (15, 11));
        assert_eq!(c[0].prompt, "person with clothes,people,human");
        assert_eq!(c[0].colour, viz::voc_colour(15));
    }

    #[test]
    fn bad_class_lists_say_what_is_wrong() {
        let voc = preset_classes(&ClassSet::voc()).unwrap();
        let err = |t: &str, p: Option<&[SegmentClass]>| parse_classes(t, p).unwrap_err().0;
        assert!(err("", None).contains("empty class name"));
        assert!(err("cat,,dog", None).contains("item 2"));
        assert!(err("cat;", None).contains("empty"));
        assert!(err("cat,dog,cat", None).contains("`cat` is given twice"));
        let e = err("Cat, cat", None);
        assert!(e.contains("`Cat` and `cat` name the same class"), "{e}");
        assert!(
            err("dog,Person with clothes;people,person WITH clothes", None)
                .contains("`Person with clothes` and `person WITH clothes`")
        );
        assert!(err("kitty", Some(&voc)).contains("`kitty` is not a class"));
        assert!(err("person;human", Some(&voc)).contains("synonyms"));
        let many: Vec<String> = (0..255).map(|i| format!("c{i}")).collect();
        assert!(err(&many.join(","), None).contains("at most 254"));
        assert_eq!(
            parse_classes(&many[..254].join(","), None).unwrap().len(),
            254
        );
    }

    #[test]
    fn default_vocabulary_is_voc_then_the_rest_of_coco() {
        let v = default_vocabulary();
        assert_eq!(v.names.len(), 80);
        assert_eq!(&v.names[..20], &ClassSet::voc().names[..]);
        assert_eq!(v.names[20], "truck");
        assert!(!v.background.contains(&"keyboard".to_string()));
        let mut sorted = v.names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 80);
    }

    #[test]
    fn a_class_is_not_also_a_background_word() {
        let classes = parse_classes("Grass,cat", None).unwrap();
        let words = ["ground", "grass", "sky"].map(String::from).to_vec();
        assert_eq!(
            background_without_classes(words, &classes),
            ["ground", "sky"].map(String::from).to_vec()
        );
    }
}
