//! Model-based property test of the LSM read and merge rules (spec/lsm-key-layout.md,
//! "Entries and merging").
//!
//! Random puts, deletes and list appends over a small set of keys go to a live memtable that is
//! frozen now and then, so the data ends up in several levels: frozen memtables, standing in
//! for tables, and the live one on top. A `BTreeMap` replays the same operations in time order.
//! Then:
//!
//! - a point read resolved across all levels, newest first, equals the model;
//! - a [`MergingIter`] over all levels at the bottom equals the model, whole and per prefix;
//! - compacting any run of adjacent levels into one (`Upper`; `Bottom` when the run includes
//!   the oldest level) changes no answer.
//!
//! Keys are real entry keys (lsm::key) of two states, two key groups, keys and namespaces that
//! are byte prefixes of each other, and map user keys, so the prefix scans cross every
//! boundary the layout has.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use flowstate::lsm::key::{self, KeyRange};
use flowstate::lsm::merge::{self, ListElements};
use flowstate::lsm::{Entry, ImmutableMemTable, MemTable, MergeLevel, MergingIter};
use flowstate::{Result, StateId};
use proptest::prelude::*;

/// A list: its elements.
type List = Vec<Vec<u8>>;

/// The model: each present key's list.
type Model = BTreeMap<Vec<u8>, List>;

/// One operation on key number `.0` of [`universe`].
#[derive(Debug, Clone)]
enum Op {
    /// Replace the list (possibly by an empty one).
    Put(usize, List),
    /// Remove the list.
    Delete(usize),
    /// Append elements (a merge operand).
    Append(usize, List),
    /// The live memtable becomes a frozen level; a new one takes the writes.
    Freeze,
}

/// A prefix to scan: (state, key group, key, namespace) down to `.4` parts (1 = the state
/// ... 4 = the namespace; 0 = everything).
type Probe = (u32, u16, &'static [u8], &'static [u8], u8);

/// A sorted source of entries for a merge.
type Source<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a>;

/// The prefixes of the universe to scan.
const PROBES: &[Probe] = &[
    (0, 0, b"", b"", 0),
    (1, 0, b"", b"", 1),
    (0, 7, b"", b"", 2),
    (0, 0, b"a", b"", 3),
    (1, 7, b"ab", b"", 3),
    (0, 0, b"a", b"", 4),
    (1, 7, b"a", b"n", 4),
];

/// The keys operations touch: value-like keys and map entries of 2 states x 2 key groups,
/// with keys and namespaces that are byte prefixes of each other.
fn universe() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for state in [0u32, 1] {
        for kg in [0u16, 7] {
            for k in [&b""[..], b"a", b"ab"] {
                for ns in [&b""[..], b"n"] {
                    let mut value_key = Vec::new();
                    key::encode_state_key(&mut value_key, StateId(state), kg, k, ns);
                    keys.push(value_key);
                    for uk in [&b"u"[..], b"uv"] {
                        let mut map_key = Vec::new();
                        key::encode_map_key(&mut map_key, StateId(state), kg, k, ns, uk);
                        keys.push(map_key);
                    }
                }
            }
        }
    }
    keys
}

fn list_bytes(list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for element in list {
        merge::push_list_element(&mut out, element);
    }
    out
}

fn op(universe_len: usize) -> impl Strategy<Value = Op> {
    let list = || prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3), 0..3);
    prop_oneof![
        3 => (0..universe_len, list()).prop_map(|(k, l)| Op::Put(k, l)),
        2 => (0..universe_len).prop_map(Op::Delete),
        4 => (0..universe_len, list()).prop_map(|(k, l)| Op::Append(k, l)),
        1 => Just(Op::Freeze),
    ]
}

/// The tree under test: frozen levels, oldest first, and the live memtable.
struct Levels {
    frozen: Vec<Arc<ImmutableMemTable>>,
    live: MemTable,
}

impl Levels {
    /// Every source, newest first, as owned-entry iterators within `range`.
    fn sources(&self, range: &KeyRange) -> Vec<Source<'_>> {
        let end = match &range.end {
            Some(end) => Bound::Excluded(&end[..]),
            None => Bound::Unbounded,
        };
        let start = Bound::Included(&range.start[..]);
        let mut sources: Vec<Source<'_>> =
            vec![Box::new(self.live.range(start, end).into_entries())];
        for level in self.frozen.iter().rev() {
            sources.push(Box::new(Arc::clone(level).owned_entries(start, end)));
        }
        sources
    }

    /// The value of `key`, resolved newest first.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let lookups = std::iter::once(self.live.get(key))
            .chain(self.frozen.iter().rev().map(|level| level.get(key)))
            .map(Ok);
        merge::resolve(lookups).unwrap().map(|v| v.into_owned())
    }
}

fn memtable_of(entries: impl Iterator<Item = Result<(Vec<u8>, Entry)>>) -> MemTable {
    let mut m = MemTable::new();
    for item in entries {
        let (key, entry) = item.unwrap();
        match entry {
            Entry::Put(v) => m.put(&key, &v),
            Entry::Delete => m.delete(&key),
            Entry::Merge(ops) => m.merge(&key, &ops),
        }
        .unwrap();
    }
    m
}

fn prefix_of(probe: &Probe) -> Vec<u8> {
    let &(state, kg, k, ns, depth) = probe;
    let mut p = Vec::new();
    match depth {
        0 => {}
        1 => key::state_prefix(&mut p, StateId(state)),
        2 => key::key_group_prefix(&mut p, StateId(state), kg),
        3 => key::key_prefix(&mut p, StateId(state), kg, k),
        _ => key::namespace_prefix(&mut p, StateId(state), kg, k, ns),
    }
    p
}

/// Point reads, the bottom-level merge and prefix scans all equal the model.
fn check(
    levels: &Levels,
    model: &Model,
    universe: &[Vec<u8>],
) -> std::result::Result<(), TestCaseError> {
    for key in universe {
        let got = levels.get(key);
        prop_assert_eq!(
            &got,
            &model.get(key).map(|l| list_bytes(l)),
            "key {:02x?}",
            key
        );
        if let (Some(bytes), Some(list)) = (&got, model.get(key)) {
            let elements: Vec<&[u8]> = ListElements::new(bytes)
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            prop_assert_eq!(elements, list.iter().map(|e| &e[..]).collect::<Vec<_>>());
        }
    }
    for probe in PROBES {
        let prefix = prefix_of(probe);
        let range = KeyRange::for_prefix(&prefix);
        let merged: Vec<(Vec<u8>, Entry)> =
            MergingIter::new(levels.sources(&range), MergeLevel::Bottom)
                .collect::<Result<_>>()
                .unwrap();
        let expected: Vec<(Vec<u8>, Entry)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, l)| (k.clone(), Entry::Put(list_bytes(l))))
            .collect();
        prop_assert_eq!(merged, expected, "prefix {:02x?}", prefix);
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 200;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn levels_match_the_model(
        ops in prop::collection::vec(op(universe().len()), 1..250),
        compaction in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
    ) {
        let universe = universe();
        let mut levels = Levels { frozen: Vec::new(), live: MemTable::new() };
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Put(k, list) => {
                    levels.live.put(&universe[k], &list_bytes(&list)).unwrap();
                    model.insert(universe[k].clone(), list);
                }
                Op::Delete(k) => {
                    levels.live.delete(&universe[k]).unwrap();
                    model.remove(&universe[k]);
                }
                Op::Append(k, list) => {
                    levels.live.merge(&universe[k], &list_bytes(&list)).unwrap();
                    model.entry(universe[k].clone()).or_default().extend(list);
                }
                Op::Freeze => {
                    let live = std::mem::take(&mut levels.live);
                    levels.frozen.push(live.freeze());
                }
            }
        }
        check(&levels, &model, &universe)?;

        // Compact a run of adjacent levels into one: newest_first[lo..hi], where the live
        // memtable, copied into a frozen one, is level 0.
        let mut newest_first = vec![memtable_of(levels.live.entries()).freeze()];
        newest_first.extend(levels.frozen.iter().rev().cloned());
        let n = newest_first.len();
        let (a, b) = (compaction.0.index(n), compaction.1.index(n));
        let (lo, hi) = (a.min(b), a.max(b) + 1);
        for level in [MergeLevel::Upper, MergeLevel::Bottom] {
            // Only a run that includes the oldest level may drop tombstones.
            if level == MergeLevel::Bottom && hi != n {
                continue;
            }
            let run: Vec<_> = newest_first[lo..hi].iter().map(|t| t.entries()).collect();
            let compacted = memtable_of(MergingIter::new(run, level)).freeze();
            let mut after: Vec<Arc<ImmutableMemTable>> = newest_first[..lo].to_vec();
            after.push(compacted);
            after.extend(newest_first[hi..].iter().cloned());
            after.reverse();
            let after = Levels { frozen: after, live: MemTable::new() };
            check(&after, &model, &universe)?;
        }
    }
}

/// The compaction rules on a fixed history: a tombstone survives an upper compaction (it must
/// still hide the oldest level) and vanishes at the bottom; operands over nothing stay
/// operands above the bottom.
#[test]
fn upper_compaction_keeps_what_older_levels_need() {
    let universe = universe();
    let (k1, k2) = (&universe[0], &universe[1]);
    let mut oldest = MemTable::new();
    oldest.put(k1, &list_bytes(&[b"old".to_vec()])).unwrap();
    oldest.put(k2, &list_bytes(&[b"base".to_vec()])).unwrap();
    let oldest = oldest.freeze();
    let mut middle = MemTable::new();
    middle.delete(k1).unwrap();
    let middle = middle.freeze();
    let mut live = MemTable::new();
    live.merge(k2, &list_bytes(&[b"more".to_vec()])).unwrap();

    let upper: Vec<_> = MergingIter::new(vec![live.entries(), middle.entries()], MergeLevel::Upper)
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(
        upper,
        vec![
            (k1.clone(), Entry::Delete),
            (k2.clone(), Entry::Merge(list_bytes(&[b"more".to_vec()]))),
        ]
    );
    let all: Vec<_> = MergingIter::new(
        vec![live.entries(), middle.entries(), oldest.entries()],
        MergeLevel::Bottom,
    )
    .collect::<Result<_>>()
    .unwrap();
    assert_eq!(
        all,
        vec![(
            k2.clone(),
            Entry::Put(list_bytes(&[b"base".to_vec(), b"more".to_vec()]))
        )]
    );
}
