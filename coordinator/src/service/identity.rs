//! Callers, credentials, sessions and dynamic roles.

use super::*;
use crate::store::Kind;
use base64::Engine;
use rand::RngCore;

const PBKDF2_ROUNDS: u32 = 10_000;

pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, PBKDF2_ROUNDS, &mut out);
    let b = base64::engine::general_purpose::STANDARD_NO_PAD;
    format!(
        "pbkdf2-sha256${PBKDF2_ROUNDS}${}${}",
        b.encode(salt),
        b.encode(out)
    )
}

pub fn check_password(stored: &str, password: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    if parts.len() != 4 || parts[0] != "pbkdf2-sha256" {
        return false;
    }
    let b = base64::engine::general_purpose::STANDARD_NO_PAD;
    let (Ok(rounds), Ok(salt), Ok(want)) = (
        parts[1].parse::<u32>(),
        b.decode(parts[2]),
        b.decode(parts[3]),
    ) else {
        return false;
    };
    let mut out = vec![0u8; want.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, rounds, &mut out);
    // Constant-time comparison.
    out.len() == want.len() && out.iter().zip(&want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// Random key material: 64 bytes, base64url without padding, like CloudStack's keys.
pub fn random_key(bytes: usize) -> String {
    let mut k = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut k);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)
}

/// Whether a role rule (`list*`, `*`, or a command name) matches a command.
pub fn rule_matches(rule: &str, command: &str) -> bool {
    let r = rule.to_lowercase();
    let c = command.to_lowercase();
    match r.find('*') {
        None => r == c,
        Some(i) => {
            let (pre, post) = (&r[..i], &r[i + 1..]);
            c.len() >= pre.len() + post.len() && c.starts_with(pre) && c.ends_with(post)
        }
    }
}

/// The kinds a caller and its rules are made of.
const IDENTITY: &[Kind] = &[
    Kind::User,
    Kind::Account,
    Kind::Domain,
    Kind::Role,
    Kind::RolePermission,
];

/// The first matching rule decides; no match denies. Pure.
pub fn rules_allow(rules: &[RolePermission], command: &str) -> bool {
    let mut sorted: Vec<&RolePermission> = rules.iter().collect();
    sorted.sort_by_key(|r| (r.sort_order, r.id));
    sorted
        .into_iter()
        .find(|r| rule_matches(&r.rule, command))
        .map(|r| r.permission == "allow")
        .unwrap_or(false)
}

/// The identity part of the service: who a request comes from (keys,
/// sessions, passwords with their throttle) and what its role allows.
pub struct Identity {
    ctx: Arc<Context>,
    /// Failed password logins per user and source.
    login_throttle: parking_lot::Mutex<LoginThrottle>,
}

super::context::part_of_service!(Identity);

impl Identity {
    pub(in crate::service) fn new(ctx: Arc<Context>) -> Self {
        Identity {
            ctx,
            login_throttle: parking_lot::Mutex::new(LoginThrottle::default()),
        }
    }

    pub async fn caller_for_user(&self, user_id: i64) -> SResult<Caller> {
        let user: User = self
            .store
            .load(user_id)
            .await?
            .ok_or_else(|| ServiceError::internal("user missing"))?;
        self.caller_from_user(user).await
    }

    pub async fn caller_from_user(&self, user: User) -> SResult<Caller> {
        let account: Account = self
            .store
            .load(user.account_id)
            .await?
            .ok_or_else(|| ServiceError::internal("account missing"))?;
        let domain: Domain = self
            .store
            .load(account.domain_id)
            .await?
            .ok_or_else(|| ServiceError::internal("domain missing"))?;
        let role: Role = self
            .store
            .load(account.role_id)
            .await?
            .ok_or_else(|| ServiceError::internal("role missing"))?;
        Ok(Caller {
            user,
            account,
            domain,
            role,
        })
    }

    /// The system user (id 1) acts for background work.
    pub async fn system_caller(&self) -> SResult<Caller> {
        self.caller_for_user(1).await
    }

    /// The enabled user owning an API key, with an enabled account. Every
    /// signed request needs one and they change rarely, so they are cached
    /// until any identity record changes.
    pub async fn caller_by_api_key(&self, key: &str) -> SResult<Option<Caller>> {
        self.cached(
            IDENTITY,
            format!("caller:{key}"),
            self.load_caller_by_api_key(key),
        )
        .await
    }

    async fn load_caller_by_api_key(&self, key: &str) -> SResult<Option<Caller>> {
        let Some(user) = self
            .store
            .first::<User>(Query::new().eq(Col::ApiKey, key))
            .await?
        else {
            return Ok(None);
        };
        if user.removed.is_some() || user.state != "enabled" {
            return Ok(None);
        }
        let c = self.caller_from_user(user).await?;
        if c.account.state != "enabled" || c.account.removed.is_some() {
            return Ok(None);
        }
        Ok(Some(c))
    }

    /// Checks a password login. Failures are counted per user and source
    /// address; past `login.failures.max` within the lockout window further
    /// attempts fail without being checked, right password or not, until
    /// `login.failures.lockout` seconds have passed.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        domain_path: &str,
        source: std::net::IpAddr,
    ) -> SResult<Option<(Caller, Session)>> {
        let key = (
            normalise_domain_path(domain_path).to_lowercase(),
            username.to_lowercase(),
            source,
        );
        let max = self.setting_i64("login.failures.max").max(1) as u32;
        let lockout = self.setting_i64("login.failures.lockout").max(1);
        if self.login_throttle.lock().locked(&key, now()) {
            tracing::warn!(user = username, %source, "login refused: too many failures");
            return Ok(None);
        }
        let r = self.check_login(username, password, domain_path).await?;
        let mut t = self.login_throttle.lock();
        match &r {
            Some(_) => t.succeeded(&key),
            None => t.failed(key, now(), max, lockout),
        }
        Ok(r)
    }

    async fn check_login(
        &self,
        username: &str,
        password: &str,
        domain_path: &str,
    ) -> SResult<Option<(Caller, Session)>> {
        let domain_path = normalise_domain_path(domain_path);
        let Some(domain) = self
            .store
            .first::<Domain>(Query::new().eq(Col::Ukey, domain_path.to_lowercase()))
            .await?
        else {
            return Ok(None);
        };
        let Some(user) = self
            .store
            .first::<User>(Query::new().eq(
                Col::Ukey,
                format!("{}/{}", domain.id, username.to_lowercase()),
            ))
            .await?
        else {
            return Ok(None);
        };
        let ok = user
            .password
            .as_deref()
            .map(|h| check_password(h, password))
            .unwrap_or(false);
        if !ok || user.state != "enabled" {
            return Ok(None);
        }
        let caller = self.caller_from_user(user).await?;
        if caller.account.state != "enabled" {
            return Ok(None);
        }
        let timeout = self.setting_i64("session.timeout");
        let s = Session {
            id: 0,
            uuid: random_key(20),
            version: 0,
            user_id: caller.user.id,
            expires: now() + timeout,
            created: now(),
        };
        let mut tx = Tx::new();
        tx.insert(&s);
        self.store.commit(tx.ops).await?;
        Ok(Some((caller, s)))
    }

    pub async fn caller_by_session(&self, key: &str) -> SResult<Option<Caller>> {
        let Some(mut s) = self.store.load_uuid::<Session>(key).await? else {
            return Ok(None);
        };
        if s.expires < now() {
            return Ok(None);
        }
        let c = self.caller_for_user(s.user_id).await?;
        if c.user.state != "enabled" || c.account.state != "enabled" || c.user.removed.is_some() {
            return Ok(None);
        }
        // Sliding expiry, written at most once a minute.
        let timeout = self.setting_i64("session.timeout");
        if s.expires - now() < timeout - 60 {
            s.expires = now() + timeout;
            let mut tx = Tx::new();
            tx.update(&mut s);
            let _ = self.store.commit(tx.ops).await;
        }
        Ok(Some(c))
    }

    pub async fn logout(&self, key: &str) -> SResult<()> {
        if let Some(s) = self.store.load_uuid::<Session>(key).await? {
            let mut tx = Tx::new();
            tx.delete::<Session>(s.id);
            self.store.commit(tx.ops).await?;
        }
        Ok(())
    }

    /// Whether the caller's role rules allow a command.
    pub async fn role_allows(&self, caller: &Caller, command: &str) -> SResult<bool> {
        let role = caller.role.id;
        let rules: Arc<Vec<RolePermission>> = self
            .cached(IDENTITY, format!("rules:{role}"), async {
                Ok(Arc::new(
                    self.store.all(Query::new().eq(Col::Parent, role)).await?,
                ))
            })
            .await?;
        Ok(rules_allow(&rules, command))
    }
}

impl Service {
    /// Deletes an account: its instances are expunged whatever their delete
    /// protection (the specification says so for domain/project removal), then
    /// its users and the account itself are removed.
    pub(crate) async fn exec_delete_account(
        &self,
        caller: &Caller,
        account_id: i64,
    ) -> SResult<()> {
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        for vm in vms.into_iter().filter(|v| v.removed.is_none()) {
            if vm.state.is_transitional() && vm.state != orrery_model::VmState::Expunging {
                // Let a running operation settle before removing the record.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            self.exec_expunge(caller, vm.id).await?;
        }
        // Its volume snapshots (their copies in secondary storage) and
        // snapshot policies go with it.
        let snaps: Vec<Snapshot> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        for s in snaps.into_iter().filter(|s| s.removed.is_none()) {
            self.destroy_snapshot(s, "Deleted snapshot with its account")
                .await?;
        }
        let policies: Vec<SnapshotPolicy> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        if !policies.is_empty() {
            let mut tx = Tx::new();
            for p in &policies {
                tx.delete::<SnapshotPolicy>(p.id);
            }
            self.store.commit(tx.ops).await?;
        }
        let t = now();
        let users: Vec<User> = self
            .store
            .all(Query::new().eq(Col::Account, account_id))
            .await?;
        let mut tx = Tx::new();
        for mut u in users {
            u.removed = Some(t);
            u.state = "disabled".into();
            u.api_key = None;
            tx.update(&mut u);
        }
        let mut a: Account = self
            .store
            .load(account_id)
            .await?
            .ok_or_else(|| ServiceError::internal("account missing"))?;
        a.removed = Some(t);
        let (aid, did, uuid, name) = (a.id, a.domain_id, a.uuid.clone(), a.name.clone());
        if let Some(icon) = self.icon_id("Account", &a.uuid).await? {
            tx.delete::<ResourceIcon>(icon);
        }
        tx.update(&mut a);
        self.event(
            &mut tx,
            caller,
            "ACCOUNT.DELETE",
            format!("Deleted account {name}"),
            aid,
            did,
            Some((&uuid, "Account", &name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }
}

/// `/`, `ROOT`, `/child`, `ROOT/child` -> `ROOT`, `ROOT/child`.
pub fn normalise_domain_path(p: &str) -> String {
    let t = p.trim().trim_matches('/');
    if t.is_empty() || t.eq_ignore_ascii_case("root") {
        return "ROOT".into();
    }
    if t.len() > 5 && t[..5].eq_ignore_ascii_case("root/") {
        return format!("ROOT/{}", &t[5..]);
    }
    format!("ROOT/{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("s3cret");
        assert!(check_password(&h, "s3cret"));
        assert!(!check_password(&h, "s3cret2"));
        assert!(!check_password("garbage", "x"));
    }

    #[test]
    fn rules() {
        let r = |rule: &str, perm: &str, order: i64| RolePermission {
            rule: rule.into(),
            permission: perm.into(),
            sort_order: order,
            ..Default::default()
        };
        let rules = vec![
            r("expungeVirtualMachine", "deny", 0),
            r("list*", "allow", 1),
            r("*", "allow", 2),
        ];
        assert!(!rules_allow(&rules, "expungeVirtualMachine"));
        assert!(rules_allow(&rules, "listZones"));
        assert!(rules_allow(&rules, "deployVirtualMachine"));
        assert!(!rules_allow(&rules[..1], "listZones"));
        assert!(rule_matches("list*", "LISTZONES"));
        assert!(!rule_matches("list*s", "listZone"));
    }

    #[test]
    fn domain_paths() {
        assert_eq!(normalise_domain_path("/"), "ROOT");
        assert_eq!(normalise_domain_path("ROOT/a"), "ROOT/a");
        assert_eq!(normalise_domain_path("/a/b"), "ROOT/a/b");
    }
}

/// (domain path, user name, source address), all as the attempt gave them.
pub type LoginKey = (String, String, std::net::IpAddr);

/// Failed logins per user and source. Pure bookkeeping over given times, so
/// the rules are tested without waiting.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: HashMap<LoginKey, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the count started; failures older than the lockout window are
    /// forgotten.
    since: i64,
    locked_until: Option<i64>,
}

/// Entries kept at most; beyond it, expired ones are dropped first, so a
/// flood of made-up names cannot grow memory without bound.
const THROTTLE_ENTRIES: usize = 100_000;

impl LoginThrottle {
    pub fn locked(&self, key: &LoginKey, now: i64) -> bool {
        self.entries
            .get(key)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| now < until)
    }

    pub fn failed(&mut self, key: LoginKey, now: i64, max: u32, lockout: i64) {
        if self.entries.len() >= THROTTLE_ENTRIES && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, f| f.locked_until.is_some_and(|u| now < u) || now - f.since < lockout);
            if self.entries.len() >= THROTTLE_ENTRIES {
                // Still full of live entries: forget the oldest half.
                let mut since: Vec<i64> = self.entries.values().map(|f| f.since).collect();
                since.sort_unstable();
                let cut = since[since.len() / 2];
                self.entries.retain(|_, f| f.since > cut);
            }
        }
        let f = self.entries.entry(key).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if f.locked_until.is_some_and(|u| now >= u) || now - f.since >= lockout {
            *f = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= max {
            f.locked_until = Some(now + lockout);
        }
    }

    pub fn succeeded(&mut self, key: &LoginKey) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    fn key(user: &str, ip: &str) -> LoginKey {
        ("/".into(), user.into(), ip.parse().unwrap())
    }

    #[test]
    fn locks_after_max_failures_until_the_lockout_ends() {
        let mut t = LoginThrottle::default();
        let k = key("alice", "10.0.0.1");
        for i in 0..4 {
            t.failed(k.clone(), 100 + i, 5, 60);
            assert!(!t.locked(&k, 100 + i));
        }
        t.failed(k.clone(), 104, 5, 60);
        assert!(t.locked(&k, 104));
        assert!(t.locked(&k, 163));
        assert!(!t.locked(&k, 164));
        // Another source or another user is not affected.
        assert!(!t.locked(&key("alice", "10.0.0.2"), 110));
        assert!(!t.locked(&key("bob", "10.0.0.1"), 110));
        // After the lockout the count starts again.
        t.failed(k.clone(), 170, 5, 60);
        assert!(!t.locked(&k, 170));
    }

    #[test]
    fn success_clears_and_old_failures_expire() {
        let mut t = LoginThrottle::default();
        let k = key("alice", "10.0.0.1");
        for i in 0..4 {
            t.failed(k.clone(), i, 5, 60);
        }
        t.succeeded(&k);
        t.failed(k.clone(), 5, 5, 60);
        assert!(!t.locked(&k, 5));
        // Four failures, then a pause longer than the window: no lock.
        let mut t = LoginThrottle::default();
        for i in 0..4 {
            t.failed(k.clone(), i, 5, 60);
        }
        t.failed(k.clone(), 100, 5, 60);
        assert!(!t.locked(&k, 100));
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = LoginThrottle::default();
        for i in 0..(THROTTLE_ENTRIES as u32 + 10) {
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            t.failed(("/".into(), "x".into(), ip), 0, 5, 60);
        }
        assert!(t.entries.len() <= THROTTLE_ENTRIES);
    }
}
