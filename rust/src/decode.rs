//! Decoding JPEG and PNG files into interleaved 8-bit RGB, pixel-identical to Pillow's
//! `Image.open(f).convert('RGB')`.
//!
//! The format is told by the leading bytes, not the file name (ImageNet holds a PNG and several CMYK
//! JPEGs named `.JPEG`). JPEG goes through libjpeg-turbo (the decoder Pillow uses: other JPEG decoders
//! round chroma upsampling differently), PNG through the `png` crate.

mod jpeg;
mod png;

use std::path::Path;

use crate::error::{DecodeFailure, Error};
use crate::source::{named, Reader, Source};

/// Pillow's decompression-bomb error threshold: `2 * Image.MAX_IMAGE_PIXELS`.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

const JPEG_MAGIC: &[u8] = &[0xFF, 0xD8, 0xFF];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// An RGB image: `pixels` holds `height * width * 3` bytes, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decoding state reused across images on one thread: the libjpeg-turbo handle and the buffers,
/// so a stream of images allocates only when an image is larger than every one before it.
#[derive(Default)]
pub struct Decoder {
    jpeg: Option<jpeg::Decompressor>,
    scratch: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes an encoded image into `out` (resized to `height * width * 3` RGB bytes, every one
    /// overwritten, so old contents need no clearing) and returns
    /// `(width, height)`. Refuses, before allocating, an image whose header declares more than
    /// `max_pixels` pixels.
    pub fn decode_into(
        &mut self,
        data: &[u8],
        max_pixels: u64,
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), DecodeFailure> {
        if data.is_empty() {
            Err(DecodeFailure::Empty)
        } else if data.starts_with(JPEG_MAGIC) {
            self.decode_jpeg(data, max_pixels, out)
        } else if data.starts_with(PNG_MAGIC) {
            png::decode(data, max_pixels, out, &mut self.scratch)
        } else {
            let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(DecodeFailure::UnknownFormat(head.join(" ")))
        }
    }

    fn decode_jpeg(
        &mut self,
        data: &[u8],
        max_pixels: u64,
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), DecodeFailure> {
        let tj = match &mut self.jpeg {
            Some(tj) => tj,
            empty => empty.insert(jpeg::Decompressor::new()?),
        };
        // A stream cut inside its header makes libjpeg fail with a follow-on error ("missing SOS
        // marker"); the cut is the reason worth reporting.
        let header = tj.header(data).map_err(|e| {
            if jpeg::is_truncated(data) {
                DecodeFailure::Truncated
            } else {
                e
            }
        })?;
        let (width, height) = (header.width, header.height);
        let pixels = width as u64 * height as u64;
        if pixels > max_pixels {
            return Err(DecodeFailure::TooLarge {
                width: width as u64,
                height: height as u64,
                max_pixels,
            });
        }
        if jpeg::is_truncated(data) {
            return Err(DecodeFailure::Truncated);
        }
        let rgb_len = width * height * 3;
        match header.samples {
            jpeg::Samples::Rgb => {
                out.resize(rgb_len, 0);
                tj.decompress(data, &header, out)?;
            }
            jpeg::Samples::Cmyk => {
                self.scratch.resize(width * height * 4, 0);
                tj.decompress(data, &header, &mut self.scratch)?;
                out.resize(rgb_len, 0);
                inverted_cmyk_to_rgb(&self.scratch, out);
            }
        }
        Ok((width, height))
    }
}

/// Decodes an encoded JPEG or PNG held in memory.
pub fn decode_bytes(data: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeFailure> {
    let mut pixels = Vec::new();
    let (width, height) = Decoder::new().decode_into(data, max_pixels, &mut pixels)?;
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// Reads and decodes a JPEG or PNG file.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<RgbImage, Error> {
    let source = Source::File(path.to_path_buf());
    decode_source(&source, &source.default_name(0), max_pixels)
}

/// Reads and decodes the image of `source`; errors call it `name`.
pub fn decode_source(source: &Source, name: &str, max_pixels: u64) -> Result<RgbImage, Error> {
    let mut reader = Reader::default();
    let data = reader.read(source).map_err(|e| named(e, source, name))?;
    let mut pixels = Vec::new();
    let (width, height) = Decoder::new()
        .decode_into(data, max_pixels, &mut pixels)
        .map_err(|reason| Error::Decode {
            origin: name.to_owned(),
            reason,
        })?;
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// CMYK JPEG samples to RGB exactly as Pillow: it reads every 4-channel JPEG as Adobe-inverted CMYK
/// (rawmode "CMYK;I": each stored value v becomes 255 - v), then `cmyk2rgb` in Convert.c computes
/// `nk - nk * c / 255` per channel with `nk = 255 - k` and its rounded integer division by 255.
fn inverted_cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (src, dst) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let k = 255 - i32::from(src[3]);
        let nk = 255 - k;
        for (d, &stored) in dst.iter_mut().zip(&src[..3]) {
            let c = 255 - i32::from(stored);
            *d = (nk - muldiv255(c, nk)).clamp(0, 255) as u8;
        }
    }
}

/// `a * b / 255` rounded, computed as Pillow's MULDIV255 macro does.
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbojpeg::{Compressor, Image, PixelFormat, Subsamp};

    fn gradient(width: usize, height: usize) -> Vec<u8> {
        (0..height)
            .flat_map(|y| {
                (0..width)
                    .flat_map(move |x| [(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
            })
            .collect()
    }

    fn encode(
        pixels: &[u8],
        width: usize,
        height: usize,
        format: PixelFormat,
        subsamp: Subsamp,
    ) -> Vec<u8> {
        let mut compressor = Compressor::new().expect("compressor");
        compressor.set_quality(90).expect("quality");
        compressor.set_subsamp(subsamp).expect("subsamp");
        let image = Image {
            pixels,
            width,
            pitch: width * format.size(),
            height,
            format,
        };
        compressor.compress_to_vec(image).expect("compress")
    }

    #[test]
    fn jpeg_decodes_to_what_turbojpeg_decodes() {
        let (w, h) = (67, 45);
        let jpeg = encode(&gradient(w, h), w, h, PixelFormat::RGB, Subsamp::Sub2x2);
        let ours = decode_bytes(&jpeg, DEFAULT_MAX_PIXELS).expect("decode");
        let reference = turbojpeg::decompress(&jpeg, PixelFormat::RGB).expect("reference decode");
        assert_eq!((ours.width, ours.height), (w, h));
        assert_eq!(ours.pixels, reference.pixels);
        // Lossy, but close to the source.
        let worst = ours
            .pixels
            .iter()
            .zip(gradient(w, h))
            .map(|(&a, b)| a.abs_diff(b))
            .max();
        assert!(worst.is_some_and(|d| d < 24), "worst difference {worst:?}");
    }

    #[test]
    fn grayscale_jpeg_is_replicated_to_rgb() {
        let (w, h) = (16, 9);
        let gray: Vec<u8> = (0..w * h).map(|i| (i * 255 / (w * h)) as u8).collect();
        let jpeg = encode(&gray, w, h, PixelFormat::GRAY, Subsamp::Gray);
        let ours = decode_bytes(&jpeg, DEFAULT_MAX_PIXELS).expect("decode");
        let reference = turbojpeg::decompress(&jpeg, PixelFormat::GRAY).expect("reference decode");
        let expected: Vec<u8> = reference.pixels.iter().flat_map(|&g| [g, g, g]).collect();
        assert_eq!(ours.pixels, expected);
    }

    #[test]
    fn cmyk_conversion_follows_pillow_arithmetic() {
        // Stored (inverted) CMYK values and the RGB Pillow gives for them.
        let stored = [
            255, 255, 255, 255, 0, 0, 0, 0, 255, 0, 128, 200, 10, 20, 30, 100,
        ];
        let mut rgb = [0u8; 12];
        inverted_cmyk_to_rgb(&stored, &mut rgb);
        assert_eq!(&rgb[..3], &[255, 255, 255], "no ink");
        assert_eq!(&rgb[3..6], &[0, 0, 0], "full black");
        // k' = 55, nk = 200: c'=0 -> 200; m'=255 -> 0; y'=127 -> 200 - round(127*200/255)=200-100.
        assert_eq!(&rgb[6..9], &[200, 0, 100]);
        assert_eq!(&rgb[9..], &[4, 8, 12]);
    }

    #[test]
    fn bad_inputs_are_named_failures() {
        let max = DEFAULT_MAX_PIXELS;
        assert_eq!(decode_bytes(b"", max), Err(DecodeFailure::Empty));
        assert!(matches!(
            decode_bytes(b"hello world", max),
            Err(DecodeFailure::UnknownFormat(_))
        ));
        let jpeg = encode(&gradient(40, 30), 40, 30, PixelFormat::RGB, Subsamp::None);
        assert_eq!(
            decode_bytes(&jpeg[..jpeg.len() / 2], max),
            Err(DecodeFailure::Truncated)
        );
        assert_eq!(
            decode_bytes(&jpeg, 40 * 30 - 1),
            Err(DecodeFailure::TooLarge {
                width: 40,
                height: 30,
                max_pixels: 1199
            })
        );
        assert!(decode_bytes(&jpeg, 40 * 30).is_ok());
        let mut garbled = jpeg.clone();
        garbled[3] ^= 0xFF; // breaks the first marker segment
        assert!(decode_bytes(&garbled, max).is_err());
    }

    #[test]
    fn missing_file_is_not_found() {
        let path = Path::new("/nonexistent/jitrs/image.jpg");
        assert!(matches!(
            decode_file(path, DEFAULT_MAX_PIXELS),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_decoder_is_reusable_after_a_failure() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let jpeg = encode(&gradient(20, 10), 20, 10, PixelFormat::RGB, Subsamp::Sub2x1);
        assert!(decoder
            .decode_into(&jpeg[..100], DEFAULT_MAX_PIXELS, &mut out)
            .is_err());
        assert_eq!(
            decoder.decode_into(&jpeg, DEFAULT_MAX_PIXELS, &mut out),
            Ok((20, 10))
        );
        assert_eq!(out.len(), 20 * 10 * 3);
    }
}
