//! The embedded store: one SQLite file in WAL mode. Writes go through a single
//! connection (SQLite has one writer anyway, and queuing in-process avoids busy
//! retries); reads use a small pool of their own.

use super::writer::Writer;
use super::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// Ids reserved in the database but not handed out yet, per kind: the
    /// next id and the end of the block (exclusive). Reserving a block per
    /// write keeps id allocation off the single writer; ids left in a block
    /// when the process stops are simply never used.
    id_blocks: tokio::sync::Mutex<HashMap<Kind, (i64, i64)>>,
    generations: Arc<Vec<AtomicU64>>,
    /// Applies commits and id reservations (see `writer`); `writer` above
    /// only runs migrations.
    rows: Writer,
}

/// Ids reserved per database write.
const ID_BLOCK: i64 = 64;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Versioned migrations; each runs once, in order, inside a transaction.
fn migrations() -> Vec<(i64, String)> {
    let mut v1 = String::from(
        "CREATE TABLE IF NOT EXISTS id_seq (kind TEXT PRIMARY KEY, next INTEGER NOT NULL);\n\
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n",
    );
    // Kinds added after the first release get their tables from later migrations.
    let later = [Kind::EnrollToken, Kind::AffinityGroup, Kind::VmSchedule];
    for k in Kind::ALL.iter().filter(|k| !later.contains(k)) {
        v1.push_str(&table_sql(k.table()));
    }
    // Lists of instances and volumes filter by account (or nothing) and
    // always exclude a state, in id order: these indexes answer the page and
    // its total without touching the records.
    let v4 = "CREATE INDEX vms_account_id_state ON vms(account_id, id, state);\n\
              CREATE INDEX vms_id_state ON vms(id, state);\n\
              CREATE INDEX volumes_account_id_state ON volumes(account_id, id, state);\n\
              CREATE INDEX volumes_id_state ON volumes(id, state);\n"
        .to_string();
    // A second free key column on every table, and the schedules table.
    let mut v5 = table_sql(Kind::VmSchedule.table());
    for k in Kind::ALL {
        v5.push_str(&format!("ALTER TABLE {} ADD COLUMN k2 TEXT;\n", k.table()));
    }
    v5.push_str("CREATE INDEX vms_k2 ON vms(k2);\n");
    vec![
        (1, v1),
        (2, table_sql(Kind::EnrollToken.table())),
        (3, table_sql(Kind::AffinityGroup.table())),
        (4, v4),
        (5, v5),
    ]
}

/// One record table: indexed columns plus the record as JSON. Tables get
/// the `k2` column from migration 5 (new kinds: in the migration creating them).
fn table_sql(t: &str) -> String {
    {
        format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,\n\
             ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,\n\
             zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,\n\
             created INTEGER NOT NULL, data TEXT NOT NULL);\n\
             CREATE INDEX {t}_name ON {t}(name);\n\
             CREATE INDEX {t}_state ON {t}(state);\n\
             CREATE INDEX {t}_account ON {t}(account_id);\n\
             CREATE INDEX {t}_domain ON {t}(domain_id);\n\
             CREATE INDEX {t}_zone ON {t}(zone_id);\n\
             CREATE INDEX {t}_host ON {t}(host_id);\n\
             CREATE INDEX {t}_parent ON {t}(parent_id);\n\
             CREATE INDEX {t}_ref ON {t}(ref_id);\n\
             CREATE INDEX {t}_k1 ON {t}(k1);\n"
        )
    }
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(db)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(false))
            .await
            .map_err(db)?;
        let generations: Arc<Vec<AtomicU64>> =
            Arc::new(Kind::ALL.iter().map(|_| AtomicU64::new(0)).collect());
        let rows = Writer::start(path, generations.clone())?;
        Ok(SqliteStore {
            reader,
            writer,
            id_blocks: tokio::sync::Mutex::new(HashMap::new()),
            generations,
            rows,
        })
    }
}

fn bind_val<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    v: &Val,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match v {
        Val::I(i) => q.bind(*i),
        Val::S(s) => q.bind(s.clone()),
    }
}

/// Builds a WHERE clause with `?` placeholders and the values to bind.
fn where_clause(conds: &[Cond]) -> (String, Vec<Val>) {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    for c in conds {
        match c {
            Cond::Eq(col, v) => {
                parts.push(format!("{} = ?", col.sql()));
                binds.push(v.clone());
            }
            Cond::Ne(col, v) => {
                parts.push(format!("({0} IS NULL OR {0} <> ?)", col.sql()));
                binds.push(v.clone());
            }
            Cond::Le(col, v) => {
                parts.push(format!("{} <= ?", col.sql()));
                binds.push(v.clone());
            }
            Cond::In(col, vs) => {
                if vs.is_empty() {
                    parts.push("0".into());
                } else {
                    parts.push(format!(
                        "{} IN ({})",
                        col.sql(),
                        vec!["?"; vs.len()].join(",")
                    ));
                    binds.extend(vs.iter().cloned());
                }
            }
            Cond::NotIn(col, vs) => {
                if !vs.is_empty() {
                    parts.push(format!(
                        "({0} IS NULL OR {0} NOT IN ({1}))",
                        col.sql(),
                        vec!["?"; vs.len()].join(",")
                    ));
                    binds.extend(vs.iter().cloned());
                }
            }
            Cond::IsNull(col) => parts.push(format!("{} IS NULL", col.sql())),
            Cond::NotNull(col) => parts.push(format!("{} IS NOT NULL", col.sql())),
            Cond::Contains(cols, s) => {
                let escaped = s
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                let pat = format!("%{}%", escaped.to_lowercase());
                let ors: Vec<String> = cols
                    .iter()
                    .map(|c| format!("lower({}) LIKE ? ESCAPE '\\'", c.sql()))
                    .collect();
                for _ in cols {
                    binds.push(Val::S(pat.clone()));
                }
                parts.push(format!("({})", ors.join(" OR ")));
            }
            Cond::EqNoCase(col, s) => {
                parts.push(format!("lower({}) = ?", col.sql()));
                binds.push(Val::S(s.to_lowercase()));
            }
        }
    }
    if parts.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", parts.join(" AND ")), binds)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
            .execute(&self.writer)
            .await
            .map_err(db)?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&self.writer)
            .await
            .map_err(db)?
            .get(0);
        for (v, sql) in migrations() {
            if v <= current {
                continue;
            }
            // One script per version, applied atomically with its version row.
            let script = format!("BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_version (version) VALUES ({v});\nCOMMIT;");
            if let Err(e) = sqlx::raw_sql(&script).execute(&self.writer).await {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&self.writer).await;
                return Err(db(e));
            }
        }
        Ok(())
    }

    async fn is_initialised(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM domains")
            .fetch_one(&self.reader)
            .await
            .map_err(db)?
            .get(0);
        Ok(n > 0)
    }

    async fn get(&self, kind: Kind, id: i64) -> Result<Option<Row>, StoreError> {
        let sql = format!(
            "SELECT id, uuid, version, data FROM {} WHERE id = ?",
            kind.table()
        );
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(r.map(to_row))
    }

    async fn get_by_uuid(&self, kind: Kind, uuid: &str) -> Result<Option<Row>, StoreError> {
        let sql = format!(
            "SELECT id, uuid, version, data FROM {} WHERE uuid = ?",
            kind.table()
        );
        let r = sqlx::query(&sql)
            .bind(uuid)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(r.map(to_row))
    }

    async fn find(&self, kind: Kind, q: &Query) -> Result<(Vec<Row>, u64), StoreError> {
        let (w, binds) = where_clause(&q.conds);
        let order = if q.descending { "DESC" } else { "ASC" };
        let t = kind.table();
        let sql = match q.page {
            // The page's ids come from an index first, so rows skipped by the
            // offset are never read; only the page's records are.
            Some((off, lim)) => format!(
                "SELECT id, uuid, version, data FROM {t} WHERE id IN \
                 (SELECT id FROM {t}{w} ORDER BY id {order} LIMIT {lim} OFFSET {off}) ORDER BY id {order}"
            ),
            None => format!("SELECT id, uuid, version, data FROM {t}{w} ORDER BY id {order}"),
        };
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = bind_val(query, b);
        }
        let rows: Vec<Row> = query
            .fetch_all(&self.reader)
            .await
            .map_err(db)?
            .into_iter()
            .map(to_row)
            .collect();
        let total = match q.page {
            _ if q.skip_count => rows.len() as u64,
            Some((off, lim)) if !(rows.is_empty() && off > 0) && (rows.len() as u64) < lim => {
                off + rows.len() as u64
            }
            None => rows.len() as u64,
            _ => self.count(kind, q).await?,
        };
        Ok((rows, total))
    }

    async fn count(&self, kind: Kind, q: &Query) -> Result<u64, StoreError> {
        let (w, binds) = where_clause(&q.conds);
        let sql = format!("SELECT COUNT(*) FROM {}{}", kind.table(), w);
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = bind_val(query, b);
        }
        let n: i64 = query.fetch_one(&self.reader).await.map_err(db)?.get(0);
        Ok(n as u64)
    }

    async fn allocate_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        let mut blocks = self.id_blocks.lock().await;
        if let Some((next, end)) = blocks.get_mut(&kind) {
            if *next + n <= *end {
                let first = *next;
                *next += n;
                return Ok(first);
            }
        }
        let want = n.max(ID_BLOCK);
        let first = self.rows.reserve_ids(kind, want).await?;
        blocks.insert(kind, (first + n, first + want));
        Ok(first)
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
        let pages: i64 = sqlx::query("PRAGMA page_count")
            .fetch_one(&self.reader)
            .await
            .map_err(db)?
            .get(0);
        let size: i64 = sqlx::query("PRAGMA page_size")
            .fetch_one(&self.reader)
            .await
            .map_err(db)?
            .get(0);
        Ok((pages * size) as u64)
    }
}

fn to_row(r: sqlx::sqlite::SqliteRow) -> Row {
    Row {
        id: r.get(0),
        uuid: r.get(1),
        version: r.get(2),
        data: r.get(3),
    }
}
