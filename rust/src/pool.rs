//! The one thread-pool policy of every parallel call (`load_batch`, `write_pngs`, `patchify`): rayon
//! pools cached by thread count, rebuilt in a forked child.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::Error;

/// The most worker threads one pool may have: far above any core count, low enough that a typo
/// cannot make us spawn a million threads.
pub const MAX_THREADS: usize = 1024;

/// The default worker count: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pools by thread count, built once and shared by every later call, tagged with the process id.
type PoolCache = Option<(u32, HashMap<usize, Arc<ThreadPool>>)>;
static POOLS: Mutex<PoolCache> = Mutex::new(None);

/// A rayon pool of `threads` workers (`None`: [`default_threads`]), built on first use and then reused.
///
/// After a `fork()` (a PyTorch DataLoader worker, say) the child inherits the cache but not the
/// pool threads, so a child builds its own pools instead of waiting on threads that do not exist.
/// rayon's global pool is never used for the same reason: it cannot be rebuilt in a child.
pub fn thread_pool(threads: Option<usize>) -> Result<Arc<ThreadPool>, Error> {
    let threads = threads.unwrap_or_else(default_threads);
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::InvalidArgument(format!(
            "threads must be between 1 and {MAX_THREADS}, got {threads}"
        )));
    }
    let mut cache = POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if cache.as_ref().is_some_and(|(owner, _)| *owner != pid) {
        // The parent's pools: their threads are not in this process. Leak rather than drop them,
        // since dropping would signal threads that are not there.
        std::mem::forget(cache.take());
    }
    let (_, pools) = cache.get_or_insert_with(|| (pid, HashMap::new()));
    if let Some(pool) = pools.get(&threads) {
        return Ok(Arc::clone(pool));
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("jitrs-{i}"))
        .build()
        .map_err(|e| Error::ThreadPool {
            threads,
            reason: e.to_string(),
        })?;
    let pool = Arc::new(pool);
    pools.insert(threads, Arc::clone(&pool));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_cached_per_thread_count() {
        let a = thread_pool(Some(3)).expect("pool");
        let b = thread_pool(Some(3)).expect("pool");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.current_num_threads(), 3);
        let default = thread_pool(None).expect("pool");
        assert_eq!(default.current_num_threads(), default_threads());
        assert!(Arc::ptr_eq(
            &default,
            &thread_pool(Some(default_threads())).expect("pool")
        ));
        assert!(matches!(
            thread_pool(Some(0)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            thread_pool(Some(MAX_THREADS + 1)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
