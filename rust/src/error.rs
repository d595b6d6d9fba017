//! The crate's one error type. Each variant maps to one Python exception, in one place
//! (`python/error.rs`), so a caller can catch exactly the failure it cares about.

use std::path::PathBuf;

use crate::patchify::PatchError;

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file to read does not exist (Python: `FileNotFoundError`).
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read: permissions, a directory, an I/O failure (Python: the
    /// `OSError` subclass of the errno).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file could not be written (Python: the `OSError` subclass of the errno). `path` is the
    /// destination, never the temporary file it was being written through.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file error met while loading an image whose name is not that file's path (a tar member, an
    /// image given a name); Python: the exception of `source`, its message naming both.
    #[error("{name}: {source}")]
    Item {
        name: String,
        #[source]
        source: Box<Error>,
    },

    /// The bytes are not an image we can decode (Python: `jitrs.DecodeError`).
    /// `origin` is the image's name: its path, or what the caller called it.
    #[error("cannot decode {origin}: {reason}")]
    Decode {
        origin: String,
        reason: DecodeFailure,
    },

    /// The PNG encoder refused the image (Python: `ValueError`).
    #[error("cannot encode {} as PNG: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: png::EncodingError,
    },

    /// Arrays whose shapes do not fit a patchify/unpatchify; `context` names the call and its
    /// arguments (Python: `ValueError`).
    #[error("{context}: {reason}")]
    Shape { context: String, reason: PatchError },

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
