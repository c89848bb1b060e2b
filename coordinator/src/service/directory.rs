//! Domains, accounts, users, API keys and roles as administrators manage
//! them. Who may see and change which is decided here: a domain admin works
//! within its domain subtree, a user only on itself, roles are the root
//! admin's (the command table admits no one else to their changes).

use super::identity::{hash_password, random_key};
use super::jobs::{NewJob, Work};
use super::*;
use crate::store::{Kind, StoreError};

/// What createAccount asks for.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
    /// Account name; the user name when left out.
    pub account: Option<String>,
    pub domain: Option<String>,
    pub role: Option<String>,
    /// 0 user, 1 root admin, 2 domain admin; used when no role is named.
    pub account_type: Option<i64>,
    pub firstname: String,
    pub lastname: String,
    pub email: Option<String>,
    pub timezone: Option<String>,
}

/// updateUser's changes; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub id: String,
    pub password: Option<String>,
    pub current_password: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
}

/// Filters of listAccounts and listUsers.
#[derive(Debug, Clone, Default)]
pub struct PeopleFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub domain: Option<String>,
    /// listUsers: the users of this account (name, in `domain` or the
    /// caller's domain).
    pub account: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// Filters of listRoles.
#[derive(Debug, Clone, Default)]
pub struct RoleFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub role_type: Option<String>,
    pub page: Option<(u64, u64)>,
}

/// One rule of a role: a command name or wildcard, allow or deny.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub rule: String,
    pub permission: String,
    pub description: String,
}

/// A role type as CloudStack spells it.
pub fn role_type(s: &str) -> SResult<String> {
    ["Admin", "DomainAdmin", "User"]
        .iter()
        .find(|t| t.eq_ignore_ascii_case(s))
        .map(|t| t.to_string())
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid value for parameter type: {s}; use Admin, DomainAdmin or User"
            ))
        })
}

/// Checks a rule: a command name with at most one `*`, and allow or deny.
pub fn check_rule(rule: &str, permission: &str) -> SResult<String> {
    let ok = !rule.is_empty()
        && rule.chars().all(|c| c.is_ascii_alphanumeric() || c == '*')
        && rule.matches('*').count() <= 1;
    if !ok {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter rule: {rule} is not a command name or a wildcard"
        )));
    }
    let p = permission.to_ascii_lowercase();
    if p != "allow" && p != "deny" {
        return Err(ServiceError::invalid(format!(
            "Invalid value for parameter permission: {permission}; use allow or deny"
        )));
    }
    Ok(p)
}

fn dup_role(name: &str) -> impl Fn(StoreError) -> ServiceError + '_ {
    move |e| match e {
        StoreError::Duplicate(..) => {
            ServiceError::invalid(format!("A role with name {name} already exists"))
        }
        e => e.into(),
    }
}

impl super::identity::Identity {
    pub async fn create_domain(
        &self,
        caller: &Caller,
        name: &str,
        parent: Option<&str>,
    ) -> SResult<Domain> {
        if name.contains('/') {
            return Err(ServiceError::invalid(
                "Invalid value for parameter name: a domain name cannot contain '/'",
            ));
        }
        let parent: Domain = match parent {
            Some(p) => self.by_uuid("parentdomainid", p).await?,
            None => caller.domain.clone(),
        };
        if !caller.is_root_admin() && !in_subtree(&parent.path, &caller.domain.path) {
            return Err(ServiceError::denied("Caller cannot create domains there"));
        }
        let d = Domain {
            id: self.store.new_id::<Domain>().await?,
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
        self.event(
            &mut tx,
            caller,
            "DOMAIN.CREATE",
            format!("Created domain {}", d.path),
            caller.account.id,
            d.id,
            Some((&d.uuid, "Domain", &d.name)),
        );
        self.store.commit(tx.ops).await.map_err(|e| match e {
            StoreError::Duplicate(..) => ServiceError::invalid(format!(
                "Domain with name {name} already exists for the parent"
            )),
            e => e.into(),
        })?;
        Ok(d)
    }

    /// The domains in the caller's subtree.
    pub async fn list_domains(
        &self,
        caller: &Caller,
        id: Option<&str>,
        name: Option<&str>,
    ) -> SResult<Vec<Domain>> {
        let all: Vec<Domain> = self.store.all(Query::new()).await?;
        Ok(all
            .into_iter()
            .filter(|d| d.removed.is_none() && in_subtree(&d.path, &caller.domain.path))
            .filter(|d| id.is_none_or(|i| i == d.uuid))
            .filter(|d| name.is_none_or(|n| n.eq_ignore_ascii_case(&d.name)))
            .collect())
    }

    /// An account's users (for display of an account already shown).
    pub async fn account_users(&self, account_id: i64) -> SResult<Vec<User>> {
        let users: Vec<User> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        Ok(users.into_iter().filter(|u| u.removed.is_none()).collect())
    }

    /// What an account holds, by CloudStack's resource types, for the
    /// account's `<type>total` fields (the UI's usage dashboard).
    pub async fn account_totals(&self, account_id: i64) -> SResult<AccountTotals> {
        // Summed from the records, so kept until one of their kinds changes:
        // a dashboard's repeated look does not reread an account's instances.
        let kinds = [
            Kind::Vm,
            Kind::Volume,
            Kind::Snapshot,
            Kind::Template,
            Kind::ServiceOffering,
        ];
        let mut t = self
            .cached(
                &kinds,
                format!("totals:{account_id}"),
                self.count_holdings(account_id),
            )
            .await?;
        t.gpu_limit = self.gpu_limit(account_id);
        Ok(t)
    }

    async fn count_holdings(&self, account_id: i64) -> SResult<AccountTotals> {
        let mut t = AccountTotals::default();
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::Account, account_id).and(Cond::NotIn(
                Col::State,
                vec!["Expunged".into(), "Destroyed".into(), "Error".into()],
            )))
            .await?;
        for vm in &vms {
            t.vms += 1;
            match vm.state {
                orrery_model::VmState::Running => t.running += 1,
                orrery_model::VmState::Stopped => t.stopped += 1,
                _ => {}
            }
            t.cpu += vm.cpu_number;
            t.memory_mb += vm.memory;
        }
        let volumes: Vec<Volume> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        for v in volumes
            .iter()
            .filter(|v| v.removed.is_none() && v.state != "Destroy" && v.state != "Expunged")
        {
            t.volumes += 1;
            t.primary_bytes += v.size.max(0);
        }
        let snapshots: Vec<Snapshot> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        t.snapshots = snapshots.iter().filter(|s| s.removed.is_none()).count() as i64;
        t.templates = self
            .store
            .count(
                Kind::Template,
                &Query::new()
                    .eq(Col::Account, account_id)
                    .and(Cond::Ne(Col::State, "Removed".into())),
            )
            .await? as i64;
        t.gpus = self.gpus_held(account_id, None).await?;
        Ok(t)
    }

    pub async fn create_account(&self, caller: &Caller, r: NewAccount) -> SResult<Account> {
        let domain: Domain = match &r.domain {
            Some(d) => self.by_uuid("domainid", d).await?,
            None => caller.domain.clone(),
        };
        if !caller.is_root_admin() && !in_subtree(&domain.path, &caller.domain.path) {
            return Err(ServiceError::denied(
                "Caller cannot create accounts in that domain",
            ));
        }
        let role: Role = match &r.role {
            Some(u) => self.by_uuid("roleid", u).await?,
            None => {
                let name = match r.account_type.unwrap_or(0) {
                    1 => "Root Admin",
                    2 => "Domain Admin",
                    _ => "User",
                };
                self.store
                    .first(Query::new().eq(Col::Ukey, name.to_lowercase()))
                    .await?
                    .ok_or_else(|| ServiceError::internal("default role missing"))?
            }
        };
        if role.role_type == "Admin" && !caller.is_root_admin() {
            return Err(ServiceError::denied(
                "Only a root admin can create admin accounts",
            ));
        }
        let account_type = match role.role_type.as_str() {
            "Admin" => ACCOUNT_ADMIN,
            "DomainAdmin" => ACCOUNT_DOMAIN_ADMIN,
            _ => ACCOUNT_USER,
        };
        let name = r.account.unwrap_or_else(|| r.username.clone());
        let t = now();
        let a = Account {
            id: self.store.new_id::<Account>().await?,
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
            id: self.store.new_id::<User>().await?,
            uuid: new_uuid(),
            version: 1,
            username: r.username.clone(),
            account_id: a.id,
            domain_id: domain.id,
            firstname: r.firstname,
            lastname: r.lastname,
            email: r.email,
            password: Some(hash_password(&r.password)),
            api_key: None,
            secret_key: None,
            state: "enabled".into(),
            timezone: r.timezone,
            created: t,
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&a).insert(&u);
        self.event(
            &mut tx,
            caller,
            "ACCOUNT.CREATE",
            format!("Created account {name}"),
            a.id,
            domain.id,
            Some((&a.uuid, "Account", &name)),
        );
        self.store.commit(tx.ops).await.map_err(|e| match e {
            StoreError::Duplicate(Kind::Account, _) => ServiceError::invalid(format!(
                "The account {name} already exists in domain {}",
                domain.path
            )),
            StoreError::Duplicate(..) => ServiceError::invalid(format!(
                "The user {} already exists in domain {}",
                r.username, domain.path
            )),
            e => e.into(),
        })?;
        Ok(a)
    }

    /// Conditions limiting accounts or users to what the caller may see:
    /// its own (users), or its domain subtree (domain admins).
    async fn people_scope(&self, caller: &Caller, own: Cond) -> SResult<Vec<Cond>> {
        if !caller.is_admin() {
            return Ok(vec![own]);
        }
        if !caller.is_root_admin() {
            return Ok(vec![Cond::In(
                Col::Domain,
                self.subtree_ids(caller.domain.id).await?,
            )]);
        }
        Ok(vec![])
    }

    pub async fn list_accounts(
        &self,
        caller: &Caller,
        f: &PeopleFilter,
    ) -> SResult<(Vec<Account>, u64)> {
        let mut q = Query::new();
        q.conds = self
            .people_scope(caller, Cond::Eq(Col::Id, caller.account.id.into()))
            .await?;
        q = common_filters(
            q.and(Cond::Ne(Col::State, "removed".into())),
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name],
        );
        if let Some(d) = &f.domain {
            let d: Domain = self.by_uuid("domainid", d).await?;
            q = q.eq(Col::Domain, d.id);
        }
        q.page = f.page;
        Ok(self.store.list::<Account>(&q).await?)
    }

    pub async fn list_users(&self, caller: &Caller, f: &PeopleFilter) -> SResult<(Vec<User>, u64)> {
        let mut q = Query::new();
        q.conds = self
            .people_scope(caller, Cond::Eq(Col::Account, caller.account.id.into()))
            .await?;
        q = q.and(Cond::Ne(Col::State, "removed".into()));
        if let Some(id) = &f.id {
            q = q.eq(Col::Uuid, id.as_str());
        }
        if let Some(n) = &f.name {
            q = q.and(Cond::EqNoCase(Col::Name, n.clone()));
        }
        if f.account.is_some() {
            let a = self
                .acting_account(caller, f.account.as_deref(), f.domain.as_deref())
                .await?;
            q = q.eq(Col::Account, a.id);
        }
        q.page = f.page;
        Ok(self.store.list::<User>(&q).await?)
    }

    /// The account disableAccount, enableAccount or deleteAccount acts on:
    /// by id, or by name (and domain). Never the caller's own nor the
    /// system accounts.
    pub async fn target_account(
        &self,
        caller: &Caller,
        id: Option<&str>,
        account: Option<&str>,
        domain: Option<&str>,
        command: &str,
    ) -> SResult<Account> {
        let a: Account = match id {
            Some(id) => self.by_uuid("id", id).await?,
            None => {
                if account.is_none() {
                    return Err(ServiceError::missing(command, "id"));
                }
                self.acting_account(caller, account, domain).await?
            }
        };
        let path = self.domain_path(a.domain_id).await?;
        if a.removed.is_some() || !caller.can_access(a.id, &path) {
            return Err(ServiceError::not_found("id", &a.uuid));
        }
        if a.id == caller.account.id || a.id <= 2 {
            return Err(ServiceError::invalid(
                "The caller's own account and the system accounts cannot be disabled or deleted",
            ));
        }
        Ok(a)
    }

    /// Sets an account's state (enabled, disabled, locked) with its event.
    pub async fn set_account_state(
        &self,
        caller: &Caller,
        mut a: Account,
        state: &str,
        event: &str,
    ) -> SResult<Account> {
        a.state = state.to_string();
        let mut tx = Tx::new();
        let (id, did, uuid, name) = (a.id, a.domain_id, a.uuid.clone(), a.name.clone());
        tx.update(&mut a);
        self.event(
            &mut tx,
            caller,
            event,
            format!("Account {name} is now {state}"),
            id,
            did,
            Some((&uuid, "Account", &name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(a)
    }

    /// A user whose keys the caller may read or renew: itself, or one it
    /// administers.
    pub async fn key_user(&self, caller: &Caller, id: &str) -> SResult<User> {
        let u: User = self.by_uuid("id", id).await?;
        let path = self.domain_path(u.domain_id).await?;
        let own = u.id == caller.user.id;
        if u.removed.is_some()
            || !(own || (caller.is_admin() && caller.can_access(u.account_id, &path)))
        {
            return Err(ServiceError::not_found("id", id));
        }
        // A domain admin, even of ROOT, never acts for a root admin.
        if !own && !caller.is_root_admin() {
            let acct: Option<Account> = self.load_cached(u.account_id).await?;
            if acct.is_some_and(|a| a.account_type == 1) {
                return Err(ServiceError::not_found("id", id));
            }
        }
        Ok(u)
    }

    /// updateUser: names, e-mail, time zone and the password. A password
    /// change needs the current password unless a root admin makes it, or
    /// a domain admin for another user.
    pub async fn update_user(&self, caller: &Caller, up: UserUpdate) -> SResult<User> {
        let mut u = self.key_user(caller, &up.id).await?;
        if let Some(p) = &up.password {
            if p.is_empty() || p.len() > 255 {
                return Err(ServiceError::invalid(
                    "Invalid value for parameter password: 1 to 255 characters",
                ));
            }
            let own = u.id == caller.user.id;
            let vouched = caller.is_root_admin() || (caller.is_admin() && !own);
            if !vouched {
                let current = up.current_password.as_deref().ok_or_else(|| {
                    ServiceError::invalid(
                        "Invalid value for parameter currentpassword: the current password is required to change the password",
                    )
                })?;
                let ok = u
                    .password
                    .as_deref()
                    .is_some_and(|h| identity::check_password(h, current));
                if !ok {
                    return Err(ServiceError::invalid(
                        "Invalid value for parameter currentpassword: it does not match the current password",
                    ));
                }
            }
            u.password = Some(identity::hash_password(p));
        }
        if let Some(x) = up.firstname {
            u.firstname = x;
        }
        if let Some(x) = up.lastname {
            u.lastname = x;
        }
        if let Some(x) = up.email {
            u.email = Some(x);
        }
        if let Some(x) = up.timezone {
            u.timezone = Some(x);
        }
        let mut tx = Tx::new();
        tx.update(&mut u);
        self.event(
            &mut tx,
            caller,
            "USER.UPDATE",
            format!("User {} updated", u.username),
            u.account_id,
            u.domain_id,
            Some((&u.uuid, "User", &u.username)),
        );
        self.store.commit(tx.ops).await?;
        Ok(u)
    }

    /// New API keys for a user.
    pub async fn register_keys(&self, caller: &Caller, id: &str) -> SResult<User> {
        let mut u = self.key_user(caller, id).await?;
        u.api_key = Some(random_key(64));
        u.secret_key = Some(random_key(64));
        let mut tx = Tx::new();
        tx.update(&mut u);
        self.store.commit(tx.ops).await?;
        Ok(u)
    }

    async fn role_rules(&self, role_id: i64) -> SResult<Vec<RolePermission>> {
        let mut rules: Vec<RolePermission> = self
            .store
            .all(Query::new().eq(Col::Parent, role_id))
            .await?;
        rules.sort_by_key(|r| (r.sort_order, r.id));
        Ok(rules)
    }

    async fn new_role(&self, name: &str, ty: String, description: &str) -> SResult<Role> {
        Ok(Role {
            id: self.store.new_id::<Role>().await?,
            uuid: new_uuid(),
            version: 1,
            name: name.to_string(),
            role_type: ty,
            description: description.to_string(),
            is_default: false,
            created: now(),
        })
    }

    async fn new_rule(&self, role: &Role, r: &RuleSpec, order: i64) -> SResult<RolePermission> {
        let permission = check_rule(&r.rule, &r.permission)?;
        Ok(RolePermission {
            id: self.store.new_id::<RolePermission>().await?,
            uuid: new_uuid(),
            version: 1,
            role_id: role.id,
            rule: r.rule.clone(),
            permission,
            description: r.description.clone(),
            sort_order: order,
            created: now(),
        })
    }

    /// A new role, optionally copying the rules of `base`.
    pub async fn create_role(
        &self,
        name: &str,
        ty: Option<&str>,
        base: Option<&str>,
        description: &str,
    ) -> SResult<Role> {
        let base: Option<Role> = match base {
            Some(u) => Some(self.by_uuid("roleid", u).await?),
            None => None,
        };
        let ty = match (ty, &base) {
            (Some(t), _) => role_type(t)?,
            (None, Some(b)) => b.role_type.clone(),
            (None, None) => return Err(ServiceError::missing("createRole", "type")),
        };
        let role = self.new_role(name, ty, description).await?;
        let mut tx = Tx::new();
        tx.insert(&role);
        if let Some(b) = base {
            for r in self.role_rules(b.id).await? {
                let spec = RuleSpec {
                    rule: r.rule,
                    permission: r.permission,
                    description: r.description,
                };
                tx.insert(&self.new_rule(&role, &spec, r.sort_order).await?);
            }
        }
        self.store.commit(tx.ops).await.map_err(dup_role(name))?;
        Ok(role)
    }

    /// A new role with the given rules, in order.
    pub async fn import_role(
        &self,
        name: &str,
        ty: &str,
        rules: &[RuleSpec],
        description: &str,
    ) -> SResult<Role> {
        let role = self.new_role(name, role_type(ty)?, description).await?;
        let mut tx = Tx::new();
        tx.insert(&role);
        for (i, r) in rules.iter().enumerate() {
            tx.insert(&self.new_rule(&role, r, i as i64).await?);
        }
        self.store.commit(tx.ops).await.map_err(dup_role(name))?;
        Ok(role)
    }

    pub async fn list_roles(&self, f: &RoleFilter) -> SResult<(Vec<Role>, u64)> {
        let mut q = common_filters(Query::new(), f.id.as_deref(), f.name.as_deref(), None, &[]);
        if let Some(t) = &f.role_type {
            q = q.and(Cond::EqNoCase(Col::State, t.clone()));
        }
        q.page = f.page;
        Ok(self.store.list::<Role>(&q).await?)
    }

    /// Deletes a role no account uses, with its rules.
    pub async fn delete_role(&self, uuid: &str) -> SResult<()> {
        let role: Role = self.by_uuid("id", uuid).await?;
        if role.is_default {
            return Err(ServiceError::invalid("Default roles cannot be deleted"));
        }
        let users = self
            .store
            .count(
                Kind::Account,
                &Query::new()
                    .eq(Col::Ref, role.id)
                    .and(Cond::Ne(Col::State, "removed".into())),
            )
            .await?;
        if users > 0 {
            return Err(ServiceError::in_use(format!(
                "Role {} is in use by {users} accounts",
                role.name
            )));
        }
        let mut tx = Tx::new();
        for r in self.role_rules(role.id).await? {
            tx.delete::<RolePermission>(r.id);
        }
        tx.delete::<Role>(role.id);
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Adds a rule in front of a role's others, so a specific deny added
    /// later overrides a broad allow.
    pub async fn create_role_permission(
        &self,
        role_uuid: &str,
        r: &RuleSpec,
    ) -> SResult<(Role, RolePermission)> {
        let role: Role = self.by_uuid("roleid", role_uuid).await?;
        let existing = self.role_rules(role.id).await?;
        let order = existing.iter().map(|r| r.sort_order).min().unwrap_or(0) - 1;
        let p = self.new_rule(&role, r, order).await?;
        let mut tx = Tx::new();
        tx.insert(&p);
        self.store.commit(tx.ops).await?;
        Ok((role, p))
    }

    /// The rules of one role, or of every role, in evaluation order.
    pub async fn list_role_permissions(
        &self,
        role_uuid: Option<&str>,
    ) -> SResult<Vec<(Role, Vec<RolePermission>)>> {
        let roles: Vec<Role> = match role_uuid {
            Some(u) => vec![self.by_uuid("roleid", u).await?],
            None => self.store.all(Query::new()).await?,
        };
        let mut out = Vec::new();
        for role in roles {
            let rules = self.role_rules(role.id).await?;
            out.push((role, rules));
        }
        Ok(out)
    }
}

impl Service {
    /// Queues the removal of an account and everything it owns.
    pub async fn queue_delete_account(
        self: &Arc<Self>,
        caller: &Caller,
        a: &Account,
    ) -> SResult<String> {
        let job = self.new_job(
            caller,
            NewJob {
                command: "deleteAccount",
                instance_type: Some("Account"),
                instance_uuid: Some(&a.uuid),
                work: Work::DeleteAccount { account_id: a.id },
            },
        );
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job.uuid)
    }
}

/// An account's holdings (see `Service::account_totals`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTotals {
    pub vms: i64,
    pub running: i64,
    pub stopped: i64,
    pub cpu: i64,
    pub memory_mb: i64,
    pub volumes: i64,
    pub primary_bytes: i64,
    pub snapshots: i64,
    pub templates: i64,
    pub gpus: i64,
    /// None: no limit.
    pub gpu_limit: Option<i64>,
}
