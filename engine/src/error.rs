//! The engine's one error type.

use std::path::PathBuf;

use thiserror::Error;

use crate::key_group::KeyGroupRange;

/// Whether an operation that failed may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller used the API wrongly (no current key, a type mismatch, a bad argument);
    /// trying again without changing the call fails the same way.
    Usage,
    /// Stored bytes are damaged or incompatible; trying again reads the same bytes.
    Corruption,
    /// An I/O operation failed; it may succeed later.
    Io,
    /// A configured limit was reached.
    Limit,
}

/// Errors returned by the engine. Each carries the context needed to act on it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// State was accessed before any key was set with `set_current_key`.
    #[error("no current key: call set_current_key before accessing keyed state")]
    NoCurrentKey,
    /// The current key's key group is not owned by this backend.
    #[error("key group {key_group} is outside the backend's key-group range {range}")]
    KeyGroupOutOfRange {
        /// The key group of the current key.
        key_group: u16,
        /// The range this backend owns.
        range: KeyGroupRange,
    },
    /// A state name was registered again with another kind or other types.
    #[error("state '{name}' is registered as {registered}, not as {requested}")]
    StateTypeMismatch {
        /// The state's name.
        name: String,
        /// What the state was registered as first.
        registered: String,
        /// What the failing call asked for.
        requested: String,
    },
    /// A handle was used with a backend that did not issue it.
    #[error("unknown state handle {id}: the handle was not issued by this backend")]
    UnknownState {
        /// The handle's id.
        id: u32,
    },
    /// A state with a namespace was accessed without naming the namespace.
    #[error("state '{state}' has a namespace: call .namespace(&ns) before accessing it")]
    NamespaceRequired {
        /// The state's name.
        state: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Bytes could not be decoded by a codec.
    #[error("cannot decode {what}: {source}")]
    Codec {
        /// What was being decoded (a state name and part, a file and offset...).
        what: String,
        /// The codec's error.
        #[source]
        source: crate::codec::CodecError,
    },
    /// An I/O operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A path given to a storage escapes its root or is otherwise not acceptable.
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A restored state is registered with another kind or other codecs than it was
    /// snapshotted with.
    #[error("state '{name}' was snapshotted as {snapshot}, but is registered as {requested}")]
    IncompatibleState {
        /// The state's name.
        name: String,
        /// What the snapshot says the state is.
        snapshot: String,
        /// What the registration asked for.
        requested: String,
    },
    /// A snapshot cannot be restored into this backend (another max parallelism or key
    /// codec, or key groups covered twice).
    #[error("cannot restore: {0}")]
    IncompatibleSnapshot(String),
    /// A file does not follow its format (a checkpoint `_metadata`, a state handle, a
    /// snapshot file), or a reader or writer of a format was misused; the error names the
    /// file and, where there is one, the byte offset.
    #[error(transparent)]
    Format(#[from] flowstate_formats::FormatError),
    /// A state file's length differs from the size its handle records.
    #[error("state file {path} is {actual} bytes long, but its handle records {expected} bytes")]
    StateFileSize {
        /// The state file.
        path: PathBuf,
        /// The size the handle records.
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// A state file says (in its origin field, spec/formats.md section 4.9) that it was
    /// written for another checkpoint or savepoint, or under another name: a file of another
    /// snapshot in its place.
    #[error("state file {path}: {reason}")]
    MisplacedFile {
        /// The state file, as its checkpoint lists it.
        path: String,
        /// Where the file says it belongs.
        reason: String,
    },
    /// A state file would grow past the checkpoint storage's limit for one state file.
    #[error(
        "state file {path} would exceed the checkpoint storage's limit of {limit} bytes per \
         state file (MemoryCheckpointStorage's max_state_size); raise it or use \
         FsCheckpointStorage"
    )]
    StateSizeLimit {
        /// The state file being written.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is longer than the caller's limit for reading it whole.
    #[error("{path} is {len} bytes long, over the limit of {limit} bytes for reading it whole")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A shared file an incremental checkpoint refers to is missing, damaged or of the wrong
    /// size: the checkpoint cannot be restored (there is no silent fallback to other data).
    #[error("shared file {path} of checkpoint {checkpoint}: {reason}")]
    SharedFile {
        /// The shared file's path in the checkpoint storage.
        path: String,
        /// The checkpoint (or savepoint) whose snapshot refers to it.
        checkpoint: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A flush or compaction of the LSM backend failed on a background thread; the backend
    /// keeps what it holds in memory but refuses further writes.
    #[error("LSM background work failed: {reason}")]
    BackgroundWork {
        /// The error of the failed step.
        reason: String,
    },
}

impl Error {
    /// Whether retrying may help, and whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoCurrentKey
            | Error::KeyGroupOutOfRange { .. }
            | Error::StateTypeMismatch { .. }
            | Error::UnknownState { .. }
            | Error::NamespaceRequired { .. }
            | Error::InvalidConfig(_)
            | Error::InvalidArgument(_)
            | Error::InvalidPath { .. } => ErrorKind::Usage,
            Error::Codec { .. } => ErrorKind::Corruption,
            Error::Io { .. } | Error::BackgroundWork { .. } => ErrorKind::Io,
            Error::FileTooLarge { .. } => ErrorKind::Limit,
            Error::Format(e) => match e {
                flowstate_formats::FormatError::Io { .. } => ErrorKind::Io,
                flowstate_formats::FormatError::InvalidInput { .. } => ErrorKind::Usage,
                _ => ErrorKind::Corruption,
            },
            Error::StateFileSize { .. }
            | Error::SharedFile { .. }
            | Error::MisplacedFile { .. } => ErrorKind::Corruption,
            Error::StateSizeLimit { .. } => ErrorKind::Limit,
            Error::IncompatibleState { .. } | Error::IncompatibleSnapshot(_) => ErrorKind::Usage,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
