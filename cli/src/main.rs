//! `flowstate`: the demo job and (as they arrive) the offline tools.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use flowstate::*;
use indicatif::{ProgressBar, ProgressStyle};

/// flowstate: a state-backend storage engine for stream processors.
#[derive(Parser, Debug)]
#[command(name = "flowstate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a generated keyed stream through all five state types on the heap backend, taking
    /// snapshots while it runs, then check the state against an independent tally.
    Demo(DemoArgs),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Number of events to generate.
    #[arg(long, default_value_t = 3_000_000)]
    events: u64,
    /// Number of distinct keys (users).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Take a snapshot every this many events (0: never).
    #[arg(long, default_value_t = 500_000)]
    snapshot_every: u64,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Max parallelism (number of key groups).
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    quiet: bool,
}

/// One generated event: a user visits a page and spends an amount.
#[derive(Debug, Clone, Copy)]
struct Event {
    user: u64,
    page: u32,
    amount: i64,
}

/// A deterministic event generator (SplitMix64), skewed so that some users are hot.
struct Stream {
    state: u64,
    keys: u64,
}

impl Stream {
    fn new(seed: u64, keys: u64) -> Self {
        Stream {
            state: seed,
            keys: keys.max(1),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_event(&mut self) -> Event {
        let r = self.next_u64();
        // Half of the events go to the first 1% of users.
        let user = if r & 1 == 0 {
            (r >> 1) % (self.keys / 100).max(1)
        } else {
            (r >> 1) % self.keys
        };
        let r2 = self.next_u64();
        Event {
            user,
            page: (r2 % 50) as u32,
            amount: ((r2 >> 8) % 1000) as i64 - 200,
        }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowstate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    let config = BackendConfig::heap().max_parallelism(args.max_parallelism);
    let mut backend = Backend::<u64>::open(config)?;
    let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
    let recent = backend.register(ListStateDescriptor::<u32>::new("recent-pages"))?;
    let visits = backend.register(MapStateDescriptor::<u32, u64>::new("visits-per-page"))?;
    let total = backend.register(ReducingStateDescriptor::<i64>::new("total", |a, b| a + b))?;
    let average = backend.register(AggregatingStateDescriptor::new("average", Average))?;

    println!(
        "flowstate demo: {} events over {} keys, heap backend, max parallelism {}",
        args.events, args.keys, args.max_parallelism
    );
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

    let mut stream = Stream::new(args.seed, args.keys);
    // An independent tally, kept outside the backend, to check the state at the end.
    let mut expected_events = vec![0u64; args.keys as usize];
    let mut expected_total = vec![0i64; args.keys as usize];
    let mut sync_phases: Vec<Duration> = Vec::new();
    let mut held: Option<(u64, StateSnapshot)> = None;
    let started = Instant::now();
    let mut busy = Duration::ZERO;
    let mut chunk_start = Instant::now();
    for i in 0..args.events {
        let e = stream.next_event();
        expected_events[e.user as usize] += 1;
        expected_total[e.user as usize] += e.amount;

        backend.set_current_key(&e.user);
        let n = backend.value(&count).get()?.unwrap_or(0);
        backend.value(&count).update(n + 1)?;
        backend.list(&recent).add(e.page)?;
        if n as usize + 1 > RECENT_PAGES {
            let mut pages = backend.list(&recent).get()?;
            let excess = pages.len() - RECENT_PAGES;
            pages.drain(..excess);
            backend.list(&recent).update(pages)?;
        }
        let v = backend.map(&visits).get(&e.page)?.unwrap_or(0);
        backend.map(&visits).put(e.page, v + 1)?;
        backend.reducing(&total).add(e.amount)?;
        backend.aggregating(&average).add(e.amount)?;

        if args.snapshot_every > 0 && (i + 1) % args.snapshot_every == 0 {
            busy += chunk_start.elapsed();
            let t = Instant::now();
            let snapshot = backend.snapshot_state()?;
            sync_phases.push(t.elapsed());
            // Hold the snapshot until the next one, as an asynchronous phase would while it
            // writes files: processing goes on against the copy-on-write maps meanwhile.
            if let Some((at, old)) = held.replace((i + 1, snapshot)) {
                check_snapshot(&old, at)?;
            }
            chunk_start = Instant::now();
        }
        if i % 65_536 == 0 {
            bar.set_position(i);
        }
    }
    busy += chunk_start.elapsed();
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    if let Some((at, old)) = held.take() {
        check_snapshot(&old, at)?;
    }

    // Check every key against the tally.
    let mut checked = 0u64;
    for user in 0..args.keys {
        backend.set_current_key(&user);
        let events = expected_events[user as usize];
        let got = backend.value(&count).get()?.unwrap_or(0);
        if got != events {
            return Err(format!("key {user}: count {got}, expected {events}").into());
        }
        let sum = backend.reducing(&total).get()?;
        let want = (events > 0).then_some(expected_total[user as usize]);
        if sum != want {
            return Err(format!("key {user}: total {sum:?}, expected {want:?}").into());
        }
        let visits_sum: u64 = backend.map(&visits).values()?.into_iter().sum();
        if visits_sum != events {
            return Err(format!("key {user}: map visits {visits_sum}, expected {events}").into());
        }
        let pages = backend.list(&recent).get()?.len() as u64;
        if pages != events.min(RECENT_PAGES as u64) {
            return Err(format!(
                "key {user}: {pages} recent pages, expected {}",
                events.min(8)
            )
            .into());
        }
        if events > 0 {
            let mean = backend.aggregating(&average).get()?.unwrap_or(f64::NAN);
            let want = expected_total[user as usize] as f64 / events as f64;
            if (mean - want).abs() > 1e-9 * want.abs().max(1.0) {
                return Err(format!("key {user}: average {mean}, expected {want}").into());
            }
        }
        checked += 1;
    }

    let per_event_ops = 7.0; // get+update, list add, map get+put, reducing add, aggregating add
    println!();
    println!("{:<34} {:>16}", "metric", "value");
    println!("{:<34} {:>16}", "events", args.events);
    println!(
        "{:<34} {:>16.0}",
        "events/s (processing only)",
        args.events as f64 / busy.as_secs_f64()
    );
    println!(
        "{:<34} {:>16.0}",
        "state operations/s",
        args.events as f64 * per_event_ops / busy.as_secs_f64()
    );
    println!("{:<34} {:>16.2}", "wall time (s)", elapsed.as_secs_f64());
    println!("{:<34} {:>16}", "state entries", backend.entry_count());
    println!("{:<34} {:>16}", "snapshots taken", sync_phases.len());
    if !sync_phases.is_empty() {
        let max = sync_phases.iter().max().copied().unwrap_or_default();
        let mean = sync_phases.iter().sum::<Duration>() / sync_phases.len() as u32;
        println!(
            "{:<34} {:>16.1}",
            "sync phase mean (µs)",
            mean.as_secs_f64() * 1e6
        );
        println!(
            "{:<34} {:>16.1}",
            "sync phase max (µs)",
            max.as_secs_f64() * 1e6
        );
    }
    println!("{:<34} {:>16}", "keys verified against tally", checked);
    println!("\nOK: every key's five states match the independent tally; every held snapshot stayed frozen.");
    Ok(())
}

/// Checks that a snapshot held while processing went on still shows the state at the moment it
/// was taken: its total event count equals the number of events processed then.
fn check_snapshot(
    snapshot: &StateSnapshot,
    events_at_snapshot: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let counts = snapshot
        .state("count")
        .ok_or("the snapshot has no 'count' state")?;
    let mut sum = 0u64;
    for kg in snapshot.key_group_range().iter() {
        let mut err = None;
        counts.visit_key_group(kg, &mut |entry| match entry.state {
            EncodedState::Value(bytes) => match u64::decode(&bytes) {
                Ok(v) => sum += v,
                Err(e) => err = Some(e.to_string()),
            },
            other => err = Some(format!("unexpected state {other:?}")),
        });
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    if sum != events_at_snapshot {
        return Err(format!(
            "snapshot taken after {events_at_snapshot} events counts {sum}: it changed after it was taken"
        )
        .into());
    }
    Ok(())
}
