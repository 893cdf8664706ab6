//! Image input for CLIP-ES. PLACEHOLDER: the decoder here is the `image` crate's; it is to be
//! replaced by libjpeg-turbo-exact decoding (mozjpeg) and PIL-exact resampling.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    Decode { path: PathBuf, message: String },
}

/// An 8-bit RGB image, row-major, interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Loads any supported file as 8-bit RGB (grayscale replicated, alpha dropped, palette expanded).
pub fn load_rgb(path: &Path) -> Result<Rgb8Image, ImageError> {
    let img = image::open(path).map_err(|e| ImageError::Decode { path: path.to_path_buf(), message: e.to_string() })?;
    let rgb = img.to_rgb8();
    Ok(Rgb8Image { width: rgb.width(), height: rgb.height(), data: rgb.into_raw() })
}
