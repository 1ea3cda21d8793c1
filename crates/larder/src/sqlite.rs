//! Opening SQLite databases: the pragmas every larder database uses and the
//! migrations, applied in order and recorded in `pragma user_version`.
//!
//! Migrations are append-only: never edit or remove one that has shipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Error;

/// How long a writer waits for another process's write transaction. Writes are
/// short (no I/O of content happens while they are held, except renames), so a
/// long wait means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating if needed) the database at `path` in WAL mode and brings
/// its schema up to date with `migrations`.
pub fn open(path: &Path, migrations: &[&str]) -> Result<Connection, Error> {
    crate::sharing::prepare_database(path).map_err(|e| Error::io("share", path, e))?;
    let conn = Connection::open(path).map_err(|e| Error::index(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| Error::index(path, e))?;
    // WAL lets readers go on while one process writes; NORMAL sync keeps a
    // process crash harmless and costs no fsync per commit.
    set_wal(&conn).map_err(|e| Error::index(path, e))?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| Error::index(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| Error::index(path, e))?;
    // Each larder command is a short process: checkpointing the WAL at every
    // close would cost it two fsyncs. SQLite checkpoints as the WAL grows.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| Error::index(path, e))?;

    migrate(&conn, migrations).map_err(|e| Error::index(path, e))?;
    trim_wal(&conn, path);
    Ok(conn)
}

/// Past this size, whoever opens the database checkpoints and empties the WAL.
const WAL_TRIM_BYTES: u64 = 512 << 10;

/// Empties a WAL that has grown long. A process that opens the database alone
/// rebuilds the WAL's index from the whole file and forgets what was already
/// checkpointed, so a WAL is only ever restarted by a second write in the same
/// process: for short processes that write once (most larder commands), it
/// would grow without end, and every open and automatic checkpoint with it.
/// Nobody waits for this: if another process is busy, the next opener tries.
/// Long-running writers call it too after a large write, so the WAL does not
/// stay as large as their largest transaction.
pub fn trim_wal(conn: &Connection, path: &Path) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).map_or(0, |m| m.len()) < WAL_TRIM_BYTES {
        return;
    }
    let _ = conn.busy_timeout(Duration::ZERO);
    let trimmed = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
    tracing::debug!(?trimmed, "trimmed the WAL of {}", path.display());
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
}

/// Switches to WAL. SQLite does not call the busy handler while another
/// connection is creating or switching the same database, so wait here.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = conn
            .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(())
                } else {
                    conn.pragma_update(None, "journal_mode", "WAL")
                }
            });
        match attempt {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn migrate(conn: &Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current as usize >= migrations.len() {
        return Ok(());
    }
    // Another process may be migrating at the same moment: take the write lock,
    // then look again.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Regression: processes that each write once grew the WAL without end.
    #[test]
    fn the_wal_of_one_write_processes_stays_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.sqlite");
        let migrations = ["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);"];
        let wal = dir.path().join("x.sqlite-wal");
        let mut largest = 0;
        // A connection opened and closed alone is, for SQLite, a new process.
        for i in 0..600 {
            let conn = super::open(&path, &migrations).expect("open");
            conn.execute("INSERT OR REPLACE INTO t(k, v) VALUES (1, ?1)", [i.to_string()])
                .expect("write");
            drop(conn);
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        assert!(largest < super::WAL_TRIM_BYTES + (64 << 10), "the WAL grew to {largest} bytes");
    }
}
