//! A crash at every point of a flush and of a compaction (spec/lsm-tree.md, "Opening and
//! crash safety"): with `MemStorage`, the n-th mutating operation of the step and every later
//! one fail, then the power goes, dropping unsynced data or tearing it (`CrashMode::Torn`).
//! After a reopen the tree holds the old set of tables or the new one, never a part: every
//! entry of an earlier, completed flush is there; the entries of the interrupted flush are all
//! there or all absent (all there if the flush returned `Ok`); and no table file or temporary
//! file the manifest does not list is left behind.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions, MANIFEST_NAME};
use flowstate::{CrashMode, MemStorage, Storage};

fn options() -> TreeOptions {
    TreeOptions {
        block_size: 128,
        l0_compaction_trigger: 2,
        target_table_bytes: 512,
        ..TreeOptions::default()
    }
}

fn key(batch: u32, i: u32) -> Vec<u8> {
    format!("k{i:03}-{batch}").into_bytes()
}

fn write_batch(tree: &Tree, batch: u32) {
    for i in 0..40 {
        tree.put(&key(batch, i), format!("v{batch}-{i}").as_bytes())
            .unwrap();
    }
    tree.freeze();
}

/// How many keys of `batch` the tree holds (checking their values).
fn present(tree: &Tree, batch: u32) -> u32 {
    let mut n = 0;
    for i in 0..40 {
        if let Some(v) = tree.get(&key(batch, i)).unwrap() {
            assert_eq!(v, format!("v{batch}-{i}").into_bytes());
            n += 1;
        }
    }
    n
}

fn assert_no_garbage(storage: &MemStorage, tree: &Tree) {
    let version = tree.pin();
    let mut listed: Vec<String> = version.all_tables().map(|t| t.name().to_owned()).collect();
    listed.push(MANIFEST_NAME.to_owned());
    listed.sort();
    let mut files = storage.list_dir("lsm").unwrap();
    files.sort();
    assert_eq!(files, listed);
}

#[test]
fn a_crash_during_a_flush_keeps_the_old_or_the_new_tables() {
    sweep_flush(|_| CrashMode::DropUnsynced);
}

#[test]
fn a_torn_crash_during_a_flush_keeps_the_old_or_the_new_tables() {
    for seed in 0..4 {
        sweep_flush(|n| CrashMode::Torn {
            seed: n * 31 + seed,
        });
    }
}

#[test]
fn a_crash_during_a_compaction_loses_nothing() {
    sweep_compaction(|_| CrashMode::DropUnsynced);
}

#[test]
fn a_torn_crash_during_a_compaction_loses_nothing() {
    for seed in 0..4 {
        sweep_compaction(|n| CrashMode::Torn {
            seed: n * 31 + seed,
        });
    }
}

fn sweep_flush(mode: impl Fn(u64) -> CrashMode) {
    let mut completed_once = false;
    for n in 1..200 {
        let storage = MemStorage::new();
        let dyn_storage: Arc<dyn Storage> = Arc::new(storage.clone());
        let tree = Tree::open(Arc::clone(&dyn_storage), "lsm", options()).unwrap();
        write_batch(&tree, 0);
        assert!(tree.flush_one().unwrap());
        write_batch(&tree, 1);
        storage.fail_after(n);
        let result = tree.flush_one();
        drop(tree);
        storage.crash_with(mode(n));
        storage.heal();
        let tree = Tree::open(Arc::clone(&dyn_storage), "lsm", options()).unwrap();
        assert_eq!(
            present(&tree, 0),
            40,
            "crash at op {n} lost a durable flush"
        );
        let new = present(&tree, 1);
        assert!(
            new == 0 || new == 40,
            "crash at op {n}: {new} of 40 entries"
        );
        if result.is_ok() {
            assert_eq!(new, 40, "crash at op {n}: a completed flush was lost");
        }
        assert_no_garbage(&storage, &tree);
        if result.is_ok() {
            completed_once = true;
            break;
        }
    }
    assert!(completed_once, "the sweep never reached a completed flush");
}

fn sweep_compaction(mode: impl Fn(u64) -> CrashMode) {
    let mut completed_once = false;
    for n in 1..400 {
        let storage = MemStorage::new();
        let dyn_storage: Arc<dyn Storage> = Arc::new(storage.clone());
        let tree = Tree::open(Arc::clone(&dyn_storage), "lsm", options()).unwrap();
        write_batch(&tree, 0);
        write_batch(&tree, 1);
        while tree.flush_one().unwrap() {}
        // Overwrite some of batch 0 and delete others in a third table.
        for i in 0..10 {
            tree.delete(&key(0, i)).unwrap();
        }
        tree.freeze();
        assert!(tree.flush_one().unwrap());
        let before = tree.stats().levels[0].tables;
        assert_eq!(before, 3);
        storage.fail_after(n);
        let result = tree.compact_one();
        drop(tree);
        storage.crash_with(mode(n));
        storage.heal();
        let tree = Tree::open(Arc::clone(&dyn_storage), "lsm", options()).unwrap();
        assert_eq!(present(&tree, 0), 30, "crash at op {n}");
        assert_eq!(present(&tree, 1), 40, "crash at op {n}");
        let l0 = tree.stats().levels[0].tables;
        assert!(l0 == 0 || l0 == 3, "crash at op {n}: {l0} L0 tables");
        if result.is_ok() {
            assert_eq!(l0, 0, "crash at op {n}: a completed compaction was lost");
        }
        assert_no_garbage(&storage, &tree);
        if result.is_ok() {
            completed_once = true;
            break;
        }
    }
    assert!(
        completed_once,
        "the sweep never reached a completed compaction"
    );
}
