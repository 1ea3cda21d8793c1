//! `larder stats` as a library report: the local tier's totals, each
//! remote's own figures (or why they could not be had), and what each
//! write-back remote is owed.

use std::path::PathBuf;

use serde::Serialize;

use super::Larder;
use crate::error::Result;
use crate::remote::{RemoteMode, RemoteStats};
use crate::store::Stats;

/// Every tier's figures; the totals at the top are the local tier's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LarderStats {
    /// The local tier's totals.
    #[serde(flatten)]
    pub local: Stats,
    /// Each tier, the local one first.
    pub tiers: Vec<TierStats>,
}

/// One tier's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TierStats {
    /// The local tier.
    Local {
        /// Always `local`.
        tier: &'static str,
        /// Its home.
        home: PathBuf,
        /// Its totals.
        #[serde(flatten)]
        stats: Stats,
    },
    /// A remote tier.
    Remote(RemoteTierStats),
}

/// A remote tier's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteTierStats {
    /// Its name.
    pub tier: String,
    /// What it is used for.
    pub mode: RemoteMode,
    /// Where it is (without credentials).
    pub url: String,
    /// Its own figures, or why they could not be had.
    #[serde(flatten)]
    pub figures: Figures,
    /// Reads it served because the local tier lacked them (counted here).
    pub hits: u64,
    /// Uploads it is owed.
    pub queued: usize,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Those that failed at least once.
    pub failing: usize,
    /// The last failure of one of them.
    pub last_upload_error: Option<String>,
}

/// A remote's own figures, if it could be asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figures {
    /// What it said.
    Reached(RemoteStats),
    /// Why it could not say.
    Unreachable {
        /// The error, one line.
        error: String,
    },
}

impl Larder {
    /// Every tier's figures, and what the write-back remotes are owed.
    pub fn stats(&self) -> Result<LarderStats> {
        let local = self.store.stats()?;
        let queue = self.store.queued_uploads()?;
        let mut tiers = vec![TierStats::Local {
            tier: "local",
            home: self.store.home().to_path_buf(),
            stats: local,
        }];
        for tier in &self.remotes {
            let owed: Vec<_> = queue.iter().filter(|u| u.remote == tier.name()).collect();
            let figures = match tier.remote().stats() {
                Ok(stats) => Figures::Reached(stats),
                Err(e) => Figures::Unreachable { error: e.to_string() },
            };
            tiers.push(TierStats::Remote(RemoteTierStats {
                tier: tier.name().to_string(),
                mode: tier.mode(),
                url: tier.remote().location(),
                figures,
                hits: self.store.remote_hits(tier.name())?,
                queued: owed.len(),
                queued_bytes: owed.iter().map(|u| u.size).sum(),
                failing: owed.iter().filter(|u| u.attempts > 0).count(),
                last_upload_error: owed.iter().find_map(|u| u.last_error.clone()),
            }));
        }
        Ok(LarderStats { local, tiers })
    }
}
