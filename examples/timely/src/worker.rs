//! One timely worker's run: its source and keyed task, the dataflow that connects every
//! worker's tasks (records exchanged by key group, acknowledgements to the coordinator on
//! worker 0), the epoch loop, and the notifications of completed checkpoints.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowstate::key_group::operator_index_of;
use flowstate::task::TaskId;
use flowstate::{CheckpointStorage, CompletedCheckpoint};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, Concat, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::ack::Ack;
use crate::coordinator::{Completed, Coordinator};
use crate::input::{InputSpec, Record};
use crate::keyed::{self, KeyedTask};
use crate::source::{self, SourceTask};

/// The exit code of a run stopped by `--crash-at-epoch`.
pub const CRASH_EXIT: i32 = 3;

/// How many epochs the source may run ahead of the keyed operator.
const MAX_EPOCHS_IN_FLIGHT: u64 = 2;

/// How long a worker waits, after its input ended, for the final checkpoint's completion by
/// the coordinator (which may be in another process) before giving up.
const FINAL_CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

/// What every worker of a run shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The input.
    pub spec: InputSpec,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// The checkpoint storage (this process's instance of the shared directory).
    pub storage: Arc<dyn CheckpointStorage>,
    /// The checkpoint the run restores from, if any.
    pub from: Option<Arc<CompletedCheckpoint>>,
    /// The output directory of the file sink.
    pub out: PathBuf,
    /// Stop the process (as a crash) once this epoch is processed and snapshotted, before its
    /// checkpoint completes.
    pub crash_at_epoch: Option<u64>,
}

/// What a worker reports at the end.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// The coordinator's checkpoints (worker 0 only).
    pub completed: Option<Completed>,
    /// The records the worker's source emitted.
    pub records: u64,
}

/// Prints `message` and ends the process with exit code 1: an error inside a dataflow operator,
/// which has no caller to return it to.
fn fatal(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// Tells `task` of every checkpoint completed since its last notification.
fn notify(storage: &dyn CheckpointStorage, task: &RefCell<KeyedTask>) -> Result<(), String> {
    let completed = storage.completed().map_err(|e| e.to_string())?;
    if let Some(latest) = completed.last() {
        task.borrow_mut()
            .notify_checkpoint_complete(latest.0)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs one worker to the end of the input (or to the crash).
pub fn run(worker: &mut Worker, ctx: &RunContext) -> Result<WorkerSummary, String> {
    let (index, peers) = (worker.index() as u32, worker.peers() as u32);
    let spec = ctx.spec;
    let mp = ctx.max_parallelism;
    let from = ctx.from.as_deref();
    let start = from.map_or(0, |c| c.id().0);
    let keyed_task = KeyedTask::open(
        spec,
        TaskId::new(keyed::OPERATOR, index, peers),
        mp,
        Arc::clone(&ctx.storage),
        from,
        &ctx.out,
    )
    .map_err(|e| format!("worker {index}: opening the keyed task: {e}"))?;
    let task = Rc::new(RefCell::new(keyed_task));
    let mut source = SourceTask::open(
        spec,
        TaskId::new(source::OPERATOR, index, peers),
        mp,
        Arc::clone(&ctx.storage),
        from,
    )
    .map_err(|e| format!("worker {index}: opening the source: {e}"))?;

    let mut input: InputHandleVec<u64, Record> = InputHandleVec::new();
    let mut source_acks: InputHandleVec<u64, Ack> = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let coordinator = Rc::new(RefCell::new(Coordinator::new(
        Arc::clone(&ctx.storage),
        2 * peers as usize,
    )));
    let crash_at = ctx.crash_at_epoch;

    worker.dataflow::<u64, _, _>(|scope| {
        let records = input.to_stream(scope);
        let acks = source_acks.to_stream(scope);
        let operator_task = Rc::clone(&task);
        // Records go to the worker whose key-group range holds their key's group.
        let route = move |r: &Record| u64::from(operator_index_of(&r.key, mp, peers));
        let keyed_acks = records.unary_frontier(
            Exchange::new(route),
            "keyed",
            move |mut capability, info| {
                capability.downgrade(&start);
                let mut capability = Some(capability);
                let mut stash: BTreeMap<u64, Vec<Record>> = BTreeMap::new();
                let mut next = start;
                // Asynchronous phases running on their own threads, each with a capability for
                // its epoch: the acknowledgement goes out at that epoch once the files are
                // written, and the epoch stays open downstream until then.
                let mut writing: Vec<(Capability<u64>, JoinHandle<flowstate::Result<Ack>>)> =
                    Vec::new();
                let activator = scope.activator_for(Rc::clone(&info.address));
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        // Every message is sent at one epoch; one with no time carries nothing.
                        if let Some(&epoch) = cap.least() {
                            stash.entry(epoch).or_default().append(data);
                        }
                    });
                    // Every epoch before the frontier is closed: its records are all here.
                    let limit = frontier
                        .frontier()
                        .iter()
                        .min()
                        .copied()
                        .unwrap_or(u64::MAX)
                        .min(spec.epochs);
                    while next < limit {
                        let records = stash.remove(&next).unwrap_or_default();
                        let pending = operator_task
                            .borrow_mut()
                            .process_epoch(next, records)
                            .unwrap_or_else(|e| {
                                fatal(format!("worker {index}, epoch {next}: {e}"))
                            });
                        if crash_at == Some(next) {
                            eprintln!(
                                "worker {index}: crashing after epoch {next} (--crash-at-epoch)"
                            );
                            std::process::exit(CRASH_EXIT);
                        }
                        if let Some(cap) = &mut capability {
                            let id = next + 1;
                            let thread = std::thread::spawn(move || {
                                pending
                                    .run()
                                    .and_then(|written| Ack::new(id, &written.state))
                            });
                            writing.push((cap.clone(), thread));
                            next += 1;
                            if next < spec.epochs {
                                cap.downgrade(&next);
                            }
                        }
                    }
                    if next >= spec.epochs {
                        capability = None;
                    }
                    let (done, running): (Vec<_>, Vec<_>) = writing
                        .drain(..)
                        .partition(|(_, thread)| thread.is_finished());
                    writing = running;
                    for (cap, thread) in done {
                        match thread.join() {
                            Ok(Ok(ack)) => output.session(&cap).give(ack),
                            Ok(Err(e)) => fatal(format!("worker {index}, snapshot: {e}")),
                            Err(_) => fatal(format!("worker {index}: a snapshot thread panicked")),
                        }
                    }
                    if !writing.is_empty() {
                        // Look again shortly: the threads do not wake the worker.
                        activator.activate_after(Duration::from_millis(1));
                    }
                }
            },
        );
        let coordinator = Rc::clone(&coordinator);
        keyed_acks.probe_with(&probe).concat(acks).sink(
            Exchange::new(|_: &Ack| 0),
            "coordinator",
            move |(input, frontier)| {
                let mut coordinator = coordinator.borrow_mut();
                input.for_each(|cap, data| {
                    if let Some(&epoch) = cap.least() {
                        coordinator.receive(epoch, data);
                    }
                });
                if index == 0 {
                    let f = frontier.frontier().iter().min().copied();
                    if let Err(e) = coordinator.complete_closed(f) {
                        fatal(e);
                    }
                }
            },
        );
    });

    // After a restore the inputs start at the restored epoch. (Advanced after the dataflow is
    // built: an input operator is scheduled, and publishes its progress, when its handle
    // advances, so advancing before it exists would leave it at 0 until the next advance.)
    input.advance_to(start);
    source_acks.advance_to(start);
    let mut records = 0u64;
    for epoch in start..spec.epochs {
        // Back-pressure: the source stays at most a few epochs ahead of the keyed operator.
        while probe.less_than(&epoch.saturating_sub(MAX_EPOCHS_IN_FLIGHT)) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        let batch = source
            .emit(epoch)
            .map_err(|e| format!("worker {index}, source, epoch {epoch}: {e}"))?;
        records += batch.len() as u64;
        for r in batch {
            input.send(r);
        }
        input.advance_to(epoch + 1);
        // The source's barrier: its offsets now stand at the start of the next epoch.
        let ack = source
            .checkpoint(epoch)
            .map_err(|e| format!("worker {index}, source checkpoint {}: {e}", epoch + 1))?;
        source_acks.send(ack);
        source_acks.advance_to(epoch + 1);
        worker.step();
        notify(&*ctx.storage, &task)?;
    }
    drop(input);
    drop(source_acks);
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
        notify(&*ctx.storage, &task)?;
    }
    // The final checkpoint (of the last epoch) commits the last output; the coordinator may be
    // in another process, so wait for it in the checkpoint directory.
    let waiting = Instant::now();
    while task.borrow().notified() < spec.epochs {
        if waiting.elapsed() > FINAL_CHECKPOINT_WAIT {
            return Err(format!(
                "worker {index}: checkpoint {} did not complete within {FINAL_CHECKPOINT_WAIT:?}",
                spec.epochs
            ));
        }
        worker.step_or_park(Some(Duration::from_millis(1)));
        notify(&*ctx.storage, &task)?;
    }
    while worker.has_dataflows() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    // The dataflow is gone, and with it the operator's handle on the task.
    if let Ok(task) = Rc::try_unwrap(task) {
        task.into_inner()
            .close()
            .map_err(|e| format!("worker {index}: closing the keyed task: {e}"))?;
    }
    let completed = (index == 0).then(|| coordinator.borrow().completed().clone());
    Ok(WorkerSummary { completed, records })
}
