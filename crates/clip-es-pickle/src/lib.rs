//! Readers for the Python pickle-based files CLIP-ES exchanges with PyTorch and numpy.
//!
//! - [`unpickle`]: a pickle VM (protocols 0-5) producing a [`Value`] tree, never executing
//!   anything (CPython `Lib/pickle.py` semantics).
//! - [`read_torch_archive`] / [`TorchArchive`]: `torch.save` zip archives, TorchScript archives
//!   such as OpenAI's `ViT-B-16.pt` (what the reference's `clip.load` reads), and legacy
//!   non-zip `torch.save` files, giving every tensor under its `state_dict()` name.
//! - [`read_npy`] / [`read_npy_dict`]: `.npy` files, including the reference's
//!   `np.save(path, {"keys": ..., "attn_highres": ...})` CAM files
//!   (`generate_cams_voc12.py`); [`encode_npy`] / [`encode_npy_dict`] write them back in the
//!   same layout.
//!
//! ```no_run
//! use clip_es_pickle::{read_npy_dict, read_torch_archive};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), clip_es_pickle::PickleError> {
//! for (name, tensor) in read_torch_archive(Path::new("ViT-B-16.pt"))? {
//!     // C order, little-endian; borrowed from the storage when already contiguous.
//!     let bytes = tensor.contiguous_le_bytes();
//!     println!("{name}: {} {:?} ({} bytes)", tensor.dtype, tensor.shape, bytes.len());
//! }
//! let cams = read_npy_dict(Path::new("2007_000032.npy"))?;
//! let keys = cams[0].1.to_i64_vec()?; // "keys"
//! let attn = cams[1].1.to_f32_vec(); // "attn_highres", float16 widened
//! # let _ = (keys, attn);
//! # Ok(())
//! # }
//! ```

mod dtype;
mod elements;
mod error;
mod npy;
mod torch;
mod value;
mod vm;

pub use dtype::DType;
pub use error::PickleError;
pub use npy::{
    array_from_value, arrays_from_dict, encode_npy, encode_npy_dict, parse_npy, read_npy,
    read_npy_dict, NdArray, NpyContent, PickledArray,
};
pub use torch::{
    is_tensor_object, read_torch_archive, TensorInfo, TorchArchive, TorchStorage, TorchTensor,
};
pub use value::{Object, Value};
pub use vm::{unpickle, unpickle_prefix};
