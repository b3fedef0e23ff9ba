//! The stateful operator of one worker: per key, a count (value state), the last values (list
//! state), the records per split (map state) and per event-time window a sum (value state in
//! the window's namespace) with a timer at the window's end; fired windows go to the output
//! through a two-phase-commit file sink. All of it lives in flowstate, snapshotted per epoch.

use std::path::Path;
use std::sync::Arc;

use flowstate::file_sink::FileSink;
use flowstate::operator::OperatorStateStore;
use flowstate::task::{open_task, restore_task, snapshot_task, PendingTaskSnapshot, TaskId};
use flowstate::timer::TimerService;
use flowstate::two_phase_commit::TwoPhaseCommitSink;
use flowstate::*;

use crate::input::{processing_order, InputSpec, Record};
use crate::output::{WindowResult, RECENT};

/// The keyed operator's id.
pub const OPERATOR: &str = "keyed";

struct States {
    count: ValueState<u64>,
    recent: ListState<i64>,
    splits: MapState<u32, u64>,
    /// Per window: the sum of the values and the number of records.
    window: ValueState<(i64, u64), TimeWindow>,
}

/// One worker's task of the keyed operator.
pub struct KeyedTask {
    task: TaskId,
    spec: InputSpec,
    backend: Backend<u64>,
    operator_state: OperatorStateStore,
    states: States,
    timers: TimerService<u64, TimeWindow>,
    sink: TwoPhaseCommitSink<FileSink>,
    storage: Arc<dyn CheckpointStorage>,
    notified: u64,
}

impl KeyedTask {
    /// Task `index` of `parallelism`: fresh, or restored from checkpoint `from` (its
    /// transactions pending there committed, the one open there aborted, by the sink).
    pub fn open(
        spec: InputSpec,
        task: TaskId,
        max_parallelism: u32,
        storage: Arc<dyn CheckpointStorage>,
        from: Option<&CompletedCheckpoint>,
        out: &Path,
    ) -> Result<Self> {
        let config = BackendConfig::heap().max_parallelism(max_parallelism);
        let opened = match from {
            Some(done) => restore_task::<u64>(config, &*storage, done, &task)?,
            None => open_task::<u64>(config, &task)?,
        };
        let (mut backend, mut operator_state) = (opened.backend, opened.operator_state);
        let states = States {
            count: backend.register(ValueStateDescriptor::<u64>::new("count"))?,
            recent: backend.register(ListStateDescriptor::<i64>::new("recent"))?,
            splits: backend.register(MapStateDescriptor::<u32, u64>::new("per-split"))?,
            window: backend.register(
                ValueStateDescriptor::<(i64, u64)>::new("window").with_namespace::<TimeWindow>(),
            )?,
        };
        let timers = TimerService::register(&mut backend, "windows")?;
        // Transaction names: unique per task and per run that may commit (module file_sink).
        let from_id = from.map_or(0, |c| c.id().0);
        let prefix = format!(
            "{OPERATOR}{}of{}-from{from_id}",
            task.index, task.parallelism
        );
        let sink =
            TwoPhaseCommitSink::open(FileSink::new(out, prefix)?, &mut operator_state, "output")?;
        Ok(KeyedTask {
            task,
            spec,
            backend,
            operator_state,
            states,
            timers,
            sink,
            storage,
            notified: from_id,
        })
    }

    /// Processes the records of `epoch` (in a fixed order), fires the windows the epoch's
    /// watermark closes into the sink, then takes the synchronous phase of the task's part of
    /// checkpoint `epoch + 1`: the sink pre-commits, the state is frozen. Returns the
    /// asynchronous phase, to run on any thread.
    pub fn process_epoch(
        &mut self,
        epoch: u64,
        mut records: Vec<Record>,
    ) -> Result<PendingTaskSnapshot> {
        processing_order(&mut records);
        let (b, s) = (&mut self.backend, &self.states);
        for r in &records {
            b.set_current_key(&r.key);
            let count = b.value(&s.count).get()?.unwrap_or(0);
            b.value(&s.count).update(count + 1)?;
            b.list(&s.recent).add(r.value)?;
            if count as usize + 1 > RECENT {
                let mut recent = b.list(&s.recent).get()?;
                recent.drain(..recent.len() - RECENT);
                b.list(&s.recent).update(recent)?;
            }
            let n = b.map(&s.splits).get(&r.split)?.unwrap_or(0);
            b.map(&s.splits).put(r.split, n + 1)?;
            let (start, end) = self.spec.window_of(r.time);
            let window = TimeWindow::new(start, end);
            let (sum, n) = b
                .value(&s.window)
                .namespace(&window)
                .get()?
                .unwrap_or((0, 0));
            b.value(&s.window)
                .namespace(&window)
                .update((sum + r.value, n + 1))?;
            self.timers.register_event_time_timer(b, &window, end - 1)?;
        }
        let sink = &mut self.sink;
        self.timers.advance_watermark(
            &mut self.backend,
            self.spec.watermark_after(epoch),
            |b, _, timer| {
                let window = timer.namespace;
                let (sum, n) = b
                    .value(&s.window)
                    .namespace(&window)
                    .get()?
                    .unwrap_or((0, 0));
                b.value(&s.window).namespace(&window).clear()?;
                let result = WindowResult {
                    key: timer.key,
                    start: window.start,
                    sum,
                    n,
                    count: b.value(&s.count).get()?.unwrap_or(0),
                    recent: b.list(&s.recent).get()?,
                    splits: b.map(&s.splits).keys()?.len(),
                };
                sink.write(result.line().as_bytes())
            },
        )?;
        let id = CheckpointId(epoch + 1);
        self.sink.pre_commit(&mut self.operator_state, id)?;
        snapshot_task(
            &mut self.backend,
            &self.operator_state,
            &self.task,
            id,
            &self.storage,
        )
    }

    /// Checkpoint `id` completed (seen in the checkpoint directory): the backend is told, the
    /// sink commits what it pre-committed up to it.
    pub fn notify_checkpoint_complete(&mut self, id: u64) -> Result<()> {
        if id <= self.notified {
            return Ok(());
        }
        self.backend.notify_checkpoint_complete(CheckpointId(id))?;
        self.sink
            .notify_checkpoint_complete(&mut self.operator_state, CheckpointId(id))?;
        self.notified = id;
        Ok(())
    }

    /// Ends the task after its final checkpoint completed: the sink aborts its open (empty)
    /// transaction.
    pub fn close(self) -> Result<()> {
        self.sink.close()?;
        Ok(())
    }

    /// The last checkpoint this task was notified of.
    pub fn notified(&self) -> u64 {
        self.notified
    }
}
