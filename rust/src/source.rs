//! Where an image's encoded bytes come from: a whole file, a byte range of a file (a member of an
//! uncompressed tar shard), or memory. Ranges are read with positioned reads, so many workers can read
//! members of one shard at once without seeking a shared descriptor.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// One image to load.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// A whole file.
    File(PathBuf),
    /// `length` bytes of the file `path` from byte `offset`.
    Range {
        path: PathBuf,
        offset: u64,
        length: u64,
    },
    /// The encoded image itself.
    Bytes(Cow<'a, [u8]>),
}

impl Source<'_> {
    /// What errors call this source when the caller gave it no name: the path, `path[start:end]`
    /// for a range, `<bytes #index>` for bytes (`index` is its place in the batch).
    pub fn default_name(&self, index: usize) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Range {
                path,
                offset,
                length,
            } => format!(
                "{}[{offset}:{}]",
                path.display(),
                offset.saturating_add(*length)
            ),
            Source::Bytes(_) => format!("<bytes #{index}>"),
        }
    }
}

/// Reads sources into a buffer reused from one image to the next, keeping the last file opened for
/// ranges open (consecutive members of a batch usually come from one shard).
#[derive(Default)]
pub struct Reader {
    buffer: Vec<u8>,
    shard: Option<(PathBuf, File, u64)>,
}

impl Reader {
    /// The encoded bytes of `source`. File errors name the file (`Error::NotFound`, `Error::Read`);
    /// the caller adds the item's name.
    pub fn read<'s>(&'s mut self, source: &'s Source<'_>) -> Result<&'s [u8], Error> {
        match source {
            Source::Bytes(data) => Ok(data),
            Source::File(path) => {
                self.buffer.clear();
                File::open(path)
                    .and_then(|mut f| f.read_to_end(&mut self.buffer))
                    .map_err(|e| io_error(path, e))?;
                Ok(&self.buffer)
            }
            Source::Range {
                path,
                offset,
                length,
            } => {
                let file_len = self.open(path)?;
                let end = offset.checked_add(*length).filter(|&end| end <= file_len);
                let (Some(_), Ok(len)) = (end, usize::try_from(*length)) else {
                    let message = format!(
                        "bytes {offset}..{} run past its end ({file_len} bytes)",
                        offset.saturating_add(*length)
                    );
                    return Err(io_error(
                        path,
                        io::Error::new(io::ErrorKind::UnexpectedEof, message),
                    ));
                };
                self.buffer.clear();
                self.buffer.resize(len, 0);
                let Some((_, file, _)) = &self.shard else {
                    unreachable!("open() keeps the file it opened");
                };
                file.read_exact_at(&mut self.buffer, *offset)
                    .map_err(|e| io_error(path, e))?;
                Ok(&self.buffer)
            }
        }
    }

    /// Opens `path` unless it is the file opened last; returns its length.
    fn open(&mut self, path: &Path) -> Result<u64, Error> {
        if let Some((open, _, len)) = &self.shard {
            if open == path {
                return Ok(*len);
            }
        }
        self.shard = None;
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        self.shard = Some((path.to_path_buf(), file, len));
        Ok(len)
    }
}

/// A reading error of `source` as reported for the image `name`: as it is when the name is the file's
/// own path, else wrapped in [`Error::Item`] so the message names both.
pub fn named(error: Error, source: &Source, name: &str) -> Error {
    match (&error, source) {
        (Error::NotFound { path } | Error::Read { path, .. }, Source::File(file))
            if path == file && name == file.display().to_string() =>
        {
            error
        }
        (Error::NotFound { .. } | Error::Read { .. }, _) => Error::Item {
            name: name.to_owned(),
            source: Box::new(error),
        },
        _ => error,
    }
}

/// An I/O failure on `path` as the crate's error.
fn io_error(path: &Path, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Read {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_the_named_bytes_and_refuse_to_run_past_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shard.tar");
        std::fs::write(&path, b"0123456789").expect("write");
        let other = dir.path().join("other.tar");
        std::fs::write(&other, b"abcdef").expect("write");
        let mut reader = Reader::default();
        let range = |path: &Path, offset, length| Source::Range {
            path: path.to_path_buf(),
            offset,
            length,
        };
        assert_eq!(reader.read(&range(&path, 2, 3)).expect("read"), b"234");
        assert_eq!(reader.read(&range(&other, 4, 2)).expect("read"), b"ef");
        assert_eq!(
            reader.read(&range(&path, 0, 10)).expect("read"),
            b"0123456789"
        );
        assert_eq!(reader.read(&range(&path, 10, 0)).expect("read"), b"");
        for (offset, length) in [(8, 3), (11, 0), (u64::MAX, 2)] {
            let error = reader.read(&range(&path, offset, length)).unwrap_err();
            assert!(matches!(error, Error::Read { .. }), "{error}");
            assert!(error.to_string().contains("shard.tar"), "{error}");
        }
        let missing = dir.path().join("missing.tar");
        assert!(matches!(
            reader.read(&range(&missing, 0, 1)),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            reader
                .read(&Source::Bytes(Cow::Borrowed(b"xyz")))
                .expect("bytes"),
            b"xyz"
        );
        assert_eq!(
            range(&path, 2, 3).default_name(0),
            format!("{}[2:5]", path.display())
        );
        assert_eq!(
            Source::Bytes(Cow::Borrowed(b"")).default_name(7),
            "<bytes #7>"
        );
    }
}
