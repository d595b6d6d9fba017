//! The crate's error type. Each variant maps to one Python exception in the bindings
//! (`python/image.rs`), so a caller can catch exactly the failure it cares about.

use std::path::PathBuf;

/// Everything the data path can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file does not exist (Python: `FileNotFoundError`).
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read: permissions, a directory, an I/O failure (Python: `OSError`).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not an image we can decode (Python: `jitrs.DecodeError`).
    /// `origin` names the file, or says the image came as bytes.
    #[error("cannot decode {origin}: {reason}")]
    Decode {
        origin: String,
        reason: DecodeFailure,
    },

    /// A caller passed an unusable argument (Python: `ValueError`).
    #[error("{0}")]
    InvalidArgument(String),

    /// The worker threads could not be started (Python: `RuntimeError`).
    #[error("cannot start {threads} worker threads: {reason}")]
    ThreadPool { threads: usize, reason: String },
}

/// Why some bytes could not be decoded into an RGB image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    #[error("the input is empty (0 bytes)")]
    Empty,

    #[error("not a JPEG or PNG image (it starts with bytes {0})")]
    UnknownFormat(String),

    /// The data ends before the image does. Pillow raises here too by default (`LOAD_TRUNCATED_IMAGES`
    /// is off), where libjpeg alone would warn and fill the rest with grey.
    #[error("image file is truncated")]
    Truncated,

    /// The header declares more pixels than allowed; raised before any pixel buffer is allocated.
    #[error(
        "its header declares {width}x{height} = {} pixels, over max_pixels={max_pixels} \
         (decompression-bomb guard)",
        width * height
    )]
    TooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
    },

    /// The codec rejected the data (the codec's own message).
    #[error("{0}")]
    Corrupt(String),
}
