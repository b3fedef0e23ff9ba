//! Tables read through memory maps (`TreeOptions::mmap_reads`, spec/lsm-tree.md): a tree on
//! `LocalStorage` maps its tables, reads back what it wrote after flushes, a compaction and a
//! reopen, exactly as with reads through `pread`; an obsolete table stays readable through a
//! pinned version after compaction and its file is removed (and unmapped) when the version is
//! dropped; a storage that cannot map (`MemStorage`) falls back to `open`.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::{LocalStorage, MemStorage, Storage};

fn options(mmap_reads: bool) -> TreeOptions {
    TreeOptions {
        block_size: 256,
        l0_compaction_trigger: 2,
        target_table_bytes: 4096,
        mmap_reads,
        ..TreeOptions::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// The lines of this process's memory maps that name a file under `dir` (Linux only).
#[cfg(target_os = "linux")]
fn mapped_files_under(dir: &std::path::Path) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_str().unwrap();
    maps.lines()
        .filter(|l| l.contains(dir))
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_owned())
        .collect()
}

/// Writes two generations of 500 keys (puts, then merges and deletes), flushed into L0 and
/// compacted, and returns what every key reads.
fn write_and_read(tree: &Tree) -> Vec<Option<Vec<u8>>> {
    for i in 0..500u32 {
        tree.put(&key(i), &i.to_le_bytes()).unwrap();
    }
    tree.freeze();
    tree.flush_one().unwrap();
    for i in (0..500u32).step_by(3) {
        tree.merge(&key(i), b"+").unwrap();
    }
    for i in (1..500u32).step_by(7) {
        tree.delete(&key(i)).unwrap();
    }
    tree.freeze();
    tree.flush_one().unwrap();
    (0..500u32).map(|i| tree.get(&key(i)).unwrap()).collect()
}

#[test]
fn a_tree_on_local_storage_reads_its_tables_through_maps_across_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()).unwrap());
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(plain_dir.path()).unwrap());

    let tree = Tree::open(Arc::clone(&storage), "db", options(true)).unwrap();
    let plain = Tree::open(Arc::clone(&plain_storage), "db", options(false)).unwrap();
    let before = write_and_read(&tree);
    assert_eq!(before, write_and_read(&plain));
    assert!(before.iter().any(Option::is_none) && before.iter().any(Option::is_some));

    #[cfg(target_os = "linux")]
    {
        let maps = mapped_files_under(dir.path());
        assert!(maps.iter().any(|p| p.ends_with(".sst")), "{maps:?}");
        assert!(mapped_files_under(plain_dir.path()).is_empty());
    }

    // Compaction makes the L0 tables obsolete; a pinned version still reads them through
    // their maps, and dropping it removes their files (unlinked while mapped, then unmapped).
    let pinned = tree.pin();
    let old_names: Vec<String> = pinned
        .tables(0)
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(!old_names.is_empty());
    assert!(tree.compact_one().unwrap());
    assert!(plain.compact_one().unwrap());
    for name in &old_names {
        assert!(storage.exists(&format!("db/{name}")).unwrap(), "{name}");
    }
    let through_pinned: Vec<Option<Vec<u8>>> =
        (0..500u32).map(|i| pinned.get(&key(i)).unwrap()).collect();
    assert_eq!(through_pinned, before);
    drop(pinned);
    for name in &old_names {
        assert!(!storage.exists(&format!("db/{name}")).unwrap(), "{name}");
        #[cfg(target_os = "linux")]
        assert!(
            !mapped_files_under(dir.path())
                .iter()
                .any(|p| p.contains(name.as_str())),
            "{name} is still mapped"
        );
    }

    let after: Vec<Option<Vec<u8>>> = (0..500u32).map(|i| tree.get(&key(i)).unwrap()).collect();
    assert_eq!(after, before);
    let scanned = tree.scan_prefix(b"k").unwrap();
    assert_eq!(scanned, plain.scan_prefix(b"k").unwrap());
    assert_eq!(scanned.len(), before.iter().flatten().count());

    drop(tree);
    #[cfg(target_os = "linux")]
    assert!(mapped_files_under(dir.path()).is_empty());
    let tree = Tree::open(Arc::clone(&storage), "db", options(true)).unwrap();
    let reopened: Vec<Option<Vec<u8>>> = (0..500u32).map(|i| tree.get(&key(i)).unwrap()).collect();
    assert_eq!(reopened, before);
    tree.dispose().unwrap();
}

#[test]
fn a_storage_that_cannot_map_falls_back_to_open() {
    let storage = Arc::new(MemStorage::new());
    storage.write_atomic("f", b"bytes").unwrap();
    assert!(storage.open_mapped("f").unwrap().is_none());
    assert!(storage.open_mapped("../f").is_err());

    let tree = Tree::open(storage, "db", options(true)).unwrap();
    let plain = Tree::open(Arc::new(MemStorage::new()), "db", options(false)).unwrap();
    assert_eq!(write_and_read(&tree), write_and_read(&plain));
}

#[test]
fn the_backend_setting_reaches_the_tree_options() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let on = flowstate::BackendConfig::lsm_on(Arc::clone(&storage), "work");
    assert!(on.lsm_config().unwrap().tree.mmap_reads);
    let off = on.lsm_mmap_reads(false);
    assert!(!off.lsm_config().unwrap().tree.mmap_reads);
}
