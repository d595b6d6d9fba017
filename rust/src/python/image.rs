//! Bindings for image decoding and batch loading: `decode`, `load_batch`, `DecodeError`.

use std::borrow::Cow;
use std::path::PathBuf;

use numpy::ndarray::{Array3, Array4};
use numpy::{IntoPyArray, PyArray3, PyArray4, PyArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString, PyTuple};

use super::arrays::{checked_out, type_name};
use super::error::DecodeError;
use super::parallel::{detach_in_chunks, pool};
use crate::batch::{self, OnError};
use crate::decode::{decode_source, DEFAULT_MAX_PIXELS};
use crate::source::Source;

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

/// Decode a JPEG or PNG (a file, a byte range of a file, or bytes) into RGB, pixel-identical to
/// Pillow's `Image.open(source).convert('RGB')`.
///
/// The format is told by content, not by file name. Grayscale, CMYK/YCCK JPEGs and PNGs of every mode
/// are converted to RGB as Pillow converts them (alpha dropped, not composited); 16-bit PNG samples
/// keep their high byte (for 16-bit gray Pillow clamps at 255 instead). EXIF orientation is not applied,
/// as Pillow's open/convert does not apply it. A truncated file is an error, as in Pillow by default.
///
/// Args:
///     source: a path (str or os.PathLike); the encoded image (bytes, bytearray or memoryview); or
///         `(path, offset, length)`, the image held in those bytes of the file (a member of an
///         uncompressed tar, say), read with a positioned read.
///     max_pixels: refuse, before allocating, an image whose header declares more pixels than this.
///     name: what error messages call the image (default: the path, `path[offset:offset+length]`
///         for a range, "the image bytes" for bytes).
///
/// Returns:
///     (H, W, 3) uint8 array, C-contiguous.
///
/// Raises:
///     FileNotFoundError: the file does not exist (other read failures, and a range past the end of
///         the file, raise OSError).
///     DecodeError: empty, truncated, corrupt, not a JPEG/PNG, or over max_pixels; the message names
///         the image and the reason.
#[pyfunction]
#[pyo3(signature = (source, max_pixels = 178956970, name = None))]
fn decode<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    max_pixels: i64,
    name: Option<String>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let max_pixels = positive("max_pixels", max_pixels)?;
    let source = source_of(source, "source")?;
    let name = name.unwrap_or_else(|| match source {
        Source::Bytes(_) => "the image bytes".to_owned(),
        _ => source.default_name(0),
    });
    let image = py.detach(|| decode_source(&source, &name, max_pixels))?;
    let array = Array3::from_shape_vec((image.height, image.width, 3), image.pixels)
        .map_err(|e| PyRuntimeError::new_err(format!("decode: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// Load images as a training batch: decode, ADM center crop to `size`, optional flip.
///
/// Images are processed in parallel on a cached pool of `threads` workers (default: all cores), with
/// the GIL released; Ctrl-C raises KeyboardInterrupt within a few images per thread. Each image equals
/// `decode(sources[i])` center-cropped the ADM way (as the official JiT data pipeline does with
/// Pillow), mirrored left-right where `flip[i]`.
///
/// Args:
///     sources: B images (JPEG or PNG, told by content), each as `decode` takes it: a path, the
///         encoded bytes, or a `(path, offset, length)` byte range of a file; kinds may be mixed.
///     size: output side in pixels.
///     flip: B bools; True mirrors that image left-right. None: no flips.
///     threads: worker threads, 1 to 1024; None uses every core.
///     out: optional C-contiguous writable (B, size, size, 3) uint8 array (pinned host memory, say),
///         filled in place and returned.
///     on_error: "raise" raises for the first bad file by index (out's contents are then unspecified);
///         "skip" zeroes bad images' slots and returns `(batch, [(index, reason), ...])`.
///     max_pixels: per-image decompression-bomb guard, as in `decode`.
///     names: B names that errors and on_error="skip" reports call the images by (a tar member as
///         "shard.tar:member.JPEG", say). None: the path, `path[offset:offset+length]` for a range,
///         `<bytes #i>` for bytes.
///
/// Returns:
///     (B, size, size, 3) uint8 array, or with on_error="skip" the tuple `(batch, failures)`.
///
/// Raises:
///     FileNotFoundError, OSError, DecodeError: a bad image, with on_error="raise"; a range past
///         the end of its file is an OSError naming the file.
///     TypeError: out is not a uint8 numpy array, or sources/flip/names hold the wrong types.
///     ValueError: a wrong out shape or layout, a flip or names length other than B, a bad option
///         value.
#[pyfunction]
#[pyo3(signature = (sources, size, flip = None, threads = None, out = None, on_error = "raise",
                    max_pixels = 178956970, *, names = None))]
#[allow(clippy::too_many_arguments)]
fn load_batch<'py>(
    py: Python<'py>,
    sources: &Bound<'py, PyAny>,
    size: i64,
    flip: Option<&Bound<'py, PyAny>>,
    threads: Option<i64>,
    out: Option<&Bound<'py, PyAny>>,
    on_error: &str,
    max_pixels: i64,
    names: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let items = sequence(sources, "sources", "images")?;
    let images = items
        .iter()
        .enumerate()
        .map(|(i, item)| source_of(item, &format!("sources[{i}]")))
        .collect::<PyResult<Vec<Source>>>()?;
    let names = name_list(names, &images)?;
    let size = usize::try_from(positive("size", size)?)
        .map_err(|_| PyValueError::new_err(format!("size is too large: {size}")))?;
    let flips = flip_list(flip, images.len())?;
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
    let shape = [images.len(), size, size, 3];
    let Some(total) = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
    else {
        return Err(PyValueError::new_err(format!(
            "load_batch: a batch of shape {shape:?} is too large"
        )));
    };

    let item = total / images.len().max(1);
    let chunk = pool.current_num_threads() * IMAGES_PER_THREAD_PER_CHUNK;
    let run = |buffer: &mut [u8]| -> PyResult<batch::Failures> {
        let mut failures = batch::Failures::new();
        detach_in_chunks(py, images.len(), chunk, |range| {
            let found = batch::load_batch_into(
                &images[range.clone()],
                &names[range.clone()],
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

/// The items of `value`, a sequence (not a single str or bytes) of `what`.
fn sequence<'py>(
    value: &Bound<'py, PyAny>,
    param: &str,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if value.is_instance_of::<PyString>() || value.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{param} must be a sequence of {what}, not a single str or bytes"
        )));
    }
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{param} must be a sequence of {what}, got {}",
            type_name(value)
        ))
    })?;
    items.collect()
}

/// One image source: `bytes` are borrowed (immutable, and kept alive by the caller); bytearray and
/// memoryview contents are copied, since Python code could change them while the GIL is released.
fn source_of<'a>(item: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Source<'a>> {
    if let Ok(bytes) = item.cast::<PyBytes>() {
        return Ok(Source::Bytes(Cow::Borrowed(bytes.as_bytes())));
    }
    if let Ok(array) = item.cast::<PyByteArray>() {
        return Ok(Source::Bytes(Cow::Owned(array.to_vec())));
    }
    if item.is_instance_of::<PyMemoryView>() {
        let copy = item.py().get_type::<PyBytes>().call1((item,))?;
        return Ok(Source::Bytes(Cow::Owned(
            copy.cast::<PyBytes>()?.as_bytes().to_vec(),
        )));
    }
    if let Ok(tuple) = item.cast::<PyTuple>() {
        let range = (tuple.len() == 3)
            .then(|| tuple.extract::<(PathBuf, u64, u64)>().ok())
            .flatten();
        return range
            .map(|(path, offset, length)| Source::Range {
                path,
                offset,
                length,
            })
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "{what} must be (path, offset, length) with offset and length non-negative \
                     integers, got {}",
                    item.repr()
                        .map_or_else(|_| type_name(item), |r| r.to_string())
                ))
            });
    }
    item.extract::<PathBuf>().map(Source::File).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a path (str or os.PathLike), bytes, or a (path, offset, length) \
             tuple, got {}",
            type_name(item)
        ))
    })
}

/// The names of the images: `names` (B strings) or each source's default name.
fn name_list(names: Option<&Bound<'_, PyAny>>, sources: &[Source]) -> PyResult<Vec<String>> {
    let Some(names) = names else {
        return Ok(sources
            .iter()
            .enumerate()
            .map(|(i, s)| s.default_name(i))
            .collect());
    };
    let names = sequence(names, "names", "str")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.extract::<String>().map_err(|_| {
                PyTypeError::new_err(format!("names[{i}] must be a str, got {}", type_name(item)))
            })
        })
        .collect::<PyResult<Vec<String>>>()?;
    if names.len() != sources.len() {
        return Err(PyValueError::new_err(format!(
            "names has {} entries for {} images",
            names.len(),
            sources.len()
        )));
    }
    Ok(names)
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
            "flip has {} entries for {n} images",
            flips.len()
        )));
    }
    Ok(flips)
}
