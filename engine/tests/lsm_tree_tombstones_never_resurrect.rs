//! Deletes stay deletes while the data they hide moves down the levels (spec/lsm-tree.md,
//! "Compaction"): a tombstone in a frozen memtable, L0 or L1 hides an older value in a deeper
//! level after every flush and compaction step, and once everything is compacted to the
//! bottom the keys are still absent. Replaced table files survive while a pinned version
//! holds them and are deleted after.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::{MemStorage, Storage};

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn options() -> TreeOptions {
    TreeOptions {
        block_size: 128,
        l0_compaction_trigger: 2,
        target_table_bytes: 1024,
        level1_max_bytes: 2048,
        ..TreeOptions::default()
    }
}

fn flush(tree: &Tree) {
    tree.freeze();
    while tree.flush_one().unwrap() {}
}

fn check(tree: &Tree, deleted: &[u32], live: &[u32], round: u32) {
    for &i in deleted {
        assert_eq!(tree.get(&key(i)).unwrap(), None, "key {i} resurrected");
    }
    for &i in live {
        assert_eq!(
            tree.get(&key(i)).unwrap(),
            Some(format!("v{round}-{i}").into_bytes()),
            "key {i}"
        );
    }
    let scanned: Vec<Vec<u8>> = tree
        .scan_prefix(b"key")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let want: Vec<Vec<u8>> = live.iter().map(|&i| key(i)).collect();
    assert_eq!(scanned, want);
    let range: Vec<Vec<u8>> = tree
        .scan_range(&key(0), &key(1000))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(range, want);
}

#[test]
fn deletes_hide_older_values_in_every_level() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(Arc::clone(&storage), "t", options()).unwrap();
    // Two rounds of values pushed down to L1 and L2.
    for round in 0..2 {
        for i in 0..200 {
            tree.put(&key(i), format!("v{round}-{i}").as_bytes())
                .unwrap();
        }
        flush(&tree);
        for i in (0..200).step_by(2) {
            tree.put(&key(i), format!("v{round}-{i}").as_bytes())
                .unwrap();
        }
        flush(&tree);
        while tree.compact_one().unwrap() {}
    }
    let stats = tree.stats();
    assert!(stats.compactions >= 2, "{stats:?}");
    assert!(stats.levels[2].tables > 0, "{stats:?}");

    // Deletes at every level above the data, checked after every step.
    let mut deleted = Vec::new();
    let mut live: Vec<u32> = (0..200).collect();
    for step in 0..4u32 {
        let gone: Vec<u32> = live.iter().copied().filter(|i| i % 4 == step).collect();
        for &i in &gone {
            tree.delete(&key(i)).unwrap();
        }
        deleted.extend(&gone);
        live.retain(|i| !gone.contains(i));
        check(&tree, &deleted, &live, 1);
        tree.freeze();
        check(&tree, &deleted, &live, 1);
        while tree.flush_one().unwrap() {
            check(&tree, &deleted, &live, 1);
        }
        while tree.compact_one().unwrap() {
            check(&tree, &deleted, &live, 1);
        }
        // A key deleted then appended to holds only the appended bytes.
        tree.merge(format!("zz{step}").as_bytes(), b"x").unwrap();
    }
    // Everything at the bottom: tombstones are gone, the keys stay absent.
    flush(&tree);
    for _ in 0..3 {
        // Push levels over their budgets by writing more.
        for i in 0..200 {
            tree.put(&key(2000 + i), &[7; 40]).unwrap();
        }
        flush(&tree);
        while tree.compact_one().unwrap() {}
    }
    for &i in &deleted {
        assert_eq!(tree.get(&key(i)).unwrap(), None, "key {i} resurrected");
    }
    for step in 0..4 {
        assert_eq!(
            tree.get(format!("zz{step}").as_bytes()).unwrap(),
            Some(b"x".to_vec())
        );
    }
    let stats = tree.stats();
    assert!(stats.compaction_bytes_written > 0);
    assert!(stats.write_amplification() > 1.0, "{stats:?}");
    // Tables that overlapped nothing below moved down without a rewrite, and reads agree.
    assert!(stats.trivial_moves > 0, "{stats:?}");
}

#[test]
fn replaced_tables_are_deleted_when_no_version_holds_them() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(Arc::clone(&storage), "t", options()).unwrap();
    for round in 0..2 {
        for i in 0..50 {
            tree.put(&key(i), format!("v{round}-{i}").as_bytes())
                .unwrap();
        }
        flush(&tree);
    }
    let pinned = tree.pin();
    let l0: Vec<String> = pinned
        .tables(0)
        .iter()
        .map(|t| format!("t/{}", t.name()))
        .collect();
    assert_eq!(l0.len(), 2);
    assert!(tree.compact_one().unwrap());
    assert!(tree.pin().tables(0).is_empty());
    for path in &l0 {
        assert!(storage.exists(path).unwrap(), "{path} deleted while pinned");
    }
    // The pinned version still reads the old tables.
    let old = pinned.tables(0)[0].reader().get(&key(3)).unwrap();
    assert!(old.is_some());
    drop(pinned);
    for path in &l0 {
        assert!(!storage.exists(path).unwrap(), "{path} not deleted");
    }
    for i in 0..50 {
        assert_eq!(
            tree.get(&key(i)).unwrap(),
            Some(format!("v1-{i}").into_bytes())
        );
    }
}
