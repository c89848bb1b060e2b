//! The embedded store: one SQLite file in WAL mode, through rusqlite only.
//! Writes go to one writer thread that owns the write connection (see
//! `writer`); reads use a small pool of connections of their own, each query
//! run on a blocking thread.

use super::sql::{self, Dialect};
use super::writer::Writer;
use super::*;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct SqliteStore {
    path: PathBuf,
    readers: Readers,
    id_blocks: IdBlocks,
    generations: Arc<Vec<AtomicU64>>,
    /// Applies commits and id reservations (see `writer`).
    rows: Writer,
}

/// Read connections kept open.
const READERS: usize = 4;

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The schema's migrations, in order. Each is frozen once released: a
/// change to the schema is a new file with the next number, never an edit
/// (a test checks the released files' digests).
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001.sql")),
    (2, include_str!("migrations/0002.sql")),
    (3, include_str!("migrations/0003.sql")),
    (4, include_str!("migrations/0004.sql")),
    (5, include_str!("migrations/0005.sql")),
    (6, include_str!("migrations/0006.sql")),
    (7, include_str!("migrations/0007.sql")),
    (8, include_str!("migrations/0008.sql")),
];

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(db)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// A few read connections; a query borrows one and runs on a blocking
/// thread, so the async runtime never waits on SQLite.
struct Readers {
    path: PathBuf,
    idle: parking_lot::Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

impl Readers {
    fn new(path: &Path) -> Self {
        Readers {
            path: path.to_path_buf(),
            idle: parking_lot::Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(READERS),
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Db("the store is closed".into()))?;
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => open_conn(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|c| {
                // Reads only: a bug that writes here fails loudly.
                c.execute_batch("PRAGMA query_only = ON;").map_err(db)?;
                Ok(c)
            })?,
        };
        let (conn, r) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Db(format!("a read did not finish: {e}")))?;
        self.idle.lock().push(conn);
        r.map_err(db)
    }
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        // Creates the file (and WAL mode) before the other connections open.
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            open_conn(
                &p,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map(drop)
        })
        .await
        .map_err(|e| StoreError::Db(e.to_string()))??;
        let generations: Arc<Vec<AtomicU64>> =
            Arc::new(Kind::ALL.iter().map(|_| AtomicU64::new(0)).collect());
        let rows = Writer::start(path, generations.clone())?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            readers: Readers::new(path),
            id_blocks: IdBlocks::default(),
            generations,
            rows,
        })
    }
}

fn sql_val(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::I(i) => rusqlite::types::Value::Integer(*i),
        Val::S(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

fn to_row(r: &rusqlite::Row<'_>) -> Result<Row, rusqlite::Error> {
    Ok(Row {
        id: r.get(0)?,
        uuid: r.get(1)?,
        version: r.get(2)?,
        data: r.get(3)?,
    })
}

/// A store migrated by a newer coordinator is refused rather than served
/// with a schema this binary does not know.
pub(crate) fn check_not_newer(current: i64) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(StoreError::Db(format!(
            "the store's schema is version {current}, newer than this coordinator's {known}: \
             run the newer coordinator (or restore a backup taken before the upgrade)"
        )));
    }
    Ok(())
}

/// Applies the migrations newer than the schema's version, each with its
/// version row in one transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        .map_err(db)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    check_not_newer(current)?;
    for (v, sql) in MIGRATIONS {
        if *v <= current {
            continue;
        }
        let script = format!(
            "BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_version (version) VALUES ({v});\nCOMMIT;"
        );
        if let Err(e) = conn.execute_batch(&script) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(db(e));
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_conn(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            migrate(&conn)
        })
        .await
        .map_err(|e| StoreError::Db(e.to_string()))?
    }

    async fn is_initialised(&self) -> Result<bool, StoreError> {
        let n: i64 = self
            .readers
            .run(|c| c.query_row("SELECT COUNT(*) FROM domains", [], |r| r.get(0)))
            .await?;
        Ok(n > 0)
    }

    async fn get(&self, kind: Kind, id: i64) -> Result<Option<Row>, StoreError> {
        let sql = format!(
            "SELECT id, uuid, version, data FROM {} WHERE id = ?",
            kind.table()
        );
        self.readers
            .run(move |c| c.prepare_cached(&sql)?.query_row([id], to_row).optional())
            .await
    }

    async fn get_by_uuid(&self, kind: Kind, uuid: &str) -> Result<Option<Row>, StoreError> {
        let sql = format!(
            "SELECT id, uuid, version, data FROM {} WHERE uuid = ?",
            kind.table()
        );
        let uuid = uuid.to_string();
        self.readers
            .run(move |c| c.prepare_cached(&sql)?.query_row([uuid], to_row).optional())
            .await
    }

    async fn find(&self, kind: Kind, q: &Query) -> Result<(Vec<Row>, u64), StoreError> {
        let (sql, binds) = sql::find(kind, q, Dialect::Sqlite);
        let values: Vec<rusqlite::types::Value> = binds.iter().map(sql_val).collect();
        let rows: Vec<Row> = self
            .readers
            .run(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(params_from_iter(values.iter()), to_row)?;
                rows.collect()
            })
            .await?;
        let total = match sql::total_known(q, rows.len()) {
            Some(t) => t,
            None => self.count(kind, q).await?,
        };
        Ok((rows, total))
    }

    async fn count(&self, kind: Kind, q: &Query) -> Result<u64, StoreError> {
        let (sql, binds) = sql::count(kind, q, Dialect::Sqlite);
        let values: Vec<rusqlite::types::Value> = binds.iter().map(sql_val).collect();
        let n: i64 = self
            .readers
            .run(move |c| {
                c.prepare_cached(&sql)?
                    .query_row(params_from_iter(values.iter()), |r| r.get(0))
            })
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn allocate_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        self.id_blocks
            .take(kind, n, |k, want| self.rows.reserve_ids(k, want))
            .await
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.rows.commit(ops).await
    }

    fn generation(&self, kind: Kind) -> u64 {
        self.generations[kind.ordinal()].load(Ordering::Acquire)
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let (pages, size): (i64, i64) = self
            .readers
            .run(|c| {
                let pages = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let size = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                Ok((pages, size))
            })
            .await?;
        Ok((pages * size).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// Digests of the released migrations. A released migration never
    /// changes; a schema change is a new migration.
    const RELEASED: &[(i64, &str)] = &[
        (
            1,
            "eada0c3fa9c3ba3b97e75392f1ed8641a9ecd5e367dbe03c6b6557cbec471617",
        ),
        (
            2,
            "b43db6a5de84f7ceff5fa2fb0406a082c608453ecd1c9655cd30e697d1191d7a",
        ),
        (
            3,
            "ff26e8b4bbbf50d1c4effba8636e7cffcd917ca0227609c9e20c53d92d999e79",
        ),
        (
            4,
            "c4344478788310fb6c2ad5bac83c144f7dc4ad385577700d5e9df7a8aa9a0ee2",
        ),
        (
            5,
            "2e8a9870ab9c3d5d9b46b232d9a6c099c5a36b7caa7755858152d3429778fb0d",
        ),
        (
            6,
            "6e7ae2b2b1f5929b3be143cb2173c67de7b583430c748e592896224eda0f36ae",
        ),
        (
            7,
            "9c08c92bd667440495d08e143e58e0edaf983bf0e1e5242247ff4e6f4a671a51",
        ),
        (
            8,
            "52c75278e760634e827a5cb02ee785eff4d285393c06c4dea6d4624a151958f4",
        ),
    ];

    #[test]
    fn released_migrations_never_change() {
        for (v, digest) in RELEASED {
            let (_, sql) = MIGRATIONS
                .iter()
                .find(|(n, _)| n == v)
                .expect("a released migration is never removed");
            let got: String = sha2::Sha256::digest(sql.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                &got, digest,
                "migration {v} was edited; add a new one instead"
            );
        }
        // Numbered without gaps, in order.
        for (i, (v, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i64 + 1);
        }
    }

    #[tokio::test]
    async fn migrating_twice_is_a_no_op_and_every_kind_has_its_table() {
        let dir = std::env::temp_dir().join(format!("orrery-mig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("o.db")).await.unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        for k in Kind::ALL {
            let q = Query::new().and(Cond::IsNull(Col::LeaseExpiry));
            assert_eq!(store.count(*k, &q).await.unwrap(), 0, "{k:?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Copies a live SQLite database into `to` with SQLite's online backup, page
/// by page, so a store being served is copied consistently (writers wait
/// only for each small step). `to` must not exist.
pub fn backup(from: &std::path::Path, to: &std::path::Path) -> Result<(), StoreError> {
    if to.exists() {
        return Err(StoreError::Db(format!("{} already exists", to.display())));
    }
    let src = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Db(format!("{}: {e}", from.display())))?;
    let mut dst = rusqlite::Connection::open(to)
        .map_err(|e| StoreError::Db(format!("{}: {e}", to.display())))?;
    let b =
        rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| StoreError::Db(e.to_string()))?;
    b.run_to_completion(256, std::time::Duration::from_millis(5), None)
        .map_err(|e| StoreError::Db(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod backup_tests {
    use super::*;

    #[test]
    fn a_backup_is_a_complete_database_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);",
        )
        .unwrap();
        let to = dir.path().join("b.db");
        backup(&db, &to).unwrap();
        let n: i64 = rusqlite::Connection::open(&to)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        assert!(backup(&db, &to).is_err());
    }
}
