//! How every parallel binding runs: on a pool of the one cached policy (`crate::pool`), GIL-free, in
//! chunks with Python's signal handlers run between them.

use std::ops::Range;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rayon::ThreadPool;

use crate::error::Error;
use crate::pool::{thread_pool, MAX_THREADS};

/// The pool for a `threads=` argument (None: every core).
pub fn pool(threads: Option<i64>) -> PyResult<Arc<ThreadPool>> {
    let threads = threads
        .map(|n| {
            usize::try_from(n).map_err(|_| {
                PyValueError::new_err(format!(
                    "threads must be between 1 and {MAX_THREADS}, got {n}"
                ))
            })
        })
        .transpose()?;
    Ok(thread_pool(threads)?)
}

/// Runs `work` on consecutive ranges of `0..len`, each at most `chunk` long, with the GIL released.
/// Between ranges it re-attaches and runs Python's signal handlers, so Ctrl-C raises
/// KeyboardInterrupt once the range in progress is done instead of after the whole call.
/// `work` returns whether to go on.
pub fn detach_in_chunks<F>(py: Python<'_>, len: usize, chunk: usize, mut work: F) -> PyResult<()>
where
    F: FnMut(Range<usize>) -> Result<bool, Error> + Send,
{
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < len {
        let end = len.min(start.saturating_add(chunk));
        let go_on = py.detach(|| work(start..end))?;
        py.check_signals()?;
        if !go_on {
            break;
        }
        start = end;
    }
    Ok(())
}
