//! The demo job: a generated keyed stream through all five state types on the heap backend,
//! with a source offset in operator state, checkpoints, failures, recovery (once at another
//! parallelism) and an exactly-once check against an independent tally of the stream. A
//! session state with a TTL (each user's last event, expiring after a gap of inactivity) runs
//! on event time: the backends' clock is set from each event's offset, so what has expired at
//! the end is a function of the stream, whatever failures and restores happened. An
//! event-time tumbling window per user (the sum of its amounts per window of
//! [`WINDOW_MS`] events) fires on timers as the watermark (the offset) passes each window's
//! end, and adds its result to the user's emitted totals, exactly once through failures.
//! Each fired window is also written out, as a line in a file of `<dir>/output/`, through a
//! two-phase-commit file sink per task (pre-committed at each checkpoint, committed when the
//! checkpoint completes, committed again or aborted after a restore): the check reads the
//! committed files back and finds every window result exactly once.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowstate::checkpoint::{read_operator_state, write_operator_state};
use flowstate::file_sink::{committed_files, FileSink};
use flowstate::key_group::operator_index_of;
use flowstate::operator::{OperatorListState, OperatorStateStore};
use flowstate::task::{restore_task, snapshot_task, TaskId, TaskSnapshotResult};
use flowstate::timer::TimerService;
use flowstate::two_phase_commit::TwoPhaseCommitSink;
use flowstate::*;
use indicatif::{ProgressBar, ProgressStyle};

type DemoResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Options of `flowstate demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of events in the stream.
    #[arg(long, default_value_t = 3_000_000)]
    events: u64,
    /// Number of distinct keys (users).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Take a checkpoint every this many events.
    #[arg(long, default_value_t = 300_000)]
    checkpoint_every: u64,
    /// Checkpoint directory (created; emptied at start).
    #[arg(long, default_value = "./flowstate-demo")]
    dir: PathBuf,
    /// Keep the checkpoints at this URL instead of in --dir (s3://bucket/prefix, gs://…,
    /// az://…, file:///…, memory://…; cloud settings from the environment, such as
    /// AWS_ENDPOINT_URL). The root must be empty or hold an earlier demo's checkpoints.
    #[arg(long, value_name = "URL")]
    checkpoints: Option<String>,
    /// Parallelism at the start.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Parallelism after the second failure.
    #[arg(long, default_value_t = 3)]
    rescale_to: u32,
    /// Number of failures to inject (at points chosen from the seed).
    #[arg(long, default_value_t = 2)]
    failures: u32,
    /// Seed of the stream and of the failure points.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Max parallelism (number of key groups).
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
    /// Block compression of checkpoint files: none, lz4 or zstd.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    quiet: bool,
    /// The keyed state backend: heap (in memory), heap-incremental (in memory, incremental
    /// checkpoints: deltas under `<dir>/shared`) or lsm (an LSM tree in `<dir>/lsm-work`).
    #[arg(long, default_value = "heap", value_parser = ["heap", "heap-incremental", "lsm"])]
    backend: String,
}

/// Makes the configuration of each task's backend: the same operator code runs on either kind.
struct Backends {
    lsm_dir: Option<PathBuf>,
    /// Heap backends take incremental checkpoints (deltas under `shared/`).
    heap_incremental: bool,
    /// Where the sinks commit their files.
    output_dir: PathBuf,
    /// The clock of every backend: the time of the event being processed (one millisecond an
    /// event), which the TTL of the session state runs on.
    clock: Arc<ManualClock>,
    /// Bumped per job, so that a restored job's LSM directories differ from the old job's.
    generation: std::cell::Cell<u32>,
}

impl Backends {
    fn new(args: &DemoArgs) -> Self {
        Backends {
            lsm_dir: (args.backend == "lsm").then(|| args.dir.join("lsm-work")),
            heap_incremental: args.backend == "heap-incremental",
            output_dir: args.dir.join("output"),
            clock: Arc::new(ManualClock::new(0)),
            generation: std::cell::Cell::new(0),
        }
    }

    fn next_job(&self) {
        self.generation.set(self.generation.get() + 1);
    }

    /// The file sink of task `task` of `parallelism` in the current job: its transactions
    /// are named after the task and the job, so no two runs that may commit share a name.
    fn files(&self, task: u32, parallelism: u32) -> Result<FileSink> {
        let prefix = format!("job{}-task{task}of{parallelism}", self.generation.get());
        FileSink::new(&self.output_dir, prefix)
    }

    fn config(&self, max_parallelism: u32, range: KeyGroupRange, task: u32) -> BackendConfig {
        let config = match &self.lsm_dir {
            None if self.heap_incremental => BackendConfig::heap()
                .heap_incremental_checkpoints(flowstate::heap::HeapIncremental::default()),
            None => BackendConfig::heap(),
            Some(dir) => {
                BackendConfig::lsm(dir.join(format!("job{}-task{task}", self.generation.get())))
                    .lsm_memtable_bytes(16 << 20)
                    .lsm_block_cache_bytes(32 << 20)
            }
        };
        config
            .max_parallelism(max_parallelism)
            .key_group_range(range)
            .clock(self.clock.clone())
    }
}

/// One generated event: a user visits a page and spends an amount.
#[derive(Debug, Clone, Copy)]
struct Event {
    user: u64,
    page: u32,
    amount: i64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Event `offset` of the stream: a pure function of (seed, offset), so a source can replay
/// from any offset. Half of the events go to the first 1% of users.
fn event_at(seed: u64, keys: u64, offset: u64) -> Event {
    let r = mix(seed ^ mix(offset));
    let user = if r & 1 == 0 {
        (r >> 1) % (keys / 100).max(1)
    } else {
        (r >> 1) % keys
    };
    let r2 = mix(r);
    Event {
        user,
        page: (r2 % 50) as u32,
        amount: ((r2 >> 8) % 1000) as i64 - 200,
    }
}

/// Mean of the amounts.
struct Average;

impl AggregateFunction for Average {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, acc: &mut (i64, u64), value: i64) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, u64)) -> f64 {
        acc.0 as f64 / acc.1.max(1) as f64
    }
    fn merge(&self, acc: &mut (i64, u64), other: (i64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// The last pages a user visited are kept, at most this many.
const RECENT_PAGES: usize = 8;
const OPERATOR: &str = "user-activity";

struct States {
    count: ValueState<u64>,
    recent: ListState<u32>,
    visits: MapState<u32, u64>,
    total: ReducingState<i64>,
    average: AggregatingState<Average>,
    /// The offset of the user's last event, expiring after [`SESSION_GAP_MS`] without one.
    last_event: ValueState<u64>,
    /// The sum of the user's amounts per event-time window, until its timer fires.
    window_sum: ReducingState<i64, TimeWindow>,
    /// Windows fired for the user and the sum of their results.
    emitted: ValueState<(u64, i64)>,
}

/// The event-time tumbling windows: this many events (milliseconds) each.
const WINDOW_MS: u64 = 100_000;

/// The window an event at `offset` falls in.
fn window_of(offset: u64) -> TimeWindow {
    let start = (offset - offset % WINDOW_MS) as i64;
    TimeWindow::new(start, start + WINDOW_MS as i64)
}

/// A session ends after this many milliseconds (events) without an event of its user.
const SESSION_GAP_MS: u64 = 200_000;

fn register(b: &mut Backend<u64>) -> Result<States> {
    let session = TtlConfig::after(Duration::from_millis(SESSION_GAP_MS));
    Ok(States {
        count: b.register(ValueStateDescriptor::<u64>::new("count"))?,
        recent: b.register(ListStateDescriptor::<u32>::new("recent-pages"))?,
        visits: b.register(MapStateDescriptor::<u32, u64>::new("visits-per-page"))?,
        total: b.register(ReducingStateDescriptor::<i64>::new("total", |a, b| a + b))?,
        average: b.register(AggregatingStateDescriptor::new("average", Average))?,
        last_event: b.register(ValueStateDescriptor::<u64>::new("last-event").with_ttl(session))?,
        window_sum: b.register(
            ReducingStateDescriptor::<i64>::new("window-sum", |a, b| a + b)
                .with_namespace::<TimeWindow>(),
        )?,
        emitted: b.register(ValueStateDescriptor::<(u64, i64)>::new("windows-emitted"))?,
    })
}

/// One keyed task: its backend, state handles and window timers, and its operator state,
/// where its sink keeps its transactions.
struct Task {
    backend: Backend<u64>,
    states: States,
    timers: TimerService<u64, TimeWindow>,
    operator_state: OperatorStateStore,
    /// The window results, to files through a two-phase commit.
    sink: TwoPhaseCommitSink<FileSink>,
}

/// The name of the operator state of a task's sink.
const SINK_STATE: &str = "window-results";

impl Task {
    /// A task on `backend` and `operator_state` (fresh or restored): its states and timers
    /// registered, its sink opened on `files` (committing the transactions a restored
    /// checkpoint holds pending, aborting the one open at its barrier).
    fn new(
        mut backend: Backend<u64>,
        mut operator_state: OperatorStateStore,
        files: FileSink,
    ) -> Result<Task> {
        let states = register(&mut backend)?;
        let timers = TimerService::register(&mut backend, "windows")?;
        let sink = TwoPhaseCommitSink::open(files, &mut operator_state, SINK_STATE)?;
        Ok(Task {
            backend,
            states,
            timers,
            operator_state,
            sink,
        })
    }

    /// Fires the windows whose end the watermark passed: each adds its sum to the user's
    /// emitted totals and writes `<user> <window start> <sum>` to the sink.
    fn advance_watermark(&mut self, watermark: i64) -> Result<()> {
        let (sum, emitted) = (self.states.window_sum, self.states.emitted);
        let sink = &mut self.sink;
        self.timers
            .advance_watermark(&mut self.backend, watermark, |b, _, timer| {
                let result = b.reducing(&sum).namespace(&timer.namespace).get()?;
                b.reducing(&sum).namespace(&timer.namespace).clear()?;
                let (n, total) = b.value(&emitted).get()?.unwrap_or((0, 0));
                b.value(&emitted)
                    .update((n + 1, total + result.unwrap_or(0)))?;
                let line = format!(
                    "{} {} {}\n",
                    timer.key,
                    timer.namespace.start,
                    result.unwrap_or(0)
                );
                sink.write(line.as_bytes())
            })?;
        Ok(())
    }
}

impl Task {
    fn process(&mut self, e: &Event, offset: u64) -> Result<()> {
        let (b, s) = (&mut self.backend, &self.states);
        b.set_current_key(&e.user);
        b.value(&s.last_event).update(offset)?;
        let window = window_of(offset);
        b.reducing(&s.window_sum).namespace(&window).add(e.amount)?;
        self.timers
            .register_event_time_timer(b, &window, window.end - 1)?;
        let n = b.value(&s.count).get()?.unwrap_or(0);
        b.value(&s.count).update(n + 1)?;
        b.list(&s.recent).add(e.page)?;
        if n as usize + 1 > RECENT_PAGES {
            let mut pages = b.list(&s.recent).get()?;
            let excess = pages.len() - RECENT_PAGES;
            pages.drain(..excess);
            b.list(&s.recent).update(pages)?;
        }
        let v = b.map(&s.visits).get(&e.page)?.unwrap_or(0);
        b.map(&s.visits).put(e.page, v + 1)?;
        b.reducing(&s.total).add(e.amount)?;
        b.aggregating(&s.average).add(e.amount)?;
        Ok(())
    }
}

/// The running job: the source (its offset in operator state) and the keyed tasks.
struct Job {
    parallelism: u32,
    max_parallelism: u32,
    tasks: Vec<Task>,
    source: OperatorStateStore,
    offset_state: OperatorListState<u64>,
    offset: u64,
}

fn offset_descriptor() -> ListStateDescriptor<u64> {
    ListStateDescriptor::<u64>::new("source-offset")
}

impl Job {
    fn fresh(backends: &Backends, parallelism: u32, max_parallelism: u32) -> Result<Job> {
        backends.next_job();
        let mut tasks = Vec::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_operator(max_parallelism, parallelism, i)?;
            let config = backends.config(max_parallelism, range, i);
            let files = backends.files(i, parallelism)?;
            tasks.push(Task::new(
                Backend::<u64>::open(config)?,
                OperatorStateStore::new(),
                files,
            )?);
        }
        let mut source = OperatorStateStore::new();
        let offset_state = source.list_state(&offset_descriptor())?;
        Ok(Job {
            parallelism,
            max_parallelism,
            tasks,
            source,
            offset_state,
            offset: 0,
        })
    }

    /// Restores the job at `parallelism` from checkpoint `done`.
    fn restore(
        backends: &Backends,
        storage: &Arc<dyn CheckpointStorage>,
        done: &CompletedCheckpoint,
        parallelism: u32,
        max_parallelism: u32,
    ) -> DemoResult<Job> {
        backends.next_job();
        let mut tasks = Vec::new();
        for i in 0..parallelism {
            let range = KeyGroupRange::for_operator(max_parallelism, parallelism, i)?;
            let config = backends.config(max_parallelism, range, i);
            // Canonical files (heap) and native snapshots (LSM, incremental) alike: the LSM
            // backend links the tables of its own checkpoints. The operator state holds the
            // sink's transactions, redistributed over the new parallelism.
            let task = TaskId::new(OPERATOR, i, parallelism);
            let restored = restore_task::<u64>(config, &**storage, done, &task)?;
            let files = backends.files(i, parallelism)?;
            tasks.push(Task::new(restored.backend, restored.operator_state, files)?);
        }
        let handle = done
            .operator_handles("source", 0)
            .first()
            .cloned()
            .ok_or("the checkpoint has no source state")?;
        let snapshot = read_operator_state(&**storage, &handle)?;
        let mut source = OperatorStateStore::restore(&[&snapshot], 1, 0)?;
        let offset_state = source.list_state(&offset_descriptor())?;
        let offset = source
            .list(&offset_state)
            .get()?
            .first()
            .copied()
            .ok_or("the source state has no offset")?;
        Ok(Job {
            parallelism,
            max_parallelism,
            tasks,
            source,
            offset_state,
            offset,
        })
    }

    fn route(&self, user: u64) -> usize {
        operator_index_of(&user, self.max_parallelism, self.parallelism) as usize
    }
}

/// A checkpoint whose asynchronous phases are running.
struct InFlight {
    id: CheckpointId,
    sync: Duration,
    /// The sinks' pre-commits (flush and fsync of each task's output file), before the
    /// synchronous phase.
    pre_commit: Duration,
    writers: Vec<JoinHandle<Result<TaskSnapshotResult>>>,
    source: OperatorStateHandle,
}

#[derive(Default)]
struct Figures {
    processed: u64,
    busy: Duration,
    checkpoints: u64,
    sync: Vec<Duration>,
    pre_commit: Vec<Duration>,
    asynchronous: Vec<Duration>,
    bytes: u64,
    restores: Vec<(u32, u32, Duration, u64)>,
    /// Per completed checkpoint: what it added and referenced, and `shared/` after it.
    per_checkpoint: Vec<CheckpointFigures>,
}

/// What one checkpoint wrote and referenced.
#[derive(Debug, Default)]
struct CheckpointFigures {
    id: u64,
    /// Bytes the checkpoint added: its own files and the shared files it published.
    new_bytes: u64,
    /// Shared files (and their bytes) it references, new ones included.
    shared_files: u64,
    shared_bytes: u64,
    /// Files and bytes in `shared/` once it completed (and older checkpoints were subsumed).
    shared_dir_files: u64,
    shared_dir_bytes: u64,
}

fn compression(name: &str) -> DemoResult<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd { level: 3 },
        other => return Err(format!("unknown compression '{other}' (none, lz4, zstd)").into()),
    })
}

/// Starts checkpoint `id` of `job`: the synchronous phase of every task, the source offset
/// written, the asynchronous phases on their own threads.
fn start_checkpoint(
    job: &mut Job,
    id: CheckpointId,
    storage: &Arc<dyn CheckpointStorage>,
    compression: Compression,
) -> Result<InFlight> {
    // The sinks first: each task's transaction is pre-committed and kept in the operator
    // state that the task's snapshot then copies.
    let started = Instant::now();
    for task in &mut job.tasks {
        task.sink.pre_commit(&mut task.operator_state, id)?;
    }
    let pre_commit = started.elapsed();
    let started = Instant::now();
    let mut pendings = Vec::new();
    let parallelism = job.parallelism;
    for (i, task) in job.tasks.iter_mut().enumerate() {
        let task_id = TaskId::new(OPERATOR, i as u32, parallelism);
        let pending = snapshot_task(
            &mut task.backend,
            &task.operator_state,
            &task_id,
            id,
            storage,
        )?
        .with_compression(compression);
        pendings.push(pending);
    }
    job.source
        .list(&job.offset_state)
        .update(vec![job.offset])?;
    let source_snapshot = job.source.snapshot();
    let sync = started.elapsed();
    let source = write_operator_state(
        &**storage,
        &SnapshotTarget::checkpoint(id),
        "source-0",
        &source_snapshot,
    )?;
    let writers = pendings
        .into_iter()
        .map(|p| std::thread::spawn(move || p.run()))
        .collect();
    Ok(InFlight {
        id,
        sync,
        pre_commit,
        writers,
        source,
    })
}

/// Waits for the asynchronous phases of `flight` and completes the checkpoint.
fn finish_checkpoint(
    flight: InFlight,
    job: &mut Job,
    storage: &Arc<dyn CheckpointStorage>,
    max_parallelism: u32,
    figures: &mut Figures,
) -> DemoResult<()> {
    let mut tasks =
        vec![SubtaskState::new("source", 0, 1, max_parallelism).with_operator(flight.source)];
    let mut slowest = Duration::ZERO;
    let mut this = CheckpointFigures {
        id: flight.id.0,
        ..CheckpointFigures::default()
    };
    for writer in flight.writers {
        let result = writer
            .join()
            .map_err(|_| "an asynchronous phase panicked")??;
        figures.bytes += result.stats.new_bytes();
        this.new_bytes += result.stats.new_bytes();
        this.shared_files += result.stats.shared_files;
        this.shared_bytes += result.stats.shared_bytes;
        slowest = slowest.max(result.stats.duration);
        tasks.push(result.state);
    }
    storage.complete_checkpoint(flight.id, tasks)?;
    for task in &mut job.tasks {
        task.backend.notify_checkpoint_complete(flight.id)?;
        task.sink
            .notify_checkpoint_complete(&mut task.operator_state, flight.id)?;
    }
    let references = storage.shared_file_references()?;
    this.shared_dir_files = references.len() as u64;
    for path in references.keys() {
        let file = StateFile::new(path.clone(), 0)?;
        if let Some(local) = storage.local_path(&file)? {
            this.shared_dir_bytes += std::fs::metadata(&local)
                .map_err(|e| format!("cannot read {}: {e}", local.display()))?
                .len();
        }
    }
    figures.per_checkpoint.push(this);
    figures.checkpoints += 1;
    figures.sync.push(flight.sync);
    figures.pre_commit.push(flight.pre_commit);
    figures.asynchronous.push(slowest);
    Ok(())
}

/// Prints a line above the progress bar, or plainly when there is none.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// The file that marks a directory as the demo's own: only such a directory (or an empty or
/// missing one) is emptied at start.
pub const DEMO_MARKER: &str = ".flowstate-demo";

/// Empties `dir` for a new run if the demo made it (it holds [`DEMO_MARKER`]) or it is empty,
/// creating it if missing; refuses any other directory, and a file, deleting nothing.
fn prepare_dir(dir: &std::path::Path) -> DemoResult<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display()).into()),
        Ok(meta) if !meta.is_dir() => {
            return Err(format!(
                "{} exists and is not a directory: give --dir a new or empty directory",
                dir.display()
            )
            .into())
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let empty = entries.next().is_none();
            if !empty {
                if !dir.join(DEMO_MARKER).is_file() {
                    return Err(format!(
                        "{} is not empty and was not made by the demo (no {DEMO_MARKER} in it): \
                         give --dir a new or empty directory; nothing was deleted",
                        dir.display()
                    )
                    .into());
                }
                std::fs::remove_dir_all(dir)
                    .map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "made by `flowstate demo`: emptied by the next demo run with this --dir\n",
    )
    .map_err(|e| format!("cannot mark {}: {e}", dir.display()))?;
    Ok(())
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> DemoResult<()> {
    if args.keys == 0 || args.events == 0 || args.checkpoint_every == 0 {
        return Err("--keys, --events and --checkpoint-every must be at least 1".into());
    }
    let mp = args.max_parallelism;
    if mp == 0 || mp > flowstate::key_group::UPPER_BOUND_MAX_PARALLELISM {
        return Err(format!(
            "--max-parallelism must be 1 to {}, not {mp}",
            flowstate::key_group::UPPER_BOUND_MAX_PARALLELISM
        )
        .into());
    }
    for (flag, p) in [
        ("--parallelism", args.parallelism),
        ("--rescale-to", args.rescale_to),
    ] {
        if p == 0 || p > mp {
            return Err(format!("{flag} must be 1 to the max parallelism ({mp}), not {p}").into());
        }
    }
    let compression = compression(&args.compression)?;
    prepare_dir(&args.dir)?;
    let options = FsCheckpointOptions::default().with_retained(2);
    if let Some(url) = &args.checkpoints {
        crate::which::prepare_demo_root(url)?;
    }
    let open_storage = || -> DemoResult<Arc<dyn CheckpointStorage>> {
        Ok(match &args.checkpoints {
            Some(url) => Arc::new(crate::which::open_url_owner(url, options.clone())?),
            None => Arc::new(FsCheckpointStorage::open_local(&args.dir, options.clone())?),
        })
    };
    let mut storage = open_storage()?;
    let root = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| args.dir.display().to_string());

    println!(
        "flowstate demo: {} events over {} keys, {} backend, parallelism {} (then {}), \
         checkpoints every {} events into {}, {} failures",
        args.events,
        args.keys,
        args.backend,
        args.parallelism,
        args.rescale_to,
        args.checkpoint_every,
        root,
        args.failures
    );
    // Failure points: spread over the run, chosen from the seed.
    let mut failures: Vec<u64> = (0..u64::from(args.failures))
        .map(|i| {
            let span = args.events / (u64::from(args.failures) + 1);
            span * (i + 1) + mix(args.seed ^ (i + 99)) % span.max(1) / 2
        })
        .collect();
    failures.sort_unstable();

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.events).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events ({per_sec}) {msg}",
            )?
            .progress_chars("=> "),
        )
    };

    let started = Instant::now();
    let mut figures = Figures::default();
    let backends = Backends::new(args);
    let mut job = Job::fresh(&backends, args.parallelism, args.max_parallelism)?;
    let mut next_id = 1u64;
    let mut in_flight: Option<InFlight> = None;
    let mut failures_done = 0usize;
    let mut chunk = Instant::now();
    while job.offset < args.events {
        if failures_done < failures.len() && job.offset == failures[failures_done] {
            // Crash: the tasks and their in-memory state are gone, and so is any checkpoint
            // that was still being written.
            figures.busy += chunk.elapsed();
            if let Some(flight) = in_flight.take() {
                for w in flight.writers {
                    let _ = w.join();
                }
            }
            drop(job);
            failures_done += 1;
            let parallelism = if failures_done == 2 {
                args.rescale_to
            } else {
                args.parallelism
            };
            say(
                &bar,
                format!(
                    "failure {failures_done} after event {}: restoring at parallelism {parallelism}",
                    failures[failures_done - 1]
                ),
            );
            let t = Instant::now();
            // A new process opens the storage again: incomplete checkpoints are cleaned up.
            storage = open_storage()?;
            job = match storage.latest_completed()? {
                Some(done) => Job::restore(
                    &backends,
                    &storage,
                    &done,
                    parallelism,
                    args.max_parallelism,
                )?,
                None => Job::fresh(&backends, parallelism, args.max_parallelism)?,
            };
            let took = t.elapsed();
            let mut entries = 0u64;
            for t in &job.tasks {
                entries += t.backend.entry_count()? as u64;
            }
            say(
                &bar,
                format!(
                    "  restored {entries} entries in {:.1} ms, replaying from offset {}",
                    took.as_secs_f64() * 1e3,
                    job.offset
                ),
            );
            figures
                .restores
                .push((parallelism, failures_done as u32, took, entries));
            chunk = Instant::now();
            continue;
        }
        let e = event_at(args.seed, args.keys, job.offset);
        let task = job.route(e.user);
        backends.clock.set(job.offset);
        job.tasks[task].process(&e, job.offset)?;
        // The offset is the event time and the stream is in order: the watermark is the
        // offset, and every task sees it advance.
        for t in &mut job.tasks {
            t.advance_watermark(job.offset as i64)?;
        }
        job.offset += 1;
        figures.processed += 1;
        if job.offset % args.checkpoint_every == 0 {
            if let Some(flight) = in_flight.take() {
                finish_checkpoint(
                    flight,
                    &mut job,
                    &storage,
                    args.max_parallelism,
                    &mut figures,
                )?;
            }
            in_flight = Some(start_checkpoint(
                &mut job,
                CheckpointId(next_id),
                &storage,
                compression,
            )?);
            next_id += 1;
        }
        if job.offset % 4_096 == 0 {
            // Complete the checkpoint in flight as soon as every asynchronous phase is done,
            // as a job manager does when the last acknowledgement arrives.
            if in_flight
                .as_ref()
                .is_some_and(|f| f.writers.iter().all(JoinHandle::is_finished))
            {
                if let Some(flight) = in_flight.take() {
                    finish_checkpoint(
                        flight,
                        &mut job,
                        &storage,
                        args.max_parallelism,
                        &mut figures,
                    )?;
                }
            }
            bar.set_position(job.offset);
        }
    }
    figures.busy += chunk.elapsed();
    if let Some(flight) = in_flight.take() {
        finish_checkpoint(
            flight,
            &mut job,
            &storage,
            args.max_parallelism,
            &mut figures,
        )?;
    }
    if job.offset % args.checkpoint_every != 0 {
        // The end of the input: a final checkpoint, so that the sinks commit the last window
        // results (as Flink's final checkpoint at the end of a bounded input).
        let flight = start_checkpoint(&mut job, CheckpointId(next_id), &storage, compression)?;
        finish_checkpoint(
            flight,
            &mut job,
            &storage,
            args.max_parallelism,
            &mut figures,
        )?;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let checked = verify(args, &mut job, &backends.output_dir)?;
    print_summary(args, &job, &figures, elapsed, checked);
    Ok(())
}

/// What the check verified: keys, and window results read back from the committed files.
struct Checked {
    keys: u64,
    results: u64,
    files: u64,
}

/// Checks every key against a tally of the whole stream computed without any state backend,
/// and the committed output files: every fired window's result exactly once.
fn verify(args: &DemoArgs, job: &mut Job, output_dir: &std::path::Path) -> DemoResult<Checked> {
    let mut events = vec![0u64; args.keys as usize];
    let mut totals = vec![0i64; args.keys as usize];
    let mut last = vec![None; args.keys as usize];
    // Per user: the windows that fired by the end (their end - 1 <= the last watermark) and
    // the sum of their amounts, by window start; the amounts of the window still open.
    let watermark = args.events.saturating_sub(1) as i64;
    let mut fired = vec![std::collections::BTreeMap::<i64, i64>::new(); args.keys as usize];
    let mut open = vec![std::collections::BTreeMap::<i64, i64>::new(); args.keys as usize];
    for offset in 0..args.events {
        let e = event_at(args.seed, args.keys, offset);
        events[e.user as usize] += 1;
        totals[e.user as usize] += e.amount;
        last[e.user as usize] = Some(offset);
        let w = window_of(offset);
        if w.end - 1 <= watermark {
            *fired[e.user as usize].entry(w.start).or_default() += e.amount;
        } else {
            *open[e.user as usize].entry(w.start).or_default() += e.amount;
        }
    }
    // The clock stands at the last event: a session lives if its user's last event is less
    // than the gap before it.
    let now = args.events.saturating_sub(1);
    let mut checked = 0;
    for user in 0..args.keys {
        let index = job.route(user);
        let task = &mut job.tasks[index];
        let (b, s) = (&mut task.backend, &task.states);
        b.set_current_key(&user);
        let n = events[user as usize];
        let total = totals[user as usize];
        let got = b.value(&s.count).get()?.unwrap_or(0);
        if got != n {
            return Err(format!("key {user}: count {got}, expected {n}: not exactly-once").into());
        }
        let sum = b.reducing(&s.total).get()?;
        if sum != (n > 0).then_some(total) {
            return Err(format!("key {user}: total {sum:?}, expected {total}").into());
        }
        let visits: u64 = b.map(&s.visits).values()?.into_iter().sum();
        if visits != n {
            return Err(format!("key {user}: {visits} visits in the map, expected {n}").into());
        }
        let windows = &fired[user as usize];
        let want = (windows.len() as u64, windows.values().sum::<i64>());
        let got = b.value(&s.emitted).get()?.unwrap_or((0, 0));
        if got != want {
            return Err(format!(
                "key {user}: {} windows emitted with sum {}, expected {} with sum {}: window \
                 results not exactly-once",
                got.0, got.1, want.0, want.1
            )
            .into());
        }
        for (&start, &sum) in &open[user as usize] {
            let w = TimeWindow::new(start, start + WINDOW_MS as i64);
            let pending = b.reducing(&s.window_sum).namespace(&w).get()?;
            if pending != Some(sum) {
                return Err(format!(
                    "key {user}: open window {start}: {pending:?}, expected {sum}"
                )
                .into());
            }
        }
        let session = last[user as usize].filter(|l| now < l + SESSION_GAP_MS);
        let got = b.value(&s.last_event).get()?;
        if got != session {
            return Err(format!(
                "key {user}: session state {got:?}, expected {session:?} (TTL {SESSION_GAP_MS} ms)"
            )
            .into());
        }
        let pages = b.list(&s.recent).get()?.len() as u64;
        if pages != n.min(RECENT_PAGES as u64) {
            return Err(format!("key {user}: {pages} recent pages").into());
        }
        if n > 0 {
            let mean = b.aggregating(&s.average).get()?.unwrap_or(f64::NAN);
            let want = total as f64 / n as f64;
            if (mean - want).abs() > 1e-9 * want.abs().max(1.0) {
                return Err(format!("key {user}: average {mean}, expected {want}").into());
            }
        }
        checked += 1;
    }
    // The committed output: each line a fired window's result, each exactly once.
    let (mut results, mut files) = (0u64, 0u64);
    for file in committed_files(output_dir)? {
        files += 1;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for line in text.lines() {
            let parsed: Vec<i64> = line
                .split(' ')
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| format!("{}: bad line {line:?}: {e}", file.display()))?;
            let &[user, start, sum] = parsed.as_slice() else {
                return Err(format!("{}: bad line {line:?}", file.display()).into());
            };
            let want = usize::try_from(user)
                .ok()
                .and_then(|u| fired.get_mut(u))
                .and_then(|windows| windows.remove(&start));
            if want != Some(sum) {
                return Err(format!(
                    "{}: window result {line:?} is {}: the output is not exactly-once",
                    file.display(),
                    match want {
                        None => "a duplicate or was never fired".to_string(),
                        Some(w) => format!("wrong (expected sum {w})"),
                    }
                )
                .into());
            }
            results += 1;
        }
    }
    if let Some((user, windows)) = fired.iter().enumerate().find(|(_, w)| !w.is_empty()) {
        return Err(format!(
            "user {user}: {} fired window result(s) missing from the committed output \
             (first: window {:?})",
            windows.len(),
            windows.keys().next()
        )
        .into());
    }
    Ok(Checked {
        keys: checked,
        results,
        files,
    })
}

fn stats(samples: &[Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let max = samples.iter().max().copied().unwrap_or_default();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    (mean.as_secs_f64() * 1e3, max.as_secs_f64() * 1e3)
}

fn print_summary(args: &DemoArgs, job: &Job, f: &Figures, elapsed: Duration, checked: Checked) {
    let (sync_mean, sync_max) = stats(&f.sync);
    let (async_mean, async_max) = stats(&f.asynchronous);
    println!();
    println!("{:<44} {:>16}", "metric", "value");
    println!("{:<44} {:>16}", "events in the stream", args.events);
    println!(
        "{:<44} {:>16}",
        "events processed (with replays)", f.processed
    );
    println!(
        "{:<44} {:>16.0}",
        "events/s (processing)",
        f.processed as f64 / f.busy.as_secs_f64()
    );
    println!("{:<44} {:>16.2}", "wall time (s)", elapsed.as_secs_f64());
    println!("{:<44} {:>16}", "checkpoints completed", f.checkpoints);
    println!(
        "{:<44} {:>16.3}",
        "sync phase mean (ms, all tasks)", sync_mean
    );
    println!("{:<44} {:>16.3}", "sync phase max (ms)", sync_max);
    let (pre_mean, pre_max) = stats(&f.pre_commit);
    println!(
        "{:<44} {:>16}",
        "sink pre-commit mean, max (ms, all tasks)",
        format!("{pre_mean:.3}, {pre_max:.3}")
    );
    println!(
        "{:<44} {:>16.1}",
        "async phase mean (ms, slowest task)", async_mean
    );
    println!("{:<44} {:>16.1}", "async phase max (ms)", async_max);
    println!(
        "{:<44} {:>16.1}",
        "checkpoint bytes written (MiB)",
        f.bytes as f64 / (1024.0 * 1024.0)
    );
    if f.per_checkpoint.iter().any(|c| c.shared_files > 0) {
        println!();
        println!(
            "{:>10} {:>14} {:>16} {:>14} {:>18}",
            "checkpoint", "new (KiB)", "referenced (KiB)", "shared files", "shared/ (KiB)"
        );
        for c in &f.per_checkpoint {
            println!(
                "{:>10} {:>14.1} {:>16.1} {:>14} {:>18}",
                c.id,
                c.new_bytes as f64 / 1024.0,
                c.shared_bytes as f64 / 1024.0,
                c.shared_files,
                format!(
                    "{:.1} in {}",
                    c.shared_dir_bytes as f64 / 1024.0,
                    c.shared_dir_files
                )
            );
        }
        println!();
    }
    for (parallelism, n, took, entries) in &f.restores {
        println!(
            "{:<44} {:>16}",
            format!("restore {n}: parallelism, entries"),
            format!("{parallelism}, {entries}")
        );
        println!(
            "{:<44} {:>16.1}",
            format!("restore {n}: time (ms)"),
            took.as_secs_f64() * 1e3
        );
    }
    println!("{:<44} {:>16}", "final parallelism", job.parallelism);
    println!(
        "{:<44} {:>16}",
        "keys verified against the tally", checked.keys
    );
    println!(
        "{:<44} {:>16}",
        "window results committed (2PC file sink)", checked.results
    );
    println!("{:<44} {:>16}", "committed output files", checked.files);
    println!(
        "\nOK: exactly-once: after {} failure(s) and recovery from checkpoints, every key's five states \
         equal a tally of the stream computed without failures, its event-time windows fired on \
         timers exactly once, and its session state (TTL {} ms of event time) lives exactly if \
         its last event is that recent. The committed output files in {} hold every fired \
         window's result exactly once.",
        f.restores.len(),
        SESSION_GAP_MS,
        args.dir.join("output").display()
    );
}
