//! The clip-decoder's inputs: frozen CLIP patch features of each training image (and of its
//! mirror image, for flip augmentation), computed once with `clip-es-model` and cached on disk
//! as float16 safetensors (`<cache>/<id>.safetensors`: `features` and `features_flip`, each
//! [dim, gh, gw]). The CLIP input is the image resized (bicubic) to the next multiples of the
//! patch size, the same input the CAM stage uses at scale 1; as there, an image whose longer
//! side exceeds the maximum side (1024 by default) is first scaled down for the ViT (its labels
//! are resized to the feature grid anyway), and the memory of the forward pass is estimated
//! before it runs: an image over the limit is an error naming it, not an abort.

use crate::error::{Result, TrainError};
use crate::memory::available_bytes;
use clip_es_model::{VisionOptions, VisionTransformer};
use half::f16;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Patch features of one image, channels-first [dim, gh, gw].
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub dim: usize,
    pub gh: usize,
    pub gw: usize,
    pub data: Vec<f32>,
}

/// The default longest side of the CLIP input, that of the CAM stage's `--max-side`: VOC and
/// COCO images (at most 640 pixels) keep their size; a 4000x3000 photo becomes 1024x768, 3 073
/// tokens of ViT-B/16 instead of 47 001 (whose forward pass takes minutes and gigabytes).
pub use clip_es_model::input_size::DEFAULT_MAX_SIDE;

/// The size `h` x `w` scaled so that its longer side is at most `max_side` (0: never scaled),
/// aspect ratio kept, before the rounding to whole patches: the ViT input rule of every stage
/// ([`clip_es_model::input_size::scaled_to_max_side`], a thin panorama keeping its shorter
/// side at 224 pixels or more). Returns (height, width).
pub fn fit_max_side(h: usize, w: usize, max_side: usize) -> (usize, usize) {
    let (sw, sh) = clip_es_model::input_size::scaled_to_max_side(w, h, max_side);
    (sh, sw)
}

/// Bytes [`extract_view`] allocates at its peak for an `h` x `w` CLIP input (an upper
/// estimate, the weights excluded; [`clip_es_model::input_size::encode_peak_bytes`] with
/// rayon's threads).
pub fn extract_peak_bytes(vision: &clip_es_model::VisionConfig, h: usize, w: usize) -> u64 {
    clip_es_model::input_size::encode_peak_bytes(vision, w, h, rayon::current_num_threads(), false)
}

/// The last block's `ln_1` output at the patch tokens of `image` (flipped first if asked), at
/// the CLIP input size of the CAM stage's scale 1 (the image rounded up to whole patches) after
/// scaling down to `max_side` ([`clip_es_model::vit_input_size`], the rule of every stage),
/// when it fits in `memory_limit` bytes.
pub fn extract(
    vision: &VisionTransformer,
    path: &Path,
    flip: bool,
    max_side: usize,
    memory_limit: Option<u64>,
) -> Result<FeatureMap> {
    let bad = |message: String| TrainError::BadImage {
        path: path.to_path_buf(),
        message,
    };
    let img = clip_es_image::DecodedImage::open(path).map_err(|e| bad(e.to_string()))?;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let peak = |w: usize, h: usize| extract_peak_bytes(vision.config(), h, w);
    let budget = memory_limit.map(|limit| clip_es_model::MemoryBudget {
        limit,
        purpose: "features",
        peak_bytes: &peak,
    });
    let (w, h) = clip_es_model::vit_input_size(
        iw,
        ih,
        vision.config().patch_size,
        max_side,
        budget.as_ref(),
    )
    .map_err(|e| bad(e.to_string()))?;
    extract_view(vision, &img, path, h, w, flip)
}

/// [`extract`] of an image already decoded (`path` names it in errors), its CLIP input resized
/// to `h` x `w` (multiples of the patch size).
pub fn extract_view(
    vision: &VisionTransformer,
    img: &clip_es_image::DecodedImage,
    path: &Path,
    h: usize,
    w: usize,
    flip: bool,
) -> Result<FeatureMap> {
    let bad = |message: String| TrainError::BadImage {
        path: path.to_path_buf(),
        message,
    };
    let mut input = img.clip_input(h, w).map_err(|e| bad(e.to_string()))?;
    if flip {
        input = input.flipped_horizontally();
    }
    let opts = VisionOptions {
        keep_attention_from: vision.layers(),
        positional_embedding: None,
        patch_embeddings: false,
    };
    let out = vision
        .encode(&input.data, input.height, input.width, opts)
        .map_err(|e| bad(e.to_string()))?;
    let (gh, gw, d) = (out.grid_h, out.grid_w, vision.width());
    let mut data = vec![0f32; d * gh * gw];
    for t in 0..gh * gw {
        let row = &out.last_ln_1[(t + 1) * d..(t + 2) * d];
        for (c, &v) in row.iter().enumerate() {
            data[c * gh * gw + t] = v;
        }
    }
    Ok(FeatureMap {
        dim: d,
        gh,
        gw,
        data,
    })
}

pub fn cache_path(cache: &Path, id: &str) -> PathBuf {
    cache.join(format!("{id}.safetensors"))
}

/// How large the CLIP input of the feature cache may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureBudget {
    /// Longest side of the CLIP input (0: the image's own size).
    pub max_side: usize,
    /// Bytes one image's forward pass may take (`None`: what the system has available when
    /// the image starts).
    pub memory_limit: Option<u64>,
}

impl Default for FeatureBudget {
    fn default() -> Self {
        FeatureBudget {
            max_side: DEFAULT_MAX_SIDE,
            memory_limit: None,
        }
    }
}

/// Computes and writes the cache file of one image unless it exists already.
pub fn cache_one(
    vision: &VisionTransformer,
    image: &Path,
    cache: &Path,
    id: &str,
    budget: FeatureBudget,
) -> Result<()> {
    let path = cache_path(cache, id);
    if path.is_file() {
        return Ok(());
    }
    let limit = budget.memory_limit.or_else(available_bytes);
    let a = extract(vision, image, false, budget.max_side, limit)?;
    let b = extract(vision, image, true, budget.max_side, limit)?;
    let enc = |m: &FeatureMap| -> Vec<u8> {
        m.data
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect()
    };
    let (ba, bb) = (enc(&a), enc(&b));
    let shape = vec![a.dim, a.gh, a.gw];
    let views = vec![
        (
            "features".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), &ba)
                .expect("view"),
        ),
        (
            "features_flip".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape, &bb)
                .expect("view"),
        ),
    ];
    let meta: std::collections::HashMap<String, String> =
        [("image".to_string(), image.display().to_string())]
            .into_iter()
            .collect();
    let bytes =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| TrainError::Features {
            path: path.clone(),
            message: e.to_string(),
        })?;
    clip_es_data::atomic::write_bytes_atomic(&path, &bytes).map_err(|e| TrainError::io(&path, e))
}

/// Reads a cache file: (features, features of the mirror image).
pub fn read_cached(path: &Path) -> Result<(FeatureMap, FeatureMap)> {
    let bad = |message: String| TrainError::Features {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out: BTreeMap<&str, FeatureMap> = BTreeMap::new();
    for key in ["features", "features_flip"] {
        let v = st.tensor(key).map_err(|e| bad(format!("{key}: {e}")))?;
        if v.dtype() != safetensors::Dtype::F16 || v.shape().len() != 3 {
            return Err(bad(format!(
                "{key}: expected a float16 [dim, gh, gw] tensor"
            )));
        }
        let data = v
            .data()
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let s = v.shape();
        out.insert(
            key,
            FeatureMap {
                dim: s[0],
                gh: s[1],
                gw: s[2],
                data,
            },
        );
    }
    let b = out.remove("features_flip").expect("read");
    let a = out.remove("features").expect("read");
    if (a.dim, a.gh, a.gw) != (b.dim, b.gh, b.gw) {
        return Err(bad("features and features_flip differ in shape".into()));
    }
    Ok((a, b))
}

/// Caches the features of every item (in parallel; existing files are kept). Failures are
/// collected and reported together, each naming its image.
pub fn cache_all(
    vision: &VisionTransformer,
    items: &[crate::data::Item],
    cache: &Path,
    budget: FeatureBudget,
    tick: &(dyn Fn() + Sync),
) -> Result<()> {
    use rayon::prelude::*;
    std::fs::create_dir_all(cache).map_err(|e| TrainError::io(cache, e))?;
    let errors: Vec<String> = items
        .par_iter()
        .filter_map(|it| {
            let r = cache_one(vision, &it.image, cache, &it.id, budget);
            tick();
            r.err().map(|e| e.to_string())
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "{} image(s) without features:\n  {}",
            errors.len(),
            errors.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_sizes_its_input_by_the_rule_of_every_stage() {
        // VOC sizes keep their size; large photos shrink to the maximum side.
        assert_eq!(fit_max_side(375, 500, DEFAULT_MAX_SIDE), (375, 500));
        assert_eq!(fit_max_side(3000, 4000, 1024), (768, 1024));
        // A thin panorama keeps its shorter side (the CAM stage's rule): 40 pixels, not 20.
        assert_eq!(fit_max_side(40, 2000, 1024), (40, 2000));
        assert_eq!(fit_max_side(1000, 5000, 1024), (224, 1120));
    }

    /// An image whose forward pass would exceed the limit is an error naming it and
    /// `--max-side`, before the ViT runs; a smaller maximum side lets it fit.
    #[test]
    fn the_limit_is_checked_before_the_forward_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = root.join("../clip-es-model/tests/fixtures/tiny-deep-hf");
        let clip = clip_es_model::Clip::load(model.to_str().unwrap()).unwrap();
        let vision = clip.into_vision();
        let image = root.join("../../examples/images/astronaut.jpg");
        let e = extract(&vision, &image, false, 0, Some(5_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("astronaut.jpg") && e.contains("512x512") && e.contains("--max-side"),
            "{e}"
        );
        let f = extract(&vision, &image, false, 256, Some(5_000_000)).unwrap();
        assert_eq!((f.gh, f.gw), (16, 16));
    }
}
