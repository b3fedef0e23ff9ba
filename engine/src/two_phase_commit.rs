//! Exactly-once output to an external system: a two-phase-commit sink (Flink's
//! `TwoPhaseCommitSinkFunction`) over any transactional target.
//!
//! The records a task emits between two checkpoint barriers go into one transaction of the
//! target ([`Transactional`]). At barrier `n` the task pre-commits it (the target makes it
//! durable but invisible) and keeps it as *pending for checkpoint `n`* in operator state, then
//! begins the next transaction. When checkpoint `n` completes, the task commits every pending
//! transaction of a checkpoint up to `n`. After a failure, the task restored from checkpoint `m`
//! finds in its operator state the transactions pending at `m` and commits them again (commit
//! is idempotent: some may have been committed before the failure), and aborts the
//! transaction that was open at `m`'s barrier: its records come again from the replayed input.
//!
//! The rules (spec/embedding.md section 5):
//!
//! 1. [`TwoPhaseCommitSink::open`] once per task run, on a fresh or a restored
//!    [`OperatorStateStore`]: commits the restored pending transactions, aborts the restored
//!    open ones, begins a transaction.
//! 2. [`TwoPhaseCommitSink::pre_commit`] at barrier `n`, **before** `task::snapshot_task`, so
//!    that the snapshot holds the pending transaction and the new open one.
//! 3. [`TwoPhaseCommitSink::notify_checkpoint_complete`] commits the transactions pending for
//!    checkpoints up to `n`.
//! 4. [`TwoPhaseCommitSink::notify_checkpoint_aborted`] commits and aborts nothing: the
//!    transaction pre-committed for the aborted checkpoint holds records the job will not emit
//!    again (the job goes on from where it is), so it stays pending and is committed when a
//!    later checkpoint completes. A failure, not an aborted checkpoint, is what takes records
//!    back: the restore then aborts the transaction that held them.
//!
//! Transactions are kept in a split list state: on a restore at another parallelism each old
//! transaction goes to exactly one new task, which commits or aborts it.
//!
//! ```
//! use flowstate::operator::OperatorStateStore;
//! use flowstate::two_phase_commit::{Transactional, TwoPhaseCommitSink};
//! use flowstate::*;
//!
//! /// A target that makes a transaction's records visible on commit, once.
//! #[derive(Default)]
//! struct Visible {
//!     next: u64,
//!     open: std::collections::BTreeMap<u64, Vec<String>>,
//!     committed: std::collections::BTreeMap<u64, Vec<String>>,
//! }
//!
//! impl Transactional for Visible {
//!     type Txn = u64;
//!     type Record = str;
//!     type Error = Error;
//!     fn begin(&mut self) -> Result<u64> {
//!         self.next += 1;
//!         self.open.insert(self.next, Vec::new());
//!         Ok(self.next)
//!     }
//!     fn write(&mut self, txn: &mut u64, record: &str) -> Result<()> {
//!         self.open.entry(*txn).or_default().push(record.to_owned());
//!         Ok(())
//!     }
//!     fn pre_commit(&mut self, _txn: &mut u64) -> Result<()> {
//!         Ok(())
//!     }
//!     fn commit(&mut self, txn: u64) -> Result<()> {
//!         if let Some(records) = self.open.remove(&txn) {
//!             self.committed.insert(txn, records);
//!         }
//!         Ok(())
//!     }
//!     fn abort(&mut self, txn: u64) -> Result<()> {
//!         self.open.remove(&txn);
//!         Ok(())
//!     }
//! }
//!
//! let mut store = OperatorStateStore::new();
//! let mut sink = TwoPhaseCommitSink::open(Visible::default(), &mut store, "sink")?;
//! sink.write("a")?;
//! sink.pre_commit(&mut store, CheckpointId(1))?; // at the barrier, before snapshot_task
//! sink.write("b")?;
//! assert!(sink.target().committed.is_empty());
//! sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
//! assert_eq!(sink.target().committed[&1], vec!["a".to_string()]);
//! # Ok::<(), flowstate::Error>(())
//! ```

use crate::checkpoint::CheckpointId;
use crate::error::Error;
use crate::operator::{OperatorListState, OperatorStateStore};
use crate::state::{ListStateDescriptor, StateValue};

/// An external system that writes in transactions: the target of a [`TwoPhaseCommitSink`].
///
/// A transaction ([`Transactional::Txn`]) is kept in operator state, so it must be a small,
/// encodable reference to the external transaction (an id, a file name), never its records.
pub trait Transactional {
    /// A reference to one transaction, stored in checkpoints.
    type Txn: StateValue;
    /// What [`write`](Self::write) takes (`str`, `[u8]`, a record type).
    type Record: ?Sized;
    /// The target's error; flowstate's errors (of the operator state) convert into it.
    type Error: From<Error>;

    /// Begins a transaction.
    fn begin(&mut self) -> Result<Self::Txn, Self::Error>;

    /// Writes `record` into the open transaction `txn`.
    fn write(&mut self, txn: &mut Self::Txn, record: &Self::Record) -> Result<(), Self::Error>;

    /// Makes `txn` durable but not yet visible: after this, a commit must succeed, even in
    /// another process after a restore.
    fn pre_commit(&mut self, txn: &mut Self::Txn) -> Result<(), Self::Error>;

    /// Makes the pre-committed `txn` visible. Must be idempotent: after a failure the same
    /// transaction is committed again, possibly by another task, possibly after it was.
    fn commit(&mut self, txn: Self::Txn) -> Result<(), Self::Error>;

    /// Discards `txn` (open or pre-committed, never committed). Must be idempotent, and must
    /// accept a transaction of an earlier run of the job that this target did not begin.
    fn abort(&mut self, txn: Self::Txn) -> Result<(), Self::Error>;
}

/// The operator-state element of one transaction: the checkpoint it is pending for, or `None`
/// for the transaction open at the barrier.
type Entry<X> = (Option<u64>, X);

/// A two-phase-commit sink: the open transaction and the pre-committed ones of a task, kept in
/// the task's operator state. See the module documentation for the rules.
pub struct TwoPhaseCommitSink<T: Transactional> {
    target: T,
    state: OperatorListState<Entry<T::Txn>>,
    /// The open transaction: `None` only between a failed `begin` and the next call.
    current: Option<T::Txn>,
    /// Pre-committed transactions by the checkpoint they were pre-committed for, ascending.
    pending: Vec<(CheckpointId, T::Txn)>,
}

impl<T: Transactional> std::fmt::Debug for TwoPhaseCommitSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoPhaseCommitSink")
            .field("open", &self.current.is_some())
            .field(
                "pending",
                &self.pending.iter().map(|(id, _)| id.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<T: Transactional> TwoPhaseCommitSink<T> {
    /// Opens the sink of a task over `target`, its transactions in the list state `name` of
    /// `operator_state` (fresh, or restored with `task::restore_task`). Transactions found
    /// there are finished first: each pending one is committed (again), each open one aborted.
    /// Then a transaction begins.
    pub fn open(
        mut target: T,
        operator_state: &mut OperatorStateStore,
        name: &str,
    ) -> Result<Self, T::Error> {
        let state = operator_state.list_state(&ListStateDescriptor::<Entry<T::Txn>>::new(name))?;
        let mut restored = operator_state.list(&state).get()?;
        // Commit in checkpoint order, as they would have been.
        restored.sort_by_key(|(id, _)| *id);
        for (id, txn) in restored {
            match id {
                Some(_) => target.commit(txn)?,
                None => target.abort(txn)?,
            }
        }
        let mut sink = TwoPhaseCommitSink {
            target,
            state,
            current: None,
            pending: Vec::new(),
        };
        sink.current = Some(sink.target.begin()?);
        sink.store(operator_state)?;
        Ok(sink)
    }

    /// Writes `record` into the open transaction.
    pub fn write(&mut self, record: &T::Record) -> Result<(), T::Error> {
        self.ensure_open()?;
        match self.current.as_mut() {
            Some(txn) => self.target.write(txn, record),
            None => unreachable!("ensure_open leaves a transaction open"),
        }
    }

    /// Begins a transaction if none is open (after a `begin` that failed).
    fn ensure_open(&mut self) -> Result<(), T::Error> {
        if self.current.is_none() {
            self.current = Some(self.target.begin()?);
        }
        Ok(())
    }

    /// At barrier `checkpoint`, before `task::snapshot_task`: pre-commits the open transaction
    /// as pending for `checkpoint`, begins the next one, and writes both into the operator
    /// state the snapshot will copy.
    pub fn pre_commit(
        &mut self,
        operator_state: &mut OperatorStateStore,
        checkpoint: CheckpointId,
    ) -> Result<(), T::Error> {
        if let Some((last, _)) = self.pending.last() {
            if *last >= checkpoint {
                return Err(Error::InvalidArgument(format!(
                    "pre-commit for checkpoint {} after checkpoint {}: checkpoint ids must grow",
                    checkpoint.0, last.0
                ))
                .into());
            }
        }
        self.ensure_open()?;
        if let Some(mut txn) = self.current.take() {
            if let Err(e) = self.target.pre_commit(&mut txn) {
                self.current = Some(txn);
                return Err(e);
            }
            self.pending.push((checkpoint, txn));
        }
        match self.target.begin() {
            Ok(txn) => self.current = Some(txn),
            Err(e) => {
                // The pre-committed transaction must reach the operator state all the same,
                // or a snapshot taken now would lose it.
                self.store(operator_state)?;
                return Err(e);
            }
        }
        self.store(operator_state)
    }

    /// Checkpoint `checkpoint` completed: commits every transaction pending for it or an
    /// earlier checkpoint, in checkpoint order, and drops them from the operator state. On an
    /// error the uncommitted ones stay pending (a later notification or a restore commits
    /// them).
    pub fn notify_checkpoint_complete(
        &mut self,
        operator_state: &mut OperatorStateStore,
        checkpoint: CheckpointId,
    ) -> Result<(), T::Error> {
        while self
            .pending
            .first()
            .is_some_and(|(id, _)| *id <= checkpoint)
        {
            let (id, txn) = self.pending.remove(0);
            if let Err(e) = self.target.commit(txn.clone()) {
                self.pending.insert(0, (id, txn));
                self.store(operator_state)?;
                return Err(e);
            }
        }
        self.store(operator_state)
    }

    /// Checkpoint `checkpoint` was aborted: nothing is committed or aborted. Its pre-committed
    /// transaction holds records the job has emitted and will not emit again, so it stays
    /// pending and the next completed checkpoint commits it (rule 4 of the module
    /// documentation).
    pub fn notify_checkpoint_aborted(&mut self, checkpoint: CheckpointId) {
        let _ = checkpoint;
    }

    /// Ends the sink at the end of the task: aborts the open transaction and returns the
    /// target. Records written since the last [`pre_commit`](Self::pre_commit) are discarded,
    /// so call it once the task's final checkpoint (taken after its last record) completed.
    /// Transactions still pending stay so in that checkpoint's operator state: a restore from
    /// it commits them.
    pub fn close(mut self) -> Result<T, T::Error> {
        if let Some(txn) = self.current.take() {
            self.target.abort(txn)?;
        }
        Ok(self.target)
    }

    /// The checkpoints that have pre-committed transactions waiting for their completion.
    pub fn pending_checkpoints(&self) -> Vec<CheckpointId> {
        self.pending.iter().map(|(id, _)| *id).collect()
    }

    /// The target.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The target, mutably (to configure it; transactions are driven by the sink).
    pub fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// Writes the pending transactions and the open one into the operator state.
    fn store(&self, operator_state: &mut OperatorStateStore) -> Result<(), T::Error> {
        let mut entries: Vec<Entry<T::Txn>> = self
            .pending
            .iter()
            .map(|(id, txn)| (Some(id.0), txn.clone()))
            .collect();
        if let Some(txn) = &self.current {
            entries.push((None, txn.clone()));
        }
        operator_state.list(&self.state).update(entries)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::operator::OperatorStateSnapshot;

    /// What an in-memory external system holds: transactions by id and how often each was
    /// made visible.
    #[derive(Debug, Default)]
    struct World {
        next: u64,
        open: BTreeMap<u64, Vec<String>>,
        prepared: BTreeMap<u64, Vec<String>>,
        visible: BTreeMap<u64, Vec<String>>,
        commits: BTreeMap<u64, u32>,
        aborted: Vec<u64>,
        /// While set, every commit fails (the external system is down).
        refuse_commits: bool,
        /// While set, every begin fails.
        refuse_begins: bool,
    }

    /// A target over a shared [`World`], which outlives the tasks (as a database would).
    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<Mutex<World>>);

    impl Memory {
        fn world(&self) -> std::sync::MutexGuard<'_, World> {
            self.0
                .lock()
                .expect("no test thread panics while holding the lock")
        }
        /// Every visible record, by transaction order.
        fn visible(&self) -> Vec<String> {
            self.world().visible.values().flatten().cloned().collect()
        }
    }

    impl Transactional for Memory {
        type Txn = u64;
        type Record = str;
        type Error = Error;
        fn begin(&mut self) -> Result<u64, Error> {
            let mut w = self.world();
            if w.refuse_begins {
                return Err(Error::InvalidArgument("no new transaction now".into()));
            }
            w.next += 1;
            let id = w.next;
            w.open.insert(id, Vec::new());
            Ok(id)
        }
        fn write(&mut self, txn: &mut u64, record: &str) -> Result<(), Error> {
            match self.world().open.get_mut(txn) {
                Some(records) => {
                    records.push(record.to_owned());
                    Ok(())
                }
                None => Err(Error::InvalidArgument(format!("txn {txn} is not open"))),
            }
        }
        fn pre_commit(&mut self, txn: &mut u64) -> Result<(), Error> {
            let mut w = self.world();
            let records = w.open.remove(txn).unwrap_or_default();
            w.prepared.insert(*txn, records);
            Ok(())
        }
        fn commit(&mut self, txn: u64) -> Result<(), Error> {
            let mut w = self.world();
            if w.refuse_commits {
                return Err(Error::InvalidArgument("the system is down".into()));
            }
            *w.commits.entry(txn).or_default() += 1;
            if let Some(records) = w.prepared.remove(&txn) {
                w.visible.insert(txn, records);
            } else if !w.visible.contains_key(&txn) {
                return Err(Error::InvalidArgument(format!(
                    "txn {txn} was never pre-committed"
                )));
            }
            Ok(())
        }
        fn abort(&mut self, txn: u64) -> Result<(), Error> {
            let mut w = self.world();
            w.open.remove(&txn);
            w.prepared.remove(&txn);
            w.aborted.push(txn);
            Ok(())
        }
    }

    fn open(target: &Memory, store: &mut OperatorStateStore) -> TwoPhaseCommitSink<Memory> {
        TwoPhaseCommitSink::open(target.clone(), store, "sink").expect("in-memory target")
    }

    /// The operator state as a restore at parallelism `p` gives it to task `i`.
    fn restored(snapshots: &[OperatorStateSnapshot], p: u32, i: u32) -> OperatorStateStore {
        let refs: Vec<&OperatorStateSnapshot> = snapshots.iter().collect();
        OperatorStateStore::restore(&refs, p, i).expect("valid snapshots")
    }

    #[test]
    fn records_become_visible_only_when_their_checkpoint_completes() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        sink.write("b")?;
        sink.pre_commit(&mut store, CheckpointId(2))?;
        sink.write("c")?;
        assert!(target.visible().is_empty());
        assert_eq!(
            sink.pending_checkpoints(),
            vec![CheckpointId(1), CheckpointId(2)]
        );
        sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
        assert_eq!(target.visible(), vec!["a"]);
        sink.notify_checkpoint_complete(&mut store, CheckpointId(2))?;
        assert_eq!(target.visible(), vec!["a", "b"]);
        assert!(sink.pending_checkpoints().is_empty());
        Ok(())
    }

    #[test]
    fn crash_after_pre_commit_before_notify_commits_on_restore_exactly_once() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.write("b")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        let checkpoint_1 = store.snapshot();
        // Records after the barrier, in the open transaction; then the crash, before the
        // notification of checkpoint 1 (which completed).
        sink.write("c")?;
        drop(sink);
        assert!(target.visible().is_empty());

        let mut store = restored(std::slice::from_ref(&checkpoint_1), 1, 0);
        let mut sink = open(&target, &mut store);
        assert_eq!(target.visible(), vec!["a", "b"]);
        // The transaction open at the barrier was aborted; "c" comes again from the replay.
        assert_eq!(target.world().aborted, vec![2]);
        sink.write("c")?;
        sink.pre_commit(&mut store, CheckpointId(2))?;
        sink.notify_checkpoint_complete(&mut store, CheckpointId(2))?;
        assert_eq!(target.visible(), vec!["a", "b", "c"]);

        // A second restore from the same checkpoint commits transaction 1 again: idempotent.
        let mut store = restored(&[checkpoint_1], 1, 0);
        let _sink = open(&target, &mut store);
        assert_eq!(target.visible(), vec!["a", "b", "c"]);
        assert_eq!(target.world().commits[&1], 2);
        Ok(())
    }

    #[test]
    fn commit_twice_is_idempotent() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        let snapshot = store.snapshot();
        sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
        // Notified again (a duplicate notification): nothing pending, nothing committed.
        sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
        assert_eq!(target.world().commits[&1], 1);
        // Restored from the checkpoint whose transaction was committed: committed again.
        let mut store = restored(&[snapshot], 1, 0);
        let _sink = open(&target, &mut store);
        assert_eq!(target.world().commits[&1], 2);
        assert_eq!(target.visible(), vec!["a"]);
        Ok(())
    }

    #[test]
    fn an_aborted_checkpoint_keeps_its_transaction_for_the_next_one() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        sink.notify_checkpoint_aborted(CheckpointId(1));
        sink.write("b")?;
        sink.pre_commit(&mut store, CheckpointId(2))?;
        assert!(target.visible().is_empty());
        sink.notify_checkpoint_complete(&mut store, CheckpointId(2))?;
        assert_eq!(target.visible(), vec!["a", "b"]);
        assert!(target.world().aborted.is_empty());
        Ok(())
    }

    #[test]
    fn a_restore_from_before_a_barrier_aborts_what_was_pre_committed_after_it() -> Result<(), Error>
    {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        let checkpoint_1 = store.snapshot();
        sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
        // Checkpoint 2 pre-commits "b" but never completes; the job fails.
        sink.write("b")?;
        sink.pre_commit(&mut store, CheckpointId(2))?;
        drop(sink);
        let mut store = restored(&[checkpoint_1], 1, 0);
        let _sink = open(&target, &mut store);
        // Transaction 2 ("b") was open at checkpoint 1's barrier: aborted, replayed later.
        assert_eq!(target.world().aborted, vec![2]);
        assert_eq!(target.visible(), vec!["a"]);
        assert!(target.world().prepared.is_empty());
        Ok(())
    }

    #[test]
    fn a_rescale_gives_each_transaction_to_one_task() -> Result<(), Error> {
        let target = Memory::default();
        let mut snapshots = Vec::new();
        for task in 0..2 {
            let mut store = OperatorStateStore::new();
            let mut sink = open(&target, &mut store);
            sink.write(&format!("task {task}"))?;
            sink.pre_commit(&mut store, CheckpointId(1))?;
            snapshots.push(store.snapshot());
        }
        for i in 0..3 {
            let mut store = restored(&snapshots, 3, i);
            let _sink = open(&target, &mut store);
        }
        assert_eq!(target.visible(), vec!["task 0", "task 1"]);
        assert!(target.world().commits.values().all(|&n| n == 1));
        assert_eq!(target.world().aborted.len(), 2);
        Ok(())
    }

    #[test]
    fn close_aborts_the_open_transaction_and_keeps_the_committed_ones() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
        sink.write("lost: after the last barrier")?;
        sink.close()?;
        assert_eq!(target.visible(), vec!["a"]);
        assert_eq!(target.world().aborted, vec![2]);
        assert!(target.world().open.is_empty());
        Ok(())
    }

    #[test]
    fn a_failed_commit_stays_pending_for_the_next_notification_and_the_checkpoint(
    ) -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        target.world().refuse_commits = true;
        assert!(sink
            .notify_checkpoint_complete(&mut store, CheckpointId(1))
            .is_err());
        assert_eq!(sink.pending_checkpoints(), vec![CheckpointId(1)]);
        sink.write("b")?;
        sink.pre_commit(&mut store, CheckpointId(2))?;
        // The next checkpoint still holds transaction 1 as pending: a restore would commit it.
        let checkpoint_2 = store.snapshot();
        target.world().refuse_commits = false;
        sink.notify_checkpoint_complete(&mut store, CheckpointId(2))?;
        assert_eq!(target.visible(), vec!["a", "b"]);
        let mut restored_store = restored(&[checkpoint_2], 1, 0);
        let _sink = open(&target, &mut restored_store);
        assert_eq!(target.visible(), vec!["a", "b"]);
        Ok(())
    }

    #[test]
    fn a_failed_begin_after_a_pre_commit_still_keeps_the_pending_transaction() -> Result<(), Error>
    {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.write("a")?;
        target.world().refuse_begins = true;
        assert!(sink.pre_commit(&mut store, CheckpointId(1)).is_err());
        // The operator state holds the pre-committed transaction: a restore commits it.
        let checkpoint_1 = store.snapshot();
        let mut restored_store = restored(&[checkpoint_1], 1, 0);
        target.world().refuse_begins = false;
        let _sink = open(&target, &mut restored_store);
        assert_eq!(target.visible(), vec!["a"]);
        Ok(())
    }

    #[test]
    fn checkpoint_ids_must_grow() -> Result<(), Error> {
        let target = Memory::default();
        let mut store = OperatorStateStore::new();
        let mut sink = open(&target, &mut store);
        sink.pre_commit(&mut store, CheckpointId(2))?;
        assert!(matches!(
            sink.pre_commit(&mut store, CheckpointId(2)),
            Err(Error::InvalidArgument(_))
        ));
        Ok(())
    }
}
