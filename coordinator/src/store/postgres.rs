//! The store on PostgreSQL, for clouds that outgrow one coordinator: the
//! same tables, columns and indexes as the embedded store (the same
//! migrations, with 64-bit integers), the same reads (see `sql`), and each
//! commit one PostgreSQL transaction with the same optimistic version
//! checks. Concurrency between coordinators is PostgreSQL's: a row updated
//! by two transactions at once fails one of them with `Conflict`, exactly as
//! a stale version does.

use super::pg_tls::Dial;
use super::sql::{self, Dialect};
use super::sqlite::{check_not_newer, MIGRATIONS};
use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

/// Connections kept open to the database.
const POOL: usize = 8;

/// Statements one connection keeps prepared. Pages put their offset in the
/// statement's text, so the set of texts grows without end; past this many
/// the connection starts afresh (dropped statements are closed on the
/// server too), as SQLite's bounded statement cache does.
const STATEMENTS: usize = 256;

/// The advisory lock that lets one coordinator at a time migrate.
const MIGRATION_LOCK: i64 = 0x6f72_7265_7279;

/// Whether `s` names a PostgreSQL database rather than a file.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The database's own words: tokio-postgres' Display says only "db error".
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Db(format!("{}: {}", d.code().code(), d.message())),
        None => {
            // Its Display leaves out the cause ("error performing TLS
            // handshake"): the chain says which certificate and why.
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            StoreError::Db(text)
        }
    }
}

fn write_err(kind: Kind, id: i64, key: &str, e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Duplicate(kind, key.into()),
        // Two coordinators writing one row at once: the loser retries as
        // after a stale version.
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => StoreError::Conflict(kind, id),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => StoreError::Conflict(kind, id),
        _ => pg(e),
    }
}

/// One connection with the statements it has prepared (each prepared once
/// per connection, as SQLite's statement cache does).
struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
}

impl Conn {
    async fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let st = self.client.prepare(sql).await.map_err(pg)?;
        if self.stmts.len() >= STATEMENTS {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

struct Pool {
    dial: Dial,
    idle: parking_lot::Mutex<Vec<Conn>>,
    permits: Semaphore,
}

/// A connection borrowed from the pool; back in the pool when dropped,
/// unless the server closed it.
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !c.client.is_closed() {
                self.pool.idle.lock().push(c);
            }
        }
    }
}

impl Pool {
    async fn connect(&self) -> Result<Conn, StoreError> {
        let (client, connection) = self.dial.connect().await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Conn {
            client,
            stmts: HashMap::new(),
        })
    }

    async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Db("the store is closed".into()))?;
        let idle = loop {
            let c = self.idle.lock().pop();
            match c {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

pub struct PgStore {
    pool: Pool,
    id_blocks: IdBlocks,
    generations: Arc<Vec<AtomicU64>>,
    /// Names this store in its commit notices, so it skips its own.
    origin: String,
    listener: tokio::task::JoinHandle<()>,
    leader: Arc<std::sync::atomic::AtomicBool>,
    lease: tokio::task::JoinHandle<()>,
    /// Other coordinators' commits, until a view takes them.
    changes: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Change>>>,
    /// The connection that holds the placement lock (its own: a session
    /// lock lives as long as its connection, so a process that dies frees it).
    placer: Arc<tokio::sync::Mutex<Option<Conn>>>,
}

/// Where each live coordinator's agent endpoint is (`Store::advertise`):
/// beside the records, outside their migrations, as it holds nothing that
/// outlives the processes.
const ENDPOINTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS coordinator_endpoints (\
    runner TEXT PRIMARY KEY, address TEXT NOT NULL)";

/// The session advisory lock that serialises placement across coordinators.
const PLACEMENT_LOCK: i64 = 0x006f_7272_6572_7950;

/// Holds the placement lock; let go when dropped. A hold whose lock request
/// never completed (the caller gave up waiting) closes its connection, so a
/// lock granted after all cannot outlive it.
struct PlacementHold {
    slot: Option<tokio::sync::OwnedMutexGuard<Option<Conn>>>,
    locked: bool,
}

impl Drop for PlacementHold {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current();
        match (self.locked, runtime) {
            (true, Ok(rt)) => {
                rt.spawn(async move {
                    let ok = match slot.as_ref() {
                        Some(c) => c
                            .client
                            .execute("SELECT pg_advisory_unlock($1)", &[&PLACEMENT_LOCK])
                            .await
                            .is_ok(),
                        None => true,
                    };
                    if !ok {
                        // Closing the session frees its locks.
                        *slot = None;
                    }
                });
            }
            _ => *slot = None,
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.lease.abort();
    }
}

/// The session advisory lock whose holder leads.
const LEADER_LOCK: i64 = 0x006f_7272_6572_794c;

/// Each coordinator process holds a session lock of this class, keyed by
/// its runner id, for as long as it lives: another that gets the lock knows
/// the process is gone (with its connection) and its jobs with it.
const RUNNER_CLASS: i32 = 0x6f72;

fn runner_key(runner: &str) -> i32 {
    // FNV-1a, folded to 32 bits: stable across processes and builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in runner.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// How often a follower asks for the lock, and the leader checks that its
/// connection (and so its lock) is still there.
const LEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Holds leadership while this store lives: a session advisory lock on a
/// connection of its own. PostgreSQL drops the lock with the session, so a
/// killed leader's lock is free as soon as its connection closes, and a
/// follower takes it at its next try. A leader that cannot reach the
/// database stops leading at once (it may have lost the lock).
async fn hold_lease(dial: Dial, leader: Arc<std::sync::atomic::AtomicBool>, runner: String) {
    loop {
        if let Ok((client, connection)) = dial.connect().await {
            let conn = tokio::spawn(connection);
            // This process is alive while this session is.
            let _ = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&RUNNER_CLASS, &runner_key(&runner)],
                )
                .await;
            loop {
                let holding = leader.load(Ordering::Acquire);
                let ask = async {
                    if holding {
                        client.query_one("SELECT true", &[]).await
                    } else {
                        client
                            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                            .await
                    }
                };
                let ok = tokio::time::timeout(LEASE_EVERY * 3, ask)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.get::<_, bool>(0));
                match ok {
                    Some(held) => {
                        if held && !leader.swap(true, Ordering::AcqRel) {
                            tracing::info!("leading: this coordinator runs the background loops");
                        }
                    }
                    None => break,
                }
                tokio::time::sleep(LEASE_EVERY).await;
            }
            conn.abort();
        }
        if leader.swap(false, Ordering::AcqRel) {
            tracing::warn!("lost the database: no longer leading");
        }
        tokio::time::sleep(LEASE_EVERY).await;
    }
}

/// The channel every commit is announced on, with the kinds it touched, so
/// each coordinator's caches of rarely written kinds go stale when another
/// coordinator changes them, as they do for its own commits.
const CHANNEL: &str = "orrery_commits";

/// "origin:3,17": the committing store and the ordinals of the kinds.
/// A notice's payload stays well inside PostgreSQL's 8000 bytes; a commit
/// that changed more instances than fit says so instead of naming them.
const NOTICE_IDS: usize = 7000;

/// Pure: the payload announcing a commit: its origin, the kinds it changed,
/// and the instances it changed (`*` when too many to name).
fn notice(origin: &str, kinds: &[Kind], vms: &[i64]) -> String {
    let mut ords: Vec<usize> = kinds.iter().map(|k| k.ordinal()).collect();
    ords.sort_unstable();
    ords.dedup();
    let list: Vec<String> = ords.iter().map(usize::to_string).collect();
    let mut out = format!("{origin}:{}", list.join(","));
    if !vms.is_empty() {
        let mut ids: Vec<i64> = vms.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let named: Vec<String> = ids.iter().map(i64::to_string).collect();
        let named = named.join(",");
        out.push(';');
        out.push_str(if named.len() > NOTICE_IDS {
            "*"
        } else {
            &named
        });
    }
    out
}

/// The payload of a barrier sent by `origin`.
fn barrier_notice(origin: &str, token: &str) -> String {
    format!("{origin}!{token}")
}

/// What one notice says, as `parse_notice` reads it.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    /// Another store's commit: the kinds (ordinals) and, when it changed
    /// instances, which (None: too many to name).
    Commit {
        kinds: Vec<usize>,
        vms: Option<Vec<i64>>,
    },
    /// One of our own barriers came back.
    Barrier(String),
}

/// Pure: what a notice means to the store `own` (None for its own commit
/// notices, others' barriers, and garbage).
fn parse_notice(own: &str, payload: &str) -> Option<Notice> {
    if let Some((origin, token)) = payload.split_once('!') {
        return (origin == own && !token.is_empty()).then(|| Notice::Barrier(token.to_string()));
    }
    let (origin, rest) = payload.split_once(':')?;
    if origin == own {
        return None;
    }
    let (list, ids) = match rest.split_once(';') {
        Some((l, i)) => (l, Some(i)),
        None => (rest, None),
    };
    let kinds = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok().filter(|o| *o < Kind::ALL.len()))
        .collect::<Option<Vec<usize>>>()?;
    let vms = match ids {
        None => Some(Vec::new()),
        Some("*") => None,
        Some(i) => Some(
            i.split(',')
                .map(|s| s.parse().ok())
                .collect::<Option<Vec<i64>>>()?,
        ),
    };
    Some(Notice::Commit { kinds, vms })
}

/// The changes a commit notice reports to in-memory views.
fn notice_changes(kinds: &[usize], vms: Option<Vec<i64>>) -> Option<Change> {
    if !kinds.contains(&Kind::Vm.ordinal()) {
        return None;
    }
    Some(match vms {
        Some(ids) if !ids.is_empty() => Change::Vms(ids),
        _ => Change::All,
    })
}

/// Follows the channel on a connection of its own for as long as the store
/// lives, reconnecting after a failure; every (re)connection bumps every
/// kind, since notices sent while it was away are lost.
async fn listen(
    dial: Dial,
    origin: String,
    gens: Arc<Vec<AtomicU64>>,
    changes: tokio::sync::mpsc::UnboundedSender<Change>,
) {
    use futures::StreamExt;
    loop {
        match dial.connect().await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = futures::channel::mpsc::unbounded();
                let drive = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(m)) = messages.next().await {
                        if tx.unbounded_send(m).is_err() {
                            break;
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    for g in gens.iter() {
                        g.fetch_add(1, Ordering::Release);
                    }
                    // A receiver gone away (no view follows) is no error.
                    let _ = changes.send(Change::All);
                    while let Some(m) = rx.next().await {
                        let tokio_postgres::AsyncMessage::Notification(n) = m else {
                            continue;
                        };
                        match parse_notice(&origin, n.payload()) {
                            Some(Notice::Commit { kinds, vms }) => {
                                for o in &kinds {
                                    gens[*o].fetch_add(1, Ordering::Release);
                                }
                                if let Some(c) = notice_changes(&kinds, vms) {
                                    let _ = changes.send(c);
                                }
                            }
                            Some(Notice::Barrier(token)) => {
                                let _ = changes.send(Change::Barrier(token));
                            }
                            None => {}
                        }
                    }
                }
                drive.abort();
                tracing::warn!("lost the PostgreSQL commit channel; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow PostgreSQL commits; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

impl PgStore {
    /// Connects (once, to fail early on a wrong address or password).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut dial = Dial::parse(url)?;
        if dial.config.get_application_name().is_none() {
            dial.config.application_name("orrery-coordinator");
        }
        let generations: Arc<Vec<AtomicU64>> =
            Arc::new(Kind::ALL.iter().map(|_| AtomicU64::new(0)).collect());
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let (changes, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::spawn(listen(
            dial.clone(),
            origin.clone(),
            generations.clone(),
            changes,
        ));
        let leader = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lease = tokio::spawn(hold_lease(dial.clone(), leader.clone(), origin.clone()));
        let store = PgStore {
            pool: Pool {
                dial,
                idle: parking_lot::Mutex::new(Vec::new()),
                permits: Semaphore::new(POOL),
            },
            id_blocks: IdBlocks::default(),
            generations,
            origin,
            listener,
            leader,
            lease,
            changes: parking_lot::Mutex::new(Some(changes_rx)),
            placer: Arc::new(tokio::sync::Mutex::new(None)),
        };
        drop(store.pool.get().await?);
        Ok(store)
    }

    async fn reserve(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        let mut c = self.pool.get().await?;
        let init = c.prepare(&seq_init_sql(kind)).await?;
        let bump = c.prepare(SEQ_BUMP).await?;
        c.client
            .execute(&init, &[&kind.table()])
            .await
            .map_err(pg)?;
        let row = c
            .client
            .query_one(&bump, &[&kind.table(), &n])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }
}

/// A kind's id sequence starts after the highest id its table holds.
fn seq_init_sql(kind: Kind) -> String {
    format!(
        "INSERT INTO id_seq (kind, next) SELECT $1::TEXT, COALESCE(MAX(id), 0) + 1 FROM {} \
         ON CONFLICT (kind) DO NOTHING",
        kind.table()
    )
}

const SEQ_BUMP: &str = "UPDATE id_seq SET next = next + $2 WHERE kind = $1 RETURNING next - $2";

/// Values bound as the column's type: a number compared with a text column
/// is compared as text, a non-number with an id column matches nothing.
fn bind(st: &Statement, vals: &[Val]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    vals.iter()
        .zip(st.params())
        .map(|(v, t)| -> Box<dyn ToSql + Sync + Send> {
            let int = *t == Type::INT8 || *t == Type::INT4 || *t == Type::INT2;
            match (v, int) {
                (Val::I(i), true) => Box::new(*i),
                (Val::I(i), false) => Box::new(i.to_string()),
                (Val::S(s), true) => Box::new(s.parse::<i64>().ok()),
                (Val::S(s), false) => Box::new(s.clone()),
            }
        })
        .collect()
}

/// An index's columns in the order both statements below bind them.
fn index_params(i: &Index) -> [&(dyn ToSql + Sync); 12] {
    [
        &i.ukey,
        &i.name,
        &i.keyword,
        &i.state,
        &i.account_id,
        &i.domain_id,
        &i.zone_id,
        &i.host_id,
        &i.parent_id,
        &i.ref_id,
        &i.k1,
        &i.k2,
    ]
}

fn refs(b: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    b.iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn to_row(r: &tokio_postgres::Row) -> Row {
    Row {
        id: r.get(0),
        uuid: r.get(1),
        version: r.get(2),
        data: r.get(3),
    }
}

fn op_sql(op: &Op) -> String {
    match op {
        Op::Insert { kind, .. } => format!(
            "INSERT INTO {} (id, uuid, version, ukey, name, keyword, state, account_id, domain_id, \
             zone_id, host_id, parent_id, ref_id, k1, k2, created, data) VALUES \
             ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            kind.table()
        ),
        Op::Update { kind, .. } => format!(
            "UPDATE {} SET version = version + 1, ukey = $1, name = $2, keyword = $3, state = $4, \
             account_id = $5, domain_id = $6, zone_id = $7, host_id = $8, parent_id = $9, \
             ref_id = $10, k1 = $11, k2 = $12, data = $13 WHERE id = $14 AND version = $15",
            kind.table()
        ),
        Op::Delete { kind, .. } => format!("DELETE FROM {} WHERE id = $1", kind.table()),
    }
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.client.transaction().await.map_err(pg)?;
        // Coordinators starting together migrate one after the other.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let fresh: bool = tx
            .query_one("SELECT to_regclass('schema_version') IS NULL", &[])
            .await
            .map_err(pg)?
            .get(0);
        if fresh {
            tx.batch_execute("CREATE TABLE schema_version (version BIGINT PRIMARY KEY)")
                .await
                .map_err(pg)?;
        }
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        check_not_newer(current)?;
        for (v, script) in MIGRATIONS {
            if *v <= current {
                continue;
            }
            tx.batch_execute(&sql::postgres_schema(script))
                .await
                .map_err(pg)?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[v])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn is_initialised(&self) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let st = c.prepare("SELECT COUNT(*) FROM domains").await?;
        let n: i64 = c.client.query_one(&st, &[]).await.map_err(pg)?.get(0);
        Ok(n > 0)
    }

    async fn get(&self, kind: Kind, id: i64) -> Result<Option<Row>, StoreError> {
        let mut c = self.pool.get().await?;
        let st = c
            .prepare(&format!(
                "SELECT id, uuid, version, data FROM {} WHERE id = $1",
                kind.table()
            ))
            .await?;
        let r = c.client.query_opt(&st, &[&id]).await.map_err(pg)?;
        Ok(r.as_ref().map(to_row))
    }

    async fn get_by_uuid(&self, kind: Kind, uuid: &str) -> Result<Option<Row>, StoreError> {
        let mut c = self.pool.get().await?;
        let st = c
            .prepare(&format!(
                "SELECT id, uuid, version, data FROM {} WHERE uuid = $1",
                kind.table()
            ))
            .await?;
        let r = c.client.query_opt(&st, &[&uuid]).await.map_err(pg)?;
        Ok(r.as_ref().map(to_row))
    }

    async fn find(&self, kind: Kind, q: &Query) -> Result<(Vec<Row>, u64), StoreError> {
        let (text, vals) = sql::find(kind, q, Dialect::Postgres);
        let rows: Vec<Row> = {
            let mut c = self.pool.get().await?;
            let st = c.prepare(&text).await?;
            let b = bind(&st, &vals);
            c.client
                .query(&st, &refs(&b))
                .await
                .map_err(pg)?
                .iter()
                .map(to_row)
                .collect()
        };
        let total = match sql::total_known(q, rows.len()) {
            Some(t) => t,
            None => self.count(kind, q).await?,
        };
        Ok((rows, total))
    }

    async fn count(&self, kind: Kind, q: &Query) -> Result<u64, StoreError> {
        let (text, vals) = sql::count(kind, q, Dialect::Postgres);
        let mut c = self.pool.get().await?;
        let st = c.prepare(&text).await?;
        let b = bind(&st, &vals);
        let n: i64 = c.client.query_one(&st, &refs(&b)).await.map_err(pg)?.get(0);
        Ok(n.max(0) as u64)
    }

    async fn allocate_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        self.id_blocks
            .take(kind, n, |k, want| self.reserve(k, want))
            .await
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut c = self.pool.get().await?;
        // Statements belong to the connection: prepared (or found prepared)
        // before the transaction borrows it.
        let mut stmts = Vec::with_capacity(ops.len());
        let mut seq = HashMap::new();
        for op in &ops {
            stmts.push(c.prepare(&op_sql(op)).await?);
            if let Op::Insert { kind, id: 0, .. } = op {
                if !seq.contains_key(kind) {
                    let init = c.prepare(&seq_init_sql(*kind)).await?;
                    seq.insert(*kind, init);
                }
            }
        }
        let bump = c.prepare(SEQ_BUMP).await?;
        let announce = c.prepare("SELECT pg_notify($1, $2)").await?;
        let kinds: Vec<Kind> = ops.iter().map(Op::kind).collect();
        let vms: Vec<i64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Insert {
                    kind: Kind::Vm, id, ..
                }
                | Op::Update {
                    kind: Kind::Vm, id, ..
                }
                | Op::Delete { kind: Kind::Vm, id } => Some(*id),
                _ => None,
            })
            .collect();
        let tx = c.client.transaction().await.map_err(pg)?;
        for (op, st) in ops.into_iter().zip(stmts) {
            match op {
                Op::Insert {
                    kind,
                    id,
                    uuid,
                    index,
                    data,
                } => {
                    let key = index.ukey.clone().unwrap_or_else(|| uuid.clone());
                    // Id 0: the next of the kind's sequence (append-only
                    // kinds: jobs, events), in this transaction.
                    let id = if id == 0 {
                        tx.execute(&seq[&kind], &[&kind.table()])
                            .await
                            .map_err(pg)?;
                        tx.query_one(&bump, &[&kind.table(), &1i64])
                            .await
                            .map_err(pg)?
                            .get::<_, i64>(0)
                    } else {
                        id
                    };
                    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &uuid];
                    params.extend(index_params(&index));
                    params.extend([&index.created as &(dyn ToSql + Sync), &data]);
                    tx.execute(&st, &params)
                        .await
                        .map_err(|e| write_err(kind, id, &key, e))?;
                }
                Op::Update {
                    kind,
                    id,
                    version,
                    index,
                    data,
                } => {
                    let key = index.ukey.clone().unwrap_or_default();
                    let mut params: Vec<&(dyn ToSql + Sync)> = index_params(&index).to_vec();
                    params.extend([&data as &(dyn ToSql + Sync), &id, &version]);
                    let n = tx
                        .execute(&st, &params)
                        .await
                        .map_err(|e| write_err(kind, id, &key, e))?;
                    if n != 1 {
                        return Err(StoreError::Conflict(kind, id));
                    }
                }
                Op::Delete { kind, id } => {
                    tx.execute(&st, &[&id])
                        .await
                        .map_err(|e| write_err(kind, id, "", e))?;
                }
            }
        }
        // Delivered to the other coordinators only if this commits.
        tx.execute(&announce, &[&CHANNEL, &notice(&self.origin, &kinds, &vms)])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(|e| match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => {
                StoreError::Conflict(kinds[0], 0)
            }
            _ => pg(e),
        })?;
        for k in kinds {
            self.generations[k.ordinal()].fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let mut c = self.pool.get().await?;
        let st = c
            .prepare("SELECT pg_database_size(current_database())")
            .await?;
        let n: i64 = c.client.query_one(&st, &[]).await.map_err(pg)?.get(0);
        Ok(n.max(0) as u64)
    }

    fn generation(&self, kind: Kind) -> u64 {
        self.generations[kind.ordinal()].load(Ordering::Acquire)
    }

    fn shared(&self) -> bool {
        true
    }

    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    fn runner_id(&self) -> String {
        self.origin.clone()
    }

    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        self.changes.lock().take()
    }

    async fn placement_lock(&self) -> Result<Option<Hold>, StoreError> {
        let mut slot = self.placer.clone().lock_owned().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = Some(self.pool.connect().await?);
        }
        let mut hold = PlacementHold {
            slot: Some(slot),
            locked: false,
        };
        let conn = hold
            .slot
            .as_mut()
            .and_then(|s| s.as_mut())
            .ok_or_else(|| StoreError::Db("no placement connection".into()))?;
        let st = conn.prepare("SELECT pg_advisory_lock($1)").await?;
        conn.client
            .execute(&st, &[&PLACEMENT_LOCK])
            .await
            .map_err(pg)?;
        hold.locked = true;
        Ok(Some(Box::new(hold)))
    }

    async fn advertise(&self, address: &str) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        // Two coordinators creating the table at once: one may lose the
        // race in the catalogue; the table is there when it tries again.
        if c.client.batch_execute(ENDPOINTS_SCHEMA).await.is_err() {
            c.client.batch_execute(ENDPOINTS_SCHEMA).await.map_err(pg)?;
        }
        let st = c
            .prepare(
                "INSERT INTO coordinator_endpoints (runner, address) VALUES ($1, $2) \
                 ON CONFLICT (runner) DO UPDATE SET address = EXCLUDED.address",
            )
            .await?;
        c.client
            .execute(&st, &[&self.origin, &address])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn peers(&self) -> Result<Vec<String>, StoreError> {
        let rows = {
            let c = self.pool.get().await?;
            let listed = c
                .client
                .query(
                    "SELECT runner, address FROM coordinator_endpoints WHERE runner <> $1",
                    &[&self.origin],
                )
                .await;
            match listed {
                Ok(rows) => rows,
                // No coordinator has advertised yet.
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
                Err(e) => return Err(pg(e)),
            }
        };
        let mut out = Vec::new();
        for r in rows {
            let (runner, address): (String, String) = (r.get(0), r.get(1));
            if self.runner_alive(&runner).await? {
                out.push(address);
            } else {
                // Gone for good: its runner id is never used again.
                let mut c = self.pool.get().await?;
                let st = c
                    .prepare("DELETE FROM coordinator_endpoints WHERE runner = $1")
                    .await?;
                c.client.execute(&st, &[&runner]).await.map_err(pg)?;
            }
        }
        Ok(out)
    }

    async fn statistics(&self) -> Result<Option<Box<dyn stats::StatsStore>>, StoreError> {
        let s = super::stats_pg::PgStats::open(self.pool.dial.clone())
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Some(Box::new(s)))
    }

    async fn barrier(&self, token: &str) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let st = c.prepare("SELECT pg_notify($1, $2)").await?;
        c.client
            .execute(&st, &[&CHANNEL, &barrier_notice(&self.origin, token)])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn runner_alive(&self, runner: &str) -> Result<bool, StoreError> {
        if runner == self.origin {
            return Ok(true);
        }
        let mut c = self.pool.get().await?;
        let st = c.prepare("SELECT pg_try_advisory_lock($1, $2)").await?;
        let key = runner_key(runner);
        let got: bool = c
            .client
            .query_one(&st, &[&RUNNER_CLASS, &key])
            .await
            .map_err(pg)?
            .get(0);
        if got {
            // Gone: let the lock go again (it is only a probe).
            let un = c.prepare("SELECT pg_advisory_unlock($1, $2)").await?;
            c.client
                .query_one(&un, &[&RUNNER_CLASS, &key])
                .await
                .map_err(pg)?;
        }
        Ok(!got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_notices_name_their_kinds_once_and_skip_their_origin() {
        let n = notice("me", &[Kind::Vm, Kind::Zone, Kind::Vm], &[]);
        let (vm, zone) = (Kind::Vm.ordinal(), Kind::Zone.ordinal());
        let both = vec![zone.min(vm), zone.max(vm)];
        assert_eq!(n, format!("me:{},{}", both[0], both[1]));
        assert_eq!(
            parse_notice("other", &n),
            Some(Notice::Commit {
                kinds: both.clone(),
                vms: Some(vec![])
            })
        );
        assert_eq!(parse_notice("me", &n), None);
        assert_eq!(parse_notice("x", "junk"), None);
        assert_eq!(parse_notice("x", "y:1,notanumber"), None);
        assert_eq!(parse_notice("x", "y:99999"), None);
        assert_eq!(parse_notice("x", "y:1;4,x"), None);
    }

    #[test]
    fn commit_notices_name_the_instances_they_changed_or_say_too_many() {
        let vm = Kind::Vm.ordinal();
        let n = notice("me", &[Kind::Vm], &[9, 3, 9]);
        assert_eq!(n, format!("me:{vm};3,9"));
        let got = parse_notice("other", &n).unwrap();
        assert_eq!(
            got,
            Notice::Commit {
                kinds: vec![vm],
                vms: Some(vec![3, 9])
            }
        );
        let Notice::Commit { kinds, vms } = got else {
            unreachable!()
        };
        assert_eq!(notice_changes(&kinds, vms), Some(Change::Vms(vec![3, 9])));
        // Too many to name: the payload stays under PostgreSQL's limit and
        // the views reload.
        let many: Vec<i64> = (1_000_000..1_002_000).collect();
        let n = notice("me", &[Kind::Vm], &many);
        assert!(n.len() < 8000, "{}", n.len());
        let Some(Notice::Commit { kinds, vms }) = parse_notice("other", &n) else {
            panic!("not a commit notice: {n}")
        };
        assert_eq!(vms, None);
        assert_eq!(notice_changes(&kinds, vms), Some(Change::All));
        // Commits without instances tell the views nothing.
        let z = notice("me", &[Kind::Zone], &[]);
        let Some(Notice::Commit { kinds, vms }) = parse_notice("other", &z) else {
            panic!()
        };
        assert_eq!(notice_changes(&kinds, vms), None);
    }

    #[test]
    fn barriers_come_back_only_to_their_sender() {
        let b = barrier_notice("me", "t1");
        assert_eq!(parse_notice("me", &b), Some(Notice::Barrier("t1".into())));
        assert_eq!(parse_notice("other", &b), None);
        assert_eq!(parse_notice("me", "me!"), None);
    }
}
