//! Range tombstones through every part of the tree (spec/lsm-tree.md, "Range deletion"): a
//! range deleted in the memtable hides values in every level, stays a deletion while it is
//! flushed and compacted down (cut across several output tables), never hides what was
//! written after it, and disappears at the bottom with the data it deleted. Every step is
//! checked against a model, and the tree is reopened from its manifest at the end.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate::lsm::tree::{Tree, TreeOptions};
use flowstate::lsm::ShardedBlockCache;
use flowstate::{MemStorage, Storage};

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn options() -> TreeOptions {
    TreeOptions {
        block_size: 128,
        l0_compaction_trigger: 2,
        target_table_bytes: 1024,
        level1_max_bytes: 4096,
        ..TreeOptions::default()
    }
}

fn flush(tree: &Tree) {
    tree.freeze();
    while tree.flush_one().unwrap() {}
}

fn check(tree: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str) {
    for i in 0..600 {
        let k = key(i);
        assert_eq!(
            tree.get(&k).unwrap().as_ref(),
            model.get(&k),
            "{what}: get {}",
            String::from_utf8_lossy(&k)
        );
    }
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        tree.scan_prefix(b"key").unwrap(),
        all,
        "{what}: prefix scan"
    );
    let window: Vec<_> = model
        .range(key(100)..key(400))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        tree.scan_range(&key(100), &key(400)).unwrap(),
        window,
        "{what}: range scan"
    );
    // Tables of a level below L0 never overlap, range tombstones included.
    let version = tree.pin();
    for level in 1..version.level_count() {
        for pair in version.tables(level).windows(2) {
            assert!(
                pair[0].largest() < pair[1].smallest(),
                "{what}: level {level} overlaps"
            );
        }
    }
}

fn delete_range(tree: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, lo: u32, hi: u32) {
    tree.delete_range(&key(lo), &key(hi)).unwrap();
    model.retain(|k, _| !(k >= &key(lo) && k < &key(hi)));
}

fn put(tree: &Tree, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, i: u32, v: &str) {
    tree.put(&key(i), v.as_bytes()).unwrap();
    model.insert(key(i), v.as_bytes().to_vec());
}

#[test]
fn range_deletes_hide_older_data_through_flushes_and_compactions() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(Arc::clone(&storage), "lsm", options()).unwrap();
    let mut model = BTreeMap::new();

    // Three generations of values, pushed into deeper levels.
    for round in 0..3 {
        for i in (round..600).step_by(2) {
            put(&tree, &mut model, i, &format!("v{round}-{i}"));
        }
        flush(&tree);
        while tree.compact_one().unwrap() {}
    }
    let deep_levels = tree
        .stats()
        .levels
        .iter()
        .skip(1)
        .filter(|l| l.tables > 0)
        .count();
    assert!(
        deep_levels >= 2,
        "the data spans levels: {:?}",
        tree.stats().levels
    );
    check(&tree, &model, "before");

    // A range deleted in the memtable, then rewritten in part: later writes survive.
    delete_range(&tree, &mut model, 50, 450);
    check(&tree, &model, "range in the memtable");
    for i in (100..200).step_by(7) {
        put(&tree, &mut model, i, &format!("after-{i}"));
    }
    tree.merge(&key(300), b"+op").unwrap();
    model.insert(key(300), b"+op".to_vec());
    check(&tree, &model, "writes after the range");

    // A second, overlapping range in a frozen memtable over the first one.
    tree.freeze();
    delete_range(&tree, &mut model, 420, 520);
    check(&tree, &model, "ranges in two memtables");

    // Flush: the ranges move into L0 tables.
    flush(&tree);
    let version = tree.pin();
    assert!(
        version
            .tables(0)
            .iter()
            .any(|t| !t.range_tombstones().is_empty()),
        "a flushed range is a range tombstone of an L0 table"
    );
    drop(version);
    check(&tree, &model, "ranges in L0");

    // Compaction step by step: after each, nothing deleted comes back.
    let mut steps = 0;
    while tree.compact_one().unwrap() {
        steps += 1;
        check(&tree, &model, &format!("compaction step {steps}"));
    }
    assert!(steps > 0);

    // Everything to the bottom: the ranges leave with the data they deleted.
    for round in 0..4 {
        for i in (0..600).step_by(97) {
            put(&tree, &mut model, i, &format!("late{round}-{i}"));
        }
        flush(&tree);
        while tree.compact_one().unwrap() {}
        check(&tree, &model, &format!("late round {round}"));
    }

    drop(tree);
    let tree = Tree::open(storage, "lsm", options()).unwrap();
    check(&tree, &model, "reopened");
}

#[test]
fn a_range_over_many_rewritten_keys_is_cut_between_output_tables() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(Arc::clone(&storage), "lsm", options()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..600 {
        put(&tree, &mut model, i, &format!("old-{i}"));
    }
    flush(&tree);
    while tree.compact_one().unwrap() {}
    for i in 0..600 {
        put(&tree, &mut model, i, &format!("older-{i}"));
    }
    flush(&tree);
    while tree.compact_one().unwrap() {}
    // Clear everything, then rewrite every third key: the range spans the whole output.
    delete_range(&tree, &mut model, 0, 600);
    for i in (0..600).step_by(3) {
        put(&tree, &mut model, i, &format!("new-{i}"));
    }
    flush(&tree);
    // Force an L0 -> L1 compaction while deeper data exists: the range is kept and cut.
    for i in [1u32, 599] {
        put(&tree, &mut model, i, "edge");
    }
    flush(&tree);
    assert!(tree.compact_one().unwrap());
    check(&tree, &model, "cut range");
    let version = tree.pin();
    let with_ranges = version
        .all_tables()
        .filter(|t| !t.range_tombstones().is_empty())
        .count();
    assert!(
        with_ranges >= 2,
        "the range is carried by several output tables"
    );
    drop(version);
    drop(tree);
    let tree = Tree::open(Arc::clone(&storage), "lsm", options()).unwrap();
    check(&tree, &model, "reopened with cut ranges");
    while tree.compact_one().unwrap() {}
    check(&tree, &model, "compacted");
}

#[test]
fn a_range_delete_reads_nothing() {
    let cache = Arc::new(ShardedBlockCache::new(1 << 20));
    let opts = TreeOptions {
        block_cache: Some(cache.clone()),
        ..options()
    };
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(storage, "lsm", opts).unwrap();
    for i in 0..600 {
        tree.put(&key(i), b"value").unwrap();
    }
    flush(&tree);
    while tree.compact_one().unwrap() {}
    let before = cache.stats();
    tree.delete_range(&key(0), &key(600)).unwrap();
    let after = cache.stats();
    assert_eq!(before.hits + before.misses, after.hits + after.misses);
    assert_eq!(tree.scan_prefix(b"key").unwrap(), Vec::new());
    // Empty and inverted ranges change nothing.
    tree.put(&key(5), b"x").unwrap();
    tree.delete_range(&key(5), &key(5)).unwrap();
    tree.delete_range(&key(9), &key(1)).unwrap();
    assert_eq!(tree.get(&key(5)).unwrap().as_deref(), Some(&b"x"[..]));
}

/// The start of the `i`-th of many map-clear-like ranges, in a scattered order.
fn scattered(i: u64) -> Vec<u8> {
    format!("{:016x}-map-prefix", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
}

/// Far more range tombstones than one table's block may hold (a memtable of map clears):
/// the flush writes several L0 tables, a compaction that must keep the ranges (older data
/// below) cuts its output by range bytes too, every key under a range stays deleted and the
/// keys between ranges stay, and the tree reopens.
#[test]
fn more_ranges_than_a_table_holds_are_split_across_tables() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let opts = TreeOptions {
        memtable_bytes: 24 << 20,
        max_immutable_memtables: 4,
        l0_compaction_trigger: 2,
        level1_max_bytes: 1,
        ..TreeOptions::default()
    };
    let tree = Tree::open(Arc::clone(&storage), "lsm", opts.clone()).unwrap();
    // Older data under and between the ranges, pushed below L1 so that L0 -> L1 keeps ranges.
    let probes: Vec<u64> = (0..2000).map(|i| i * 97).collect();
    for &i in &probes {
        let mut under = scattered(i);
        under.extend_from_slice(b"-entry");
        tree.put(&under, b"old").unwrap();
        let mut between = scattered(i);
        between.push(0xff);
        between.push(0x01);
        tree.put(&between, b"kept").unwrap();
    }
    tree.freeze();
    while tree.flush_one().unwrap() {}
    while tree.compact_one().unwrap() {}
    tree.put(b"~", b"x").unwrap();
    tree.freeze();
    while tree.flush_one().unwrap() {}
    while tree.compact_one().unwrap() {}
    // Map clears until two memtables froze: each holds several tables' worth of ranges.
    let mut i = 0u64;
    while tree.stats().levels[0].tables < 2 {
        let start = scattered(i);
        let mut end = start.clone();
        end.push(0xff);
        tree.delete_range(&start, &end).unwrap();
        i += 1;
        if tree.immutable_memtables() > 0 {
            assert!(tree.flush_one().unwrap());
        }
    }
    let l0 = tree.pin();
    let l0_ranges: usize = l0
        .tables(0)
        .iter()
        .map(|t| t.range_tombstones().len())
        .sum();
    assert!(l0_ranges > 100_000, "{l0_ranges} ranges flushed");
    assert!(
        l0.tables(0).len() > 2,
        "a flush of many ranges makes several tables"
    );
    drop(l0);
    assert!(
        tree.compact_one().unwrap(),
        "L0 -> L1 with older data below"
    );
    let version = tree.pin();
    let carried = version
        .all_tables()
        .filter(|t| !t.range_tombstones().is_empty())
        .count();
    assert!(carried > 2, "the compaction output is cut by range bytes");
    drop(version);
    let check = |tree: &Tree| {
        for &p in &probes {
            let mut under = scattered(p);
            under.extend_from_slice(b"-entry");
            let mut between = scattered(p);
            between.push(0xff);
            between.push(0x01);
            let want = (p >= i).then(|| b"old".to_vec());
            assert_eq!(tree.get(&under).unwrap(), want, "under range {p}");
            assert_eq!(tree.get(&between).unwrap().as_deref(), Some(&b"kept"[..]));
        }
    };
    check(&tree);
    drop(tree);
    let tree = Tree::open(storage, "lsm", opts).unwrap();
    check(&tree);
}
