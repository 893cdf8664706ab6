//! Image input for CLIP-ES, bit-exact with the reference's Python stack.
//!
//! Mirrors docs/algorithm.md ("Image side", step 5 of "Class-aware attention affinity") and
//! the reference (linyq2117/CLIP-ES at the commit pinned there): `generate_cams_voc12.py` (`_transform_resize`, `img_ms_and_flip`, the `cv2.resize` of the
//! refined CAM) plus `eval_cam_with_crf.py` (`cv2.imread(path, cv2.IMREAD_COLOR)`):
//!
//! - [`DecodedImage::open`] decodes like `PIL.Image.open` + `load()`: JPEG through the
//!   libjpeg-turbo code of mozjpeg (ISLOW IDCT, fancy upsampling, as Pillow and OpenCV use it),
//!   PNG through the `png` crate unpacked the way Pillow unpacks each bit depth and colour type.
//!   The image keeps Pillow's mode (`1`, `L`, `LA`, `I;16`, `RGB`, `RGBA`, `P`, `CMYK`).
//! - [`DecodedImage::clip_input`] is torchvision's `Resize((h, w), BICUBIC)` on that PIL image
//!   (Pillow's fixed-point resampler, in the image's own mode), `convert("RGB")`, `ToTensor`,
//!   `Normalize(CLIP mean, std)`: a CHW `f32` buffer equal to the reference tensor.
//! - [`load_rgb`] is `cv2.imread(path, cv2.IMREAD_COLOR)` with the channels in RGB order.
//! - [`resize_bilinear_f32`] is `cv2.resize(map, (w, h), interpolation=cv2.INTER_LINEAR)` on a
//!   single-channel `float32` map, as OpenCV's x86-64 wheels compute it (through Intel IPP).
//!
//! Verified against Pillow 13.0 (libjpeg-turbo 3.2), torchvision 0.29, OpenCV 5.0 (+ IPP
//! 2026.0) by `tools/golden_image.py` (committed goldens, `cargo test`) and
//! `tools/parity_image.py` (full-size photos, VOC fixture images): all bit-exact.
//!
//! Facts that the goldens pin down:
//! - Pillow and OpenCV decode JPEGs to the same pixels (both libjpeg-turbo, same settings), and
//!   so does mozjpeg's decoder (libjpeg-turbo 2.1 code): baseline 4:2:0/4:2:2/4:4:4/4:4:0/4:1:1,
//!   progressive, restart markers, greyscale, CMYK.
//! - CMYK JPEGs differ between the two: Pillow inverts the samples (Adobe polarity) and converts
//!   with `255 - k - c(255 - k)/255`; OpenCV uses `k - ((255 - c) k >> 8)` on the raw samples.
//! - `cv2.imread(IMREAD_COLOR)` of PNGs: 16-bit samples are cut to their high byte (Pillow's
//!   16-bit RGB/RGBA reading does the same), alpha is dropped without compositing, palettes
//!   are expanded (tRNS ignored), grey is replicated; the EXIF orientation is applied (JPEG
//!   APP1, PNG eXIf), which Pillow's `Image.open` does not do. clip-es ignores it in every
//!   stage by default ([`ExifOrientation`]), so that CAMs and masks share one pixel grid.
//! - `I;16` (16-bit grey PNG) follows Pillow: resized in 16 bits with double weights, then
//!   `convert("RGB")` saturates every value above 255 to 255 (no scaling), so such images
//!   reach CLIP almost white - as they do in the reference.
//! - torchvision's `ToTensor` divides by 255 (no reciprocal multiply); `Normalize` subtracts
//!   and divides in float32: a 256-entry table per channel reproduces it exactly.
//! - OpenCV float32 INTER_LINEAR: the IPP path (sources of at least 2 x 2) and OpenCV's own
//!   path (1-row/1-column sources, and everything without IPP) round differently; both are
//!   implemented. Without IPP an exact 2x shrink in both directions switches to INTER_AREA.

mod clip_input;
mod cv_imread;
mod cv_resize;
mod decode;
mod error;
mod format;
mod jpeg;
mod orientation;
mod pil_convert;
mod pil_resample;
mod pixels;
mod png_decode;

use std::path::Path;

pub use clip_input::{patch_multiple, ClipInput, CLIP_MEAN, CLIP_STD};
pub use cv_resize::{resize_bilinear_f32, resize_bilinear_f32_without_ipp};
pub use error::ImageError;
pub use orientation::{exif_orientation, ExifOrientation};
pub use pixels::{DecodedImage, PilMode, Rgb8Image, MAX_PIXELS};

/// `cv2.imread(path, cv2.IMREAD_COLOR)` with the channels reversed to RGB: what the reference's
/// CRF step sees, except that the EXIF orientation is ignored (the stored pixel grid, the one
/// [`DecodedImage::open`] and the CAM stage read). JPEG: libjpeg-turbo's pixels (grey
/// replicated; CMYK through OpenCV's own formula). PNG: 16-bit samples cut to their high byte,
/// alpha and tRNS dropped without compositing, palette expanded, grey replicated. Other formats
/// (BMP, TIFF, WebP, GIF) are decoded by the `image` crate without promising OpenCV's exact
/// pixels.
pub fn load_rgb(path: &Path) -> Result<Rgb8Image, ImageError> {
    Ok(cv_imread::imread_color(path, ExifOrientation::Ignore)?.0)
}

/// [`load_rgb`] with a choice about the EXIF orientation; also returns the file's orientation
/// tag (1 when none). With [`ExifOrientation::Apply`] this is exactly `cv2.imread`.
pub fn load_rgb_with(path: &Path, exif: ExifOrientation) -> Result<(Rgb8Image, u16), ImageError> {
    cv_imread::imread_color(path, exif)
}
