//! Service and disk offerings: shared records whose scope is a set of domains
//! (none: global). Who may see and who may change them is decided here, once:
//! a global offering is the root admin's; a domain admin manages only
//! offerings all of whose domains lie in its own subtree; an offering is
//! visible to callers in (or below) one of its domains.

use super::*;

/// The domains an offering is restricted to (empty: every domain).
pub trait DomainScoped {
    fn domain_ids(&self) -> &[i64];
}

impl DomainScoped for ServiceOffering {
    fn domain_ids(&self) -> &[i64] {
        &self.domain_ids
    }
}

impl DomainScoped for DiskOffering {
    fn domain_ids(&self) -> &[i64] {
        &self.domain_ids
    }
}

/// Whether `caller` may create or change a shared record scoped to domains
/// with the given paths (empty: global). Pure, so the rule is tested directly.
pub fn may_manage(caller: &Caller, domain_paths: &[String]) -> bool {
    if caller.is_root_admin() {
        return true;
    }
    caller.is_domain_admin()
        && !domain_paths.is_empty()
        && domain_paths
            .iter()
            .all(|p| in_subtree(p, &caller.domain.path))
}

/// Whether `caller` sees a shared record scoped to domains with the given
/// paths: global records are seen by all; a scoped one by callers in one of
/// its domains or below, and by admins of a domain above one of them.
pub fn may_see(caller: &Caller, domain_paths: &[String]) -> bool {
    if caller.is_root_admin() || domain_paths.is_empty() {
        return true;
    }
    domain_paths.iter().any(|p| {
        in_subtree(&caller.domain.path, p)
            || (caller.is_domain_admin() && in_subtree(p, &caller.domain.path))
    })
}

/// What a new service offering is; validated by the API layer's decoding.
#[derive(Debug, Clone, Default)]
pub struct NewServiceOffering {
    pub name: String,
    pub display_text: Option<String>,
    pub cpu_number: Option<i64>,
    pub cpu_speed: Option<i64>,
    pub memory: Option<i64>,
    pub customized: Option<bool>,
    pub min_cpu: Option<i64>,
    pub max_cpu: Option<i64>,
    pub min_memory: Option<i64>,
    pub max_memory: Option<i64>,
    pub offer_ha: bool,
    pub limit_cpu_use: bool,
    pub host_tags: Option<String>,
    pub storage_tags: Option<String>,
    pub dynamic_scaling: bool,
    /// `isvolatile`: the root disk is reset on every reboot.
    pub volatile: bool,
    /// `gpucount` (whole GPUs), `gpudisplay`, and a vGPU type from
    /// `serviceofferingdetails[].vgpuType`.
    pub gpu_count: i64,
    pub gpu_display: bool,
    pub vgpu_type: Option<String>,
    pub storage_type: String,
    pub root_disk_size: Option<i64>,
    pub is_system: bool,
    pub lease_duration: Option<i64>,
    pub lease_expiry_action: Option<String>,
    /// Uuids from `domainid`; empty for a global offering.
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewDiskOffering {
    pub name: String,
    pub display_text: Option<String>,
    pub disk_size_gb: Option<i64>,
    pub customized: Option<bool>,
    pub tags: Option<String>,
    pub domains: Vec<String>,
}

/// Changes to an offering; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OfferingUpdate {
    pub name: Option<String>,
    pub display_text: Option<String>,
    /// `Some(None)` clears the host tags.
    pub host_tags: Option<Option<String>>,
}

/// Filters of the offering lists.
#[derive(Debug, Clone, Default)]
pub struct OfferingFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub domain: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// The catalog part of the service: templates and ISOs (registration,
/// downloads, lists, removal; `catalog.rs`, `templates.rs`), OS types, and
/// service and disk offerings with who may see and manage them (global ones
/// the root admin's, domain ones their domain admins').
pub struct Catalog {
    ctx: Arc<Context>,
}

super::context::part_of_service!(Catalog);

impl Catalog {
    pub(in crate::service) fn new(ctx: Arc<Context>) -> Self {
        Catalog { ctx }
    }

    async fn domain_paths_of(&self, ids: &[i64]) -> SResult<Vec<String>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.domain_path(*id).await?);
        }
        Ok(out)
    }

    /// Resolves `domainid` uuids to live domains.
    async fn scope_domains(&self, uuids: &[String]) -> SResult<Vec<Domain>> {
        let mut out = Vec::new();
        for u in uuids {
            let d: Domain = self.by_uuid("domainid", u).await?;
            if d.removed.is_some() {
                return Err(ServiceError::not_found("domainid", u));
            }
            if !out.iter().any(|x: &Domain| x.id == d.id) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The domains an offering is restricted to, for display.
    pub async fn offering_domains<O: DomainScoped>(&self, o: &O) -> SResult<Vec<Domain>> {
        let mut out = Vec::new();
        for id in o.domain_ids() {
            if let Some(d) = self.load_cached::<Domain>(*id).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    async fn check_manage(&self, caller: &Caller, paths: &[String], what: &str) -> SResult<()> {
        if may_manage(caller, paths) {
            return Ok(());
        }
        Err(ServiceError::denied(if paths.is_empty() {
            format!("Only a root admin may create or change a global {what}; give domainid to scope it to a domain you administer")
        } else {
            format!("Caller has no access to every domain of the {what}")
        }))
    }

    /// An offering the caller may see, by uuid; others are unknown ids.
    pub async fn visible_offering<O>(&self, caller: &Caller, param: &str, uuid: &str) -> SResult<O>
    where
        O: Entity + DomainScoped + Removable + 'static,
    {
        let o: O = self.by_uuid(param, uuid).await?;
        if o.removed() || !may_see(caller, &self.domain_paths_of(o.domain_ids()).await?) {
            return Err(ServiceError::not_found(param, uuid));
        }
        Ok(o)
    }

    /// An offering the caller may change; one it cannot see is an unknown id,
    /// one it sees but does not manage is denied.
    async fn managed_offering<O>(&self, caller: &Caller, uuid: &str, what: &str) -> SResult<O>
    where
        O: Entity + DomainScoped + Removable + 'static,
    {
        let o: O = self.visible_offering(caller, "id", uuid).await?;
        let paths = self.domain_paths_of(o.domain_ids()).await?;
        self.check_manage(caller, &paths, what).await?;
        Ok(o)
    }

    pub async fn create_service_offering(
        &self,
        caller: &Caller,
        r: NewServiceOffering,
    ) -> SResult<ServiceOffering> {
        let domains = self.scope_domains(&r.domains).await?;
        let paths: Vec<String> = domains.iter().map(|d| d.path.clone()).collect();
        self.check_manage(caller, &paths, "service offering")
            .await?;
        let customized = r
            .customized
            .unwrap_or(r.cpu_number.is_none() || r.memory.is_none());
        if !customized && (r.cpu_number.is_none() || r.memory.is_none()) {
            return Err(ServiceError::invalid(
                "A fixed offering needs cpunumber and memory; set customized=true for a custom one",
            ));
        }
        if matches!((r.min_cpu, r.max_cpu), (Some(a), Some(b)) if a > b)
            || matches!((r.min_memory, r.max_memory), (Some(a), Some(b)) if a > b)
        {
            return Err(ServiceError::invalid(
                "The minimum of a custom offering must not exceed its maximum",
            ));
        }
        let o = ServiceOffering {
            id: self.store.new_id::<ServiceOffering>().await?,
            uuid: new_uuid(),
            version: 1,
            display_text: r.display_text.unwrap_or_else(|| r.name.clone()),
            name: r.name,
            cpu_number: r.cpu_number,
            cpu_speed: r.cpu_speed.or(if r.cpu_number.is_some() {
                Some(1000)
            } else {
                None
            }),
            memory: r.memory,
            customized,
            min_cpu: r.min_cpu,
            max_cpu: r.max_cpu,
            min_memory: r.min_memory,
            max_memory: r.max_memory,
            offer_ha: r.offer_ha,
            limit_cpu_use: r.limit_cpu_use,
            host_tags: r.host_tags,
            storage_tags: r.storage_tags,
            dynamic_scaling: r.dynamic_scaling,
            volatile: r.volatile,
            gpu_count: r.gpu_count,
            gpu_display: r.gpu_display,
            vgpu_type: r.vgpu_type,
            storage_type: r.storage_type,
            root_disk_size: r.root_disk_size,
            disk_offering_id: None,
            is_system: r.is_system,
            state: "Active".into(),
            created: now(),
            removed: None,
            lease_duration: r.lease_duration,
            lease_expiry_action: r.lease_expiry_action,
            domain_ids: domains.iter().map(|d| d.id).collect(),
        };
        let mut tx = Tx::new();
        tx.insert(&o);
        self.event(
            &mut tx,
            caller,
            "SERVICE.OFFERING.CREATE",
            format!("Created service offering {}", o.name),
            caller.account.id,
            caller.domain.id,
            Some((&o.uuid, "ServiceOffering", &o.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(o)
    }

    pub async fn create_disk_offering(
        &self,
        caller: &Caller,
        r: NewDiskOffering,
    ) -> SResult<DiskOffering> {
        let domains = self.scope_domains(&r.domains).await?;
        let paths: Vec<String> = domains.iter().map(|d| d.path.clone()).collect();
        self.check_manage(caller, &paths, "disk offering").await?;
        let customized = r.customized.unwrap_or(r.disk_size_gb.is_none());
        if !customized && r.disk_size_gb.is_none() {
            return Err(ServiceError::invalid(
                "A fixed disk offering needs disksize; set customized=true for a custom one",
            ));
        }
        let o = DiskOffering {
            id: self.store.new_id::<DiskOffering>().await?,
            uuid: new_uuid(),
            version: 1,
            display_text: r.display_text.unwrap_or_else(|| r.name.clone()),
            name: r.name,
            disk_size_gb: if customized {
                0
            } else {
                r.disk_size_gb.unwrap_or(0)
            },
            customized,
            storage_type: "shared".into(),
            tags: r.tags,
            state: "Active".into(),
            created: now(),
            removed: None,
            domain_ids: domains.iter().map(|d| d.id).collect(),
        };
        let mut tx = Tx::new();
        tx.insert(&o);
        self.event(
            &mut tx,
            caller,
            "DISK.OFFERING.CREATE",
            format!("Created disk offering {}", o.name),
            caller.account.id,
            caller.domain.id,
            Some((&o.uuid, "DiskOffering", &o.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(o)
    }

    /// Renames or re-describes an offering the caller manages.
    pub async fn update_offering<O: Offering>(
        &self,
        caller: &Caller,
        uuid: &str,
        u: OfferingUpdate,
    ) -> SResult<O> {
        let mut o: O = self.managed_offering(caller, uuid, O::WHAT).await?;
        o.apply(u);
        self.commit_offering(caller, &mut o, "EDIT", "Updated")
            .await?;
        Ok(o)
    }

    /// Removes an offering the caller manages; what was made from it keeps
    /// its sizes.
    pub async fn delete_offering<O: Offering>(&self, caller: &Caller, uuid: &str) -> SResult<()> {
        let mut o: O = self.managed_offering(caller, uuid, O::WHAT).await?;
        o.mark_removed(now());
        self.commit_offering(caller, &mut o, "DELETE", "Deleted")
            .await
    }

    async fn commit_offering<O: Offering>(
        &self,
        caller: &Caller,
        o: &mut O,
        action: &str,
        verb: &str,
    ) -> SResult<()> {
        let mut tx = Tx::new();
        tx.update(o);
        let (uuid, name) = (o.uuid().to_string(), o.name().to_string());
        self.event(
            &mut tx,
            caller,
            &format!("{}.{action}", O::EVENT),
            format!("{verb} {} {name}", O::WHAT),
            caller.account.id,
            caller.domain.id,
            Some((&uuid, O::RESOURCE, &name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// The offerings of a kind the caller may see, filtered and paged.
    pub async fn list_offerings<O>(
        &self,
        caller: &Caller,
        f: &OfferingFilter,
    ) -> SResult<(Vec<O>, u64)>
    where
        O: Entity + DomainScoped + Removable + 'static,
    {
        let mut q = Query::new().and(Cond::Ne(Col::State, "Removed".into()));
        if let Some(id) = &f.id {
            // An id never issued is an error; a removed one lists nothing.
            if self.load_uuid_cached::<O>(id).await?.is_none() {
                return Err(ServiceError::not_found("id", id));
            }
        }
        q = common_filters(
            q,
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name, Col::Keyword],
        );
        let only_domain = match &f.domain {
            Some(u) => {
                let d: Domain = self.by_uuid("domainid", u).await?;
                if !caller.is_root_admin() && !in_subtree(&d.path, &caller.domain.path) {
                    return Err(ServiceError::denied("Caller has no access to the domain"));
                }
                Some(d.id)
            }
            None => None,
        };
        // Offerings are few; visibility depends on domain paths, so it is
        // decided here rather than in the query.
        let all: Vec<O> = self.store.all(q).await?;
        let mut visible = Vec::new();
        for o in all {
            if only_domain.is_some_and(|d| !o.domain_ids().contains(&d)) {
                continue;
            }
            if may_see(caller, &self.domain_paths_of(o.domain_ids()).await?) {
                visible.push(o);
            }
        }
        let total = visible.len() as u64;
        let page = match f.page {
            Some((offset, limit)) => visible
                .into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect(),
            None => visible,
        };
        Ok((page, total))
    }
}

/// Records marked removed rather than deleted.
pub trait Removable {
    fn removed(&self) -> bool;
}

/// What service and disk offerings share for their updates and removal.
pub trait Offering: Entity + DomainScoped + Removable + 'static {
    /// For texts: "service offering".
    const WHAT: &'static str;
    /// Event type prefix: "SERVICE.OFFERING".
    const EVENT: &'static str;
    /// Resource type in events.
    const RESOURCE: &'static str;
    fn name(&self) -> &str;
    fn apply(&mut self, u: OfferingUpdate);
    fn mark_removed(&mut self, at: i64);
}

impl Offering for ServiceOffering {
    const WHAT: &'static str = "service offering";
    const EVENT: &'static str = "SERVICE.OFFERING";
    const RESOURCE: &'static str = "ServiceOffering";
    fn name(&self) -> &str {
        &self.name
    }
    fn apply(&mut self, u: OfferingUpdate) {
        if let Some(n) = u.name {
            self.name = n;
        }
        if let Some(t) = u.display_text {
            self.display_text = t;
        }
        if let Some(t) = u.host_tags {
            self.host_tags = t;
        }
    }
    fn mark_removed(&mut self, at: i64) {
        self.removed = Some(at);
    }
}

impl Offering for DiskOffering {
    const WHAT: &'static str = "disk offering";
    const EVENT: &'static str = "DISK.OFFERING";
    const RESOURCE: &'static str = "DiskOffering";
    fn name(&self) -> &str {
        &self.name
    }
    fn apply(&mut self, u: OfferingUpdate) {
        if let Some(n) = u.name {
            self.name = n;
        }
        if let Some(t) = u.display_text {
            self.display_text = t;
        }
    }
    fn mark_removed(&mut self, at: i64) {
        self.removed = Some(at);
    }
}

impl Removable for ServiceOffering {
    fn removed(&self) -> bool {
        self.removed.is_some()
    }
}

impl Removable for DiskOffering {
    fn removed(&self) -> bool {
        self.removed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: &str, path: &str) -> Caller {
        Caller {
            user: User::default(),
            account: Account::default(),
            domain: Domain {
                path: path.into(),
                ..Default::default()
            },
            role: Role {
                role_type: role.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn global_records_are_the_root_admins() {
        assert!(may_manage(&caller("Admin", "/"), &[]));
        assert!(!may_manage(&caller("DomainAdmin", "/a"), &[]));
        assert!(!may_manage(&caller("User", "/a"), &[]));
    }

    #[test]
    fn domain_admins_manage_their_subtree_only() {
        let da = caller("DomainAdmin", "/a");
        assert!(may_manage(&da, &["/a".into()]));
        assert!(may_manage(&da, &["/a/b".into()]));
        assert!(!may_manage(&da, &["/ab".into()]));
        assert!(!may_manage(&da, &["/".into()]));
        assert!(!may_manage(&da, &["/a/b".into(), "/c".into()]));
        assert!(!may_manage(&caller("User", "/a"), &["/a".into()]));
    }

    #[test]
    fn visibility_follows_the_domain_tree() {
        assert!(may_see(&caller("User", "/x"), &[]));
        assert!(may_see(&caller("User", "/a/b"), &["/a".into()]));
        assert!(!may_see(&caller("User", "/a"), &["/a/b".into()]));
        assert!(!may_see(&caller("User", "/c"), &["/a".into()]));
        assert!(may_see(&caller("DomainAdmin", "/a"), &["/a/b".into()]));
        assert!(!may_see(&caller("DomainAdmin", "/a/b"), &["/a/c".into()]));
        assert!(may_see(&caller("Admin", "/"), &["/z".into()]));
    }
}
