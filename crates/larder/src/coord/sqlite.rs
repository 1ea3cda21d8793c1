//! The coordinator for one host: an SQLite database in the larder home.
//! Every method is one `IMMEDIATE` transaction, which SQLite serializes
//! across processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Attached, Coordinator, DirRecord, DirState, Holder, Holding, NewDir, now_ms};
use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE dirs (
    name        TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    builder     TEXT,
    deleter     TEXT,
    locked      INTEGER NOT NULL DEFAULT 0,
    recipe_hash TEXT,
    created_at  INTEGER NOT NULL,
    meta        TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE holders (
    dir    TEXT NOT NULL REFERENCES dirs(name) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    holder TEXT NOT NULL,
    since  INTEGER NOT NULL,
    PRIMARY KEY (dir, key)
) WITHOUT ROWID;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters(name, value) VALUES ('generation', 0);
"#];

/// Coordination in `state-v1.sqlite` in the larder home.
pub struct SqliteCoordinator {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCoordinator").field("path", &self.path).finish()
    }
}

impl SqliteCoordinator {
    /// Opens (creating if needed) the coordinator of the larder home `home`.
    pub fn open(home: &Path) -> Result<SqliteCoordinator> {
        std::fs::create_dir_all(home).map_err(|e| Error::io("create", home, e))?;
        let path = home.join("state-v1.sqlite");
        let conn = crate::sqlite::open(&path, MIGRATIONS)?;
        Ok(SqliteCoordinator { path, conn: Mutex::new(conn) })
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let run = || {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| Error::index(&self.path, e))
    }
}

/// Drops the dead and expired holders of `name`.
fn reap(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut dead = Vec::new();
    {
        let mut stmt = tx.prepare_cached("SELECT key, holder FROM holders WHERE dir = ?1")?;
        let mut rows = stmt.query([name])?;
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let text: String = row.get(1)?;
            let alive = serde_json::from_str::<Holder>(&text).is_ok_and(|h| h.is_alive(now));
            if !alive {
                dead.push(key);
            }
        }
    }
    for key in dead {
        tx.prepare_cached("DELETE FROM holders WHERE dir = ?1 AND key = ?2")?
            .execute(params![name, key])?;
    }
    Ok(())
}

fn load(tx: &Connection, name: &str) -> rusqlite::Result<Option<DirRecord>> {
    let row = tx
        .prepare_cached(
            "SELECT path, generation, deleter, locked, recipe_hash, created_at, meta, builder
             FROM dirs WHERE name = ?1",
        )?
        .query_row([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .optional()?;
    let Some((path, generation, deleter, locked, recipe_hash, created_at, meta, builder)) = row
    else {
        return Ok(None);
    };
    let mut holders = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT holder, since FROM holders WHERE dir = ?1 ORDER BY since, key",
        )?;
        let mut rows = stmt.query([name])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            if let Ok(holder) = serde_json::from_str(&text) {
                holders.push(Holding { holder, since: row.get(1)? });
            }
        }
    }
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str::<Holder>(&t).ok());
    let state = match (parse(deleter), parse(builder)) {
        (Some(by), _) => DirState::Deleting { by },
        (None, Some(by)) => DirState::Building { by },
        (None, None) => DirState::Ready,
    };
    Ok(Some(DirRecord {
        name: name.to_string(),
        path,
        generation: generation as u64,
        state,
        locked,
        recipe_hash,
        created_at,
        meta: serde_json::from_str::<BTreeMap<String, String>>(&meta).unwrap_or_default(),
        holders,
    }))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl Coordinator for SqliteCoordinator {
    fn attach(&self, name: &str, holder: &Holder, new: &NewDir) -> Result<Attached> {
        self.write(|tx| {
            reap(tx, name)?;
            let created = match load(tx, name)? {
                Some(record @ DirRecord { state: DirState::Deleting { .. }, .. }) => {
                    return Ok(Attached::Deleting(record));
                }
                Some(_) => false,
                None => {
                    let generation: i64 = tx
                        .prepare_cached(
                            "UPDATE counters SET value = value + 1 WHERE name = 'generation'
                             RETURNING value",
                        )?
                        .query_row([], |r| r.get(0))?;
                    let builder = new.build.then(|| json(holder));
                    tx.prepare_cached(
                        "INSERT INTO dirs(name, path, generation, recipe_hash, created_at, meta, builder)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        name,
                        new.path,
                        generation,
                        new.recipe_hash,
                        now_ms(),
                        json(&new.meta),
                        builder
                    ])?;
                    true
                }
            };
            tx.prepare_cached(
                "INSERT INTO holders(dir, key, holder, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(dir, key) DO UPDATE SET holder = excluded.holder",
            )?
            .execute(params![name, holder.key(), json(holder), now_ms()])?;
            let record = load(tx, name)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            Ok(Attached::Held { record, created })
        })
    }

    fn detach(&self, name: &str, holder: &Holder) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM holders WHERE dir = ?1 AND key = ?2")?
                .execute(params![name, holder.key()])?;
            reap(tx, name)?;
            load(tx, name)
        })
    }

    fn get(&self, name: &str) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            reap(tx, name)?;
            load(tx, name)
        })
    }

    fn list(&self) -> Result<Vec<DirRecord>> {
        self.write(|tx| {
            let names: Vec<String> = {
                let mut stmt = tx.prepare_cached("SELECT name FROM dirs ORDER BY name")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::new();
            for name in names {
                reap(tx, &name)?;
                out.extend(load(tx, &name)?);
            }
            Ok(out)
        })
    }

    fn set_locked(&self, name: &str, locked: bool) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE dirs SET locked = ?2 WHERE name = ?1")?
                .execute(params![name, locked])?;
            reap(tx, name)?;
            load(tx, name)
        })
    }

    fn insert_meta(&self, name: &str, entries: &[(String, String)]) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            let Some(mut record) = load(tx, name)? else { return Ok(None) };
            for (k, v) in entries {
                record.meta.insert(k.clone(), v.clone());
            }
            tx.prepare_cached("UPDATE dirs SET meta = ?2 WHERE name = ?1")?
                .execute(params![name, json(&record.meta)])?;
            reap(tx, name)?;
            load(tx, name)
        })
    }

    fn begin_delete(&self, name: &str, deleter: &Holder, force: bool) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            reap(tx, name)?;
            let Some(record) = load(tx, name)? else { return Ok(None) };
            let now = now_ms();
            let free = match &record.state {
                DirState::Deleting { by } => !by.is_alive(now) || by == deleter,
                DirState::Building { by } => {
                    force || (!by.is_alive(now) && record.holders.is_empty() && !record.locked)
                }
                DirState::Ready => force || (record.holders.is_empty() && !record.locked),
            };
            if !free {
                return Ok(None);
            }
            tx.prepare_cached("UPDATE dirs SET deleter = ?2 WHERE name = ?1")?
                .execute(params![name, json(deleter)])?;
            load(tx, name)
        })
    }

    fn finish_delete(&self, name: &str, generation: u64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM dirs WHERE name = ?1 AND generation = ?2")?
                .execute(params![name, generation as i64])?;
            Ok(())
        })
    }

    fn claim_build(&self, name: &str, builder: &Holder) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            reap(tx, name)?;
            let Some(record) = load(tx, name)? else { return Ok(None) };
            let DirState::Building { by } = &record.state else { return Ok(None) };
            if by != builder && by.is_alive(now_ms()) {
                return Ok(None);
            }
            tx.prepare_cached("UPDATE dirs SET builder = ?2 WHERE name = ?1")?
                .execute(params![name, json(builder)])?;
            load(tx, name)
        })
    }

    fn finish_build(&self, name: &str, generation: u64, builder: &Holder) -> Result<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE dirs SET builder = NULL
                     WHERE name = ?1 AND generation = ?2 AND builder = ?3 AND deleter IS NULL",
                )?
                .execute(params![name, generation as i64, json(builder)])?;
            Ok(changed == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = super::SqliteCoordinator::open(dir.path()).expect("open");
        super::super::conformance::run(&coord);
    }
}
