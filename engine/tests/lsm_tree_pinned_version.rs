//! A pinned version is a snapshot of the tables (spec/lsm-tree.md, "Versions and file
//! deletion"): after the memtables are flushed and a version pinned, later writes, deletes,
//! flushes and compactions change what the tree reads but not what the pinned version reads,
//! and its files stay until it is dropped.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::{MemStorage, Storage};

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn flush(tree: &Tree) {
    tree.freeze();
    while tree.flush_one().unwrap() {}
}

#[test]
fn a_pinned_version_reads_as_of_the_pin() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let options = TreeOptions {
        block_size: 128,
        l0_compaction_trigger: 2,
        target_table_bytes: 1024,
        level1_max_bytes: 2048,
        ..TreeOptions::default()
    };
    let tree = Tree::open(Arc::clone(&storage), "t", options).unwrap();
    for i in 0..100 {
        tree.put(&key(i), b"old").unwrap();
    }
    flush(&tree);
    for i in 0..100 {
        tree.merge(&key(i), b"+1").unwrap();
    }
    flush(&tree);
    let snapshot = tree.pin();
    let files: Vec<String> = snapshot.all_tables().map(|t| t.name().to_owned()).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = (0..100).map(|i| (key(i), b"old+1".to_vec())).collect();
    assert_eq!(snapshot.scan_prefix(b"key").unwrap(), want);

    for round in 0..3 {
        for i in 0..100 {
            if i % 3 == 0 {
                tree.delete(&key(i)).unwrap();
            } else {
                tree.put(&key(i), format!("new{round}").as_bytes()).unwrap();
            }
        }
        flush(&tree);
        while tree.compact_one().unwrap() {}
    }
    assert_eq!(tree.get(&key(0)).unwrap(), None);
    assert_eq!(tree.get(&key(1)).unwrap(), Some(b"new2".to_vec()));
    for i in 0..100 {
        assert_eq!(snapshot.get(&key(i)).unwrap(), Some(b"old+1".to_vec()));
    }
    assert_eq!(snapshot.scan_prefix(b"key").unwrap(), want);
    for name in &files {
        assert!(storage.exists(&format!("t/{name}")).unwrap());
    }
    drop(snapshot);
    for name in &files {
        assert!(!storage.exists(&format!("t/{name}")).unwrap(), "{name}");
    }
}
