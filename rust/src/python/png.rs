//! `write_pngs` / `write_png`: validate with the GIL held, then encode and write on rayon threads.

use std::io;
use std::path::PathBuf;

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError, PyNotADirectoryError, PyOSError,
    PyPermissionError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::arrays::{ascontiguous, dtype_str, numpy_array, shape_str};
use crate::png::{self, Image, PngError};

/// Write a batch of images as PNG files, in parallel, each file atomically.
///
/// images: uint8 array (B, H, W, 3) RGB, or (B, H, W) / (B, H, W, 1) grey. paths: B str or
/// os.PathLike. threads: worker threads (default: all cores). Each file is first written to a
/// temporary file in its directory and renamed into place when complete. All files are attempted;
/// the first failure (in input order) is raised as OSError (PermissionError, FileNotFoundError, ...).
#[pyfunction]
#[pyo3(signature = (images, paths, threads = None))]
pub fn write_pngs(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    paths: &Bound<'_, PyAny>,
    threads: Option<i64>,
) -> PyResult<()> {
    let arr = numpy_array(images, "write_pngs: images")?;
    let shape = arr.shape().to_vec();
    let grey = match shape.as_slice() {
        [_, _, _] | [_, _, _, 1] => true,
        [_, _, _, 3] => false,
        _ => {
            return Err(PyValueError::new_err(format!(
                "write_pngs: images must be (B, H, W, 3), (B, H, W) or (B, H, W, 1), got shape {}",
                shape_str(&shape)
            )));
        }
    };
    let paths = path_list(paths)?;
    if paths.len() != shape[0] {
        return Err(PyValueError::new_err(format!(
            "write_pngs: {} images (shape {}) but {} paths",
            shape[0],
            shape_str(&shape),
            paths.len()
        )));
    }
    let (width, height) = png_size("write_pngs: images", &shape, shape[2], shape[1])?;
    let pool = match threads {
        None => None,
        Some(n) if n >= 1 => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n as usize)
                .build()
                .map_err(|e| {
                    PyRuntimeError::new_err(format!("write_pngs: cannot start {n} threads: {e}"))
                })?,
        ),
        Some(n) => {
            return Err(PyValueError::new_err(format!(
                "write_pngs: threads must be >= 1, got {n}"
            )))
        }
    };
    let arr = contiguous_u8(arr, "write_pngs: images")?;
    let readonly = arr.readonly();
    let data = readonly.as_slice()?;
    let per_image = data.len() / shape[0].max(1);
    let jobs: Vec<(PathBuf, Image)> = paths
        .into_iter()
        .zip(data.chunks_exact(per_image.max(1)))
        .map(|(path, data)| {
            (
                path,
                Image {
                    data,
                    width,
                    height,
                    grey,
                },
            )
        })
        .collect();
    py.detach(|| png::write_pngs(&jobs, pool.as_ref()))
        .map_err(|e| to_pyerr("write_pngs", e))
}

/// Write one image as a PNG file, atomically (see `write_pngs`).
///
/// image: uint8 array (H, W, 3) RGB, or (H, W) / (H, W, 1) grey.
#[pyfunction]
pub fn write_png(py: Python<'_>, path: PathBuf, image: &Bound<'_, PyAny>) -> PyResult<()> {
    let arr = numpy_array(image, "write_png: image")?;
    let shape = arr.shape().to_vec();
    let grey = match shape.as_slice() {
        [_, _] | [_, _, 1] => true,
        [_, _, 3] => false,
        _ => {
            return Err(PyValueError::new_err(format!(
                "write_png: image must be (H, W, 3), (H, W) or (H, W, 1), got shape {}",
                shape_str(&shape)
            )));
        }
    };
    let (width, height) = png_size("write_png: image", &shape, shape[1], shape[0])?;
    let arr = contiguous_u8(arr, "write_png: image")?;
    let readonly = arr.readonly();
    let image = Image {
        data: readonly.as_slice()?,
        width,
        height,
        grey,
    };
    py.detach(|| png::write_png(&path, &image, &mut Vec::new()))
        .map_err(|e| to_pyerr("write_png", e))
}

/// `paths` as a list; a lone str/bytes/PathLike is refused rather than iterated character by character.
fn path_list(paths: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    let lone = paths.is_instance_of::<PyString>()
        || paths.is_instance_of::<PyBytes>()
        || paths.hasattr("__fspath__")?;
    let not_sequence = || {
        Ok::<_, PyErr>(PyTypeError::new_err(format!(
            "write_pngs: paths must be a sequence of str or os.PathLike, got {}",
            paths.get_type().name()?
        )))
    };
    if lone {
        return Err(not_sequence()?);
    }
    let Ok(items) = paths.try_iter() else {
        return Err(not_sequence()?);
    };
    items
        .enumerate()
        .map(|(i, item)| {
            let item = item?;
            item.extract::<PathBuf>().map_err(|_| {
                let kind = item
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                PyTypeError::new_err(format!(
                    "write_pngs: paths[{i}] must be a str or os.PathLike, got {kind}"
                ))
            })
        })
        .collect()
}

/// PNG width and height (each 1..=2^31-1) from the array's spatial sizes.
fn png_size(what: &str, shape: &[usize], width: usize, height: usize) -> PyResult<(u32, u32)> {
    let fits = |n: usize| n >= 1 && n <= i32::MAX as usize;
    if !fits(width) || !fits(height) {
        return Err(PyValueError::new_err(format!(
            "{what} of shape {}: PNG height and width must be between 1 and 2^31-1",
            shape_str(shape)
        )));
    }
    Ok((width as u32, height as u32))
}

/// The array as a C-contiguous uint8 array (copied only if it isn't one), else a TypeError naming the dtype.
fn contiguous_u8<'py>(
    arr: Bound<'py, PyUntypedArray>,
    what: &str,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let Ok(typed) = arr.cast::<PyArrayDyn<u8>>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must have dtype uint8, got {}",
            dtype_str(&arr)?
        )));
    };
    if typed.is_c_contiguous() {
        return Ok(typed.clone());
    }
    Ok(ascontiguous(&arr)?.cast_into::<PyArrayDyn<u8>>()?)
}

/// An OSError of the subclass matching the failure, naming the file.
fn to_pyerr(func: &str, err: PngError) -> PyErr {
    let msg = format!("{func}: {err}");
    match err {
        PngError::Encode { .. } => PyValueError::new_err(msg),
        PngError::Io { source, .. } => match source.kind() {
            io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(msg),
            io::ErrorKind::NotADirectory => PyNotADirectoryError::new_err(msg),
            io::ErrorKind::AlreadyExists => PyFileExistsError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
    }
}
