//! `flowstate-timely`: flowstate embedded in timely dataflow. See README.md.
//!
//! `run` runs the job (several workers, one or more processes on loopback) with checkpoints
//! per epoch into a shared directory, output through a two-phase-commit file sink, and
//! optionally a crash at a chosen epoch; a rerun restores from the latest completed checkpoint
//! at any number of workers and processes. `check` compares the committed output with a model
//! of the job computed without flowstate or timely.

mod ack;
mod coordinator;
mod input;
mod keyed;
mod output;
mod source;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use flowstate::{CheckpointStorage, FsCheckpointOptions, FsCheckpointStorage};

use crate::input::InputSpec;
use crate::worker::{RunContext, WorkerSummary};

/// flowstate inside timely dataflow: checkpoints, a crash, a rescale, exactly-once output.
#[derive(Parser, Debug)]
#[command(name = "flowstate-timely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the job (restoring from the latest completed checkpoint in --dir, if any).
    Run(RunArgs),
    /// Checks the committed output in --out against a model of the job.
    Check(CheckArgs),
}

/// The input; the same for every run of one job.
#[derive(Args, Debug, Clone)]
struct SpecArgs {
    /// Number of epochs (one checkpoint each).
    #[arg(long, default_value_t = 12)]
    epochs: u64,
    /// Records per split and epoch.
    #[arg(long, default_value_t = 200)]
    records: u64,
    /// Number of source splits.
    #[arg(long, default_value_t = 4)]
    splits: u32,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 50)]
    keys: u64,
    /// Length of the event-time tumbling windows.
    #[arg(long, default_value_t = 300)]
    window: i64,
    /// Seed of the input.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl SpecArgs {
    fn spec(&self) -> Result<InputSpec, String> {
        if self.epochs == 0 || self.records == 0 || self.splits == 0 || self.keys == 0 {
            return Err("--epochs, --records, --splits and --keys must be at least 1".into());
        }
        if self.window <= 0 {
            return Err("--window must be at least 1".into());
        }
        Ok(InputSpec {
            seed: self.seed,
            splits: self.splits,
            records: self.records,
            epochs: self.epochs,
            keys: self.keys,
            window: self.window,
        })
    }
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The shared checkpoint directory.
    #[arg(long)]
    dir: PathBuf,
    /// The output directory (committed files; in-progress ones start with '.').
    #[arg(long)]
    out: PathBuf,
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Number of processes.
    #[arg(long, short = 'n', default_value_t = 1)]
    processes: usize,
    /// This process's index, below --processes.
    #[arg(long, short = 'p', default_value_t = 0)]
    process: usize,
    /// The address of every process, in order (host:port, comma-separated); with --processes
    /// above 1.
    #[arg(long, value_delimiter = ',')]
    addresses: Vec<String>,
    /// Max parallelism (number of key groups).
    #[arg(long, default_value_t = 32)]
    max_parallelism: u32,
    /// Stop the process with exit code 3, as a crash, once this epoch is processed and
    /// snapshotted, before its checkpoint completes.
    #[arg(long)]
    crash_at_epoch: Option<u64>,
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Args, Debug, Clone)]
struct CheckArgs {
    /// The output directory of the runs.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    spec: SpecArgs,
}

fn run(args: RunArgs) -> Result<(), String> {
    let spec = args.spec.spec()?;
    let peers = args.workers * args.processes;
    if args.workers == 0 || args.processes == 0 || args.process >= args.processes {
        return Err(
            "--workers and --processes must be at least 1, --process below --processes".into(),
        );
    }
    if peers as u64 > u64::from(args.max_parallelism) {
        return Err(format!(
            "{peers} workers in all, more than the max parallelism {}",
            args.max_parallelism
        ));
    }
    if args.processes > 1 && args.addresses.len() != args.processes {
        return Err(format!(
            "--addresses must list {} addresses, one per process",
            args.processes
        ));
    }
    // Process 0 owns the checkpoint directory (start-up cleanup, completion, retention); the
    // others write their tasks' files through a task-side instance. Process 0 opens it before
    // timely connects the processes, so its cleanup is done before any task writes a file.
    let storage: Arc<dyn CheckpointStorage> = if args.process == 0 {
        let options = FsCheckpointOptions::default().with_retained(2);
        Arc::new(FsCheckpointStorage::open_local(&args.dir, options).map_err(|e| e.to_string())?)
    } else {
        std::fs::create_dir_all(&args.dir)
            .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
        Arc::new(FsCheckpointStorage::open_for_tasks(&args.dir).map_err(|e| e.to_string())?)
    };
    let from = storage.latest_completed().map_err(|e| e.to_string())?;
    let started = Instant::now();
    match &from {
        Some(c) => println!(
            "process {}: restoring from checkpoint {} at {} workers ({} processes x {})",
            args.process,
            c.id().0,
            peers,
            args.processes,
            args.workers
        ),
        None => println!(
            "process {}: starting fresh at {} workers ({} processes x {})",
            args.process, peers, args.processes, args.workers
        ),
    }
    let ctx = RunContext {
        spec,
        max_parallelism: args.max_parallelism,
        storage,
        from: from.map(Arc::new),
        out: args.out.clone(),
        crash_at_epoch: args.crash_at_epoch,
    };
    let communication = if args.processes == 1 {
        timely::CommunicationConfig::Process(args.workers)
    } else {
        timely::CommunicationConfig::Cluster {
            threads: args.workers,
            process: args.process,
            addresses: args.addresses.clone(),
            report: false,
            zerocopy: false,
        }
    };
    let config = timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    };
    let guards = timely::execute(config, move |w| worker::run(w, &ctx))?;
    let mut summaries: Vec<WorkerSummary> = Vec::new();
    for result in guards.join() {
        summaries.push(result??);
    }
    let records: u64 = summaries.iter().map(|s| s.records).sum();
    println!(
        "process {}: {records} records emitted by its sources in {:.2} s",
        args.process,
        started.elapsed().as_secs_f64()
    );
    if let Some(completed) = summaries.iter().find_map(|s| s.completed.as_ref()) {
        let list = &completed.checkpoints;
        if let (Some(first), Some(last)) = (list.first(), list.last()) {
            let bytes: u64 = list.iter().map(|c| c.1).sum();
            println!(
                "coordinator: completed checkpoints {} to {} ({} in all, {} bytes per checkpoint \
                 on average, the last {} bytes)",
                first.0,
                last.0,
                list.len(),
                bytes / list.len() as u64,
                last.1
            );
        }
    }
    Ok(())
}

fn check(args: CheckArgs) -> Result<(), String> {
    let spec = args.spec.spec()?;
    let expected = output::expected_lines(&spec);
    let got = output::committed_lines(&args.out)?;
    if got != expected {
        let mut missing = expected.clone();
        let mut extra = Vec::new();
        for line in &got {
            match missing.iter().position(|l| l == line) {
                Some(i) => {
                    missing.remove(i);
                }
                None => extra.push(line.clone()),
            }
        }
        return Err(format!(
            "the committed output differs from the model: {} lines, expected {}; {} missing \
             (first: {:?}), {} extra or duplicated (first: {:?})",
            got.len(),
            expected.len(),
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        ));
    }
    println!(
        "OK: {} window results committed, each exactly once, equal to the model",
        got.len()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
