//! Progress reports from long operations. The library only counts; the command
//! line decides whether to draw bars (on a terminal) or stay quiet (in a pipe).

/// Receives progress from long operations. Every method has a default that
/// does nothing.
pub trait Progress: Sync {
    /// A new phase starts, with a known total of bytes (or items) if any.
    fn start(&self, _label: &str, _total: Option<u64>) {}
    /// `amount` more bytes (or items) are done.
    fn advance(&self, _amount: u64) {}
    /// The phase is `done` along already: work that happened before this
    /// process looked (a build another process runs), not a rate.
    fn skip_to(&self, _done: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
