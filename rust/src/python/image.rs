//! Bindings for image decoding and batch loading: `decode`, `load_batch`, `DecodeError`.

use std::path::PathBuf;

use numpy::ndarray::{Array3, Array4};
use numpy::{IntoPyArray, PyArray3, PyArray4, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::arrays::{checked_out, type_name};
use super::error::DecodeError;
use super::parallel::{detach_in_chunks, pool};
use crate::batch::{self, OnError};
use crate::decode::{decode_bytes, decode_file, DEFAULT_MAX_PIXELS};
use crate::error::Error;

/// Images per worker thread in one GIL-free chunk of `load_batch`: enough that waiting for a chunk's
/// last images costs little, few enough that Ctrl-C is honoured within a fraction of a second.
const IMAGES_PER_THREAD_PER_CHUNK: usize = 16;

// The `max_pixels` defaults are written out so that `__text_signature__` (and `help()`) show the number.
const _: () = assert!(DEFAULT_MAX_PIXELS == 178956970);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(load_batch, m)?)?;
    Ok(())
}

fn positive(name: &str, value: i64) -> PyResult<u64> {
    u64::try_from(value)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive integer, got {value}"))
        })
}

/// Decode a JPEG or PNG file (or its bytes) into RGB, pixel-identical to Pillow's
/// `Image.open(source).convert('RGB')`.
///
/// The format is told by content, not by file name. Grayscale, CMYK/YCCK JPEGs and PNGs of every mode
/// are converted to RGB as Pillow converts them (alpha dropped, not composited); 16-bit PNG samples
/// keep their high byte (for 16-bit gray Pillow clamps at 255 instead). EXIF orientation is not applied,
/// as Pillow's open/convert does not apply it. A truncated file is an error, as in Pillow by default.
///
/// Args:
///     source: a path (str or os.PathLike) or the encoded bytes.
///     max_pixels: refuse, before allocating, an image whose header declares more pixels than this.
///
/// Returns:
///     (H, W, 3) uint8 array, C-contiguous.
///
/// Raises:
///     FileNotFoundError: the file does not exist (other read failures raise OSError).
///     DecodeError: empty, truncated, corrupt, not a JPEG/PNG, or over max_pixels; the message names
///         the file and the reason.
#[pyfunction]
#[pyo3(signature = (source, max_pixels = 178956970))]
fn decode<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    max_pixels: i64,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let max_pixels = positive("max_pixels", max_pixels)?;
    let image = if let Ok(bytes) = source.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        py.detach(|| decode_bytes(data, max_pixels))
            .map_err(|reason| Error::Decode {
                origin: "the image bytes".into(),
                reason,
            })?
    } else if let Ok(path) = source.extract::<PathBuf>() {
        py.detach(|| decode_file(&path, max_pixels))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "decode: source must be a path (str or os.PathLike) or bytes, got {}",
            type_name(source)
        )));
    };
    let array = Array3::from_shape_vec((image.height, image.width, 3), image.pixels)
        .map_err(|e| PyRuntimeError::new_err(format!("decode: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// Load image files as a training batch: decode, ADM center crop to `size`, optional flip.
///
/// Images are processed in parallel on a cached pool of `threads` workers (default: all cores), with
/// the GIL released; Ctrl-C raises KeyboardInterrupt within a few images per thread. Each image equals
/// `decode(path)` center-cropped the ADM way (as the official JiT data pipeline does with Pillow),
/// mirrored left-right where `flip[i]`.
///
/// Args:
///     paths: B image files (JPEG or PNG, told by content).
///     size: output side in pixels.
///     flip: B bools; True mirrors that image left-right. None: no flips.
///     threads: worker threads, 1 to 1024; None uses every core.
///     out: optional C-contiguous writable (B, size, size, 3) uint8 array (pinned host memory, say),
///         filled in place and returned.
///     on_error: "raise" raises for the first bad file by index (out's contents are then unspecified);
///         "skip" zeroes bad images' slots and returns `(batch, [(index, reason), ...])`.
///     max_pixels: per-image decompression-bomb guard, as in `decode`.
///
/// Returns:
///     (B, size, size, 3) uint8 array, or with on_error="skip" the tuple `(batch, failures)`.
///
/// Raises:
///     FileNotFoundError, OSError, DecodeError: a bad file, with on_error="raise".
///     TypeError: out is not a uint8 numpy array, or paths/flip hold the wrong types.
///     ValueError: a wrong out shape or layout, a flip length other than B, a bad option value.
#[pyfunction]
#[pyo3(signature = (paths, size, flip = None, threads = None, out = None, on_error = "raise",
                    max_pixels = 178956970))]
#[allow(clippy::too_many_arguments)]
fn load_batch<'py>(
    py: Python<'py>,
    paths: &Bound<'py, PyAny>,
    size: i64,
    flip: Option<&Bound<'py, PyAny>>,
    threads: Option<i64>,
    out: Option<&Bound<'py, PyAny>>,
    on_error: &str,
    max_pixels: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let paths = path_list(paths)?;
    let size = usize::try_from(positive("size", size)?)
        .map_err(|_| PyValueError::new_err(format!("size is too large: {size}")))?;
    let flips = flip_list(flip, paths.len())?;
    let on_error = match on_error {
        "raise" => OnError::Raise,
        "skip" => OnError::Skip,
        other => {
            return Err(PyValueError::new_err(format!(
                "on_error must be 'raise' or 'skip', got {other:?}"
            )));
        }
    };
    let max_pixels = positive("max_pixels", max_pixels)?;
    let pool = pool(threads)?;
    let shape = [paths.len(), size, size, 3];
    let Some(total) = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
    else {
        return Err(PyValueError::new_err(format!(
            "load_batch: a batch of shape {shape:?} is too large"
        )));
    };

    let item = total / paths.len().max(1);
    let chunk = pool.current_num_threads() * IMAGES_PER_THREAD_PER_CHUNK;
    let run = |buffer: &mut [u8]| -> PyResult<batch::Failures> {
        let mut failures = batch::Failures::new();
        detach_in_chunks(py, paths.len(), chunk, |range| {
            let found = batch::load_batch_into(
                &paths[range.clone()],
                size,
                &flips[range.clone()],
                max_pixels,
                on_error,
                &pool,
                &mut buffer[range.start * item..range.end * item],
            )?;
            let go_on = on_error == OnError::Skip || found.is_empty();
            failures.extend(found.into_iter().map(|(i, e)| (range.start + i, e)));
            Ok(go_on)
        })?;
        Ok(failures)
    };
    let (batch, failures) = match out {
        Some(out) => {
            let array = checked_out(out, "out=", &shape, &numpy::dtype::<u8>(py))?
                .cast_into::<PyArray4<u8>>()?;
            let mut view = array
                .try_readwrite()
                .map_err(|e| PyValueError::new_err(format!("out= cannot be written: {e}")))?;
            let buffer = view
                .as_slice_mut()
                .map_err(|e| PyValueError::new_err(format!("out= {e}")))?;
            let failures = run(buffer)?;
            (out.clone(), failures)
        }
        None => {
            let mut buffer = vec![0u8; total];
            let failures = run(&mut buffer)?;
            let array = Array4::from_shape_vec(shape, buffer)
                .map_err(|e| PyRuntimeError::new_err(format!("load_batch: {e}")))?;
            (array.into_pyarray(py).into_any(), failures)
        }
    };
    match on_error {
        OnError::Raise => match failures.into_iter().next() {
            Some((_, error)) => Err(error.into()),
            None => Ok(batch),
        },
        OnError::Skip => {
            let reasons: Vec<(usize, String)> = failures
                .into_iter()
                .map(|(i, e)| (i, e.to_string()))
                .collect();
            Ok(PyTuple::new(py, [batch, PyList::new(py, reasons)?.into_any()])?.into_any())
        }
    }
}

fn path_list(paths: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if paths.is_instance_of::<PyString>() || paths.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "paths must be a sequence of paths, not a single str or bytes",
        ));
    }
    let items = paths.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "paths must be a sequence of paths, got {}",
            type_name(paths)
        ))
    })?;
    items
        .enumerate()
        .map(|(i, item)| {
            let item = item?;
            item.extract::<PathBuf>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "paths[{i}] must be a str or os.PathLike, got {}",
                    type_name(&item)
                ))
            })
        })
        .collect()
}

fn flip_list(flip: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<bool>> {
    let Some(flip) = flip else {
        return Ok(vec![false; n]);
    };
    let items = flip.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "flip must be a sequence of bools, got {}",
            type_name(flip)
        ))
    })?;
    let flips = items
        .enumerate()
        .map(|(i, item)| {
            let item = item?;
            item.extract::<bool>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "flip[{i}] must be a bool, got {}",
                    type_name(&item)
                ))
            })
        })
        .collect::<PyResult<Vec<bool>>>()?;
    if flips.len() != n {
        return Err(PyValueError::new_err(format!(
            "flip has {} entries for {n} paths",
            flips.len()
        )));
    }
    Ok(flips)
}
