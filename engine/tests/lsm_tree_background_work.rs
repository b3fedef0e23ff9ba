//! Flushes and compactions on another thread (spec/lsm-tree.md, "Writes and back-pressure"):
//! the tree is `Send + Sync`; while a pool thread calls `flush_one` and `compact_one` in a
//! loop, the writing thread's reads always see its own writes, the number of frozen memtables
//! stays bounded by back-pressure, and after a reopen every flushed entry is there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::{MemStorage, Storage};

fn options() -> TreeOptions {
    TreeOptions {
        // A memtable uses up to 128 KiB after its first write: this holds a few hundred entries.
        memtable_bytes: 160 << 10,
        max_immutable_memtables: 1,
        block_size: 256,
        l0_compaction_trigger: 2,
        target_table_bytes: 8 << 10,
        level1_max_bytes: 32 << 10,
        ..TreeOptions::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{:05}", i % 3000).into_bytes()
}

#[test]
fn a_pool_thread_flushes_and_compacts_while_the_task_writes() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tree>();

    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Arc::new(Tree::open(Arc::clone(&storage), "t", options()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let tree = Arc::clone(&tree);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let flushed = tree.flush_one().unwrap();
                let compacted = tree.compact_one().unwrap();
                if !flushed && !compacted {
                    thread::yield_now();
                }
            }
        })
    };
    let mut max_waiting = 0;
    for i in 0..12_000u32 {
        let value = format!("value-{i}-{}", "x".repeat(40));
        tree.put(&key(i), value.as_bytes()).unwrap();
        if i % 7 == 0 {
            assert_eq!(tree.get(&key(i)).unwrap(), Some(value.into_bytes()));
        }
        max_waiting = max_waiting.max(tree.immutable_memtables());
    }
    stop.store(true, Ordering::Release);
    worker.join().unwrap();
    assert!(
        max_waiting <= options().max_immutable_memtables,
        "{max_waiting}"
    );
    while tree.compact_one().unwrap() {}
    let stats = tree.stats();
    assert!(stats.flushes > 0 && stats.compactions > 0, "{stats:?}");
    let open: usize = tree.pin().all_tables().map(|t| t.reader().memory()).sum();
    assert!(open > 0 && stats.table_memory_bytes == open, "{stats:?}");

    tree.freeze();
    while tree.flush_one().unwrap() {}
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = (9_000..12_000u32)
        .map(|i| (key(i), format!("value-{i}-{}", "x".repeat(40)).into_bytes()))
        .collect();
    want.sort();
    assert_eq!(tree.scan_prefix(b"k").unwrap(), want);
    drop(tree);
    let tree = Tree::open(storage, "t", options()).unwrap();
    assert_eq!(tree.scan_prefix(b"k").unwrap(), want);
}

/// A flush thread and a compaction thread run side by side (flushes do not wait for a
/// compaction), while the task writes, deletes ranges and reads back against a model.
#[test]
fn flushes_run_beside_compactions_and_lose_nothing() {
    use std::collections::BTreeMap;

    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Arc::new(Tree::open(Arc::clone(&storage), "t", options()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |flush: bool| {
        let tree = Arc::clone(&tree);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let worked = if flush {
                    tree.flush_one().unwrap()
                } else {
                    tree.compact_one().unwrap()
                };
                if !worked {
                    thread::yield_now();
                }
            }
        })
    };
    let flusher = spawn(true);
    let compactor = spawn(false);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in 0..15_000u32 {
        let value = format!("value-{i}-{}", "y".repeat(40)).into_bytes();
        tree.put(&key(i), &value).unwrap();
        model.insert(key(i), value);
        if i % 997 == 0 {
            let (lo, hi) = (key(i), key(i + 150));
            if lo < hi {
                tree.delete_range(&lo, &hi).unwrap();
                model.retain(|k, _| !(k >= &lo && k < &hi));
            }
        }
        if i % 11 == 0 {
            let k = key(i / 2);
            assert_eq!(tree.get(&k).unwrap().as_ref(), model.get(&k), "key {i}");
        }
    }
    stop.store(true, Ordering::Release);
    flusher.join().unwrap();
    compactor.join().unwrap();
    let want: Vec<_> = model.into_iter().collect();
    assert_eq!(tree.scan_prefix(b"k").unwrap(), want);
    tree.freeze();
    while tree.flush_one().unwrap() {}
    while tree.compact_one().unwrap() {}
    let stats = tree.stats();
    assert!(stats.flushes > 0 && stats.compactions > 0, "{stats:?}");
    drop(tree);
    let tree = Tree::open(storage, "t", options()).unwrap();
    assert_eq!(tree.scan_prefix(b"k").unwrap(), want);
}

/// `Backend`'s controls with a background pool: after `wait_idle` nothing is queued or
/// running (no frozen memtable waits, the step count no longer moves), `flush` writes the
/// active memtable, and the heap backend takes the same calls as no-ops.
#[test]
fn backend_controls_flush_compact_and_wait_for_the_pool_to_be_idle() {
    use flowstate::*;
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(lsm::LsmPool::new(1).unwrap());
    let config = BackendConfig::lsm(dir.path())
        .lsm_memtable_bytes(256 << 10)
        .lsm_pool(pool);
    let mut backend = Backend::<u64>::open(config).unwrap();
    let h = backend
        .register(ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    for k in 0..20_000u64 {
        backend.set_current_key(&k);
        backend.value(&h).update(k).unwrap();
    }
    backend.wait_idle().unwrap();
    let idle = backend.lsm_stats().unwrap();
    assert_eq!(
        idle.tree.immutable_memtables, 0,
        "every frozen memtable flushed"
    );
    assert!(idle.background_steps > 0, "the pool did the work");
    thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        backend.lsm_stats().unwrap().background_steps,
        idle.background_steps,
        "nothing ran after wait_idle returned"
    );
    backend.flush().unwrap();
    backend.compact().unwrap();
    backend.wait_idle().unwrap();
    let stats = backend.lsm_stats().unwrap();
    assert_eq!(stats.tree.immutable_memtables, 0);
    assert!(
        stats.tree.flushes > idle.tree.flushes,
        "flush wrote the active memtable"
    );
    for k in (0..20_000u64).step_by(97) {
        backend.set_current_key(&k);
        assert_eq!(backend.value(&h).get().unwrap(), Some(k));
    }
    let heap = Backend::<u64>::open(BackendConfig::heap()).unwrap();
    heap.flush().unwrap();
    heap.compact().unwrap();
    heap.compact_all().unwrap();
    heap.wait_idle().unwrap();
    assert!(heap.lsm_stats().is_none());
}
