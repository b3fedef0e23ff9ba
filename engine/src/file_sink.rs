//! A transactional file target for [`TwoPhaseCommitSink`](crate::two_phase_commit::TwoPhaseCommitSink):
//! each transaction is a file in one output directory.
//!
//! A transaction is written to a hidden in-progress file `.inprogress-<name>`; pre-commit
//! flushes and syncs it; commit renames it to `<name>` (and syncs the directory) unless `<name>`
//! is already there, so a second commit of the same transaction, by any task of any run, does
//! nothing; abort deletes the in-progress file. Readers of the output read only the files whose
//! name does not start with `.` ([`committed_files`]).
//!
//! Names are `<prefix>-<sequence>`. The prefix must differ between the tasks of a job and
//! between the runs of one task that may both commit: the task index, the parallelism and the
//! checkpoint the run was restored from do (a run commits its own transactions only after a
//! later checkpoint completed, and the next run restores from that one).
//!
//! ```
//! use flowstate::file_sink::{committed_files, FileSink};
//! use flowstate::operator::OperatorStateStore;
//! use flowstate::two_phase_commit::TwoPhaseCommitSink;
//! use flowstate::CheckpointId;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = OperatorStateStore::new();
//! let files = FileSink::new(dir.path(), "task0of1-fresh")?;
//! let mut sink = TwoPhaseCommitSink::open(files, &mut store, "output")?;
//! sink.write(b"alice 3\n")?;
//! sink.pre_commit(&mut store, CheckpointId(1))?;
//! assert!(committed_files(dir.path())?.is_empty());
//! sink.notify_checkpoint_complete(&mut store, CheckpointId(1))?;
//! assert_eq!(committed_files(dir.path())?.len(), 1);
//! # Ok::<(), flowstate::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::codec::{Codec, CodecError};
use crate::error::{Error, Result};
use crate::two_phase_commit::Transactional;

/// The prefix of an in-progress (uncommitted) file's name.
pub const IN_PROGRESS_PREFIX: &str = ".inprogress-";

/// One transaction of a [`FileSink`]: the name of the file it commits to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileTxn {
    name: String,
}

impl FileTxn {
    /// The transaction committing to file `name` of the output directory. A name is not
    /// empty, has no `/` or `\`, and does not start with `.`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_name(&name).map_err(|reason| Error::InvalidArgument(reason.into_owned()))?;
        Ok(FileTxn { name })
    }

    /// The name of the file the transaction commits to.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn in_progress_name(&self) -> String {
        format!("{IN_PROGRESS_PREFIX}{}", self.name)
    }
}

fn check_name(name: &str) -> std::result::Result<(), Cow<'static, str>> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(Cow::Owned(format!(
            "'{name}' is not a file sink transaction name (not empty, no '/', '\\' or NUL, \
             not starting with '.')"
        )));
    }
    Ok(())
}

/// Encoded as the file name (a string); a decoded name is checked like [`FileTxn::new`], so a
/// damaged checkpoint cannot name a file outside the output directory.
impl Codec for FileTxn {
    fn codec_name() -> Cow<'static, str> {
        Cow::Borrowed("file-sink-txn")
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.name.encode(out);
    }

    fn decode_from(input: &mut &[u8]) -> std::result::Result<Self, CodecError> {
        let name = String::decode_from(input)?;
        check_name(&name).map_err(CodecError::Invalid)?;
        Ok(FileTxn { name })
    }
}

/// A directory written in transactions, one file each (see the module documentation).
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    prefix: String,
    next: u64,
    writers: HashMap<String, BufWriter<File>>,
}

impl FileSink {
    /// A sink writing into `dir` (created if missing), its transactions named
    /// `<prefix>-<sequence>`.
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Result<Self> {
        let dir = dir.into();
        let prefix = prefix.into();
        check_name(&prefix).map_err(|reason| Error::InvalidArgument(reason.into_owned()))?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(FileSink {
            dir,
            prefix,
            next: 0,
            writers: HashMap::new(),
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn in_progress_path(&self, txn: &FileTxn) -> PathBuf {
        self.dir.join(txn.in_progress_name())
    }

    fn writer(&mut self, txn: &FileTxn) -> Result<&mut BufWriter<File>> {
        if !self.writers.contains_key(&txn.name) {
            // A transaction of this sink is always open here; one of an earlier run is not
            // written to (the sink aborts those), so appending is only a fallback.
            let path = self.in_progress_path(txn);
            let file = File::options()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            self.writers.insert(txn.name.clone(), BufWriter::new(file));
        }
        match self.writers.get_mut(&txn.name) {
            Some(writer) => Ok(writer),
            None => unreachable!("inserted just above"),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        #[cfg(unix)]
        {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(())
    }
}

impl Transactional for FileSink {
    type Txn = FileTxn;
    type Record = [u8];
    type Error = Error;

    fn begin(&mut self) -> Result<FileTxn> {
        let txn = FileTxn::new(format!("{}-{:06}", self.prefix, self.next))?;
        self.next += 1;
        let path = self.in_progress_path(&txn);
        // Truncates what an earlier run of the same task may have left under this name.
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        self.writers.insert(txn.name.clone(), BufWriter::new(file));
        Ok(txn)
    }

    fn write(&mut self, txn: &mut FileTxn, record: &[u8]) -> Result<()> {
        let path = self.in_progress_path(txn);
        self.writer(txn)?
            .write_all(record)
            .map_err(|e| Error::io(path, e))
    }

    fn pre_commit(&mut self, txn: &mut FileTxn) -> Result<()> {
        let path = self.in_progress_path(txn);
        let writer = self.writer(txn)?;
        writer.flush().map_err(|e| Error::io(&path, e))?;
        writer
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&path, e))?;
        self.writers.remove(&txn.name);
        self.sync_dir()
    }

    fn commit(&mut self, txn: FileTxn) -> Result<()> {
        self.writers.remove(&txn.name);
        let target = self.dir.join(&txn.name);
        if target.exists() {
            return Ok(()); // committed before: idempotent
        }
        let from = self.in_progress_path(&txn);
        std::fs::rename(&from, &target).map_err(|e| Error::io(&from, e))?;
        self.sync_dir()
    }

    fn abort(&mut self, txn: FileTxn) -> Result<()> {
        self.writers.remove(&txn.name);
        let path = self.in_progress_path(&txn);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// The committed files of an output directory, sorted by name: every regular file whose name
/// does not start with `.`.
pub fn committed_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let is_file = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_file();
        if is_file && !name.to_string_lossy().starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointId;
    use crate::operator::{OperatorStateSnapshot, OperatorStateStore};
    use crate::two_phase_commit::TwoPhaseCommitSink;

    fn lines(dir: &Path) -> Vec<String> {
        let mut all = Vec::new();
        for file in committed_files(dir).expect("readable") {
            let text = std::fs::read_to_string(&file).expect("readable");
            all.extend(text.lines().map(str::to_owned));
        }
        all
    }

    #[test]
    fn commit_renames_once_and_a_second_commit_is_a_no_op() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut sink = FileSink::new(dir.path(), "t0")?;
        let mut txn = sink.begin()?;
        sink.write(&mut txn, b"a\n")?;
        sink.pre_commit(&mut txn)?;
        assert!(committed_files(dir.path())?.is_empty());
        sink.commit(txn.clone())?;
        sink.commit(txn.clone())?;
        // Another sink over the same directory (a restored task) commits it again.
        FileSink::new(dir.path(), "t1")?.commit(txn)?;
        assert_eq!(lines(dir.path()), vec!["a"]);
        Ok(())
    }

    #[test]
    fn abort_deletes_the_in_progress_file_and_is_idempotent() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut sink = FileSink::new(dir.path(), "t0")?;
        let mut txn = sink.begin()?;
        sink.write(&mut txn, b"a\n")?;
        sink.abort(txn.clone())?;
        sink.abort(txn)?;
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
        Ok(())
    }

    #[test]
    fn a_crash_before_notify_commits_the_file_exactly_once_on_restore() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let out = dir.path().join("out");
        let mut store = OperatorStateStore::new();
        let mut sink =
            TwoPhaseCommitSink::open(FileSink::new(&out, "t0of1-fresh")?, &mut store, "out")?;
        sink.write(b"a\n")?;
        sink.pre_commit(&mut store, CheckpointId(1))?;
        let checkpoint: OperatorStateSnapshot = store.snapshot();
        sink.write(b"b\n")?; // after the barrier: replayed after the restore
        drop(sink);
        for run in 0..2 {
            let mut store = OperatorStateStore::restore(&[&checkpoint], 1, 0)?;
            let files = FileSink::new(&out, format!("t0of1-from1-run{run}"))?;
            let _sink = TwoPhaseCommitSink::open(files, &mut store, "out")?;
            assert_eq!(lines(&out), vec!["a"]);
        }
        let names: Vec<String> = std::fs::read_dir(&out)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(IN_PROGRESS_PREFIX))
            .collect();
        // The transaction open at the barrier was aborted; the restored runs' own are open.
        assert!(names.iter().all(|n| n.contains("from1")), "{names:?}");
        Ok(())
    }

    #[test]
    fn damaged_transaction_names_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(FileTxn::new(bad).is_err(), "{bad}");
            let bytes = crate::codec::to_bytes(&bad.to_string());
            assert!(FileTxn::decode(&bytes).is_err(), "{bad}");
        }
        assert!(FileSink::new("/nonexistent-dir-for-test", "a/b").is_err());
    }
}
