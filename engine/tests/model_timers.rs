//! Model-based property test of timers (spec/state-semantics.md R72–R78): random
//! registrations, deletions, watermark and processing-time advances, and restores (from a
//! canonical snapshot, into the heap or the LSM backend) are applied to a timer service and to a
//! model (an ordered set); every advance must fire exactly the model's due timers, in its order,
//! each with its key current. The service caches one or two timers per key group, so that on
//! the LSM backend (which keeps timers in the tree in firing order) most orders come from the
//! tree and the caches refill often; flushes put timers and their tombstones in tables.

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate::codec::to_bytes;
use flowstate::timer::{TimeDomain, TimerService};
use flowstate::*;
use proptest::prelude::*;

const MAXP: u32 = 16;

#[derive(Debug, Clone)]
enum Op {
    Register(TimeDomain, u64, u8, i64),
    Delete(TimeDomain, u64, u8, i64),
    Advance(TimeDomain, i64),
    /// Snapshot and restore into the heap (false) or the LSM backend (true).
    Restore(bool),
    /// Flush and compact the LSM tree (nothing on the heap backend).
    Flush,
}

fn domain() -> impl Strategy<Value = TimeDomain> {
    prop_oneof![
        Just(TimeDomain::EventTime),
        Just(TimeDomain::ProcessingTime)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (domain(), 0u64..6, 0u8..3, -5i64..40).prop_map(|(d, k, n, t)| Op::Register(d, k, n, t)),
        1 => (domain(), 0u64..6, 0u8..3, -5i64..40).prop_map(|(d, k, n, t)| Op::Delete(d, k, n, t)),
        2 => (domain(), -5i64..45).prop_map(|(d, t)| Op::Advance(d, t)),
        1 => any::<bool>().prop_map(Op::Restore),
        1 => Just(Op::Flush),
    ]
}

/// The model's order: timestamp, key length, key bytes, namespace bytes (R74).
type Modelled = (i64, usize, Vec<u8>, Vec<u8>, u64, u8);

fn modelled(key: u64, ns: u8, ts: i64) -> Modelled {
    let kb = to_bytes(&key);
    (ts, kb.len(), kb, to_bytes(&ns), key, ns)
}

/// A heap or LSM backend configuration (the LSM one on its own in-memory storage).
fn config(lsm: bool) -> BackendConfig {
    let config = if lsm {
        BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
            .lsm_background(lsm::LsmBackground::Inline)
    } else {
        BackendConfig::heap()
    };
    config.max_parallelism(MAXP)
}

fn run(ops: &[Op], start_lsm: bool, cache: usize) -> Result<()> {
    let mut b = Backend::open(config(start_lsm))?;
    let mut timers = TimerService::<u64, u8>::register_with_cache(&mut b, "t", cache)?;
    let mut model: [BTreeSet<Modelled>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let index = |d: TimeDomain| usize::from(d == TimeDomain::ProcessingTime);
    for (i, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Register(d, key, ns, ts) => {
                b.set_current_key(&key);
                timers.register_timer(&mut b, d, &ns, ts)?;
                model[index(d)].insert(modelled(key, ns, ts));
            }
            Op::Delete(d, key, ns, ts) => {
                b.set_current_key(&key);
                timers.delete_timer(&mut b, d, &ns, ts)?;
                model[index(d)].remove(&modelled(key, ns, ts));
            }
            Op::Advance(d, time) => {
                let mut fired = Vec::new();
                let record = |b: &mut Backend<u64>,
                              _: &mut TimerService<u64, u8>,
                              t: timer::Timer<u64, u8>| {
                    assert_eq!(b.current_key(), Some(&t.key), "op {i}: R75");
                    fired.push(modelled(t.key, t.namespace, t.timestamp));
                    Ok(())
                };
                match d {
                    TimeDomain::EventTime => timers.advance_watermark(&mut b, time, record)?,
                    TimeDomain::ProcessingTime => {
                        timers.advance_processing_time(&mut b, time, record)?
                    }
                };
                let due: Vec<Modelled> = model[index(d)]
                    .iter()
                    .take_while(|m| m.0 <= time)
                    .cloned()
                    .collect();
                for m in &due {
                    model[index(d)].remove(m);
                }
                assert_eq!(fired, due, "op {i}: advance {d:?} to {time}");
            }
            Op::Restore(into_lsm) => {
                let snapshot = b.snapshot_state()?;
                b = Backend::restore(config(into_lsm), &[&snapshot])?;
                timers = TimerService::<u64, u8>::register_with_cache(&mut b, "t", cache)?;
            }
            Op::Flush => {
                if let Backend::Lsm(lsm) = &b {
                    lsm.flush_and_compact()?;
                }
            }
        }
        if matches!(b, Backend::Lsm(_)) {
            // At most `cache` timers per key group and domain in memory.
            let bound = 2 * cache * MAXP as usize;
            assert!(timers.timers_in_memory() <= bound, "op {i}: memory");
        } else {
            assert_eq!(
                timers.timers_in_memory(),
                model[0].len() + model[1].len(),
                "op {i}: the heap backend holds every timer"
            );
        }
        for d in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            assert_eq!(
                timers.len(d),
                model[index(d)].len(),
                "op {i}: pending {d:?}"
            );
            assert_eq!(
                timers.next_timestamp(d),
                model[index(d)].first().map(|m| m.0),
                "op {i}: next {d:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn timers_match_the_model_from_the_heap_backend(
        ops in proptest::collection::vec(op(), 1..80),
        cache in 1usize..3,
    ) {
        run(&ops, false, cache).unwrap();
    }

    #[test]
    fn timers_match_the_model_from_the_lsm_backend(
        ops in proptest::collection::vec(op(), 1..80),
        cache in 1usize..3,
    ) {
        run(&ops, true, cache).unwrap();
    }
}
