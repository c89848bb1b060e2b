//! The only module that combines the store, placement and the agents. API
//! handlers call into it with an authenticated caller and typed arguments.

pub mod access;
pub mod activity;
pub mod affinity;
pub mod agent;
pub mod bootstrap;
pub mod cache;
pub mod capacity;
pub mod catalog;
pub mod console;
pub mod context;
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
pub use context::Context;
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
    /// What every part of the service shares (see `context`); the service
    /// reaches it through `Deref`.
    ctx: Arc<Context>,
    /// Instance and volume statistics, their sampling settings and
    /// retention (see `stats`).
    pub statistics: Arc<stats::Statistics>,
    /// Zones, pods, clusters, hosts' records, pools and networks (see
    /// `infra` and `inventory`).
    pub infrastructure: infra::Infrastructure,
    /// Instances' cron schedules and the scheduler's due-indexes (see
    /// `schedules`).
    pub schedules: schedules::Schedules,
    /// Callers, sessions and role rules (see `identity`).
    pub identity: Arc<identity::Identity>,
    /// SSH key pairs, user data and console endpoints (see `access`).
    pub guest_access: access::GuestAccess,
    /// Templates, ISOs, OS types, service and disk offerings (see
    /// `offerings`, `catalog`, `templates`).
    pub catalog: Arc<offerings::Catalog>,
    /// Serialises placement decisions with their capacity commit, so concurrent
    /// deploys never overcommit a host.
    pub(crate) place_lock: tokio::sync::Mutex<()>,
    /// Progress of running jobs by the uuid of what they work on.
    pub(crate) progress: Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
    /// Per-network address pools, loaded lazily from the NICs in the store.
    pub(crate) ip_pools: vm::IpPools,
    /// Instances a job of this process is working on; host reports leave
    /// them to the job.
    pub(crate) busy: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Instances (uuid) whose power event a job of this process was
    /// working on when it came, with the host it came from.
    pub(crate) power_rechecks: parking_lot::Mutex<HashMap<String, i64>>,
    /// Capacity held per host, from every committed instance change.
    pub(crate) capacity: Arc<capacity::CapacityView>,
    /// Storage heartbeat settings as agents should apply them.
    pub(crate) ha_config: tokio::sync::watch::Sender<fencing::HaTimes>,
    /// Grants for files hosts send into secondary storage.
    pub uploads: uploads::Uploads,
    /// Barriers sent through a shared store's commit channel, by token,
    /// waiting for their return (see `placing::PlaceGuard`).
    pub(crate) barriers: parking_lot::Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Set when other coordinators' changes could not be applied.
    pub(crate) capacity_stale: std::sync::atomic::AtomicBool,
}

context::part_of_service!(Service);

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
        let hub = match store.statistics().await? {
            Some(shared) => {
                let s = store.clone();
                stats::StatsHub::with_store(shared, Arc::new(move || s.is_leader())).await
            }
            None => stats::StatsHub::open(&data_dir).await,
        }
        .map_err(|e| ServiceError::internal(e.to_string()))?;
        let ctx = Arc::new(Context::new(store, agents, data_dir));
        let statistics = Arc::new(stats::Statistics::new(ctx.clone(), hub));
        let ip_pools = vm::IpPools::default();
        let identity = Arc::new(identity::Identity::new(ctx.clone()));
        let svc = Arc::new(Service {
            infrastructure: infra::Infrastructure::new(
                ctx.clone(),
                statistics.clone(),
                ip_pools.clone(),
            ),
            statistics,
            catalog: Arc::new(offerings::Catalog::new(ctx.clone())),
            identity: identity.clone(),
            guest_access: access::GuestAccess::new(ctx.clone(), identity),
            schedules: schedules::Schedules::new(ctx.clone()),
            ctx,
            capacity,
            ha_config: tokio::sync::watch::channel(fencing::HaTimes::default()).0,
            place_lock: tokio::sync::Mutex::new(()),
            progress: Arc::default(),
            ip_pools: ip_pools.clone(),
            busy: parking_lot::Mutex::new(std::collections::HashSet::new()),
            power_rechecks: parking_lot::Mutex::new(HashMap::new()),
            uploads: uploads::Uploads::default(),
            barriers: parking_lot::Mutex::new(HashMap::new()),
            capacity_stale: std::sync::atomic::AtomicBool::new(false),
        });
        svc.reload_settings().await?;
        svc.statistics.refresh_settings();
        svc.refresh_ha_settings();
        Ok(svc)
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
