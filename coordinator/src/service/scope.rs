//! Whose resources a request is about: one place that turns `account`,
//! `domainid`, `listall`, `isrecursive` and the caller's role into the
//! conditions every owned-record query carries. List methods take a
//! [`ListScope`] and cannot run without applying it.

use super::*;

/// The scope a list request asked for, as decoded from its parameters.
#[derive(Debug, Clone, Default)]
pub struct ListScope {
    /// `account`: an account name (with `domain`, or in the caller's domain).
    pub account: Option<String>,
    /// `domainid`: a domain uuid.
    pub domain: Option<String>,
    /// `listall`: everything the caller administers, not only its own.
    pub listall: bool,
    /// `isrecursive`: the domain's subdomains too.
    pub recursive: bool,
    /// The request names one resource by id: an admin sees it wherever it is
    /// within its scope, as if it had asked for listall (CloudStack's rule).
    pub by_id: bool,
}

impl Context {
    /// The start of a list query for an account's named records (affinity
    /// groups, key pairs): the caller's scope, live records, and the record
    /// `id` names, `name` exactly (case as `name_nocase` says) and `keyword`
    /// within names.
    pub(crate) async fn named_list_query<E: Entity + 'static>(
        &self,
        caller: &Caller,
        scope: &ListScope,
        id: Option<&str>,
        name: Option<(&str, bool)>,
        keyword: Option<&str>,
    ) -> SResult<Query> {
        let mut q = Query::new();
        q.conds = self.scope(caller, scope).await?;
        q = q.and(Cond::Ne(Col::State, "Removed".into()));
        if let Some(id) = id {
            let e: E = self.by_uuid("id", id).await?;
            q = q.eq(Col::Id, e.id());
        }
        match name {
            Some((n, true)) => q = q.and(Cond::EqNoCase(Col::Name, n.to_string())),
            Some((n, false)) => q = q.eq(Col::Name, n.to_string()),
            None => {}
        }
        if let Some(k) = keyword {
            q = q.and(Cond::Contains(vec![Col::Name], k.to_string()));
        }
        Ok(q)
    }

    /// The account a command acts for: the caller's own, or `account` (in
    /// `domain`, or the caller's domain) when an admin names one it
    /// administers. A user may name only itself.
    pub async fn acting_account(
        &self,
        caller: &Caller,
        account: Option<&str>,
        domain: Option<&str>,
    ) -> SResult<Account> {
        let Some(name) = account else {
            return Ok(caller.account.clone());
        };
        let domain: Domain = match domain {
            Some(d) => self.by_uuid("domainid", d).await?,
            None => caller.domain.clone(),
        };
        if !caller.is_admin() && name != caller.account.name {
            return Err(ServiceError::denied(format!(
                "Caller is not allowed to act for account {name}"
            )));
        }
        let acct: Option<Account> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", domain.id, name.to_lowercase())))
            .await?;
        let acct = acct.ok_or_else(|| {
            ServiceError::invalid(format!(
                "Unable to find account {name} in domain {}",
                domain.uuid
            ))
        })?;
        if !caller.can_access(acct.id, &domain.path) {
            return Err(ServiceError::denied(format!(
                "Caller is not allowed to act for account {name}"
            )));
        }
        Ok(acct)
    }

    /// The conditions restricting a query of owned records to `scope` as the
    /// caller may see it.
    pub(crate) async fn scope(&self, caller: &Caller, scope: &ListScope) -> SResult<Vec<Cond>> {
        let account = match &scope.account {
            Some(name) => {
                let a = self
                    .acting_account(caller, Some(name), scope.domain.as_deref())
                    .await?;
                Some((a.id, a.domain_id))
            }
            None => None,
        };
        let domain = match &scope.domain {
            Some(d) => {
                let dom: Domain = self.by_uuid("domainid", d).await?;
                if !caller.is_root_admin() && !in_subtree(&dom.path, &caller.domain.path) {
                    return Err(ServiceError::denied("Caller has no access to the domain"));
                }
                Some(dom.id)
            }
            None => None,
        };
        self.scope_conds(
            caller,
            scope.listall || scope.by_id,
            account,
            domain,
            scope.recursive,
        )
        .await
    }

    /// Checks that a scope is one the caller may ask for (lists with
    /// nothing to show yet still refuse a scope they may not see).
    pub async fn check_scope(&self, caller: &Caller, scope: &ListScope) -> SResult<()> {
        self.scope(caller, scope).await.map(drop)
    }

    /// A domain's path by its uuid, for login by `domainid`.
    pub async fn domain_path_by_uuid(&self, uuid: &str) -> Option<String> {
        self.store
            .load_uuid::<Domain>(uuid)
            .await
            .ok()
            .flatten()
            .map(|d| d.path)
    }
}
