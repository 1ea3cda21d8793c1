//! Python packages: the vocabulary (project and file names, PEP 440
//! versions, core metadata), the package index's database, its served
//! folder and its lifecycle. `larder serve` puts the index on HTTP;
//! `larder pypi` changes it on the home; `larder wheels` names wheels with it.

pub mod folder;
pub mod index;
pub mod manage;
pub mod meta;
pub mod names;

pub use index::{FileRow, Index};

/// The store key of a distribution file (and, with `.metadata`, of a
/// wheel's METADATA).
pub fn file_key(project: &str, filename: &str) -> String {
    format!("pypi/{project}/{filename}")
}
