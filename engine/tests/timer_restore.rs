//! Timers across checkpoints (spec/state-semantics.md R78): timers registered before a
//! checkpoint fire exactly once after a restore, at the same or another parallelism, into
//! either backend, from canonical or incremental checkpoints; each moves with its key group.

use std::collections::BTreeSet;
use std::sync::Arc;

use flowstate::timer::{TimeDomain, TimerService};
use flowstate::*;

const MAXP: u32 = 32;

fn config(kind: &str, dir: &std::path::Path, p: u32, i: u32) -> Result<BackendConfig> {
    let range = KeyGroupRange::for_operator(MAXP, p, i)?;
    let config = match kind {
        "heap" => BackendConfig::heap(),
        _ => BackendConfig::lsm(dir.join(format!("{kind}-{p}-{i}")))
            .lsm_background(lsm::LsmBackground::Inline),
    };
    Ok(config.max_parallelism(MAXP).key_group_range(range))
}

/// Every timer: (key, namespace, timestamp, domain code).
type Expected = BTreeSet<(u64, u32, i64, u8)>;

fn fill(b: &mut Backend<u64>, timers: &mut TimerService<u64, u32>) -> Result<Expected> {
    let mut all = Expected::new();
    for key in 0..300u64 {
        b.set_current_key(&key);
        if !b
            .current_key_group()
            .is_some_and(|kg| b.key_group_range().contains(kg))
        {
            continue;
        }
        for ns in 0..2u32 {
            let ts = (key as i64 * 7 + i64::from(ns)) % 100 - 20;
            timers.register_event_time_timer(b, &ns, ts)?;
            timers.register_processing_time_timer(b, &ns, ts + 1_000)?;
            all.insert((key, ns, ts, 0));
            all.insert((key, ns, ts + 1_000, 1));
        }
    }
    Ok(all)
}

/// Restores task `i` of `p` from `done`, registers the service and fires everything.
fn fire_all(
    kind: &str,
    dir: &std::path::Path,
    storage: &Arc<dyn CheckpointStorage>,
    done: &CompletedCheckpoint,
    p: u32,
    i: u32,
) -> Result<Expected> {
    let config = config(kind, dir, p, i)?;
    let range = KeyGroupRange::for_operator(MAXP, p, i)?;
    let mut b = Backend::<u64>::restore_from(config, &**storage, &done.handles_for(range))?;
    // A cache of two timers per key group and domain: on the LSM backend most timers stay in
    // the tree and are read back as the caches empty (R79).
    let mut timers = TimerService::<u64, u32>::register_with_cache(&mut b, "t", 2)?;
    let pending = timers.len(TimeDomain::EventTime) + timers.len(TimeDomain::ProcessingTime);
    if kind == "lsm" {
        assert!(timers.timers_in_memory() <= 2 * 2 * range.len());
        assert!(
            pending > 4 * range.len(),
            "{pending} timers: more than the caches"
        );
    } else {
        assert_eq!(timers.timers_in_memory(), pending);
    }
    let mut fired = Expected::new();
    for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
        let mut record =
            |b: &mut Backend<u64>, _: &mut TimerService<u64, u32>, t: timer::Timer<u64, u32>| {
                let kg = b.current_key_group().expect("the timer's key is current");
                assert!(
                    range.contains(kg),
                    "a timer of key group {kg} fired on task {i} of {p}"
                );
                let code = u8::from(t.domain == TimeDomain::ProcessingTime);
                assert!(
                    fired.insert((t.key, t.namespace, t.timestamp, code)),
                    "fired twice: {t:?}"
                );
                Ok(())
            };
        match domain {
            TimeDomain::EventTime => timers.advance_watermark(&mut b, i64::MAX, &mut record)?,
            TimeDomain::ProcessingTime => {
                timers.advance_processing_time(&mut b, i64::MAX, &mut record)?
            }
        };
    }
    Ok(fired)
}

#[test]
fn timers_fire_exactly_once_after_restores_and_rescales() -> Result<()> {
    for (from, incremental) in [("heap", false), ("lsm", false), ("lsm", true)] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage: Arc<dyn CheckpointStorage> = Arc::new(FsCheckpointStorage::open_local(
            dir.path().join("checkpoints"),
            FsCheckpointOptions::default(),
        )?);
        // Two tasks write timers and take checkpoint 1.
        let mut expected = Expected::new();
        let mut states = Vec::new();
        for i in 0..2 {
            let mut b = Backend::<u64>::open(
                config(from, dir.path(), 2, i)?.lsm_incremental_checkpoints(incremental),
            )?;
            let mut timers = TimerService::<u64, u32>::register(&mut b, "t")?;
            expected.extend(fill(&mut b, &mut timers)?);
            // Some fire before the checkpoint: they must not fire again after it.
            let mut early = Vec::new();
            timers.advance_watermark(&mut b, -15, |_, _, t| {
                early.push(t);
                Ok(())
            })?;
            for t in early {
                expected.remove(&(t.key, t.namespace, t.timestamp, 0));
            }
            let written = b
                .snapshot(CheckpointId(1), &storage, &format!("task-{i}"))?
                .run()?;
            states.push(SubtaskState::new("op", i, 2, MAXP).with_keyed(written.handle));
        }
        assert!(expected.len() > 1_000, "{} timers pending", expected.len());
        let done = storage.complete_checkpoint(CheckpointId(1), states)?;
        for (to, p) in [("heap", 1), ("lsm", 3), ("heap", 2), ("lsm", 2)] {
            let mut fired = Expected::new();
            for i in 0..p {
                let got = fire_all(to, dir.path(), &storage, &done, p, i)?;
                assert!(
                    fired.is_disjoint(&got),
                    "{from} -> {to} at {p}: a timer fired twice"
                );
                fired.extend(got);
            }
            assert_eq!(
                fired, expected,
                "{from} (incremental {incremental}) -> {to} at {p}"
            );
        }
    }
    Ok(())
}

/// Copies the directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("the copy's directory is creatable");
    for entry in std::fs::read_dir(from).expect("the fixture is readable") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("a fixture file is copyable");
        }
    }
}

/// `engine/tests/data/native_v2_timers` is an incremental LSM checkpoint written by the build
/// before the timer layout (native snapshot format version 2: its timer state's keys are in the
/// keyed layout; max parallelism 8, one task): 40 keys with a `count` of `key * 10`, an
/// event-time timer at `key * 5 - 50` in namespace `key % 3` and a processing-time timer at
/// `1000 + key` in namespace 7 each. Restoring it must read its tables entry by entry and
/// write the timers in the timer layout (formats.md 8.1), at the same and another
/// parallelism, with every timer firing once.
#[test]
fn native_snapshots_of_version_2_restore_their_timers_into_the_timer_layout() -> Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("checkpoints");
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/native_v2_timers"),
        &root,
    );
    let snapshot = std::fs::read(root.join("chk-1/task-0")).expect("the fixture's snapshot");
    assert_eq!(
        &snapshot[..6],
        b"FSLN\x02\x00",
        "the fixture is a version-2 snapshot"
    );
    let storage = FsCheckpointStorage::open_local(&root, FsCheckpointOptions::default())?;
    let done = storage
        .latest_completed()?
        .expect("the fixture's checkpoint 1");
    let mut expected = Expected::new();
    for key in 0..40u64 {
        expected.insert((key, (key % 3) as u32, key as i64 * 5 - 50, 0));
        expected.insert((key, 7, 1_000 + key as i64, 1));
    }
    for p in [1u32, 2] {
        let mut fired = Expected::new();
        for i in 0..p {
            let range = KeyGroupRange::for_operator(8, p, i)?;
            let config = BackendConfig::lsm(dir.path().join(format!("restored-{p}-{i}")))
                .lsm_background(lsm::LsmBackground::Inline)
                .max_parallelism(8)
                .key_group_range(range);
            let mut b = Backend::<u64>::restore_from(config, &storage, &done.handles_for(range))?;
            let count = b.register(ValueStateDescriptor::<u64>::new("count"))?;
            let mut timers = TimerService::<u64, u32>::register_with_cache(&mut b, "t", 1)?;
            assert!(timers.timers_in_memory() <= 2 * range.len());
            let mut record = |b: &mut Backend<u64>,
                              _: &mut TimerService<u64, u32>,
                              t: timer::Timer<u64, u32>| {
                let code = u8::from(t.domain == TimeDomain::ProcessingTime);
                assert!(fired.insert((t.key, t.namespace, t.timestamp, code)));
                assert_eq!(b.value(&count).get()?, Some(t.key * 10));
                Ok(())
            };
            timers.advance_watermark(&mut b, i64::MAX, &mut record)?;
            timers.advance_processing_time(&mut b, i64::MAX, &mut record)?;
            assert!(timers.is_empty());
        }
        assert_eq!(fired, expected, "at parallelism {p}");
    }
    Ok(())
}
