//! The clip-decoder's inputs: frozen CLIP patch features of each training image (and of its
//! mirror image, for flip augmentation), computed once with `clip-es-model` and cached on disk
//! as float16 safetensors (`<cache>/<id>.safetensors`: `features` and `features_flip`, each
//! [dim, gh, gw]). The CLIP input is the image resized (bicubic) to the next multiples of the
//! patch size, the same input the CAM stage uses at scale 1.

use crate::error::{Result, TrainError};
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

/// The last block's `ln_1` output at the patch tokens of `image` (flipped first if asked), at
/// the CLIP input size of the CAM stage's scale 1 (the image rounded up to whole patches).
pub fn extract(vision: &VisionTransformer, path: &Path, flip: bool) -> Result<FeatureMap> {
    let img = clip_es_image::DecodedImage::open(path).map_err(|e| TrainError::BadImage {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let patch = vision.config().patch_size;
    let (h, w) = clip_es_image::patch_multiple(img.height() as usize, img.width() as usize, patch);
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

/// Computes and writes the cache file of one image unless it exists already.
pub fn cache_one(vision: &VisionTransformer, image: &Path, cache: &Path, id: &str) -> Result<()> {
    let path = cache_path(cache, id);
    if path.is_file() {
        return Ok(());
    }
    let a = extract(vision, image, false)?;
    let b = extract(vision, image, true)?;
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
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
    Ok(())
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
    tick: &(dyn Fn() + Sync),
) -> Result<()> {
    use rayon::prelude::*;
    std::fs::create_dir_all(cache).map_err(|e| TrainError::io(cache, e))?;
    let errors: Vec<String> = items
        .par_iter()
        .filter_map(|it| {
            let r = cache_one(vision, &it.image, cache, &it.id);
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
