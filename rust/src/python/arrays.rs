//! Helpers shared by bindings that take numpy arrays: type checks and error-message formatting.

use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

/// `obj` as a numpy array, or a TypeError naming the argument (`what`, e.g. "patchify: arr").
pub fn numpy_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    match obj.cast::<PyUntypedArray>() {
        Ok(arr) => Ok(arr.clone()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be a numpy array, got {}",
            type_name(obj)
        ))),
    }
}

/// The name of `obj`'s type, for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "an unknown type".into(), |n| n.to_string())
}

/// `out` as a numpy array of exactly `shape` and `dtype`, C-contiguous and aligned, or the error
/// naming why not (`what` names the argument, e.g. "patchify: out="). Writability is checked when
/// the caller borrows it for writing.
pub fn checked_out<'py>(
    out: &Bound<'py, PyAny>,
    what: &str,
    shape: &[usize],
    dtype: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let array = out.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a numpy.ndarray, got {}",
            type_name(out)
        ))
    })?;
    let got = array.dtype();
    if !got.is_equiv_to(dtype) {
        return Err(PyTypeError::new_err(format!(
            "{what} must have dtype {dtype}, got {got}"
        )));
    }
    if array.shape() != shape {
        return Err(PyValueError::new_err(format!(
            "{what} must have shape {}, got {}",
            shape_str(shape),
            shape_str(array.shape())
        )));
    }
    if !array.is_c_contiguous() || !array.is_aligned() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous and aligned (use np.empty)"
        )));
    }
    Ok(array.clone())
}

/// A C-contiguous, aligned copy (numpy.ascontiguousarray), for the rare inputs the fast paths can't read.
pub fn ascontiguous<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = arr.py();
    let copy = py
        .import(intern!(py, "numpy"))?
        .call_method1(intern!(py, "ascontiguousarray"), (arr,))?;
    Ok(copy.cast_into::<PyUntypedArray>()?)
}

/// The array's shape written as Python writes a tuple: "(3,)", "(256, 256, 3)".
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The dtype's name as numpy prints it ("uint8", ">f4").
pub fn dtype_str(arr: &Bound<'_, PyUntypedArray>) -> PyResult<String> {
    Ok(arr.dtype().str()?.to_string())
}
