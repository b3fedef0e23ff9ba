//! `flowstate verify`: every byte of every file of the retained checkpoints (or of one
//! checkpoint or savepoint), every damaged place reported, a verdict per snapshot.

use flowstate::verify::{handle_count, verify_checkpoint_with_progress, Damage, VerifyReport};
use flowstate::{CheckpointStorage, CompletedCheckpoint, FsCheckpointStorage};

use flowstate::codec::dynamic::json_literal;

use crate::progress;
use crate::which::{load, open_root, Access, ToolError, ToolResult, Which};

/// Options of `flowstate verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    which: Which,
    /// Print the verdicts and every damaged place as one JSON document on standard output.
    #[arg(long)]
    json: bool,
}

/// What verifying one snapshot found, under its name.
struct Verdict {
    what: String,
    report: VerifyReport,
}

fn damage_json(d: &Damage) -> String {
    format!(
        "{{\"file\":{},\"offset\":{},\"what\":{}}}",
        json_literal(&d.file),
        d.offset
            .map_or_else(|| "null".to_string(), |o| o.to_string()),
        json_literal(&d.what)
    )
}

/// Verifies one snapshot with a progress bar (on a terminal only).
fn verify_one(
    storage: &FsCheckpointStorage,
    done: &CompletedCheckpoint,
    what: &str,
) -> VerifyReport {
    let bar = progress::bar(handle_count(done), &format!("verifying {what}"), "handles");
    let report = verify_checkpoint_with_progress(storage, done, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    report
}

/// `flowstate verify`: reads every byte of every file of the checkpoint or savepoint it is
/// given, or of every retained checkpoint, and reports every damaged place (file, byte offset,
/// what failed), never only the first, then a verdict per snapshot; fails unless nothing is
/// damaged.
pub fn verify(args: &VerifyArgs) -> ToolResult<()> {
    let which = &args.which;
    let mut verdicts = Vec::new();
    if which.savepoint.is_some() || which.checkpoint.is_some() {
        let (storage, done) = load(which)?;
        let what = format!("{:?} {}", done.kind(), done.id().0);
        let report = verify_one(&storage, &done, &what);
        verdicts.push(Verdict { what, report });
    } else {
        let storage = open_root(&which.root, Access::ReadOnly)?;
        let completed = storage.completed()?;
        if completed.is_empty() {
            return Err(ToolError::Usage(format!(
                "no completed checkpoint in {}",
                which.root
            )));
        }
        for id in completed {
            let what = format!("Checkpoint {}", id.0);
            let report = match storage.load_checkpoint(id) {
                Ok(done) => verify_one(&storage, &done, &what),
                Err(e) => VerifyReport {
                    damage: vec![Damage {
                        file: format!("chk-{}/_metadata", id.0),
                        offset: None,
                        what: e.to_string(),
                    }],
                    ..VerifyReport::default()
                },
            };
            verdicts.push(Verdict { what, report });
        }
    }
    let damaged = verdicts.iter().filter(|v| !v.report.is_ok()).count();
    if args.json {
        let items: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let damage: Vec<String> = v.report.damage.iter().map(damage_json).collect();
                format!(
                    "{{\"snapshot\":{},\"ok\":{},\"files\":{},\"keyed_entries\":{},\"damage\":[{}]}}",
                    json_literal(&v.what),
                    v.report.is_ok(),
                    v.report.files,
                    v.report.keyed_entries,
                    damage.join(",")
                )
            })
            .collect();
        println!(
            "{{\"ok\":{},\"snapshots\":[{}]}}",
            damaged == 0,
            items.join(",")
        );
    } else {
        for v in &verdicts {
            for d in &v.report.damage {
                eprintln!("DAMAGED {}: {d}", v.what);
            }
            if v.report.is_ok() {
                println!(
                    "OK: {}: {} file(s), {} keyed entries, every checksum and structure verified",
                    v.what, v.report.files, v.report.keyed_entries
                );
            } else {
                println!(
                    "DAMAGED: {}: {} damaged place(s)",
                    v.what,
                    v.report.damage.len()
                );
            }
        }
    }
    if damaged > 0 {
        return Err(ToolError::Damage(format!(
            "{damaged} of {} snapshot(s) damaged",
            verdicts.len()
        )));
    }
    Ok(())
}
