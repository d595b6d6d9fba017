//! PNG decoding with the `png` crate, converted to RGB the way Pillow's `convert('RGB')` does.
//!
//! 8-bit RGB/RGBA/L/LA/palette, and 1/2/4-bit gray and palette, match Pillow exactly: alpha (and tRNS
//! transparency) is dropped, not composited; gray is replicated; low bit depths scale to 0..255.
//! 16-bit samples keep their high byte. That is what Pillow does for 16-bit RGB, RGBA and gray+alpha;
//! for 16-bit plain gray Pillow's `convert('RGB')` instead clamps every value above 255 to 255 (the
//! image turns white), which we deliberately do not copy.

use std::io::Cursor;

use png::{BitDepth, ColorType, Decoder, Limits, Transformations};

use crate::error::DecodeFailure;

/// Decodes the PNG in `data` into `out` as `height * width * 3` RGB bytes; returns (width, height).
///
/// `scratch` holds the decoded samples before the conversion to RGB and is reused between calls.
pub(super) fn decode(
    data: &[u8],
    max_pixels: u64,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(usize, usize), DecodeFailure> {
    // `max_pixels` bounds the allocation instead, checked on the header below.
    let mut decoder = Decoder::new_with_limits(Cursor::new(data), Limits { bytes: usize::MAX });
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let (width, height) = decoder.read_header_info().map_err(failure)?.size();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(DecodeFailure::TooLarge {
            width: width.into(),
            height: height.into(),
            max_pixels,
        });
    }
    let mut reader = decoder.read_info().map_err(failure)?;
    let Some(len) = reader.output_buffer_size() else {
        return Err(DecodeFailure::Corrupt(format!(
            "PNG size {width}x{height} does not fit in memory"
        )));
    };
    scratch.resize(len, 0); // fully overwritten by next_frame
    let frame = reader.next_frame(scratch).map_err(failure)?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    if frame.bit_depth != BitDepth::Eight {
        return Err(DecodeFailure::Corrupt(format!(
            "unexpected PNG bit depth {:?}",
            frame.bit_depth
        )));
    }
    let samples = scratch.get(..frame.buffer_size()).unwrap_or_default();
    out.clear();
    out.reserve(width * height * 3);
    match frame.color_type {
        ColorType::Rgb => out.extend_from_slice(samples),
        ColorType::Rgba => samples
            .chunks_exact(4)
            .for_each(|p| out.extend_from_slice(&p[..3])),
        ColorType::Grayscale => samples
            .iter()
            .for_each(|&g| out.extend_from_slice(&[g, g, g])),
        ColorType::GrayscaleAlpha => samples
            .chunks_exact(2)
            .for_each(|p| out.extend_from_slice(&[p[0]; 3])),
        ColorType::Indexed => {
            return Err(DecodeFailure::Corrupt(
                "PNG palette was not expanded".into(),
            ));
        }
    }
    if out.len() != width * height * 3 {
        return Err(DecodeFailure::Corrupt(
            "PNG frame size does not match its header".into(),
        ));
    }
    Ok((width, height))
}

fn failure(e: png::DecodingError) -> DecodeFailure {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeFailure::Truncated
        }
        other => DecodeFailure::Corrupt(format!("invalid PNG: {other}")),
    }
}
