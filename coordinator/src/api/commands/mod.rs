//! The command table, assembled from one module per area.

mod affinity;
mod catalog;
mod identity;
mod infra;
mod misc;
mod placement;
mod schedules;
mod stats;
mod vm;
mod volumes;

use super::registry::{Command, Ctx};
use crate::error::ApiError;
use crate::service::Caller;
use crate::store::records::*;
use crate::store::{Cond, StoreExt};
use std::sync::OnceLock;

pub fn all() -> &'static [Command] {
    static ALL: OnceLock<Vec<Command>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v = Vec::new();
        v.extend(vm::commands());
        v.extend(identity::commands());
        v.extend(infra::commands());
        v.extend(catalog::commands());
        v.extend(misc::commands());
        v.extend(volumes::commands());
        v.extend(affinity::commands());
        v.extend(placement::commands());
        v.extend(schedules::commands());
        v.extend(stats::commands());
        v
    })
}

/// (offset, limit) from `page` and `pagesize`, capped by `default.page.size` as
/// in CloudStack; `pagesize=-1` lists everything.
pub fn paging(ctx: &Ctx) -> Result<Option<(u64, u64)>, ApiError> {
    let max = ctx.svc.setting_i64("default.page.size").max(1);
    let size = ctx.p.i64("pagesize")?;
    let page = ctx.p.i64("page")?.unwrap_or(1);
    if page < 1 {
        return Err(ApiError::param(
            "Invalid value for parameter page: it must be 1 or more",
        ));
    }
    let size = match size {
        Some(-1) => return Ok(None),
        Some(s) if s < 1 => {
            return Err(ApiError::param(
                "Invalid value for parameter pagesize: it must be positive, or -1 for all",
            ))
        }
        Some(s) if s > max => {
            return Err(ApiError::param(format!(
                "Page size can't exceed max allowed page size value: {max}"
            )))
        }
        Some(s) => s,
        None => max,
    };
    Ok(Some((((page - 1) * size) as u64, size as u64)))
}

/// Resolves an optional uuid parameter to a record.
pub async fn opt_ref<E: crate::store::Entity>(
    ctx: &Ctx,
    param: &str,
) -> Result<Option<E>, ApiError> {
    match ctx.p.str(param) {
        None => Ok(None),
        Some(u) => Ok(Some(ctx.svc.by_uuid::<E>(param, u).await?)),
    }
}

/// The account a command acts for: the caller's own, or `account` + `domainid`
/// when an admin names another one it administers.
pub async fn owner(ctx: &Ctx) -> Result<Account, ApiError> {
    let Some(name) = ctx.p.str("account") else {
        return Ok(ctx.caller.account.clone());
    };
    let domain: Domain = match ctx.p.str("domainid") {
        Some(d) => ctx.svc.by_uuid("domainid", d).await?,
        None => ctx.caller.domain.clone(),
    };
    if !ctx.caller.is_admin() && name != ctx.caller.account.name {
        return Err(ApiError::denied(format!(
            "Caller is not allowed to act for account {name}"
        )));
    }
    let acct: Option<Account> = ctx
        .svc
        .store
        .first(crate::store::Query::new().eq(
            crate::store::Col::Ukey,
            format!("{}/{}", domain.id, name.to_lowercase()),
        ))
        .await?;
    let acct = acct.ok_or_else(|| {
        ApiError::param(format!(
            "Unable to find account {name} in domain {}",
            domain.uuid
        ))
    })?;
    if !ctx.caller.can_access(acct.id, &domain.path) {
        return Err(ApiError::denied(format!(
            "Caller is not allowed to act for account {name}"
        )));
    }
    Ok(acct)
}

/// Scope conditions for a list command from `listall`, `account`, `domainid`, `isrecursive`.
pub async fn list_scope(ctx: &Ctx) -> Result<Vec<Cond>, ApiError> {
    let account = if ctx.p.has("account") {
        let a = owner(ctx).await?;
        Some((a.id, a.domain_id))
    } else {
        None
    };
    let domain = match ctx.p.str("domainid") {
        Some(d) => {
            let dom: Domain = ctx.svc.by_uuid("domainid", d).await?;
            if !ctx.caller.is_root_admin()
                && !crate::service::in_subtree(&dom.path, &ctx.caller.domain.path)
            {
                return Err(ApiError::denied("Caller has no access to the domain"));
            }
            Some(dom.id)
        }
        None => None,
    };
    // An admin naming one resource by id sees it wherever it is in its scope,
    // as if it had asked for listall (CloudStack's buildACLSearchParameters).
    let listall = ctx.p.bool_or("listall", false) || ctx.p.has("id");
    Ok(ctx
        .svc
        .scope_conds(
            &ctx.caller,
            listall,
            account,
            domain,
            ctx.p.bool_or("isrecursive", false),
        )
        .await?)
}

pub fn is_admin(c: &Caller) -> bool {
    c.is_admin()
}
