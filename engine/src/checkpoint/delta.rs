//! Writing a delta file (spec/formats.md 3.11): what changed in a frozen view since an earlier
//! view of the same backend, key group by key group.

use std::io::Write;
use std::time::Instant;

use flowstate_formats::snapshot::{DeltaOf, SnapshotWriter, SnapshotWriterOptions};
use flowstate_formats::Compression;

use super::write::{add_run, snapshot_meta, SnapshotStats};
use crate::error::Result;
use crate::snapshot::{Change, EncodedRun, StateSnapshot};

/// Whether every state of `view` can be written as the changes since the backend's snapshot
/// of epoch `epoch`.
pub(crate) fn diffable(view: &StateSnapshot, epoch: u32) -> bool {
    view.states().iter().all(|s| s.tracks_changes_since(epoch))
}

/// Writes the changes of `view` since the backend's snapshot of epoch `since` (for which
/// [`diffable`] holds) to `out` as a delta file `delta`: per key group, each state's changed
/// entries, then its removals.
pub(crate) fn write_delta<W: Write>(
    view: &StateSnapshot,
    since: u32,
    out: W,
    compression: Compression,
    file_name: &str,
    delta: DeltaOf,
) -> Result<SnapshotStats> {
    let started = Instant::now();
    let meta = snapshot_meta(view);
    let options = SnapshotWriterOptions {
        compression,
        file_name: file_name.to_owned(),
        origin: None,
        delta: Some(delta),
        ..Default::default()
    };
    let mut writer = SnapshotWriter::with_options(out, &meta, options)?;
    let mut changed: Vec<EncodedRun> = view
        .states()
        .iter()
        .map(|_| EncodedRun::default())
        .collect();
    let mut removed: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); view.states().len()];
    let mut key_groups = 0;
    for kg in view.key_group_range().iter() {
        let mut any = false;
        for (i, state) in view.states().iter().enumerate() {
            let (run, gone) = (&mut changed[i], &mut removed[i]);
            run.clear();
            gone.clear();
            state.changes_since(since, kg, &mut |change| match change {
                Change::Changed(e) => run.push_entry(e),
                Change::Removed { key, namespace } => gone.push((key, namespace)),
            })?;
            run.sort();
            gone.sort_unstable();
            any |= !run.is_empty() || !gone.is_empty();
        }
        if !any {
            continue;
        }
        key_groups += 1;
        writer.begin_key_group(kg)?;
        for (index, (run, gone)) in changed.iter().zip(&removed).enumerate() {
            add_run(&mut writer, index as u32, run)?;
            for (key, namespace) in gone {
                writer.add_removal(index as u32, key, namespace)?;
            }
        }
        writer.end_key_group()?;
    }
    let summary = writer.finish()?;
    Ok(SnapshotStats {
        bytes: summary.len,
        entries: summary.entry_count,
        key_groups,
        duration: started.elapsed(),
        ..SnapshotStats::default()
    })
}
