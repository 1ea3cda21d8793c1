//! The index: which blobs the local tier holds, their sizes, pins, recency and
//! keys, plus running totals. Every SQL statement of the store lives here.
//!
//! Totals (`bytes`, `entries`, `pinned_bytes`) are kept by triggers in the same
//! transaction as the change, so no path can count bytes twice or forget them.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::digest::Digest;

/// The schema, one migration per entry. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    pinned     INTEGER NOT NULL DEFAULT 0,
    last_use   INTEGER NOT NULL,
    used_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    stamp      TEXT
) WITHOUT ROWID;
CREATE INDEX blobs_lru ON blobs(last_use) WHERE pinned = 0;

CREATE TABLE keys (
    key        TEXT PRIMARY KEY,
    digest     TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX keys_digest ON keys(digest);

CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters(name, value) VALUES
    ('bytes', 0), ('entries', 0), ('pinned_bytes', 0), ('clock', 0), ('hits', 0), ('misses', 0);

CREATE TRIGGER blobs_insert AFTER INSERT ON blobs BEGIN
    UPDATE counters SET value = value + NEW.size WHERE name = 'bytes';
    UPDATE counters SET value = value + 1 WHERE name = 'entries';
    UPDATE counters SET value = value + NEW.size * NEW.pinned WHERE name = 'pinned_bytes';
END;
CREATE TRIGGER blobs_delete AFTER DELETE ON blobs BEGIN
    UPDATE counters SET value = value - OLD.size WHERE name = 'bytes';
    UPDATE counters SET value = value - 1 WHERE name = 'entries';
    UPDATE counters SET value = value - OLD.size * OLD.pinned WHERE name = 'pinned_bytes';
END;
CREATE TRIGGER blobs_pin AFTER UPDATE OF pinned ON blobs BEGIN
    UPDATE counters SET value = value + NEW.size * (NEW.pinned - OLD.pinned)
        WHERE name = 'pinned_bytes';
END;
"#,
    r#"
-- Uploads owed to write-back remotes. A blob with a row here is never
-- evicted; removing it on purpose drops its rows.
CREATE TABLE uploads (
    remote     TEXT NOT NULL,
    digest     TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
    key        TEXT NOT NULL DEFAULT '',
    queued_at  INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (remote, digest, key)
) WITHOUT ROWID;
CREATE INDEX uploads_digest ON uploads(digest);
"#,
    r#"
-- What the server said of a recipe's download that no checksum pins (its
-- ETag and Last-Modified), for a conditional request the next time a
-- directory is built from it. A row speaks for the blob it names only: the
-- key bound to another blob, or the blob gone, and it no longer applies.
CREATE TABLE download_validators (
    key           TEXT PRIMARY KEY,
    digest        TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
    etag          TEXT,
    last_modified TEXT,
    checked_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX download_validators_digest ON download_validators(digest);
"#,
];

/// One blob's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRow {
    pub(crate) size: u64,
    pub(crate) pinned: bool,
    /// How the file looked when its bytes last hashed right (see `Stamp`).
    pub(crate) stamp: Option<String>,
}

/// Running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
    pub(crate) pinned_bytes: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

use crate::time::now;

pub(crate) fn totals(conn: &Connection) -> rusqlite::Result<Totals> {
    let mut t = Totals::default();
    let mut stmt = conn.prepare_cached("SELECT name, value FROM counters")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let value: i64 = row.get(1)?;
        let value = value.max(0) as u64;
        match name.as_str() {
            "bytes" => t.bytes = value,
            "entries" => t.entries = value,
            "pinned_bytes" => t.pinned_bytes = value,
            "hits" => t.hits = value,
            "misses" => t.misses = value,
            _ => {}
        }
    }
    Ok(t)
}

pub(crate) fn count(tx: &Connection, name: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = ?1")?.execute([name])?;
    Ok(())
}

pub(crate) fn blob(conn: &Connection, digest: &Digest) -> rusqlite::Result<Option<BlobRow>> {
    conn.prepare_cached("SELECT size, pinned, stamp FROM blobs WHERE digest = ?1")?
        .query_row([digest.to_string()], |r| {
            Ok(BlobRow { size: r.get::<_, i64>(0)? as u64, pinned: r.get(1)?, stamp: r.get(2)? })
        })
        .optional()
}

/// Up to `limit` stored digests whose text starts with `prefix` (lowercase).
pub(crate) fn digests_starting(
    conn: &Connection,
    prefix: &str,
    limit: usize,
) -> rusqlite::Result<Vec<Digest>> {
    // A range over the primary key: every text that starts with `prefix`
    // sorts between it and it followed by the highest hex digit's successor.
    let upper = format!("{prefix}g");
    let mut stmt = conn.prepare_cached(
        "SELECT digest FROM blobs WHERE digest >= ?1 AND digest < ?2 ORDER BY digest LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![prefix, upper, limit as i64], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        if let Ok(digest) = text?.parse() {
            out.push(digest);
        }
    }
    Ok(out)
}

pub(crate) fn key(conn: &Connection, key: &str) -> rusqlite::Result<Option<Digest>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT digest FROM keys WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| t.parse().ok()))
}

pub(crate) fn key_with_time(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(Digest, i64)>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT digest, created_at FROM keys WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(d, t)| Some((d.parse().ok()?, t))))
}

pub(crate) fn blob_with_time(
    conn: &Connection,
    digest: &Digest,
) -> rusqlite::Result<Option<(BlobRow, i64)>> {
    conn.prepare_cached("SELECT size, pinned, stamp, created_at FROM blobs WHERE digest = ?1")?
        .query_row([digest.to_string()], |r| {
            Ok((
                BlobRow { size: r.get::<_, i64>(0)? as u64, pinned: r.get(1)?, stamp: r.get(2)? },
                r.get(3)?,
            ))
        })
        .optional()
}

/// The counter of reads a remote served because the local tier lacked them.
fn remote_hits_counter(remote: &str) -> String {
    format!("remote_hits:{remote}")
}

/// Counts one read the remote `remote` served (a local miss, then its hit).
pub(crate) fn count_remote_hit(tx: &Connection, remote: &str) -> rusqlite::Result<()> {
    count(tx, "misses")?;
    tx.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, 1)
         ON CONFLICT(name) DO UPDATE SET value = value + 1",
    )?
    .execute([remote_hits_counter(remote)])?;
    Ok(())
}

/// The reads the remote `remote` served.
pub(crate) fn remote_hits(conn: &Connection, remote: &str) -> rusqlite::Result<u64> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([remote_hits_counter(remote)], |r| r.get(0))
        .optional()?;
    Ok(value.unwrap_or(0).max(0) as u64)
}

/// Sets the hit and miss counters, the remotes' too, back to zero.
pub(crate) fn zero_hits(tx: &Connection) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE counters SET value = 0 WHERE name IN ('hits', 'misses') OR name LIKE 'remote_hits:%'",
    )?
    .execute([])?;
    Ok(())
}

/// Adds `amount` to the counter `name`.
pub(crate) fn add(tx: &Connection, name: &str, amount: u64) -> rusqlite::Result<()> {
    if amount > 0 {
        tx.prepare_cached("UPDATE counters SET value = value + ?2 WHERE name = ?1")?
            .execute(params![name, i64::try_from(amount).unwrap_or(i64::MAX)])?;
    }
    Ok(())
}

/// Keys from `prefix` on, in order, while they start with it: key, digest,
/// size, bound at.
pub(crate) fn keys_with_prefix(
    conn: &Connection,
    prefix: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(String, Digest, u64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT k.key, k.digest, b.size, k.created_at FROM keys k JOIN blobs b ON b.digest = k.digest
         WHERE k.key >= ?1 ORDER BY k.key LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![prefix, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if !key.starts_with(prefix) {
            break;
        }
        let digest: String = row.get(1)?;
        if let Ok(digest) = digest.parse() {
            out.push((key, digest, row.get::<_, i64>(2)? as u64, row.get(3)?));
        }
    }
    Ok(out)
}

/// Marks `digest` as the most recently used blob.
pub(crate) fn touch(tx: &Transaction<'_>, digest: &Digest) -> rusqlite::Result<()> {
    let tick: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'clock' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    tx.prepare_cached("UPDATE blobs SET last_use = ?2, used_at = ?3 WHERE digest = ?1")?
        .execute(params![digest.to_string(), tick, now()])?;
    Ok(())
}

pub(crate) fn insert(
    tx: &Transaction<'_>,
    digest: &Digest,
    size: u64,
    pinned: bool,
    stamp: Option<&str>,
) -> rusqlite::Result<()> {
    let tick: i64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'clock' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    let now = now();
    tx.prepare_cached(
        "INSERT INTO blobs(digest, size, pinned, last_use, used_at, created_at, stamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
    )?
    .execute(params![digest.to_string(), size as i64, pinned, tick, now, stamp])?;
    Ok(())
}

pub(crate) fn set_stamp(tx: &Connection, digest: &Digest, stamp: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE blobs SET stamp = ?2 WHERE digest = ?1")?
        .execute(params![digest.to_string(), stamp])?;
    Ok(())
}

pub(crate) fn set_pinned(tx: &Connection, digest: &Digest, pinned: bool) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE blobs SET pinned = ?2 WHERE digest = ?1 AND pinned != ?2")?
        .execute(params![digest.to_string(), pinned])?;
    Ok(())
}

pub(crate) fn bind_key(tx: &Connection, key: &str, digest: &Digest) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO keys(key, digest, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET digest = excluded.digest, created_at = excluded.created_at",
    )?
    .execute(params![key, digest.to_string(), now()])?;
    Ok(())
}

pub(crate) fn unbind_key(tx: &Connection, key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM keys WHERE key = ?1")?.execute([key])?;
    Ok(())
}

pub(crate) fn keys_of(conn: &Connection, digest: &Digest) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT key FROM keys WHERE digest = ?1 ORDER BY key")?;
    let rows = stmt.query_map([digest.to_string()], |r| r.get(0))?;
    rows.collect()
}

pub(crate) fn delete(tx: &Connection, digest: &Digest) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1")?.execute([digest.to_string()])?;
    Ok(())
}

/// Unpinned blobs, least recently used first, for eviction: calls `visit` with
/// each until it returns false.
pub(crate) fn lru_unpinned(
    conn: &Connection,
    mut visit: impl FnMut(Digest, u64, i64) -> bool,
) -> rusqlite::Result<()> {
    // Blobs owed to a write-back remote stay until they are uploaded.
    let mut stmt = conn.prepare_cached(
        "SELECT digest, size, used_at FROM blobs b WHERE pinned = 0
           AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.digest = b.digest)
         ORDER BY last_use",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let text: String = row.get(0)?;
        let size: i64 = row.get(1)?;
        let used_at: i64 = row.get(2)?;
        if let Ok(digest) = text.parse()
            && !visit(digest, size as u64, used_at)
        {
            break;
        }
    }
    Ok(())
}

/// One upload owed to a write-back remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedUpload {
    /// The remote's name.
    pub remote: String,
    /// The blob to send.
    pub digest: Digest,
    /// A key to bind to it there, once it is sent.
    pub key: Option<String>,
    /// Its size.
    pub size: u64,
    /// Tries so far that failed.
    pub attempts: u32,
    /// When it may be tried again, in seconds since the epoch.
    pub next_try: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

pub(crate) fn enqueue(
    tx: &Connection,
    remote: &str,
    digest: &Digest,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO uploads(remote, digest, key, queued_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(remote, digest, key) DO NOTHING",
    )?
    .execute(params![remote, digest.to_string(), key.unwrap_or(""), now()])?;
    Ok(())
}

/// The uploads owed, oldest first; only those due by `due` if given.
pub(crate) fn queued(conn: &Connection, due: Option<i64>) -> rusqlite::Result<Vec<QueuedUpload>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.remote, u.digest, u.key, b.size, u.attempts, u.next_try, u.last_error
         FROM uploads u JOIN blobs b ON b.digest = u.digest
         WHERE ?1 IS NULL OR u.next_try <= ?1
         ORDER BY u.queued_at, u.remote, u.digest, u.key",
    )?;
    let rows = stmt.query_map([due], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (remote, digest, key, size, attempts, next_try, last_error) = row?;
        // A row always names a stored digest (its foreign key says so).
        let Ok(digest) = digest.parse() else { continue };
        out.push(QueuedUpload {
            remote,
            digest,
            key: (!key.is_empty()).then_some(key),
            size: size as u64,
            attempts: attempts as u32,
            next_try,
            last_error,
        });
    }
    Ok(out)
}

/// Bytes of blobs that wait in the upload queue.
pub(crate) fn queued_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let bytes: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(size), 0) FROM blobs
             WHERE digest IN (SELECT digest FROM uploads)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(bytes as u64)
}

pub(crate) fn dequeue(
    tx: &Connection,
    remote: &str,
    digest: &Digest,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM uploads WHERE remote = ?1 AND digest = ?2 AND key = ?3")?
        .execute(params![remote, digest.to_string(), key.unwrap_or("")])?;
    Ok(())
}

/// Whether any upload is owed.
pub(crate) fn any_queued(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM uploads)")?.query_row([], |r| r.get(0))
}

/// Whether an upload of `digest` (with `key`) is owed to some remote.
pub(crate) fn is_queued(
    conn: &Connection,
    digest: &Digest,
    key: Option<&str>,
) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM uploads WHERE digest = ?1 AND key = ?2)")?
        .query_row(params![digest.to_string(), key.unwrap_or("")], |r| r.get(0))
}

/// Drops the uploads of `digest` (with `key`) owed to any remote.
pub(crate) fn dequeue_everywhere(
    tx: &Connection,
    digest: &Digest,
    key: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM uploads WHERE digest = ?1 AND key = ?2")?
        .execute(params![digest.to_string(), key.unwrap_or("")])?;
    Ok(())
}

pub(crate) fn upload_failed(
    tx: &Connection,
    remote: &str,
    digest: &Digest,
    key: Option<&str>,
    next_try: i64,
    error: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE uploads SET attempts = attempts + 1, next_try = ?4, last_error = ?5
         WHERE remote = ?1 AND digest = ?2 AND key = ?3",
    )?
    .execute(params![remote, digest.to_string(), key.unwrap_or(""), next_try, error])?;
    Ok(())
}

/// One row of `larder ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRow {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) pinned: bool,
    pub(crate) last_use: u64,
    pub(crate) used_at: i64,
    pub(crate) created_at: i64,
    pub(crate) keys: Vec<String>,
}

pub(crate) fn list(conn: &Connection) -> rusqlite::Result<Vec<ListRow>> {
    let mut stmt = conn.prepare(
        "SELECT b.digest, b.size, b.pinned, b.last_use, b.used_at, b.created_at,
                (SELECT group_concat(k.key, char(10)) FROM keys k WHERE k.digest = b.digest)
         FROM blobs b ORDER BY b.last_use DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        let digest: String = r.get(0)?;
        let keys: Option<String> = r.get(6)?;
        let mut keys: Vec<String> =
            keys.map(|k| k.split('\n').map(str::to_string).collect()).unwrap_or_default();
        keys.sort();
        Ok((
            digest,
            r.get::<_, i64>(1)?,
            r.get(2)?,
            r.get::<_, i64>(3)?,
            r.get(4)?,
            r.get(5)?,
            keys,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (digest, size, pinned, last_use, used_at, created_at, keys) = row?;
        if let Ok(digest) = digest.parse() {
            out.push(ListRow {
                digest,
                size: size as u64,
                pinned,
                last_use: last_use as u64,
                used_at,
                created_at,
                keys,
            });
        }
    }
    Ok(out)
}

/// Every digest in the index with its size.
pub(crate) fn all_blobs(conn: &Connection) -> rusqlite::Result<Vec<(Digest, u64)>> {
    let mut stmt = conn.prepare("SELECT digest, size FROM blobs ORDER BY digest")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (digest, size) = row?;
        if let Ok(digest) = digest.parse() {
            out.push((digest, size as u64));
        }
    }
    Ok(out)
}

/// Starts the savepoint in which one blob of a batch is recorded.
pub(crate) fn begin_record(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch("SAVEPOINT record")
}

/// Ends the savepoint [`begin_record`] started, undoing its changes first
/// unless `keep`.
pub(crate) fn end_record(tx: &Connection, keep: bool) -> rusqlite::Result<()> {
    if !keep {
        tx.execute_batch("ROLLBACK TO record")?;
    }
    tx.execute_batch("RELEASE record")
}

/// A number that changes whenever another connection commits to the index
/// (SQLite's `data_version`); no disk access.
pub(crate) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// What the server said of a kept download: its validators, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DownloadVersion {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    /// When, in seconds since the Unix epoch.
    pub(crate) checked_at: i64,
}

/// The version recorded for the download kept under `key`, if it speaks for
/// the blob `key` is bound to now.
pub(crate) fn download_version(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<DownloadVersion>> {
    conn.prepare_cached(
        "SELECT v.etag, v.last_modified, v.checked_at FROM download_validators v \
         JOIN keys k ON k.key = v.key AND k.digest = v.digest WHERE v.key = ?1",
    )?
    .query_row([key], |r| {
        Ok(DownloadVersion { etag: r.get(0)?, last_modified: r.get(1)?, checked_at: r.get(2)? })
    })
    .optional()
}

/// Records what the server said of the download `digest` kept under `key`.
pub(crate) fn set_download_validators(
    tx: &Transaction<'_>,
    key: &str,
    digest: &Digest,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO download_validators(key, digest, etag, last_modified, checked_at) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?2)",
    )?
    .execute(params![key, digest.to_string(), etag, last_modified, now()])?;
    Ok(())
}
