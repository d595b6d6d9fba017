//! The one mapping from the core's `Error` to Python exceptions, and `jitrs.DecodeError`.

use std::io;
use std::path::Path;

use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

create_exception!(
    jitrs,
    DecodeError,
    PyValueError,
    "An image could not be decoded: corrupt, truncated, not a JPEG/PNG, or larger than max_pixels."
);

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        match error {
            Error::NotFound { path } => PyFileNotFoundError::new_err((
                2,
                "No such file or directory",
                path.display().to_string(),
            )),
            Error::Read { path, source } | Error::Write { path, source } => {
                os_error(&path, &source, message, None)
            }
            Error::Item { name, source } => match *source {
                Error::NotFound { path } => PyFileNotFoundError::new_err((
                    2,
                    format!("No such file or directory (reading {name})"),
                    path.display().to_string(),
                )),
                Error::Read { path, source } => os_error(&path, &source, message, Some(&name)),
                other => other.into(),
            },
            Error::Decode { .. } => DecodeError::new_err(message),
            Error::Encode { .. } | Error::Shape { .. } | Error::InvalidArgument(_) => {
                PyValueError::new_err(message)
            }
            Error::ThreadPool { .. } => PyRuntimeError::new_err(message),
        }
    }
}

/// `OSError(errno, strerror, filename)`, as Python's own `open` raises it: Python picks the subclass
/// from the errno (PermissionError, IsADirectoryError, ...) and callers get `.errno`/`.filename`.
/// `item` names the image being loaded when that is not the file's own path.
fn os_error(path: &Path, source: &io::Error, message: String, item: Option<&str>) -> PyErr {
    let Some(errno) = source.raw_os_error() else {
        return PyOSError::new_err(message);
    };
    // std's Display is the OS's description followed by " (os error N)", which Python's str() shows
    // already as "[Errno N]".
    let description = source.to_string();
    let strerror = description
        .strip_suffix(&format!(" (os error {errno})"))
        .unwrap_or(&description);
    let strerror = match item {
        Some(name) => format!("{strerror} (reading {name})"),
        None => strerror.to_owned(),
    };
    PyOSError::new_err((errno, strerror, path.display().to_string()))
}
