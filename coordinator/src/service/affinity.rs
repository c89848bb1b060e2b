//! Affinity groups: an account's named sets of instances that placement keeps
//! apart or together, as the seed's "Affinity Groups" section describes.

use super::*;
use orrery_model::VmState;

/// The four types CloudStack supports, as clients spell them.
pub const TYPES: &[&str] = &[
    "host anti-affinity",
    "host affinity",
    "non-strict host anti-affinity",
    "non-strict host affinity",
];

pub fn group_type(v: &str) -> SResult<String> {
    TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(v.trim()))
        .map(|t| t.to_string())
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid value for parameter type: {v}; valid types are {}",
                TYPES.join(", ")
            ))
        })
}

impl Service {
    pub async fn create_affinity_group(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
        group_type_: &str,
        description: Option<String>,
    ) -> SResult<AffinityGroup> {
        let group_type = group_type(group_type_)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ServiceError::invalid(
                "Invalid value for parameter name: 1 to 255 characters",
            ));
        }
        let dup: Option<AffinityGroup> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", owner.id, name.to_lowercase())))
            .await?;
        if dup.is_some() {
            return Err(ServiceError::invalid(format!(
                "Unable to create affinity group, a group with name {name} already exists"
            )));
        }
        let g = AffinityGroup {
            id: self.store.new_id::<AffinityGroup>().await?,
            uuid: new_uuid(),
            version: 1,
            name: name.to_string(),
            description,
            group_type,
            account_id: owner.id,
            domain_id: owner.domain_id,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&g);
        self.event(
            &mut tx,
            caller,
            "AG.CREATE",
            format!("Created affinity group {}", g.name),
            g.account_id,
            g.domain_id,
            Some((&g.uuid, "AffinityGroup", &g.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(g)
    }

    /// Instances in a group, live ones only.
    pub async fn affinity_members(&self, group_id: i64, account_id: i64) -> SResult<Vec<Vm>> {
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        Ok(vms
            .into_iter()
            .filter(|v| v.removed.is_none() && v.affinity_group_ids.contains(&group_id))
            .collect())
    }

    /// Deletes a group; its members leave it and keep running where they are.
    pub async fn delete_affinity_group(
        &self,
        caller: &Caller,
        mut g: AffinityGroup,
    ) -> SResult<()> {
        let members = self.affinity_members(g.id, g.account_id).await?;
        let mut tx = Tx::new();
        for mut vm in members {
            vm.affinity_group_ids.retain(|id| *id != g.id);
            tx.update(&mut vm);
        }
        g.removed = Some(now());
        tx.update(&mut g);
        self.event(
            &mut tx,
            caller,
            "AG.DELETE",
            format!("Deleted affinity group {}", g.name),
            g.account_id,
            g.domain_id,
            Some((&g.uuid, "AffinityGroup", &g.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Checks that every group belongs to the instance's owner.
    pub fn check_groups_owner(&self, owner: &Account, groups: &[AffinityGroup]) -> SResult<()> {
        if let Some(g) = groups.iter().find(|g| g.account_id != owner.id) {
            return Err(ServiceError::invalid(format!(
                "Affinity group {} belongs to another account than the instance",
                g.uuid
            )));
        }
        Ok(())
    }

    /// Replaces an instance's groups; the instance must be stopped, since
    /// placement only applies them on its next start.
    pub async fn update_vm_affinity(
        &self,
        caller: &Caller,
        mut vm: Vm,
        groups: &[AffinityGroup],
    ) -> SResult<Vm> {
        if vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; affinity groups can only be changed while it is Stopped",
                vm.uuid, vm.state
            )));
        }
        let owner: Account = self
            .store
            .load(vm.account_id)
            .await?
            .ok_or_else(|| ServiceError::internal("account vanished"))?;
        self.check_groups_owner(&owner, groups)?;
        vm.affinity_group_ids = groups.iter().map(|g| g.id).collect();
        vm.last_updated = now();
        let mut tx = Tx::new();
        tx.update(&mut vm);
        self.event(
            &mut tx,
            caller,
            "VM.UPDATE",
            format!("Changed the affinity groups of instance {}", vm.uuid),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_the_four_cloudstack_names() {
        assert_eq!(
            group_type("Host Anti-Affinity").unwrap(),
            "host anti-affinity"
        );
        assert_eq!(
            group_type("non-strict host affinity").unwrap(),
            "non-strict host affinity"
        );
        assert!(group_type("rack anti-affinity")
            .unwrap_err()
            .text()
            .contains("type"));
    }
}

/// Filters of listAffinityGroups.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub group_type: Option<String>,
    pub keyword: Option<String>,
    /// Only the groups of this instance (uuid).
    pub vm: Option<String>,
    pub page: Option<(u64, u64)>,
}

impl Service {
    /// An account's affinity group by name.
    pub async fn affinity_group_named(
        &self,
        owner: &Account,
        name: &str,
    ) -> SResult<Option<AffinityGroup>> {
        Ok(self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", owner.id, name.to_lowercase())))
            .await?)
    }

    /// The affinity groups in `scope` that the caller may see.
    pub async fn list_affinity_groups(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &GroupFilter,
    ) -> SResult<(Vec<AffinityGroup>, u64)> {
        let mut q = self
            .named_list_query::<AffinityGroup>(
                caller,
                scope,
                f.id.as_deref(),
                f.name.as_deref().map(|n| (n, true)),
                f.keyword.as_deref(),
            )
            .await?;
        if let Some(t) = &f.group_type {
            q = q.and(Cond::EqNoCase(Col::GroupType, t.clone()));
        }
        if let Some(vid) = &f.vm {
            let vm: Vm = self.owned(caller, "virtualmachineid", vid).await?;
            let ids: Vec<Val> = vm.affinity_group_ids.iter().map(|i| (*i).into()).collect();
            q = q.and(Cond::In(Col::Id, ids));
        }
        q.page = f.page;
        Ok(self.store.list::<AffinityGroup>(&q).await?)
    }
}
