//! The size of the image the ViT sees, one rule for every stage that runs the image tower (the
//! CAMs, label-free tagging, prompt sharpness, the clip-decoder's feature cache and its
//! prediction), and the check of that size against a memory limit before anything large is
//! allocated. docs/algorithm.md ("Image side") describes the reference's input: every image at
//! its own size, sides rounded up to the patch size (`generate_cams_voc12.py`
//! `img_ms_and_flip` with scale 1).
//!
//! Attention is a tokens x tokens matrix, so the memory of the CAM stage grows with the fourth
//! power of the side and its time with the fourth power too: a 4000x3000 photo is 47 000
//! tokens of ViT-B/16, about 9 GB per attention matrix. clip-es therefore differs from the
//! reference for large images only: an image whose longer side exceeds `max_side` (1024 by
//! default, so VOC and COCO images, at most 640 pixels, and the usual web photos are
//! untouched) is downscaled for the ViT (Pillow bicubic, aspect ratio kept), and what comes out
//! of the ViT (CAMs, features, logits) is upsampled to the original size, as every CAM is.
//! Whatever `max_side`, the memory the input needs is estimated by the caller's stage and an
//! input over the limit is an error naming the image, never an abort.

use crate::config::VisionConfig;

/// The default of `--max-side`: VOC and COCO images (at most 640 pixels) are never scaled,
/// and a phone photo stays under 3 GB in all with ViT-B/16 (1024x768: 3 073 tokens).
pub const DEFAULT_MAX_SIDE: usize = 1024;

/// The side of CLIP's own input: a downscale never takes an image's shorter side below it.
pub const CLIP_INPUT_SIDE: usize = 224;

/// The size `width` x `height` scaled so that its longer side is at most `max_side` (0: never
/// scaled), aspect ratio kept, before the rounding to whole patches. Returns (width, height).
///
/// A long thin image (a 10000x100 panorama) would have its shorter side shrunk below one patch,
/// leaving CLIP nothing to see: the downscale stops where the shorter side reaches
/// [`CLIP_INPUT_SIDE`] (or its own size, when smaller), the longer side then exceeding
/// `max_side`. The memory check of [`vit_input_size`] still bounds what such an image may take.
pub fn scaled_to_max_side(width: usize, height: usize, max_side: usize) -> (usize, usize) {
    let (long, short) = (width.max(height), width.min(height));
    if max_side == 0 || long <= max_side {
        return (width, height);
    }
    let floor = short.min(CLIP_INPUT_SIDE);
    let s = max_side as f64 / long as f64;
    let s = if ((short as f64 * s).round() as usize) < floor {
        floor as f64 / short as f64
    } else {
        s
    };
    let scale = |v: usize| ((v as f64 * s).round() as usize).clamp(1, long);
    (scale(width), scale(height))
}

/// What an input may take: the limit in bytes, what the memory is for (named in the message:
/// "CAMs", "tags", "features") and the stage's estimate of its peak for an input of
/// (width, height) pixels.
pub struct MemoryBudget<'a> {
    pub limit: u64,
    pub purpose: &'a str,
    pub peak_bytes: &'a dyn Fn(usize, usize) -> u64,
}

/// An image whose ViT input needs more memory than allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the image is {width}x{height} (ViT input {input_width}x{input_height}, {tokens} tokens): its {purpose} need about {need} of memory, over the limit of {limit}; lower --max-side (or raise --memory-limit)",
    need = human_bytes(*.need),
    limit = human_bytes(*.limit)
)]
pub struct InputSizeError {
    pub width: usize,
    pub height: usize,
    pub input_width: usize,
    pub input_height: usize,
    pub tokens: usize,
    pub purpose: String,
    pub need: u64,
    pub limit: u64,
}

/// The ViT input of a `width` x `height` image: [`scaled_to_max_side`], then each side rounded
/// up to whole patches (at least one; the reference's rounding). With a `budget`, the input
/// whose estimate exceeds its limit is refused with a message naming the sizes, the estimate,
/// the limit and the options that help. Returns (input width, input height).
pub fn vit_input_size(
    width: usize,
    height: usize,
    patch: usize,
    max_side: usize,
    budget: Option<&MemoryBudget<'_>>,
) -> Result<(usize, usize), InputSizeError> {
    let patch = patch.max(1);
    let (sw, sh) = scaled_to_max_side(width, height, max_side);
    let round_up = |v: usize| v.max(1).div_ceil(patch) * patch;
    let (iw, ih) = (round_up(sw), round_up(sh));
    if let Some(b) = budget {
        let need = (b.peak_bytes)(iw, ih);
        if need > b.limit {
            return Err(InputSizeError {
                width,
                height,
                input_width: iw,
                input_height: ih,
                tokens: (iw / patch) * (ih / patch) + 1,
                purpose: b.purpose.to_string(),
                need,
                limit: b.limit,
            });
        }
    }
    Ok((iw, ih))
}

/// Bytes [`crate::VisionTransformer::encode`] allocates at its peak for an `input_width` x
/// `input_height` input without kept attention maps (an upper estimate, the weights excluded).
/// Every buffer is then linear in the tokens: a block holds its input, `ln_1`, `qkv` (3 wide),
/// the keys transposed and the attention output, or `ln_2`, the MLP hidden (4 wide) and its
/// projection, about 8 rows of the width per token (12 counted); each of `threads` scores 64
/// query rows against every token; the input pixels and their patches; the last block's
/// output and a channels-first copy of it. `patch_embeddings` adds one embedding per token.
pub fn encode_peak_bytes(
    vision: &VisionConfig,
    input_width: usize,
    input_height: usize,
    threads: usize,
    patch_embeddings: bool,
) -> u64 {
    let patch = vision.patch_size.max(1) as u64;
    let (h, w) = (input_height as u64, input_width as u64);
    let t = (h / patch) * (w / patch) + 1;
    let d = vision.width as u64;
    let blocks = 12 * t * d * 4;
    let attention = threads.max(1) as u64 * 64 * t * 4;
    let pixels = 3 * h * w * 4 * 2;
    let features = 2 * t * d * 4;
    let embeddings = if patch_embeddings { 2 * t * d * 4 } else { 0 };
    blocks + attention + pixels + features + embeddings
}

/// Formats bytes for messages (MB below 10 GB, else GB).
pub fn human_bytes(b: u64) -> String {
    if b < 10_000_000_000 {
        format!("{} MB", b.div_ceil(1_000_000))
    } else {
        format!("{:.0} GB", b as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(w: usize, h: usize, max_side: usize) -> (usize, usize) {
        vit_input_size(w, h, 16, max_side, None).unwrap()
    }

    #[test]
    fn small_images_keep_their_size_large_ones_shrink() {
        // VOC/COCO sizes are untouched: only the patch rounding of the reference.
        assert_eq!(size(500, 375, 640), (512, 384));
        assert_eq!(size(480, 640, 640), (480, 640));
        assert_eq!(size(4000, 3000, 640), (640, 480));
        assert_eq!(size(3000, 4000, 640), (480, 640));
        assert_eq!(size(4000, 3000, 1024), (1024, 768));
        assert_eq!(size(4000, 3000, 0), (4000, 3008));
        // A thin panorama is not shrunk below CLIP's input side (or its own, when smaller).
        assert_eq!(size(10000, 100, 1024), (10000, 112));
        assert_eq!(size(100, 10000, 1024), (112, 10000));
        assert_eq!(size(5000, 1000, 1024), (1120, 224));
        assert_eq!(size(20000, 300, 1024), (14944, 224));
        // Below one patch: one patch.
        assert_eq!(size(10, 5, 1024), (16, 16));
    }

    #[test]
    fn an_input_over_the_budget_is_refused_with_the_sizes_and_the_ways_out() {
        let per_pixel = |w: usize, h: usize| (w * h) as u64 * 100;
        let budget = MemoryBudget {
            limit: 100 * 1024 * 768,
            purpose: "features",
            peak_bytes: &per_pixel,
        };
        assert_eq!(
            vit_input_size(4000, 3000, 16, 1024, Some(&budget)),
            Ok((1024, 768))
        );
        let e = vit_input_size(4000, 3000, 16, 0, Some(&budget)).unwrap_err();
        assert_eq!(
            (e.input_width, e.input_height, e.tokens),
            (4000, 3008, 47001)
        );
        let m = e.to_string();
        assert!(
            m.starts_with("the image is 4000x3000 (ViT input 4000x3008, 47001 tokens): its features need about 1204 MB")
                && m.contains("over the limit of 79 MB")
                && m.contains("--max-side")
                && m.contains("--memory-limit"),
            "{m}"
        );
    }

    #[test]
    fn encode_estimate_is_linear_in_the_tokens() {
        let vit_b16 = VisionConfig {
            width: 768,
            layers: 12,
            heads: 12,
            patch_size: 16,
            grid: 14,
            image_size: 224,
        };
        let small = encode_peak_bytes(&vit_b16, 512, 384, 2, false);
        let large = encode_peak_bytes(&vit_b16, 1024, 768, 2, false);
        assert!(large > 3 * small && large < 5 * small, "{small} {large}");
        assert!(encode_peak_bytes(&vit_b16, 1024, 768, 2, true) > large);
        // 1024x768: 3 073 tokens, well under half a GB.
        assert!(large < 500_000_000, "{large}");
    }
}
