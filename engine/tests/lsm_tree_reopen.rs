//! Reopening a tree (spec/lsm-tree.md, "Opening"): flushed data and the level structure come
//! back from the manifest, unflushed data is gone (no write-ahead log), stray table and
//! temporary files are removed, new tables get fresh ids, and a damaged manifest or a missing
//! table is an error, not a panic. Runs over `LocalStorage` and `MemStorage`.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions, MANIFEST_NAME};
use flowstate::{LocalStorage, MemStorage, Storage};

fn options() -> TreeOptions {
    TreeOptions {
        block_size: 256,
        l0_compaction_trigger: 2,
        target_table_bytes: 2048,
        ..TreeOptions::default()
    }
}

fn reopen_round_trip(storage: Arc<dyn Storage>) {
    let tree = Tree::open(Arc::clone(&storage), "db", options()).unwrap();
    for i in 0..300u32 {
        tree.put(format!("a{i:04}").as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    tree.freeze();
    tree.flush_one().unwrap();
    for i in 0..300u32 {
        tree.merge(format!("a{i:04}").as_bytes(), b"+").unwrap();
    }
    tree.freeze();
    tree.flush_one().unwrap();
    assert!(tree.compact_one().unwrap());
    tree.put(b"b-unflushed", b"lost").unwrap();
    let levels = tree.stats().levels;
    drop(tree);

    // Garbage a crash could leave: a table the manifest does not list and a temporary file.
    let mut f = storage.create("db/999999.sst").unwrap();
    f.write_all(b"partial").unwrap();
    drop(f);
    let mut f = storage.create("db/000123.sst.flowstate-tmp").unwrap();
    f.write_all(b"partial").unwrap();
    drop(f);

    let tree = Tree::open(Arc::clone(&storage), "db", options()).unwrap();
    assert_eq!(tree.stats().levels, levels);
    for i in 0..300u32 {
        let mut want = i.to_le_bytes().to_vec();
        want.push(b'+');
        assert_eq!(tree.get(format!("a{i:04}").as_bytes()).unwrap(), Some(want));
    }
    assert_eq!(tree.get(b"b-unflushed").unwrap(), None);
    assert!(!storage.exists("db/999999.sst").unwrap());
    assert!(!storage.exists("db/000123.sst.flowstate-tmp").unwrap());
    // New tables do not reuse the stray file's id.
    tree.put(b"c", b"1").unwrap();
    tree.freeze();
    tree.flush_one().unwrap();
    let ids: Vec<u64> = tree.pin().all_tables().map(|t| t.id()).collect();
    assert!(ids.iter().any(|&id| id > 999_999), "{ids:?}");
    drop(tree);
    let tree = Tree::open(Arc::clone(&storage), "db", options()).unwrap();
    assert_eq!(tree.get(b"c").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn reopen_on_local_storage() {
    let dir = tempfile::tempdir().unwrap();
    reopen_round_trip(Arc::new(LocalStorage::new(dir.path()).unwrap()));
}

#[test]
fn reopen_on_mem_storage() {
    reopen_round_trip(Arc::new(MemStorage::new()));
}

#[test]
fn damage_is_an_error() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(Arc::clone(&storage), "db", options()).unwrap();
    tree.put(b"k", b"v").unwrap();
    tree.freeze();
    tree.flush_one().unwrap();
    let name = tree.pin().tables(0)[0].name().to_owned();
    drop(tree);
    let manifest = storage
        .read_all(&format!("db/{MANIFEST_NAME}"), 1 << 20)
        .unwrap();

    // A flipped byte in the manifest.
    let mut bad = manifest.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    storage
        .write_atomic(&format!("db/{MANIFEST_NAME}"), &bad)
        .unwrap();
    assert!(Tree::open(Arc::clone(&storage), "db", options()).is_err());

    // A listed table that is missing.
    storage
        .write_atomic(&format!("db/{MANIFEST_NAME}"), &manifest)
        .unwrap();
    storage.remove_file(&format!("db/{name}")).unwrap();
    assert!(Tree::open(Arc::clone(&storage), "db", options()).is_err());

    // Bad options.
    let zero = TreeOptions {
        memtable_bytes: 0,
        ..TreeOptions::default()
    };
    assert!(Tree::open(storage, "db2", zero).is_err());
}
