//! Model-based property test of the LSM tree (spec/lsm-tree.md).
//!
//! Random puts, deletes and list appends over real entry keys (two states, two key groups,
//! keys and namespaces that are byte prefixes of each other, map user keys) go to a [`Tree`]
//! with tiny memtables, blocks and level budgets, interleaved with freezes, flushes,
//! compactions and reopens (after flushing everything, so nothing is lost). A `BTreeMap`
//! replays the same operations: a put sets the bytes, an append concatenates, a delete removes.
//! Every point read, prefix scan and range scan must equal the model.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowstate::lsm::key;
use flowstate::lsm::tree::{CheckpointAwareOptions, CompactionPolicy, Tree, TreeOptions};
use flowstate::{MemStorage, StateId, Storage};
use proptest::prelude::*;

fn universe() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for state in [1u32, 2] {
        for kg in [0u16, 1] {
            for k in [&b"a"[..], b"ab"] {
                for ns in [&b""[..], b"n"] {
                    let mut buf = Vec::new();
                    key::encode_state_key(&mut buf, StateId(state), kg, k, ns);
                    keys.push(buf);
                    for uk in [&b"x"[..], b"xy"] {
                        let mut buf = Vec::new();
                        key::encode_map_key(&mut buf, StateId(state), kg, k, ns, uk);
                        keys.push(buf);
                    }
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<u8>),
    Delete(usize),
    /// Range tombstone from key a to key b (exclusive).
    DeleteRange(usize, usize),
    /// Range tombstone over every key starting with the first n bytes of a key.
    DeletePrefix(usize, usize),
    /// Takes a snapshot, checked against the model of that moment at the end.
    Snapshot,
    Merge(usize, Vec<u8>),
    Get(usize),
    ScanPrefix(usize, usize),
    ScanRange(usize, usize),
    Freeze,
    Flush,
    Compact,
    /// A manual full compaction into the bottom level.
    CompactAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..universe().len();
    let v = prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        6 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => k.clone().prop_map(Op::Delete),
        1 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        1 => (k.clone(), 1..12usize).prop_map(|(k, n)| Op::DeletePrefix(k, n)),
        1 => Just(Op::Snapshot),
        4 => (k.clone(), v).prop_map(|(k, v)| Op::Merge(k, v)),
        3 => k.clone().prop_map(Op::Get),
        2 => (k.clone(), 0..8usize).prop_map(|(k, n)| Op::ScanPrefix(k, n)),
        1 => (k.clone(), k).prop_map(|(a, b)| Op::ScanRange(a, b)),
        2 => Just(Op::Freeze),
        2 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::CompactAll),
        1 => Just(Op::Reopen),
    ]
}

/// Tiny tables and levels; with `aware`, the checkpoint-aware policy with tiny partitions, two
/// runs per partition at most and merges into the base at a ratio of 0.5.
fn options(memtable_bytes: usize, aware: bool) -> TreeOptions {
    let compaction = if aware {
        CompactionPolicy::CheckpointAware(CheckpointAwareOptions {
            delta_ratio: 0.5,
            max_runs: 2,
            partition_bytes: 250,
        })
    } else {
        CompactionPolicy::Leveled
    };
    TreeOptions {
        memtable_bytes,
        max_immutable_memtables: 2,
        block_size: 64,
        l0_compaction_trigger: 2,
        target_table_bytes: 300,
        level1_max_bytes: 600,
        compaction,
        ..TreeOptions::default()
    }
}

fn check_all(tree: &Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>, keys: &[Vec<u8>]) {
    for k in keys {
        assert_eq!(tree.get(k).unwrap().as_ref(), model.get(k), "get {k:?}");
    }
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(tree.scan_prefix(b"").unwrap(), all);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn tree_matches_a_btreemap(
        ops in prop::collection::vec(op(), 1..160),
        // A memtable uses up to 128 KiB after its first write: 48 KiB freezes every write,
        // 160 KiB lets a memtable gather many.
        memtable_bytes in prop_oneof![Just(48usize << 10), Just(160 << 10)],
        aware in any::<bool>(),
    ) {
        let keys = universe();
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let mut tree = Tree::open(Arc::clone(&storage), "lsm", options(memtable_bytes, aware)).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut snapshots = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    tree.put(&keys[k], &v).unwrap();
                    model.insert(keys[k].clone(), v);
                }
                Op::Delete(k) => {
                    tree.delete(&keys[k]).unwrap();
                    model.remove(&keys[k]);
                }
                Op::DeleteRange(a, b) => {
                    let (a, b) = (&keys[a], &keys[b]);
                    tree.delete_range(a, b).unwrap();
                    model.retain(|k, _| !(a <= k && k < b));
                }
                Op::DeletePrefix(k, n) => {
                    let prefix = &keys[k][..n.min(keys[k].len())];
                    let end = key::prefix_successor(prefix).expect("keys are not all 0xff");
                    tree.delete_range(prefix, &end).unwrap();
                    model.retain(|k, _| !k.starts_with(prefix));
                }
                Op::Snapshot => snapshots.push((tree.snapshot(), model.clone())),
                Op::Merge(k, v) => {
                    tree.merge(&keys[k], &v).unwrap();
                    model.entry(keys[k].clone()).or_default().extend_from_slice(&v);
                }
                Op::Get(k) => {
                    let got = tree.get(&keys[k]).unwrap();
                    prop_assert_eq!(got.as_ref(), model.get(&keys[k]));
                    // The borrowing read sees the same value.
                    let lent = tree.get_with(&keys[k], |v| v.map(<[u8]>::to_vec)).unwrap();
                    prop_assert_eq!(lent.as_ref(), model.get(&keys[k]));
                }
                Op::ScanPrefix(k, n) => {
                    let prefix = &keys[k][..n.min(keys[k].len())];
                    let want: Vec<_> = model
                        .iter()
                        .filter(|(key, _)| key.starts_with(prefix))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    prop_assert_eq!(tree.scan_prefix(prefix).unwrap(), want);
                    // The exact (key, namespace) prefix, which the filters hold.
                    if let Some(len) = key::namespace_prefix_len(&keys[k]) {
                        let prefix = &keys[k][..len];
                        let want: Vec<_> = model
                            .iter()
                            .filter(|(key, _)| key.starts_with(prefix))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        prop_assert_eq!(tree.scan_prefix(prefix).unwrap(), want.clone());
                        // The visiting scan (straight out of the blocks when one level
                        // alone holds the prefix) sees the same pairs.
                        let mut visited = Vec::new();
                        tree.visit_prefix(prefix, &mut |k, v| {
                            visited.push((k.to_vec(), v.to_vec()));
                            Ok(())
                        })
                        .unwrap();
                        prop_assert_eq!(visited, want);
                    }
                }
                Op::ScanRange(a, b) => {
                    let (a, b) = (&keys[a], &keys[b]);
                    let want: Vec<_> = model
                        .range(a.clone()..)
                        .filter(|(key, _)| *key < b)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    prop_assert_eq!(tree.scan_range(a, b).unwrap(), want);
                }
                Op::Freeze => tree.freeze(),
                Op::Flush => {
                    tree.flush_one().unwrap();
                }
                Op::Compact => {
                    tree.compact_one().unwrap();
                }
                Op::CompactAll => {
                    tree.compact_all().unwrap();
                    let stats = tree.stats();
                    let used: Vec<usize> = (0..stats.levels.len())
                        .filter(|&l| stats.levels[l].tables > 0)
                        .collect();
                    prop_assert!(used.is_empty() || used == vec![stats.levels.len() - 1], "{:?}", stats.levels);
                }
                Op::Reopen => {
                    tree.freeze();
                    while tree.flush_one().unwrap() {}
                    drop(tree);
                    tree = Tree::open(Arc::clone(&storage), "lsm", options(memtable_bytes, aware)).unwrap();
                }
            }
        }
        check_all(&tree, &model, &keys);
        for (snapshot, then) in &snapshots {
            for k in &keys {
                let got = snapshot.get(k).unwrap();
                prop_assert_eq!(got.as_ref(), then.get(k), "snapshot get {:?}", k);
            }
            let all: Vec<_> = then.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(snapshot.scan_prefix(b"").unwrap(), all);
        }
        drop(snapshots);
        // Compacting everything down changes no answer.
        tree.freeze();
        while tree.flush_one().unwrap() {}
        while tree.compact_one().unwrap() {}
        check_all(&tree, &model, &keys);
        let stats = tree.stats();
        if aware {
            // At most two runs per partition (a partition per bottom table).
            let partitions = stats.levels.last().map_or(0, |l| l.tables).max(1);
            prop_assert!(stats.levels[0].tables <= 2 * partitions, "{:?}", stats.levels);
            prop_assert!(stats.levels[1..stats.levels.len() - 1].iter().all(|l| l.tables == 0));
        } else {
            prop_assert!(stats.levels[0].tables < 2);
        }
        // A full compaction leaves the bottom level alone, with the same answers.
        tree.compact_all().unwrap();
        check_all(&tree, &model, &keys);
        let stats = tree.stats();
        prop_assert!(stats.levels[..stats.levels.len() - 1].iter().all(|l| l.tables == 0));
    }
}
