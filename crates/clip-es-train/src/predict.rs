//! Inference of a trained network on one image: class scores (logits) at the image size, as
//! deeplab-pytorch `main.py` `test` computes them (lines 282-368 at 4219467f: logits upsampled
//! bilinearly, align_corners=false, to the image; argmax over classes). The stage around it
//! (files, CRF, overlays) is `clip_es::predict`.
//!
//! Memory: [`scores_peak_bytes`] estimates what one image takes before it runs, so that the
//! stage can refuse an image that does not fit instead of aborting; the clip-decoder's ViT sees
//! at most a `max_side` input (large photos are scaled down for it and the logits upsampled to
//! the photo), and the input scales are bounded ([`check_scales`]).
//!
//! [`Predictor`] is what a front end uses: a checkpoint opened with the input scales of the
//! run (DeepLab-v2's multi-scale inputs are set here, nowhere else), the clip-decoder's CLIP
//! image tower, its scores of an image and the estimate of their memory.

use crate::data::{bgr_planes, MEAN_BGR};
use crate::deeplab::bilinear;
use crate::error::{Result, TrainError};
use crate::features::{extract_peak_bytes, extract_view, fit_max_side};
use crate::model::{Arch, Net, Network};
use burn::tensor::module::interpolate;
use burn::tensor::{Tensor, TensorData};
use clip_es_image::{DecodedImage, Rgb8Image};
use clip_es_model::VisionTransformer;

/// Class scores of one image: `data[c * height * width + y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScores {
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl ClassScores {
    /// The scores read back from the device. A GPU reports the failures of the queued work
    /// (a buffer larger than it allows, its memory exhausted) only here: they become this
    /// image's error, with the device's reason, not a panic of the run.
    fn from_tensor(t: Tensor<4>) -> Result<ClassScores> {
        let [_, classes, height, width] = t.dims();
        let data = t
            .try_into_data()
            .map_err(|e| {
                TrainError::Config(clip_es_gpu::device_failure(
                    &e.to_string(),
                    "predict it with --device flex (the clip-decoder: or lower --max-side)",
                ))
            })?
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| TrainError::Config(format!("the device returned no f32 data ({e:?})")))?;
        Ok(ClassScores {
            classes,
            height,
            width,
            data,
        })
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

/// The smallest and the largest input scale (`--scales` of `train` and `predict`). Below 0.1 a
/// VOC-sized image (500 pixels) is under 50 pixels, 6 logits across at DeepLab-v2's output
/// stride 8 and 3 patches for ViT-B/16: nothing is left to segment. Above 4 the input has 16
/// times the pixels and memory grows with it (a scale of 100 asks for 10 000 times the
/// memory of the image), far outside the 0.5-1.5 the networks are trained on.
pub const SCALE_RANGE: (f64, f64) = (0.1, 4.0);

/// Checks the input scales of `option` (training's random scales, prediction's inputs):
/// at least one, each in [`SCALE_RANGE`].
pub fn check_scales(option: &str, scales: &[f64]) -> Result<()> {
    let (lo, hi) = SCALE_RANGE;
    if scales.is_empty() {
        return Err(TrainError::Config(format!(
            "{option}: give at least one scale"
        )));
    }
    if let Some(s) = scales.iter().find(|s| !(lo..=hi).contains(*s)) {
        return Err(TrainError::Config(format!(
            "{option}: {s} is not in [{lo}, {hi}] (smaller inputs leave nothing to segment, \
             larger ones need memory growing with the square of the scale)"
        )));
    }
    Ok(())
}

/// Bytes DeepLab-v2's forward pass allocates at its peak for one `h` x `w` input (an upper
/// estimate fitted to measured peaks, see [`scores_peak_bytes`]). Every activation is linear in
/// the pixels and, but for the input and the logits, in the stem width: the last stage holds
/// 32 x width channels at output stride 8 (half the width in floats per input pixel) and a
/// bottleneck keeps its input, the NHWC copy its convolutions make, its output and the
/// shortcut at once; ASPP copies the last stage's output once more per rate.
fn deeplab_forward_bytes(width: usize, classes: usize, h: usize, w: usize) -> u64 {
    let n = (h * w) as u64;
    let (width, classes) = (width as u64, classes as u64);
    // floats per input pixel: input and its NHWC copy, 3 full-size copies of the stem at
    // stride 2 (width / 4 each), 4 of the last stage (width / 2 each), the logits.
    let floats = 3 * 3 + 3 * width / 4 + 4 * width / 2 + classes;
    n * floats * 4
}

/// Bytes [`scores_deeplab`] or [`scores_decoder`] (given `vision`, the CLIP of the decoder)
/// allocate at their peak for an `h` x `w` image, the weights excluded: the largest input's
/// forward pass (DeepLab-v2: the model's own multi-scale inputs; the decoder: its views at
/// `scales` after scaling to `max_side`, one at a time, a mirrored one costing the same) plus
/// the scores at the image size: the upsampled logits of a view, their running sum, the mean
/// and its host copy.
pub fn scores_peak_bytes(
    model: &Network,
    vision: Option<&clip_es_model::VisionConfig>,
    h: usize,
    w: usize,
    scales: &[f64],
    max_side: usize,
) -> u64 {
    let classes = model.n_classes() as u64;
    let pixels = (h * w) as u64;
    let scores = 4 * classes * pixels * 4;
    let forward = match (&model.net, vision) {
        (Net::DeepLab(n), _) => {
            let largest = n
                .config
                .msc_scales
                .iter()
                .map(|&s| s as f64)
                .fold(1.0f64, f64::max);
            let (sh, sw) = ((h as f64 * largest) as usize, (w as f64 * largest) as usize);
            deeplab_forward_bytes(n.config.width, model.n_classes(), sh, sw)
        }
        (Net::Decoder(d), Some(v)) => decoder_views(h, w, v.patch_size, scales, max_side)
            .map(|(vh, vw)| {
                let tokens = ((vh / v.patch_size) * (vw / v.patch_size)) as u64;
                let r = d.config.logit_scale() as u64;
                // The features twice (host and tensor), then at the logit stride the
                // upsampled projection, its NHWC copy and the fused output, and the logits.
                let decoder = tokens
                    * (2 * d.config.in_dim as u64 + r * r * (3 * d.config.hidden as u64 + classes))
                    * 4;
                extract_peak_bytes(v, vh, vw).max(decoder)
            })
            .max()
            .unwrap_or(0),
        (Net::Decoder(_), None) => 0,
    };
    forward + scores
}

/// The CLIP input of each scale of the decoder's views: the image scaled to `max_side` (0:
/// never) by the ViT input rule of every stage ([`fit_max_side`]), times the scale, rounded up
/// to whole patches (at scale 1: [`clip_es_model::vit_input_size`]).
fn decoder_views(
    h: usize,
    w: usize,
    patch: usize,
    scales: &[f64],
    max_side: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (bh, bw) = fit_max_side(h, w, max_side);
    scales.iter().map(move |&s| {
        let vh = ((s * bh as f64 / patch as f64).ceil() as usize).max(1) * patch;
        let vw = ((s * bw as f64 / patch as f64).ceil() as usize).max(1) * patch;
        (vh, vw)
    })
}

/// DeepLab-v2's scores of one image: BGR minus the Caffe mean at full size, through the network
/// (with its multi-scale inputs, the max of their logits), upsampled to the image.
pub fn scores_deeplab(model: &Network, image: &Rgb8Image) -> Result<ClassScores> {
    let Net::DeepLab(net) = &model.net else {
        return Err(TrainError::Config(
            "scores_deeplab needs a DeepLab-v2 model".into(),
        ));
    };
    let (h, w) = (image.height as usize, image.width as usize);
    // An input of no pixel has no logits to upsample.
    if let Some(s) = net
        .config
        .msc_scales
        .iter()
        .find(|&&s| (h as f64 * s as f64) < 1.0 || (w as f64 * s as f64) < 1.0)
    {
        return Err(TrainError::Config(format!(
            "the image is {w}x{h}: at scale {s} its input has no pixel; use larger --scales"
        )));
    }
    let mut img = bgr_planes(image);
    for c in 0..3 {
        for v in &mut img[c * h * w..(c + 1) * h * w] {
            *v -= MEAN_BGR[c];
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(img, [1, 3, h, w]), &model.device);
    let logits = model.forward_eval(x);
    ClassScores::from_tensor(interpolate(logits, bilinear([h, w])))
}

/// The clip-decoder's scores of one image: the mean of the logits of every view (each scale of
/// `scales`, the CLIP input `ceil(scale * side / patch) * patch` pixels, and with `flip` also
/// its mirror image, flipped back), each upsampled to the image. An image whose longer side
/// exceeds `max_side` (0: none) is scaled down to it first, as the CAM stage does, so that the
/// ViT's cost stays bounded; its logits are still upsampled to the image's own size.
pub fn scores_decoder(
    model: &Network,
    vision: &VisionTransformer,
    image: &DecodedImage,
    path: &std::path::Path,
    scales: &[f64],
    flip: bool,
    max_side: usize,
) -> Result<ClassScores> {
    let Net::Decoder(_) = &model.net else {
        return Err(TrainError::Config(
            "scores_decoder needs a clip-decoder model".into(),
        ));
    };
    check_scales("scales", scales)?;
    let (h, w) = (image.height() as usize, image.width() as usize);
    let patch = vision.config().patch_size;
    let mut sum: Option<Tensor<4>> = None;
    let mut views = 0;
    for (vh, vw) in decoder_views(h, w, patch, scales, max_side) {
        for mirrored in [false, true] {
            if mirrored && !flip {
                continue;
            }
            let f = extract_view(vision, image, path, vh, vw, mirrored)?;
            let x = Tensor::<4>::from_data(
                TensorData::new(f.data, [1, f.dim, f.gh, f.gw]),
                &model.device,
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
    ClassScores::from_tensor(mean)
}

/// A trained network opened for prediction with the run's input scales.
pub struct Predictor {
    model: Network,
    /// The checkpoint's metadata (its `clip_model` names the CLIP the decoder was trained on).
    meta: serde_json::Value,
    checkpoint: std::path::PathBuf,
    /// The scales of the run: DeepLab-v2's inputs (1.0 its own, the others its multi-scale
    /// inputs), the clip-decoder's views.
    scales: Vec<f64>,
    vision: Option<VisionTransformer>,
}

impl Predictor {
    /// Opens `checkpoint` on `device`. `scales` (checked with [`check_scales`]) replaces
    /// DeepLab-v2's multi-scale inputs and gives the clip-decoder's views; `None` keeps the
    /// checkpoint's inputs (a decoder: one view at scale 1).
    pub fn open(
        checkpoint: &std::path::Path,
        device: &str,
        scales: Option<&[f64]>,
    ) -> Result<Self> {
        if let Some(s) = scales {
            check_scales("--scales", s)?;
        }
        let dev = crate::device(device)?;
        let (mut model, _, meta) = Network::open(checkpoint, &dev)?;
        if let (Some(s), Net::DeepLab(n)) = (scales, &mut model.net) {
            // Scale 1.0 is the network's own input; the others are its extra MSC inputs.
            n.config.msc_scales = s.iter().filter(|&&v| v != 1.0).map(|&v| v as f32).collect();
        }
        Ok(Predictor {
            model,
            meta,
            checkpoint: checkpoint.to_path_buf(),
            scales: scales.map_or_else(|| vec![1.0], <[f64]>::to_vec),
            vision: None,
        })
    }

    pub fn arch(&self) -> Arch {
        self.model.arch()
    }

    /// Classes of the network, background included.
    pub fn n_classes(&self) -> usize {
        self.model.n_classes()
    }

    /// Whether the network runs on CLIP features (the clip-decoder), which
    /// [`Predictor::load_vision`] provides.
    pub fn needs_vision(&self) -> bool {
        self.arch() == Arch::ClipDecoder
    }

    /// Loads the CLIP image tower of a clip-decoder: `clip_model`, else the one the checkpoint
    /// was trained with, else ViT-B/16; its width must be the decoder's input. Nothing for
    /// DeepLab-v2.
    pub fn load_vision(&mut self, clip_model: Option<&str>) -> Result<()> {
        let Net::Decoder(d) = &self.model.net else {
            return Ok(());
        };
        let spec = clip_model
            .map(String::from)
            .or_else(|| self.meta["clip_model"].as_str().map(String::from))
            .unwrap_or_else(|| "ViT-B/16".into());
        let clip = clip_es_model::Clip::load(&spec)
            .map_err(|e| TrainError::Config(format!("loading CLIP `{spec}`: {e}")))?;
        let vision = clip.into_vision();
        if d.config.in_dim != vision.width() {
            return Err(TrainError::Config(format!(
                "{}: the decoder takes {}-d features, `{spec}` gives {}",
                self.checkpoint.display(),
                d.config.in_dim,
                vision.width()
            )));
        }
        self.vision = Some(vision);
        Ok(())
    }

    /// The scores of one image at its size ([`scores_deeplab`] or [`scores_decoder`] with the
    /// run's scales, `flip` and `max_side`); `rgb` is `image` as RGB, `path` names it in errors.
    pub fn scores(
        &self,
        image: &DecodedImage,
        rgb: &Rgb8Image,
        path: &std::path::Path,
        flip: bool,
        max_side: usize,
    ) -> Result<ClassScores> {
        match (&self.vision, self.needs_vision()) {
            (Some(v), _) => {
                scores_decoder(&self.model, v, image, path, &self.scales, flip, max_side)
            }
            (None, true) => Err(TrainError::Config(
                "the clip-decoder needs its CLIP image tower: call Predictor::load_vision".into(),
            )),
            (None, false) => scores_deeplab(&self.model, rgb),
        }
    }

    /// Bytes [`Predictor::scores`] allocates at its peak for an `h` x `w` image
    /// ([`scores_peak_bytes`]).
    pub fn peak_bytes(&self, h: usize, w: usize, max_side: usize) -> u64 {
        let vision = self.vision.as_ref().map(|v| v.config());
        scores_peak_bytes(&self.model, vision, h, w, &self.scales, max_side)
    }

    /// Whether an input is larger than the image (a scale above 1, DeepLab-v2's own multi-scale
    /// inputs included): smaller scales would lower the memory an image needs.
    pub fn enlarges_inputs(&self) -> bool {
        self.scales.iter().any(|&s| s > 1.0)
            || matches!(&self.model.net, Net::DeepLab(n) if n.config.msc_scales.iter().any(|&s| s > 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_outside_the_range_are_refused() {
        assert!(check_scales("--scales", &[0.5, 0.75, 1.0, 1.25, 1.5]).is_ok());
        assert!(check_scales("--scales", &[0.1, 4.0]).is_ok());
        for bad in [
            vec![],
            vec![100.0],
            vec![0.001],
            vec![0.0],
            vec![-1.0],
            vec![f64::NAN],
            vec![1.0, f64::INFINITY],
        ] {
            let e = check_scales("--scales", &bad).unwrap_err().to_string();
            assert!(e.starts_with("--scales:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn deeplab_estimate_covers_the_measured_peaks() {
        // (stem width, image size, measured peak RSS of `predict` without the CRF, bytes; the
        // run without an image takes about 12 MB)
        for (width, (w, h), peak) in [
            (2, (1000, 750), 46_224_000u64),
            (2, (2000, 1500), 129_780_000),
            (16, (1000, 750), 125_844_000),
            (16, (2000, 1500), 366_872_000),
        ] {
            let config = crate::deeplab::DeepLabConfig {
                width,
                blocks: [1, 1, 1, 1],
                ..crate::deeplab::DeepLabConfig::resnet101(3)
            };
            let model = Network::deeplab(config, &burn::tensor::Device::flex(), 0);
            let e = scores_peak_bytes(&model, None, h, w, &[1.0], 0);
            assert!(e >= peak, "width {width}, {w}x{h}: {e} vs {peak}");
        }
    }

    #[test]
    fn decoder_views_are_bounded_by_the_maximum_side() {
        let views: Vec<_> = decoder_views(4000, 6000, 16, &[1.0, 0.5], 1024).collect();
        assert_eq!(views, vec![(688, 1024), (352, 512)]);
        let views: Vec<_> = decoder_views(375, 500, 16, &[1.0], 1024).collect();
        assert_eq!(views, vec![(384, 512)]);
    }

    #[test]
    fn predictor_sets_the_multi_scale_inputs_from_the_run_scales() {
        let dir = std::env::temp_dir().join(format!("clip-es-predictor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = crate::deeplab::DeepLabConfig {
            width: 2,
            blocks: [1, 1, 1, 1],
            ..crate::deeplab::DeepLabConfig::resnet101(3)
        };
        let device = burn::tensor::Device::flex();
        let trained = Network::deeplab(config.clone(), &device, 7);
        let ckpt = dir.join("net.safetensors");
        trained
            .save(&ckpt, Default::default(), serde_json::json!({}))
            .unwrap();
        let image = Rgb8Image {
            width: 41,
            height: 33,
            data: (0..41 * 33 * 3).map(|i| (i * 37 % 251) as u8).collect(),
        };
        let decoded = DecodedImage::from_raw(
            41,
            33,
            clip_es_image::PilMode::Rgb,
            image.data.clone(),
            None,
        )
        .unwrap();
        // The run's scales 0.5 and 1: the network's own input and one extra MSC input of half
        // the size, whatever the checkpoint's multi-scale inputs were (0.5 and 0.75 here).
        let p = Predictor::open(&ckpt, "flex", Some(&[0.5, 1.0])).unwrap();
        assert!(!p.needs_vision() && !p.enlarges_inputs());
        let got = p.scores(&decoded, &image, &dir, false, 0).unwrap();
        let mut want_model = Network::open(&ckpt, &device).unwrap().0;
        if let Net::DeepLab(n) = &mut want_model.net {
            n.config.msc_scales = vec![0.5];
        }
        assert_eq!(got, scores_deeplab(&want_model, &image).unwrap());
        let own = Predictor::open(&ckpt, "flex", None).unwrap();
        let checkpoint_inputs = scores_deeplab(&Network::open(&ckpt, &device).unwrap().0, &image);
        assert_eq!(
            own.scores(&decoded, &image, &dir, false, 0).unwrap(),
            checkpoint_inputs.unwrap()
        );
        assert!(Predictor::open(&ckpt, "flex", Some(&[2.0]))
            .unwrap()
            .enlarges_inputs());
        let e = Predictor::open(&ckpt, "flex", Some(&[100.0]))
            .err()
            .unwrap();
        assert!(e.to_string().starts_with("--scales:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The decoder's ViT input at scale 1 is the one of every stage, thin panoramas included
    /// (their shorter side is not shrunk below 224 pixels, or its own size).
    #[test]
    fn decoder_views_follow_the_vit_input_rule() {
        for (h, w, max_side) in [(3000, 4000, 1024), (40, 2000, 1024), (1000, 5000, 1024)] {
            let (iw, ih) = clip_es_model::vit_input_size(w, h, 16, max_side, None).unwrap();
            let views: Vec<_> = decoder_views(h, w, 16, &[1.0], max_side).collect();
            assert_eq!(views, vec![(ih, iw)], "{w}x{h}");
        }
        let views: Vec<_> = decoder_views(40, 2000, 16, &[1.0], 1024).collect();
        assert_eq!(views, vec![(48, 2000)]);
    }
}
