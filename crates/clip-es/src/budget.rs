//! Memory planning of the CAM and mask stages: the peak memory of one image's CAMs
//! ([`CamShape`], checked with the ViT input size by the rule every stage shares,
//! [`clip_es_model::vit_input_size`]: a large image is downscaled to `--max-side` for the ViT and
//! an input over the limit fails with a message, the run going on), the pseudo masks' and
//! prediction's CRF, and the limit the masks stage shares among the images its threads work on
//! ([`MemoryGate`]).
//!
//! Attention and the CAA affinity are tokens x tokens matrices, so memory grows with the fourth
//! power of the side: at 1024x768 ViT-B/16 has 3 073 tokens, about 1 GB for the image on top of
//! the model's weights; a 4000x3000 photo at its own size is 47 000 tokens, over 100 GB.

/// The default of `--max-side` and CLIP's input side (the rule lives in `clip-es-model`, below
/// this crate and the training crate).
pub use clip_es_model::input_size::{CLIP_INPUT_SIDE, DEFAULT_MAX_SIDE};

/// What the memory estimate of one image depends on.
#[derive(Clone, Copy, Debug)]
pub struct CamShape {
    /// Original image size (the CAMs are written at this size).
    pub height: usize,
    pub width: usize,
    /// ViT input size (multiples of the patch size).
    pub input_height: usize,
    pub input_width: usize,
    pub patch: usize,
    /// Transformer width and heads of the image tower.
    pub model_width: usize,
    pub heads: usize,
    /// Attention maps kept for CAA.
    pub attention_blocks: usize,
    /// Labels of the image (one CAM each).
    pub labels: usize,
    /// Also the unrefined CAMs.
    pub unrefined: bool,
    /// Threads working on the image.
    pub threads: usize,
}

impl CamShape {
    pub fn tokens(&self) -> usize {
        (self.input_height / self.patch) * (self.input_width / self.patch) + 1
    }

    /// Bytes the CAM stage allocates at its peak for this image (an upper estimate, the model's
    /// weights excluded). The tokens x tokens float32 matrices dominate: the kept attention maps,
    /// the last block's per-head probabilities and, during its backward pass, one score-gradient
    /// matrix per head being worked on; then the CAA affinity (Sinkhorn copy, symmetrised,
    /// product). The rest is linear in the pixels or the tokens.
    pub fn peak_bytes(&self) -> u64 {
        let t = self.tokens() as u64;
        let tt = t * t;
        let kept = self.attention_blocks as u64;
        let heads = self.heads as u64;
        let busy = heads.min(self.threads.max(1) as u64);
        let gradcam = (kept + heads + busy + 1) * tt;
        let affinity = (kept + 4) * tt;
        let square = gradcam.max(affinity) * 4;
        // Activations of one block (qkv, MLP hidden, residual, caches) and the im2col patches.
        let d = self.model_width as u64;
        let activations =
            16 * t * d * 4 + 3 * (self.input_height * self.input_width) as u64 * 4 * 2;
        // Decoded and resized image, the CAMs at full size (float32 + float16 + file bytes).
        let pixels = (self.height * self.width) as u64;
        let maps = self.labels as u64 * if self.unrefined { 2 } else { 1 };
        let outputs = pixels * 4 + maps * pixels * (4 + 2 + 2);
        square + activations + outputs
    }
}

// What this process may still allocate, read from /proc; shared with the training crate's
// feature cache and prediction, which cannot depend on this crate.
pub use clip_es_train::memory::{available_bytes, human_bytes};

/// Bytes the masks stage allocates at its peak for one image of `pixels` pixels and `labels`
/// labels (background included): an upper estimate fitted to measured peaks (`/usr/bin/time
/// -v`, one thread, noisy photos, the worst case for the bilateral lattice): with the CRF
/// 229 MB at 1000x750 with 2 labels, 368 MB with 10, 960 MB at 2000x1500 and 3.72 GB at
/// 4000x3000 with 4; the estimate gives 247 MB, 391 MB, 1.08 GB and 4.29 GB. The permutohedral
/// lattices dominate (about 260 bytes a pixel), then the label-major marginals and messages.
pub fn mask_peak_bytes(pixels: usize, labels: usize, crf: bool) -> u64 {
    let (n, m) = (pixels as u64, labels as u64);
    let per_pixel = if crf { 260 + 24 * m } else { 40 + 12 * m };
    n * per_pixel + 16_000_000
}

/// Bytes `predict --crf` allocates at its peak for one image of `pixels` pixels and `labels`
/// classes, besides its network: an upper estimate fitted to measured peaks (`/usr/bin/time
/// -v`, 2 threads, noise photos, tiny DeepLab-v2): 250 MB at 500x375 and 911 MB at 1000x750
/// with 3 classes, 3.62 GB at 2000x1500 with 3, 293 MB and 1.09 GB at 500x375 and 1000x750
/// with 21; the estimate gives 259 MB, 989 MB, 3.91 GB, 313 MB and 1.21 GB. Over four times
/// the pseudo masks' CRF per pixel: deeplab-pytorch's bilateral kernel (srgb 3, on the
/// mean-subtracted image wrapped to uint8) puts nearly every pixel of a textured photo on
/// lattice points of its own. The scores' softmax and unary are included.
pub fn predict_crf_peak_bytes(pixels: usize, labels: usize) -> u64 {
    (pixels as u64) * (1250 + 16 * labels as u64) + 16_000_000
}

/// Why a `width` x `height` image with `labels` labels gets no pseudo mask under `limit` bytes:
/// the estimate, the limit and the ways out (shared by the masks stage and `segment`).
pub fn mask_over_limit(
    width: usize,
    height: usize,
    labels: usize,
    crf: bool,
    limit: u64,
) -> String {
    let need = mask_peak_bytes(width * height, labels, crf);
    let without_crf = if crf {
        format!(
            " or use --no-crf (about {})",
            human_bytes(mask_peak_bytes(width * height, labels, false))
        )
    } else {
        String::new()
    };
    format!(
        "the image is {width}x{height} with {labels} labels: its pseudo mask needs about {} of memory, over the limit of {}; raise --memory-limit{without_crf}",
        human_bytes(need),
        human_bytes(limit)
    )
}

/// A memory limit shared by the images a stage works on at once: each image reserves its
/// estimate before its large allocations and waits while the others hold too much; an image
/// whose estimate alone exceeds the limit is refused at once.
#[derive(Debug)]
pub struct MemoryGate {
    limit: u64,
    reserved: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
}

/// Memory held from a [`MemoryGate`] until dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    gate: &'a MemoryGate,
    bytes: u64,
}

impl MemoryGate {
    pub fn new(limit: u64) -> Self {
        MemoryGate {
            limit,
            reserved: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserves `bytes`, waiting until they fit beside what other images hold. `Err(limit)`
    /// when `bytes` alone exceed the limit (waiting would never help).
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, u64> {
        if bytes > self.limit {
            return Err(self.limit);
        }
        let mut held = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing held: always admitted, so one image at a time always makes progress.
        while *held > 0 && *held + bytes > self.limit {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        *held += bytes;
        Ok(Reservation { gate: self, bytes })
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        *self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = self.gate.reserved.lock().unwrap_or_else(|p| p.into_inner());
        *held -= self.bytes;
        self.gate.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_estimate_covers_the_measured_peaks() {
        // (pixels, labels, measured peak RSS in bytes)
        for (n, m, peak) in [
            (750_000, 2, 228_928_000u64),
            (750_000, 10, 367_744_000),
            (3_000_000, 4, 959_672_000),
            (12_000_000, 4, 3_719_112_000),
        ] {
            let e = mask_peak_bytes(n, m, true);
            assert!(
                e >= peak && e <= peak + peak / 4,
                "{n} px, {m} labels: {e} vs {peak}"
            );
        }
        assert!(mask_peak_bytes(12_000_000, 4, false) < mask_peak_bytes(12_000_000, 4, true) / 3);
    }

    #[test]
    fn predict_crf_estimate_covers_the_measured_peaks() {
        // (pixels, classes, measured peak RSS of the whole run in bytes)
        for (n, m, peak) in [
            (187_500, 3, 261_768_000u64),
            (750_000, 3, 922_664_000),
            (3_000_000, 3, 3_632_340_000),
            (187_500, 21, 304_972_000),
            (750_000, 21, 1_097_816_000),
        ] {
            let e = predict_crf_peak_bytes(n, m);
            assert!(
                e >= peak - 12_000_000 && e <= peak + peak / 4,
                "{n} px, {m} classes: {e} vs {peak}"
            );
        }
    }

    #[test]
    fn gate_refuses_too_much_and_waits_for_room() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gate = MemoryGate::new(100);
        assert_eq!(gate.reserve(101).unwrap_err(), 100);
        let a = gate.reserve(60).unwrap();
        assert_eq!(gate.reserved(), 60);
        let admitted = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _b = gate.reserve(50).unwrap();
                admitted.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            // 60 + 50 > 100: the second image waits.
            assert!(!admitted.load(Ordering::SeqCst));
            drop(a);
        });
        assert!(admitted.load(Ordering::SeqCst));
        assert_eq!(gate.reserved(), 0);
        // With nothing held, anything up to the limit is admitted at once.
        let _c = gate.reserve(100).unwrap();
    }

    fn vit_b16(h: usize, w: usize, max_side: usize) -> CamShape {
        let (iw, ih) = clip_es_model::vit_input_size(w, h, 16, max_side, None).unwrap();
        CamShape {
            height: h,
            width: w,
            input_height: ih,
            input_width: iw,
            patch: 16,
            model_width: 768,
            heads: 12,
            attention_blocks: 8,
            labels: 3,
            unrefined: false,
            threads: 2,
        }
    }

    #[test]
    fn estimates_scale_with_tokens_squared() {
        let voc = vit_b16(375, 500, 640).peak_bytes();
        assert!(voc > 50_000_000 && voc < 300_000_000, "{voc}");
        let photo = vit_b16(3000, 4000, 640).peak_bytes();
        assert!(photo < 1_000_000_000, "{photo}");
        let photo = vit_b16(3000, 4000, DEFAULT_MAX_SIDE).peak_bytes();
        assert!(photo < 1_800_000_000, "{photo}");
        let full = vit_b16(3000, 4000, 0).peak_bytes();
        assert!(full > 100_000_000_000, "{full}");
        let check = |h: usize, w: usize, max_side: usize| {
            let peak = |iw: usize, ih: usize| {
                let mut shape = vit_b16(h, w, max_side);
                (shape.input_width, shape.input_height) = (iw, ih);
                shape.peak_bytes()
            };
            let budget = clip_es_model::MemoryBudget {
                limit: 4_000_000_000,
                purpose: "CAMs",
                peak_bytes: &peak,
            };
            clip_es_model::vit_input_size(w, h, 16, max_side, Some(&budget))
        };
        let e = check(3000, 4000, 0).unwrap_err().to_string();
        assert!(
            e.contains("4000x3000") && e.contains("4000 MB") && e.contains("47001 tokens"),
            "{e}"
        );
        assert!(check(375, 500, 640).is_ok());
    }
}
