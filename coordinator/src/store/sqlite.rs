//! The embedded store: one SQLite file in WAL mode. Writes go through a single
//! connection (SQLite has one writer anyway, and queuing in-process avoids busy
//! retries); reads use a small pool of their own.

use super::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

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
    let later = [Kind::EnrollToken, Kind::AffinityGroup];
    for k in Kind::ALL.iter().filter(|k| !later.contains(k)) {
        v1.push_str(&table_sql(k.table()));
    }
    vec![
        (1, v1),
        (2, table_sql(Kind::EnrollToken.table())),
        (3, table_sql(Kind::AffinityGroup.table())),
    ]
}

/// One record table: indexed columns plus the record as JSON.
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
        Ok(SqliteStore { reader, writer })
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

fn map_write_err(kind: Kind, key: &str, e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Duplicate(kind, key.to_string());
        }
    }
    db(e)
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
        let mut sql = format!(
            "SELECT id, uuid, version, data FROM {}{} ORDER BY id {}",
            kind.table(),
            w,
            order
        );
        if let Some((off, lim)) = q.page {
            sql.push_str(&format!(" LIMIT {lim} OFFSET {off}"));
        }
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
        let mut tx = self.writer.begin().await.map_err(db)?;
        let max_sql = format!("SELECT COALESCE(MAX(id), 0) FROM {}", kind.table());
        let row = sqlx::query("SELECT next FROM id_seq WHERE kind = ?")
            .bind(kind.table())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let first: i64 = match row {
            Some(r) => r.get(0),
            None => {
                let m: i64 = sqlx::query(&max_sql)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?
                    .get(0);
                m + 1
            }
        };
        sqlx::query("INSERT INTO id_seq (kind, next) VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET next = excluded.next")
            .bind(kind.table())
            .bind(first + n)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(first)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await.map_err(db)?;
        for op in ops {
            match op {
                Op::Insert {
                    kind,
                    id,
                    uuid,
                    index,
                    data,
                } => {
                    let sql = format!(
                        "INSERT INTO {} (id, uuid, version, ukey, name, keyword, state, account_id, domain_id, zone_id, host_id, parent_id, ref_id, k1, created, data) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        kind.table()
                    );
                    let key = index.ukey.clone().unwrap_or_else(|| uuid.clone());
                    // Id 0 asks SQLite to assign one (append-only kinds: jobs, events).
                    let id = if id == 0 { None } else { Some(id) };
                    sqlx::query(&sql)
                        .bind(id)
                        .bind(uuid)
                        .bind(index.ukey)
                        .bind(index.name)
                        .bind(index.keyword)
                        .bind(index.state)
                        .bind(index.account_id)
                        .bind(index.domain_id)
                        .bind(index.zone_id)
                        .bind(index.host_id)
                        .bind(index.parent_id)
                        .bind(index.ref_id)
                        .bind(index.k1)
                        .bind(index.created)
                        .bind(data)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| map_write_err(kind, &key, e))?;
                }
                Op::Update {
                    kind,
                    id,
                    version,
                    index,
                    data,
                } => {
                    let sql = format!(
                        "UPDATE {} SET version = version + 1, ukey = ?, name = ?, keyword = ?, state = ?, account_id = ?, domain_id = ?, zone_id = ?, host_id = ?, parent_id = ?, ref_id = ?, k1 = ?, data = ? WHERE id = ? AND version = ?",
                        kind.table()
                    );
                    let key = index.ukey.clone().unwrap_or_default();
                    let r = sqlx::query(&sql)
                        .bind(index.ukey)
                        .bind(index.name)
                        .bind(index.keyword)
                        .bind(index.state)
                        .bind(index.account_id)
                        .bind(index.domain_id)
                        .bind(index.zone_id)
                        .bind(index.host_id)
                        .bind(index.parent_id)
                        .bind(index.ref_id)
                        .bind(index.k1)
                        .bind(data)
                        .bind(id)
                        .bind(version)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| map_write_err(kind, &key, e))?;
                    if r.rows_affected() != 1 {
                        return Err(StoreError::Conflict(kind, id));
                    }
                }
                Op::Delete { kind, id } => {
                    let sql = format!("DELETE FROM {} WHERE id = ?", kind.table());
                    sqlx::query(&sql)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(())
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
