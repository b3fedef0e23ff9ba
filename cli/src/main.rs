//! `flowstate`: the demo job and (as they arrive) the offline tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod dump;
mod inspect;
mod lsm_tool;
mod verify;
mod which;

/// flowstate: a state-backend storage engine for stream processors.
#[derive(Parser, Debug)]
#[command(name = "flowstate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a checkpointed keyed job that fails and recovers, and check it is exactly-once.
    Demo(demo::DemoArgs),
    /// Show what a checkpoint or savepoint holds: tasks, handles, files, states (read-only).
    Inspect(which::Which),
    /// Read every byte of the retained checkpoints (or one checkpoint or savepoint), check
    /// checksums and structure, and report every problem.
    Verify(verify::VerifyArgs),
    /// Print the keyed and operator state of a checkpoint or savepoint, decoded through its
    /// codecs (--json for JSON lines).
    Dump(dump::DumpArgs),
    /// Show an LSM tree's levels and tables (or one table file); --verify reads them whole.
    Lsm(lsm_tool::LsmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Inspect(which) => inspect::inspect(&which),
        Command::Verify(args) => verify::verify(&args),
        Command::Dump(args) => dump::dump(&args),
        Command::Lsm(args) => lsm_tool::lsm(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowstate: {e}");
            ExitCode::FAILURE
        }
    }
}
