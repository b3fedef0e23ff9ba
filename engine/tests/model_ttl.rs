//! Model-based property test of state TTL (spec/state-semantics.md R60–R71): random writes,
//! reads, clock advances and snapshots on value, list and map state with a TTL, applied to a
//! backend and to a model that stamps every write and filters expired state on every read.
//! Every read, `keys`, `entry_count` and every snapshot must equal the model's live view, on
//! the heap backend (with incremental cleanup) and on LSM backends (in memtables, and flushing
//! and compacting with the TTL filter on every write): cleanup may run at any point and must
//! never change what is seen (R71).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flowstate::codec::to_bytes;
use flowstate::snapshot::EncodedState;
use flowstate::*;
use proptest::prelude::*;

const MAXP: u32 = 16;
const TTL: u64 = 50;

#[derive(Debug, Clone)]
enum Op {
    Key(u64),
    Advance(u64),
    ValueUpdate(u64),
    ValueGet,
    ValueClear,
    ListAdd(u32),
    ListUpdate(Vec<u32>),
    ListGet,
    MapPut(u8, u16),
    MapRemove(u8),
    MapGet(u8),
    MapEntries,
    Count,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..6).prop_map(Op::Key),
        (0u64..40).prop_map(Op::Advance),
        any::<u64>().prop_map(Op::ValueUpdate),
        Just(Op::ValueGet),
        Just(Op::ValueClear),
        any::<u32>().prop_map(Op::ListAdd),
        proptest::collection::vec(any::<u32>(), 0..3).prop_map(Op::ListUpdate),
        Just(Op::ListGet),
        (0u8..4, any::<u16>()).prop_map(|(k, v)| Op::MapPut(k, v)),
        (0u8..4).prop_map(Op::MapRemove),
        (0u8..4).prop_map(Op::MapGet),
        Just(Op::MapEntries),
        Just(Op::Count),
        Just(Op::Snapshot),
    ]
}

/// The model: every write stamped with the time, expired state filtered on read.
#[derive(Default)]
struct Model {
    value: BTreeMap<u64, (u64, u64)>,
    list: BTreeMap<u64, Vec<(u32, u64)>>,
    map: BTreeMap<u64, BTreeMap<u8, (u16, u64)>>,
}

fn live(ts: u64, now: u64) -> bool {
    now < ts + TTL
}

impl Model {
    fn value(&self, k: u64, now: u64) -> Option<u64> {
        self.value
            .get(&k)
            .filter(|(_, ts)| live(*ts, now))
            .map(|(v, _)| *v)
    }
    fn list(&self, k: u64, now: u64) -> Vec<(u32, u64)> {
        self.list.get(&k).map_or_else(Vec::new, |l| {
            l.iter().filter(|(_, ts)| live(*ts, now)).copied().collect()
        })
    }
    fn map(&self, k: u64, now: u64) -> BTreeMap<u8, (u16, u64)> {
        self.map.get(&k).map_or_else(BTreeMap::new, |m| {
            m.iter()
                .filter(|(_, (_, ts))| live(*ts, now))
                .map(|(k, v)| (*k, *v))
                .collect()
        })
    }
    fn live_count(&self, now: u64) -> usize {
        let keys = 0..6u64;
        keys.map(|k| {
            usize::from(self.value(k, now).is_some())
                + usize::from(!self.list(k, now).is_empty())
                + usize::from(!self.map(k, now).is_empty())
        })
        .sum()
    }
}

/// The canonical encoding the model expects of state `name` in a snapshot at `now`.
fn expected(
    model: &Model,
    name: &str,
    now: u64,
) -> BTreeMap<(u16, Vec<u8>, Vec<u8>), EncodedState> {
    let mut out = BTreeMap::new();
    for k in 0..6u64 {
        let kb = to_bytes(&k);
        let slot = (key_group_for(&kb, MAXP), kb, Vec::new());
        let state = match name {
            "v" => model
                .value
                .get(&k)
                .filter(|(_, ts)| live(*ts, now))
                .map(|(v, ts)| EncodedState::Value(to_bytes(&TtlValue::new(*v, *ts)))),
            "l" => {
                let l = model.list(k, now);
                (!l.is_empty()).then(|| {
                    EncodedState::List(
                        l.iter()
                            .map(|(e, ts)| to_bytes(&TtlValue::new(*e, *ts)))
                            .collect(),
                    )
                })
            }
            _ => {
                let m = model.map(k, now);
                (!m.is_empty()).then(|| {
                    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = m
                        .iter()
                        .map(|(uk, (v, ts))| (to_bytes(uk), to_bytes(&TtlValue::new(*v, *ts))))
                        .collect();
                    pairs.sort();
                    EncodedState::Map(pairs)
                })
            }
        };
        if let Some(state) = state {
            out.insert(slot, state);
        }
    }
    out
}

fn run(mut b: Backend<u64>, clock: Arc<ManualClock>, ops: &[Op]) -> Result<()> {
    let ttl = TtlConfig::after(Duration::from_millis(TTL)).incremental_cleanup(3);
    let v = b.register(ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))?;
    let l = b.register(ListStateDescriptor::<u32>::new("l").with_ttl(ttl))?;
    let m = b.register(MapStateDescriptor::<u8, u16>::new("m").with_ttl(ttl))?;
    let mut model = Model::default();
    let mut key = 0u64;
    b.set_current_key(&key);
    for (i, op) in ops.iter().enumerate() {
        let now = clock.now_millis();
        match op {
            Op::Key(k) => {
                key = *k;
                b.set_current_key(&key);
            }
            Op::Advance(dt) => clock.advance(*dt),
            Op::ValueUpdate(x) => {
                b.value(&v).update(*x)?;
                model.value.insert(key, (*x, now));
            }
            Op::ValueGet => assert_eq!(b.value(&v).get()?, model.value(key, now), "op {i}"),
            Op::ValueClear => {
                b.value(&v).clear()?;
                model.value.remove(&key);
            }
            Op::ListAdd(e) => {
                b.list(&l).add(*e)?;
                let list = model.list.entry(key).or_default();
                list.retain(|(_, ts)| live(*ts, now));
                list.push((*e, now));
            }
            Op::ListUpdate(items) => {
                b.list(&l).update(items.clone())?;
                model
                    .list
                    .insert(key, items.iter().map(|e| (*e, now)).collect());
            }
            Op::ListGet => {
                let want: Vec<u32> = model.list(key, now).iter().map(|(e, _)| *e).collect();
                assert_eq!(b.list(&l).get()?, want, "op {i}");
            }
            Op::MapPut(uk, x) => {
                b.map(&m).put(*uk, *x)?;
                model.map.entry(key).or_default().insert(*uk, (*x, now));
            }
            Op::MapRemove(uk) => {
                b.map(&m).remove(uk)?;
                if let Some(map) = model.map.get_mut(&key) {
                    map.remove(uk);
                }
            }
            Op::MapGet(uk) => {
                let want = model.map(key, now).get(uk).map(|(x, _)| *x);
                assert_eq!(b.map(&m).get(uk)?, want, "op {i}");
            }
            Op::MapEntries => {
                let want: Vec<(u8, u16)> = model
                    .map(key, now)
                    .iter()
                    .map(|(k, (x, _))| (*k, *x))
                    .collect();
                let mut got = b.map(&m).entries()?;
                got.sort();
                assert_eq!(got, want, "op {i}");
            }
            Op::Count => {
                assert_eq!(b.entry_count()?, model.live_count(now), "op {i}");
                let mut keys = b.keys(v, &())?;
                keys.sort();
                let want: Vec<u64> = (0..6).filter(|k| model.value(*k, now).is_some()).collect();
                assert_eq!(keys, want, "op {i}");
            }
            Op::Snapshot => {
                let snapshot = b.snapshot_state()?;
                for name in ["v", "l", "m"] {
                    let got = snapshot
                        .canonical_entries(name)?
                        .expect("every state is in the snapshot");
                    assert_eq!(got, expected(&model, name, now), "op {i}: state {name}");
                }
            }
        }
    }
    Ok(())
}

fn heap(clock: Arc<ManualClock>) -> Backend<u64> {
    Backend::open(BackendConfig::heap().max_parallelism(MAXP).clock(clock)).expect("open")
}

fn lsm(clock: Arc<ManualClock>, flushing: bool) -> Backend<u64> {
    let mut config = BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
        .lsm_background(lsm::LsmBackground::Inline)
        .max_parallelism(MAXP)
        .clock(clock);
    if flushing {
        config = config.lsm_tree_options(lsm::TreeOptions {
            memtable_bytes: 1,
            l0_compaction_trigger: 2,
            l0_stop_trigger: 4,
            target_table_bytes: 1 << 10,
            level1_max_bytes: 2 << 10,
            ..lsm::TreeOptions::default()
        });
    }
    Backend::open(config).expect("open")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn heap_ttl_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let clock = Arc::new(ManualClock::new(1_000));
        run(heap(clock.clone()), clock, &ops).unwrap();
    }

    #[test]
    fn lsm_ttl_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let clock = Arc::new(ManualClock::new(1_000));
        run(lsm(clock.clone(), false), clock, &ops).unwrap();
    }

    #[test]
    fn flushing_lsm_ttl_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let clock = Arc::new(ManualClock::new(1_000));
        run(lsm(clock.clone(), true), clock, &ops).unwrap();
    }
}
