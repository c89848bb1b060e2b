//! What every part of the service shares: the store (reached only from
//! `service/`), the agents, the data directory, settings, the record cache,
//! domain paths, the scheduler's clock, API latency figures and the bounded
//! set of background tasks; and the rules every part applies the same way:
//! effective settings, look-ups scoped to the caller, list scoping and
//! events. The parts of the service (`Service` for instances, identity,
//! infrastructure, catalog and schedules; `stats::Statistics`) each hold it.

use super::*;

/// A part of the service (`Identity`, `Catalog`, `Statistics`, ...) holds
/// the shared context in its `ctx` field and reaches it through `Deref`.
macro_rules! part_of_service {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = $crate::service::Context;
            fn deref(&self) -> &$crate::service::Context {
                &self.ctx
            }
        }
    };
}
pub(crate) use part_of_service;

pub struct Context {
    /// The store, reached only through the service's methods (a source
    /// check keeps `api/` and `agents/` off it).
    pub(in crate::service) store: DynStore,
    pub agents: Arc<dyn AgentClient>,
    pub data_dir: PathBuf,
    pub(in crate::service) settings: RwLock<HashMap<(String, i64, String), String>>,
    pub(in crate::service) domain_paths: RwLock<HashMap<i64, String>>,
    pub(crate) cache: cache::RecordCache,
    /// The scheduler's time source; simulated in tests.
    pub(in crate::service) clock: RwLock<Arc<dyn orrery_schedule::clock::Clock>>,
    /// API latency per command, for the metrics endpoint.
    pub metrics: crate::metrics::ApiMetrics,
    /// Async jobs and downloads: bounded, and drained at shutdown.
    pub tasks: tasks::Tasks,
}

impl Context {
    pub(in crate::service) fn new(
        store: DynStore,
        agents: Arc<dyn AgentClient>,
        data_dir: PathBuf,
    ) -> Self {
        Context {
            store,
            agents,
            data_dir,
            settings: RwLock::new(HashMap::new()),
            domain_paths: RwLock::new(HashMap::new()),
            cache: cache::RecordCache::default(),
            clock: RwLock::new(Arc::new(orrery_schedule::clock::SystemClock)),
            metrics: crate::metrics::ApiMetrics::default(),
            tasks: tasks::Tasks::default(),
        }
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
