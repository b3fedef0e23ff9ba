//! Verification of a completed checkpoint or savepoint: every byte of every file it lists is
//! read and checked, and every damaged place is reported (file, byte offset, what failed),
//! never only the first.
//!
//! What is checked, per file:
//!
//! - the file is a regular file inside the storage, of the size and (where the handle records
//!   one) the CRC-32C its checkpoint lists: a file swapped for another, even a valid one of the
//!   same size, fails here;
//! - a canonical snapshot file: header, meta block, index and footer, then every key group's
//!   blocks (each block's CRC, its structure, and that every entry's key hashes to the key
//!   group it is filed under); a damaged key group does not stop the others from being read;
//! - an operator state file: framing and every state's block;
//! - a native LSM snapshot: the snapshot file, every table it lists (size, CRC-32C against the
//!   handle and the snapshot record, then the table's own blocks where its content differs),
//!   and every key group read through the tables.
//!
//! `flowstate verify` prints this report; an embedder can run it before trusting a checkpoint
//! it did not write.

use std::fmt;

use flowstate_formats::checkpoint::KeyedHandleKind;
use flowstate_formats::operator::OperatorStateReader;
use flowstate_formats::snapshot::SnapshotReader;
use flowstate_formats::table::TableReader;

use crate::checkpoint::{
    ChainRestoreSource, CheckpointStorage, CompletedCheckpoint, KeyedStateHandle,
    OperatorStateHandle, StateFile,
};
use crate::lsm::native_restore::NativeRestoreSource;
use crate::snapshot::RestoreSource;
use crate::{key_group_for, Error};

/// One damaged place: the file, the byte offset of the damaged block or structure where it
/// is known, and what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file's path in the checkpoint storage.
    pub file: String,
    /// The byte offset of the damaged block or structure, where the check knows it.
    pub offset: Option<u64>,
    /// What failed, as the check reported it.
    pub what: String,
}

impl Damage {
    fn of(file: &str, error: &Error) -> Damage {
        let offset = match error {
            Error::Format(e) => e.offset(),
            _ => None,
        };
        let what = error.to_string();
        // Format errors start with the file's name, which the damage holds already.
        let what = match what.strip_prefix(file).and_then(|w| w.strip_prefix(": ")) {
            Some(rest) => rest.to_owned(),
            None => what,
        };
        Damage {
            file: file.to_owned(),
            offset,
            what,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at byte {offset}: {}", self.file, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// What verifying one checkpoint or savepoint found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read in full and found sound.
    pub files: u64,
    /// Keyed entries read from the sound key groups.
    pub keyed_entries: u64,
    /// Every damaged place found, in the order the files are listed.
    pub damage: Vec<Damage>,
}

impl VerifyReport {
    /// Whether nothing is damaged.
    pub fn is_ok(&self) -> bool {
        self.damage.is_empty()
    }

    fn push(&mut self, file: &str, error: &Error) {
        self.damage.push(Damage::of(file, error));
    }
}

/// Verifies every file of `checkpoint` (a checkpoint or savepoint loaded from `storage`) and
/// reports every damaged place. Never fails: a file that cannot be opened is damage too.
pub fn verify_checkpoint(
    storage: &dyn CheckpointStorage,
    checkpoint: &CompletedCheckpoint,
) -> VerifyReport {
    verify_checkpoint_with_progress(storage, checkpoint, &mut |_| {})
}

/// The number of handles (keyed and operator) of `checkpoint`: the steps
/// [`verify_checkpoint_with_progress`] reports.
pub fn handle_count(checkpoint: &CompletedCheckpoint) -> u64 {
    checkpoint
        .tasks()
        .iter()
        .map(|t| (t.keyed.len() + t.operator.len()) as u64)
        .sum()
}

/// [`verify_checkpoint`], calling `progress` with the number of handles verified so far after
/// each one (up to [`handle_count`]), for a progress bar.
pub fn verify_checkpoint_with_progress(
    storage: &dyn CheckpointStorage,
    checkpoint: &CompletedCheckpoint,
    progress: &mut dyn FnMut(u64),
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut done = 0u64;
    for task in checkpoint.tasks() {
        for handle in &task.keyed {
            match handle.kind() {
                KeyedHandleKind::KeyGroupFiles => {
                    for file in handle.files() {
                        verify_canonical(storage, file, &mut report);
                    }
                }
                KeyedHandleKind::LsmNative => verify_native(storage, handle, &mut report),
                KeyedHandleKind::HeapChain => {
                    let damaged_before = report.damage.len();
                    for file in handle.shared_files() {
                        verify_canonical(storage, file, &mut report);
                    }
                    // Sound files that do not make a chain (out of order, mixed bases).
                    if report.damage.len() == damaged_before {
                        if let Err(e) = ChainRestoreSource::open(storage, handle) {
                            let first = handle.shared_files().first().map_or("", |f| f.path());
                            report.push(first, &e);
                        }
                    }
                }
            }
            done += 1;
            progress(done);
        }
        for handle in &task.operator {
            verify_operator_state(storage, handle, &mut report);
            done += 1;
            progress(done);
        }
    }
    report
}

/// Opens `file` checked against its handle; if the whole-file check fails, records it and
/// opens the file unchecked so that its blocks can still be located. `None` if the file
/// cannot be opened at all (recorded).
fn open_for_verify(
    storage: &dyn CheckpointStorage,
    file: &StateFile,
    report: &mut VerifyReport,
) -> Option<Box<dyn crate::storage::ReadableFile>> {
    match storage.open_state_file(file) {
        Ok(source) => Some(source),
        Err(e) => {
            report.push(file.path(), &e);
            storage.open_state_file_unchecked(file).ok()
        }
    }
}

/// Reads every key group of a canonical snapshot file, recording each damaged one.
fn verify_canonical(storage: &dyn CheckpointStorage, file: &StateFile, report: &mut VerifyReport) {
    let damaged_before = report.damage.len();
    let Some(source) = open_for_verify(storage, file, report) else {
        return;
    };
    let reader = match SnapshotReader::open(source, file.path()) {
        Ok(reader) => reader,
        Err(e) => return report.push(file.path(), &e.into()),
    };
    if let Err(e) = file.check_origin(reader.origin()) {
        report.push(file.path(), &e);
    }
    let max_parallelism = reader.meta().max_parallelism;
    let mut entries = 0u64;
    for kg in reader.key_group_range() {
        let mut misplaced = 0u64;
        let read = reader.read_key_group::<flowstate_formats::FormatError>(kg, |e| {
            if key_group_for(e.key, max_parallelism) != kg {
                misplaced += 1;
            }
            Ok(())
        });
        match read {
            Ok(n) => entries += n,
            Err(e) => report.push(file.path(), &e.into()),
        }
        if misplaced > 0 {
            report.damage.push(Damage {
                file: file.path().to_owned(),
                offset: reader.location(kg).map(|l| l.offset),
                what: format!(
                    "{misplaced} entries of key group {kg} have keys that hash to another key group"
                ),
            });
        }
    }
    if report.damage.len() == damaged_before {
        report.files += 1;
        report.keyed_entries += entries;
    }
}

/// Reads every state of an operator state file, recording each damaged one.
fn verify_operator_state(
    storage: &dyn CheckpointStorage,
    handle: &OperatorStateHandle,
    report: &mut VerifyReport,
) {
    let file = handle.file();
    let damaged_before = report.damage.len();
    let Some(source) = open_for_verify(storage, file, report) else {
        return;
    };
    let reader = match OperatorStateReader::open(source, file.path()) {
        Ok(reader) => reader,
        Err(e) => return report.push(file.path(), &e.into()),
    };
    if let Err(e) = file.check_origin(reader.origin()) {
        report.push(file.path(), &e);
    }
    for index in 0..reader.state_count() {
        if let Err(e) = reader.read_state(index) {
            report.push(file.path(), &e.into());
        }
    }
    if report.damage.len() == damaged_before {
        report.files += 1;
    }
}

/// Verifies a native LSM snapshot: opening it checks every file once; if that fails, each
/// file is checked on its own so that every damaged one is named, with the first damaged
/// block of a damaged table.
fn verify_native(
    storage: &dyn CheckpointStorage,
    handle: &KeyedStateHandle,
    report: &mut VerifyReport,
) {
    let source = match NativeRestoreSource::open(storage, handle) {
        Ok(source) => source,
        Err(first) => {
            let before = report.damage.len();
            let listed = handle.files().iter().chain(handle.shared_files());
            for (index, file) in listed.enumerate() {
                if let Err(e) = storage.open_state_file(file) {
                    report.push(file.path(), &e);
                    // Tables (every file but the snapshot file) have blocks to locate.
                    if index > 0 {
                        locate_table_damage(storage, file, report);
                    }
                }
            }
            if report.damage.len() == before {
                // Every file is sound on its own: the damage is in how they fit together
                // (the snapshot's records against the files, levels, key ranges).
                report.push(handle.files()[0].path(), &first);
            }
            return;
        }
    };
    let snapshot_file = handle.files()[0].path();
    let max_parallelism = source.max_parallelism();
    let damaged_before = report.damage.len();
    let mut entries = 0u64;
    for kg in source.key_group_range().iter() {
        let mut misplaced = 0u64;
        let read = source.read_key_group(kg, &mut |_, e| {
            entries += 1;
            if key_group_for(&e.key, max_parallelism) != kg {
                misplaced += 1;
            }
        });
        if let Err(e) = read {
            report.push(snapshot_file, &e);
        }
        if misplaced > 0 {
            report.damage.push(Damage {
                file: snapshot_file.to_owned(),
                offset: None,
                what: format!(
                    "{misplaced} entries of key group {kg} have keys that hash to another key group"
                ),
            });
        }
    }
    if report.damage.len() == damaged_before {
        report.files += (handle.files().len() + handle.shared_files().len()) as u64;
        report.keyed_entries += entries;
    }
}

/// Reads a table whose whole-content check failed block by block, recording the first block
/// that fails (a table's blocks are found through its index: past a damaged index nothing
/// more can be located).
fn locate_table_damage(
    storage: &dyn CheckpointStorage,
    file: &StateFile,
    report: &mut VerifyReport,
) {
    let Ok(source) = storage.open_state_file_unchecked(file) else {
        return;
    };
    let found = TableReader::open(source, file.path()).and_then(|table| table.verify());
    if let Err(e) = found {
        report.push(file.path(), &e.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_prints_its_offset_when_known() {
        let d = Damage {
            file: "chk-3/a".into(),
            offset: Some(12),
            what: "bad".into(),
        };
        assert_eq!(d.to_string(), "chk-3/a at byte 12: bad");
        let d = Damage { offset: None, ..d };
        assert_eq!(d.to_string(), "chk-3/a: bad");
    }
}
