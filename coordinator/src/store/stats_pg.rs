//! Statistics blocks in PostgreSQL, for coordinators sharing one database:
//! the same two tables as `stats.db` (blocks and tails, named `stats_blocks`
//! and `stats_tails` beside the records), so every coordinator answers
//! history from the same rows. One coordinator writes (the leader, see
//! `StatsHub`); the others read.
//!
//! One connection of its own: statistics writes are a block per series per
//! hour and the tails once a minute, and never wait behind record commits.

use super::pg_tls::Dial;
use super::stats::{SeriesKey, SeriesKind, StatsStore, StatsStoreError, StoredBlock};
use tokio_postgres::Client;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stats_blocks (
    kind BIGINT NOT NULL, entity BIGINT NOT NULL, start_ts BIGINT NOT NULL,
    end_ts BIGINT NOT NULL, rows BIGINT NOT NULL, level BIGINT NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (kind, entity, start_ts));
CREATE INDEX IF NOT EXISTS stats_blocks_end ON stats_blocks(kind, end_ts);
CREATE TABLE IF NOT EXISTS stats_tails (
    kind BIGINT NOT NULL, entity BIGINT NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (kind, entity));
";

/// Schema creation from several coordinators at once: one at a time.
const SCHEMA_LOCK: i64 = 0x006f_7272_6572_7953;

fn db(e: tokio_postgres::Error) -> StatsStoreError {
    match e.as_db_error() {
        Some(d) => StatsStoreError::Db(format!("{}: {}", d.code().code(), d.message())),
        None => StatsStoreError::Db(e.to_string()),
    }
}

pub struct PgStats {
    dial: Dial,
    conn: tokio::sync::Mutex<Option<Client>>,
}

impl PgStats {
    /// Connects and creates the tables where they are missing.
    pub async fn open(dial: Dial) -> Result<PgStats, StatsStoreError> {
        let s = PgStats {
            dial,
            conn: tokio::sync::Mutex::new(None),
        };
        let mut c = s.client().await?;
        let client = c
            .as_mut()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(db)?;
        tx.batch_execute(SCHEMA).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        drop(c);
        Ok(s)
    }

    /// The connection, opened again if the server closed it.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, StatsStoreError> {
        let mut g = self.conn.lock().await;
        if g.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = self.dial.connect().await.map_err(db)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL statistics connection ended");
                }
            });
            *g = Some(client);
        }
        Ok(g)
    }
}

fn key_of(kind: i64, entity: i64) -> Option<SeriesKey> {
    Some(SeriesKey {
        kind: SeriesKind::from_i64(kind)?,
        entity,
    })
}

#[async_trait::async_trait]
impl StatsStore for PgStats {
    async fn put_blocks(
        &self,
        blocks: Vec<StoredBlock>,
        replace: Vec<(SeriesKey, i64)>,
        drop_tails: Vec<SeriesKey>,
    ) -> Result<(), StatsStoreError> {
        let mut g = self.client().await?;
        let c = g
            .as_mut()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let tx = c.transaction().await.map_err(db)?;
        let del = tx
            .prepare("DELETE FROM stats_blocks WHERE kind = $1 AND entity = $2 AND start_ts = $3")
            .await
            .map_err(db)?;
        for (k, start) in &replace {
            tx.execute(&del, &[&(k.kind as i64), &k.entity, start])
                .await
                .map_err(db)?;
        }
        let ins = tx
            .prepare(
                "INSERT INTO stats_blocks (kind, entity, start_ts, end_ts, rows, level, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (kind, entity, start_ts) DO UPDATE SET end_ts = EXCLUDED.end_ts, \
                 rows = EXCLUDED.rows, level = EXCLUDED.level, data = EXCLUDED.data",
            )
            .await
            .map_err(db)?;
        for b in &blocks {
            tx.execute(
                &ins,
                &[
                    &(b.key.kind as i64),
                    &b.key.entity,
                    &b.start_ts,
                    &b.end_ts,
                    &i64::from(b.rows),
                    &i64::from(b.level),
                    &b.data,
                ],
            )
            .await
            .map_err(db)?;
        }
        let dt = tx
            .prepare("DELETE FROM stats_tails WHERE kind = $1 AND entity = $2")
            .await
            .map_err(db)?;
        for k in &drop_tails {
            tx.execute(&dt, &[&(k.kind as i64), &k.entity])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn put_tails(&self, tails: Vec<(SeriesKey, Vec<u8>)>) -> Result<(), StatsStoreError> {
        let mut g = self.client().await?;
        let c = g
            .as_mut()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let tx = c.transaction().await.map_err(db)?;
        let st = tx
            .prepare(
                "INSERT INTO stats_tails (kind, entity, data) VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, entity) DO UPDATE SET data = EXCLUDED.data",
            )
            .await
            .map_err(db)?;
        for (k, data) in &tails {
            tx.execute(&st, &[&(k.kind as i64), &k.entity, data])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn tails(&self) -> Result<Vec<(SeriesKey, Vec<u8>)>, StatsStoreError> {
        let g = self.client().await?;
        let c = g
            .as_ref()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let rows = c
            .query("SELECT kind, entity, data FROM stats_tails", &[])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((key_of(r.get(0), r.get(1))?, r.get::<_, Vec<u8>>(2))))
            .collect())
    }

    async fn blocks(
        &self,
        key: SeriesKey,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredBlock>, StatsStoreError> {
        let g = self.client().await?;
        let c = g
            .as_ref()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let rows = c
            .query(
                "SELECT start_ts, end_ts, rows, level, data FROM stats_blocks \
                 WHERE kind = $1 AND entity = $2 AND start_ts < $4 AND end_ts >= $3 \
                 ORDER BY start_ts",
                &[&(key.kind as i64), &key.entity, &from, &to],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| StoredBlock {
                key,
                start_ts: r.get(0),
                end_ts: r.get(1),
                rows: r.get::<_, i64>(2).clamp(0, i64::from(u32::MAX)) as u32,
                level: r.get::<_, i64>(3).clamp(0, 255) as u8,
                data: r.get(4),
            })
            .collect())
    }

    /// PostgreSQL reuses the freed space itself (autovacuum).
    async fn delete_before(&self, kind: SeriesKind, cutoff: i64) -> Result<u64, StatsStoreError> {
        let g = self.client().await?;
        let c = g
            .as_ref()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        c.execute(
            "DELETE FROM stats_blocks WHERE kind = $1 AND end_ts < $2",
            &[&(kind as i64), &cutoff],
        )
        .await
        .map_err(db)
    }

    async fn size_bytes(&self) -> Result<u64, StatsStoreError> {
        let g = self.client().await?;
        let c = g
            .as_ref()
            .ok_or_else(|| StatsStoreError::Db("not connected".into()))?;
        let n: i64 = c
            .query_one(
                "SELECT pg_total_relation_size('stats_blocks') + pg_total_relation_size('stats_tails')",
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        Ok(n.max(0) as u64)
    }
}
