//! `load_batch`: decode + ADM center crop (+ horizontal flip) of many images (files, byte ranges of
//! files, bytes) in parallel, straight into one `(B, size, size, 3)` uint8 buffer.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::crop;
use crate::decode::Decoder;
use crate::error::Error;
use crate::source::{named, Reader, Source};

/// What to do when an image cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop at the first failing image (by index); later images may be left unloaded.
    Raise,
    /// Zero the failing image's slot and go on with the rest.
    Skip,
}

/// The images of a batch that could not be loaded, by increasing index.
pub type Failures = Vec<(usize, Error)>;

/// Buffers one worker thread reuses from image to image.
#[derive(Default)]
struct Worker {
    reader: Reader,
    decoder: Decoder,
    pixels: Vec<u8>,
    scratch: crop::Scratch,
}

impl Worker {
    fn load(
        &mut self,
        source: &Source,
        name: &str,
        size: usize,
        flip: bool,
        max_pixels: u64,
        slot: &mut [u8],
    ) -> Result<(), Error> {
        let data = self
            .reader
            .read(source)
            .map_err(|e| named(e, source, name))?;
        let (width, height) = self
            .decoder
            .decode_into(data, max_pixels, &mut self.pixels)
            .map_err(|reason| Error::Decode {
                origin: name.to_owned(),
                reason,
            })?;
        crop::center_crop_into(
            &self.pixels,
            width,
            height,
            size,
            flip,
            slot,
            &mut self.scratch,
        );
        Ok(())
    }
}

/// Loads `sources[i]` (called `names[i]` in errors), center-cropped to `size`×`size` and mirrored when `flips[i]`, into image `i` of
/// `out` (`paths.len() * size * size * 3` bytes, RGB interleaved), on the threads of `pool`.
///
/// A failed image's slot is zeroed. With [`OnError::Raise`] the work stops early once an image
/// fails: images after it (by index) may not be loaded, and the first failure is the first entry.
#[allow(clippy::too_many_arguments)]
pub fn load_batch_into(
    sources: &[Source],
    names: &[String],
    size: usize,
    flips: &[bool],
    max_pixels: u64,
    on_error: OnError,
    pool: &ThreadPool,
    out: &mut [u8],
) -> Result<Failures, Error> {
    let item = size
        .checked_mul(size)
        .and_then(|n| n.checked_mul(3))
        .filter(|&n| n > 0);
    let Some(item) = item.filter(|n| Some(out.len()) == n.checked_mul(sources.len())) else {
        return Err(Error::InvalidArgument(format!(
            "load_batch: an output of {} bytes cannot hold {} images of {size}x{size}x3",
            out.len(),
            sources.len()
        )));
    };
    if flips.len() != sources.len() || names.len() != sources.len() {
        return Err(Error::InvalidArgument(format!(
            "load_batch: {} flip flags and {} names for {} images",
            flips.len(),
            names.len(),
            sources.len()
        )));
    }
    // Lowest failing index so far: in Raise mode, images after it need not be loaded.
    let first_failure = AtomicUsize::new(usize::MAX);
    let mut failures: Failures = pool.install(|| {
        out.par_chunks_mut(item)
            .zip(
                sources
                    .par_iter()
                    .zip(names.par_iter().zip(flips.par_iter())),
            )
            .enumerate()
            .map_init(
                Worker::default,
                |worker, (index, (slot, (source, (name, &flip))))| {
                    if on_error == OnError::Raise && index > first_failure.load(Ordering::Relaxed) {
                        return None;
                    }
                    let error = worker
                        .load(source, name, size, flip, max_pixels, slot)
                        .err()?;
                    slot.fill(0);
                    first_failure.fetch_min(index, Ordering::Relaxed);
                    Some((index, error))
                },
            )
            .flatten()
            .collect()
    });
    failures.sort_by_key(|&(index, _)| index);
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_file, DEFAULT_MAX_PIXELS};
    use crate::pool::thread_pool;
    use std::path::{Path, PathBuf};
    use turbojpeg::{Compressor, Image, PixelFormat};

    fn write_jpeg(dir: &Path, name: &str, width: usize, height: usize) -> PathBuf {
        let pixels: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let image = Image {
            pixels: pixels.as_slice(),
            width,
            pitch: width * 3,
            height,
            format: PixelFormat::RGB,
        };
        let jpeg = Compressor::new()
            .and_then(|mut c| c.compress_to_vec(image))
            .expect("compress");
        let path = dir.join(name);
        std::fs::write(&path, jpeg).expect("write");
        path
    }

    fn crop_of(path: &Path, size: usize, flip: bool) -> Vec<u8> {
        let image = decode_file(path, DEFAULT_MAX_PIXELS).expect("decode");
        let mut out = vec![0; size * size * 3];
        crop::center_crop_into(
            &image.pixels,
            image.width,
            image.height,
            size,
            flip,
            &mut out,
            &mut Default::default(),
        );
        out
    }

    #[test]
    fn batch_equals_per_image_decode_and_crop_and_reports_failures_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = [
            write_jpeg(dir.path(), "a.jpg", 50, 40),
            write_jpeg(dir.path(), "b.jpg", 33, 61),
        ];
        let missing = dir.path().join("missing.jpg");
        let paths = [good[0].clone(), missing.clone(), good[1].clone(), missing];
        let sources: Vec<Source> = paths.iter().cloned().map(Source::File).collect();
        let names: Vec<String> = sources.iter().map(|s| s.default_name(0)).collect();
        let flips = [false, false, true, true];
        let size = 16;
        let mut out = vec![7u8; paths.len() * size * size * 3];
        let pool = thread_pool(Some(2)).expect("pool");
        let failures = load_batch_into(
            &sources,
            &names,
            size,
            &flips,
            DEFAULT_MAX_PIXELS,
            OnError::Skip,
            &pool,
            &mut out,
        )
        .expect("batch");
        let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, [1, 3]);
        assert!(matches!(failures[0].1, Error::NotFound { .. }));
        let images: Vec<&[u8]> = out.chunks(size * size * 3).collect();
        assert_eq!(images[0], crop_of(&good[0], size, false));
        assert_eq!(images[2], crop_of(&good[1], size, true));
        assert!(
            images[1].iter().chain(images[3]).all(|&v| v == 0),
            "failed slots are zeroed"
        );
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let pool = thread_pool(Some(1)).expect("pool");
        let paths = vec![Source::File(PathBuf::from("x.jpg"))];
        let names = vec!["x.jpg".to_owned()];
        let mut out = vec![0; 10];
        let result = load_batch_into(
            &paths,
            &names,
            4,
            &[false],
            DEFAULT_MAX_PIXELS,
            OnError::Raise,
            &pool,
            &mut out,
        );
        assert!(matches!(result, Err(Error::InvalidArgument(_))));
        let mut out = vec![0; 4 * 4 * 3];
        let result = load_batch_into(
            &paths,
            &names,
            4,
            &[],
            DEFAULT_MAX_PIXELS,
            OnError::Raise,
            &pool,
            &mut out,
        );
        assert!(matches!(result, Err(Error::InvalidArgument(_))));
    }
}
