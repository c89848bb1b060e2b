//! GPU limits (the specification: "Limit an account/domain/project to use a
//! certain number of GPUs"). An account's limit is the account-scoped
//! `max.account.gpus`, a domain's the domain-scoped `max.domain.gpus` (-1:
//! none), both set with CloudStack's `updateResourceLimit` for resource
//! type 16 (gpu). What an account holds is the GPUs of its instances that
//! are not destroyed (whole GPUs by count, a vGPU as one); a domain holds
//! what the accounts of it and its subdomains hold, and every domain above
//! an account is checked, as in CloudStack.

use super::*;
use orrery_model::VmState;

/// CloudStack's resource type number for GPUs.
pub const GPU_RESOURCE_TYPE: i64 = 16;
pub const GPU_LIMIT_SETTING: &str = "max.account.gpus";
pub const DOMAIN_GPU_LIMIT_SETTING: &str = "max.domain.gpus";

/// GPUs an offering gives each instance.
pub fn gpu_units(o: &ServiceOffering) -> i64 {
    if o.vgpu_type.is_some() {
        1
    } else {
        o.gpu_count.max(0)
    }
}

impl Context {
    /// The account's GPU limit; None when unlimited.
    pub fn gpu_limit(&self, account_id: i64) -> Option<i64> {
        let v: i64 = self
            .setting(GPU_LIMIT_SETTING, &[("account", account_id)])
            .parse()
            .unwrap_or(-1);
        (v >= 0).then_some(v)
    }

    /// The domain's GPU limit; None when unlimited.
    pub fn domain_gpu_limit(&self, domain_id: i64) -> Option<i64> {
        let v: i64 = self
            .setting(DOMAIN_GPU_LIMIT_SETTING, &[("domain", domain_id)])
            .parse()
            .unwrap_or(-1);
        (v >= 0).then_some(v)
    }

    /// GPUs the account's instances hold (all but `except`).
    pub async fn gpus_held(&self, account_id: i64, except: Option<i64>) -> SResult<i64> {
        self.gpus_held_where(Cond::Eq(Col::Account, account_id.into()), except)
            .await
    }

    /// GPUs the instances of a domain and its subdomains hold.
    pub async fn domain_gpus_held(&self, domain_id: i64, except: Option<i64>) -> SResult<i64> {
        let ids = self.subtree_ids(domain_id).await?;
        self.gpus_held_where(Cond::In(Col::Domain, ids), except)
            .await
    }

    async fn gpus_held_where(&self, cond: Cond, except: Option<i64>) -> SResult<i64> {
        let vms: Vec<Vm> = self.store.all(Query::new().and(cond)).await?;
        let mut n = 0;
        for vm in vms.iter().filter(|v| {
            v.removed.is_none()
                && Some(v.id) != except
                && !matches!(
                    v.state,
                    VmState::Destroyed | VmState::Expunging | VmState::Expunged
                )
        }) {
            if let Some(o) = self
                .load_cached::<ServiceOffering>(vm.service_offering_id)
                .await?
            {
                n += gpu_units(&o);
            }
        }
        Ok(n)
    }

    /// Refuses `more` GPUs for the account beyond its limit.
    pub(crate) async fn check_gpu_limit(
        &self,
        account: &Account,
        more: i64,
        except: Option<i64>,
    ) -> SResult<()> {
        if more <= 0 {
            return Ok(());
        }
        if let Some(limit) = self.gpu_limit(account.id) {
            let held = self.gpus_held(account.id, except).await?;
            if held + more > limit {
                return Err(ServiceError::limit(format!(
                    "Maximum amount of resources of Type = 'gpu' for Account Name = {} in Domain Id = {} is exceeded: Account Resource Limit = {limit}, Current Account Resource Amount = {held}, Requested Resource Amount = {more}.",
                    account.name, account.domain_id
                )));
            }
        }
        // The account's domain and every one above it.
        let mut next = Some(account.domain_id);
        while let Some(did) = next {
            let Some(d) = self.load_cached::<Domain>(did).await? else {
                break;
            };
            if let Some(limit) = self.domain_gpu_limit(d.id) {
                let held = self.domain_gpus_held(d.id, except).await?;
                if held + more > limit {
                    return Err(ServiceError::limit(format!(
                        "Maximum amount of resources of Type = 'gpu' for Domain Id = {} is exceeded: Domain Resource Limit = {limit}, Current Domain Resource Amount = {held}, Requested Resource Amount = {more}.",
                        d.uuid
                    )));
                }
            }
            next = d.parent_id;
        }
        Ok(())
    }
}
