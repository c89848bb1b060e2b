//! The user data library (register, list, delete, link to templates) and
//! an instance's user data (reset, read back).

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::cmd;
use crate::service::userdata::UserDataFilter;
use serde_json::{json, Value};

const USERDATA_FIELDS: &[Field] = &[
    f("id", "string", "user data ID"),
    f("name", "string", "name, unique in the account"),
    f("userdata", "string", "the content, base64"),
    f(
        "params",
        "string",
        "variables of the content, comma-separated",
    ),
    f("account", "string", "owner account"),
    f("accountid", "string", "owner account ID"),
    f("domainid", "string", "owner domain ID"),
    f("domain", "string", "owner domain"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "registerUserData",
            "Registers user data (base64) with the names of the variables it uses.",
            false,
            All,
            &[
                req("name", "string", "name, unique in the account"),
                req("userdata", "string", "base64 content").len(1_048_576),
                opt("params", "string", "variables, comma-separated").len(5120),
                opt("account", "string", "owner account, with domainid"),
                opt("domainid", "uuid", "owner domain")
            ],
            USERDATA_FIELDS,
            register
        ),
        cmd!(
            "listUserData",
            "Lists registered user data.",
            false,
            All,
            &[
                opt("id", "uuid", "user data"),
                opt("name", "string", "name"),
                opt("listall", "boolean", "all visible"),
                opt("isrecursive", "boolean", "include subdomains"),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            USERDATA_FIELDS,
            list
        ),
        cmd!(
            "deleteUserData",
            "Deletes registered user data that no instance or template uses.",
            false,
            All,
            &[
                req("id", "uuid", "user data"),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain")
            ],
            &[f("success", "boolean", "true")],
            delete
        ),
        cmd!(
            "linkUserDataToTemplate",
            "Links registered user data to a template or ISO with an override policy, or unlinks it.",
            false,
            All,
            &[
                opt("templateid", "uuid", "template"),
                opt("isoid", "uuid", "ISO"),
                opt("userdataid", "uuid", "user data; absent unlinks"),
                opt("userdatapolicy", "string", "ALLOWOVERRIDE (default), APPEND or DENYOVERRIDE")
            ],
            &[f("id", "string", "template ID"), f("userdataid", "string", "linked user data"), f("userdatapolicy", "string", "policy")],
            link
        ),
        cmd!(
            "resetUserDataForVirtualMachine",
            "Replaces a stopped instance's user data.",
            false,
            All,
            &[
                req("id", "uuid", "instance"),
                opt("userdata", "string", "base64 user data").len(1_048_576),
                opt("userdataid", "uuid", "registered user data"),
                opt("userdatadetails", "map", "values of its variables"),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain")
            ],
            super::vm::VM_FIELDS,
            reset
        ),
        cmd!(
            "getVirtualMachineUserData",
            "Returns an instance's user data (base64).",
            false,
            All,
            &[req("virtualmachineid", "uuid", "instance")],
            &[
                f("virtualmachineid", "string", "instance ID"),
                f("userdata", "string", "base64 user data")
            ],
            get
        ),
    ]
}

async fn one(ctx: &Ctx, u: &UserData) -> Result<Value, ApiError> {
    let acct: Option<Account> = ctx.svc.load_cached(u.account_id).await?;
    let dom: Option<Domain> = ctx.svc.load_cached(u.domain_id).await?;
    Ok(json!({
        "id": u.uuid,
        "name": u.name,
        "userdata": u.userdata,
        "params": u.params.join(","),
        "account": acct.as_ref().map(|a| a.name.clone()),
        "accountid": acct.map(|a| a.uuid),
        "domainid": dom.as_ref().map(|d| d.uuid.clone()),
        "domain": dom.map(|d| d.name),
    }))
}

async fn register(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let u = ctx
        .svc
        .guest_access
        .register_userdata(
            &ctx.caller,
            &owner,
            ctx.p.required("name")?,
            ctx.p.required("userdata")?,
            ctx.p.str("params"),
            ctx.post,
        )
        .await?;
    Ok(Reply::Object("userdata", one(&ctx, &u).await?))
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = UserDataFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        page: paging(&ctx)?,
    };
    let (items, total) = ctx
        .svc
        .guest_access
        .list_userdata(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut out = Vec::new();
    for u in &items {
        out.push(one(&ctx, u).await?);
    }
    Ok(Reply::List("userdata", out, total))
}

async fn delete(ctx: Ctx) -> Result<Reply, ApiError> {
    ctx.svc
        .guest_access
        .delete_userdata(&ctx.caller, ctx.p.required("id")?)
        .await?;
    Ok(Reply::Success(None))
}

async fn link(ctx: Ctx) -> Result<Reply, ApiError> {
    let (param, id) = match (ctx.p.str("templateid"), ctx.p.str("isoid")) {
        (Some(t), None) => ("templateid", t),
        (None, Some(i)) => ("isoid", i),
        _ => {
            return Err(ApiError::param(
                "Exactly one of parameters templateid and isoid is required",
            ))
        }
    };
    let t = ctx
        .svc
        .guest_access
        .link_userdata(
            &ctx.caller,
            id,
            param,
            ctx.p.str("userdataid"),
            ctx.p.str("userdatapolicy"),
        )
        .await?;
    Ok(Reply::Object(
        "template",
        super::catalog::template_json(&ctx, &t).await?,
    ))
}

async fn reset(ctx: Ctx) -> Result<Reply, ApiError> {
    let req = super::vm::userdata_request(&ctx);
    if req.is_empty() {
        return Err(ApiError::param(
            "One of parameters userdata and userdataid is required",
        ));
    }
    let vm = ctx
        .svc
        .guest_access
        .reset_userdata(&ctx.caller, ctx.p.required("id")?, &req)
        .await?;
    super::vm::vm_reply(&ctx.svc, &ctx.caller, &vm).await
}

async fn get(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm: Vm = ctx
        .svc
        .owned(
            &ctx.caller,
            "virtualmachineid",
            ctx.p.required("virtualmachineid")?,
        )
        .await?;
    Ok(Reply::Object(
        "virtualmachineuserdata",
        json!({"virtualmachineid": vm.uuid, "userdata": vm.userdata}),
    ))
}
