//! Jobs, listApis, settings, events and capacity.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::api::views;
use crate::cmd;
use crate::service::activity::{CapacityFilter, EventFilter, JobFilter};
use crate::service::settings;
use serde_json::{json, Value};

const JOB_FIELDS: &[Field] = &[
    f("jobid", "string", "the job ID"),
    f("jobstatus", "integer", "0 pending, 1 succeeded, 2 failed"),
    f("jobresultcode", "integer", "the result code"),
    f("jobresulttype", "string", "the type of the result"),
    f("jobresult", "object", "the result"),
    f("jobinstancetype", "string", "the type of the resource"),
    f("jobinstanceid", "string", "the ID of the resource"),
    f("cmd", "string", "the command class"),
    f("created", "date", "when the job was created"),
    f("completed", "date", "when the job completed"),
];
const API_FIELDS: &[Field] = &[
    f("name", "string", "the command name"),
    f("description", "string", "what the command does"),
    f("isasync", "boolean", "whether the command is asynchronous"),
    f("params", "list", "the parameters"),
    f("response", "list", "the response fields"),
];
const CONFIG_FIELDS: &[Field] = &[
    f("name", "string", "the setting"),
    f("value", "string", "its value"),
    f("defaultvalue", "string", "its default"),
    f("category", "string", "its category"),
    f("scope", "string", "its scope"),
    f("type", "string", "its type"),
    f("description", "string", "what it does"),
    f(
        "isdynamic",
        "boolean",
        "whether a change applies without a restart",
    ),
];
const EVENT_FIELDS: &[Field] = &[
    f("id", "string", "the event ID"),
    f("type", "string", "the event type"),
    f("level", "string", "INFO, WARN or ERROR"),
    f("description", "string", "what happened"),
    f("created", "date", "when"),
    f("resourceid", "string", "the resource"),
];
const CAPACITY_FIELDS: &[Field] = &[
    f("type", "short", "0 memory, 1 CPU, 90 CPU cores"),
    f("name", "string", "the capacity name"),
    f("capacitytotal", "long", "total"),
    f("capacityused", "long", "used"),
    f("capacityallocated", "long", "allocated"),
    f("percentused", "string", "used share"),
];

pub fn commands() -> Vec<Command> {
    vec![
        // Served by the dispatcher before authentication; listed here so that
        // listApis documents them as CloudStack does.
        cmd!(
            "login",
            "Logs a user in and returns a session key.",
            false,
            All,
            &[
                req("username", "string", "user name"),
                req("password", "string", "password"),
                opt("domain", "string", "domain path, / for ROOT"),
                opt("domainId", "uuid", "domain ID")
            ],
            &[
                f("sessionkey", "string", "the session key"),
                f("userid", "string", "the user"),
                f("timeout", "integer", "session timeout in seconds")
            ],
            session_only
        ),
        cmd!(
            "logout",
            "Logs the session's user out.",
            false,
            All,
            &[],
            &[f("description", "string", "success")],
            session_only
        ),
        cmd!(
            "queryAsyncJobResult",
            "Retrieves the current status of an asynchronous job.",
            false,
            All,
            &[req("jobid", "uuid", "the job ID")],
            JOB_FIELDS,
            query_job
        ),
        cmd!(
            "listAsyncJobs",
            "Lists asynchronous jobs of the caller's account.",
            false,
            All,
            &[
                opt(
                    "startdate",
                    "date",
                    "jobs created since, yyyy-MM-dd HH:mm:ss"
                ),
                opt("resourceid", "uuid", "jobs on a resource"),
                opt("listall", "boolean", "all visible jobs"),
                opt("account", "string", "owner"),
                opt("domainid", "uuid", "domain"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            JOB_FIELDS,
            list_jobs
        ),
        cmd!(
            "listApis",
            "Lists all available APIs and their parameters.",
            false,
            All,
            &[opt("name", "string", "one command")],
            API_FIELDS,
            list_apis
        ),
        cmd!(
            "listConfigurations",
            "Lists settings and their values.",
            false,
            RootAdmin,
            &[
                opt("name", "string", "setting name"),
                opt("category", "string", "category"),
                opt("zoneid", "uuid", "zone scope"),
                opt("clusterid", "uuid", "cluster scope"),
                opt("accountid", "uuid", "account scope"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            CONFIG_FIELDS,
            list_configs
        ),
        cmd!(
            "updateConfiguration",
            "Updates a setting, globally or for a zone, cluster or account.",
            false,
            RootAdmin,
            &[
                req("name", "string", "setting name"),
                opt("value", "string", "new value; empty resets").len(4095),
                opt("zoneid", "uuid", "zone scope"),
                opt("clusterid", "uuid", "cluster scope"),
                opt("accountid", "uuid", "account scope")
            ],
            CONFIG_FIELDS,
            update_config
        ),
        cmd!(
            "listEvents",
            "Lists events.",
            false,
            All,
            &[
                opt("id", "uuid", "event"),
                opt("type", "string", "event type"),
                opt("level", "string", "level"),
                opt("resourceid", "uuid", "resource"),
                opt("startdate", "date", "since"),
                opt("enddate", "date", "until"),
                opt("listall", "boolean", "all visible"),
                opt("account", "string", "owner"),
                opt("domainid", "uuid", "domain"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            EVENT_FIELDS,
            list_events
        ),
        cmd!(
            "listCapacity",
            "Lists memory, CPU and CPU-core capacity from host totals and allocations.",
            false,
            RootAdmin,
            &[
                opt("zoneid", "uuid", "zone"),
                opt("podid", "uuid", "pod"),
                opt("clusterid", "uuid", "cluster"),
                opt("type", "integer", "capacity type")
            ],
            CAPACITY_FIELDS,
            list_capacity
        ),
        cmd!(
            "listPublicIpAddresses",
            "Lists public IP addresses; a zone without public addresses has none.",
            false,
            All,
            NAT_PARAMS,
            IP_FIELDS,
            list_public_ips
        ),
        cmd!(
            "listPortForwardingRules",
            "Lists port forwarding rules; there are none without public addresses.",
            false,
            All,
            NAT_PARAMS,
            RULE_FIELDS,
            list_port_forwarding
        ),
        cmd!(
            "listIpForwardingRules",
            "Lists static NAT (IP forwarding) rules; there are none without public addresses.",
            false,
            All,
            NAT_PARAMS,
            RULE_FIELDS,
            list_ip_forwarding
        ),
    ]
}

/// Parameters of the public-address lists (clients such as Libcloud call
/// them after listing instances).
const NAT_PARAMS: &[crate::api::registry::P] = &[
    opt("id", "uuid", "the address or rule"),
    opt("ipaddress", "string", "the public address"),
    opt("ipaddressid", "uuid", "the public address's ID"),
    opt("virtualmachineid", "uuid", "the instance"),
    opt("zoneid", "uuid", "the zone"),
    opt("account", "string", "the owner"),
    opt("domainid", "uuid", "the owner's domain"),
    opt("listall", "boolean", "everything the caller may see"),
    opt("isrecursive", "boolean", "include subdomains"),
    PAGING[0],
    PAGING[1],
    PAGING[2],
];
const IP_FIELDS: &[Field] = &[
    f("id", "string", "the address's ID"),
    f("ipaddress", "string", "the address"),
    f("virtualmachineid", "string", "the instance it maps to"),
];
const RULE_FIELDS: &[Field] = &[
    f("id", "string", "the rule's ID"),
    f("ipaddress", "string", "the public address"),
    f("virtualmachineid", "string", "the instance"),
];

/// Checks a public-address list's scope and filters like any list, then
/// answers what exists: no zone has public addresses yet, so nothing.
async fn empty_scoped_list(ctx: &Ctx, item: &'static str) -> Result<Reply, ApiError> {
    ctx.svc.check_scope(&ctx.caller, &scope_of(ctx)).await?;
    paging(ctx)?;
    if let Some(id) = ctx.p.str("virtualmachineid") {
        ctx.svc
            .owned::<Vm>(&ctx.caller, "virtualmachineid", id)
            .await?;
    }
    if let Some(z) = ctx.p.str("zoneid") {
        ctx.svc.by_uuid::<Zone>("zoneid", z).await?;
    }
    for p in ["id", "ipaddressid"] {
        if let Some(v) = ctx.p.str(p) {
            return Err(ApiError::unknown_id(p, v));
        }
    }
    Ok(Reply::List(item, vec![], 0))
}

async fn list_public_ips(ctx: Ctx) -> Result<Reply, ApiError> {
    empty_scoped_list(&ctx, "publicipaddress").await
}

async fn list_port_forwarding(ctx: Ctx) -> Result<Reply, ApiError> {
    empty_scoped_list(&ctx, "portforwardingrule").await
}

async fn list_ip_forwarding(ctx: Ctx) -> Result<Reply, ApiError> {
    empty_scoped_list(&ctx, "ipforwardingrule").await
}

async fn session_only(_ctx: Ctx) -> Result<Reply, ApiError> {
    Err(ApiError::internal(
        "login and logout are handled before dispatch",
    ))
}

async fn job_json(ctx: &Ctx, j: &Job) -> Result<Value, ApiError> {
    let a: Option<Account> = ctx.svc.load_cached(j.account_id).await?;
    let u: Option<User> = ctx.svc.load_cached(j.user_id).await?;
    let d: Option<Domain> = ctx.svc.load_cached(j.domain_id).await?;
    views::job(&ctx.svc, &ctx.caller, j, a.as_ref(), u.as_ref(), d.as_ref()).await
}

async fn query_job(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("jobid")?;
    let j = ctx.svc.job_for(&ctx.caller, id).await?;
    Ok(Reply::Inner(job_json(&ctx, &j).await?))
}

/// `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd`, as CloudStack's list filters take.
pub fn parse_date(param: &str, s: &str) -> Result<i64, ApiError> {
    use chrono::NaiveDateTime;
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
        })
        .map(|d| d.and_utc().timestamp())
        .map_err(|_| {
            ApiError::param(format!(
                "Invalid value for parameter {param}: expected yyyy-MM-dd HH:mm:ss"
            ))
        })
}

async fn list_jobs(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = JobFilter {
        resource: ctx.p.string("resourceid"),
        since: ctx
            .p
            .str("startdate")
            .map(|s| parse_date("startdate", s))
            .transpose()?,
        page: paging(&ctx)?,
    };
    let (jobs, total) = ctx.svc.list_jobs(&ctx.caller, &scope_of(&ctx), &f).await?;
    let mut items = Vec::new();
    for j in &jobs {
        items.push(job_json(&ctx, j).await?);
    }
    Ok(Reply::List("asyncjobs", items, total))
}

async fn list_apis(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut items = Vec::new();
    let want = ctx.p.str("name");
    for c in all() {
        if want.map(|w| w != c.name).unwrap_or(false) {
            continue;
        }
        if !crate::api::authorize_svc(&ctx.svc, &ctx.caller, c).await? {
            continue;
        }
        let params: Vec<Value> = c
            .params
            .iter()
            .map(|p| json!({"name": p.name, "type": p.ty, "required": p.required, "description": p.description, "length": p.length}))
            .collect();
        let response: Vec<Value> = c
            .response
            .iter()
            .map(|r| json!({"name": r.name, "type": r.ty, "description": r.description, "response": []}))
            .collect();
        items.push(json!({
            "name": c.name,
            "description": c.description,
            "isasync": c.is_async,
            "since": "4.0.0",
            "type": if c.is_async { "async" } else { "sync" },
            "related": "",
            "params": params,
            "response": response,
        }));
    }
    let n = items.len() as u64;
    Ok(Reply::List("api", items, n))
}

fn setting_scope(ctx: &Ctx) -> (&'static str, Option<&str>, &'static str) {
    for (p, s) in [
        ("zoneid", "zone"),
        ("clusterid", "cluster"),
        ("accountid", "account"),
    ] {
        if let Some(v) = ctx.p.str(p) {
            return (s, Some(v), p);
        }
    }
    ("global", None, "")
}

async fn scope_id(ctx: &Ctx) -> Result<(&'static str, i64), ApiError> {
    let (scope, id, param) = setting_scope(ctx);
    let Some(id) = id else {
        return Ok(("global", 0));
    };
    let n = match scope {
        "zone" => ctx.svc.by_uuid::<Zone>(param, id).await?.id,
        "cluster" => ctx.svc.by_uuid::<Cluster>(param, id).await?.id,
        _ => ctx.svc.by_uuid::<Account>(param, id).await?.id,
    };
    Ok((scope, n))
}

fn config_json(s: &settings::Setting, value: &str, scope: &str) -> Value {
    Obj::new()
        .s("name", s.name)
        .s("value", value)
        .s("defaultvalue", s.default)
        .s("category", s.category)
        .s("description", s.description)
        .s("displaytext", s.name)
        .s("type", s.ty.name())
        .s("scope", scope)
        .v("isdynamic", true)
        .s("component", "orrery")
        .build()
}

async fn list_configs(ctx: Ctx) -> Result<Reply, ApiError> {
    let (scope, id) = scope_id(&ctx).await?;
    let mut items = Vec::new();
    for s in settings::SETTINGS {
        if scope != "global" && !s.scopes.contains(&scope) {
            continue;
        }
        if let Some(n) = ctx.p.str("name") {
            if !s.name.contains(n) {
                continue;
            }
        }
        if let Some(k) = ctx.p.str("keyword") {
            if !s.name.contains(k) {
                continue;
            }
        }
        if let Some(c) = ctx.p.str("category") {
            if !s.category.eq_ignore_ascii_case(c) {
                continue;
            }
        }
        let value = ctx.svc.setting(s.name, &[(scope, id)]);
        items.push(config_json(s, &value, scope));
    }
    let total = items.len() as u64;
    let items = match paging(&ctx)? {
        Some((off, lim)) => items
            .into_iter()
            .skip(off as usize)
            .take(lim as usize)
            .collect(),
        None => items,
    };
    Ok(Reply::List("configuration", items, total))
}

async fn update_config(ctx: Ctx) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?;
    let (scope, id) = scope_id(&ctx).await?;
    let raw = ctx.p.raw("value").unwrap_or("");
    let value = ctx
        .svc
        .set_setting(&ctx.caller, scope, id, name, raw)
        .await?;
    let s = settings::find(name).ok_or_else(|| ApiError::internal("setting vanished"))?;
    Ok(Reply::Object(
        "configuration",
        config_json(s, &value, scope),
    ))
}

async fn list_events(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = EventFilter {
        id: ctx.p.string("id"),
        event_type: ctx.p.string("type"),
        level: ctx.p.string("level"),
        resource: ctx.p.string("resourceid"),
        keyword: ctx.p.string("keyword"),
        start: ctx
            .p
            .str("startdate")
            .map(|s| parse_date("startdate", s))
            .transpose()?,
        end: ctx
            .p
            .str("enddate")
            .map(|s| parse_date("enddate", s))
            .transpose()?,
        page: paging(&ctx)?,
    };
    let (events, total) = ctx
        .svc
        .list_events(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut items = Vec::new();
    for e in &events {
        let a: Option<Account> = ctx.svc.load_cached(e.account_id).await?;
        let d: Option<Domain> = ctx.svc.load_cached(e.domain_id).await?;
        let u: Option<User> = ctx.svc.load_cached(e.user_id).await?;
        items.push(
            Obj::new()
                .s("id", &e.uuid)
                .s("type", &e.event_type)
                .s("level", &e.level)
                .s("description", &e.description)
                .s("state", &e.state)
                .s("created", date(e.created))
                .os("username", u.map(|u| u.username))
                .os("account", a.map(|a| a.name))
                .os("domainid", d.as_ref().map(|d| d.uuid.clone()))
                .os("domain", d.map(|d| d.name))
                .os("resourceid", e.resource_uuid.clone())
                .os("resourcetype", e.resource_type.clone())
                .os("resourcename", e.resource_name.clone())
                .build(),
        );
    }
    Ok(Reply::List("event", items, total))
}

async fn list_capacity(ctx: Ctx) -> Result<Reply, ApiError> {
    let t = ctx
        .svc
        .capacity_totals(&CapacityFilter {
            zone: ctx.p.string("zoneid"),
            pod: ctx.p.string("podid"),
            cluster: ctx.p.string("clusterid"),
        })
        .await?;
    let zone = t.zone;
    let (mem_u, mem_t) = t.memory;
    let (cpu_u, cpu_t) = t.cpu;
    let (cores_u, cores_t) = t.cores;
    let want = ctx.p.i64("type")?;
    let mut items = Vec::new();
    for (ty, name, used, total) in [
        (0, "MEMORY", mem_u, mem_t),
        (1, "CPU", cpu_u, cpu_t),
        (90, "CPU_CORE", cores_u, cores_t),
    ] {
        if want.map(|w| w != ty).unwrap_or(false) {
            continue;
        }
        let pct = if total > 0 {
            used as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        items.push(
            Obj::new()
                .v("type", ty)
                .s("name", name)
                .v("capacityused", used)
                .v("capacityallocated", used)
                .v("capacitytotal", total)
                .s("percentused", format!("{pct:.2}"))
                .os("zoneid", zone.as_ref().map(|z| z.uuid.clone()))
                .os("zonename", zone.as_ref().map(|z| z.name.clone()))
                .build(),
        );
    }
    let n = items.len() as u64;
    Ok(Reply::List("capacity", items, n))
}
