//! Bulk loading without the memtable (spec/lsm-tree.md, "Ingestion"): `TableWriter` writes
//! sorted values into tables that `Tree::ingest` adds as the newest data, into the deepest
//! level with nothing overlapping above it (the bottom of an empty tree) or into L0 when the
//! tables overlap one another or L0. Later writes, flushes, compactions and a reopen see the
//! ingested data; a refused or failed ingest leaves no file behind; the LSM backend's restore
//! is built on it.

use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions, MAX_LEVELS, TABLE_SUFFIX};
use flowstate::*;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn options() -> TreeOptions {
    TreeOptions {
        block_size: 256,
        l0_compaction_trigger: 2,
        target_table_bytes: 8 << 10,
        level1_max_bytes: 32 << 10,
        ..TreeOptions::default()
    }
}

fn table_files(storage: &MemStorage) -> usize {
    storage
        .list_dir("lsm")
        .unwrap_or_default()
        .iter()
        .filter(|n| n.ends_with(TABLE_SUFFIX) || n.contains("tmp"))
        .count()
}

#[test]
fn ingested_tables_land_in_the_bottom_level_of_an_empty_tree_and_stay_readable() {
    let storage = MemStorage::new();
    let dynamic: Arc<dyn Storage> = Arc::new(storage.clone());
    let tree = Tree::open(Arc::clone(&dynamic), "lsm", options()).unwrap();
    let mut writer = tree.table_writer();
    for i in 0..3000 {
        writer.add(&key(i), format!("v{i}").as_bytes()).unwrap();
    }
    let tables = writer.finish().unwrap();
    assert!(
        tables.len() >= 2,
        "cut at the target size: {}",
        tables.len()
    );
    let ingested = tree.ingest(tables).unwrap();
    assert_eq!(ingested.level, MAX_LEVELS - 1);
    assert_eq!(ingested.l0_tables, 0);
    let stats = tree.stats();
    assert!(stats.ingested_tables >= 2 && stats.ingested_bytes > 0);
    assert_eq!(stats.flushes, 0);
    for i in (0..3000).step_by(7) {
        assert_eq!(
            tree.get(&key(i)).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    // Newer writes over the ingested data, pushed down through every level.
    for i in (0..3000).step_by(3) {
        tree.put(&key(i), b"new").unwrap();
    }
    tree.delete_range(&key(100), &key(200)).unwrap();
    tree.freeze();
    while tree.flush_one().unwrap() {}
    while tree.compact_one().unwrap() {}
    let check = |tree: &Tree| {
        for i in 0..3000 {
            let want = if (100..200).contains(&i) {
                None
            } else if i % 3 == 0 {
                Some(b"new".to_vec())
            } else {
                Some(format!("v{i}").into_bytes())
            };
            assert_eq!(tree.get(&key(i)).unwrap(), want, "key {i}");
        }
        assert_eq!(tree.scan_prefix(b"key").unwrap().len(), 3000 - 100);
    };
    check(&tree);
    drop(tree);
    let tree = Tree::open(dynamic, "lsm", options()).unwrap();
    check(&tree);
}

#[test]
fn overlapping_runs_go_to_l0_and_an_ingest_goes_above_overlapping_data() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(storage, "lsm", options()).unwrap();
    // Existing data in a deep level.
    for i in 0..1000 {
        tree.put(&key(i), b"old").unwrap();
    }
    tree.freeze();
    while tree.flush_one().unwrap() {}
    tree.put(&key(0), b"old").unwrap();
    tree.freeze();
    while tree.flush_one().unwrap() {}
    while tree.compact_one().unwrap() {}
    assert_eq!(tree.stats().levels[0].tables, 0);
    // Keys beyond every table: nothing overlaps them at any level, so the bottom one.
    let mut writer = tree.table_writer();
    for i in 5000..5100 {
        writer.add(&key(i), b"far").unwrap();
    }
    let level = tree.ingest(writer.finish().unwrap()).unwrap().level;
    assert_eq!(level, MAX_LEVELS - 1, "nothing overlaps keys 5000..5100");
    // Overlapping the old keys: above the first level that holds them.
    let first_holding = (1..MAX_LEVELS)
        .find(|&l| tree.stats().levels[l].tables > 0)
        .unwrap();
    let mut writer = tree.table_writer();
    for i in 500..600 {
        writer.add(&key(i), b"newer").unwrap();
    }
    let level = tree.ingest(writer.finish().unwrap()).unwrap().level;
    assert!(level < first_holding, "{level} above {first_holding}");
    assert_eq!(tree.get(&key(550)).unwrap().as_deref(), Some(&b"newer"[..]));
    assert_eq!(tree.get(&key(450)).unwrap().as_deref(), Some(&b"old"[..]));
    // A run disjoint from everything, then two runs that overlap each other, through one
    // writer.
    let mut writer = tree.table_writer();
    for i in 900_000..900_050 {
        writer.add(&key(i), b"apart").unwrap();
    }
    for i in (2000..2100).step_by(2) {
        writer.add(&key(i), b"even").unwrap();
    }
    for i in (2001..2101).step_by(2) {
        writer.add(&key(i), b"odd").unwrap();
    }
    let tables = writer.finish().unwrap();
    assert_eq!(tables.len(), 3);
    let ingested = tree.ingest(tables).unwrap();
    // The even run and the apart run are disjoint and go deep; the odd run overlaps the even
    // one and goes to L0.
    assert_eq!(ingested.l0_tables, 1, "{ingested:?}");
    assert_eq!(ingested.level_tables, 2, "{ingested:?}");
    assert_eq!(ingested.level, MAX_LEVELS - 1, "{ingested:?}");
    assert_eq!(
        tree.get(&key(900_001)).unwrap().as_deref(),
        Some(&b"apart"[..])
    );
    assert_eq!(tree.get(&key(2050)).unwrap().as_deref(), Some(&b"even"[..]));
    assert_eq!(tree.get(&key(2051)).unwrap().as_deref(), Some(&b"odd"[..]));
    while tree.compact_one().unwrap() {}
    assert_eq!(tree.get(&key(2051)).unwrap().as_deref(), Some(&b"odd"[..]));
    assert_eq!(tree.get(&key(550)).unwrap().as_deref(), Some(&b"newer"[..]));
}

#[test]
fn a_refused_dropped_or_failed_ingest_leaves_no_file() {
    let storage = MemStorage::new();
    let dynamic: Arc<dyn Storage> = Arc::new(storage.clone());
    let tree = Tree::open(Arc::clone(&dynamic), "lsm", options()).unwrap();

    // Refused: the memtable holds data.
    tree.put(b"zzz", b"1").unwrap();
    let mut writer = tree.table_writer();
    for i in 0..500 {
        writer.add(&key(i), b"v").unwrap();
    }
    let tables = writer.finish().unwrap();
    assert!(table_files(&storage) > 0);
    let err = tree.ingest(tables).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert_eq!(table_files(&storage), 0, "refused tables are deleted");
    assert_eq!(tree.get(&key(1)).unwrap(), None);

    // Dropped before finishing: the open table and the finished ones are deleted.
    let mut writer = tree.table_writer();
    for i in 0..500 {
        writer.add(&key(i), b"v").unwrap();
    }
    drop(writer);
    assert_eq!(table_files(&storage), 0);

    assert_eq!(tree.get(b"zzz").unwrap().as_deref(), Some(&b"1"[..]));
}

/// A storage failure at every point of writing and ingesting (that operation and every later
/// one fail): an error, nothing visible, the tree still readable; after a reopen the ingest is
/// whole or absent, and when absent no file is left beyond the tables the manifest lists
/// (cleanup cannot run while the storage fails; the open removes what it left).
#[test]
fn a_failure_at_every_point_of_an_ingest_leaves_the_tree_unchanged() {
    let mut failed_once = false;
    for n in 1..80 {
        let storage = MemStorage::new();
        let dynamic: Arc<dyn Storage> = Arc::new(storage.clone());
        let tree = Tree::open(Arc::clone(&dynamic), "lsm", options()).unwrap();
        tree.put(b"zzz", b"1").unwrap();
        tree.freeze();
        while tree.flush_one().unwrap() {}
        let baseline = table_files(&storage);
        storage.fail_after(n);
        let result = (|| {
            let mut writer = tree.table_writer();
            for i in 0..500 {
                writer.add(&key(i), b"v")?;
            }
            tree.ingest(writer.finish()?)
        })();
        storage.heal();
        let ok = result.is_ok();
        failed_once |= !ok;
        let want = ok.then(|| b"v".to_vec());
        assert_eq!(tree.get(&key(1)).unwrap(), want, "op {n}");
        assert_eq!(tree.get(b"zzz").unwrap().as_deref(), Some(&b"1"[..]));
        drop(tree);
        // A failed manifest write may still have landed (the rename before a failed directory
        // sync): after a reopen the ingest is then whole, else absent without a stray file.
        let tree = Tree::open(Arc::clone(&dynamic), "lsm", options()).unwrap();
        let present = (0..500)
            .filter(|&i| tree.get(&key(i)).unwrap().is_some())
            .count();
        assert!(
            present == 0 || present == 500,
            "op {n}: {present} of 500 after a reopen"
        );
        if ok {
            assert_eq!(present, 500, "op {n}: an ingest that succeeded was lost");
            break;
        }
        if present == 0 {
            assert_eq!(
                table_files(&storage),
                baseline,
                "op {n}: garbage left after a reopen"
            );
        }
    }
    assert!(failed_once);
}

#[test]
fn an_lsm_restore_writes_tables_without_flushing() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut heap = HeapBackend::<u64>::open(BackendConfig::heap().max_parallelism(128))?;
    let value = heap.register(ValueStateDescriptor::<u64>::new("value"))?;
    let map = heap.register(MapStateDescriptor::<u32, String>::new("map"))?;
    let list = heap.register(ListStateDescriptor::<u64>::new("list"))?;
    for k in 0..5000u64 {
        heap.set_current_key(&k);
        heap.value(&value).update(k * 3)?;
        heap.map(&map).put((k % 11) as u32, format!("m{k}"))?;
        heap.map(&map).put(99, "x".into())?;
        heap.list(&list).add(k)?;
        heap.list(&list).add(k + 1)?;
    }
    let snap = heap.snapshot_state()?;
    let mut lsm = LsmBackend::<u64>::restore(
        BackendConfig::lsm(dir.path().join("lsm")).max_parallelism(128),
        &[&snap],
    )?;
    let stats = lsm.stats();
    assert_eq!(stats.tree.flushes, 0, "{stats:?}");
    assert_eq!(
        stats.tree.levels[MAX_LEVELS - 1].tables as u64,
        stats.tree.ingested_tables
    );
    assert!(
        stats.tree.ingested_tables >= 3,
        "one run per state at least"
    );
    let value = lsm.register(ValueStateDescriptor::<u64>::new("value"))?;
    let map = lsm.register(MapStateDescriptor::<u32, String>::new("map"))?;
    let list = lsm.register(ListStateDescriptor::<u64>::new("list"))?;
    for k in (0..5000u64).step_by(13) {
        lsm.set_current_key(&k);
        assert_eq!(lsm.value(&value).get()?, Some(k * 3));
        assert_eq!(
            lsm.map(&map).entries()?,
            vec![((k % 11) as u32, format!("m{k}")), (99, "x".to_string())]
        );
        assert_eq!(lsm.list(&list).get()?, vec![k, k + 1]);
    }
    assert_eq!(
        lsm.snapshot_state()?.canonical_entries("map")?,
        snap.canonical_entries("map")?
    );
    Ok(())
}

/// A key group larger than the restore buffer is written in several sorted runs whose tables
/// overlap: all but the first go to L0, and every other table still goes to the bottom level.
#[test]
fn one_oversized_key_group_sends_only_its_own_runs_to_l0() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut heap = HeapBackend::<u64>::open(BackendConfig::heap().max_parallelism(128))?;
    let value = heap.register(ValueStateDescriptor::<u64>::new("value"))?;
    let big = heap.register(ValueStateDescriptor::<String>::new("big"))?;
    for k in 0..20_000u64 {
        heap.set_current_key(&k);
        heap.value(&value).update(k)?;
    }
    // Nine keys of one key group with 1 MiB values: 9 MiB in one key group.
    let group_of = |k: u64| {
        let mut e = Vec::new();
        Codec::encode(&k, &mut e);
        key_group_for(&e, 128)
    };
    let same: Vec<u64> = (0..1_000_000u64)
        .filter(|&k| group_of(k) == group_of(7))
        .take(9)
        .collect();
    for &k in &same {
        heap.set_current_key(&k);
        heap.value(&big).update("y".repeat(1 << 20))?;
    }
    let snap = heap.snapshot_state()?;
    let mut lsm = LsmBackend::<u64>::restore(
        BackendConfig::lsm(dir.path().join("lsm"))
            .max_parallelism(128)
            .lsm_memtable_bytes(4 << 20),
        &[&snap],
    )?;
    let stats = lsm.stats();
    let l0 = stats.tree.levels[0].tables;
    let bottom = stats.tree.levels[MAX_LEVELS - 1].tables;
    assert!(
        l0 >= 1,
        "the big key group's later runs overlap its first: {stats:?}"
    );
    assert!(
        bottom >= 1,
        "the other tables go to the bottom level: {stats:?}"
    );
    assert_eq!(l0 + bottom, stats.tree.ingested_tables as usize);
    let value = lsm.register(ValueStateDescriptor::<u64>::new("value"))?;
    let big = lsm.register(ValueStateDescriptor::<String>::new("big"))?;
    for k in (0..20_000u64).step_by(101) {
        lsm.set_current_key(&k);
        assert_eq!(lsm.value(&value).get()?, Some(k));
    }
    for &k in &same {
        lsm.set_current_key(&k);
        assert_eq!(lsm.value(&big).get()?.map(|v| v.len()), Some(1 << 20));
    }
    Ok(())
}
