//! The coordinator for one host: an SQLite database in the larder home.
//! Every method is one `IMMEDIATE` transaction, which SQLite serializes
//! across processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    Attached, BuildProgress, Coordinator, DirRecord, DirState, Holder, Holding, NewDir,
    PoolCoordinator, PoolState, json, now_ms,
};
use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
ALTER TABLE dirs ADD COLUMN failure TEXT;
ALTER TABLE dirs ADD COLUMN progress TEXT;
ALTER TABLE dirs ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dirs ADD COLUMN recipe TEXT;
"#,
    r#"
CREATE TABLE pool_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE dirs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
UPDATE dirs SET fence = generation;
"#,
];

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

/// The database of the home `home`.
pub(crate) fn database(home: &Path) -> std::path::PathBuf {
    home.join("state-v1.sqlite")
}

impl SqliteCoordinator {
    /// Opens (creating if needed) the coordinator of the larder home `home`.
    pub fn open(home: &Path) -> Result<SqliteCoordinator> {
        std::fs::create_dir_all(home).map_err(|e| Error::io("create", home, e))?;
        let path = database(home);
        let conn = crate::sqlite::open(&path, MIGRATIONS)?;
        // Its records stand for things outside it (a machine being made, a
        // folder being deleted, a hold): a commit is flushed before larder
        // acts on it, so a power loss never forgets one of them.
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| Error::index(&path, e))?;
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

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| Error::index(&self.path, e))
    }
}

/// The next fencing token: generations and fences share one counter.
fn next_fence(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "UPDATE counters SET value = value + 1 WHERE name = 'generation' RETURNING value",
    )?
    .query_row([], |r| r.get(0))
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
            "SELECT path, generation, deleter, locked, recipe_hash, created_at, meta, builder,
                    failure, progress, size, recipe, fence
             FROM dirs WHERE name = ?1",
        )?
        .query_row([name], |r| {
            Ok(Row {
                path: r.get(0)?,
                generation: r.get(1)?,
                deleter: r.get(2)?,
                locked: r.get(3)?,
                recipe_hash: r.get(4)?,
                created_at: r.get(5)?,
                meta: r.get(6)?,
                builder: r.get(7)?,
                failure: r.get(8)?,
                progress: r.get(9)?,
                size: r.get(10)?,
                recipe: r.get(11)?,
                fence: r.get(12)?,
            })
        })
        .optional()?;
    let Some(row) = row else {
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
    let state = match (parse(row.deleter), parse(row.builder), row.failure) {
        (Some(by), _, _) => DirState::Deleting { by },
        (None, Some(by), _) => DirState::Building { by },
        (None, None, Some(error)) => DirState::Failed { error },
        (None, None, None) => DirState::Ready,
    };
    // One host: its copy is the one path.
    let copies = BTreeMap::from([(super::Host::current().name.clone(), row.path.clone())]);
    Ok(Some(DirRecord {
        name: name.to_string(),
        path: row.path,
        copies,
        generation: row.generation as u64,
        fence: row.fence as u64,
        state,
        locked: row.locked,
        recipe_hash: row.recipe_hash,
        recipe: row.recipe,
        size: row.size.max(0) as u64,
        progress: row.progress.and_then(|p| serde_json::from_str::<BuildProgress>(&p).ok()),
        created_at: row.created_at,
        meta: serde_json::from_str::<BTreeMap<String, String>>(&row.meta).unwrap_or_default(),
        holders,
    }))
}

/// One row of `dirs`, as stored.
struct Row {
    path: String,
    generation: i64,
    deleter: Option<String>,
    locked: bool,
    recipe_hash: Option<String>,
    created_at: i64,
    meta: String,
    builder: Option<String>,
    failure: Option<String>,
    progress: Option<String>,
    size: i64,
    recipe: Option<String>,
    fence: i64,
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
                    let generation = next_fence(tx)?;
                    let builder = new.builder.as_ref().map(json);
                    tx.prepare_cached(
                        "INSERT INTO dirs(name, path, generation, recipe_hash, created_at, meta,
                                          builder, size, recipe, fence)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?3)",
                    )?
                    .execute(params![
                        name,
                        new.path,
                        generation,
                        new.recipe_hash,
                        now_ms(),
                        json(&new.meta),
                        builder,
                        i64::try_from(new.size).unwrap_or(i64::MAX),
                        new.recipe,
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

    fn peek(&self, name: &str) -> Result<Option<DirRecord>> {
        // One statement after another outside a transaction may see two
        // commits; the record and its holders are only a hint here.
        self.read(|conn| load(conn, name))
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

    fn remove_meta(&self, name: &str, keys: &[String]) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            let Some(mut record) = load(tx, name)? else { return Ok(None) };
            for k in keys {
                record.meta.remove(k);
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
                // A failed build left nothing worth keeping, locked or not.
                DirState::Failed { .. } => force || record.holders.is_empty(),
            };
            if !free {
                return Ok(None);
            }
            let fence = next_fence(tx)?;
            tx.prepare_cached("UPDATE dirs SET deleter = ?2, fence = ?3 WHERE name = ?1")?
                .execute(params![name, json(deleter), fence])?;
            load(tx, name)
        })
    }

    fn finish_delete(&self, name: &str, fence: u64) -> Result<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "DELETE FROM dirs WHERE name = ?1 AND fence = ?2 AND deleter IS NOT NULL",
                )?
                .execute(params![name, fence as i64])?;
            Ok(changed == 1)
        })
    }

    fn claim_build(&self, name: &str, builder: &Holder) -> Result<Option<DirRecord>> {
        self.write(|tx| {
            reap(tx, name)?;
            let Some(record) = load(tx, name)? else { return Ok(None) };
            match &record.state {
                DirState::Building { by } if by == builder || !by.is_alive(now_ms()) => {}
                DirState::Failed { .. } => {}
                _ => return Ok(None),
            }
            let fence = next_fence(tx)?;
            tx.prepare_cached(
                "UPDATE dirs SET builder = ?2, failure = NULL, progress = NULL, fence = ?3
                 WHERE name = ?1",
            )?
            .execute(params![name, json(builder), fence])?;
            load(tx, name)
        })
    }

    fn finish_build(&self, name: &str, fence: u64, builder: &Holder) -> Result<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE dirs SET builder = NULL, progress = NULL
                     WHERE name = ?1 AND fence = ?2 AND builder = ?3 AND deleter IS NULL",
                )?
                .execute(params![name, fence as i64, json(builder)])?;
            Ok(changed == 1)
        })
    }

    fn fail_build(&self, name: &str, fence: u64, builder: &Holder, error: &str) -> Result<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE dirs SET builder = NULL, progress = NULL, failure = ?4
                     WHERE name = ?1 AND fence = ?2 AND builder = ?3 AND deleter IS NULL",
                )?
                .execute(params![name, fence as i64, json(builder), error])?;
            Ok(changed == 1)
        })
    }

    fn report_progress(
        &self,
        name: &str,
        fence: u64,
        builder: &Holder,
        progress: &BuildProgress,
    ) -> Result<bool> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE dirs SET progress = ?4
                     WHERE name = ?1 AND fence = ?2 AND builder = ?3 AND deleter IS NULL",
                )?
                .execute(params![name, fence as i64, json(builder), json(progress)])?;
            Ok(changed == 1)
        })
    }

    fn renew_grant(&self, name: &str, fence: u64, holder: &Holder) -> Result<bool> {
        // Grants here last as long as their process: nothing to renew, only
        // whether it is still held.
        self.read(|conn| {
            let holder = json(holder);
            conn.prepare_cached(
                "SELECT 1 FROM dirs WHERE name = ?1 AND fence = ?2
                 AND (deleter = ?3 OR (deleter IS NULL AND builder = ?3))",
            )?
            .exists(params![name, fence as i64, holder])
        })
    }

    fn add_copy(&self, name: &str, generation: u64, _path: &str) -> Result<Option<DirRecord>> {
        // One host, one copy: the record's path, there since its creation.
        Ok(self.get(name)?.filter(|r| {
            r.generation == generation && !matches!(r.state, DirState::Deleting { .. })
        }))
    }
}

impl PoolCoordinator for SqliteCoordinator {
    fn pools(&self) -> Result<PoolState> {
        let text = self.read(load_pools)?;
        parse_pools(&self.path, text)
    }

    fn update_pools(&self, change: &mut dyn FnMut(&mut PoolState) -> Result<()>) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::index(&self.path, e))?;
        let before = load_pools(&tx).map_err(|e| Error::index(&self.path, e))?;
        let mut state = parse_pools(&self.path, before.clone())?;
        change(&mut state)?;
        let after = json(&state);
        if before.as_deref() != Some(after.as_str()) {
            tx.prepare_cached("INSERT OR REPLACE INTO pool_state(id, state) VALUES (1, ?1)")
                .and_then(|mut stmt| stmt.execute([&after]))
                .map_err(|e| Error::index(&self.path, e))?;
        }
        tx.commit().map_err(|e| Error::index(&self.path, e))
    }
}

fn load_pools(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT state FROM pool_state WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()
}

fn parse_pools(path: &Path, text: Option<String>) -> Result<PoolState> {
    match text {
        None => Ok(PoolState::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            Error::new(
                crate::ErrorKind::Corrupt,
                format!(
                    "the pool state in {} is unreadable ({e}); release what you can, then \
                     delete its pool_state row to start afresh",
                    path.display()
                ),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let coord = super::SqliteCoordinator::open(dir.path()).expect("open");
        super::super::conformance::run(&coord);
        super::super::conformance::run_pools(&coord);
    }
}
