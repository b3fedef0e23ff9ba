//! The peer comparison: flowstate's heap and LSM backends against hashbrown shaped like
//! Flink's heap backend, RocksDB configured as Flink's RocksDB backend, and the disk, on
//! Flink's state benchmarks, YCSB-like mixes and a full checkpoint and restore. Writes
//! `benches/REPORT.md` and its charts (`benches/report/*.png`).
//!
//! ```sh
//! cargo run --release -p flowstate-benches --example peers --features peers            # the report
//! cargo run -p flowstate-benches --example peers --features plot -- --quick --out /tmp/r/REPORT.md
//! ```
//!
//! Without the `peers` feature RocksDB is not built and its rows say so; without `plot` (which
//! `peers` enables) the report has tables only.
//!
//! Options: `--quick` (small sizes, one short run: what CI runs), `--runs N`, `--keys N`,
//! `--ycsb-records N`, `--checkpoint-entries N`, `--budget-ms N` (per store, workload and
//! run), `--only value,list,map,ycsb,checkpoint`, `--stores heap,lsm,hashbrown,rocksdb,disk`
//! (all by default; a subset for profiling one store), `--out PATH` (default
//! `benches/REPORT.md`; charts go to `report/` beside it), `--dir PATH` (where the stores'
//! files go; default a new directory under the system's temporary directory, deleted after).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use flowstate_benches::peers::{self, report, Family, PeerResult, Settings, StoreKind};

struct Args {
    settings: Settings,
    out: PathBuf,
    dir: Option<PathBuf>,
    command: String,
}

/// The items of `all` named in the comma-separated `list` given to `option`.
fn pick<T: Copy, const N: usize>(
    option: &str,
    list: &str,
    all: [T; N],
    name: fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    list.split(',')
        .map(|wanted| {
            all.into_iter()
                .find(|&item| name(item) == wanted)
                .ok_or_else(|| format!("{option}: unknown name {wanted}"))
        })
        .collect()
}

fn parse() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let quick = raw.iter().any(|a| a == "--quick");
    let mut settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("REPORT.md");
    let mut dir = None;
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |v: String| {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{v}: {e}"))
        };
        match arg.as_str() {
            "--quick" => {}
            "--runs" => settings.runs = number(value(arg)?)?.max(1),
            "--keys" => settings.keys = number(value(arg)?)?.max(1),
            "--ycsb-records" => settings.ycsb_records = number(value(arg)?)?.max(2),
            "--checkpoint-entries" => settings.checkpoint_entries = number(value(arg)?)?.max(1),
            "--budget-ms" => settings.budget = Duration::from_millis(number(value(arg)?)? as u64),
            "--only" => settings.families = pick(arg, &value(arg)?, Family::ALL, Family::name)?,
            "--stores" => {
                settings.stores = pick(arg, &value(arg)?, StoreKind::ALL, StoreKind::name)?
            }
            "--out" => out = PathBuf::from(value(arg)?),
            "--dir" => dir = Some(PathBuf::from(value(arg)?)),
            "--help" | "-h" => return Err(HELP.into()),
            other => return Err(format!("unknown argument {other}\n{HELP}")),
        }
    }
    let features = if cfg!(feature = "peers") {
        " --features peers"
    } else if cfg!(feature = "plot") {
        " --features plot"
    } else {
        ""
    };
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let args = if raw.is_empty() {
        String::new()
    } else {
        format!(" -- {}", raw.join(" "))
    };
    let command =
        format!("cargo run{release} -p flowstate-benches --example peers{features}{args}");
    Ok(Args {
        settings,
        out,
        dir,
        command,
    })
}

const HELP: &str = "usage: peers [--quick] [--runs N] [--keys N] [--ycsb-records N] \
[--checkpoint-entries N] [--budget-ms N] [--only value,list,map,ycsb,checkpoint] [--stores heap,lsm,hashbrown,rocksdb,disk] [--out PATH] \
[--dir PATH]";

/// Draws the charts next to the report; returns them as (title, relative path), or why none.
#[cfg(feature = "plot")]
fn charts(
    results: &[peers::WorkloadResult],
    out: &std::path::Path,
) -> (Vec<(String, String)>, Option<String>) {
    if let Err(why) = peers::chart::available() {
        return (Vec::new(), Some(format!("not drawn: {why}")));
    }
    let dir = out
        .parent()
        .map_or_else(|| PathBuf::from("report"), |p| p.join("report"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return (
            Vec::new(),
            Some(format!("not drawn: {}: {e}", dir.display())),
        );
    }
    let mut done = Vec::new();
    let mut errors = Vec::new();
    type Draw = fn(&[peers::WorkloadResult], &std::path::Path) -> PeerResult<()>;
    let list: [(&str, &str, Draw); 2] = [
        ("headline ratios", "ratios.png", peers::chart::ratio_chart),
        (
            "throughput per store",
            "throughput.png",
            peers::chart::throughput_chart,
        ),
    ];
    for (title, file, draw) in list {
        match draw(results, &dir.join(file)) {
            Ok(()) => done.push((title.to_owned(), format!("report/{file}"))),
            Err(e) => errors.push(format!("{file}: {e}")),
        }
    }
    let note = (!errors.is_empty()).then(|| format!("failed: {}", errors.join("; ")));
    (done, note)
}

#[cfg(not(feature = "plot"))]
fn charts(
    _results: &[peers::WorkloadResult],
    _out: &std::path::Path,
) -> (Vec<(String, String)>, Option<String>) {
    (
        Vec::new(),
        Some("not drawn: built without --features plot (or peers)".into()),
    )
}

fn run(args: Args) -> PeerResult<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("flowstate-peers-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let load_before = report::load_average();
    let started = SystemTime::now();
    let clock = Instant::now();
    eprintln!("[peers] working in {}", dir.display());
    let results = peers::run_all(&args.settings, &dir)?;
    let elapsed = clock.elapsed();
    let (charts, chart_note) = charts(&results, &args.out);
    let ctx = report::Context {
        settings: args.settings.clone(),
        command: args.command.clone(),
        load_before,
        load_after: report::load_average(),
        started,
        elapsed,
        charts,
        chart_note,
    };
    let text = report::render(&results, &ctx);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &text)?;
    eprintln!(
        "[peers] wrote {} in {:.1} s",
        args.out.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peers: {e}");
            ExitCode::FAILURE
        }
    }
}
