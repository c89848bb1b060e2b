//! Instance details ("settings"): which ones a user may see and change
//! (`user.vm.denied.details` hidden, `user.vm.readonly.details` shown but
//! fixed; admins see and change all), and the names and values
//! `listDetailOptions` offers, from what the hosts report.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// Details only a root admin may set.
const ROOT_ONLY: &[&str] = &["guest.cpu.mode", "guest.cpu.model"];

/// Pure: a comma-separated setting as names.
pub fn names(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn listed(list: &[String], key: &str) -> bool {
    list.iter().any(|d| d.eq_ignore_ascii_case(key))
}

/// Pure: the details a caller sees.
pub fn visible(
    details: &BTreeMap<String, String>,
    denied: &[String],
    admin: bool,
) -> BTreeMap<String, String> {
    details
        .iter()
        .filter(|(k, _)| admin || !listed(denied, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Pure: refuses a user's change to a hidden or read-only detail, naming it.
pub fn check_change<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    denied: &[String],
    readonly: &[String],
    admin: bool,
) -> Result<(), String> {
    if admin {
        return Ok(());
    }
    for k in keys {
        if listed(denied, k) || listed(readonly, k) {
            return Err(format!(
                "Invalid value for parameter details: {k} is a restricted setting; only an administrator can add or change it"
            ));
        }
    }
    Ok(())
}

/// Pure: after `cleanupdetails` by a user, the hidden and read-only details
/// stay (the user could neither see nor change them).
pub fn kept_on_cleanup(
    details: &BTreeMap<String, String>,
    denied: &[String],
    readonly: &[String],
    admin: bool,
) -> BTreeMap<String, String> {
    if admin {
        return BTreeMap::new();
    }
    details
        .iter()
        .filter(|(k, _)| listed(denied, k) || listed(readonly, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Pure: the options for instances on hosts with these facts (machine types
/// and CPU models from the hosts, device models the agent renders).
pub fn vm_options(host_facts: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut machines = BTreeSet::new();
    let mut cpu_models = BTreeSet::new();
    for f in host_facts {
        for m in f["machinetypes"].as_array().into_iter().flatten() {
            if let Some(m) = m.as_str() {
                machines.insert(m.to_string());
            }
        }
        if let Some(c) = f["cpumodel"].as_str().filter(|c| !c.is_empty()) {
            cpu_models.insert(c.to_string());
        }
    }
    let mut o = BTreeMap::new();
    o.insert(
        "rootDiskController".into(),
        strs(&["virtio", "sata", "ide"]),
    );
    o.insert(
        "dataDiskController".into(),
        strs(&["virtio", "sata", "ide"]),
    );
    o.insert(
        "nicAdapter".into(),
        strs(&["virtio", "e1000", "e1000e", "rtl8139"]),
    );
    o.insert(
        "video.hardware".into(),
        strs(&["vga", "virtio", "cirrus", "qxl", "bochs"]),
    );
    o.insert(
        "kvm.guest.os.machine.type".into(),
        machines.into_iter().collect(),
    );
    let mut cpus = vec!["host-model".to_string(), "host-passthrough".to_string()];
    cpus.extend(cpu_models);
    o.insert(
        "guest.cpu.mode".into(),
        strs(&["custom", "host-model", "host-passthrough"]),
    );
    o.insert("guest.cpu.model".into(), cpus);
    o.insert("UEFI".into(), strs(&["LEGACY", "SECURE"]));
    o.insert("tpmversion".into(), strs(&["2.0", "1.2"]));
    o.insert("tpmmodel".into(), strs(&["tpm-tis", "tpm-crb"]));
    o.insert("configdrive".into(), strs(&["true", "false"]));
    // Free values (numbers, sizes): offered by name only.
    for k in [
        "cpu.corespersocket",
        "rootdisksize",
        "cpuOvercommitRatio",
        "memoryOvercommitRatio",
    ] {
        o.insert(k.into(), Vec::new());
    }
    o
}

/// Pure: refuses a detail whose value is not one the hosts accept, naming
/// it (checked when set, rather than failing the next start on a host).
/// `tpmversion` is not checked: an unknown one means the default, 2.0.
pub fn check_values(details: &BTreeMap<String, String>) -> Result<(), String> {
    let fixed = vm_options(&[]);
    for (k, v) in details {
        let Some((name, allowed)) = fixed
            .iter()
            .find(|(n, vals)| n.eq_ignore_ascii_case(k) && !vals.is_empty())
        else {
            continue;
        };
        if matches!(
            name.as_str(),
            "tpmversion" | "guest.cpu.model" | "kvm.guest.os.machine.type"
        ) {
            continue;
        }
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(v.trim())) {
            return Err(format!(
                "Invalid value for parameter details: {k}={v}; expected one of {}",
                allowed.join(", ")
            ));
        }
    }
    let get = |key: &str| {
        details
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if get("tpmversion").as_deref() == Some("1.2") && get("tpmmodel").as_deref() == Some("tpm-crb")
    {
        return Err(
            "Invalid value for parameter details: tpmversion=1.2 is not supported with tpmmodel=tpm-crb".into(),
        );
    }
    Ok(())
}

impl Service {
    fn detail_lists(&self) -> (Vec<String>, Vec<String>) {
        (
            names(&self.setting("user.vm.denied.details", &[])),
            names(&self.setting("user.vm.readonly.details", &[])),
        )
    }

    /// Root and domain admins see and change every detail.
    fn details_admin(caller: &Caller) -> bool {
        caller.is_root_admin() || caller.is_domain_admin()
    }

    /// The details of an instance as the caller may see them.
    pub fn visible_details(
        &self,
        caller: &Caller,
        details: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        visible(details, &self.detail_lists().0, Self::details_admin(caller))
    }

    /// Refuses a change the caller may not make to an instance's details.
    pub(crate) fn check_detail_change(&self, caller: &Caller, keys: &[String]) -> SResult<()> {
        self.check_root_only_details(caller, keys)?;
        let (denied, readonly) = self.detail_lists();
        check_change(keys, &denied, &readonly, Self::details_admin(caller))
            .map_err(ServiceError::invalid)
    }

    /// The guest CPU model and mode are the root admin's (as the seed says),
    /// at deploy as at update.
    pub(crate) fn check_root_only_details(&self, caller: &Caller, keys: &[String]) -> SResult<()> {
        if caller.is_root_admin() {
            return Ok(());
        }
        match keys
            .iter()
            .find(|k| ROOT_ONLY.iter().any(|r| r.eq_ignore_ascii_case(k)))
        {
            Some(k) => Err(ServiceError::invalid(format!(
                "Invalid value for parameter details: {k} can be set by a root admin only"
            ))),
            None => Ok(()),
        }
    }

    /// What stays of an instance's details after the caller's cleanup.
    pub(crate) fn details_after_cleanup(
        &self,
        caller: &Caller,
        details: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let (denied, readonly) = self.detail_lists();
        kept_on_cleanup(details, &denied, &readonly, Self::details_admin(caller))
    }

    /// `listDetailOptions`: for `UserVm`, names and values from the hosts of
    /// the instance's zone (all zones without `resourceid`); users are not
    /// offered the details they may not change.
    pub async fn detail_options(
        &self,
        caller: &Caller,
        resource_type: &str,
        resource_id: Option<&str>,
    ) -> SResult<BTreeMap<String, Vec<String>>> {
        if !resource_type.eq_ignore_ascii_case("UserVm")
            && !resource_type.eq_ignore_ascii_case("VirtualMachine")
        {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter resourcetype: {resource_type}; details options exist for UserVm"
            )));
        }
        let zone = match resource_id {
            Some(id) => Some(self.owned::<Vm>(caller, "resourceid", id).await?.zone_id),
            None => None,
        };
        let hosts: Vec<Host> = self.store.all(Query::new()).await?;
        let facts: Vec<serde_json::Value> = hosts
            .into_iter()
            .filter(|h| h.removed.is_none() && zone.is_none_or(|z| h.zone_id == z))
            .filter_map(|h| h.facts)
            .collect();
        let mut o = vm_options(&facts);
        if !Self::details_admin(caller) {
            let (denied, readonly) = self.detail_lists();
            o.retain(|k, _| !listed(&denied, k) && !listed(&readonly, k));
            // The guest CPU model is the root admin's, as the seed says.
            o.remove("guest.cpu.model");
            o.remove("guest.cpu.mode");
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn users_do_not_see_or_change_what_the_settings_name() {
        let denied = names("rootdisksize, cpuOvercommitRatio");
        let readonly = names("rootDiskController");
        let all = d(&[
            ("rootdisksize", "20"),
            ("rootDiskController", "sata"),
            ("nicAdapter", "e1000"),
        ]);
        assert_eq!(
            visible(&all, &denied, false),
            d(&[("rootDiskController", "sata"), ("nicAdapter", "e1000")])
        );
        assert_eq!(visible(&all, &denied, true), all);
        let err = check_change(
            &["rootdiskcontroller".to_string()],
            &denied,
            &readonly,
            false,
        )
        .unwrap_err();
        assert!(err.contains("parameter details") && err.contains("rootdiskcontroller"));
        assert!(check_change(&["nicAdapter".to_string()], &denied, &readonly, false).is_ok());
        assert!(check_change(&["rootdisksize".to_string()], &denied, &readonly, true).is_ok());
        assert_eq!(
            kept_on_cleanup(&all, &denied, &readonly, false),
            d(&[("rootdisksize", "20"), ("rootDiskController", "sata")])
        );
        assert!(kept_on_cleanup(&all, &denied, &readonly, true).is_empty());
    }

    #[test]
    fn values_are_checked_where_the_hosts_have_a_fixed_set() {
        assert!(check_values(&d(&[("rootDiskController", "SATA"), ("tpmversion", "9")])).is_ok());
        let e = check_values(&d(&[("nicAdapter", "ne2k")])).unwrap_err();
        assert!(
            e.contains("parameter details") && e.contains("nicAdapter"),
            "{e}"
        );
        let e = check_values(&d(&[("tpmversion", "1.2"), ("tpmmodel", "tpm-crb")])).unwrap_err();
        assert!(e.contains("tpm-crb"), "{e}");
        assert!(check_values(&d(&[("cpu.corespersocket", "2")])).is_ok());
    }

    #[test]
    fn options_come_from_host_facts() {
        let facts = vec![
            serde_json::json!({"machinetypes": ["pc-i440fx-7.2", "pc-q35-7.2"], "cpumodel": "EPYC"}),
            serde_json::json!({"machinetypes": ["pc-q35-7.2", "pc-q35-8.0"]}),
        ];
        let o = vm_options(&facts);
        assert_eq!(
            o["kvm.guest.os.machine.type"],
            vec!["pc-i440fx-7.2", "pc-q35-7.2", "pc-q35-8.0"]
        );
        assert!(o["guest.cpu.model"].contains(&"EPYC".to_string()));
        assert!(o["rootDiskController"].contains(&"virtio".to_string()));
        assert!(o["cpu.corespersocket"].is_empty());
    }
}
