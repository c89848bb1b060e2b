//! Resource limits: the GPU limit (resource type 16) of an account or a
//! domain, set and listed with CloudStack's updateResourceLimit and
//! listResourceLimits.

use super::*;
use crate::api::registry::{f, opt, req, Field};
use crate::api::render::{Obj, Reply};
use crate::cmd;
use crate::service::limits::{DOMAIN_GPU_LIMIT_SETTING, GPU_LIMIT_SETTING, GPU_RESOURCE_TYPE};
use serde_json::Value;

const LIMIT_FIELDS: &[Field] = &[
    f("resourcetype", "string", "16 (gpu)"),
    f("resourcetypename", "string", "gpu"),
    f("max", "long", "the limit; -1 for none"),
    f("account", "string", "the account"),
    f("domainid", "string", "its domain ID"),
    f("domain", "string", "its domain"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "updateResourceLimit",
            "Sets an account's (account and domainid) or a domain's (domainid alone) GPU limit (resourcetype 16 or gpu).",
            false,
            Admins,
            &[
                req("resourcetype", "string", "16 or gpu"),
                opt("max", "long", "the limit; -1 or absent for none"),
                opt("account", "string", "the account, with domainid"),
                req("domainid", "uuid", "the domain (of the account)")
            ],
            LIMIT_FIELDS,
            update
        ),
        cmd!(
            "listResourceLimits",
            "Lists the caller's (or an administered account's) GPU limit.",
            false,
            All,
            &[
                opt("resourcetype", "string", "16 or gpu"),
                opt("account", "string", "an account the caller administers"),
                opt("domainid", "uuid", "its domain")
            ],
            LIMIT_FIELDS,
            list
        ),
    ]
}

fn is_gpu(t: &str) -> bool {
    t.trim() == GPU_RESOURCE_TYPE.to_string() || t.trim().eq_ignore_ascii_case("gpu")
}

async fn limit_json(ctx: &Ctx, a: &Account) -> Result<Value, ApiError> {
    let d: Option<Domain> = ctx.svc.load_cached(a.domain_id).await?;
    Ok(Obj::new()
        .s("resourcetype", GPU_RESOURCE_TYPE.to_string())
        .s("resourcetypename", "gpu")
        .v("max", ctx.svc.gpu_limit(a.id).unwrap_or(-1))
        .s("account", &a.name)
        .os("domainid", d.as_ref().map(|d| d.uuid.clone()))
        .os("domain", d.map(|d| d.name))
        .build())
}

async fn update(ctx: Ctx) -> Result<Reply, ApiError> {
    let t = ctx.p.required("resourcetype")?;
    if !is_gpu(t) {
        return Err(ApiError::param(format!(
            "Invalid value for parameter resourcetype: {t}; the GPU limit (16, gpu) is the one enforced here"
        )));
    }
    let max = ctx.p.i64("max")?.unwrap_or(-1);
    if max < -1 {
        return Err(ApiError::param(
            "Invalid value for parameter max: -1 (no limit) or more",
        ));
    }
    if !ctx.p.has("account") {
        let d: Domain = ctx
            .svc
            .by_uuid("domainid", ctx.p.required("domainid")?)
            .await?;
        ctx.svc
            .set_setting(
                &ctx.caller,
                "domain",
                d.id,
                DOMAIN_GPU_LIMIT_SETTING,
                &max.to_string(),
            )
            .await?;
        return Ok(Reply::Object("resourcelimit", domain_limit_json(&ctx, &d)));
    }
    let a = owner(&ctx).await?;
    ctx.svc
        .set_setting(
            &ctx.caller,
            "account",
            a.id,
            GPU_LIMIT_SETTING,
            &max.to_string(),
        )
        .await?;
    Ok(Reply::Object("resourcelimit", limit_json(&ctx, &a).await?))
}

fn domain_limit_json(ctx: &Ctx, d: &Domain) -> Value {
    Obj::new()
        .s("resourcetype", GPU_RESOURCE_TYPE.to_string())
        .s("resourcetypename", "gpu")
        .v("max", ctx.svc.domain_gpu_limit(d.id).unwrap_or(-1))
        .s("domainid", &d.uuid)
        .s("domain", &d.name)
        .build()
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    if ctx.p.str("resourcetype").is_some_and(|t| !is_gpu(t)) {
        return Ok(Reply::List("resourcelimit", Vec::new(), 0));
    }
    if ctx.caller.is_admin() && ctx.p.has("domainid") && !ctx.p.has("account") {
        let id = ctx.p.required("domainid")?;
        let d: Domain = ctx.svc.by_uuid("domainid", id).await?;
        // A domain outside the admin's own subtree is unknown to it.
        if !ctx.caller.can_access(-1, &d.path) {
            return Err(ApiError::unknown_id("domainid", id));
        }
        return Ok(Reply::List(
            "resourcelimit",
            vec![domain_limit_json(&ctx, &d)],
            1,
        ));
    }
    let a = owner(&ctx).await?;
    Ok(Reply::List(
        "resourcelimit",
        vec![limit_json(&ctx, &a).await?],
        1,
    ))
}
