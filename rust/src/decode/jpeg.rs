//! JPEG decoding with libjpeg-turbo (the decoder inside Pillow), through the TurboJPEG 3 C API.
//!
//! We call the C API (`turbojpeg::raw`) rather than the `turbojpeg` crate's safe wrapper because the
//! wrapper turns every libjpeg *warning* into an error, also in the header read: files Pillow opens
//! fine ("Corrupt JPEG data: 12 extraneous bytes before marker 0xd9" is common in ImageNet) would fail.
//! Here a warning is accepted as Pillow accepts it, a fatal error is an error, and truncation is
//! decided by `is_truncated` below, independently of libjpeg's message order.
//!
//! Defaults are Pillow's: accurate integer IDCT (ISLOW) and fancy (smooth) chroma upsampling.

use std::ffi::{c_int, CStr};
use std::ptr::NonNull;

use turbojpeg::raw;

use crate::error::DecodeFailure;

/// The colour model of the decoded samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Samples {
    /// YCbCr, RGB or grayscale JPEG: libjpeg converts straight to interleaved RGB.
    Rgb,
    /// CMYK or YCCK JPEG: libjpeg yields the stored CMYK values (4 bytes a pixel).
    Cmyk,
}

/// TurboJPEG's `tjMCUWidth` (a `static` array of its header, so not a symbol to link against), by
/// `TJSAMP`: 4:4:4, 4:2:2, 4:2:0, gray, 4:4:0, 4:1:1, 4:4:1.
const IMCU_WIDTH: [usize; 7] = [8, 16, 16, 8, 8, 32, 8];

#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub width: usize,
    pub height: usize,
    pub samples: Samples,
    /// The iMCU width, to which a partial decode's left edge must be aligned; None where TurboJPEG
    /// cannot decode part of the image (unusual sampling factors, lossless JPEG).
    pub imcu_width: Option<usize>,
}

/// A rectangle of the image: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// One libjpeg-turbo decompressor. Not thread-safe; each worker thread owns one and reuses it.
pub(super) struct Decompressor {
    handle: NonNull<std::ffi::c_void>,
}

// SAFETY: a TurboJPEG handle may be used from any thread as long as only one thread uses it at a
// time, which `&mut self` on every method guarantees. Its error string lives in the handle or in
// thread-local storage, read on the thread that made the call.
unsafe impl Send for Decompressor {}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.handle.as_ptr()) }
    }
}

impl Decompressor {
    pub fn new() -> Result<Self, DecodeFailure> {
        // SAFETY: plain constructor; a null return is handled.
        let ptr = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
        let handle = NonNull::new(ptr).ok_or_else(|| {
            DecodeFailure::Corrupt("libjpeg-turbo could not start a decompressor".into())
        })?;
        Ok(Self { handle })
    }

    /// Reads the frame header: size and colour model, without decoding pixels.
    pub fn header(&mut self, data: &[u8]) -> Result<Header, DecodeFailure> {
        // SAFETY: `data` is a valid slice for the duration of the call; TurboJPEG only reads it.
        let rc = unsafe {
            raw::tj3DecompressHeader(
                self.handle.as_ptr(),
                data.as_ptr(),
                data.len() as raw::size_t,
            )
        };
        self.check(rc)?;
        let width = self.param(raw::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.param(raw::TJPARAM_TJPARAM_JPEGHEIGHT);
        let colorspace = self.param(raw::TJPARAM_TJPARAM_COLORSPACE);
        let (Ok(width), Ok(height)) = (usize::try_from(width), usize::try_from(height)) else {
            return Err(DecodeFailure::Corrupt(format!(
                "invalid JPEG size {width}x{height}"
            )));
        };
        if width == 0 || height == 0 {
            return Err(DecodeFailure::Corrupt(format!(
                "invalid JPEG size {width}x{height}"
            )));
        }
        let samples = match colorspace as u32 {
            raw::TJCS_TJCS_CMYK | raw::TJCS_TJCS_YCCK => Samples::Cmyk,
            _ => Samples::Rgb,
        };
        let subsamp = self.param(raw::TJPARAM_TJPARAM_SUBSAMP);
        let lossless = self.param(raw::TJPARAM_TJPARAM_LOSSLESS) != 0;
        let imcu_width = usize::try_from(subsamp)
            .ok()
            .and_then(|i| IMCU_WIDTH.get(i).copied())
            .filter(|_| !lossless);
        Ok(Header {
            width,
            height,
            samples,
            imcu_width,
        })
    }

    /// Decodes `region` of the image (all of it for the header's full size) into `out`, which holds
    /// exactly `region.width * region.height * {3 (Rgb), 4 (Cmyk)}` bytes. A partial region needs
    /// `header.imcu_width` and a left edge aligned to it.
    pub fn decompress(
        &mut self,
        data: &[u8],
        header: &Header,
        region: Region,
        out: &mut [u8],
    ) -> Result<(), DecodeFailure> {
        let (format, channels) = match header.samples {
            Samples::Rgb => (raw::TJPF_TJPF_RGB, 3),
            Samples::Cmyk => (raw::TJPF_TJPF_CMYK, 4),
        };
        let full = region
            == Region {
                x: 0,
                y: 0,
                width: header.width,
                height: header.height,
            };
        let cropping = if full {
            // TJUNCROPPED: the whole image.
            Some(raw::tjregion {
                x: 0,
                y: 0,
                w: 0,
                h: 0,
            })
        } else {
            let fits = region.width > 0
                && region.height > 0
                && region.x + region.width <= header.width
                && region.y + region.height <= header.height
                && header
                    .imcu_width
                    .is_some_and(|w| region.x.is_multiple_of(w));
            let int = |v: usize| c_int::try_from(v).ok();
            match (
                int(region.x),
                int(region.y),
                int(region.width),
                int(region.height),
            ) {
                (Some(x), Some(y), Some(w), Some(h)) if fits => Some(raw::tjregion { x, y, w, h }),
                _ => None,
            }
        };
        let pitch = region.width * channels;
        let c_pitch = c_int::try_from(pitch)
            .ok()
            .filter(|_| out.len() == pitch * region.height);
        let (Some(c_pitch), Some(cropping)) = (c_pitch, cropping) else {
            return Err(DecodeFailure::Corrupt(
                "output buffer or region does not match the JPEG size".into(),
            ));
        };
        // SAFETY: valid handle after a header read; the region was checked against the header.
        let rc = unsafe { raw::tj3SetCroppingRegion(self.handle.as_ptr(), cropping) };
        self.check(rc)?;
        // SAFETY: `out` holds `pitch * region.height` bytes, exactly what TurboJPEG writes for this
        // cropping region at scaling factor 1 (never changed on this handle).
        let rc = unsafe {
            raw::tj3Decompress8(
                self.handle.as_ptr(),
                data.as_ptr(),
                data.len() as raw::size_t,
                out.as_mut_ptr(),
                c_pitch,
                format as c_int,
            )
        };
        self.check(rc)
    }

    fn param(&mut self, param: raw::TJPARAM) -> c_int {
        // SAFETY: reading a parameter of a valid handle.
        unsafe { raw::tj3Get(self.handle.as_ptr(), param as c_int) }
    }

    /// Turns a TurboJPEG return code into a result: warnings that Pillow ignores pass.
    fn check(&mut self, rc: c_int) -> Result<(), DecodeFailure> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: valid handle; the returned string is NUL-terminated and copied at once.
        let (code, message) = unsafe {
            let code = raw::tj3GetErrorCode(self.handle.as_ptr());
            let message = CStr::from_ptr(raw::tj3GetErrorStr(self.handle.as_ptr()));
            (code, message.to_string_lossy().into_owned())
        };
        classify(code == raw::TJERR_TJERR_WARNING as c_int, &message)
    }
}

/// libjpeg reports only its *first* warning, and TurboJPEG still says "warning" when a fatal error
/// follows one; a fatal error overwrites the message, so the message text is what tells them apart.
fn classify(flagged_warning: bool, message: &str) -> Result<(), DecodeFailure> {
    // libjpeg-turbo 3.1's JWRN_* messages (jerror.h); no fatal JERR_* message starts like these.
    const WARNINGS: [&str; 6] = [
        "Corrupt JPEG data:",
        "Unknown Adobe color transform code",
        "Inconsistent progression sequence",
        "Invalid SOS parameters for sequential JPEG",
        "Application transferred too many scanlines",
        "Warning: unknown JFIF revision number",
    ];
    if message.starts_with("Premature end of JPEG file") {
        Err(DecodeFailure::Truncated)
    } else if flagged_warning && WARNINGS.iter().any(|w| message.starts_with(w)) {
        Ok(())
    } else {
        Err(DecodeFailure::Corrupt(message.trim().replace('\n', " ")))
    }
}

/// Whether the JPEG stream `data` (starting with SOI) ends before its EOI marker.
///
/// Walks the marker segments by their lengths (so an EOI inside an embedded EXIF thumbnail does not
/// count) and skips entropy-coded data, where 0xFF is always followed by 0x00 (stuffing) or RSTn.
/// Bytes after EOI are ignored, as libjpeg and Pillow ignore them.
pub(super) fn is_truncated(data: &[u8]) -> bool {
    let mut i = 2; // past SOI
    loop {
        // Entropy-coded data (and garbage libjpeg would skip with a warning) up to the next 0xFF,
        // then any 0xFF fill bytes, then the marker code.
        let Some(ff) = data
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
        else {
            return true;
        };
        i += ff;
        let Some(code_at) = data[i..].iter().position(|&b| b != 0xFF) else {
            return true;
        };
        i += code_at;
        let marker = data[i];
        i += 1;
        match marker {
            0xD9 => return false,
            // Stuffed zero, TEM, RSTn, SOI: no length field.
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let Some(len) = data
                    .get(i..i + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    return true;
                };
                i += len;
                if i > data.len() {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_pass_and_fatal_errors_fail() {
        let extraneous = "Corrupt JPEG data: 12 extraneous bytes before marker 0xd9";
        assert_eq!(classify(true, extraneous), Ok(()));
        assert_eq!(
            classify(true, "Premature end of JPEG file"),
            Err(DecodeFailure::Truncated)
        );
        // A fatal error after a warning: TurboJPEG still flags a warning, the message is the error's.
        assert!(classify(true, "Bogus marker length").is_err());
        assert!(classify(false, "Not a JPEG file: starts with 0x89 0x50").is_err());
        assert!(classify(false, extraneous).is_err());
    }

    #[test]
    fn truncation_is_found_by_walking_segments() {
        let app1_with_eoi_inside = [0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        let sos = [0xFF, 0xDA, 0x00, 0x02];
        let entropy = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56];
        let mut stream = vec![0xFF, 0xD8];
        stream.extend(app1_with_eoi_inside);
        stream.extend(sos);
        stream.extend(entropy);
        assert!(is_truncated(&stream), "no EOI yet");
        stream.extend([0xFF, 0xFF, 0xD9]);
        assert!(!is_truncated(&stream));
        stream.extend(b"trailing garbage");
        assert!(!is_truncated(&stream));
        // A segment whose length runs past the end.
        assert!(is_truncated(&[0xFF, 0xD8, 0xFF, 0xE0, 0x10, 0x00, 0x00]));
        assert!(is_truncated(&[0xFF, 0xD8, 0xFF]));
        assert!(is_truncated(&[0xFF, 0xD8]));
    }
}
