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
    Ok(conn)
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
