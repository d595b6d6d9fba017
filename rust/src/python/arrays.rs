//! Helpers shared by bindings that take numpy arrays: type checks and error-message formatting.

use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
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
            obj.get_type().name()?
        ))),
    }
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
