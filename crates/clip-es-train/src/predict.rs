//! Inference of a trained network on one image: class scores (logits) at the image size, as
//! deeplab-pytorch `main.py` `test` computes them (lines 282-368 at 4219467f: logits upsampled
//! bilinearly, align_corners=false, to the image; argmax over classes). The stage around it
//! (files, CRF, overlays) is `clip_es::predict`.

use crate::data::{bgr_planes, MEAN_BGR};
use crate::deeplab::bilinear;
use crate::error::{Result, TrainError};
use crate::features::extract_view;
use crate::model::{Model, Net};
use burn::tensor::module::interpolate;
use burn::tensor::{Tensor, TensorData};
use clip_es_image::{DecodedImage, Rgb8Image};
use clip_es_model::VisionTransformer;

/// Class scores of one image: `data[c * height * width + y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Scores {
    fn from_tensor(t: Tensor<4>) -> Scores {
        let [_, classes, height, width] = t.dims();
        let data = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 logits");
        Scores {
            classes,
            height,
            width,
            data,
        }
    }

    /// The label of each pixel: the first class of highest score (`np.argmax`).
    pub fn argmax(&self) -> Vec<u8> {
        let n = self.height * self.width;
        (0..n)
            .map(|p| {
                let mut best = 0;
                for k in 1..self.classes {
                    if self.data[k * n + p] > self.data[best * n + p] {
                        best = k;
                    }
                }
                best as u8
            })
            .collect()
    }

    /// Softmax over classes per pixel (`F.softmax(logit, dim=1)` in float32), class-major.
    pub fn softmax(&self) -> Vec<f32> {
        let n = self.height * self.width;
        let mut out = vec![0f32; self.data.len()];
        for p in 0..n {
            let max = (0..self.classes)
                .map(|k| self.data[k * n + p])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for k in 0..self.classes {
                let e = (self.data[k * n + p] - max).exp();
                out[k * n + p] = e;
                sum += e;
            }
            for k in 0..self.classes {
                out[k * n + p] /= sum;
            }
        }
        out
    }
}

/// DeepLab-v2's scores of one image: BGR minus the Caffe mean at full size, through the network
/// (with its multi-scale inputs, the max of their logits), upsampled to the image.
pub fn scores_deeplab(model: &Model, image: &Rgb8Image) -> Result<Scores> {
    let Net::DeepLab(net) = &model.net else {
        return Err(TrainError::Config(
            "scores_deeplab needs a DeepLab-v2 model".into(),
        ));
    };
    let (h, w) = (image.height as usize, image.width as usize);
    // A multi-scale input of no pixel would panic inside the network: this image fails instead.
    if let Some(s) = net
        .config
        .msc_scales
        .iter()
        .find(|&&s| (h as f64 * s as f64) < 1.0 || (w as f64 * s as f64) < 1.0)
    {
        return Err(TrainError::Config(format!(
            "the image is {w}x{h}: at input scale {s} not one pixel is left; use larger --scales"
        )));
    }
    let mut img = bgr_planes(image);
    for c in 0..3 {
        for v in &mut img[c * h * w..(c + 1) * h * w] {
            *v -= MEAN_BGR[c];
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(img, [1, 3, h, w]), &model.store.device);
    let logits = model.forward_eval(x);
    Ok(Scores::from_tensor(interpolate(logits, bilinear([h, w]))))
}

/// The clip-decoder's scores of one image: the mean of the logits of every view (each scale of
/// `scales`, the CLIP input `ceil(scale * side / patch) * patch` pixels, and with `flip` also
/// its mirror image, flipped back), each upsampled to the image.
pub fn scores_decoder(
    model: &Model,
    vision: &VisionTransformer,
    image: &DecodedImage,
    path: &std::path::Path,
    scales: &[f64],
    flip: bool,
) -> Result<Scores> {
    let Net::Decoder(_) = &model.net else {
        return Err(TrainError::Config(
            "scores_decoder needs a clip-decoder model".into(),
        ));
    };
    if scales.is_empty() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(TrainError::Config(format!(
            "scales must be positive numbers, got {scales:?}"
        )));
    }
    let (h, w) = (image.height() as usize, image.width() as usize);
    let patch = vision.config().patch_size;
    let mut sum: Option<Tensor<4>> = None;
    let mut views = 0;
    for &s in scales {
        let vh = ((s * h as f64 / patch as f64).ceil() as usize).max(1) * patch;
        let vw = ((s * w as f64 / patch as f64).ceil() as usize).max(1) * patch;
        for mirrored in [false, true] {
            if mirrored && !flip {
                continue;
            }
            let f = extract_view(vision, image, path, vh, vw, mirrored)?;
            let x = Tensor::<4>::from_data(
                TensorData::new(f.data, [1, f.dim, f.gh, f.gw]),
                &model.store.device,
            );
            let mut l = interpolate(model.forward_eval(x), bilinear([h, w]));
            if mirrored {
                l = l.flip([3]);
            }
            views += 1;
            sum = Some(match sum {
                None => l,
                Some(acc) => acc + l,
            });
        }
    }
    let mean = sum.expect("one view at least").div_scalar(views as f32);
    Ok(Scores::from_tensor(mean))
}
