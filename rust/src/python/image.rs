//! Bindings for image decoding and batch loading: `decode`, `load_batch`, `DecodeError`.

use std::path::PathBuf;

use numpy::ndarray::{Array3, Array4};
use numpy::{IntoPyArray, PyArray3, PyArray4, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::arrays::{checked_out, type_name};
use crate::batch::{self, OnError};
use crate::decode::{decode_bytes, decode_file, DEFAULT_MAX_PIXELS};
use crate::error::Error;

create_exception!(
    jitrs,
    DecodeError,
    PyValueError,
    "An image could not be decoded: corrupt, truncated, not a JPEG/PNG, or larger than max_pixels."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(load_batch, m)?)?;
    Ok(())
}

/// The Python exception for each core error.
fn to_pyerr(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::NotFound { path } => PyFileNotFoundError::new_err((
            2,
            "No such file or directory",
            path.display().to_string(),
        )),
        // OSError(errno, ...) picks the matching subclass itself (PermissionError, IsADirectoryError).
        Error::Io { path, source } => match source.raw_os_error() {
            Some(errno) => {
                PyOSError::new_err((errno, source.to_string(), path.display().to_string()))
            }
            None => PyOSError::new_err(message),
        },
        Error::Decode { .. } => DecodeError::new_err(message),
        Error::InvalidArgument(_) => PyValueError::new_err(message),
        Error::ThreadPool { .. } => PyRuntimeError::new_err(message),
    }
}

fn positive(name: &str, value: i64) -> PyResult<u64> {
    u64::try_from(value)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive integer, got {value}"))
        })
}

/// Decodes a JPEG or PNG (path or bytes) into a `(H, W, 3)` uint8 RGB array.
#[pyfunction]
#[pyo3(signature = (source, max_pixels = DEFAULT_MAX_PIXELS as i64))]
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
            })
    } else if let Ok(path) = source.extract::<PathBuf>() {
        py.detach(|| decode_file(&path, max_pixels))
    } else {
        return Err(PyTypeError::new_err(format!(
            "decode: source must be a path (str or os.PathLike) or bytes, got {}",
            source.get_type().name()?
        )));
    }
    .map_err(to_pyerr)?;
    let array = Array3::from_shape_vec((image.height, image.width, 3), image.pixels)
        .map_err(|e| PyRuntimeError::new_err(format!("decode: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// Loads a batch of image files: decode, ADM center crop, optional flip; `(B, size, size, 3)` uint8.
#[pyfunction]
#[pyo3(signature = (paths, size, flip = None, threads = None, out = None, on_error = "raise",
                    max_pixels = DEFAULT_MAX_PIXELS as i64))]
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
    let threads = match threads {
        None => batch::default_threads(),
        Some(n) => usize::try_from(n).unwrap_or(0),
    };
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
    let pool = batch::thread_pool(threads).map_err(to_pyerr)?;
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

    let run = |buffer: &mut [u8]| {
        py.detach(|| {
            batch::load_batch_into(&paths, size, &flips, max_pixels, on_error, &pool, buffer)
        })
        .map_err(to_pyerr)
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
            Some((_, error)) => Err(to_pyerr(error)),
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
