//! The package index's own database, `pypi-v1.sqlite` in the home: one row
//! per distribution file, with what the index pages show, computed once when
//! the file arrived (uploaded, found in the served folder, or listed by an
//! upstream). Uploads and upstream files are blobs of the store, under the
//! keys `pypi/<project>/<filename>`, and every wheel's METADATA under
//! `…/<filename>.metadata`; the served folder's files stay where they are.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::Error;
use rusqlite::{Connection, OptionalExtension, params};

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE files (
    filename        TEXT PRIMARY KEY,
    project         TEXT NOT NULL,
    version         TEXT NOT NULL,
    sha256          TEXT,
    size            INTEGER,
    upload_time     TEXT,
    requires_python TEXT,
    metadata_sha256 TEXT,
    yanked          TEXT,
    origin          TEXT NOT NULL,
    url             TEXT,
    path            TEXT,
    stamp           TEXT
) WITHOUT ROWID;
CREATE INDEX files_project ON files(project);
CREATE INDEX files_origin ON files(origin, project);
CREATE TABLE upstream_pages (
    upstream   TEXT NOT NULL,
    project    TEXT NOT NULL,
    etag       TEXT,
    fetched_at INTEGER NOT NULL,
    missing    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (upstream, project)
) WITHOUT ROWID;
"#,
    // An index of every row by its origin (an upstream's URL, in each row) made
    // the database twice the size of the pages it lists; only the served
    // folder's files are looked up by origin, and an upstream's by project.
    r#"
DROP INDEX files_origin;
CREATE INDEX files_in_folder ON files(origin) WHERE origin = 'folder';
"#,
];

/// Where a file came from.
pub const UPLOADED: &str = "upload";
/// Found in the served folder.
pub const FOLDER: &str = "folder";

/// One distribution file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Its file name, unique in the index.
    pub filename: String,
    /// Its project, normalized (PEP 503).
    pub project: String,
    /// Its version, as its file name spells it.
    pub version: String,
    /// Hex; for upstream files, as the upstream gave it (possibly none).
    pub sha256: Option<String>,
    /// Its size in bytes, if known.
    pub size: Option<u64>,
    /// RFC 3339, UTC.
    pub upload_time: Option<String>,
    /// The Python versions it runs on (PEP 345 `Requires-Python`).
    pub requires_python: Option<String>,
    /// The sha256 (hex) of a wheel's METADATA, served on its own (PEP 658).
    pub metadata_sha256: Option<String>,
    /// `None`: not yanked; `Some("")` or a reason: yanked.
    pub yanked: Option<String>,
    /// `upload`, `folder`, or the upstream's base URL.
    pub origin: String,
    /// Where an upstream serves it.
    pub url: Option<String>,
    /// Where a folder file is.
    pub path: Option<String>,
    /// How a folder file looked (size, mtime) when it was indexed.
    pub stamp: Option<String>,
}

impl FileRow {
    /// Whether it is this server's own (uploaded or in its folder).
    pub fn is_local(&self) -> bool {
        self.origin == UPLOADED || self.origin == FOLDER
    }
}

/// An upstream's page of a project as last fetched.
pub struct UpstreamPage {
    /// The ETag it came with.
    pub etag: Option<String>,
    /// It listed nothing (or was not there).
    pub missing: bool,
}

/// The database.
pub struct Index {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Index {
    /// Opens (or makes) the database in `home`.
    pub fn open(home: &Path) -> Result<Index, Error> {
        let path = home.join("pypi-v1.sqlite");
        let conn = crate::sqlite::open(&path, MIGRATIONS)?;
        Ok(Index { path, conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|e| Error::index(&self.path, e))
    }

    /// Adds or replaces a file.
    pub fn put(&self, row: &FileRow) -> Result<(), Error> {
        self.with(|conn| insert(conn, row))
    }

    /// Adds or replaces many files in one transaction.
    pub fn put_all(&self, rows: &[FileRow]) -> Result<(), Error> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            for row in rows {
                insert(&tx, row)?;
            }
            tx.commit()
        })
    }

    /// The row of `filename`.
    pub fn file(&self, filename: &str) -> Result<Option<FileRow>, Error> {
        self.with(|conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE filename = ?1"))?
                .query_row([filename], row)
                .optional()
        })
    }

    /// Every file of `project`, in filename order.
    pub fn files_of(&self, project: &str) -> Result<Vec<FileRow>, Error> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM files WHERE project = ?1 ORDER BY filename"
            ))?;
            let rows = stmt.query_map([project], row)?;
            rows.collect()
        })
    }

    /// Every project, normalized, in order.
    pub fn projects(&self) -> Result<Vec<String>, Error> {
        self.with(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT DISTINCT project FROM files ORDER BY project")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Every file found in the served folder.
    pub fn folder_files(&self) -> Result<Vec<FileRow>, Error> {
        self.with(|conn| {
            // Spelled out, so the partial index `files_in_folder` serves it.
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE origin = 'folder'"))?;
            let rows = stmt.query_map([], row)?;
            rows.collect()
        })
    }

    /// Forgets `filename`.
    pub fn remove(&self, filename: &str) -> Result<(), Error> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM files WHERE filename = ?1")?.execute([filename])?;
            Ok(())
        })
    }

    /// Forgets the folder file `filename` if it is still the one at `path`
    /// (another file of that name may have been indexed since).
    pub fn remove_folder_file(&self, filename: &str, path: &str) -> Result<(), Error> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM files WHERE filename = ?1 AND path = ?2")?
                .execute([filename, path])?;
            Ok(())
        })
    }

    /// Yanks `filename` (with a reason, possibly empty) or, with `None`, unyanks it.
    pub fn set_yanked(&self, filename: &str, reason: Option<&str>) -> Result<(), Error> {
        self.with(|conn| {
            conn.prepare_cached("UPDATE files SET yanked = ?2 WHERE filename = ?1")?
                .execute(params![filename, reason])?;
            Ok(())
        })
    }

    /// A number that moves whenever another connection (another process:
    /// `larder pypi`) changed the database.
    pub fn data_version(&self) -> Result<i64, Error> {
        self.with(|conn| conn.query_row("PRAGMA data_version", [], |r| r.get(0)))
    }

    /// Replaces what `upstream` lists for `project` (keeping this server's
    /// own files, which shadow it), and notes when and with which ETag.
    pub fn replace_upstream(
        &self,
        upstream: &str,
        project: &str,
        rows: &[FileRow],
        etag: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.prepare_cached("DELETE FROM files WHERE origin = ?1 AND project = ?2")?
                .execute(params![upstream, project])?;
            for row in rows {
                let exists: Option<String> = tx
                    .prepare_cached("SELECT origin FROM files WHERE filename = ?1")?
                    .query_row([&row.filename], |r| r.get(0))
                    .optional()?;
                if exists.is_none() {
                    insert(&tx, row)?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO upstream_pages(upstream, project, etag, fetched_at, missing)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(upstream, project) DO UPDATE
                 SET etag = excluded.etag, fetched_at = excluded.fetched_at, missing = excluded.missing",
            )?
            .execute(params![upstream, project, etag, now, rows.is_empty()])?;
            tx.commit()?;
            // A page of thousands of files wrote as much to the WAL: not kept.
            crate::sqlite::trim_wal(conn, &self.path);
            Ok(())
        })
    }

    /// What is known of `upstream`'s page of `project`, if it was fetched.
    pub fn upstream_page(
        &self,
        upstream: &str,
        project: &str,
    ) -> Result<Option<UpstreamPage>, Error> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT etag, missing FROM upstream_pages WHERE upstream = ?1 AND project = ?2",
            )?
            .query_row(params![upstream, project], |r| {
                Ok(UpstreamPage { etag: r.get(0)?, missing: r.get(1)? })
            })
            .optional()
        })
    }

    /// Whether `project` has any file listed.
    pub fn has_files(&self, project: &str) -> Result<bool, Error> {
        self.with(|conn| {
            conn.prepare_cached("SELECT 1 FROM files WHERE project = ?1 LIMIT 1")?
                .query_row([project], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
    }

    /// Notes that `upstream`'s page of `project` is still as it was.
    pub fn touch_upstream(&self, upstream: &str, project: &str, now: i64) -> Result<(), Error> {
        self.with(|conn| {
            conn.prepare_cached(
                "UPDATE upstream_pages SET fetched_at = ?3 WHERE upstream = ?1 AND project = ?2",
            )?
            .execute(params![upstream, project, now])?;
            Ok(())
        })
    }
}

const COLUMNS: &str = "filename, project, version, sha256, size, upload_time, requires_python, \
                       metadata_sha256, yanked, origin, url, path, stamp";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        filename: r.get(0)?,
        project: r.get(1)?,
        version: r.get(2)?,
        sha256: r.get(3)?,
        size: r.get::<_, Option<i64>>(4)?.map(|s| s.max(0) as u64),
        upload_time: r.get(5)?,
        requires_python: r.get(6)?,
        metadata_sha256: r.get(7)?,
        yanked: r.get(8)?,
        origin: r.get(9)?,
        url: r.get(10)?,
        path: r.get(11)?,
        stamp: r.get(12)?,
    })
}

fn insert(conn: &Connection, r: &FileRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO files({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))?
    .execute(params![
        r.filename,
        r.project,
        r.version,
        r.sha256,
        r.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        r.upload_time,
        r.requires_python,
        r.metadata_sha256,
        r.yanked,
        r.origin,
        r.url,
        r.path,
        r.stamp,
    ])?;
    Ok(())
}
