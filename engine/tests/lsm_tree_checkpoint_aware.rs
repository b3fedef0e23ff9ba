//! The checkpoint-aware compaction policy: flushes cut at partition boundaries, runs merged
//! per partition, partitions merged into the base by delta ratio, every answer equal to a
//! model, and few new tables between two moments (what an incremental checkpoint ships).

mod common;

use common::rng::Lcg;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flowstate::lsm::tree::{CheckpointAwareOptions, CompactionPolicy, Tree, TreeOptions};
use flowstate::{MemStorage, Storage};

fn options(delta_ratio: f64) -> TreeOptions {
    TreeOptions {
        // A round's writes fit one memtable (which takes 128 KiB from its first write).
        memtable_bytes: 1 << 20,
        block_size: 512,
        compaction: CompactionPolicy::CheckpointAware(CheckpointAwareOptions {
            delta_ratio,
            max_runs: 4,
            partition_bytes: 32 << 10,
        }),
        ..TreeOptions::default()
    }
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:08}").into_bytes()
}

/// Flushes everything and runs every due compaction, as the pool does between checkpoints.
fn settle(tree: &Tree) {
    tree.freeze();
    while tree.flush_one().unwrap() || tree.compact_one().unwrap() {}
}

fn check(tree: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in model.iter().step_by(7) {
        assert_eq!(tree.get(k).unwrap().as_ref(), Some(v), "{k:?}");
    }
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(tree.scan_prefix(b"key-").unwrap(), all);
}

#[test]
fn partitions_take_their_own_runs_and_merge_by_delta_ratio() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let tree = Tree::open(storage, "t", options(0.5)).unwrap();
    let keys = 20_000;
    let mut model = BTreeMap::new();
    for k in 0..keys {
        let v = format!("value-{k}-0").into_bytes();
        tree.put(&key(k), &v).unwrap();
        model.insert(key(k), v);
    }
    tree.compact_all().unwrap();
    let stats = tree.stats();
    let partitions = stats.levels[6].tables;
    assert!(
        partitions >= 4,
        "the base is split into partitions: {:?}",
        stats.levels
    );

    let mut rng = Lcg(3);
    let mut new_tables = Vec::new();
    for round in 1..=60u64 {
        let before: HashSet<u64> = tree.pin().all_tables().map(|t| t.id()).collect();
        for _ in 0..keys / 100 {
            let k = rng.below(keys);
            let v = format!("value-{k}-{round}").into_bytes();
            tree.put(&key(k), &v).unwrap();
            model.insert(key(k), v);
        }
        // A delete and a range delete now and then: tombstones survive run merges.
        let gone = rng.below(keys);
        tree.delete(&key(gone)).unwrap();
        model.remove(&key(gone));
        settle(&tree);
        let version = tree.pin();
        // Flushed runs lie within one partition each.
        let bounds: Vec<Vec<u8>> = version
            .tables(6)
            .iter()
            .skip(1)
            .map(|t| t.smallest().to_vec())
            .collect();
        for t in version.tables(0) {
            let crossing = bounds
                .iter()
                .filter(|b| t.smallest() < b.as_slice() && t.largest() >= b.as_slice())
                .count();
            assert!(
                crossing <= 1,
                "round {round}: run {} crosses {crossing} boundaries",
                t.id()
            );
        }
        assert!(
            (1..6).all(|l| version.tables(l).is_empty()),
            "only L0 and the base"
        );
        new_tables.push(
            version
                .all_tables()
                .filter(|t| !before.contains(&t.id()))
                .map(|t| t.size())
                .sum::<u64>(),
        );
        if round % 10 == 0 {
            check(&tree, &model);
        }
    }
    let stats = tree.stats();
    assert!(stats.run_merges > 0, "{stats:?}");
    assert!(stats.partition_merges > 0, "{stats:?}");
    // What a round adds is small on average: the runs of the round, plus the merges.
    let base: u64 = tree.pin().tables(6).iter().map(|t| t.size()).sum();
    let mean = new_tables.iter().sum::<u64>() as f64 / new_tables.len() as f64;
    assert!(
        mean < base as f64 * 0.10,
        "mean new bytes {mean} of a base of {base}"
    );
    check(&tree, &model);
}

#[test]
fn a_leveled_tree_restored_under_the_policy_goes_down_with_its_partitions() {
    // Tables left in middle levels (a leveled tree reopened with the policy) merge into the
    // base with the partition they are over.
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let leveled = TreeOptions {
        memtable_bytes: 256 << 10,
        target_table_bytes: 16 << 10,
        level1_max_bytes: 64 << 10,
        l0_compaction_trigger: 2,
        ..TreeOptions::default()
    };
    let mut model = BTreeMap::new();
    {
        let tree = Tree::open(Arc::clone(&storage), "t", leveled).unwrap();
        for k in 0..10_000u64 {
            let v = format!("v{k}").into_bytes();
            tree.put(&key(k), &v).unwrap();
            model.insert(key(k), v);
        }
        settle(&tree);
        assert!(tree.stats().levels[1..6].iter().any(|l| l.tables > 0));
    }
    let tree = Tree::open(storage, "t", options(0.5)).unwrap();
    check(&tree, &model);
    for k in (0..10_000u64).step_by(3) {
        let v = format!("w{k}").into_bytes();
        tree.put(&key(k), &v).unwrap();
        model.insert(key(k), v);
    }
    settle(&tree);
    check(&tree, &model);
    let stats = tree.stats();
    assert!(
        stats.levels[1..6].iter().all(|l| l.tables == 0),
        "{:?}",
        stats.levels
    );
}
