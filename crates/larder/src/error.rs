//! The one error type of the library: a kind that callers match on, and a
//! one-line message that names the thing and the fix.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, in a form callers can match on and map to exit codes or
/// HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The digest, key or file asked for does not exist.
    NotFound,
    /// Input that can never succeed: a malformed digest, size or key.
    InvalidInput,
    /// A configuration file or variable is wrong.
    Config,
    /// Stored bytes do not match their digest.
    Corrupt,
    /// The store cannot make room: the capacity is taken by pinned entries,
    /// or a single item is larger than the capacity.
    StoreFull,
    /// The disk itself is full.
    DiskFull,
    /// The operating system refused access, or the home belongs to someone else.
    PermissionDenied,
    /// The request conflicts with the current state (e.g. removing a pinned entry).
    Conflict,
    /// Another process holds what we need for longer than we waited; retrying may help.
    Busy,
    /// Any other input/output failure.
    Io,
}

impl ErrorKind {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Busy | ErrorKind::Io | ErrorKind::DiskFull)
    }

    const ALL: [ErrorKind; 10] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidInput,
        ErrorKind::Config,
        ErrorKind::Corrupt,
        ErrorKind::StoreFull,
        ErrorKind::DiskFull,
        ErrorKind::PermissionDenied,
        ErrorKind::Conflict,
        ErrorKind::Busy,
        ErrorKind::Io,
    ];

    /// A stable one-word name, for records that outlive the process (a
    /// failed build's error, read by those who waited for it).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Config => "config",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::StoreFull => "store-full",
            ErrorKind::DiskFull => "disk-full",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Busy => "busy",
            ErrorKind::Io => "io",
        }
    }

    /// The kind [`ErrorKind::name`] gave `name`.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// An error from the larder library. Its `Display` is one line that names the
/// thing and says what to do.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message that names the thing and the fix.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    /// Attaches the underlying cause (kept for logs; the message stands alone).
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An I/O failure while doing `action` on `path`, classified by the OS error
    /// and given the usual fix.
    pub fn io(action: &str, path: &Path, err: io::Error) -> Error {
        let (kind, fix) = classify_io(&err);
        let message = format!("cannot {action} {}: {}{fix}", path.display(), describe_io(&err));
        Error { kind, message, source: Some(Box::new(err)) }
    }

    /// An SQLite failure on the index at `path`.
    pub fn index(path: &Path, err: rusqlite::Error) -> Error {
        let busy = matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        let full = matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        let (kind, fix) = if busy {
            (ErrorKind::Busy, "; another larder process held it too long, try again")
        } else if full {
            (ErrorKind::DiskFull, "; free space on that disk or lower the capacity")
        } else if matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        ) {
            (ErrorKind::Corrupt, "; move it aside and run `larder verify --repair` to rebuild it")
        } else if matches!(
            err.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::PermissionDenied
                    | rusqlite::ErrorCode::CannotOpen
            )
        ) {
            (ErrorKind::PermissionDenied, "; check that you own the larder home")
        } else {
            (ErrorKind::Io, "")
        };
        let message = format!("index {}: {err}{fix}", path.display());
        Error { kind, message, source: Some(Box::new(err)) }
    }
}

fn describe_io(err: &io::Error) -> String {
    // The std message ends in "(os error N)", which says nothing to users.
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

fn classify_io(err: &io::Error) -> (ErrorKind, &'static str) {
    match err.kind() {
        io::ErrorKind::NotFound => (ErrorKind::NotFound, ""),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            (ErrorKind::PermissionDenied, "; check its permissions")
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            (ErrorKind::DiskFull, "; free space on that disk or lower the capacity")
        }
        io::ErrorKind::IsADirectory => (ErrorKind::InvalidInput, "; give a file, not a folder"),
        _ => (ErrorKind::Io, ""),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
