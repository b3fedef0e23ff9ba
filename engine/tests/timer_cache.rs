//! Timers on the LSM backend beyond the restore tests (state-semantics.md R73, R77, R79): a
//! timer for a key group the task does not own is an error on every backend, not a panic; and
//! callbacks that register, delete and re-register timers while a watermark advances match a
//! model, through caches of one or two timers per key group and flushes.

mod common;

use common::rng::Lcg;

use flowstate::codec::to_bytes;
use flowstate::timer::{TimeDomain, TimerService};
use flowstate::*;
use std::collections::BTreeSet;
use std::sync::Arc;

const MAXP: u32 = 16;

fn backend(lsm: bool) -> Backend<u64> {
    // Task 0 of 2: key groups 0..=7 only.
    let range = KeyGroupRange::for_operator(MAXP, 2, 0).unwrap();
    let config = if lsm {
        BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
            .lsm_background(lsm::LsmBackground::Inline)
    } else {
        BackendConfig::heap()
    };
    Backend::open(config.max_parallelism(MAXP).key_group_range(range)).unwrap()
}

fn foreign_key(b: &mut Backend<u64>) -> u64 {
    let range = b.key_group_range();
    (0..1000u64)
        .find(|k| {
            b.set_current_key(k);
            !range.contains(b.current_key_group().unwrap())
        })
        .unwrap()
}

/// A timer for a key of a key group the task does not own: an error on the heap backend,
/// and should be the same error (not a panic) on the LSM backend.
#[test]
fn registering_a_timer_for_a_foreign_key_group_is_an_error_not_a_panic() {
    for lsm in [false, true] {
        let mut b = backend(lsm);
        let mut timers = TimerService::<u64, u8>::register(&mut b, "t").unwrap();
        let k = foreign_key(&mut b);
        b.set_current_key(&k);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            timers.register_timer(&mut b, TimeDomain::EventTime, &0u8, 5)
        }));
        match r {
            Ok(result) => assert!(
                matches!(result, Err(Error::KeyGroupOutOfRange { .. })),
                "lsm {lsm}: {result:?}"
            ),
            Err(_) => panic!("lsm {lsm}: register_timer panicked"),
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            timers.delete_timer(&mut b, TimeDomain::EventTime, &0u8, 5)
        }));
        assert!(r.is_ok(), "lsm {lsm}: delete_timer panicked");
    }
}

type Modelled = (i64, usize, Vec<u8>, Vec<u8>, u64, u8);
fn modelled(key: u64, ns: u8, ts: i64) -> Modelled {
    let kb = to_bytes(&key);
    (ts, kb.len(), kb, to_bytes(&ns), key, ns)
}

/// Callbacks that register and delete timers while an advance fires (earlier than the
/// watermark, re-registrations of the fired timer, deletes of other timers), on the LSM
/// backend with caches of one or two timers per group, against a model.
#[test]
fn callbacks_that_register_and_delete_during_advance_match_a_model() {
    for seed in 0..400u64 {
        let mut rng = Lcg(seed * 7919 + 1);
        let cache = 1 + (seed % 2) as usize;
        let config = BackendConfig::lsm_on(Arc::new(MemStorage::new()), "lsm")
            .lsm_background(lsm::LsmBackground::Inline)
            .max_parallelism(MAXP);
        let mut b = Backend::<u64>::open(config).unwrap();
        let mut timers = TimerService::<u64, u8>::register_with_cache(&mut b, "t", cache).unwrap();
        let mut model: BTreeSet<Modelled> = BTreeSet::new();
        let mut wm = -10i64;
        for step in 0..120 {
            match rng.below(6) {
                0..=2 => {
                    let (k, n, t) = (rng.below(6), rng.below(3) as u8, wm + rng.below(30) as i64);
                    b.set_current_key(&k);
                    timers.register_event_time_timer(&mut b, &n, t).unwrap();
                    model.insert(modelled(k, n, t));
                }
                3 => {
                    let (k, n, t) = (rng.below(6), rng.below(3) as u8, wm + rng.below(30) as i64);
                    b.set_current_key(&k);
                    timers.delete_event_time_timer(&mut b, &n, t).unwrap();
                    model.remove(&modelled(k, n, t));
                }
                4 => {
                    if let Backend::Lsm(l) = &b {
                        l.flush_and_compact().unwrap();
                    }
                }
                _ => {
                    let to = wm + rng.below(15) as i64;
                    let mut fired = Vec::new();
                    let mut actions = Vec::new();
                    for _ in 0..8 {
                        actions.push((
                            rng.below(4),
                            rng.below(6),
                            rng.below(3) as u8,
                            rng.below(40) as i64 - 10,
                        ));
                    }
                    let mut model_fired = Vec::new();
                    let mut reregistered = 0;
                    let mut ai = 0;
                    let mut expected_model = model.clone();
                    timers
                        .advance_watermark(&mut b, wm.max(to), |b, ts, t| {
                            fired.push(modelled(t.key, t.namespace, t.timestamp));
                            // The model pops the same.
                            let first = expected_model.iter().next().cloned().unwrap();
                            assert_eq!(
                                first,
                                modelled(t.key, t.namespace, t.timestamp),
                                "seed {seed} step {step}"
                            );
                            expected_model.remove(&first);
                            model_fired.push(first);
                            if ai < actions.len() {
                                let (what, k, n, dt) = actions[ai];
                                ai += 1;
                                match what {
                                    0 if reregistered < 2 => {
                                        // Re-register the fired timer.
                                        reregistered += 1;
                                        ts.register_event_time_timer(b, &t.namespace, t.timestamp)?;
                                        expected_model.insert(modelled(
                                            t.key,
                                            t.namespace,
                                            t.timestamp,
                                        ));
                                    }
                                    1 => {
                                        b.set_current_key(&k);
                                        let at = wm + dt;
                                        ts.register_event_time_timer(b, &n, at)?;
                                        expected_model.insert(modelled(k, n, at));
                                    }
                                    2 => {
                                        b.set_current_key(&k);
                                        let at = wm + dt;
                                        ts.delete_event_time_timer(b, &n, at)?;
                                        expected_model.remove(&modelled(k, n, at));
                                    }
                                    _ => {}
                                }
                            }
                            Ok(())
                        })
                        .unwrap();
                    wm = wm.max(to);
                    model = expected_model;
                    // Everything due is gone.
                    assert!(
                        model.iter().next().is_none_or(|m| m.0 > wm),
                        "seed {seed} step {step}: due timer left"
                    );
                }
            }
            assert_eq!(
                timers.len(TimeDomain::EventTime),
                model.len(),
                "seed {seed} step {step}: len"
            );
            assert_eq!(
                timers.next_timestamp(TimeDomain::EventTime),
                model.iter().next().map(|m| m.0),
                "seed {seed} step {step}: next"
            );
            assert!(timers.timers_in_memory() <= cache * MAXP as usize);
        }
    }
}
