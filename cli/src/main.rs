//! `flowstate`: the demo job and the offline tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod convert;
mod demo;
mod dump;
mod exit;
mod inspect;
mod json;
mod list;
mod lsm_tool;
mod progress;
mod verify;
mod which;

/// flowstate: a state-backend storage engine for stream processors.
#[derive(Parser, Debug)]
#[command(name = "flowstate", version, about, after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a checkpointed keyed job that fails and recovers, and check it is exactly-once.
    Demo(demo::DemoArgs),
    /// Show what a checkpoint or savepoint holds: tasks, handles, files, states (read-only).
    Inspect(inspect::InspectArgs),
    /// Read every byte of the retained checkpoints (or one checkpoint or savepoint), check
    /// checksums and structure, and report every problem.
    Verify(verify::VerifyArgs),
    /// Print the keyed and operator state of a checkpoint or savepoint, decoded through its
    /// codecs (--json for JSON lines).
    Dump(dump::DumpArgs),
    /// List the completed checkpoints of a root with their sizes (read-only).
    Checkpoints(list::ListArgs),
    /// List the savepoints under a root with their kind and size (read-only).
    Savepoints(list::ListArgs),
    /// Rewrite a checkpoint or savepoint of any kind as a canonical savepoint, or as a
    /// checkpoint in a new root that either backend restores.
    Convert(convert::ConvertArgs),
    /// Show an LSM tree's levels and tables (or one table file); --verify reads them whole.
    Lsm(lsm_tool::LsmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => {
            return match demo::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flowstate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Dump(args) => dump::dump(&args),
        Command::Checkpoints(args) => list::checkpoints(&args),
        Command::Savepoints(args) => list::savepoints(&args),
        Command::Convert(args) => convert::convert(&args),
        Command::Lsm(args) => lsm_tool::lsm(&args),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("flowstate: {e}");
            e.exit_code()
        }
    }
}
