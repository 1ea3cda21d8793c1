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

mod build;
mod compat;
pub mod config;
pub mod coord;
mod digest;
pub mod dir_transfer;
mod dirs;
pub mod env;
mod error;
mod fsutil;
pub mod holder;
mod home;
pub mod http;
mod lockfile;
pub mod percent;
pub mod pool;
mod progress;
pub mod recipe;
pub mod remote;
pub mod size;
pub mod sqlite;
mod store;
mod tiers;
pub mod time;
pub mod wheels;

pub use config::Config;
pub use digest::{Digest, Hasher};
pub use dirs::{DirLease, DirSpec, DirStatus, Dirs, HeldBy, disk_usage};
pub use error::{Error, ErrorKind, Result};
pub use home::{Home, RemoteCheck, StartUploader};
pub use http::HttpOptions;
pub use progress::{NoProgress, Progress};
pub use store::{
    Delivery, Entry, Found, GcReport, GetMode, INTERNAL_KEY_PREFIX, KeyEntry, Pending, PutOptions,
    Quarantined, QueuedUpload, Removed, Stats, Store, Target, VerifyReport, validate_key,
    validate_user_key,
};
pub use tiers::{
    DrainReport, Figures, GetTo, Larder, LarderStats, PushReport, Put, RemoteTierStats, Stored,
    TierStats,
};
