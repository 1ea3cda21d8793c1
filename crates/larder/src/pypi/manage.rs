//! The index's lifecycle: a file or a whole release removed, yanked or
//! unyanked (PEP 592). Only this server's own files change (uploads, and the
//! served folder's files, which are removed from the folder, as pypiserver
//! does): what an upstream lists is the upstream's. A removed wheel's
//! `.metadata` goes with it.

use crate::{Error, ErrorKind, Store, Target};

use super::file_key;
use super::index::{FileRow, Index};
use super::names;

/// What is done to the files chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Removed, with its `.metadata`.
    Remove,
    /// Yanked, with a reason (possibly empty).
    Yank(String),
    /// No longer yanked.
    Unyank,
}

/// Which files: one by name, or every file of a release.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The project, as written (it is normalized).
    pub project: String,
    /// The release, compared as PEP 440 does.
    pub version: Option<String>,
    /// One file, by name.
    pub filename: Option<String>,
}

/// Applies `change` to the files `chosen` names; returns their names. An
/// error if it names none of this server's uploads.
pub fn apply(
    index: &Index,
    store: &Store,
    chosen: &Chosen,
    change: &Change,
) -> Result<Vec<String>, Error> {
    let project = names::normalize(&chosen.project);
    let rows: Vec<FileRow> = index
        .files_of(&project)?
        .into_iter()
        .filter(|r| chosen.filename.as_ref().is_none_or(|f| *f == r.filename))
        .filter(|r| chosen.version.as_ref().is_none_or(|v| names::same_version(v, &r.version)))
        .collect();
    let what = match (&chosen.filename, &chosen.version) {
        (Some(f), _) => f.clone(),
        (None, Some(v)) => format!("{project} {v}"),
        (None, None) => project.clone(),
    };
    if rows.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, format!("no file of {what} is in this index")));
    }
    if let Some(other) = rows.iter().find(|r| !r.is_local()) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is listed by the upstream {}, not uploaded here",
                other.filename, other.origin
            ),
        ));
    }
    let mut changed = Vec::new();
    for row in &rows {
        match change {
            Change::Remove => {
                // The listing goes first: a page never links to a file that is gone.
                index.remove(&row.filename)?;
                super::folder::remove_file(row)?;
                for key in [
                    file_key(&project, &row.filename),
                    file_key(&project, &format!("{}.metadata", row.filename)),
                ] {
                    match store.remove(&Target::Key(key), true) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Change::Yank(reason) => index.set_yanked(&row.filename, Some(reason))?,
            Change::Unyank => index.set_yanked(&row.filename, None)?,
        }
        changed.push(row.filename.clone());
    }
    Ok(changed)
}
