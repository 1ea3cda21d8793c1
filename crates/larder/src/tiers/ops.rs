//! `larder put` and `larder get` as library operations: which path through
//! the tiers a put or a get takes is decided here, so the command line (and
//! any other front end) only maps its arguments and prints.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Larder;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::store::{Delivery, GetMode, Target, validate_user_key};

/// How [`Larder::put_paths`] and [`Larder::put_stream`] store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Put {
    /// A key to bind to the blob (one item only).
    pub key: Option<String>,
    /// Pin the blob, so eviction never removes it.
    pub pin: bool,
    /// Send it to every remote that takes writes now, write-back ones too,
    /// and fail if one cannot take it. Without it, write-through remotes get
    /// it at once and write-back ones from the queue, in the background.
    pub upload: bool,
}

/// One item stored by a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// What was stored: the file as given, or `-` for a stream.
    pub file: PathBuf,
    /// Its digest.
    pub digest: Digest,
}

/// Where [`Larder::get`] writes a blob.
pub enum GetTo<'a> {
    /// A file (or a folder to put it in, or a device), written whole or not
    /// at all; with `link`, a reflink or read-only hardlink where the
    /// filesystem allows.
    Path {
        /// Where.
        path: &'a Path,
        /// Link rather than copy.
        link: bool,
    },
    /// A stream, such as standard output.
    Writer(&'a mut dyn Write),
}

impl Larder {
    /// Checks what a put asks for before anything is stored.
    fn check_put(&self, put: &Put, items: usize) -> Result<()> {
        if let Some(key) = &put.key {
            if items > 1 {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "--key names one entry but {items} files were given; put them one at a time"
                    ),
                ));
            }
            validate_user_key(key)?;
        }
        if put.upload && !self.has_writable_remote() {
            return Err(Error::new(
                ErrorKind::Config,
                "--upload needs a remote that takes writes: add a [[remote]] with mode = \"write-through\" to the configuration",
            ));
        }
        Ok(())
    }

    /// Stores files and sends each to the remotes that take writes (see
    /// [`Put::upload`]). One result per file, in order: a file that fails
    /// does not stop the others. A single file to upload now is sent while
    /// its local copy is flushed; many are stored in batches, then sent a
    /// few at once.
    pub fn put_paths(
        &self,
        paths: &[PathBuf],
        put: &Put,
        progress: &dyn Progress,
    ) -> Result<Vec<Result<Stored>>> {
        self.check_put(put, paths.len())?;
        let opts = self.put_options(put.key.clone(), put.pin);
        if let ([path], true) = (paths, put.upload) {
            let stored = self.put_uploading(path, &opts, progress);
            return Ok(vec![stored.map(|digest| Stored { file: path.clone(), digest })]);
        }
        let results = self.store.put_files(paths, &opts, progress);
        Ok(self.send_stored(paths.iter().cloned().zip(results).collect(), put))
    }

    /// Stores what `reader` yields and sends it on as [`Larder::put_paths`]
    /// does; it is `file` in the result.
    pub fn put_stream(
        &self,
        reader: &mut dyn Read,
        file: &Path,
        put: &Put,
        progress: &dyn Progress,
    ) -> Result<Result<Stored>> {
        self.check_put(put, 1)?;
        let opts = self.put_options(put.key.clone(), put.pin);
        let stored = self.store.put_reader(reader, &opts, progress);
        let mut sent = self.send_stored(vec![(file.to_path_buf(), stored)], put);
        Ok(sent.pop().unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "nothing was stored"))))
    }

    /// Sends what was stored to the remotes, a few at once; a failure to
    /// send keeps the local copy and says so.
    fn send_stored(
        &self,
        stored: Vec<(PathBuf, Result<Digest>)>,
        put: &Put,
    ) -> Vec<Result<Stored>> {
        let items: Vec<(Digest, Option<String>)> = stored
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|d| (*d, put.key.clone())))
            .collect();
        let mut sent = self.send_all(&items, put.upload).into_iter();
        stored
            .into_iter()
            .map(|(file, result)| {
                let digest = result?;
                match sent.next() {
                    Some(Ok(())) | None => Ok(Stored { file, digest }),
                    Some(Err(e)) => {
                        Err(Error::new(e.kind(), format!("{digest} is stored locally, but: {e}")))
                    }
                }
            })
            .collect()
    }

    /// Writes the blob `target` names to `to`, verified. Unless `local_only`,
    /// a blob the local tier lacks is fetched from the first remote that has
    /// it; a copy to a file is then written as the bytes arrive.
    pub fn get(
        &self,
        target: &Target,
        to: GetTo<'_>,
        local_only: bool,
        progress: &dyn Progress,
    ) -> Result<(Digest, Delivery)> {
        match (&to, local_only) {
            (_, true) => {}
            (GetTo::Path { path, link: false }, false) => {
                if let Some(digest) = self.fetch_to_path(target, path, progress)? {
                    return Ok((digest, Delivery::Copied));
                }
            }
            _ => {
                self.fetch(target, progress)?;
            }
        }
        match to {
            GetTo::Writer(out) => {
                let digest = self.store.get_to_writer(target, out, progress)?;
                Ok((digest, Delivery::Copied))
            }
            GetTo::Path { path, link } => {
                let mode = if link { GetMode::Link } else { GetMode::Copy };
                let (digest, how) = self.store.get_to_path(target, path, mode, progress)?;
                if link && how == Delivery::Copied {
                    tracing::info!("{digest}: the filesystem cannot link here, so it was copied");
                }
                Ok((digest, how))
            }
        }
    }
}
