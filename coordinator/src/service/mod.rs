//! The only module that combines the store, placement and the agents. API
//! handlers call into it with an authenticated caller and typed arguments.

pub mod activity;
pub mod affinity;
pub mod agent;
pub mod bootstrap;
pub mod cache;
pub mod capacity;
pub mod catalog;
pub mod console;
pub mod details;
pub mod directory;
pub mod error;
pub mod extraconfig;
pub mod fencing;
pub mod gpus;
pub mod hosts;
pub mod icons;
pub mod identity;
pub mod infra;
pub mod inventory;
pub mod jobs;
pub mod leases;
pub mod lifecycle;
pub mod limits;
pub mod listing;
pub mod maintenance;
pub mod metadata;
pub mod migration;
pub mod offerings;
pub mod placing;
pub mod reshape;
pub mod restore;
pub mod schedules;
pub mod scope;
pub mod settings;
pub mod snapshot_policies;
pub mod snapshots;
pub mod sshkeys;
pub mod stats;
pub mod storage_motion;
pub mod tasks;
pub mod templates;
#[cfg(test)]
mod timed_tests;
pub mod uploads;
pub mod userdata;
pub mod vm;
pub mod vmsnapshots;
pub mod volumes;

use crate::store::records::*;
use crate::store::{Col, Cond, DynStore, Entity, Query, StoreExt, Tx, Val};
use agent::AgentClient;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The records the service works with; the wire layer renders them.
pub use crate::store::records;
/// Records the service can load by id or uuid.
pub use crate::store::Entity as Record;
pub use error::{ErrorKind, ServiceError};
pub type SResult<T> = Result<T, ServiceError>;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The authenticated caller of an API command.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub account: Account,
    pub domain: Domain,
    pub role: Role,
}

impl Caller {
    pub fn is_root_admin(&self) -> bool {
        self.role.role_type == "Admin"
    }
    pub fn is_domain_admin(&self) -> bool {
        self.role.role_type == "DomainAdmin"
    }
    pub fn is_admin(&self) -> bool {
        self.is_root_admin() || self.is_domain_admin()
    }
    /// Whether the caller may see and act on a resource owned by `account_id` in
    /// the domain with path `domain_path`.
    pub fn can_access(&self, account_id: i64, domain_path: &str) -> bool {
        if self.is_root_admin() {
            return true;
        }
        if self.is_domain_admin() {
            return in_subtree(domain_path, &self.domain.path);
        }
        account_id == self.account.id
    }
}

pub fn in_subtree(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{root}/"))
}

pub struct Service {
    /// The store, reached only through the service's methods (a source
    /// check keeps `api/` and `agents/` off it).
    pub(in crate::service) store: DynStore,
    pub agents: Arc<dyn AgentClient>,
    pub data_dir: PathBuf,
    settings: RwLock<HashMap<(String, i64, String), String>>,
    /// Serialises placement decisions with their capacity commit, so concurrent
    /// deploys never overcommit a host.
    pub(crate) place_lock: tokio::sync::Mutex<()>,
    /// Progress of running jobs by the uuid of what they work on.
    pub(crate) progress: Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
    /// Per-network address pools, loaded lazily from the NICs in the store.
    pub(crate) ip_pools: tokio::sync::Mutex<HashMap<i64, vm::IpPool>>,
    pub(crate) domain_paths: RwLock<HashMap<i64, String>>,
    /// Instances a job of this process is working on; host reports leave
    /// them to the job.
    pub(crate) busy: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Capacity held per host, from every committed instance change.
    pub(crate) capacity: Arc<capacity::CapacityView>,
    pub(crate) cache: cache::RecordCache,
    /// Due schedules and leases (see `schedules`).
    pub(crate) sched: tokio::sync::Mutex<schedules::SchedState>,
    /// The scheduler's time source; simulated in tests.
    clock: RwLock<Arc<dyn orrery_schedule::clock::Clock>>,
    /// Instance and volume statistics (see `stats`).
    pub stats: stats::StatsHub,
    /// Sampling settings as agents should apply them.
    pub(crate) stats_config: tokio::sync::watch::Sender<stats::StatsSettings>,
    /// Storage heartbeat settings as agents should apply them.
    pub(crate) ha_config: tokio::sync::watch::Sender<fencing::HaTimes>,
    /// Instance and volume ids by uuid, for statistics reports.
    pub(crate) stats_ids: parking_lot::Mutex<HashMap<String, i64>>,
    /// API latency per command, for the metrics endpoint.
    pub metrics: crate::metrics::ApiMetrics,
    /// Failed password logins per user and source.
    pub(crate) login_throttle: parking_lot::Mutex<identity::LoginThrottle>,
    /// Async jobs and downloads: bounded, and drained at shutdown.
    pub tasks: tasks::Tasks,
    /// Outstanding console tokens.
    pub(crate) consoles: console::ConsoleTickets,
    /// Grants for files hosts send into secondary storage.
    pub uploads: uploads::Uploads,
    /// Barriers sent through a shared store's commit channel, by token,
    /// waiting for their return (see `placing::PlaceGuard`).
    pub(crate) barriers: parking_lot::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Set when other coordinators' changes could not be applied.
    pub(crate) capacity_stale: std::sync::atomic::AtomicBool,
}

impl Service {
    pub async fn new(
        store: DynStore,
        agents: Arc<dyn AgentClient>,
        data_dir: PathBuf,
    ) -> SResult<Arc<Self>> {
        // Every write goes through the observed store, so the capacity view
        // sees each committed instance change; it is filled from the records
        // once the observer is in place, and versions settle any overlap.
        let capacity = Arc::new(capacity::CapacityView::default());
        let store: DynStore = Arc::new(crate::store::observed::ObservedStore::new(
            store,
            capacity.clone(),
        ));
        let holders: Vec<Vm> = store
            .all(Query::new().and(Cond::In(Col::State, vm::running_like())))
            .await?;
        for v in &holders {
            capacity.observe(v);
        }
        let stats = match store.statistics().await? {
            Some(shared) => {
                let s = store.clone();
                stats::StatsHub::with_store(shared, Arc::new(move || s.is_leader())).await
            }
            None => stats::StatsHub::open(&data_dir).await,
        }
        .map_err(|e| ServiceError::internal(e.to_string()))?;
        let svc = Arc::new(Service {
            capacity,
            cache: cache::RecordCache::default(),
            sched: tokio::sync::Mutex::new(schedules::SchedState::default()),
            clock: RwLock::new(Arc::new(orrery_schedule::clock::SystemClock)),
            stats,
            stats_config: tokio::sync::watch::channel(stats::StatsSettings::default()).0,
            ha_config: tokio::sync::watch::channel(fencing::HaTimes::default()).0,
            stats_ids: parking_lot::Mutex::new(HashMap::new()),
            metrics: crate::metrics::ApiMetrics::default(),
            store,
            agents,
            data_dir,
            settings: RwLock::new(HashMap::new()),
            place_lock: tokio::sync::Mutex::new(()),
            progress: Arc::default(),
            ip_pools: tokio::sync::Mutex::new(HashMap::new()),
            domain_paths: RwLock::new(HashMap::new()),
            busy: parking_lot::Mutex::new(std::collections::HashSet::new()),
            login_throttle: parking_lot::Mutex::new(identity::LoginThrottle::default()),
            tasks: tasks::Tasks::default(),
            consoles: console::ConsoleTickets::default(),
            uploads: uploads::Uploads::default(),
            barriers: parking_lot::Mutex::new(HashMap::new()),
            capacity_stale: std::sync::atomic::AtomicBool::new(false),
        });
        svc.reload_settings().await?;
        svc.refresh_stats_settings();
        svc.refresh_ha_settings();
        Ok(svc)
    }

    /// Whether the store answers a read (for `/readyz`).
    pub async fn ready(&self) -> SResult<()> {
        let _: Option<Domain> = self.store.load(1).await?;
        Ok(())
    }

    pub async fn reload_settings(&self) -> SResult<()> {
        let all: Vec<Config> = self.store.all(Query::new()).await?;
        let mut m = self.settings.write();
        m.clear();
        for c in all {
            m.insert((c.scope, c.scope_id.unwrap_or(0), c.name), c.value);
        }
        Ok(())
    }

    /// Whether this coordinator runs the background loops now (see
    /// `Store::is_leader`).
    pub fn leads(&self) -> bool {
        self.store.is_leader()
    }

    /// This coordinator's name as the API shows it (`managementservername`):
    /// the machine's host name.
    pub fn coordinator_name(&self) -> String {
        static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        NAME.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "localhost".into())
        })
        .clone()
    }

    /// Whether other coordinators may share this store.
    pub fn shared_store(&self) -> bool {
        self.store.shared()
    }

    /// With a shared store, other coordinators' setting changes are picked
    /// up as their commits are announced (within half a second), and their
    /// instance changes reach the capacity view.
    pub fn follow_shared_store(self: &Arc<Self>) {
        if !self.store.shared() {
            return;
        }
        if let Some(changes) = self.store.changes() {
            let svc = Arc::downgrade(self);
            tokio::spawn(placing::follow_changes(svc, changes));
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let mut seen = svc.store.generation(crate::store::Kind::Config);
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let now = svc.store.generation(crate::store::Kind::Config);
                if now != seen {
                    seen = now;
                    if let Err(e) = svc.reload_settings().await {
                        tracing::warn!(error = %e.text(), "reloading settings failed");
                    }
                }
            }
        });
    }

    /// A setting's effective value: account, then cluster, then zone override,
    /// then the global value, then the default.
    pub fn setting(&self, name: &str, scopes: &[(&str, i64)]) -> String {
        let m = self.settings.read();
        for (scope, id) in scopes {
            if let Some(v) = m.get(&(scope.to_string(), *id, name.to_string())) {
                return v.clone();
            }
        }
        if let Some(v) = m.get(&("global".to_string(), 0, name.to_string())) {
            return v.clone();
        }
        settings::find(name)
            .map(|s| s.default.to_string())
            .unwrap_or_default()
    }

    /// Percent done of the running job on a resource that reports progress
    /// (a migration); 0 for the others. One job runs on an instance at a
    /// time, so the resource names the job.
    pub fn job_progress(&self, resource_uuid: &str) -> u32 {
        self.progress
            .lock()
            .get(resource_uuid)
            .copied()
            .unwrap_or(0)
    }

    pub fn is_busy(&self, vm_uuid: &str) -> bool {
        self.busy.lock().contains(vm_uuid)
    }

    /// Whether a job of any coordinator is working on the instance: this
    /// process's own, or, on a shared store, a pending job of another one
    /// (whose reports it must leave to that job as it does its own).
    pub async fn is_busy_anywhere(&self, vm_uuid: &str) -> SResult<bool> {
        if self.is_busy(vm_uuid) {
            return Ok(true);
        }
        if !self.store.shared() {
            return Ok(false);
        }
        let pending: Option<Job> = self
            .store
            .first(
                Query::new()
                    .eq(Col::ResourceUuid, vm_uuid.to_string())
                    .eq(Col::State, JOB_PENDING.to_string()),
            )
            .await?;
        Ok(pending.is_some())
    }

    pub fn setting_i64(&self, name: &str) -> i64 {
        self.setting(name, &[]).parse().unwrap_or(0)
    }
    pub fn setting_f64(&self, name: &str, scopes: &[(&str, i64)]) -> f64 {
        self.setting(name, scopes).parse().unwrap_or(1.0)
    }
    pub fn setting_bool(&self, name: &str) -> bool {
        self.setting(name, &[]) == "true"
    }

    pub(crate) fn cache_setting(&self, scope: &str, id: i64, name: &str, value: &str) {
        self.settings
            .write()
            .insert((scope.to_string(), id, name.to_string()), value.to_string());
    }

    pub async fn domain_path(&self, id: i64) -> SResult<String> {
        if let Some(p) = self.domain_paths.read().get(&id) {
            return Ok(p.clone());
        }
        let d: Domain = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal(format!("domain {id} missing")))?;
        self.domain_paths.write().insert(id, d.path.clone());
        Ok(d.path)
    }

    /// Resolves a uuid parameter to a record, or the standard unknown-id error.
    pub async fn by_uuid<E: Entity + 'static>(&self, param: &str, uuid: &str) -> SResult<E> {
        self.load_uuid_cached::<E>(uuid)
            .await?
            .ok_or_else(|| ServiceError::not_found(param, uuid))
    }

    /// Like `by_uuid`, but a resource the caller may not access is reported as
    /// unknown too, so ids of other accounts do not leak.
    pub async fn owned<E: Entity + Owned + 'static>(
        &self,
        caller: &Caller,
        param: &str,
        uuid: &str,
    ) -> SResult<E> {
        let e: E = self.by_uuid(param, uuid).await?;
        let path = self.domain_path(e.owner_domain()).await?;
        if e.is_removed() || !caller.can_access(e.owner_account(), &path) {
            return Err(ServiceError::not_found(param, uuid));
        }
        Ok(e)
    }

    /// Refuses, as an unknown id, a record the caller may not act on.
    pub(crate) async fn check_owned<E: Owned + Entity>(
        &self,
        caller: &Caller,
        e: &E,
    ) -> SResult<()> {
        let path = self.domain_path(e.owner_domain()).await?;
        if e.is_removed() || !caller.can_access(e.owner_account(), &path) {
            return Err(ServiceError::not_found("id", e.uuid()));
        }
        Ok(())
    }

    /// Conditions restricting a list to what the caller may see. `listall` widens
    /// an admin's view from its own account to everything it administers, as in
    /// CloudStack.
    pub async fn scope_conds(
        &self,
        caller: &Caller,
        listall: bool,
        account: Option<(i64, i64)>,
        domain_id: Option<i64>,
        recursive: bool,
    ) -> SResult<Vec<Cond>> {
        if let Some((acct, _)) = account {
            return Ok(vec![Cond::Eq(Col::Account, acct.into())]);
        }
        if !caller.is_admin() {
            return Ok(vec![Cond::Eq(Col::Account, caller.account.id.into())]);
        }
        if let Some(d) = domain_id {
            if recursive || listall {
                return Ok(vec![Cond::In(Col::Domain, self.subtree_ids(d).await?)]);
            }
            return Ok(vec![Cond::Eq(Col::Domain, d.into())]);
        }
        if !listall {
            return Ok(vec![Cond::Eq(Col::Account, caller.account.id.into())]);
        }
        if caller.is_root_admin() {
            return Ok(vec![]);
        }
        Ok(vec![Cond::In(
            Col::Domain,
            self.subtree_ids(caller.domain.id).await?,
        )])
    }

    pub async fn subtree_ids(&self, domain_id: i64) -> SResult<Vec<crate::store::Val>> {
        let root = self.domain_path(domain_id).await?;
        let domains: Vec<Domain> = self.store.all(Query::new()).await?;
        Ok(domains
            .into_iter()
            .filter(|d| d.removed.is_none() && in_subtree(&d.path, &root))
            .map(|d| d.id.into())
            .collect())
    }

    /// Records an event in the same transaction as the change it describes.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        event_type: &str,
        description: String,
        account_id: i64,
        domain_id: i64,
        resource: Option<(&str, &str, &str)>,
    ) {
        let e = Event {
            id: 0,
            uuid: new_uuid(),
            version: 0,
            event_type: event_type.to_string(),
            level: "INFO".into(),
            description,
            state: "Completed".into(),
            account_id,
            domain_id,
            user_id: caller.user.id,
            resource_uuid: resource.map(|r| r.0.to_string()),
            resource_type: resource.map(|r| r.1.to_string()),
            resource_name: resource.map(|r| r.2.to_string()),
            created: now(),
        };
        tx.insert(&e);
    }
}

/// The filters most lists take: a uuid, a name in any case, and a keyword
/// searched (in any case) in `keyword_cols`.
pub(crate) fn common_filters(
    mut q: Query,
    id: Option<&str>,
    name: Option<&str>,
    keyword: Option<&str>,
    keyword_cols: &[Col],
) -> Query {
    if let Some(id) = id {
        q = q.eq(Col::Uuid, id);
    }
    if let Some(n) = name {
        q = q.and(Cond::EqNoCase(Col::Name, n.to_string()));
    }
    if let Some(k) = keyword {
        q = q.and(Cond::Contains(keyword_cols.to_vec(), k.to_string()));
    }
    q
}

/// Records owned by an account.
pub trait Owned {
    fn owner_account(&self) -> i64;
    fn owner_domain(&self) -> i64;
    fn is_removed(&self) -> bool;
}

macro_rules! owned {
    ($t:ty) => {
        owned!($t, |s| s.removed.is_some());
    };
    ($t:ty, |$s:ident| $removed:expr) => {
        impl Owned for $t {
            fn owner_account(&self) -> i64 {
                self.account_id
            }
            fn owner_domain(&self) -> i64 {
                self.domain_id
            }
            fn is_removed(&self) -> bool {
                let $s = self;
                $removed
            }
        }
    };
}
owned!(Vm);
owned!(Volume);
owned!(Template);
owned!(AffinityGroup);
owned!(SshKeyPair);
owned!(UserData);
// Deleted outright rather than marked removed.
owned!(InstanceGroup, |_s| false);
owned!(VmSchedule, |_s| false);
owned!(VmSnapshot);
owned!(Snapshot);
owned!(SnapshotPolicy, |_s| false);
