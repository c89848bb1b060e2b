//! Templates, ISOs and OS types: registration, visibility by template
//! filter, updates and removal. Who may see a template is decided here.

use super::*;

/// What registerTemplate / registerIso ask for, validated by the API layer's
/// decoding.
#[derive(Debug, Clone, Default)]
pub struct NewTemplate {
    pub name: String,
    pub display_text: String,
    pub url: String,
    pub format: String,
    pub iso: bool,
    pub hypervisor: String,
    pub checksum: Option<templates::Checksum>,
    pub os_type: Option<String>,
    /// A zone uuid; `None` (or "-1") for every zone.
    pub zone: Option<String>,
    pub account: Option<String>,
    pub domain: Option<String>,
    pub public: bool,
    pub featured: bool,
    pub password_enabled: bool,
    pub dynamically_scalable: bool,
    pub bootable: bool,
}

/// Which templates a list shows: CloudStack's `templatefilter` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateView {
    Featured,
    SelfOwned,
    SharedExecutable,
    Executable,
    Community,
    All,
}

impl std::str::FromStr for TemplateView {
    type Err = ServiceError;
    fn from_str(s: &str) -> SResult<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "featured" => TemplateView::Featured,
            "self" | "selfexecutable" => TemplateView::SelfOwned,
            "sharedexecutable" => TemplateView::SharedExecutable,
            "executable" => TemplateView::Executable,
            "community" => TemplateView::Community,
            "all" => TemplateView::All,
            other => {
                return Err(ServiceError::invalid(format!(
                    "Invalid value for parameter templatefilter: {other}"
                )))
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct TemplateFilter {
    pub iso: bool,
    pub view: TemplateView,
    pub id: Option<String>,
    pub ids: Vec<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub zone: Option<String>,
    pub hypervisor: Option<String>,
    pub ready_only: bool,
    pub page: Option<(u64, u64)>,
}

/// Changes to a template; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TemplateUpdate {
    pub name: Option<String>,
    pub display_text: Option<String>,
    pub os_type: Option<String>,
    pub password_enabled: Option<bool>,
    pub dynamically_scalable: Option<bool>,
    pub bootable: Option<bool>,
}

/// Filters of listOsTypes and listOsCategories.
#[derive(Debug, Clone, Default)]
pub struct OsFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub category: Option<String>,
    pub page: Option<(u64, u64)>,
}

impl super::offerings::Catalog {
    /// Records a template and starts its download.
    pub async fn register_template(
        self: &Arc<Self>,
        caller: &Caller,
        r: NewTemplate,
    ) -> SResult<Template> {
        self.check_template_url(caller, &r.url).await?;
        let os = match &r.os_type {
            Some(u) => self.by_uuid::<OsType>("ostypeid", u).await?,
            None => self
                .store
                .first(Query::new().eq(Col::Ukey, "other linux (64-bit)"))
                .await?
                .ok_or_else(|| ServiceError::missing("registerTemplate", "ostypeid"))?,
        };
        let zone = match r.zone.as_deref() {
            Some("-1") | None => None,
            Some(z) => Some(self.by_uuid::<Zone>("zoneid", z).await?.id),
        };
        let owner = self
            .acting_account(caller, r.account.as_deref(), r.domain.as_deref())
            .await?;
        let t = Template {
            id: self.store.new_id::<Template>().await?,
            uuid: new_uuid(),
            version: 1,
            name: r.name,
            display_text: r.display_text,
            format: r.format,
            is_iso: r.iso,
            hypervisor: r.hypervisor,
            os_type_id: os.id,
            zone_id: zone,
            account_id: owner.id,
            domain_id: owner.domain_id,
            is_public: r.public,
            // Featuring is an admin's choice.
            is_featured: r.featured && caller.is_admin(),
            is_ready: false,
            status: "Downloading".into(),
            size: 0,
            physical_size: 0,
            checksum: r.checksum.as_ref().map(|c| c.to_string()),
            local_source: caller.is_root_admin() && !r.url.to_ascii_lowercase().starts_with("http"),
            url: r.url,
            path: None,
            template_type: "USER".into(),
            password_enabled: r.password_enabled,
            dynamically_scalable: r.dynamically_scalable,
            requires_hvm: true,
            bootable: r.bootable,
            extractable: true,
            details: Default::default(),
            userdata_id: None,
            userdata_policy: None,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&t);
        self.event(
            &mut tx,
            caller,
            if t.is_iso {
                "ISO.CREATE"
            } else {
                "TEMPLATE.CREATE"
            },
            format!("Registered {}", t.name),
            owner.id,
            owner.domain_id,
            Some((&t.uuid, "Template", &t.name)),
        );
        self.store.commit(tx.ops).await?;
        self.spawn_template_download(t.id);
        Ok(t)
    }

    /// The templates (or ISOs) a filter shows the caller, and the total.
    pub async fn list_templates(
        &self,
        caller: &Caller,
        f: &TemplateFilter,
    ) -> SResult<(Vec<Template>, u64)> {
        let mut q = common_filters(
            Query::new()
                .eq(Col::TemplateKind, if f.iso { "ISO" } else { "TEMPLATE" })
                .and(Cond::Ne(Col::State, "Removed".into())),
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name, Col::Keyword],
        );
        if !f.ids.is_empty() {
            q = q.and(Cond::In(
                Col::Uuid,
                f.ids.iter().cloned().map(Val::S).collect(),
            ));
        }
        if let Some(z) = &f.zone {
            let z: Zone = self.by_uuid("zoneid", z).await?;
            q = q.and(Cond::In(Col::Zone, vec![z.id.into()]));
        }
        if f.ready_only {
            q = q.eq(Col::State, "Ready");
        }
        let all: Vec<Template> = self.store.all(q).await?;
        let me = caller.account.id;
        let mut visible = Vec::new();
        for t in all {
            let path = self.domain_path(t.domain_id).await?;
            let mine = t.account_id == me;
            let shared = t.is_public || caller.can_access(t.account_id, &path);
            let keep = match f.view {
                TemplateView::Featured => t.is_featured,
                TemplateView::SelfOwned => mine,
                TemplateView::SharedExecutable => !mine && shared && !t.is_public,
                TemplateView::Community => t.is_public && !t.is_featured,
                TemplateView::All => caller.is_root_admin() || shared,
                TemplateView::Executable => shared,
            };
            let hv = f
                .hypervisor
                .as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&t.hypervisor));
            if keep && hv {
                visible.push(t);
            }
        }
        let total = visible.len() as u64;
        let page = match f.page {
            Some((o, l)) => visible
                .into_iter()
                .skip(o as usize)
                .take(l as usize)
                .collect(),
            None => visible,
        };
        Ok((page, total))
    }

    pub async fn update_template(
        &self,
        caller: &Caller,
        uuid: &str,
        u: TemplateUpdate,
    ) -> SResult<Template> {
        let mut t: Template = self.owned(caller, "id", uuid).await?;
        if let Some(n) = u.name {
            t.name = n;
        }
        if let Some(n) = u.display_text {
            t.display_text = n;
        }
        if let Some(o) = &u.os_type {
            t.os_type_id = self.by_uuid::<OsType>("ostypeid", o).await?.id;
        }
        if let Some(b) = u.password_enabled {
            t.password_enabled = b;
        }
        if let Some(b) = u.dynamically_scalable {
            t.dynamically_scalable = b;
        }
        if let Some(b) = u.bootable {
            t.bootable = b;
        }
        let mut tx = Tx::new();
        tx.update(&mut t);
        self.store.commit(tx.ops).await?;
        Ok(t)
    }

    /// Removes a template the caller owns (refused while instances use it,
    /// unless forced) and its file; returns the job that reports it.
    pub(in crate::service) async fn remove_template(
        &self,
        caller: &Caller,
        uuid: &str,
        forced: bool,
    ) -> SResult<String> {
        let mut t: Template = self.owned(caller, "id", uuid).await?;
        let in_use = self
            .store
            .count(
                crate::store::Kind::Vm,
                &Query::new()
                    .eq(Col::Ref, t.id)
                    .and(Cond::NotIn(Col::State, vec!["Expunged".into()])),
            )
            .await?;
        if in_use > 0 && !forced {
            return Err(ServiceError::in_use(format!(
                "Template {} is used by {in_use} instances",
                t.uuid
            )));
        }
        t.removed = Some(now());
        let mut tx = Tx::new();
        let kind = if t.format.eq_ignore_ascii_case("ISO") {
            "ISO"
        } else {
            "Template"
        };
        if let Some(icon) = self.icon_id(kind, &t.uuid).await? {
            tx.delete::<ResourceIcon>(icon);
        }
        tx.update(&mut t);
        let job = self.new_job(
            caller,
            jobs::NewJob {
                command: "deleteTemplate",
                instance_type: Some("Template"),
                instance_uuid: Some(&t.uuid),
                work: jobs::Work::Done {
                    result: jobs::JobOutput::Success,
                },
            },
        );
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        if let Some(p) = &t.path {
            let _ = tokio::fs::remove_file(self.data_dir.join("secondary").join(p)).await;
        }
        Ok(job.uuid)
    }

    /// OS types (global records, visible to all).
    pub async fn list_os_types(&self, f: &OsFilter) -> SResult<(Vec<OsType>, u64)> {
        let mut q = common_filters(
            Query::new(),
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name],
        );
        if let Some(c) = &f.category {
            let c: OsCategory = self.by_uuid("oscategoryid", c).await?;
            q = q.eq(Col::Parent, c.id);
        }
        q.page = f.page;
        Ok(self.store.list::<OsType>(&q).await?)
    }

    /// OS categories (global records, visible to all).
    pub async fn list_os_categories(&self, f: &OsFilter) -> SResult<(Vec<OsCategory>, u64)> {
        let mut q = common_filters(
            Query::new(),
            f.id.as_deref(),
            f.name.as_deref(),
            f.keyword.as_deref(),
            &[Col::Name, Col::Keyword],
        );
        q.page = f.page;
        Ok(self.store.list::<OsCategory>(&q).await?)
    }
}

impl Service {
    /// Removes a template the caller owns (see `Catalog::remove_template`)
    /// and starts the job that reports it.
    pub async fn delete_template(
        self: &Arc<Self>,
        caller: &Caller,
        uuid: &str,
        forced: bool,
    ) -> SResult<String> {
        let job = self.catalog.remove_template(caller, uuid, forced).await?;
        self.spawn_job(job.clone());
        Ok(job)
    }
}
