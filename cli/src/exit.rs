//! The exit codes of the `flowstate` command and the error type of its tools, which carries the
//! code it exits with (spec/tools.md section 1).

use std::fmt;
use std::process::ExitCode;

use flowstate::ErrorKind;

/// The exit codes, as `flowstate --help` prints them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (verify: nothing damaged)
  1  damage: verify found a damaged file, or a tool failed on a checkpoint file that is
     corrupt, truncated, of another size or checksum, misplaced or missing
  2  usage: a bad argument, a missing directory, an unknown checkpoint id or savepoint
     directory, an existing output (convert never overwrites)
  3  I/O: a file could not be read or written for another reason (permissions, a full disk)";

/// Success.
pub const OK: u8 = 0;
/// Damage found in a checkpoint or savepoint.
pub const DAMAGE: u8 = 1;
/// A usage error: what the tool was given is wrong (clap's own errors exit 2 as well).
pub const USAGE: u8 = 2;
/// An I/O failure other than damage.
pub const IO: u8 = 3;

/// Why a tool failed, and so which code it exits with.
#[derive(Debug)]
pub enum ToolError {
    /// A bad argument or missing input: exit code 2.
    Usage(String),
    /// A damaged checkpoint file, or damage verify found: exit code 1.
    Damage(String),
    /// Another I/O failure: exit code 3.
    Io(String),
}

impl ToolError {
    /// The exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            ToolError::Usage(_) => USAGE,
            ToolError::Damage(_) => DAMAGE,
            ToolError::Io(_) => IO,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Usage(m) | ToolError::Damage(m) | ToolError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ToolError {}

/// The engine's error by its kind: corruption (and a configured limit a file breaks, such as a
/// `_metadata` longer than any the engine writes) is damage, a usage error is a usage error,
/// and an I/O error is damage if a file a checkpoint lists is not found, an I/O failure
/// otherwise.
impl From<flowstate::Error> for ToolError {
    fn from(e: flowstate::Error) -> Self {
        let message = e.to_string();
        match e.kind() {
            ErrorKind::Corruption | ErrorKind::Limit => ToolError::Damage(message),
            ErrorKind::Usage => ToolError::Usage(message),
            _ => match &e {
                flowstate::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    ToolError::Damage(message)
                }
                _ => ToolError::Io(message),
            },
        }
    }
}

impl From<flowstate_formats::FormatError> for ToolError {
    fn from(e: flowstate_formats::FormatError) -> Self {
        flowstate::Error::from(e).into()
    }
}

/// A message the tool wrote itself: a usage error.
impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::Usage(message)
    }
}

/// A message the tool wrote itself: a usage error.
impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::Usage(message.to_owned())
    }
}

/// An I/O error of the tool's own (creating or renaming an output directory).
impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        ToolError::Io(e.to_string())
    }
}
