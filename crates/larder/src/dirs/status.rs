//! A shared directory as `larder dir ls` and `dir show` report it: its
//! record, with its state in words and the space it takes on disk.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{Dirs, disk_usage};
use crate::coord::{BuildProgress, DirRecord, DirState, Holder, now_ms};
use crate::error::Result;
use crate::size::format_size;

/// A directory, reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirStatus {
    /// Its name.
    pub name: String,
    /// Where it is: this host's copy, or where the host that made it keeps
    /// it while this host has none.
    pub path: String,
    /// Every host's copy, by host name.
    pub copies: BTreeMap<String, String>,
    /// `building`, `ready`, `failed` or `deleting`.
    pub state: &'static str,
    /// The state with who builds or deletes it, how far a build has come,
    /// or why it failed.
    pub detail: String,
    /// Its generation (see [`DirRecord::generation`]).
    pub generation: u64,
    /// Whether it stays after its last holder.
    pub locked: bool,
    /// The bytes of its files now.
    pub size: u64,
    /// The space asked for when it was created.
    pub reserved: u64,
    /// Its recipe, if any, in canonical form.
    pub recipe: Option<String>,
    /// The hash of its recipe.
    pub recipe_hash: Option<String>,
    /// How far its build has come.
    pub progress: Option<BuildProgress>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Its metadata.
    pub meta: BTreeMap<String, String>,
    /// Its live holders, oldest first.
    pub holders: Vec<HeldBy>,
}

/// One holder of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBy {
    /// Who.
    pub holder: Holder,
    /// Since when, in milliseconds since the Unix epoch.
    pub since: i64,
}

impl DirStatus {
    /// The report of `record`, measuring its folder now.
    pub fn of(record: &DirRecord) -> DirStatus {
        DirStatus {
            name: record.name.clone(),
            path: record.path.clone(),
            copies: record.copies.clone(),
            state: state_word(&record.state),
            detail: detail(record),
            generation: record.generation,
            locked: record.locked,
            // Another host's copy cannot be measured from here.
            size: if record.has_copy_here() { disk_usage(Path::new(&record.path)) } else { 0 },
            reserved: record.size,
            recipe: record.recipe.clone(),
            recipe_hash: record.recipe_hash.clone(),
            progress: record.progress.clone(),
            created_at: record.created_at,
            meta: record.meta.clone(),
            holders: record
                .holders
                .iter()
                .map(|h| HeldBy { holder: h.holder.clone(), since: h.since })
                .collect(),
        }
    }
}

impl Dirs {
    /// Every directory, reported (after deleting those nobody holds).
    pub fn statuses(&self) -> Result<Vec<DirStatus>> {
        Ok(self.list()?.iter().map(DirStatus::of).collect())
    }

    /// One directory, reported.
    pub fn status(&self, name: &str) -> Result<DirStatus> {
        Ok(DirStatus::of(&self.show(name)?))
    }
}

fn state_word(state: &DirState) -> &'static str {
    match state {
        DirState::Building { .. } => "building",
        DirState::Ready => "ready",
        DirState::Failed { .. } => "failed",
        DirState::Deleting { .. } => "deleting",
    }
}

fn detail(r: &DirRecord) -> String {
    match &r.state {
        DirState::Building { by } => {
            let how_far = match &r.progress {
                Some(p) => match p.total {
                    Some(t) if t > 0 => {
                        format!(": {} ({} of {})", p.phase, format_size(p.done), format_size(t))
                    }
                    _ => format!(": {} ({})", p.phase, format_size(p.done)),
                },
                None => String::new(),
            };
            if by.is_alive(now_ms()) {
                format!("building by {by}{how_far}")
            } else {
                format!("building, but its builder ({by}) died; the next use builds it again")
            }
        }
        DirState::Ready => "ready".to_string(),
        DirState::Failed { error } => {
            format!("failed: {}", super::building::split_failure(error).1)
        }
        DirState::Deleting { by } => format!("being deleted by {by}"),
    }
}
