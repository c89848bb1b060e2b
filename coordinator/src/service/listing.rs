//! Instance lists and instance groups: every query carries the caller's
//! scope (see `scope`), and the filters are typed.

use super::*;
use orrery_model::VmState;

/// Filters of listVirtualMachines (and the statistics lists built on it).
#[derive(Debug, Clone, Default)]
pub struct VmFilter {
    pub id: Option<String>,
    pub ids: Vec<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    /// A state name, or "present" for every state but the removed ones.
    pub state: Option<String>,
    pub zone: Option<String>,
    /// Root admins only.
    pub host: Option<String>,
    pub template: Option<String>,
    pub offering: Option<String>,
    pub group: Option<String>,
    pub leased: Option<bool>,
    pub page: Option<(u64, u64)>,
}

/// Filters of listInstanceGroups.
#[derive(Debug, Clone, Default)]
pub struct GroupListFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub page: Option<(u64, u64)>,
}

impl Service {
    /// The page of instances in `scope` the caller may see, and the total.
    pub async fn list_vms(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &VmFilter,
    ) -> SResult<(Vec<Vm>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        if let Some(id) = &f.id {
            // An id that never existed is an error; the id of an expunged
            // instance still resolves and lists nothing, as in CloudStack,
            // whose removed rows keep their uuid.
            match self.store.load_uuid::<Vm>(id).await? {
                Some(v) => q = q.eq(Col::Id, v.id),
                None => return Err(ServiceError::not_found("id", id)),
            }
        }
        if !f.ids.is_empty() {
            q = q.and(Cond::In(
                Col::Uuid,
                f.ids.iter().cloned().map(Val::S).collect(),
            ));
        }
        if let Some(n) = &f.name {
            q = q.and(Cond::EqNoCase(Col::Name, n.clone()));
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Name, Col::Keyword], k.clone()));
        }
        match f.state.as_deref() {
            Some(s) if s.eq_ignore_ascii_case("present") => {
                q = q.and(Cond::NotIn(
                    Col::State,
                    vec!["Destroyed".into(), "Expunging".into(), "Expunged".into()],
                ))
            }
            Some(s) => {
                let st: VmState = s.parse().map_err(|_| {
                    ServiceError::invalid(format!("Invalid value for parameter state: {s}"))
                })?;
                q = q.eq(Col::State, st.as_str());
            }
            None => {}
        }
        // Expunged instances are gone; destroyed ones are shown to admins
        // only, or to users allowed to recover them.
        q = q.and(Cond::Ne(Col::State, "Expunged".into()));
        if !caller.is_admin()
            && self.setting(
                "allow.user.expunge.recover.vm",
                &[("account", caller.account.id)],
            ) != "true"
        {
            q = q.and(Cond::NotIn(
                Col::State,
                vec!["Destroyed".into(), "Expunging".into()],
            ));
        }
        if let Some(z) = &f.zone {
            let z: Zone = self.by_uuid("zoneid", z).await?;
            q = q.eq(Col::Zone, z.id);
        }
        if let Some(h) = &f.host {
            if !caller.is_root_admin() {
                return Err(ServiceError::denied(
                    "Parameter hostid can only be specified by a Root Admin",
                ));
            }
            let h: Host = self.by_uuid("hostid", h).await?;
            q = q.eq(Col::Host, h.id);
        }
        if let Some(t) = &f.template {
            let t: Template = self.by_uuid("templateid", t).await?;
            q = q.eq(Col::Ref, t.id);
        }
        if let Some(o) = &f.offering {
            let o: ServiceOffering = self.by_uuid("serviceofferingid", o).await?;
            q = q.eq(Col::ServiceOffering, o.id.to_string());
        }
        if let Some(g) = &f.group {
            let g: InstanceGroup = self.by_uuid("groupid", g).await?;
            q = q.eq(Col::Parent, g.id);
        }
        match f.leased {
            Some(true) => q = q.and(Cond::NotNull(Col::LeaseExpiry)),
            Some(false) => q = q.and(Cond::IsNull(Col::LeaseExpiry)),
            None => {}
        }
        q.page = f.page;
        Ok(self.store.list::<Vm>(&q).await?)
    }

    /// A new instance group record of an account, not yet stored.
    pub(crate) async fn new_instance_group(
        &self,
        owner: &Account,
        name: &str,
    ) -> SResult<InstanceGroup> {
        Ok(InstanceGroup {
            id: self.store.new_id::<InstanceGroup>().await?,
            uuid: new_uuid(),
            version: 1,
            name: name.to_string(),
            account_id: owner.id,
            domain_id: owner.domain_id,
            created: now(),
        })
    }

    /// Creates an instance group in an account; names are unique per account.
    pub async fn create_instance_group(
        &self,
        owner: &Account,
        name: &str,
    ) -> SResult<InstanceGroup> {
        let g = self.new_instance_group(owner, name).await?;
        let mut tx = Tx::new();
        tx.insert(&g);
        self.store.commit(tx.ops).await.map_err(|e| match e {
            crate::store::StoreError::Duplicate(..) => ServiceError::invalid(format!(
                "Unable to create instance group, a group with name {name} already exists for the account"
            )),
            e => e.into(),
        })?;
        Ok(g)
    }

    /// The instance groups in `scope` the caller may see.
    pub async fn list_instance_groups(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &GroupListFilter,
    ) -> SResult<(Vec<InstanceGroup>, u64)> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        if let Some(id) = &f.id {
            let g: InstanceGroup = self.owned(caller, "id", id).await?;
            q = q.eq(Col::Id, g.id);
        }
        if let Some(n) = &f.name {
            q = q.and(Cond::EqNoCase(Col::Name, n.clone()));
        }
        if let Some(k) = &f.keyword {
            q = q.and(Cond::Contains(vec![Col::Name], k.clone()));
        }
        q.page = f.page;
        Ok(self.store.list::<InstanceGroup>(&q).await?)
    }
}

impl Service {
    /// The NICs of an instance (for display of an instance already shown).
    pub async fn nics_of(&self, vm_id: i64) -> SResult<Vec<Nic>> {
        Ok(self.store.all(Query::new().eq(Col::Parent, vm_id)).await?)
    }

    /// The NICs of a page of instances, in one query.
    pub async fn nics_of_many(
        &self,
        vm_ids: &[i64],
    ) -> SResult<std::collections::HashMap<i64, Vec<Nic>>> {
        let ids = vm_ids.iter().map(|i| Val::I(*i)).collect();
        let all: Vec<Nic> = self
            .store
            .all(Query::new().and(Cond::In(Col::Parent, ids)))
            .await?;
        let mut m: std::collections::HashMap<i64, Vec<Nic>> =
            vm_ids.iter().map(|i| (*i, Vec::new())).collect();
        for n in all {
            m.entry(n.vm_id).or_default().push(n);
        }
        Ok(m)
    }
}
