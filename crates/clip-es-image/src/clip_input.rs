//! The CLIP input tensor of the reference (docs/algorithm.md, "Image side",
//! steps 2-3; reference `generate_cams_voc12.py:_transform_resize` and `img_ms_and_flip`):
//! `Resize((h, w), BICUBIC)` on the PIL image in its own mode, `convert("RGB")`, torchvision
//! `ToTensor` (`x.float().div(255)`) and `Normalize(mean, std)` (`sub_(mean).div_(std)`), all in
//! float32 in that order, giving a CHW buffer.

use crate::{DecodedImage, ImageError, Rgb8Image};

/// CLIP's normalisation constants as the reference writes them (Python floats, made float32
/// by torchvision: hence the f64 -> f32 rounding rather than f32 literals).
pub const CLIP_MEAN: [f32; 3] = [
    0.48145466_f64 as f32,
    0.4578275_f64 as f32,
    0.40821073_f64 as f32,
];
pub const CLIP_STD: [f32; 3] = [
    0.26862954_f64 as f32,
    0.26130258_f64 as f32,
    0.27577711_f64 as f32,
];

/// A normalised image, channel-major (CHW): `data[c * height * width + y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipInput {
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// `(ceil(h / patch) * patch, ceil(w / patch) * patch)`: the reference's input size
/// (`img_ms_and_flip` with scale 1.0). `patch` must be positive.
pub fn patch_multiple(h: usize, w: usize, patch: usize) -> (usize, usize) {
    assert!(patch > 0, "patch size must be positive");
    (h.div_ceil(patch) * patch, w.div_ceil(patch) * patch)
}

/// `((v / 255) - mean[c]) / std[c]` in float32 for every byte value, per channel.
fn normalize_table() -> [[f32; 256]; 3] {
    let mut lut = [[0.0f32; 256]; 3];
    for (c, row) in lut.iter_mut().enumerate() {
        for (v, slot) in row.iter_mut().enumerate() {
            *slot = ((v as f32) / 255.0f32 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    lut
}

impl ClipInput {
    /// `ToTensor` + `Normalize` of an 8-bit RGB image.
    pub fn from_rgb8(img: &Rgb8Image) -> ClipInput {
        let (h, w) = (img.height as usize, img.width as usize);
        let lut = normalize_table();
        let plane = h * w;
        let mut data = vec![0.0f32; 3 * plane];
        let (r, rest) = data.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            r[i] = lut[0][px[0] as usize];
            g[i] = lut[1][px[1] as usize];
            b[i] = lut[2][px[2] as usize];
        }
        ClipInput {
            data,
            height: h,
            width: w,
        }
    }

    /// The image mirrored left-right (`torch.flip(image, [-1])` in `img_ms_and_flip`).
    pub fn flipped_horizontally(&self) -> ClipInput {
        let mut data = self.data.clone();
        for row in data.chunks_exact_mut(self.width.max(1)) {
            row.reverse();
        }
        ClipInput {
            data,
            height: self.height,
            width: self.width,
        }
    }

    /// One channel plane (0 = R, 1 = G, 2 = B).
    pub fn channel(&self, c: usize) -> &[f32] {
        let plane = self.height * self.width;
        &self.data[c * plane..(c + 1) * plane]
    }
}

impl DecodedImage {
    /// The reference's CLIP input at `out_h` x `out_w`: Pillow bicubic resize in the image's own
    /// mode, `convert("RGB")`, `ToTensor`, `Normalize`. Bit-exact with torchvision.
    pub fn clip_input(&self, out_h: usize, out_w: usize) -> Result<ClipInput, ImageError> {
        let (oh, ow) = (to_u32(out_h)?, to_u32(out_w)?);
        Ok(ClipInput::from_rgb8(&self.resized_rgb8(oh, ow)?))
    }

    /// [`Self::clip_input`] at the image's size rounded up to multiples of `patch`
    /// (`img_ms_and_flip(..., scales=[1.0], patch_size=patch)`).
    pub fn clip_input_for_patch(&self, patch: usize) -> Result<ClipInput, ImageError> {
        if patch == 0 {
            return Err(ImageError::InvalidArgument(
                "patch size must be positive".into(),
            ));
        }
        let (h, w) = patch_multiple(self.height as usize, self.width as usize, patch);
        self.clip_input(h, w)
    }
}

fn to_u32(v: usize) -> Result<u32, ImageError> {
    u32::try_from(v).map_err(|_| ImageError::InvalidArgument(format!("size {v} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_multiple_rounds_up() {
        assert_eq!(patch_multiple(375, 500, 16), (384, 512));
        assert_eq!(patch_multiple(384, 512, 16), (384, 512));
        assert_eq!(patch_multiple(1, 17, 16), (16, 32));
    }

    #[test]
    fn flip_reverses_rows() {
        let x = ClipInput {
            data: (0..12).map(|v| v as f32).collect(),
            height: 2,
            width: 2,
        };
        let f = x.flipped_horizontally();
        assert_eq!(f.data[..4], [1.0, 0.0, 3.0, 2.0]);
        assert_eq!(f.flipped_horizontally(), x);
    }
}
