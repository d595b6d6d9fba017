//! PyO3 bindings: `jitrs._native`. Only type conversion, validation, GIL release and error mapping.
//!
//! The Python docs of each function are its `///` comments here (they become `__doc__`); the stubs
//! in `python/jitrs/_native.pyi` hold only the types.

use pyo3::prelude::*;

mod arrays;
mod crop;
mod error;
mod image;
mod parallel;
mod png;
mod tokens;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // So a benchmark can refuse to report numbers from a debug build.
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add_function(wrap_pyfunction!(crop::center_crop, m)?)?;
    m.add_function(wrap_pyfunction!(tokens::patchify, m)?)?;
    m.add_function(wrap_pyfunction!(tokens::unpatchify, m)?)?;
    m.add_function(wrap_pyfunction!(png::write_pngs, m)?)?;
    m.add_function(wrap_pyfunction!(png::write_png, m)?)?;
    image::register(m)?;
    Ok(())
}
