//! Persistence. Callers see a `Store` trait of records and typed conditions, never
//! SQL. Each record kind is one table with a fixed set of indexed columns (the
//! columns lists filter and sort on) and the full record as a JSON document, so a
//! new field needs no migration while every filter stays an index lookup. A set of
//! changes is committed as one transaction, with optimistic version checks, so a
//! state change of an instance and everything that goes with it land together or
//! not at all.

#[cfg(test)]
pub(crate) mod engine_tests;
pub mod observed;
pub mod pg_tls;
pub mod postgres;
pub mod records;
mod sql;
pub mod sqlite;
pub mod stats;
pub mod stats_pg;
mod writer;
#[cfg(test)]
mod writer_tests;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("record changed concurrently: {0:?} {1}")]
    Conflict(Kind, i64),
    #[error("duplicate key {1} in {0:?}")]
    Duplicate(Kind, String),
    #[error("corrupt record {0:?} {1}: {2}")]
    Corrupt(Kind, i64, String),
    #[error("store already initialised")]
    AlreadyInitialised,
}

macro_rules! kinds {
    ($($k:ident => $t:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind { $($k),* }
        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$k),*];
            /// Position in `ALL`, for per-kind arrays.
            pub fn ordinal(self) -> usize { self as usize }
            pub fn table(self) -> &'static str { match self { $(Kind::$k => $t),* } }
        }
    };
}

kinds! {
    Domain => "domains", Account => "accounts", User => "users", Role => "roles",
    RolePermission => "role_permissions", Zone => "zones", Pod => "pods", Cluster => "clusters",
    Host => "hosts", StoragePool => "storage_pools", NetworkOffering => "network_offerings",
    Network => "networks", ServiceOffering => "service_offerings", DiskOffering => "disk_offerings",
    OsCategory => "os_categories", OsType => "os_types", Template => "templates", Vm => "vms",
    Volume => "volumes", Nic => "nics", InstanceGroup => "instance_groups", Job => "jobs",
    Event => "events", Config => "configs", Session => "sessions",
    EnrollToken => "enroll_tokens", AffinityGroup => "affinity_groups",
    VmSchedule => "vm_schedules", SshKeyPair => "ssh_keypairs", UserData => "user_data",
    ResourceIcon => "resource_icons", VmSnapshot => "vm_snapshots",
    Snapshot => "snapshots", SnapshotPolicy => "snapshot_policies",
    ConsoleTicket => "console_tickets",
}

/// Indexed columns. Each record kind documents which of them it fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Id,
    Uuid,
    /// Unique within the table when set (names that must not repeat, an IP per network).
    Ukey,
    Name,
    /// Second searchable text (display name, description).
    Keyword,
    State,
    Account,
    Domain,
    Zone,
    Host,
    Parent,
    Ref,
    // The two free key columns (`k1`, `k2`) mean something per kind; each
    // meaning has its own name, so a query says what it filters on.
    /// Domains: the path (`k1`).
    DomainPath,
    /// Users: the API key (`k1`).
    ApiKey,
    /// Hosts: the resource state, Enabled or Disabled (`k1`).
    ResourceState,
    /// Templates: TEMPLATE or ISO (`k1`).
    TemplateKind,
    /// Instances: the service offering's id (`k1`).
    ServiceOffering,
    /// Instances: the lease expiry while there is one, zero-padded seconds
    /// so text order is time order (`k2`, schema v5).
    LeaseExpiry,
    /// Volumes: ROOT or DATADISK (`k1`).
    VolumeType,
    /// NICs: the MAC address (`k1`).
    MacAddress,
    /// Jobs and events: the uuid of the resource they concern (`k1`).
    ResourceUuid,
    /// Affinity groups: the group type (`k1`).
    GroupType,
    /// SSH key pairs: the fingerprint (`k1`, schema v6).
    Fingerprint,
    /// Instance and volume snapshots: Disk / DiskAndMemory, MANUAL /
    /// RECURRING (`k1`, schema v7).
    SnapshotType,
    /// Snapshot policies: the next time one falls due, zero-padded seconds
    /// (`k2`, schema v7).
    NextDue,
    Created,
}

impl Col {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Col::Id => "id",
            Col::Uuid => "uuid",
            Col::Ukey => "ukey",
            Col::Name => "name",
            Col::Keyword => "keyword",
            Col::State => "state",
            Col::Account => "account_id",
            Col::Domain => "domain_id",
            Col::Zone => "zone_id",
            Col::Host => "host_id",
            Col::Parent => "parent_id",
            Col::Ref => "ref_id",
            Col::DomainPath
            | Col::ApiKey
            | Col::ResourceState
            | Col::TemplateKind
            | Col::ServiceOffering
            | Col::VolumeType
            | Col::MacAddress
            | Col::ResourceUuid
            | Col::GroupType
            | Col::Fingerprint
            | Col::SnapshotType => "k1",
            Col::LeaseExpiry | Col::NextDue => "k2",
            Col::Created => "created",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    I(i64),
    S(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::I(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::S(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::S(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Eq(Col, Val),
    Ne(Col, Val),
    In(Col, Vec<Val>),
    NotIn(Col, Vec<Val>),
    IsNull(Col),
    NotNull(Col),
    /// Case-insensitive substring match on any of the columns.
    Contains(Vec<Col>, String),
    /// Case-insensitive equality.
    EqNoCase(Col, String),
    Le(Col, Val),
}

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub conds: Vec<Cond>,
    /// (offset, limit)
    pub page: Option<(u64, u64)>,
    pub descending: bool,
    /// The caller needs no total (a lookup of one row), so none is counted.
    pub skip_count: bool,
}

impl Query {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn and(mut self, c: Cond) -> Self {
        self.conds.push(c);
        self
    }
    pub fn eq(self, col: Col, v: impl Into<Val>) -> Self {
        self.and(Cond::Eq(col, v.into()))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Index {
    pub ukey: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub state: Option<String>,
    pub account_id: Option<i64>,
    pub domain_id: Option<i64>,
    pub zone_id: Option<i64>,
    pub host_id: Option<i64>,
    pub parent_id: Option<i64>,
    pub ref_id: Option<i64>,
    pub k1: Option<String>,
    pub k2: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub uuid: String,
    pub version: i64,
    pub data: String,
}

#[derive(Debug, Clone)]
pub enum Op {
    Insert {
        kind: Kind,
        id: i64,
        uuid: String,
        index: Index,
        data: String,
    },
    /// Fails the whole transaction with `Conflict` unless the stored version is
    /// `version`; the stored version becomes `version + 1`.
    Update {
        kind: Kind,
        id: i64,
        version: i64,
        index: Index,
        data: String,
    },
    Delete {
        kind: Kind,
        id: i64,
    },
}

impl Op {
    pub fn kind(&self) -> Kind {
        match self {
            Op::Insert { kind, .. } | Op::Update { kind, .. } | Op::Delete { kind, .. } => *kind,
        }
    }
}

/// Ids reserved in the database but not handed out yet, per kind: the next
/// id and the end of the block (exclusive). Reserving a block at a time
/// keeps id allocation off the write path; ids left in a block when the
/// process stops are simply never used.
#[derive(Default)]
pub(crate) struct IdBlocks(tokio::sync::Mutex<std::collections::HashMap<Kind, (i64, i64)>>);

/// Ids reserved per database write.
pub(crate) const ID_BLOCK: i64 = 64;

impl IdBlocks {
    /// `n` consecutive ids of `kind`, from the current block or from a new
    /// one `reserve(kind, size)` takes from the database.
    pub(crate) async fn take<F, Fut>(
        &self,
        kind: Kind,
        n: i64,
        reserve: F,
    ) -> Result<i64, StoreError>
    where
        F: FnOnce(Kind, i64) -> Fut,
        Fut: std::future::Future<Output = Result<i64, StoreError>>,
    {
        let mut blocks = self.0.lock().await;
        if let Some((next, end)) = blocks.get_mut(&kind) {
            if *next + n <= *end {
                let first = *next;
                *next += n;
                return Ok(first);
            }
        }
        let want = n.max(ID_BLOCK);
        let first = reserve(kind, want).await?;
        blocks.insert(kind, (first + n, first + want));
        Ok(first)
    }
}

/// What other coordinators committed to a shared store, as this one learns
/// it, in their commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These instances changed.
    Vms(Vec<i64>),
    /// Changes may have been missed (the channel was lost, or one notice
    /// named too many): views built from the records reload them.
    All,
    /// Everything committed before `barrier(token)` was called has been
    /// reported.
    Barrier(String),
}

/// Held while this coordinator decides a placement and commits it (see
/// `Store::placement_lock`); dropping it lets the next one decide.
pub type Hold = Box<dyn std::any::Any + Send>;

#[async_trait]
pub trait Store: Send + Sync {
    /// Creates the schema or brings it up to date.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// True once `init` data exists.
    async fn is_initialised(&self) -> Result<bool, StoreError>;
    async fn get(&self, kind: Kind, id: i64) -> Result<Option<Row>, StoreError>;
    async fn get_by_uuid(&self, kind: Kind, uuid: &str) -> Result<Option<Row>, StoreError>;
    /// Matching rows in id order (one page when `page` is set) and the total count.
    async fn find(&self, kind: Kind, q: &Query) -> Result<(Vec<Row>, u64), StoreError>;
    async fn count(&self, kind: Kind, q: &Query) -> Result<u64, StoreError>;
    /// Reserves `n` consecutive ids for `kind`; returns the first.
    async fn allocate_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError>;
    /// Applies all operations in one transaction.
    async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Size of the database in bytes (pages in use), for capacity figures.
    async fn size_bytes(&self) -> Result<u64, StoreError>;
    /// A number that changes whenever this process commits a change to `kind`,
    /// so in-memory caches of rarely written kinds know when to reload.
    fn generation(&self, kind: Kind) -> u64;
    /// Whether other coordinators may write this store too (and memory
    /// views built from it must follow their commits).
    fn shared(&self) -> bool {
        false
    }
    /// Whether this coordinator runs the cloud's background loops (expunger,
    /// scheduler, leases, HA, retention) now: always with the embedded
    /// store; on a shared store one coordinator at a time.
    fn is_leader(&self) -> bool {
        true
    }
    /// This process among the coordinators sharing the store.
    fn runner_id(&self) -> String {
        String::new()
    }
    /// Whether the coordinator process `runner` still lives (only another
    /// coordinator of a shared store can be gone).
    async fn runner_alive(&self, runner: &str) -> Result<bool, StoreError> {
        Ok(runner == self.runner_id())
    }
    /// Other coordinators' commits, in order, for views kept in memory
    /// (placement capacity). Given out once; None where no other
    /// coordinator writes.
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }
    /// Serialises placement across the coordinators sharing the store: one
    /// decides at a time and holds the lock until its decision is
    /// committed. None where this process is the only writer (its own lock
    /// suffices).
    async fn placement_lock(&self) -> Result<Option<Hold>, StoreError> {
        Ok(None)
    }
    /// Puts a marker into the commit channel: `changes` yields
    /// `Change::Barrier(token)` once every commit made before this call has
    /// been reported.
    async fn barrier(&self, _token: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Records where this coordinator's agent endpoint can be reached by
    /// the other coordinators sharing the store.
    async fn advertise(&self, _address: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// The agent endpoints of the other coordinators alive now.
    async fn peers(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Where statistics go when this store is shared (None: a file of the
    /// coordinator's own, `stats.db`).
    async fn statistics(&self) -> Result<Option<Box<dyn stats::StatsStore>>, StoreError> {
        Ok(None)
    }
}

pub type DynStore = Arc<dyn Store>;

/// A record kind with its index columns.
pub trait Entity: Serialize + DeserializeOwned + Send + Sync + Clone + 'static {
    const KIND: Kind;
    fn id(&self) -> i64;
    fn uuid(&self) -> &str;
    fn version(&self) -> i64;
    fn set_version(&mut self, v: i64);
    /// Append-only kinds get their id from the store on insert.
    fn set_id(&mut self, id: i64);
    fn index(&self) -> Index;
}

fn decode<E: Entity>(row: Row) -> Result<E, StoreError> {
    let mut e: E = serde_json::from_str(&row.data)
        .map_err(|err| StoreError::Corrupt(E::KIND, row.id, err.to_string()))?;
    e.set_version(row.version);
    e.set_id(row.id);
    Ok(e)
}

/// Typed access on top of the object-safe trait.
#[async_trait]
pub trait StoreExt {
    async fn load<E: Entity>(&self, id: i64) -> Result<Option<E>, StoreError>;
    async fn load_uuid<E: Entity>(&self, uuid: &str) -> Result<Option<E>, StoreError>;
    async fn list<E: Entity>(&self, q: &Query) -> Result<(Vec<E>, u64), StoreError>;
    async fn all<E: Entity>(&self, q: Query) -> Result<Vec<E>, StoreError>;
    async fn first<E: Entity>(&self, q: Query) -> Result<Option<E>, StoreError>;
    async fn new_id<E: Entity>(&self) -> Result<i64, StoreError>;
}

#[async_trait]
impl StoreExt for dyn Store {
    async fn load<E: Entity>(&self, id: i64) -> Result<Option<E>, StoreError> {
        self.get(E::KIND, id).await?.map(decode).transpose()
    }
    async fn load_uuid<E: Entity>(&self, uuid: &str) -> Result<Option<E>, StoreError> {
        self.get_by_uuid(E::KIND, uuid)
            .await?
            .map(decode)
            .transpose()
    }
    async fn list<E: Entity>(&self, q: &Query) -> Result<(Vec<E>, u64), StoreError> {
        let (rows, total) = self.find(E::KIND, q).await?;
        let items = rows
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<E>, _>>()?;
        Ok((items, total))
    }
    async fn all<E: Entity>(&self, q: Query) -> Result<Vec<E>, StoreError> {
        Ok(self.list::<E>(&q).await?.0)
    }
    async fn first<E: Entity>(&self, mut q: Query) -> Result<Option<E>, StoreError> {
        q.page = Some((0, 1));
        q.skip_count = true;
        Ok(self.list::<E>(&q).await?.0.into_iter().next())
    }
    async fn new_id<E: Entity>(&self) -> Result<i64, StoreError> {
        self.allocate_ids(E::KIND, 1).await
    }
}

/// A transaction being assembled.
#[derive(Default)]
pub struct Tx {
    pub ops: Vec<Op>,
}

impl Tx {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert<E: Entity>(&mut self, e: &E) -> &mut Self {
        self.ops.push(Op::Insert {
            kind: E::KIND,
            id: e.id(),
            uuid: e.uuid().to_string(),
            index: e.index(),
            data: serde_json::to_string(e).expect("records serialise"),
        });
        self
    }
    /// Updates `e`; its in-memory version is bumped to match what will be stored.
    pub fn update<E: Entity>(&mut self, e: &mut E) -> &mut Self {
        self.ops.push(Op::Update {
            kind: E::KIND,
            id: e.id(),
            version: e.version(),
            index: e.index(),
            data: serde_json::to_string(e).expect("records serialise"),
        });
        e.set_version(e.version() + 1);
        self
    }
    pub fn delete<E: Entity>(&mut self, id: i64) -> &mut Self {
        self.ops.push(Op::Delete { kind: E::KIND, id });
        self
    }
}
