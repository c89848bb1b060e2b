//! Domains, accounts, users, API keys and dynamic roles.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::service::identity::{hash_password, random_key};
use crate::service::jobs::{NewJob, Work};
use crate::service::{new_uuid, now};
use crate::store::StoreExt;
use crate::store::{Col, Query, StoreError, Tx};
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
    let name = ctx.p.required("name")?;
    if name.contains('/') {
        return Err(ApiError::param(
            "Invalid value for parameter name: a domain name cannot contain '/'",
        ));
    }
    let parent: Domain = match ctx.p.str("parentdomainid") {
        Some(p) => ctx.svc.by_uuid("parentdomainid", p).await?,
        None => ctx.caller.domain.clone(),
    };
    if !ctx.caller.is_root_admin()
        && !crate::service::in_subtree(&parent.path, &ctx.caller.domain.path)
    {
        return Err(ApiError::denied("Caller cannot create domains there"));
    }
    let d = Domain {
        id: ctx.svc.store.new_id::<Domain>().await?,
        uuid: new_uuid(),
        version: 1,
        name: name.to_string(),
        parent_id: Some(parent.id),
        path: format!("{}/{}", parent.path, name),
        level: parent.level + 1,
        created: now(),
        removed: None,
    };
    let mut tx = Tx::new();
    tx.insert(&d);
    ctx.svc.event(
        &mut tx,
        &ctx.caller,
        "DOMAIN.CREATE",
        format!("Created domain {}", d.path),
        ctx.caller.account.id,
        d.id,
        Some((&d.uuid, "Domain", &d.name)),
    );
    ctx.svc.store.commit(tx.ops).await.map_err(|e| match e {
        StoreError::Duplicate(..) => ApiError::param(format!(
            "Domain with name {name} already exists for the parent"
        )),
        e => e.into(),
    })?;
    Ok(Reply::Object("domain", domain_json(&ctx, &d).await?))
}

async fn list_domains(ctx: Ctx) -> Result<Reply, ApiError> {
    let all: Vec<Domain> = ctx.svc.store.all(Query::new()).await?;
    let mut items = Vec::new();
    for d in all.iter().filter(|d| {
        d.removed.is_none() && crate::service::in_subtree(&d.path, &ctx.caller.domain.path)
    }) {
        if ctx.p.str("id").map(|i| i != d.uuid).unwrap_or(false)
            || ctx
                .p
                .str("name")
                .map(|n| !n.eq_ignore_ascii_case(&d.name))
                .unwrap_or(false)
        {
            continue;
        }
        items.push(domain_json(&ctx, d).await?);
    }
    let n = items.len() as u64;
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
        .build())
}

async fn account_json(ctx: &Ctx, a: &Account) -> Result<Value, ApiError> {
    let d: Option<Domain> = ctx.svc.load_cached(a.domain_id).await?;
    let role: Option<Role> = ctx.svc.load_cached(a.role_id).await?;
    let users: Vec<User> = ctx
        .svc
        .store
        .all(Query::new().eq(Col::Account, a.id))
        .await?;
    let mut uj = Vec::new();
    for u in users.iter().filter(|u| u.removed.is_none()) {
        uj.push(user_json(ctx, u).await?);
    }
    let vms = ctx
        .svc
        .store
        .count(
            crate::store::Kind::Vm,
            &Query::new()
                .eq(Col::Account, a.id)
                .and(Cond::NotIn(Col::State, vec!["Expunged".into()])),
        )
        .await?;
    Ok(Obj::new()
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
        .v("vmtotal", vms)
        .v("isdefault", a.id <= 2)
        .v("user", Value::Array(uj))
        .build())
}

async fn create_account(ctx: Ctx) -> Result<Reply, ApiError> {
    let username = ctx.p.required("username")?.to_string();
    let password = ctx.p.required("password")?.to_string();
    let domain: Domain = match ctx.p.str("domainid") {
        Some(d) => ctx.svc.by_uuid("domainid", d).await?,
        None => ctx.caller.domain.clone(),
    };
    if !ctx.caller.is_root_admin()
        && !crate::service::in_subtree(&domain.path, &ctx.caller.domain.path)
    {
        return Err(ApiError::denied(
            "Caller cannot create accounts in that domain",
        ));
    }
    let role: Role = match ctx.p.str("roleid") {
        Some(r) => ctx.svc.by_uuid("roleid", r).await?,
        None => {
            let ty = ctx.p.i64_range("accounttype", 0, 2)?.unwrap_or(0);
            let name = match ty {
                1 => "Root Admin",
                2 => "Domain Admin",
                _ => "User",
            };
            ctx.svc
                .store
                .first(Query::new().eq(Col::Ukey, name.to_lowercase()))
                .await?
                .ok_or_else(|| ApiError::internal("default role missing"))?
        }
    };
    if role.role_type == "Admin" && !ctx.caller.is_root_admin() {
        return Err(ApiError::denied(
            "Only a root admin can create admin accounts",
        ));
    }
    let account_type = match role.role_type.as_str() {
        "Admin" => ACCOUNT_ADMIN,
        "DomainAdmin" => ACCOUNT_DOMAIN_ADMIN,
        _ => ACCOUNT_USER,
    };
    let name = ctx.p.str("account").unwrap_or(&username).to_string();
    let t = now();
    let a = Account {
        id: ctx.svc.store.new_id::<Account>().await?,
        uuid: new_uuid(),
        version: 1,
        name: name.clone(),
        domain_id: domain.id,
        account_type,
        role_id: role.id,
        state: "enabled".into(),
        created: t,
        removed: None,
    };
    let u = User {
        id: ctx.svc.store.new_id::<User>().await?,
        uuid: new_uuid(),
        version: 1,
        username: username.clone(),
        account_id: a.id,
        domain_id: domain.id,
        firstname: ctx.p.required("firstname")?.to_string(),
        lastname: ctx.p.required("lastname")?.to_string(),
        email: ctx.p.str("email").map(str::to_string),
        password: Some(hash_password(&password)),
        api_key: None,
        secret_key: None,
        state: "enabled".into(),
        timezone: ctx.p.str("timezone").map(str::to_string),
        created: t,
        removed: None,
    };
    let mut tx = Tx::new();
    tx.insert(&a).insert(&u);
    ctx.svc.event(
        &mut tx,
        &ctx.caller,
        "ACCOUNT.CREATE",
        format!("Created account {name}"),
        a.id,
        domain.id,
        Some((&a.uuid, "Account", &name)),
    );
    ctx.svc.store.commit(tx.ops).await.map_err(|e| match e {
        StoreError::Duplicate(crate::store::Kind::Account, _) => ApiError::param(format!(
            "The account {name} already exists in domain {}",
            domain.path
        )),
        StoreError::Duplicate(..) => ApiError::param(format!(
            "The user {username} already exists in domain {}",
            domain.path
        )),
        e => e.into(),
    })?;
    Ok(Reply::Object("account", account_json(&ctx, &a).await?))
}

async fn list_accounts(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = Query::new().and(Cond::Ne(Col::State, "removed".into()));
    if !ctx.caller.is_admin() {
        q = q.eq(Col::Id, ctx.caller.account.id);
    } else if !ctx.caller.is_root_admin() {
        q = q.and(Cond::In(
            Col::Domain,
            ctx.svc.subtree_ids(ctx.caller.domain.id).await?,
        ));
    }
    if let Some(id) = ctx.p.str("id") {
        q = q.eq(Col::Uuid, id);
    }
    if let Some(n) = ctx.p.str("name") {
        q = q.and(Cond::EqNoCase(Col::Name, n.to_string()));
    }
    if let Some(d) = opt_ref::<Domain>(&ctx, "domainid").await? {
        q = q.eq(Col::Domain, d.id);
    }
    if let Some(k) = ctx.p.str("keyword") {
        q = q.and(Cond::Contains(vec![Col::Name], k.to_string()));
    }
    q.page = paging(&ctx)?;
    let (accts, total) = ctx.svc.store.list::<Account>(&q).await?;
    let mut items = Vec::new();
    for a in &accts {
        items.push(account_json(&ctx, a).await?);
    }
    Ok(Reply::List("account", items, total))
}

async fn list_users(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = Query::new().and(Cond::Ne(Col::State, "removed".into()));
    if !ctx.caller.is_admin() {
        q = q.eq(Col::Account, ctx.caller.account.id);
    } else if !ctx.caller.is_root_admin() {
        q = q.and(Cond::In(
            Col::Domain,
            ctx.svc.subtree_ids(ctx.caller.domain.id).await?,
        ));
    }
    if let Some(id) = ctx.p.str("id") {
        q = q.eq(Col::Uuid, id);
    }
    if let Some(n) = ctx.p.str("username") {
        q = q.and(Cond::EqNoCase(Col::Name, n.to_string()));
    }
    if ctx.p.has("account") {
        let a = owner(&ctx).await?;
        q = q.eq(Col::Account, a.id);
    }
    q.page = paging(&ctx)?;
    let (users, total) = ctx.svc.store.list::<User>(&q).await?;
    let mut items = Vec::new();
    for u in &users {
        items.push(user_json(&ctx, u).await?);
    }
    Ok(Reply::List("user", items, total))
}

async fn target_account(ctx: &Ctx) -> Result<Account, ApiError> {
    let a: Account = match ctx.p.str("id") {
        Some(id) => ctx.svc.by_uuid("id", id).await?,
        None => {
            if !ctx.p.has("account") {
                return Err(ApiError::missing(&ctx.p.command, "id"));
            }
            owner(ctx).await?
        }
    };
    let path = ctx.svc.domain_path(a.domain_id).await?;
    if a.removed.is_some() || !ctx.caller.can_access(a.id, &path) {
        return Err(ApiError::unknown_id("id", &a.uuid));
    }
    if a.id == ctx.caller.account.id || a.id <= 2 {
        return Err(ApiError::param(
            "The caller's own account and the system accounts cannot be disabled or deleted",
        ));
    }
    Ok(a)
}

async fn set_account_state(ctx: &Ctx, state: &str, event: &str) -> Result<Account, ApiError> {
    let mut a = target_account(ctx).await?;
    a.state = state.to_string();
    let mut tx = Tx::new();
    let (id, did, uuid, name) = (a.id, a.domain_id, a.uuid.clone(), a.name.clone());
    tx.update(&mut a);
    ctx.svc.event(
        &mut tx,
        &ctx.caller,
        event,
        format!("Account {name} is now {state}"),
        id,
        did,
        Some((&uuid, "Account", &name)),
    );
    ctx.svc.store.commit(tx.ops).await?;
    Ok(a)
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
    let job = ctx.svc.new_job(
        &ctx.caller,
        NewJob {
            command: "deleteAccount",
            instance_type: Some("Account"),
            instance_uuid: Some(&a.uuid),
            work: Work::DeleteAccount { account_id: a.id },
        },
    );
    let mut tx = Tx::new();
    tx.insert(&job);
    ctx.svc.store.commit(tx.ops).await?;
    ctx.svc.spawn_job(job.uuid.clone());
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn key_user(ctx: &Ctx) -> Result<User, ApiError> {
    let id = ctx.p.required("id")?;
    let u: User = ctx.svc.by_uuid("id", id).await?;
    let path = ctx.svc.domain_path(u.domain_id).await?;
    let own = u.id == ctx.caller.user.id;
    if u.removed.is_some()
        || !(own || (ctx.caller.is_admin() && ctx.caller.can_access(u.account_id, &path)))
    {
        return Err(ApiError::unknown_id("id", id));
    }
    Ok(u)
}

async fn register_keys(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut u = key_user(&ctx).await?;
    u.api_key = Some(random_key(64));
    u.secret_key = Some(random_key(64));
    let mut tx = Tx::new();
    tx.update(&mut u);
    ctx.svc.store.commit(tx.ops).await?;
    Ok(Reply::Object(
        "userkeys",
        serde_json::json!({"apikey": u.api_key, "secretkey": u.secret_key}),
    ))
}

async fn get_keys(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = key_user(&ctx).await?;
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

fn role_type(s: &str) -> Result<String, ApiError> {
    ["Admin", "DomainAdmin", "User"]
        .iter()
        .find(|t| t.eq_ignore_ascii_case(s))
        .map(|t| t.to_string())
        .ok_or_else(|| {
            ApiError::param(format!(
                "Invalid value for parameter type: {s}; use Admin, DomainAdmin or User"
            ))
        })
}

async fn new_role(ctx: &Ctx, name: &str, ty: String) -> Result<Role, ApiError> {
    Ok(Role {
        id: ctx.svc.store.new_id::<Role>().await?,
        uuid: new_uuid(),
        version: 1,
        name: name.to_string(),
        role_type: ty,
        description: ctx.p.str("description").unwrap_or("").to_string(),
        is_default: false,
        created: now(),
    })
}

async fn new_perm(
    ctx: &Ctx,
    role: &Role,
    rule: &str,
    perm: &str,
    desc: &str,
    order: i64,
) -> Result<RolePermission, ApiError> {
    let ok = !rule.is_empty()
        && rule.chars().all(|c| c.is_ascii_alphanumeric() || c == '*')
        && rule.matches('*').count() <= 1;
    if !ok {
        return Err(ApiError::param(format!(
            "Invalid value for parameter rule: {rule} is not a command name or a wildcard"
        )));
    }
    let permission = perm.to_ascii_lowercase();
    if permission != "allow" && permission != "deny" {
        return Err(ApiError::param(format!(
            "Invalid value for parameter permission: {perm}; use allow or deny"
        )));
    }
    Ok(RolePermission {
        id: ctx.svc.store.new_id::<RolePermission>().await?,
        uuid: new_uuid(),
        version: 1,
        role_id: role.id,
        rule: rule.to_string(),
        permission,
        description: desc.to_string(),
        sort_order: order,
        created: now(),
    })
}

fn dup_role(name: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::Duplicate(..) => {
            ApiError::param(format!("A role with name {name} already exists"))
        }
        e => e.into(),
    }
}

async fn create_role(ctx: Ctx) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?;
    let base: Option<Role> = opt_ref(&ctx, "roleid").await?;
    let ty = match (ctx.p.str("type"), &base) {
        (Some(t), _) => role_type(t)?,
        (None, Some(b)) => b.role_type.clone(),
        (None, None) => return Err(ApiError::missing(&ctx.p.command, "type")),
    };
    let role = new_role(&ctx, name, ty).await?;
    let mut tx = Tx::new();
    tx.insert(&role);
    if let Some(b) = base {
        let rules: Vec<RolePermission> = ctx
            .svc
            .store
            .all(Query::new().eq(Col::Parent, b.id))
            .await?;
        for r in rules {
            let p = new_perm(
                &ctx,
                &role,
                &r.rule,
                &r.permission,
                &r.description,
                r.sort_order,
            )
            .await?;
            tx.insert(&p);
        }
    }
    ctx.svc.store.commit(tx.ops).await.map_err(dup_role(name))?;
    Ok(Reply::Object("role", role_json(&role)))
}

async fn import_role(ctx: Ctx) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?;
    let ty = role_type(ctx.p.required("type")?)?;
    let rules = ctx.p.map_entries("rules");
    if rules.is_empty() {
        return Err(ApiError::missing(&ctx.p.command, "rules"));
    }
    let role = new_role(&ctx, name, ty).await?;
    let mut tx = Tx::new();
    tx.insert(&role);
    for (i, r) in rules.iter().enumerate() {
        let rule = r
            .get("rule")
            .ok_or_else(|| ApiError::param(format!("rules[{i}].rule is missing")))?;
        let perm = r
            .get("permission")
            .ok_or_else(|| ApiError::param(format!("rules[{i}].permission is missing")))?;
        let p = new_perm(
            &ctx,
            &role,
            rule,
            perm,
            r.get("description").map(String::as_str).unwrap_or(""),
            i as i64,
        )
        .await?;
        tx.insert(&p);
    }
    ctx.svc.store.commit(tx.ops).await.map_err(dup_role(name))?;
    Ok(Reply::Object("role", role_json(&role)))
}

async fn list_roles(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut q = Query::new();
    if let Some(id) = ctx.p.str("id") {
        q = q.eq(Col::Uuid, id);
    }
    if let Some(n) = ctx.p.str("name") {
        q = q.and(Cond::EqNoCase(Col::Name, n.to_string()));
    }
    if let Some(t) = ctx.p.str("type") {
        q = q.and(Cond::EqNoCase(Col::State, t.to_string()));
    }
    q.page = paging(&ctx)?;
    let (roles, total) = ctx.svc.store.list::<Role>(&q).await?;
    Ok(Reply::List(
        "role",
        roles.iter().map(role_json).collect(),
        total,
    ))
}

async fn delete_role(ctx: Ctx) -> Result<Reply, ApiError> {
    let role: Role = ctx.svc.by_uuid("id", ctx.p.required("id")?).await?;
    if role.is_default {
        return Err(ApiError::param("Default roles cannot be deleted"));
    }
    let users = ctx
        .svc
        .store
        .count(
            crate::store::Kind::Account,
            &Query::new()
                .eq(Col::Ref, role.id)
                .and(Cond::Ne(Col::State, "removed".into())),
        )
        .await?;
    if users > 0 {
        return Err(ApiError::in_use(format!(
            "Role {} is in use by {users} accounts",
            role.name
        )));
    }
    let rules: Vec<RolePermission> = ctx
        .svc
        .store
        .all(Query::new().eq(Col::Parent, role.id))
        .await?;
    let mut tx = Tx::new();
    for r in rules {
        tx.delete::<RolePermission>(r.id);
    }
    tx.delete::<Role>(role.id);
    ctx.svc.store.commit(tx.ops).await?;
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
    let role: Role = ctx.svc.by_uuid("roleid", ctx.p.required("roleid")?).await?;
    let existing: Vec<RolePermission> = ctx
        .svc
        .store
        .all(Query::new().eq(Col::Parent, role.id))
        .await?;
    // New rules go first, so a specific deny added later overrides a broad allow.
    let order = existing.iter().map(|r| r.sort_order).min().unwrap_or(0) - 1;
    let p = new_perm(
        &ctx,
        &role,
        ctx.p.required("rule")?,
        ctx.p.required("permission")?,
        ctx.p.str("description").unwrap_or(""),
        order,
    )
    .await?;
    let mut tx = Tx::new();
    tx.insert(&p);
    ctx.svc.store.commit(tx.ops).await?;
    Ok(Reply::Object("rolepermission", perm_json(&role, &p)))
}

async fn list_perms(ctx: Ctx) -> Result<Reply, ApiError> {
    let roles: Vec<Role> = match opt_ref::<Role>(&ctx, "roleid").await? {
        Some(r) => vec![r],
        None => ctx.svc.store.all(Query::new()).await?,
    };
    let mut items = Vec::new();
    for role in &roles {
        let mut rules: Vec<RolePermission> = ctx
            .svc
            .store
            .all(Query::new().eq(Col::Parent, role.id))
            .await?;
        rules.sort_by_key(|r| (r.sort_order, r.id));
        items.extend(rules.iter().map(|p| perm_json(role, p)));
    }
    let n = items.len() as u64;
    Ok(Reply::List("rolepermission", items, n))
}
