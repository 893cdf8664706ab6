//! Training data: image / pseudo-mask pairs, their validation, and deeplab-pytorch's
//! augmentation (`libs/datasets/base.py` lines 60-113 at 4219467f): random scale from a list
//! (image bilinear as `cv2.resize`, label nearest as PIL), padding at the bottom and right to the
//! crop size with the mean colour and label 255, a random crop, a random horizontal flip, then
//! the Caffe BGR mean subtracted.
//!
//! Every draw is a pure function of (seed, sample number): sample k of a run is item
//! `perm_e[k mod n]` of the epoch permutation `perm_e`, e = k / n, and its augmentation uses the
//! generator `Rng::derive(seed, AUG, k)`. A resumed run therefore sees exactly the samples of an
//! uninterrupted one.

use crate::error::{Result, TrainError};
use crate::loss::Labels;
use crate::rng::Rng;
use clip_es_data::IGNORE_LABEL as IGNORE;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The Caffe ImageNet mean in BGR order (deeplab-pytorch `configs/voc12.yaml`), in the float32
/// the network's input is computed in ([`clip_es_data::CAFFE_MEAN_BGR`] rounded).
pub const MEAN_BGR: [f32; 3] = [
    clip_es_data::CAFFE_MEAN_BGR[0] as f32,
    clip_es_data::CAFFE_MEAN_BGR[1] as f32,
    clip_es_data::CAFFE_MEAN_BGR[2] as f32,
];

const PERM: u64 = 1;
const AUG: u64 = 2;

/// One training pair.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: String,
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// The image file of an id, by the rule every stage uses ([`clip_es_data::split::image_path`]).
pub fn find_image(dir: &Path, id: &str) -> Result<PathBuf> {
    clip_es_data::split::image_path(dir, id).map_err(|message| TrainError::BadImage {
        path: dir.join(format!("{id}.jpg")),
        message,
    })
}

/// Ids of a split file, read as every stage reads them ([`clip_es_data::split::read_split`]:
/// plain ids or deeplab-pytorch `/JPEGImages/<id>.jpg ...` lines, ids checked with
/// [`clip_es_data::check_id`], repeated ids refused).
pub fn read_split(path: &Path) -> Result<Vec<String>> {
    clip_es_data::split::read_split(path).map_err(|e| match e {
        clip_es_data::split::IdFileError::Io { path, source } => TrainError::io(path, source),
        parse => TrainError::Config(parse.to_string()),
    })
}

/// An 8-bit label map from a grayscale or palette PNG (palette indices are the labels), read as
/// every stage reads label PNGs ([`clip_es_data::labels::read_label_png`]).
pub fn read_mask(path: &Path) -> Result<Labels> {
    use clip_es_data::labels::{read_label_png, LabelPngError};
    let map = read_label_png(path).map_err(|e| match e {
        LabelPngError::Io { path, source } => TrainError::io(path, source),
        LabelPngError::Invalid { path, message } => TrainError::BadMask { path, message },
    })?;
    Ok(Labels {
        n: 1,
        h: map.height,
        w: map.width,
        data: map.labels,
    })
}

/// Checks a mask against its image size and the class count: sizes must agree and every label
/// must be a class id or 255.
pub fn check_mask(
    path: &Path,
    mask: &Labels,
    image_hw: (usize, usize),
    n_classes: usize,
) -> Result<()> {
    if (mask.h, mask.w) != image_hw {
        return Err(TrainError::BadMask {
            path: path.to_path_buf(),
            message: format!(
                "size {}x{} (w x h) differs from its image's {}x{}",
                mask.w, mask.h, image_hw.1, image_hw.0
            ),
        });
    }
    if let Some(&v) = mask
        .data
        .iter()
        .find(|&&v| v != IGNORE && v as usize >= n_classes)
    {
        return Err(TrainError::BadMask {
            path: path.to_path_buf(),
            message: format!(
                "label {v}, but there are {n_classes} classes (ids 0..{}, or 255 for unconfident)",
                n_classes - 1
            ),
        });
    }
    Ok(())
}

/// The pairs of a split, every mask and image read and checked once (in parallel). All bad
/// pairs are reported in one error, each naming its file.
pub fn load_items(
    images: &Path,
    masks: &Path,
    split: &Path,
    n_classes: usize,
) -> Result<Vec<Item>> {
    let ids = read_split(split)?;
    let results: Vec<Result<(Item, bool)>> = ids
        .par_iter()
        .map(|id| {
            let image = find_image(images, id)?;
            let mask = masks.join(format!("{id}.png"));
            let m = read_mask(&mask)?;
            let img = clip_es_image::load_rgb(&image).map_err(|e| TrainError::BadImage {
                path: image.clone(),
                message: e.to_string(),
            })?;
            check_mask(
                &mask,
                &m,
                (img.height as usize, img.width as usize),
                n_classes,
            )?;
            let confident = m.data.iter().any(|&l| l != IGNORE);
            Ok((
                Item {
                    id: id.clone(),
                    image,
                    mask,
                },
                confident,
            ))
        })
        .collect();
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut any_confident = false;
    for r in results {
        match r {
            Ok((i, confident)) => {
                any_confident |= confident;
                items.push(i)
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(20);
        return Err(TrainError::Config(format!(
            "{n} bad training pair(s):\n  {}",
            errors.join("\n  ")
        )));
    }
    // Every pixel 255 leaves the loss nothing to learn from (0 at every iteration).
    if !items.is_empty() && !any_confident {
        return Err(TrainError::Config(format!(
            "{}: the masks of this split in {} have no confident pixel (every pixel is 255, \
             ignored by the loss): nothing to train on; make the masks with a lower confidence \
             threshold (masks --confidence)",
            split.display(),
            masks.display()
        )));
    }
    Ok(items)
}

/// An image as BGR float planes (CHW), 0..255.
pub fn load_bgr(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let img = clip_es_image::load_rgb(path).map_err(|e| TrainError::BadImage {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((bgr_planes(&img), img.height as usize, img.width as usize))
}

/// The BGR float planes (CHW, 0..255) of an RGB image.
pub fn bgr_planes(img: &clip_es_image::Rgb8Image) -> Vec<f32> {
    let n = img.height as usize * img.width as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        out[i] = px[2] as f32;
        out[n + i] = px[1] as f32;
        out[2 * n + i] = px[0] as f32;
    }
    out
}

/// Augmentation settings (deeplab-pytorch `configs/voc12.yaml`).
#[derive(Clone, Debug)]
pub struct TrainAugment {
    pub crop: usize,
    pub scales: Vec<f64>,
    pub flip: bool,
}

/// One augmented sample: BGR minus mean, CHW, crop x crop; its labels crop x crop.
pub fn augment(
    image: &[f32],
    h: usize,
    w: usize,
    mask: &Labels,
    aug: &TrainAugment,
    rng: &mut Rng,
) -> (Vec<f32>, Vec<u8>) {
    let s = aug.scales[rng.below(aug.scales.len())];
    let (nh, nw) = (((h as f64) * s) as usize, ((w as f64) * s) as usize);
    let (nh, nw) = (nh.max(1), nw.max(1));
    let plane: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            clip_es_image::resize_bilinear_f32(&image[c * h * w..(c + 1) * h * w], w, h, nw, nh)
        })
        .collect();
    let lab = mask.resize_nearest(nh, nw).data;
    let (ph, pw) = (nh.max(aug.crop), nw.max(aug.crop));
    let y0 = rng.below(ph - aug.crop + 1);
    let x0 = rng.below(pw - aug.crop + 1);
    let flip = aug.flip && rng.uniform() < 0.5;
    let c2 = aug.crop * aug.crop;
    let mut img = vec![0f32; 3 * c2];
    let mut out_lab = vec![IGNORE; c2];
    for y in 0..aug.crop {
        let sy = y0 + y;
        for x in 0..aug.crop {
            let sx = x0 + if flip { aug.crop - 1 - x } else { x };
            let o = y * aug.crop + x;
            if sy < nh && sx < nw {
                for c in 0..3 {
                    img[c * c2 + o] = plane[c][sy * nw + sx] - MEAN_BGR[c];
                }
                out_lab[o] = lab[sy * nw + sx];
            } // else: padding, the mean (0 after subtraction) and 255
        }
    }
    (img, out_lab)
}

/// Which item and which augmentation generator sample number `k` uses.
pub struct Sampler {
    seed: u64,
    n: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl Sampler {
    pub fn new(seed: u64, n: usize) -> Self {
        Sampler {
            seed,
            n,
            epoch: None,
        }
    }

    pub fn item(&mut self, k: u64) -> (usize, Rng) {
        let e = (k / self.n as u64) as usize;
        if self.epoch.as_ref().map(|(x, _)| *x) != Some(e) {
            self.epoch = Some((
                e,
                Rng::derive(self.seed, PERM, e as u64).permutation(self.n),
            ));
        }
        let perm = &self.epoch.as_ref().expect("set").1;
        (
            perm[(k % self.n as u64) as usize],
            Rng::derive(self.seed, AUG, k),
        )
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn read_split_refuses_ids_that_leave_the_folder() {
        let dir = std::env::temp_dir().join(format!("clip-es-train-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let split = dir.join("split.txt");
        std::fs::write(&split, "\u{feff}a\nb extra\n").unwrap();
        assert_eq!(read_split(&split).unwrap(), ["a", "b"]);
        // a deeplab-pytorch line names the image by its path: its id is the file stem
        std::fs::write(&split, "/JPEGImages/a.jpg /SegmentationClass/a.png\nb\n").unwrap();
        assert_eq!(read_split(&split).unwrap(), ["a", "b"]);
        for bad in ["..", "a\\b", "/JPEGImages/.."] {
            std::fs::write(&split, format!("a\n{bad}\n")).unwrap();
            let e = read_split(&split).unwrap_err().to_string();
            assert!(
                e.contains("split.txt:2:")
                    && (e.contains("not a plain file name") || e.contains("without a file name")),
                "{bad}: {e}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
