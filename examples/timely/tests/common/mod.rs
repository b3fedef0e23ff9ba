//! Running the example binary: a job's runs, with a watchdog so that a hung run fails the test
//! instead of hanging it, and the committed output read back.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The example binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_flowstate-timely");

/// A run that has not ended within this is reported as hung (a watchdog, not a timing check:
/// the runs take about a second).
const HUNG_AFTER: Duration = Duration::from_secs(120);

/// The input of every run of the tests' job: small.
pub const SPEC: &[&str] = &[
    "--epochs",
    "10",
    "--records",
    "60",
    "--splits",
    "5",
    "--keys",
    "40",
    "--window",
    "90",
];

/// Starts `flowstate-timely run` with `args` and the tests' input, checkpoints in `dir`,
/// output in `out`.
pub fn start(dir: &Path, out: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(args)
        .args(SPEC)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the example binary starts")
}

/// Waits for `child` to end; kills it and fails if it hangs.
pub fn wait(mut child: Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if started.elapsed() > HUNG_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a run did not end within {HUNG_AFTER:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one process to its end.
pub fn run(dir: &Path, out: &Path, args: &[&str]) -> ExitStatus {
    wait(start(dir, out, args))
}

/// Every line of the committed files of `out` (not the in-progress ones, named `.…`), sorted.
pub fn committed_lines(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(out).expect("the output directory exists") {
        let entry = entry.expect("a readable directory entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("a readable output file");
        lines.extend(text.lines().map(str::to_owned));
    }
    lines.sort();
    lines
}

/// The output of a run of the tests' job without failure, at 2 workers in one process.
pub fn failure_free_output(root: &Path) -> Vec<String> {
    let (dir, out) = (root.join("reference-chk"), root.join("reference-out"));
    assert!(run(&dir, &out, &["--workers", "2"]).success());
    let lines = committed_lines(&out);
    assert!(!lines.is_empty());
    lines
}

/// Runs `flowstate-timely check` on `out`: the committed output equals the model of the job.
pub fn check(out: &Path) -> bool {
    Command::new(BIN)
        .arg("check")
        .arg("--out")
        .arg(out)
        .args(SPEC)
        .status()
        .expect("the example binary starts")
        .success()
}

/// A port on the loopback interface that was free a moment ago (bound to port 0, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
