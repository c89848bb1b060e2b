//! The command table, assembled from one module per area.

mod affinity;
mod catalog;
mod console;
mod identity;
mod infra;
mod limits;
mod metrics_lists;
mod misc;
mod placement;
mod schedules;
mod snapshots;
mod sshkeys;
mod stats;
pub mod ui;
mod userdata;
mod vm;
mod vmsnapshots;
mod volumes;

use super::registry::{Command, Ctx};
use crate::error::ApiError;
use crate::service::records::*;
use crate::service::scope::ListScope;
use crate::service::Caller;
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
        v.extend(sshkeys::commands());
        v.extend(console::commands());
        v.extend(ui::commands());
        v.extend(userdata::commands());
        v.extend(placement::commands());
        v.extend(schedules::commands());
        v.extend(stats::commands());
        v.extend(vmsnapshots::commands());
        v.extend(snapshots::commands());
        v.extend(limits::commands());
        let metrics = metrics_lists::commands(&v);
        v.extend(metrics);
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
pub async fn opt_ref<E: crate::service::Record>(
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
    Ok(ctx
        .svc
        .acting_account(&ctx.caller, ctx.p.str("account"), ctx.p.str("domainid"))
        .await?)
}

/// The scope a list request names with `account`, `domainid`, `listall`,
/// `isrecursive` and `id`.
pub fn scope_of(ctx: &Ctx) -> ListScope {
    ListScope {
        account: ctx.p.string("account"),
        domain: ctx.p.string("domainid"),
        listall: ctx.p.bool_or("listall", false),
        recursive: ctx.p.bool_or("isrecursive", false),
        by_id: ctx.p.has("id"),
    }
}

pub fn is_admin(c: &Caller) -> bool {
    c.is_admin()
}
