//! The Rust core of jitrs: the parts of the JiT data path that Python is slow at.
//!
//! Every module here is plain Rust that knows nothing of Python (tested with `cargo test`);
//! `python/` is the thin PyO3 layer that validates inputs, releases the GIL and maps errors.

pub mod batch;
pub mod crop;
pub mod decode;
pub mod error;
pub mod patchify;
pub mod png;
pub mod pool;
pub mod resample;
pub mod source;

#[cfg(feature = "python")]
mod python;
