//! The background pool that flushes and compacts LSM trees.
//!
//! An embedder creates one [`LsmPool`] with as many threads as it can spare and hands it to
//! every LSM backend of the process ([`BackendConfig::lsm_pool`](crate::BackendConfig::lsm_pool)),
//! so that many tasks share a few threads, as RocksDB instances share an environment's pool. A
//! backend opened without one gets a pool of its own with one thread.
//!
//! A tree tells the pool that it has work when one of its memtables is frozen
//! ([`Tree::set_listener`]). The tree is queued once (a flag says it is queued); a worker takes
//! it, runs one step (a flush if a frozen memtable waits, else a compaction if one is due) and
//! queues the tree again if the step did something, so that trees take turns. A tree dropped
//! by its backend is skipped (the pool holds it weakly).
//!
//! A failed step is kept in the tree's [`Worker`] record; the backend reports it on its next
//! write or snapshot, and no further background step runs for that tree.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::tree::Tree;
use crate::error::{Error, Result};

/// What the pool keeps per tree: the tree (weakly), whether it is queued, and the first error
/// of a background step.
#[derive(Debug)]
pub struct Worker {
    tree: Weak<Tree>,
    queued: AtomicBool,
    error: Mutex<Option<String>>,
    steps: AtomicU64,
    /// Whether a pool thread is running a step for the tree; [`idle`](Self::idle) notified
    /// when one ends.
    busy: Mutex<bool>,
    idle: Condvar,
}

impl Worker {
    /// The error of a failed background step, if one failed.
    pub fn check(&self) -> Result<()> {
        match &*self.error.lock() {
            None => Ok(()),
            Some(reason) => Err(Error::BackgroundWork {
                reason: reason.clone(),
            }),
        }
    }

    /// The number of flush or compaction steps the pool ran for this tree.
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    /// Waits until the pool has no step of this tree queued or running (its flushes and due
    /// compactions are done), or a step failed (its error).
    pub fn wait_idle(&self) -> Result<()> {
        let mut busy = self.busy.lock();
        while *busy || self.queued.load(Ordering::Acquire) {
            self.check()?;
            // A bounded wait: a step queued by a write is picked up and notifies when done.
            self.idle
                .wait_for(&mut busy, std::time::Duration::from_millis(10));
        }
        self.check()
    }
}

struct Queue {
    trees: VecDeque<Arc<Worker>>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn enqueue(&self, worker: &Arc<Worker>) {
        if worker.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.queue.lock().trees.push_back(Arc::clone(worker));
        self.wake.notify_one();
    }
}

/// A pool of threads that flush and compact the LSM trees registered with it; see
/// [the module](self).
///
/// ```
/// use std::sync::Arc;
/// use flowstate::*;
/// let pool = Arc::new(lsm::LsmPool::new(2)?);
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let config = BackendConfig::lsm(dir.path()).lsm_pool(pool.clone());
/// let mut backend = Backend::<u64>::open(config)?;
/// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
/// backend.set_current_key(&1);
/// backend.value(&count).update(5)?;
/// assert_eq!(backend.value(&count).get()?, Some(5));
/// # Ok::<(), flowstate::Error>(())
/// ```
pub struct LsmPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LsmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl LsmPool {
    /// A pool of `threads` threads (1 ..= 64).
    pub fn new(threads: usize) -> Result<LsmPool> {
        if !(1..=64).contains(&threads) {
            return Err(Error::InvalidConfig(format!(
                "an LSM pool needs 1 to 64 threads, not {threads}"
            )));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                trees: VecDeque::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let for_thread = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("flowstate-lsm-{i}"))
                .spawn(move || run(&for_thread))
                .map_err(|e| Error::InvalidConfig(format!("cannot start an LSM thread: {e}")));
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop the threads already started before reporting.
                    drop(LsmPool {
                        shared,
                        threads: handles,
                    });
                    return Err(e);
                }
            }
        }
        Ok(LsmPool {
            shared,
            threads: handles,
        })
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Registers `tree`: from now on each frozen memtable queues it, and it is queued once now
    /// in case it already has work.
    pub fn register(&self, tree: &Arc<Tree>) -> Arc<Worker> {
        let worker = Arc::new(Worker {
            tree: Arc::downgrade(tree),
            queued: AtomicBool::new(false),
            error: Mutex::new(None),
            steps: AtomicU64::new(0),
            busy: Mutex::new(false),
            idle: Condvar::new(),
        });
        let shared = Arc::downgrade(&self.shared);
        let weak_worker = Arc::downgrade(&worker);
        tree.set_listener(Arc::new(move || {
            if let (Some(shared), Some(worker)) = (shared.upgrade(), weak_worker.upgrade()) {
                shared.enqueue(&worker);
            }
        }));
        self.shared.enqueue(&worker);
        worker
    }
}

impl Drop for LsmPool {
    fn drop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.wake.notify_all();
        for handle in self.threads.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = handle.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let worker = {
            let mut queue = shared.queue.lock();
            loop {
                if queue.shutdown {
                    return;
                }
                if let Some(w) = queue.trees.pop_front() {
                    break w;
                }
                shared.wake.wait(&mut queue);
            }
        };
        // Busy before no longer queued, so that a waiter never sees the tree idle in between.
        *worker.busy.lock() = true;
        worker.queued.store(false, Ordering::Release);
        if let Some(tree) = worker.tree.upgrade() {
            if worker.error.lock().is_none() {
                match step(&tree) {
                    Ok(true) => {
                        worker.steps.fetch_add(1, Ordering::Relaxed);
                        shared.enqueue(&worker);
                    }
                    Ok(false) => {}
                    Err(e) => *worker.error.lock() = Some(e.to_string()),
                }
            }
        }
        *worker.busy.lock() = false;
        worker.idle.notify_all();
    }
}

/// One step of background work: a flush if a frozen memtable waits, else a compaction; but a
/// compaction first when L0 has gone halfway from its compaction trigger to its stop trigger
/// and no more memtables wait than the writer tolerates. A writer past
/// `max_immutable_memtables` flushes by itself (beside the compaction), so the flushes still
/// happen, in short pauses, where letting L0 reach the stop trigger would make the writer run
/// a whole L0 -> L1 compaction itself (a pause of seconds with large memtables).
pub(crate) fn step(tree: &Tree) -> Result<bool> {
    let options = tree.options();
    let urgent = (options.l0_compaction_trigger + options.l0_stop_trigger) / 2;
    if tree.pin().tables(0).len() >= urgent
        && tree.immutable_memtables() <= options.max_immutable_memtables
        && tree.compact_one()?
    {
        return Ok(true);
    }
    if tree.flush_one()? {
        return Ok(true);
    }
    tree.compact_one()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::tree::TreeOptions;
    use crate::storage::MemStorage;

    #[test]
    fn a_step_compacts_first_when_l0_is_halfway_to_the_stop_trigger() {
        let storage = Arc::new(MemStorage::new());
        let options = TreeOptions {
            l0_compaction_trigger: 2,
            l0_stop_trigger: 6,
            max_immutable_memtables: 2,
            ..TreeOptions::default()
        };
        let tree = Tree::open(storage, "t", options).unwrap();
        // Four L0 tables (halfway from 2 to 6) without letting a compaction run.
        for i in 0..4u8 {
            tree.put(&[i], b"v").unwrap();
            tree.freeze();
            assert!(tree.flush_one().unwrap());
        }
        tree.put(b"x", b"v").unwrap();
        tree.freeze();
        assert_eq!(tree.stats().levels[0].tables, 4);
        assert_eq!(tree.immutable_memtables(), 1);
        assert!(step(&tree).unwrap());
        // The compaction ran, the frozen memtable still waits.
        assert_eq!(tree.stats().levels[0].tables, 0);
        assert_eq!(tree.immutable_memtables(), 1);
        assert!(step(&tree).unwrap());
        assert_eq!(tree.immutable_memtables(), 0);
        // Below halfway, a waiting memtable goes first.
        tree.put(b"y", b"v").unwrap();
        tree.freeze();
        assert!(step(&tree).unwrap());
        assert_eq!(tree.immutable_memtables(), 0);
        assert_eq!(tree.get(b"x").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn the_pool_flushes_and_compacts_what_writers_freeze() {
        let pool = LsmPool::new(2).unwrap();
        let storage = Arc::new(MemStorage::new());
        let options = TreeOptions {
            memtable_bytes: 200 << 10,
            max_immutable_memtables: 64,
            l0_stop_trigger: 1000,
            ..TreeOptions::default()
        };
        let trees: Vec<Arc<Tree>> = (0..3)
            .map(|i| {
                Arc::new(Tree::open(storage.clone(), &format!("t{i}"), options.clone()).unwrap())
            })
            .collect();
        let workers: Vec<_> = trees.iter().map(|t| pool.register(t)).collect();
        for i in 0u32..30_000 {
            for t in &trees {
                t.put(&i.to_be_bytes(), &[7u8; 32]).unwrap();
            }
        }
        for t in &trees {
            t.freeze();
        }
        // Wait (bounded) until every frozen memtable is flushed and L0 is compacted.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while trees
            .iter()
            .any(|t| t.immutable_memtables() > 0 || t.pin().tables(0).len() >= 4)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool did not catch up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (t, w) in trees.iter().zip(&workers) {
            w.check().unwrap();
            assert!(w.steps() > 0);
            let stats = t.stats();
            assert!(stats.flushes > 0 && stats.compactions > 0, "{stats:?}");
            for i in [0u32, 12_345, 29_999] {
                assert_eq!(t.get(&i.to_be_bytes()).unwrap(), Some(vec![7u8; 32]));
            }
        }
    }

    #[test]
    fn a_failed_step_is_reported_and_stops_background_work() {
        let pool = LsmPool::new(1).unwrap();
        let storage = Arc::new(MemStorage::new());
        let tree = Arc::new(Tree::open(storage.clone(), "t", TreeOptions::default()).unwrap());
        let worker = pool.register(&tree);
        tree.put(b"k", b"v").unwrap();
        storage.fail_after(1);
        tree.freeze();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while worker.check().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the error was not reported"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let err = worker.check().unwrap_err();
        assert!(matches!(err, Error::BackgroundWork { .. }), "{err}");
        // The data is still readable from the frozen memtable.
        assert_eq!(tree.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn pool_size_is_checked() {
        assert!(LsmPool::new(0).is_err());
        assert!(LsmPool::new(65).is_err());
        assert_eq!(LsmPool::new(3).unwrap().threads(), 3);
    }
}
