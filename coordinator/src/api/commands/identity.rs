//! Domains, accounts, users, API keys and dynamic roles.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::service::directory::{AccountTotals, NewAccount, PeopleFilter, RoleFilter, RuleSpec};
use serde_json::Value;

const ACCOUNT_FIELDS: &[Field] = &[
    f("id", "string", "account ID"),
    f("name", "string", "account name"),
    f(
        "accounttype",
        "integer",
        "0 user, 1 root admin, 2 domain admin",
    ),
    f("roleid", "string", "role"),
    f("domainid", "string", "domain"),
    f("state", "string", "state"),
    f("user", "list", "the account's users"),
];
const USER_FIELDS: &[Field] = &[
    f("id", "string", "user ID"),
    f("username", "string", "login name"),
    f("account", "string", "account"),
    f("apikey", "string", "API key"),
    f("state", "string", "state"),
];
const DOMAIN_FIELDS: &[Field] = &[
    f("id", "string", "domain ID"),
    f("name", "string", "name"),
    f("path", "string", "path"),
    f("parentdomainid", "string", "parent"),
    f("level", "integer", "depth"),
];
const KEY_FIELDS: &[Field] = &[
    f("apikey", "string", "API key"),
    f("secretkey", "string", "secret key"),
];
const ROLE_FIELDS: &[Field] = &[
    f("id", "string", "role ID"),
    f("name", "string", "name"),
    f("type", "string", "Admin, DomainAdmin or User"),
    f("description", "string", "description"),
];
const PERM_FIELDS: &[Field] = &[
    f("id", "string", "rule ID"),
    f("roleid", "string", "role"),
    f("rule", "string", "command or wildcard"),
    f("permission", "string", "allow or deny"),
];
const SUCCESS: &[Field] = &[f("success", "boolean", "true on success")];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createDomain",
            "Creates a domain.",
            false,
            Admins,
            &[
                req("name", "string", "domain name"),
                opt("parentdomainid", "uuid", "parent, default ROOT")
            ],
            DOMAIN_FIELDS,
            create_domain
        ),
        cmd!(
            "listDomains",
            "Lists domains.",
            false,
            Admins,
            &[
                opt("id", "uuid", "domain"),
                opt("name", "string", "name"),
                opt("listall", "boolean", "all"),
                opt("showicon", "boolean", "include each item's icon"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            DOMAIN_FIELDS,
            list_domains
        ),
        cmd!(
            "createAccount",
            "Creates an account with its first user.",
            false,
            Admins,
            &[
                req("username", "string", "login name"),
                req("password", "string", "password"),
                req("email", "string", "email"),
                req("firstname", "string", "first name"),
                req("lastname", "string", "last name"),
                opt("account", "string", "account name, default the user name"),
                opt(
                    "accounttype",
                    "integer",
                    "0 user, 1 root admin, 2 domain admin"
                ),
                opt("roleid", "uuid", "role"),
                opt("domainid", "uuid", "domain"),
                opt("timezone", "string", "time zone")
            ],
            ACCOUNT_FIELDS,
            create_account
        ),
        cmd!(
            "listAccounts",
            "Lists accounts.",
            false,
            All,
            &[
                opt("id", "uuid", "account"),
                opt("name", "string", "name"),
                opt("domainid", "uuid", "domain"),
                opt("listall", "boolean", "all"),
                opt("isrecursive", "boolean", "subdomains"),
                opt("showicon", "boolean", "include each item's icon"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            ACCOUNT_FIELDS,
            list_accounts
        ),
        cmd!(
            "listUsers",
            "Lists users.",
            false,
            All,
            &[
                opt("id", "uuid", "user"),
                opt("username", "string", "login name"),
                opt("account", "string", "account"),
                opt("domainid", "uuid", "domain"),
                opt("listall", "boolean", "all"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            USER_FIELDS,
            list_users
        ),
        cmd!(
            "disableAccount",
            "Disables an account: its users can no longer call the API.",
            true,
            Admins,
            &[
                opt("id", "uuid", "account"),
                opt("account", "string", "name"),
                opt("domainid", "uuid", "domain"),
                req("lock", "boolean", "lock instead of disable")
            ],
            ACCOUNT_FIELDS,
            disable_account
        ),
        cmd!(
            "enableAccount",
            "Enables an account.",
            false,
            Admins,
            &[
                opt("id", "uuid", "account"),
                opt("account", "string", "name"),
                opt("domainid", "uuid", "domain")
            ],
            ACCOUNT_FIELDS,
            enable_account
        ),
        cmd!(
            "deleteAccount",
            "Deletes an account and expunges its instances, whatever their delete protection.",
            true,
            Admins,
            &[req("id", "uuid", "account")],
            SUCCESS,
            delete_account
        ),
        cmd!(
            "updateUser",
            "Updates a user: names, e-mail, time zone, password (with the current one when changing one's own).",
            false,
            All,
            &[
                req("id", "uuid", "user"),
                opt("password", "string", "new password"),
                opt("currentpassword", "string", "the current password, to change one's own"),
                opt("firstname", "string", "first name"),
                opt("lastname", "string", "last name"),
                opt("email", "string", "e-mail address"),
                opt("timezone", "string", "time zone")
            ],
            USER_FIELDS,
            update_user
        ),
        cmd!(
            "registerUserKeys",
            "Generates a new API key pair for a user.",
            false,
            All,
            &[req("id", "uuid", "user")],
            KEY_FIELDS,
            register_keys
        ),
        cmd!(
            "getUserKeys",
            "Returns a user's API key pair.",
            false,
            All,
            &[req("id", "uuid", "user")],
            KEY_FIELDS,
            get_keys
        ),
        cmd!(
            "createRole",
            "Creates a role.",
            false,
            RootAdmin,
            &[
                req("name", "string", "name"),
                opt("type", "string", "Admin, DomainAdmin or User"),
                opt("roleid", "uuid", "role to copy rules from"),
                opt("description", "string", "description")
            ],
            ROLE_FIELDS,
            create_role
        ),
        cmd!(
            "importRole",
            "Creates a role with its rules.",
            false,
            RootAdmin,
            &[
                req("name", "string", "name"),
                req("type", "string", "Admin, DomainAdmin or User"),
                req(
                    "rules",
                    "map",
                    "rules[i].rule, rules[i].permission, rules[i].description"
                ),
                opt("description", "string", "description"),
                opt("forced", "boolean", "replace an existing role")
            ],
            ROLE_FIELDS,
            import_role
        ),
        cmd!(
            "listRoles",
            "Lists roles.",
            false,
            All,
            &[
                opt("id", "uuid", "role"),
                opt("name", "string", "name"),
                opt("type", "string", "type"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            ROLE_FIELDS,
            list_roles
        ),
        cmd!(
            "deleteRole",
            "Deletes a role no account uses.",
            false,
            RootAdmin,
            &[req("id", "uuid", "role")],
            SUCCESS,
            delete_role
        ),
        cmd!(
            "createRolePermission",
            "Adds a rule to a role.",
            false,
            RootAdmin,
            &[
                req("roleid", "uuid", "role"),
                req("rule", "string", "command name or wildcard"),
                req("permission", "string", "allow or deny"),
                opt("description", "string", "description")
            ],
            PERM_FIELDS,
            create_perm
        ),
        cmd!(
            "listRolePermissions",
            "Lists a role's rules in order.",
            false,
            RootAdmin,
            &[opt("roleid", "uuid", "role")],
            PERM_FIELDS,
            list_perms
        ),
    ]
}

async fn domain_json(ctx: &Ctx, d: &Domain) -> Result<Value, ApiError> {
    let parent: Option<Domain> = match d.parent_id {
        Some(p) => ctx.svc.load_cached(p).await?,
        None => None,
    };
    Ok(Obj::new()
        .s("id", &d.uuid)
        .s("name", &d.name)
        .s("path", &d.path)
        .v("level", d.level)
        .os("parentdomainid", parent.as_ref().map(|p| p.uuid.clone()))
        .os("parentdomainname", parent.map(|p| p.name))
        .v("haschild", false)
        .s("state", "Active")
        .s("created", date(d.created))
        .build())
}

async fn create_domain(ctx: Ctx) -> Result<Reply, ApiError> {
    let d = ctx
        .svc
        .identity
        .create_domain(
            &ctx.caller,
            ctx.p.required("name")?,
            ctx.p.str("parentdomainid"),
        )
        .await?;
    Ok(Reply::Object("domain", domain_json(&ctx, &d).await?))
}

async fn list_domains(ctx: Ctx) -> Result<Reply, ApiError> {
    let all = ctx
        .svc
        .identity
        .list_domains(&ctx.caller, ctx.p.str("id"), ctx.p.str("name"))
        .await?;
    let mut items = Vec::new();
    for d in &all {
        items.push(domain_json(&ctx, d).await?);
    }
    let n = items.len() as u64;
    let items = super::ui::with_icons(&ctx, "Domain", items).await?;
    Ok(Reply::List("domain", items, n))
}

async fn user_json(ctx: &Ctx, u: &User) -> Result<Value, ApiError> {
    let a: Option<Account> = ctx.svc.load_cached(u.account_id).await?;
    let d: Option<Domain> = ctx.svc.load_cached(u.domain_id).await?;
    let role: Option<Role> = match &a {
        Some(a) => ctx.svc.load_cached(a.role_id).await?,
        None => None,
    };
    Ok(Obj::new()
        .s("id", &u.uuid)
        .s("username", &u.username)
        .s("firstname", &u.firstname)
        .s("lastname", &u.lastname)
        .os("email", u.email.clone())
        .s("state", &u.state)
        .s("created", date(u.created))
        .os("account", a.as_ref().map(|a| a.name.clone()))
        .os("accountid", a.as_ref().map(|a| a.uuid.clone()))
        .ov("accounttype", a.as_ref().map(|a| a.account_type))
        .os("roleid", role.as_ref().map(|r| r.uuid.clone()))
        .os("rolename", role.as_ref().map(|r| r.name.clone()))
        .os("roletype", role.map(|r| r.role_type))
        .os("domainid", d.as_ref().map(|d| d.uuid.clone()))
        .os("domain", d.map(|d| d.name))
        .os("apikey", u.api_key.clone())
        .os("timezone", u.timezone.clone())
        .v("isdefault", u.id <= 2)
        .s("usersource", "native")
        .v("is2faenabled", false)
        .build())
}

async fn account_json(ctx: &Ctx, a: &Account) -> Result<Value, ApiError> {
    let d: Option<Domain> = ctx.svc.load_cached(a.domain_id).await?;
    let role: Option<Role> = ctx.svc.load_cached(a.role_id).await?;
    let mut uj = Vec::new();
    for u in &ctx.svc.identity.account_users(a.id).await? {
        uj.push(user_json(ctx, u).await?);
    }
    let t = ctx.svc.identity.account_totals(a.id).await?;
    Ok(resource_fields(Obj::new(), &t)
        .s("id", &a.uuid)
        .s("name", &a.name)
        .v("accounttype", a.account_type)
        .os("roleid", role.as_ref().map(|r| r.uuid.clone()))
        .os("rolename", role.as_ref().map(|r| r.name.clone()))
        .os("roletype", role.map(|r| r.role_type))
        .os("domainid", d.as_ref().map(|d| d.uuid.clone()))
        .os("domain", d.as_ref().map(|d| d.name.clone()))
        .os("domainpath", d.map(|d| d.path))
        .s("state", &a.state)
        .s("created", date(a.created))
        .v("isdefault", a.id <= 2)
        .v("user", Value::Array(uj))
        .build())
}

/// CloudStack's per-resource fields of an account: `<type>total`,
/// `<type>limit` and `<type>available` ("Unlimited" where no limit is set).
/// Orrery limits GPUs only; addresses, networks, VPCs and projects are
/// none of an account's own.
fn resource_fields(o: Obj, t: &AccountTotals) -> Obj {
    const GIB: i64 = 1 << 30;
    let unlimited = [
        ("vm", t.vms),
        ("cpu", t.cpu),
        ("memory", t.memory_mb),
        ("volume", t.volumes),
        ("primarystorage", t.primary_bytes / GIB),
        ("secondarystorage", 0),
        ("snapshot", t.snapshots),
        ("template", t.templates),
        ("ip", 0),
        ("network", 0),
        ("vpc", 0),
        ("project", 0),
    ];
    let mut o = unlimited.iter().fold(o, |o, (name, total)| {
        o.v(&format!("{name}total"), *total)
            .s(&format!("{name}limit"), "Unlimited")
            .s(&format!("{name}available"), "Unlimited")
    });
    o = o.v("gputotal", t.gpus);
    o = match t.gpu_limit {
        Some(l) => o.v("gpulimit", l).v("gpuavailable", (l - t.gpus).max(0)),
        None => o.s("gpulimit", "Unlimited").s("gpuavailable", "Unlimited"),
    };
    o.v("vmrunning", t.running)
        .v("vmstopped", t.stopped)
        .v("receivedbytes", 0)
        .v("sentbytes", 0)
}

async fn create_account(ctx: Ctx) -> Result<Reply, ApiError> {
    let r = NewAccount {
        username: ctx.p.required("username")?.to_string(),
        password: ctx.p.required("password")?.to_string(),
        account: ctx.p.string("account"),
        domain: ctx.p.string("domainid"),
        role: ctx.p.string("roleid"),
        account_type: ctx.p.i64_range("accounttype", 0, 2)?,
        firstname: ctx.p.required("firstname")?.to_string(),
        lastname: ctx.p.required("lastname")?.to_string(),
        email: ctx.p.string("email"),
        timezone: ctx.p.string("timezone"),
    };
    let a = ctx.svc.identity.create_account(&ctx.caller, r).await?;
    Ok(Reply::Object("account", account_json(&ctx, &a).await?))
}

fn people_filter(ctx: &Ctx, name_param: &str) -> Result<PeopleFilter, ApiError> {
    Ok(PeopleFilter {
        id: ctx.p.string("id"),
        name: ctx.p.str(name_param).map(str::to_string),
        keyword: ctx.p.string("keyword"),
        domain: ctx.p.string("domainid"),
        account: ctx.p.string("account"),
        page: paging(ctx)?,
    })
}

async fn list_accounts(ctx: Ctx) -> Result<Reply, ApiError> {
    let (accts, total) = ctx
        .svc
        .identity
        .list_accounts(&ctx.caller, &people_filter(&ctx, "name")?)
        .await?;
    let mut items = Vec::new();
    for a in &accts {
        items.push(account_json(&ctx, a).await?);
    }
    let items = super::ui::with_icons(&ctx, "Account", items).await?;
    Ok(Reply::List("account", items, total))
}

async fn list_users(ctx: Ctx) -> Result<Reply, ApiError> {
    let (users, total) = ctx
        .svc
        .identity
        .list_users(&ctx.caller, &people_filter(&ctx, "username")?)
        .await?;
    let mut items = Vec::new();
    for u in &users {
        items.push(user_json(&ctx, u).await?);
    }
    Ok(Reply::List("user", items, total))
}

async fn target_account(ctx: &Ctx) -> Result<Account, ApiError> {
    Ok(ctx
        .svc
        .identity
        .target_account(
            &ctx.caller,
            ctx.p.str("id"),
            ctx.p.str("account"),
            ctx.p.str("domainid"),
            &ctx.p.command,
        )
        .await?)
}

async fn set_account_state(ctx: &Ctx, state: &str, event: &str) -> Result<Account, ApiError> {
    let a = target_account(ctx).await?;
    Ok(ctx
        .svc
        .identity
        .set_account_state(&ctx.caller, a, state, event)
        .await?)
}

async fn disable_account(ctx: Ctx) -> Result<Reply, ApiError> {
    let lock = ctx.p.bool_or("lock", false);
    let a = set_account_state(
        &ctx,
        if lock { "locked" } else { "disabled" },
        "ACCOUNT.DISABLE",
    )
    .await?;
    let job = ctx
        .svc
        .done_job(&ctx.caller, "disableAccount", "Account", &a.uuid)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn enable_account(ctx: Ctx) -> Result<Reply, ApiError> {
    let a = set_account_state(&ctx, "enabled", "ACCOUNT.ENABLE").await?;
    Ok(Reply::Object("account", account_json(&ctx, &a).await?))
}

async fn delete_account(ctx: Ctx) -> Result<Reply, ApiError> {
    let a = target_account(&ctx).await?;
    let job = ctx.svc.queue_delete_account(&ctx.caller, &a).await?;
    Ok(Reply::Async { job, id: None })
}

async fn update_user(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = ctx
        .svc
        .identity
        .update_user(
            &ctx.caller,
            crate::service::directory::UserUpdate {
                id: ctx.p.required("id")?.to_string(),
                password: ctx.p.raw("password").map(str::to_string),
                current_password: ctx.p.raw("currentpassword").map(str::to_string),
                firstname: ctx.p.string("firstname"),
                lastname: ctx.p.string("lastname"),
                email: ctx.p.string("email"),
                timezone: ctx.p.string("timezone"),
            },
        )
        .await?;
    Ok(Reply::Object("user", user_json(&ctx, &u).await?))
}

async fn register_keys(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = ctx
        .svc
        .identity
        .register_keys(&ctx.caller, ctx.p.required("id")?)
        .await?;
    Ok(Reply::Object(
        "userkeys",
        serde_json::json!({"apikey": u.api_key, "secretkey": u.secret_key}),
    ))
}

async fn get_keys(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = ctx
        .svc
        .identity
        .key_user(&ctx.caller, ctx.p.required("id")?)
        .await?;
    Ok(Reply::Object(
        "userkeys",
        Obj::new()
            .os("apikey", u.api_key)
            .os("secretkey", u.secret_key)
            .build(),
    ))
}

fn role_json(r: &Role) -> Value {
    Obj::new()
        .s("id", &r.uuid)
        .s("name", &r.name)
        .s("type", &r.role_type)
        .s("description", &r.description)
        .v("isdefault", r.is_default)
        .s("state", "ENABLED")
        .build()
}

async fn create_role(ctx: Ctx) -> Result<Reply, ApiError> {
    let role = ctx
        .svc
        .identity
        .create_role(
            ctx.p.required("name")?,
            ctx.p.str("type"),
            ctx.p.str("roleid"),
            ctx.p.str("description").unwrap_or(""),
        )
        .await?;
    Ok(Reply::Object("role", role_json(&role)))
}

async fn import_role(ctx: Ctx) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?;
    let ty = ctx.p.required("type")?;
    let entries = ctx.p.map_entries("rules");
    if entries.is_empty() {
        return Err(ApiError::missing(&ctx.p.command, "rules"));
    }
    let mut rules = Vec::with_capacity(entries.len());
    for (i, r) in entries.iter().enumerate() {
        rules.push(RuleSpec {
            rule: r
                .get("rule")
                .ok_or_else(|| ApiError::param(format!("rules[{i}].rule is missing")))?
                .clone(),
            permission: r
                .get("permission")
                .ok_or_else(|| ApiError::param(format!("rules[{i}].permission is missing")))?
                .clone(),
            description: r.get("description").cloned().unwrap_or_default(),
        });
    }
    let role = ctx
        .svc
        .identity
        .import_role(name, ty, &rules, ctx.p.str("description").unwrap_or(""))
        .await?;
    Ok(Reply::Object("role", role_json(&role)))
}

async fn list_roles(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = RoleFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        role_type: ctx.p.string("type"),
        page: paging(&ctx)?,
    };
    let (roles, total) = ctx.svc.identity.list_roles(&f).await?;
    Ok(Reply::List(
        "role",
        roles.iter().map(role_json).collect(),
        total,
    ))
}

async fn delete_role(ctx: Ctx) -> Result<Reply, ApiError> {
    ctx.svc.identity.delete_role(ctx.p.required("id")?).await?;
    Ok(Reply::Success(None))
}

fn perm_json(role: &Role, p: &RolePermission) -> Value {
    Obj::new()
        .s("id", &p.uuid)
        .s("roleid", &role.uuid)
        .s("rolename", &role.name)
        .s("rule", &p.rule)
        .s("permission", &p.permission)
        .s("description", &p.description)
        .build()
}

async fn create_perm(ctx: Ctx) -> Result<Reply, ApiError> {
    let spec = RuleSpec {
        rule: ctx.p.required("rule")?.to_string(),
        permission: ctx.p.required("permission")?.to_string(),
        description: ctx.p.str("description").unwrap_or("").to_string(),
    };
    let (role, p) = ctx
        .svc
        .identity
        .create_role_permission(ctx.p.required("roleid")?, &spec)
        .await?;
    Ok(Reply::Object("rolepermission", perm_json(&role, &p)))
}

async fn list_perms(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut items = Vec::new();
    for (role, rules) in ctx
        .svc
        .identity
        .list_role_permissions(ctx.p.str("roleid"))
        .await?
    {
        items.extend(rules.iter().map(|p| perm_json(&role, p)));
    }
    let n = items.len() as u64;
    Ok(Reply::List("rolepermission", items, n))
}
