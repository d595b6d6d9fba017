//! `write_pngs` / `write_png`: validate with the GIL held, then encode and write on the worker threads.

use std::path::PathBuf;

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::arrays::{ascontiguous, dtype_str, numpy_array, shape_str, type_name};
use super::parallel::{detach_in_chunks, pool};
use crate::png::{self, Image};

/// Images per worker thread in one GIL-free chunk of `write_pngs`: Ctrl-C is honoured between chunks.
const IMAGES_PER_THREAD_PER_CHUNK: usize = 8;

/// Write a batch of images as PNG files, in parallel, each file atomically.
///
/// images: uint8 array (B, H, W, 3) RGB, or (B, H, W) / (B, H, W, 1) grey, any strides. paths: B str
/// or os.PathLike. threads: worker threads, 1 to 1024 (default: all cores). Each file is written to a
/// temporary file in its directory, fsynced and renamed into place, so a reader never sees a partial
/// file, and a failed or interrupted write leaves none behind. Files get the mode of any new file
/// (0o666 minus the umask). All files are attempted; the first failure (in input order) is raised as
/// OSError (PermissionError, FileNotFoundError, ...) naming the file. Ctrl-C raises
/// KeyboardInterrupt within a few images per thread; the files written until then are complete.
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
    let pool = pool(threads)?;
    let arr = contiguous_u8(arr, "write_pngs: images")?;
    let readonly = arr
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("write_pngs: images cannot be read: {e}")))?;
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
    let chunk = pool.current_num_threads() * IMAGES_PER_THREAD_PER_CHUNK;
    let mut first_error = None;
    detach_in_chunks(py, jobs.len(), chunk, |range| {
        if let Err(error) = png::write_pngs(&jobs[range], &pool) {
            first_error.get_or_insert(error);
        }
        Ok(true)
    })?;
    match first_error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Write one image as a PNG file, atomically (as `write_pngs` writes each file).
///
/// image: uint8 array (H, W, 3) RGB, or (H, W) / (H, W, 1) grey, any strides.
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
    let readonly = arr
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("write_png: image cannot be read: {e}")))?;
    let image = Image {
        data: readonly.as_slice()?,
        width,
        height,
        grey,
    };
    Ok(py.detach(|| png::write_png(&path, &image, &mut Vec::new()))?)
}

/// `paths` as a list; a lone str/bytes/PathLike is refused rather than iterated character by character.
fn path_list(paths: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    let lone = paths.is_instance_of::<PyString>()
        || paths.is_instance_of::<PyBytes>()
        || paths.hasattr("__fspath__")?;
    let not_sequence = || {
        PyTypeError::new_err(format!(
            "write_pngs: paths must be a sequence of str or os.PathLike, got {}",
            type_name(paths)
        ))
    };
    if lone {
        return Err(not_sequence());
    }
    let items = paths.try_iter().map_err(|_| not_sequence())?;
    items
        .enumerate()
        .map(|(i, item)| {
            let item = item?;
            item.extract::<PathBuf>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "write_pngs: paths[{i}] must be a str or os.PathLike, got {}",
                    type_name(&item)
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
