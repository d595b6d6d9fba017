//! `center_crop`: the Pillow-exact ADM center crop of one image.

use std::cell::RefCell;

use numpy::ndarray::Array3;
use numpy::{PyArray3, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::arrays::{shape_str, type_name};
use crate::crop::{center_crop_into, Scratch};

thread_local! {
    /// Buffers and coefficient tables kept between calls, as `load_batch` keeps one per worker.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Largest output side accepted (a 192 MiB crop): anything bigger is surely a mistake, and allocating it
/// could abort the process instead of raising.
const MAX_SIZE: i64 = 8192;

/// ADM center crop (ADM, DiT, EDM2, official JiT) of one RGB image, bit-exact with Pillow >= 13.
///
/// Pillow 13 resizes images more than about twice as tall as wide vertically first; older Pillow always
/// went horizontally first, so for such images older Pillow's crops differ (about 10% of values, by a few
/// levels).
///
/// Halves the image with Pillow's BOX filter while its short side is at least 2*size, resizes it with
/// BICUBIC so the short side is size, and keeps the central size×size square, mirrored left-right when
/// flip. img: (H, W, 3) uint8, any strides. Returns a new C-contiguous (size, size, 3) uint8 array.
/// Raises TypeError for a non-array or a dtype other than uint8, ValueError for a bad shape or a size
/// outside 1..8192.
#[pyfunction]
#[pyo3(signature = (img, size, *, flip = false))]
pub fn center_crop<'py>(
    py: Python<'py>,
    img: &Bound<'py, PyAny>,
    size: i64,
    flip: bool,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let array = img.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "center_crop: img must be a numpy array, got {}",
            type_name(img)
        ))
    })?;
    let shape = shape_str(array.shape());
    let dims = array.shape();
    if dims.len() != 3 || dims[2] != 3 || dims[0] == 0 || dims[1] == 0 {
        return Err(PyValueError::new_err(format!(
            "center_crop: img must have shape (H, W, 3) with H, W >= 1, got {shape}"
        )));
    }
    if !array.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
        return Err(PyTypeError::new_err(format!(
            "center_crop: img must have dtype uint8, got {} (shape {shape})",
            array.dtype()
        )));
    }
    if !(1..=MAX_SIZE).contains(&size) {
        return Err(PyValueError::new_err(format!(
            "center_crop: size must be between 1 and {MAX_SIZE}, got {size} (img shape {shape})"
        )));
    }
    let size = size as usize;
    let (height, width) = (dims[0], dims[1]);
    let readonly = array.cast::<PyArray3<u8>>()?.try_readonly()?;
    let view = readonly.as_array();
    // `as_slice` on the view is `Some` only in C order; any other layout is copied to C order here.
    let contiguous;
    let src = match view.as_slice() {
        Some(slice) => slice,
        None => {
            contiguous = view.iter().copied().collect::<Vec<u8>>();
            &contiguous
        }
    };
    let out = py.detach(|| {
        let mut out = vec![0; size * size * 3];
        SCRATCH.with_borrow_mut(|scratch| {
            center_crop_into(src, width, height, size, flip, &mut out, scratch)
        });
        out
    });
    let out = Array3::from_shape_vec((size, size, 3), out)
        .map_err(|e| PyValueError::new_err(format!("center_crop: internal shape error: {e}")))?;
    Ok(PyArray3::from_owned_array(py, out))
}
