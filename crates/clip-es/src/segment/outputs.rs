//! A photo's output files: their names, the check that no two photos' outputs (or an output
//! and an input) collide before the model loads, and writing them all or none.

use super::photos::{resolved, PlanError};
use super::{SegmentError, Segmented, Segmenter};
use crate::classes::SegmentClass;
use crate::masks::encode_label_png;
use crate::tags::Tags;
use crate::viz::{self, LegendEntry, OverlayStyle};
use clip_es_image::Rgb8Image;
use serde_json::json;
use std::path::{Path, PathBuf};

/// File names of one image's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputFiles {
    pub mask: PathBuf,
    pub overlay: PathBuf,
    pub heat_maps: Vec<PathBuf>,
    pub summary: PathBuf,
}

/// A class name made safe for a file name: lower case letters and digits, `-` for the rest.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "class".into()
    } else {
        s
    }
}

/// The output names for image `stem` in `dir`: `<stem>.png` (label mask), `<stem>.overlay.png`,
/// `<stem>.heat.<id>-<name>.png` per class, `<stem>.json`.
pub fn output_files(dir: &Path, stem: &str, classes: &[&SegmentClass]) -> OutputFiles {
    OutputFiles {
        mask: dir.join(format!("{stem}.png")),
        overlay: dir.join(format!("{stem}.overlay.png")),
        heat_maps: classes
            .iter()
            .map(|c| dir.join(format!("{stem}.heat.{}-{}.png", c.id, slug(&c.name))))
            .collect(),
        summary: dir.join(format!("{stem}.json")),
    }
}

/// Checks, before the model is loaded, that the run's outputs can be written and hurt nothing:
/// `out` is not an input folder nor inside one (a rerun would take the outputs for photos, and
/// `<out>/<photo>.png` could be a photo); no output file of one photo is also an output of
/// another photo (`x.jpg` writes `x.overlay.png`, which is also the mask of `x.overlay.jpg`)
/// or an input photo. Every file a photo may get is checked: in label-free mode a heat map for
/// each candidate. Then `out` is created and a file is written into it and removed
/// ([`crate::atomic::probe_dir`]), so a file, a read-only folder or a full disk is reported now.
/// `tags_only`: the run writes `<out>/tags.json` alone.
pub fn check_outputs(
    inputs: &[PathBuf],
    images: &[(PathBuf, String)],
    out: &Path,
    classes: &[&SegmentClass],
    tags_only: bool,
) -> Result<(), PlanError> {
    let out_at = resolved(out);
    for input in inputs.iter().filter(|p| p.is_dir()) {
        if out_at.starts_with(resolved(input)) {
            return Err(PlanError(format!(
                "--out {} is the input folder {} or inside it: outputs would be mixed with the photos (and taken for photos by a rerun); give an --out outside the input folders",
                out.display(),
                input.display()
            )));
        }
    }
    let photos: std::collections::HashMap<PathBuf, &Path> = images
        .iter()
        .map(|(p, _)| (resolved(p), p.as_path()))
        .collect();
    // Each file the run may write, with the photo it belongs to (none: the tag summary).
    let mut planned: Vec<(PathBuf, Option<&Path>)> = Vec::new();
    if tags_only {
        planned.push((out_at.join("tags.json"), None));
    } else {
        for (photo, stem) in images {
            let files = output_files(&out_at, stem, classes);
            for file in [files.mask, files.overlay, files.summary]
                .into_iter()
                .chain(files.heat_maps)
            {
                planned.push((file, Some(photo.as_path())));
            }
        }
    }
    let mut owners: std::collections::HashMap<&Path, &Path> = std::collections::HashMap::new();
    for (file, photo) in &planned {
        let shown = out.join(file.file_name().unwrap_or_default());
        if let Some(input) = photos.get(file) {
            return Err(PlanError(format!(
                "{}: the output {} of {} would replace this input photo; give another --out",
                input.display(),
                shown.display(),
                photo.map_or("the tags".to_string(), |p| p.display().to_string())
            )));
        }
        let Some(photo) = *photo else { continue };
        if let Some(first) = owners.insert(file.as_path(), photo) {
            return Err(PlanError(if first == photo {
                format!("{}: given twice", photo.display())
            } else {
                format!(
                    "{} and {} would both write {}: rename one of them, or segment them into different --out folders",
                    first.display(),
                    photo.display(),
                    shown.display()
                )
            }));
        }
    }
    crate::atomic::probe_dir(out).map_err(PlanError)
}

/// The legend of an overlay: the classes that have pixels in the mask, then "not confident"
/// when the mask has such pixels.
pub fn legend_entries(classes: &[&SegmentClass], labels: &[u8]) -> Vec<LegendEntry> {
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[l as usize] = true);
    let mut legend: Vec<LegendEntry> = classes
        .iter()
        .filter(|c| present[c.id as usize])
        .map(|c| LegendEntry {
            name: c.name.clone(),
            colour: c.colour,
        })
        .collect();
    if labels.contains(&viz::UNCONFIDENT) {
        legend.push(LegendEntry {
            name: "not confident".into(),
            colour: [200, 200, 200],
        });
    }
    legend
}

/// The overlay picture of a label mask: classes coloured by `classes` (looked up by label value).
pub fn overlay_picture(image: &Rgb8Image, labels: &[u8], classes: &[&SegmentClass]) -> viz::Canvas {
    let colour_of = |l: u8| classes.iter().find(|c| c.id == l).map(|c| c.colour);
    viz::overlay(
        image,
        labels,
        &colour_of,
        &legend_entries(classes, labels),
        &OverlayStyle::default(),
    )
}

/// Writes one image's outputs (heat maps, overlay, JSON summary, label mask) and returns their
/// names and the JSON summary. All or none: every file is first written under a temporary
/// name, and only when all are complete are they renamed into place (the mask last); a failure
/// (a full disk, a folder in the way) removes what this call wrote, so a photo that fails
/// leaves none of its files. Heat maps that the photo's previous summary lists and this run
/// did not write (a rerun with other classes) are removed: no stale file remains.
pub fn write_outputs(
    seg: &Segmenter,
    result: &Segmented,
    dir: &Path,
    stem: &str,
) -> Result<(OutputFiles, serde_json::Value), SegmentError> {
    let classes: Vec<&SegmentClass> = result.classes.iter().map(|&c| &seg.candidates[c]).collect();
    let files = output_files(dir, stem, &classes);
    let png_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: png::EncodingError| SegmentError::Invalid {
            path,
            message: format!("PNG encoding: {e}"),
        }
    };
    let (w, h) = (result.mask.width, result.mask.height);
    let n = w * h;
    let mut contents: Vec<(&Path, Vec<u8>)> = Vec::with_capacity(classes.len() + 3);
    for (k, (class, file)) in classes.iter().zip(&files.heat_maps).enumerate() {
        let cam = &result.cams.refined[k * n..(k + 1) * n];
        let pic = viz::heat_map(&result.image, cam, &class.name, 0.5);
        contents.push((file.as_path(), pic.encode_png().map_err(png_err(file))?));
    }
    let pic = overlay_picture(&result.image, &result.mask.labels, &classes);
    contents.push((
        files.overlay.as_path(),
        pic.encode_png().map_err(png_err(&files.overlay))?,
    ));

    let count = |v: u8| result.mask.labels.iter().filter(|&&l| l == v).count() as f64 / n as f64;
    let name_of = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
    let summary = json!({
        "image": result.path.display().to_string(),
        "width": w,
        "height": h,
        "exif_orientation": result.orientation,
        "orientation_applied": result.orientation != 1,
        "crf": seg.options.mask.use_crf,
        "scales": seg.cams().augment().scales,
        "flip": seg.cams().augment().flip,
        "classes": classes.iter().enumerate().map(|(k, c)| {
            let cam = &result.cams.refined[k * n..(k + 1) * n];
            json!({
                "name": c.name,
                "prompt": c.prompt,
                "id": c.id,
                "colour": c.colour,
                "pixel_fraction": count(c.id),
                "mean_cam": cam.iter().map(|&v| v as f64).sum::<f64>() / n as f64,
                "clip_probability": result.cams.probabilities[k],
            })
        }).collect::<Vec<_>>(),
        "background_fraction": count(0),
        "unconfident_fraction": count(viz::UNCONFIDENT),
        "tags": result.tags.as_ref().map(|t| tags_json(t, &seg.candidates)),
        "files": {
            "mask": name_of(&files.mask),
            "overlay": name_of(&files.overlay),
            "heat_maps": files.heat_maps.iter().map(|p| name_of(p)).collect::<Vec<_>>(),
        },
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON of plain values");
    contents.push((files.summary.as_path(), text.into_bytes()));
    let png = encode_label_png(&result.mask.labels, w, h, false).map_err(png_err(&files.mask))?;
    contents.push((files.mask.as_path(), png));
    let stale = previous_heat_maps(&files.summary, stem)
        .into_iter()
        .filter(|p| !files.heat_maps.contains(p))
        .collect::<Vec<_>>();
    write_all_or_none(&contents).map_err(|(path, source)| SegmentError::Io { path, source })?;
    for file in stale {
        // Best effort: the new results are complete whether or not an old picture goes.
        let _ = std::fs::remove_file(file);
    }
    Ok((files, summary))
}

/// The heat maps that an earlier run listed in the photo's summary `summary`, as paths beside
/// it. Only plain file names of this photo's heat maps (`<stem>.heat.*.png`) are taken, so a
/// damaged or edited summary cannot name any other file.
fn previous_heat_maps(summary: &Path, stem: &str) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(summary) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let dir = summary.parent().unwrap_or(Path::new(""));
    let prefix = format!("{stem}.heat.");
    json["files"]["heat_maps"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str())
                .filter(|n| {
                    n.starts_with(&prefix)
                        && n.ends_with(".png")
                        && crate::datasets::check_id(n).is_ok()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes every `(path, bytes)` under a temporary name, then renames them into place in order.
/// On any failure the temporary files and the files already renamed by this call are removed,
/// and the failing path is returned with its error.
fn write_all_or_none(files: &[(&Path, Vec<u8>)]) -> Result<(), (PathBuf, std::io::Error)> {
    let temps: Vec<PathBuf> = files
        .iter()
        .map(|(p, _)| crate::atomic::temp_path(p))
        .collect();
    let remove = |paths: &[PathBuf]| {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    };
    for (k, ((path, bytes), temp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::write(temp, bytes) {
            remove(&temps[..=k]);
            return Err((path.to_path_buf(), e));
        }
    }
    for (k, ((path, _), temp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::rename(temp, path) {
            remove(&temps[k..]);
            let done: Vec<PathBuf> = files[..k].iter().map(|(p, _)| p.to_path_buf()).collect();
            remove(&done);
            return Err((path.to_path_buf(), e));
        }
    }
    Ok(())
}

/// The chosen tags, then the ten best-scoring classes, as JSON.
pub fn tags_json(tags: &Tags, candidates: &[SegmentClass]) -> serde_json::Value {
    let entry = |c: usize| {
        let s = &tags.scores[c];
        json!({
            "name": candidates[c].name,
            "id": candidates[c].id,
            "score": s.score,
            "global": s.global,
            "local": s.local,
        })
    };
    let mut order: Vec<usize> = (0..tags.scores.len()).collect();
    order.sort_by(|&a, &b| {
        tags.scores[b]
            .score
            .total_cmp(&tags.scores[a].score)
            .then(a.cmp(&b))
    });
    json!({
        "chosen": tags.chosen.iter().map(|&c| entry(c)).collect::<Vec<_>>(),
        "best": order.iter().take(10).map(|&c| entry(c)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_file_names() {
        assert_eq!(slug("Person with clothes"), "person-with-clothes");
        assert_eq!(slug("!!"), "class");
        let c = SegmentClass {
            name: "teddy bear".into(),
            prompt: "teddy bear".into(),
            id: 78,
            colour: [0, 0, 0],
        };
        let f = output_files(Path::new("out"), "img", &[&c]);
        assert_eq!(f.heat_maps[0], Path::new("out/img.heat.78-teddy-bear.png"));
        assert_eq!(f.mask, Path::new("out/img.png"));
    }
}
