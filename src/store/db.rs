//! The SQLite database beside the store: which objects are valid, their
//! digests and references, derivation metadata and realisations.
//!
//! The schema is `schema.sql` (migration 1); `PRAGMA user_version` holds the
//! number of migrations applied. The database runs in WAL mode with a long
//! busy timeout and takes write locks up front (`BEGIN IMMEDIATE`), so two
//! cbuild processes on one store wait for each other instead of failing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::StoreError;
use crate::derivation::{DrvHash, FileDigest, ObjectKind, TreeDigest};

/// The migrations, in order; migration `i` brings `user_version` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("migration2.sql"),
    include_str!("migration3.sql"),
];

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// An open store database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// A store object as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Database id.
    pub id: i64,
    /// Base name in the store directory.
    pub path: String,
    /// Source, derivation or output.
    pub kind: ObjectKind,
    /// Tree digest.
    pub digest: TreeDigest,
    /// Bytes of file content.
    pub size: u64,
    /// The `.drv` that built it, for outputs.
    pub deriver: Option<String>,
    /// When it was registered (unix seconds).
    pub registered: i64,
    /// Whether it was built in the sandbox (always true for sources and `.drv`s).
    pub sandboxed: bool,
}

/// An object to register.
#[derive(Clone, Debug)]
pub struct NewObject {
    /// Base name.
    pub path: String,
    /// Kind.
    pub kind: ObjectKind,
    /// Tree digest.
    pub digest: TreeDigest,
    /// Bytes of file content.
    pub size: u64,
    /// The `.drv` that built it.
    pub deriver: Option<String>,
    /// Base names of the objects it refers to; they must be valid already or
    /// come earlier in the same batch.
    pub references: Vec<String>,
    /// For a `.drv`: its hash, content, meta (JSON) and run inputs (JSON).
    pub derivation: Option<NewDerivation>,
    /// False for outputs built with `--sandbox=off`.
    pub sandboxed: bool,
}

/// What the `derivations` table keeps of a `.drv`.
#[derive(Clone, Debug)]
pub struct NewDerivation {
    /// BLAKE3 of the content.
    pub hash: DrvHash,
    /// The canonical bytes.
    pub content: Vec<u8>,
    /// Meta, JSON.
    pub meta: String,
    /// Run inputs, JSON array of base names.
    pub run_inputs: String,
}

/// Stat data that, when unchanged, lets a file's digest be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds.
    pub ctime_ns: i64,
    /// Mode bits.
    pub mode: u32,
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// The database file must be a file (or not exist yet): SQLite reports a
/// directory in its place as "unable to open", which read like a read-only
/// store.
fn file_or_nothing(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(StoreError::DbNotAFile {
            path: path.to_path_buf(),
            kind: if m.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            },
        }),
        _ => Ok(()),
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        file_or_nothing(path)?;
        let open_err = |source| StoreError::OpenDb {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let mut db = Db {
            conn,
            path: path.to_path_buf(),
        };
        // Opening races with other processes opening or recovering the same
        // database; some of those paths report "busy" without waiting.
        let started = std::time::Instant::now();
        let mut configured = db.configure();
        while let Err(e) = &configured {
            let busy = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            if !busy || started.elapsed() > BUSY_TIMEOUT {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            configured = db.configure();
        }
        configured.map_err(|source| {
            if is_corrupt(&source) {
                StoreError::CorruptDb {
                    path: path.to_path_buf(),
                    source,
                }
            } else {
                StoreError::OpenDb {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        db.migrate()?;
        Ok(db)
    }

    /// Opens the database at `path` read-only, for a store on a file system
    /// that cannot be written. Its schema must be one this cbuild knows.
    pub fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        file_or_nothing(path)?;
        let err = |source| StoreError::OpenDb {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let db = Db {
            conn,
            path: path.to_path_buf(),
        };
        let version = db.schema_version()?;
        if version != MIGRATIONS.len() {
            return Err(if version > MIGRATIONS.len() {
                StoreError::NewerSchema {
                    path: path.to_path_buf(),
                    found: version,
                    known: MIGRATIONS.len(),
                }
            } else {
                // Migrating would write.
                StoreError::ReadOnly {
                    root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                    what: format!("migrating its database from schema version {version}"),
                }
            });
        }
        Ok(db)
    }

    fn configure(&mut self) -> rusqlite::Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Closing would otherwise copy the whole write-ahead log into the
        // database and sync it, for every short-lived cbuild process; the log
        // is durable as it is and is checkpointed once it passes 64 MiB.
        self.conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        // Reading the schema version first makes a file that is not a
        // database fail here, with a clear error, rather than later.
        let _: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "write-ahead logging is not available (journal mode is {mode})"
                )),
            ));
        }
        self.conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 16384;",
        )?;
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        if is_corrupt(&source) {
            StoreError::CorruptDb {
                path: self.path.clone(),
                source,
            }
        } else {
            StoreError::Db {
                path: self.path.clone(),
                source,
            }
        }
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map(|v| v as usize)
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        // Reading the version takes no write lock: a store that is up to
        // date never waits for a writer here.
        if self.schema_version()? == MIGRATIONS.len() {
            return Ok(());
        }
        let path = self.path.clone();
        self.write(|tx| {
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let version = version as usize;
            if version > MIGRATIONS.len() {
                return Ok(Some(version));
            }
            for (k, sql) in MIGRATIONS.iter().enumerate().skip(version) {
                tx.execute_batch(sql)?;
                tx.execute_batch(&format!("PRAGMA user_version = {}", k + 1))?;
            }
            Ok(None)
        })?
        .map_or(Ok(()), |found| {
            Err(StoreError::NewerSchema {
                path,
                found,
                known: MIGRATIONS.len(),
            })
        })
    }

    /// Whether `base` is a registered object.
    pub fn is_valid(&self, base: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM objects WHERE path = ?1")
            .and_then(|mut s| s.exists([base]))
            .map_err(|e| self.err(e))
    }

    /// The registered object `base`, if any.
    pub fn object(&self, base: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, path, kind, digest, size, deriver, registered, sandboxed \
                 FROM objects WHERE path = ?1",
            )
            .and_then(|mut s| s.query_row([base], row_to_info).optional())
            .map_err(|e| self.err(e))
    }

    /// The base names of the registered objects among `roots` and of
    /// everything they refer to, transitively: one query, whatever the
    /// closure's depth (a build's inputs are asked for once per build).
    pub fn closure_of(&self, roots: &[String]) -> Result<Vec<String>, StoreError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(roots)
            .map_err(|e| self.err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let mut s = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE c(id) AS ( \
                   SELECT id FROM objects WHERE path IN (SELECT value FROM json_each(?1)) \
                   UNION SELECT r.reference FROM refs r JOIN c ON r.referrer = c.id) \
                 SELECT o.path FROM c JOIN objects o ON o.id = c.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([list], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The base names `id` refers to, sorted.
    pub fn references(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT o.path FROM refs r JOIN objects o ON o.id = r.reference \
                 WHERE r.referrer = ?1 ORDER BY o.path",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([id], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Meta and run inputs of a registered `.drv`.
    pub fn derivation_meta(&self, base: &str) -> Result<Option<(String, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT d.meta, d.run_inputs FROM derivations d JOIN objects o ON o.id = d.object \
                 WHERE o.path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([base], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Meta and run inputs of those of `bases` that are registered `.drv`s,
    /// in a few queries rather than one per path.
    pub fn derivation_metas(
        &self,
        bases: &[String],
    ) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut out = HashMap::new();
        for chunk in bases.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT o.path, d.meta, d.run_inputs FROM derivations d JOIN objects o ON o.id = d.object \
                 WHERE o.path IN ({marks})"
            );
            let mut s = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let rows = s
                .query_map(rusqlite::params_from_iter(chunk.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (k, v) = row.map_err(|e| self.err(e))?;
                out.insert(k, v);
            }
        }
        Ok(out)
    }

    /// The object realising `output` of the derivation (or resolved
    /// derivation) whose hash is `key`.
    pub fn realisation(&self, key: &DrvHash, output: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT o.path FROM realisations r JOIN objects o ON o.id = r.object \
                 WHERE r.key = ?1 AND r.output = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![&key.0[..], output], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// The stored hash and content of a registered `.drv`.
    pub fn derivation_record(&self, base: &str) -> Result<Option<(DrvHash, Vec<u8>)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT d.drv_hash, d.content FROM derivations d JOIN objects o ON o.id = d.object \
                 WHERE o.path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([base], |r| {
                    let h: Vec<u8> = r.get(0)?;
                    let mut hash = [0u8; 32];
                    if h.len() == 32 {
                        hash.copy_from_slice(&h);
                    }
                    Ok((DrvHash(hash), r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Whether an object registered here was built from the `.drv` `base`.
    pub fn built_by(&self, base: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM objects WHERE deriver = ?1 LIMIT 1")
            .and_then(|mut s| s.exists([base]))
            .map_err(|e| self.err(e))
    }

    /// Base names of every `.drv` that has realised outputs, oldest first.
    pub fn realised_derivations(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT o.path FROM derivations d JOIN objects o ON o.id = d.object \
                 WHERE EXISTS (SELECT 1 FROM realisations r WHERE r.key = d.drv_hash) \
                 ORDER BY o.registered, o.id",
            )
            .and_then(|mut s| {
                s.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(|e| self.err(e))
    }

    /// Records that `output` of `key` is the registered object `path`.
    pub fn add_realisation(
        &mut self,
        key: &DrvHash,
        output: &str,
        path: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO realisations (key, output, object) \
                 SELECT ?1, ?2, id FROM objects WHERE path = ?3",
                params![&key.0[..], output, path],
            )
            .map(|_| ())
        })
    }

    /// Records a `cbuild check` of the object `base`.
    pub fn add_check(
        &mut self,
        base: &str,
        rounds: usize,
        reproducible: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let verdict = if reproducible {
            "reproducible"
        } else {
            "differs"
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO checks (object, checked, rounds, verdict) \
                 SELECT id, ?2, ?3, ?4 FROM objects WHERE path = ?1",
                params![base, now, rounds as i64, verdict],
            )
            .map(|_| ())
        })
    }

    /// The checks of object `id`, newest first: (unix time, rounds,
    /// verdict).
    pub fn checks(&self, id: i64) -> Result<Vec<(i64, i64, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT checked, rounds, verdict FROM checks WHERE object = ?1 \
                 ORDER BY checked DESC, id DESC",
            )
            .and_then(|mut s| {
                s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The content of a registered `.drv`.
    pub fn derivation_content(&self, base: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT d.content FROM derivations d JOIN objects o ON o.id = d.object \
                 WHERE o.path = ?1",
            )
            .and_then(|mut s| s.query_row([base], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Registers `objects` in one transaction. Objects already registered
    /// are kept (a `.drv`'s meta is updated: it is never hashed, and the
    /// latest evaluation wins).
    pub fn register(&mut self, objects: &[NewObject], now: i64) -> Result<(), StoreError> {
        self.register_with(objects, &[], now)
    }

    /// Registers `objects` and records `realisations` (key, output, base
    /// name of an object registered or in `objects`) in one transaction: a
    /// build's outputs and the proof that they are its outputs become valid
    /// together.
    pub fn register_with(
        &mut self,
        objects: &[NewObject],
        realisations: &[(DrvHash, String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        if objects.is_empty() && realisations.is_empty() {
            return Ok(());
        }
        let mut missing: Option<(String, String)> = None;
        self.write(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO objects (path, kind, digest, size, deriver, registered, sandboxed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (path) DO NOTHING",
            )?;
            let mut id_of = tx.prepare_cached("SELECT id FROM objects WHERE path = ?1")?;
            let mut add_ref = tx.prepare_cached(
                "INSERT OR IGNORE INTO refs (referrer, reference) VALUES (?1, ?2)",
            )?;
            let mut add_drv = tx.prepare_cached(
                "INSERT INTO derivations (object, drv_hash, content, meta, run_inputs) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (object) DO UPDATE \
                 SET meta = excluded.meta, run_inputs = excluded.run_inputs",
            )?;
            // Ids of the objects of this batch: references mostly point at them.
            let mut ids: HashMap<&str, i64> = HashMap::with_capacity(objects.len());
            for o in objects {
                let fresh = insert.execute(params![
                    o.path,
                    o.kind.as_str(),
                    &o.digest.0[..],
                    o.size as i64,
                    o.deriver,
                    now,
                    o.sandboxed
                ])?;
                let id: i64 = if fresh == 1 {
                    tx.last_insert_rowid()
                } else {
                    id_of.query_row([&o.path], |r| r.get(0))?
                };
                ids.insert(&o.path, id);
                if fresh == 1 {
                    for r in &o.references {
                        let known = match ids.get(r.as_str()) {
                            Some(&rid) => Some(rid),
                            None => id_of
                                .query_row([r], |row| row.get::<_, i64>(0))
                                .optional()?,
                        };
                        let Some(rid) = known else {
                            missing = Some((o.path.clone(), r.clone()));
                            // Rolls the whole transaction back.
                            return Err(rusqlite::Error::QueryReturnedNoRows);
                        };
                        add_ref.execute(params![id, rid])?;
                    }
                }
                if let Some(d) = &o.derivation {
                    add_drv.execute(params![id, &d.hash.0[..], d.content, d.meta, d.run_inputs])?;
                }
            }
            let mut realise = tx.prepare_cached(
                "INSERT OR REPLACE INTO realisations (key, output, object) \
                 SELECT ?1, ?2, id FROM objects WHERE path = ?3",
            )?;
            for (key, output, path) in realisations {
                realise.execute(params![&key.0[..], output, path])?;
            }
            Ok(())
        })
        .map_err(|e| match missing.take() {
            Some((object, reference)) => StoreError::MissingReference { object, reference },
            None => e,
        })
    }

    /// Every `.drv` record: base name to (hash, content).
    pub fn derivation_records(&self) -> Result<HashMap<String, (DrvHash, Vec<u8>)>, StoreError> {
        let mut s = self
            .conn
            .prepare(
                "SELECT o.path, d.drv_hash, d.content FROM derivations d \
                 JOIN objects o ON o.id = d.object",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| {
                let h: Vec<u8> = r.get(1)?;
                let mut hash = [0u8; 32];
                if h.len() == 32 {
                    hash.copy_from_slice(&h);
                }
                Ok((
                    r.get::<_, String>(0)?,
                    (DrvHash(hash), r.get::<_, Vec<u8>>(2)?),
                ))
            })
            .and_then(|r| r.collect::<rusqlite::Result<HashMap<_, _>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Whether an object with this hash part is registered.
    pub fn object_by_hash_part(&self, hash: &str) -> Result<bool, StoreError> {
        // Base names `<hash>-<name>` sort from `<hash>-` up to `<hash>.`.
        self.conn
            .prepare_cached("SELECT 1 FROM objects WHERE path >= ?1 AND path < ?2 LIMIT 1")
            .and_then(|mut s| s.exists([format!("{hash}-"), format!("{hash}.")]))
            .map_err(|e| self.err(e))
    }

    /// Every registered object and every reference: what the collector and
    /// `store verify` walk.
    pub fn graph(&self) -> Result<Graph, StoreError> {
        let mut objects = Vec::new();
        let mut s = self
            .conn
            .prepare(
                "SELECT id, path, kind, digest, size, deriver, registered, sandboxed FROM objects",
            )
            .map_err(|e| self.err(e))?;
        let rows = s.query_map([], row_to_info).map_err(|e| self.err(e))?;
        for r in rows {
            objects.push(r.map_err(|e| self.err(e))?);
        }
        let mut refs = Vec::new();
        let mut s = self
            .conn
            .prepare("SELECT referrer, reference FROM refs")
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        for r in rows {
            refs.push(r.map_err(|e| self.err(e))?);
        }
        Ok(Graph { objects, refs })
    }

    /// Unregisters the objects `ids` in one transaction, set by set rather
    /// than row by row (a collection deletes tens of thousands): any of them
    /// that an object staying registered refers to, directly or through
    /// others, stays too. Returns the ids unregistered.
    pub fn unregister(&mut self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        // Foreign-key actions run per row, as triggers; the rows they would
        // delete are deleted here by set, in the same transaction, with the
        // checks off (a connection setting, not allowed inside one).
        self.conn
            .execute_batch("PRAGMA foreign_keys = OFF")
            .map_err(|e| self.err(e))?;
        let result = self.write(|tx| {
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS gc_dead (id INTEGER PRIMARY KEY); \
                 DELETE FROM temp.gc_dead;",
            )?;
            {
                let mut ins =
                    tx.prepare_cached("INSERT OR IGNORE INTO temp.gc_dead (id) VALUES (?1)")?;
                for id in ids {
                    ins.execute([id])?;
                }
            }
            // What a surviving object refers to survives, to a fixed point.
            loop {
                let n = tx.execute(
                    "DELETE FROM temp.gc_dead WHERE id IN (SELECT r.reference FROM refs r \
                     WHERE r.referrer != r.reference \
                     AND r.referrer NOT IN (SELECT id FROM temp.gc_dead))",
                    [],
                )?;
                if n == 0 {
                    break;
                }
            }
            tx.execute_batch(
                "DELETE FROM refs WHERE referrer IN (SELECT id FROM temp.gc_dead); \
                 DELETE FROM realisations WHERE object IN (SELECT id FROM temp.gc_dead); \
                 DELETE FROM derivations WHERE object IN (SELECT id FROM temp.gc_dead); \
                 DELETE FROM checks WHERE object IN (SELECT id FROM temp.gc_dead); \
                 DELETE FROM objects WHERE id IN (SELECT id FROM temp.gc_dead);",
            )?;
            let mut sel = tx.prepare("SELECT id FROM temp.gc_dead")?;
            let gone = sel
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            tx.execute_batch("DELETE FROM temp.gc_dead")?;
            Ok(gone)
        });
        let on = self
            .conn
            .execute_batch("PRAGMA foreign_keys = ON")
            .map_err(|e| self.err(e));
        let gone = result?;
        on?;
        Ok(gone)
    }

    /// The first column of every row `sql` gives, as text.
    fn column(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let mut s = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        s.query_map([], |r| r.get::<_, String>(0))
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))
    }

    /// Forgets cached file digests of paths for which `gone(path)` holds.
    pub fn prune_file_cache(&mut self, gone: impl Fn(&str) -> bool) -> Result<usize, StoreError> {
        let paths: Vec<String> = self
            .column("SELECT path FROM file_cache")?
            .into_iter()
            .filter(|p| gone(p))
            .collect();
        if paths.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut del = tx.prepare_cached("DELETE FROM file_cache WHERE path = ?1")?;
            for p in &paths {
                del.execute([p])?;
            }
            Ok(())
        })?;
        Ok(paths.len())
    }

    /// `PRAGMA integrity_check` and `PRAGMA foreign_key_check`: what they
    /// report, one line each (empty when the database is sound).
    pub fn integrity(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .column("PRAGMA integrity_check")?
            .into_iter()
            .filter(|l| l != "ok")
            .collect();
        let mut s = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| {
                Ok(format!(
                    "table {} row {} refers to a missing row of {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?.unwrap_or(-1),
                    r.get::<_, String>(2)?
                ))
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        out.extend(rows);
        Ok(out)
    }

    /// Runs `f` in a write transaction taken up front (`BEGIN IMMEDIATE`),
    /// committed when it succeeds and rolled back otherwise.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let v = f(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(v)
    }

    /// Cached file digests for paths under `prefix` (an absolute directory
    /// path ending in `/`).
    pub fn file_cache(
        &self,
        prefix: &str,
    ) -> Result<HashMap<String, (FileStat, FileDigest)>, StoreError> {
        // Paths under the prefix sort between `prefix` and `prefix` with its
        // last byte incremented ('/' + 1 = '0').
        let mut upper = prefix.to_string();
        upper.pop();
        upper.push('0');
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, digest FROM file_cache \
                 WHERE path >= ?1 AND path < ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([prefix, &upper], |r| {
                let digest: Vec<u8> = r.get(7)?;
                Ok((
                    r.get::<_, String>(0)?,
                    FileStat {
                        dev: r.get::<_, i64>(1)? as u64,
                        ino: r.get::<_, i64>(2)? as u64,
                        size: r.get::<_, i64>(3)? as u64,
                        mtime_ns: r.get(4)?,
                        ctime_ns: r.get(5)?,
                        mode: r.get::<_, i64>(6)? as u32,
                    },
                    digest,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (path, stat, digest) = row.map_err(|e| self.err(e))?;
            if let Ok(d) = <[u8; 32]>::try_from(digest.as_slice()) {
                out.insert(path, (stat, FileDigest(d)));
            }
        }
        Ok(out)
    }

    /// Stores file digests in the cache.
    pub fn update_file_cache(
        &mut self,
        rows: &[(String, FileStat, FileDigest)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut s = tx.prepare_cached(
                "INSERT OR REPLACE INTO file_cache (path, dev, ino, size, mtime_ns, ctime_ns, mode, digest) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (p, st, d) in rows {
                s.execute(params![
                    p,
                    st.dev as i64,
                    st.ino as i64,
                    st.size as i64,
                    st.mtime_ns,
                    st.ctime_ns,
                    i64::from(st.mode),
                    &d.0[..]
                ])?;
            }
            Ok(())
        })
    }
}

/// The object graph: every registered object and every reference (by
/// object id).
pub struct Graph {
    /// The objects.
    pub objects: Vec<ObjectInfo>,
    /// (referrer, reference) pairs.
    pub refs: Vec<(i64, i64)>,
}

fn row_to_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectInfo> {
    let kind: String = r.get(2)?;
    let digest: Vec<u8> = r.get(3)?;
    let bad =
        |i| rusqlite::Error::InvalidColumnType(i, "value".into(), rusqlite::types::Type::Blob);
    Ok(ObjectInfo {
        id: r.get(0)?,
        path: r.get(1)?,
        kind: ObjectKind::parse(&kind).ok_or_else(|| bad(2))?,
        digest: TreeDigest(digest.as_slice().try_into().map_err(|_| bad(3))?),
        size: r.get::<_, i64>(4)? as u64,
        deriver: r.get(5)?,
        registered: r.get(6)?,
        sandboxed: r.get::<_, i64>(7)? != 0,
    })
}
