//! `flowstate`: the demo job and (as they arrive) the offline tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowstate: {e}");
            ExitCode::FAILURE
        }
    }
}
