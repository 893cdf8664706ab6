//! JPEG decoding as Pillow's `JpegDecode.c` and OpenCV's `grfmt_jpeg.cpp` drive libjpeg-turbo.
//!
//! Both leave libjpeg's defaults alone (ISLOW integer IDCT, fancy upsampling, no block
//! smoothing effect on complete images) and only choose the output colour space: grey for one
//! component, RGB for three, CMYK for four (YCCK is converted to CMYK by libjpeg). mozjpeg's
//! decoder is libjpeg-turbo's, so the pixels are the same; the golden tests check it.
//!
//! libjpeg reports fatal errors through `error_exit`, which here unwinds (the mozjpeg crate is
//! built for that) and is caught at the boundary. Warnings are recorded: a file whose data ends
//! early (libjpeg then warns and pads) is rejected, as Pillow rejects it ("image file is
//! truncated"; Pillow's suspending reader fails even when only the EOI marker is missing).
//! Other warnings (corrupt-data notices) are ignored, as by Pillow and OpenCV.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg::Decompress;
use mozjpeg_sys as ffi;

/// Decoded samples as libjpeg hands them out (CMYK not inverted).
pub(crate) struct JpegRaster {
    pub width: u32,
    pub height: u32,
    /// 1 (grey), 3 (RGB) or 4 (CMYK)
    pub components: usize,
    pub data: Vec<u8>,
}

/// A fatal libjpeg error, carried through the unwind.
struct JpegFatal(String);

thread_local! {
    /// Warning codes libjpeg emitted during the current decode on this thread.
    static WARNINGS: RefCell<Vec<c_int>> = const { RefCell::new(Vec::new()) };
}

fn message_of(cinfo: &mut ffi::jpeg_common_struct) -> String {
    // SAFETY: `err` points at the error manager installed by `decode`; `format_message` writes
    // at most JMSG_LENGTH_MAX (80) bytes into the buffer (the binding declares the buffer as a
    // shared reference, so the function pointer is re-typed with a mutable one, as the mozjpeg
    // crate itself does).
    unsafe {
        let err = &*cinfo.err;
        let code = err.msg_code;
        match err.format_message {
            Some(f) => {
                type Fmt = unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]);
                let f: Fmt = std::mem::transmute::<
                    unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &[u8; 80]),
                    Fmt,
                >(f);
                let mut buf = [0u8; 80];
                f(cinfo, &mut buf);
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..end]).into_owned()
            }
            None => format!("libjpeg error code {code}"),
        }
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let msg = message_of(cinfo);
    // resume_unwind skips the panic hook: nothing is printed, the decode just stops.
    resume_unwind(Box::new(JpegFatal(msg)));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level < 0 {
        // SAFETY: `err` is the live error manager of this decompressor.
        let code = unsafe { (*cinfo.err).msg_code };
        WARNINGS.with(|w| w.borrow_mut().push(code));
    }
}

fn error_manager() -> ffi::jpeg_error_mgr {
    // SAFETY: jpeg_std_error fills every field of a zeroed manager.
    let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe {
        ffi::jpeg_std_error(&mut err);
    }
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

fn truncated_so_far() -> bool {
    WARNINGS.with(|w| w.borrow().contains(&(ffi::JWRN_JPEG_EOF as c_int)))
}

/// Decodes a JPEG held in memory. Errors are plain messages; the caller adds the file name.
pub(crate) fn decode(bytes: &[u8]) -> Result<JpegRaster, String> {
    WARNINGS.with(|w| w.borrow_mut().clear());
    let outcome = catch_unwind(AssertUnwindSafe(|| decode_inner(bytes)));
    WARNINGS.with(|w| w.borrow_mut().clear());
    match outcome {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<JpegFatal>() {
            Ok(fatal) => Err(format!("broken JPEG data: {}", fatal.0)),
            // Anything else is a genuine bug (a panic in the wrapper): report it, don't hide it.
            Err(other) => {
                let text = other
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| other.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(format!("JPEG decoder failed: {text}"))
            }
        },
    }
}

fn decode_inner(bytes: &[u8]) -> Result<JpegRaster, String> {
    let dec = Decompress::builder()
        .with_err(error_manager())
        .from_mem(bytes)
        .map_err(|e| format!("not a JPEG image: {e}"))?;
    let (width, height) = (dec.width(), dec.height());
    if width == 0 || height == 0 {
        return Err("JPEG image has no pixels".into());
    }
    if (width as u64) * (height as u64) > crate::MAX_PIXELS {
        return Err(format!(
            "{width}x{height} pixels exceeds the limit of {}",
            crate::MAX_PIXELS
        ));
    }
    let components = dec.components().len();
    let color_space = match components {
        1 => ffi::J_COLOR_SPACE::JCS_GRAYSCALE,
        3 => ffi::J_COLOR_SPACE::JCS_RGB,
        4 => ffi::J_COLOR_SPACE::JCS_CMYK,
        n => return Err(format!("cannot handle {n}-layer images")),
    };
    let mut started = dec
        .to_colorspace(color_space)
        .map_err(|e| format!("cannot start decoding: {e}"))?;
    if truncated_so_far() {
        return Err("image file is truncated".into());
    }
    let data: Vec<u8> = started
        .read_scanlines()
        .map_err(|e| format!("cannot read pixels: {e}"))?;
    if truncated_so_far() {
        return Err("image file is truncated".into());
    }
    started
        .finish()
        .map_err(|e| format!("cannot finish decoding: {e}"))?;
    if truncated_so_far() {
        return Err("image file is truncated (no end-of-image marker)".into());
    }
    let expected = width * height * components;
    if data.len() != expected {
        return Err(format!(
            "decoder produced {} bytes, expected {expected}",
            data.len()
        ));
    }
    Ok(JpegRaster {
        width: width as u32,
        height: height as u32,
        components,
        data,
    })
}

/// The EXIF orientation (TIFF tag 0x0112) of a JPEG's APP1 segment, as OpenCV's ExifReader reads
/// it; `None` when absent or unreadable.
pub(crate) fn exif_orientation(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return None;
    }
    let mut pos = 2usize;
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xFF {
            return None;
        }
        let marker = bytes[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            pos += 2;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan / end of image: no EXIF before the data
        }
        let len = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        if len < 2 || pos + 2 + len > bytes.len() {
            return None;
        }
        let segment = &bytes[pos + 4..pos + 2 + len];
        if marker == 0xE1 && segment.starts_with(b"Exif\0\0") {
            return tiff_orientation(&segment[6..]);
        }
        pos += 2 + len;
    }
    None
}

/// Orientation from a TIFF-structured EXIF block (IFD0 only, as OpenCV reads it).
pub(crate) fn tiff_orientation(tiff: &[u8]) -> Option<u16> {
    if tiff.len() < 8 {
        return None;
    }
    let big = match &tiff[..2] {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = tiff.get(o..o + 2)?;
        Some(if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count {
        let entry = ifd + 2 + 12 * i;
        if u16_at(entry)? == 0x0112 {
            // type SHORT (3), count 1: the value sits in the first two bytes of the value field
            return u16_at(entry + 8);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"\xFF\xD8\xFF\xE0garbage").is_err());
        let mut noise = vec![0xFF, 0xD8];
        noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        assert!(decode(&noise).is_err());
    }

    #[test]
    fn tiff_orientation_both_byte_orders() {
        // II, 42, IFD at 8, one entry: 0x0112 SHORT 1 value 6
        let le = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0,
        ];
        assert_eq!(tiff_orientation(&le), Some(6));
        let be = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0, 0, 0,
        ];
        assert_eq!(tiff_orientation(&be), Some(8));
        assert_eq!(tiff_orientation(&be[..12]), None);
    }
}
