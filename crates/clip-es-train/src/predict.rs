//! Inference (library entry point of `clip-es predict`): label maps at the image size, as
//! deeplab-pytorch `main.py` `test` does (logits upsampled bilinearly, align_corners=false, to the
//! image, argmax over classes).

use crate::data::{load_bgr, MEAN_BGR};
use crate::deeplab::bilinear;
use crate::error::Result;
use crate::features::extract;
use crate::model::{Model, Net};
use burn::tensor::module::interpolate;
use burn::tensor::{Tensor, TensorData};
use clip_es_model::VisionTransformer;
use std::path::Path;

/// Class scores at the image size, [classes, h, w] row-major, with (h, w).
pub fn logits_at_image_size(model: &Model, logits: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let _ = model;
    interpolate(logits, bilinear([h, w]))
}

fn argmax(t: Tensor<4>) -> Vec<u8> {
    let [_, c, h, w] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    (0..h * w)
        .map(|p| {
            let mut best = 0;
            for k in 1..c {
                if v[k * h * w + p] > v[best * h * w + p] {
                    best = k;
                }
            }
            best as u8
        })
        .collect()
}

/// The label map of one image (DeepLab-v2: BGR minus the Caffe mean at full size, MSC max).
pub fn predict_deeplab(model: &Model, image: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let (mut img, h, w) = load_bgr(image)?;
    for c in 0..3 {
        for v in &mut img[c * h * w..(c + 1) * h * w] {
            *v -= MEAN_BGR[c];
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(img, [1, 3, h, w]), &model.store.device);
    let logits = model.forward_eval(x);
    Ok((argmax(logits_at_image_size(model, logits, h, w)), h, w))
}

/// The label map of one image by the clip-decoder, on the CLIP features of the image and of its
/// mirror image (the two logit maps averaged, the second flipped back).
pub fn predict_decoder(
    model: &Model,
    vision: &VisionTransformer,
    image: &Path,
) -> Result<(Vec<u8>, usize, usize)> {
    let (h, w) = {
        let img =
            clip_es_image::load_rgb(image).map_err(|e| crate::error::TrainError::BadImage {
                path: image.to_path_buf(),
                message: e.to_string(),
            })?;
        (img.height as usize, img.width as usize)
    };
    let Net::Decoder(_) = &model.net else {
        panic!("predict_decoder needs a clip-decoder")
    };
    let mut sum: Option<Tensor<4>> = None;
    for flip in [false, true] {
        let f = extract(vision, image, flip)?;
        let x = Tensor::<4>::from_data(
            TensorData::new(f.data, [1, f.dim, f.gh, f.gw]),
            &model.store.device,
        );
        let mut l = interpolate(model.forward_eval(x), bilinear([h, w]));
        if flip {
            l = l.flip([3]);
        }
        sum = Some(match sum {
            None => l,
            Some(s) => s + l,
        });
    }
    Ok((argmax(sum.expect("two passes")), h, w))
}
