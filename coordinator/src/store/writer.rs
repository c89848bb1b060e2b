//! The store's writer: one thread that owns SQLite's single write connection
//! and applies transactions as they queue up.
//!
//! Two things make this faster than issuing each statement from async code:
//! a whole transaction crosses threads once (not once per statement), and
//! every transaction waiting when the writer comes round is applied inside
//! one SQLite transaction (group commit), each in a savepoint of its own, so
//! a conflict or duplicate in one rolls back that one alone while the rest
//! share a single COMMIT.

use super::{Index, Kind, Op, StoreError};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// Transactions applied in one group at most; bounds the time a group holds
/// the write lock.
const MAX_GROUP: usize = 256;

enum Request {
    Commit(Vec<Op>, oneshot::Sender<Result<(), StoreError>>),
    Reserve(Kind, i64, oneshot::Sender<Result<i64, StoreError>>),
}

pub(crate) struct Writer {
    queue: mpsc::Sender<Request>,
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl Writer {
    /// Opens the write connection and starts its thread; the thread ends when
    /// the writer is dropped. `generations` are bumped after each commit.
    pub(crate) fn start(
        path: &Path,
        generations: Arc<Vec<AtomicU64>>,
    ) -> Result<Writer, StoreError> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;",
        )
        .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(256);
        let (queue, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, generations))
            .map_err(|e| StoreError::Db(format!("cannot start the store writer: {e}")))?;
        Ok(Writer { queue })
    }

    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Request::Commit(ops, tx))
            .map_err(|_| StoreError::Db("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Db("the store writer has stopped".into()))?
    }

    pub(crate) async fn reserve_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Request::Reserve(kind, n, tx))
            .map_err(|_| StoreError::Db("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Db("the store writer has stopped".into()))?
    }
}

enum Outcome {
    Commit(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
        Vec<Kind>,
    ),
    Reserve(
        oneshot::Sender<Result<i64, StoreError>>,
        Result<i64, StoreError>,
    ),
}

fn run(conn: Connection, rx: mpsc::Receiver<Request>, generations: Arc<Vec<AtomicU64>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let outcomes = apply_group(&conn, group);
        for o in outcomes {
            match o {
                Outcome::Commit(reply, result, kinds) => {
                    // Bumped only once the data is visible: a reader that
                    // sees the new generation can no longer read old rows.
                    if result.is_ok() {
                        for k in kinds {
                            generations[k.ordinal()].fetch_add(1, Ordering::Release);
                        }
                    }
                    let _ = reply.send(result);
                }
                Outcome::Reserve(reply, result) => {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

fn apply_group(conn: &Connection, group: Vec<Request>) -> Vec<Outcome> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let text = e.to_string();
        return group
            .into_iter()
            .map(|r| fail(r, StoreError::Db(text.clone())))
            .collect();
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for r in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT one") {
            outcomes.push(fail(r, sql_err(e)));
            continue;
        }
        let (outcome, ok) = match r {
            Request::Commit(ops, reply) => {
                let kinds: Vec<Kind> = ops.iter().map(Op::kind).collect();
                let result = apply_ops(conn, ops);
                let ok = result.is_ok();
                (Outcome::Commit(reply, result, kinds), ok)
            }
            Request::Reserve(kind, n, reply) => {
                let result = reserve(conn, kind, n);
                let ok = result.is_ok();
                (Outcome::Reserve(reply, result), ok)
            }
        };
        let end = if ok {
            "RELEASE one"
        } else {
            "ROLLBACK TO one; RELEASE one"
        };
        if let Err(e) = conn.execute_batch(end) {
            // The group's transaction is in an unknown state: fail it all.
            let _ = conn.execute_batch("ROLLBACK");
            outcomes.push(outcome);
            return outcomes
                .into_iter()
                .map(|o| failed(o, StoreError::Db(e.to_string())))
                .collect();
        }
        outcomes.push(outcome);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return outcomes
            .into_iter()
            .map(|o| failed(o, StoreError::Db(e.to_string())))
            .collect();
    }
    outcomes
}

fn fail(r: Request, e: StoreError) -> Outcome {
    match r {
        Request::Commit(_, reply) => Outcome::Commit(reply, Err(e), Vec::new()),
        Request::Reserve(_, _, reply) => Outcome::Reserve(reply, Err(e)),
    }
}

/// An outcome turned into a failure (the group it was in did not commit).
fn failed(o: Outcome, e: StoreError) -> Outcome {
    let text = e.to_string();
    match o {
        Outcome::Commit(reply, _, _) => {
            Outcome::Commit(reply, Err(StoreError::Db(text)), Vec::new())
        }
        Outcome::Reserve(reply, _) => Outcome::Reserve(reply, Err(StoreError::Db(text))),
    }
}

fn write_err(kind: Kind, key: &str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        // 2067: UNIQUE, 1555: PRIMARY KEY.
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == 2067 || f.extended_code == 1555)
        {
            return StoreError::Duplicate(kind, key.to_string());
        }
    }
    sql_err(e)
}

/// The text columns of an index, in a fixed order.
fn index_texts(i: &Index) -> [Option<&str>; 6] {
    [
        i.ukey.as_deref(),
        i.name.as_deref(),
        i.keyword.as_deref(),
        i.state.as_deref(),
        i.k1.as_deref(),
        i.k2.as_deref(),
    ]
}

/// The id columns of an index, in a fixed order.
fn index_ids(i: &Index) -> [Option<i64>; 6] {
    [
        i.account_id,
        i.domain_id,
        i.zone_id,
        i.host_id,
        i.parent_id,
        i.ref_id,
    ]
}

fn apply_ops(conn: &Connection, ops: Vec<Op>) -> Result<(), StoreError> {
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
                    "INSERT INTO {} (id, uuid, version, ukey, name, keyword, state, account_id, domain_id, zone_id, host_id, parent_id, ref_id, k1, k2, created, data) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                    kind.table()
                );
                let key = index.ukey.clone().unwrap_or_else(|| uuid.clone());
                // Id 0 asks SQLite to assign one (append-only kinds: jobs, events).
                let id = if id == 0 { None } else { Some(id) };
                let [ukey, name, keyword, state, k1, k2] = index_texts(&index);
                let [account_id, domain_id, zone_id, host_id, parent_id, ref_id] =
                    index_ids(&index);
                let created = index.created;
                conn.prepare_cached(&sql)
                    .and_then(|mut st| {
                        st.execute(params![
                            id, uuid, ukey, name, keyword, state, account_id, domain_id, zone_id,
                            host_id, parent_id, ref_id, k1, k2, created, data
                        ])
                    })
                    .map_err(|e| write_err(kind, &key, e))?;
            }
            Op::Update {
                kind,
                id,
                version,
                index,
                data,
            } => {
                let sql = format!(
                    "UPDATE {} SET version = version + 1, ukey = ?1, name = ?2, keyword = ?3, state = ?4, account_id = ?5, domain_id = ?6, zone_id = ?7, host_id = ?8, parent_id = ?9, ref_id = ?10, k1 = ?11, k2 = ?12, data = ?13 WHERE id = ?14 AND version = ?15",
                    kind.table()
                );
                let key = index.ukey.clone().unwrap_or_default();
                let [ukey, name, keyword, state, k1, k2] = index_texts(&index);
                let [account_id, domain_id, zone_id, host_id, parent_id, ref_id] =
                    index_ids(&index);
                let n = conn
                    .prepare_cached(&sql)
                    .and_then(|mut st| {
                        st.execute(params![
                            ukey, name, keyword, state, account_id, domain_id, zone_id, host_id,
                            parent_id, ref_id, k1, k2, data, id, version
                        ])
                    })
                    .map_err(|e| write_err(kind, &key, e))?;
                if n != 1 {
                    return Err(StoreError::Conflict(kind, id));
                }
            }
            Op::Delete { kind, id } => {
                let sql = format!("DELETE FROM {} WHERE id = ?1", kind.table());
                conn.prepare_cached(&sql)
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(sql_err)?;
            }
        }
    }
    Ok(())
}

/// Reserves `n` ids for `kind`; returns the first. A kind's sequence starts
/// after the highest id its table holds.
fn reserve(conn: &Connection, kind: Kind, n: i64) -> Result<i64, StoreError> {
    let next: Option<i64> = conn
        .prepare_cached("SELECT next FROM id_seq WHERE kind = ?1")
        .and_then(|mut st| st.query_row(params![kind.table()], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    let first = match next {
        Some(f) => f,
        None => {
            let max: i64 = conn
                .query_row(
                    &format!("SELECT COALESCE(MAX(id), 0) FROM {}", kind.table()),
                    [],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            max + 1
        }
    };
    conn.prepare_cached(
        "INSERT INTO id_seq (kind, next) VALUES (?1, ?2) ON CONFLICT(kind) DO UPDATE SET next = excluded.next",
    )
    .and_then(|mut st| st.execute(params![kind.table(), first + n]))
    .map_err(sql_err)?;
    Ok(first)
}
