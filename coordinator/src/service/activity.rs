//! Jobs and events as lists, settings changes, and capacity totals: the
//! service side of the administrative commands.

use super::*;

/// Filters of listAsyncJobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub resource: Option<String>,
    /// Jobs created at or after this time (seconds).
    pub since: Option<i64>,
    pub page: Option<(u64, u64)>,
}

/// Filters of listEvents.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub level: Option<String>,
    pub resource: Option<String>,
    pub keyword: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub page: Option<(u64, u64)>,
}

/// Which hosts listCapacity adds up.
#[derive(Debug, Clone, Default)]
pub struct CapacityFilter {
    pub zone: Option<String>,
    pub pod: Option<String>,
    pub cluster: Option<String>,
}

/// Totals over a set of hosts: (used, total) for memory in bytes, CPU in
/// MHz with over-provisioning, and CPU cores.
#[derive(Debug, Clone, Default)]
pub struct CapacityTotals {
    pub zone: Option<Zone>,
    pub memory: (i64, i64),
    pub cpu: (i64, i64),
    pub cores: (i64, i64),
}

impl Service {
    /// A job the caller may see (its own, or one it administers).
    pub async fn job_for(&self, caller: &Caller, uuid: &str) -> SResult<Job> {
        let j: Job = self.by_uuid("jobid", uuid).await?;
        let path = self.domain_path(j.domain_id).await?;
        if !caller.can_access(j.account_id, &path) {
            return Err(ServiceError::not_found("jobid", uuid));
        }
        Ok(j)
    }

    /// The jobs in `scope`, newest first.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &JobFilter,
    ) -> SResult<(Vec<Job>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        if let Some(r) = &f.resource {
            q = q.eq(Col::ResourceUuid, r.as_str());
        }
        q.page = f.page;
        q.descending = true;
        let (jobs, total) = self.store.list::<Job>(&q).await?;
        let jobs = jobs
            .into_iter()
            .filter(|j| f.since.is_none_or(|t| j.created >= t))
            .collect();
        Ok((jobs, total))
    }

    /// The events in `scope`, newest first.
    pub async fn list_events(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &EventFilter,
    ) -> SResult<(Vec<Event>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        if let Some(id) = &f.id {
            q = q.eq(Col::Uuid, id.as_str());
        }
        if let Some(t) = &f.event_type {
            q = q.and(Cond::EqNoCase(Col::Name, t.clone()));
        }
        if let Some(t) = &f.level {
            q = q.and(Cond::EqNoCase(Col::State, t.clone()));
        }
        if let Some(r) = &f.resource {
            q = q.eq(Col::ResourceUuid, r.as_str());
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Name, Col::Keyword], k.clone()));
        }
        if let Some(e) = f.end {
            q = q.and(Cond::Le(Col::Created, Val::I(e)));
        }
        q.page = f.page;
        q.descending = true;
        let (events, total) = self.store.list::<Event>(&q).await?;
        let events = events
            .into_iter()
            .filter(|e| f.start.is_none_or(|s| e.created >= s))
            .collect();
        Ok((events, total))
    }

    /// Sets a setting at a scope (`raw` empty: back to the default) and
    /// applies it; returns the value now in force. Root admins only, as the
    /// command table says.
    pub async fn set_setting(
        &self,
        caller: &Caller,
        scope: &str,
        id: i64,
        name: &str,
        raw: &str,
    ) -> SResult<String> {
        if !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only a root admin may change settings",
            ));
        }
        let s = settings::find(name).ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid value for parameter name: there is no setting {name}"
            ))
        })?;
        if scope != "global" && !s.scopes.contains(&scope) {
            return Err(ServiceError::invalid(format!(
                "Setting {name} cannot be set at {scope} scope"
            )));
        }
        let value = if raw.is_empty() {
            s.default.to_string()
        } else {
            settings::validate(s, raw).map_err(|e| {
                ServiceError::invalid(format!("Invalid value for parameter value: {e}"))
            })?
        };
        let existing: Option<Config> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{scope}/{id}/{name}")))
            .await?;
        let mut tx = Tx::new();
        match existing {
            Some(mut c) => {
                c.value = value.clone();
                tx.update(&mut c);
            }
            None => {
                tx.insert(&Config {
                    id: self.store.new_id::<Config>().await?,
                    uuid: new_uuid(),
                    version: 1,
                    name: name.to_string(),
                    value: value.clone(),
                    scope: scope.to_string(),
                    scope_id: if scope == "global" { None } else { Some(id) },
                    created: now(),
                });
            }
        }
        self.event(
            &mut tx,
            caller,
            "CONFIGURATION.VALUE.EDIT",
            format!("Value of {name} changed to {value}"),
            caller.account.id,
            caller.domain.id,
            None,
        );
        self.store.commit(tx.ops).await?;
        self.cache_setting(scope, id, name, &value);
        if name.starts_with("vm.stats.") || name.starts_with("vm.disk.stats.") {
            self.statistics.refresh_settings();
        }
        if name.starts_with("ha.") {
            self.refresh_ha_settings();
        }
        // Switching leases off cancels every active lease, for good.
        if name == "instance.lease.enabled" && value != "true" {
            self.cancel_all_leases().await?;
        }
        Ok(value)
    }

    /// Allocated against total capacity over the hosts a filter selects.
    pub async fn capacity_totals(&self, f: &CapacityFilter) -> SResult<CapacityTotals> {
        let mut hq = Query::new();
        let zone = match &f.zone {
            Some(z) => Some(self.by_uuid::<Zone>("zoneid", z).await?),
            None => None,
        };
        if let Some(z) = &zone {
            hq = hq.eq(Col::Zone, z.id);
        }
        if let Some(c) = &f.cluster {
            let c: Cluster = self.by_uuid("clusterid", c).await?;
            hq = hq.eq(Col::Parent, c.id);
        }
        if let Some(p) = &f.pod {
            let p: Pod = self.by_uuid("podid", p).await?;
            hq = hq.eq(Col::Ref, p.id);
        }
        let hosts: Vec<Host> = self.store.all(hq).await?;
        let hosts: Vec<Host> = hosts.into_iter().filter(|h| h.removed.is_none()).collect();
        let ids: Vec<Val> = hosts.iter().map(|h| h.id.into()).collect();
        let states: Vec<Val> = ["Starting", "Running", "Stopping", "Migrating"]
            .iter()
            .map(|s| (*s).into())
            .collect();
        let vms: Vec<Vm> = self
            .store
            .all(
                Query::new()
                    .and(Cond::In(Col::Host, ids))
                    .and(Cond::In(Col::State, states)),
            )
            .await?;
        let (mut mem_t, mut cpu_t, mut cores_t) = (0f64, 0f64, 0i64);
        for h in &hosts {
            let sc = [("cluster", h.cluster_id)];
            mem_t += h.memory_total as f64 * self.setting_f64("mem.overprovisioning.factor", &sc);
            cpu_t += (h.cpu_number * h.cpu_speed) as f64
                * self.setting_f64("cpu.overprovisioning.factor", &sc);
            cores_t += h.cpu_number;
        }
        Ok(CapacityTotals {
            zone,
            memory: (
                vms.iter().map(|v| v.memory * 1024 * 1024).sum(),
                mem_t as i64,
            ),
            cpu: (
                vms.iter().map(|v| v.cpu_number * v.cpu_speed).sum(),
                cpu_t as i64,
            ),
            cores: (vms.iter().map(|v| v.cpu_number).sum(), cores_t),
        })
    }
}

impl Service {
    /// Jobs in a status (0 pending, 1 succeeded, 2 failed), for metrics.
    pub async fn jobs_in_status(&self, status: i64) -> SResult<u64> {
        Ok(self
            .store
            .count(
                crate::store::Kind::Job,
                &Query::new().eq(Col::State, status.to_string()),
            )
            .await?)
    }

    /// Every host not removed, for metrics.
    pub async fn live_hosts(&self) -> SResult<Vec<Host>> {
        let hosts: Vec<Host> = self
            .store
            .all(Query::new().and(Cond::Ne(Col::State, "Removed".into())))
            .await?;
        Ok(hosts.into_iter().filter(|h| h.removed.is_none()).collect())
    }

    /// (uuid, name) of instances by id, a few hundred per query; removed
    /// ones are left out.
    pub async fn vm_names(
        &self,
        ids: &[i64],
    ) -> SResult<std::collections::HashMap<i64, (String, String)>> {
        let mut names = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let vals = chunk.iter().map(|id| Val::I(*id)).collect();
            let vms: Vec<Vm> = self
                .store
                .all(Query::new().and(Cond::In(Col::Id, vals)))
                .await?;
            for v in vms.into_iter().filter(|v| v.removed.is_none()) {
                names.insert(v.id, (v.uuid, v.name));
            }
        }
        Ok(names)
    }
}
