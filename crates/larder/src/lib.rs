//! larder shares expensive things between processes and hosts: data sets,
//! build artifacts, scratch directories and machines. It fetches each thing
//! once, verifies it, shares it, and gives it back when nobody needs it.
//!
//! This crate holds all of larder's logic; the `larder` binary only parses
//! arguments and prints. Start with [`Store`], the content store:
//!
//! ```no_run
//! # fn main() -> larder::Result<()> {
//! let store = larder::Store::open("/tmp/larder-home".as_ref(), 20 << 30)?;
//! let digest = store.put("/etc/hostname".as_ref())?;
//! assert!(store.contains(digest)?);
//! println!("{digest}: {:.1}% used", store.stats()?.usage_ratio * 100.0);
//! store.close()?;
//! # Ok(()) }
//! ```
//!
//! cloud-manager's names for the same calls (`exists`, `on_cache`,
//! `warm_up`, `download`, `usage_ratio`) work too; they are listed, each
//! with the call it stands for, in one place (`compat.rs`).
#![deny(missing_docs)]

// The API: what other programs (and a Python binding) build on, beside the
// types re-exported below. See ARCHITECTURE.md, "API boundary".
pub mod config;
pub mod coord;
pub mod dir_transfer;
pub mod env;
pub mod pool;
pub mod pypi;
pub mod recipe;
pub mod remote;
pub mod sharing;

// Helpers public only so that larder's own crates (the server, the command
// line, the Python package code) share them; not a promise to anyone else.
pub mod holder;
pub mod http;
pub mod percent;
pub mod size;
pub mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod wheels;

mod build;
mod compat;
mod digest;
mod dirs;
mod error;
mod fsutil;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod home;
mod lockfile;
mod progress;
mod store;
mod tiers;

pub use config::Config;
pub use digest::{Digest, Hasher};
pub use dirs::{DirLease, DirSpec, DirStatus, Dirs, HeldBy, PUSHED_TO, RemoteTiers, disk_usage};
pub use error::{Error, ErrorKind, Result};
pub use home::{Home, RemoteCheck, StartUploader};
pub use http::HttpOptions;
pub use progress::{NoProgress, Progress};
pub use store::{
    Delivery, Entry, Found, GcOptions, GcReport, GetMode, INTERNAL_KEY_PREFIX, KeyEntry, Pending,
    PutOptions, Quarantined, QueuedUpload, Removed, Stats, Store, Target, VerifyReport,
    validate_key, validate_user_key,
};
pub use tiers::{
    DrainReport, Figures, GetTo, Larder, LarderStats, PushReport, Put, RemoteTierStats, Stored,
    TierStats,
};
