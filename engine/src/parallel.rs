//! Bounded parallelism for I/O-bound work on scoped threads: table uploads and downloads that
//! overlap their latencies on a remote store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::Result;

/// `f` of every item, up to `workers` at once on scoped threads (on this thread alone for one
/// worker or one item), in the order of `items`. After the first error no new item starts; the
/// first error in the order of `items` among those that ran is returned.
pub(crate) fn map_bounded<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let at = next.fetch_add(1, Ordering::Relaxed);
        if at >= items.len() || failed.load(Ordering::Relaxed) {
            return;
        }
        let result = f(&items[at]);
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        *results[at].lock() = Some(result);
    };
    let workers = workers.min(items.len());
    if workers <= 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(work);
            }
        });
    }
    let mut out = Vec::with_capacity(items.len());
    let mut first_error = None;
    for result in results {
        match result.into_inner() {
            Some(Ok(value)) => out.push(value),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn results_keep_the_order_of_the_items_whatever_the_workers() {
        let items: Vec<u64> = (0..100).collect();
        for workers in [0, 1, 3, 16, 200] {
            let squares = map_bounded(&items, workers, |&x| Ok(x * x)).unwrap();
            assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
        }
        assert!(map_bounded(&[] as &[u8], 4, |_| Ok(())).unwrap().is_empty());
    }

    #[test]
    fn an_error_stops_new_items_and_is_returned() {
        let items: Vec<u64> = (0..1000).collect();
        let ran = AtomicUsize::new(0);
        let result = map_bounded(&items, 4, |&x| {
            ran.fetch_add(1, Ordering::Relaxed);
            if x == 10 {
                Err(Error::InvalidArgument("item 10".into()))
            } else {
                Ok(x)
            }
        });
        assert!(result.unwrap_err().to_string().contains("item 10"));
        assert!(
            ran.load(Ordering::Relaxed) < 1000,
            "items after the error did not start"
        );
    }
}
