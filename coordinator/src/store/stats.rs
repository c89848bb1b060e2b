//! Statistics storage: compressed blocks of samples (see `orrery_series`) in a
//! SQLite file of their own, `stats.db`, next to the main store.
//!
//! Why a separate file: statistics are written all the time and deleted by
//! age, the records almost never; keeping them apart means retention can hand
//! freed pages back to the file system (`auto_vacuum = INCREMENTAL`) without
//! ever vacuuming the record store, and a flood of samples never queues
//! behind, or in front of, record transactions.
//!
//! Layout: one row per block: the series (kind and entity id), its first and
//! last timestamps, its row count, its level (0 for the hourly blocks as they
//! fill, 1 for blocks merged from them) and the encoded bytes. A range query
//! reads only the blocks that overlap the range, through the primary index.
//! Each series' unfinished block is kept as a "tail" row, overwritten as it
//! grows, so a restart loses nothing that was flushed.

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StatsStoreError {
    #[error("statistics database: {0}")]
    Db(String),
    #[error("statistics worker stopped: {0}")]
    Worker(String),
}

fn db(e: rusqlite::Error) -> StatsStoreError {
    StatsStoreError::Db(e.to_string())
}

/// What a series is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKind {
    Vm = 1,
    Volume = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub kind: SeriesKind,
    pub entity: i64,
}

impl SeriesKind {
    pub(crate) fn from_i64(v: i64) -> Option<SeriesKind> {
        match v {
            1 => Some(SeriesKind::Vm),
            2 => Some(SeriesKind::Volume),
            _ => None,
        }
    }
}

/// One encoded block with the facts needed to find it.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    pub key: SeriesKey,
    pub start_ts: i64,
    pub end_ts: i64,
    pub rows: u32,
    pub level: u8,
    pub data: Vec<u8>,
}

/// Where statistics blocks live. SQLite (`SqliteStats`) is the embedded
/// default; another database implements the same operations.
#[async_trait::async_trait]
pub trait StatsStore: Send + Sync {
    /// Stores finished blocks; the `replace`d ones (merged into the new ones)
    /// and the series' saved tails are removed in the same transaction.
    async fn put_blocks(
        &self,
        blocks: Vec<StoredBlock>,
        replace: Vec<(SeriesKey, i64)>,
        drop_tails: Vec<SeriesKey>,
    ) -> Result<(), StatsStoreError>;
    /// Overwrites the unfinished block of each series.
    async fn put_tails(&self, tails: Vec<(SeriesKey, Vec<u8>)>) -> Result<(), StatsStoreError>;
    async fn tails(&self) -> Result<Vec<(SeriesKey, Vec<u8>)>, StatsStoreError>;
    /// Blocks of a series overlapping `[from, to)`, oldest first.
    async fn blocks(
        &self,
        key: SeriesKey,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredBlock>, StatsStoreError>;
    /// Level-0 blocks of a series, for merging.
    async fn hot_blocks(&self, key: SeriesKey) -> Result<Vec<StoredBlock>, StatsStoreError> {
        Ok(self
            .blocks(key, i64::MIN, i64::MAX)
            .await?
            .into_iter()
            .filter(|b| b.level == 0)
            .collect())
    }
    /// Deletes the blocks of `kind` ending before `cutoff` and gives the
    /// space back; returns the blocks deleted.
    async fn delete_before(&self, kind: SeriesKind, cutoff: i64) -> Result<u64, StatsStoreError>;
    /// Bytes the store occupies.
    async fn size_bytes(&self) -> Result<u64, StatsStoreError>;
}

pub struct SqliteStats {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS blocks (
    kind INTEGER NOT NULL, entity INTEGER NOT NULL, start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL, rows INTEGER NOT NULL, level INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (kind, entity, start_ts));
CREATE INDEX IF NOT EXISTS blocks_end ON blocks(kind, end_ts);
CREATE TABLE IF NOT EXISTS tails (
    kind INTEGER NOT NULL, entity INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (kind, entity));
";

impl SqliteStats {
    pub fn open(path: &Path) -> Result<SqliteStats, StatsStoreError> {
        let fresh = !path.exists();
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        if !fresh {
            // auto_vacuum only takes effect on an empty file; an existing one
            // keeps what it was created with.
            conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
                .map_err(db)?;
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteStats {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StatsStoreError> + Send + 'static,
    ) -> Result<T, StatsStoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock();
            f(&mut c)
        })
        .await
        .map_err(|e| StatsStoreError::Worker(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl StatsStore for SqliteStats {
    /// Stores finished blocks; `replace` lists the blocks of a series that the
    /// new ones supersede (merged), removed in the same transaction.
    async fn put_blocks(
        &self,
        blocks: Vec<StoredBlock>,
        replace: Vec<(SeriesKey, i64)>,
        drop_tails: Vec<SeriesKey>,
    ) -> Result<(), StatsStoreError> {
        self.with(move |c| {
            let tx = c.transaction().map_err(db)?;
            {
                let mut del = tx
                    .prepare_cached("DELETE FROM blocks WHERE kind = ?1 AND entity = ?2 AND start_ts = ?3")
                    .map_err(db)?;
                for (k, start) in &replace {
                    del.execute(params![k.kind as i64, k.entity, start])
                        .map_err(db)?;
                }
                let mut ins = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO blocks (kind, entity, start_ts, end_ts, rows, level, data) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(db)?;
                for b in &blocks {
                    ins.execute(params![
                        b.key.kind as i64,
                        b.key.entity,
                        b.start_ts,
                        b.end_ts,
                        b.rows,
                        b.level,
                        b.data
                    ])
                    .map_err(db)?;
                }
                let mut dt = tx
                    .prepare_cached("DELETE FROM tails WHERE kind = ?1 AND entity = ?2")
                    .map_err(db)?;
                for k in &drop_tails {
                    dt.execute(params![k.kind as i64, k.entity]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    /// Overwrites the unfinished block of each series.
    async fn put_tails(&self, tails: Vec<(SeriesKey, Vec<u8>)>) -> Result<(), StatsStoreError> {
        self.with(move |c| {
            let tx = c.transaction().map_err(db)?;
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO tails (kind, entity, data) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(db)?;
                for (k, data) in &tails {
                    st.execute(params![k.kind as i64, k.entity, data])
                        .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn tails(&self) -> Result<Vec<(SeriesKey, Vec<u8>)>, StatsStoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT kind, entity, data FROM tails")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                let (k, e, d) = r.map_err(db)?;
                if let Some(kind) = SeriesKind::from_i64(k) {
                    out.push((SeriesKey { kind, entity: e }, d));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Blocks of a series overlapping `[from, to)`, oldest first.
    async fn blocks(
        &self,
        key: SeriesKey,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredBlock>, StatsStoreError> {
        self.with(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT start_ts, end_ts, rows, level, data FROM blocks \
                     WHERE kind = ?1 AND entity = ?2 AND start_ts < ?4 AND end_ts >= ?3 ORDER BY start_ts",
                )
                .map_err(db)?;
            let rows = st
                .query_map(params![key.kind as i64, key.entity, from, to], |r| {
                    Ok(StoredBlock {
                        key,
                        start_ts: r.get(0)?,
                        end_ts: r.get(1)?,
                        rows: r.get(2)?,
                        level: r.get(3)?,
                        data: r.get(4)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }

    /// Deletes the blocks of `kind` that end before `cutoff` and hands the
    /// freed pages back to the file system; returns the blocks deleted.
    async fn delete_before(&self, kind: SeriesKind, cutoff: i64) -> Result<u64, StatsStoreError> {
        self.with(move |c| {
            let n = c
                .execute(
                    "DELETE FROM blocks WHERE kind = ?1 AND end_ts < ?2",
                    params![kind as i64, cutoff],
                )
                .map_err(db)?;
            // Each step of incremental_vacuum frees one page: run it to the end.
            {
                let mut st = c.prepare("PRAGMA incremental_vacuum").map_err(db)?;
                let mut rows = st.query([]).map_err(db)?;
                while rows.next().map_err(db)?.is_some() {}
            }
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(db)?;
            Ok(n as u64)
        })
        .await
    }

    /// Bytes the file holds (pages in use and free).
    async fn size_bytes(&self) -> Result<u64, StatsStoreError> {
        self.with(|c| {
            let pages: i64 = c
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(db)?;
            let size: i64 = c
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(db)?;
            Ok((pages * size) as u64)
        })
        .await
    }
}
