//! What an instance learns about itself: CloudStack's metadata files, its
//! user data and SSH keys, as its host's metadata service and config drive
//! give them to the guest. Built from the stored records on every start and
//! pushed to the host whenever they change while the instance runs there.

use super::agent::GuestMetadata;
use super::*;
use base64::Engine;
use orrery_model::VmState;
use std::collections::BTreeMap;

/// Everything the metadata is made of, gathered from the records.
#[derive(Debug, Clone, Default)]
pub struct MetadataInputs {
    pub zone_name: String,
    /// The service offering's description (CloudStack's `service-offering`).
    pub offering: String,
    pub instance_name: String,
    pub uuid: String,
    pub host_name: String,
    pub ip: String,
    pub cloud_identifier: String,
    pub public_keys: Vec<String>,
    /// Stored (base64) user data.
    pub userdata: Option<String>,
    /// `userdatadetails`: the user data's variables, served as metadata
    /// files of their own so cloud-init's templates can read them.
    pub details: BTreeMap<String, String>,
    pub config_drive: bool,
}

/// CloudStack's metadata files in the order the virtual router lists them.
/// `instance-id` is the instance's internal name and `vm-id` its uuid, as
/// the seed's table says; there is no public address apart from the guest
/// one, so `public-ipv4` and `public-hostname` repeat it.
pub fn build(i: &MetadataInputs) -> GuestMetadata {
    let mut entries: Vec<(String, String)> = vec![
        ("service-offering".into(), i.offering.clone()),
        ("availability-zone".into(), i.zone_name.clone()),
        ("local-ipv4".into(), i.ip.clone()),
        ("local-hostname".into(), i.host_name.clone()),
        ("public-ipv4".into(), i.ip.clone()),
        ("public-hostname".into(), i.ip.clone()),
        ("instance-id".into(), i.instance_name.clone()),
        ("vm-id".into(), i.uuid.clone()),
    ];
    if !i.public_keys.is_empty() {
        entries.push(("public-keys".into(), i.public_keys.join("\n")));
    }
    entries.push(("cloud-identifier".into(), i.cloud_identifier.clone()));
    for (k, v) in &i.details {
        // Registration refuses variables named like the files above; a
        // clash from older records must not hide the real value.
        if !entries.iter().any(|(n, _)| n == k) && is_file_name(k) {
            entries.push((k.clone(), v.clone()));
        }
    }
    let user_data = i
        .userdata
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    GuestMetadata {
        entries,
        user_data,
        config_drive: i.config_drive,
        uuid: i.uuid.clone(),
        hostname: i.host_name.clone(),
        availability_zone: i.zone_name.clone(),
        public_keys: i.public_keys.clone(),
    }
}

/// A variable becomes a file under `/latest/meta-data/` and on the config
/// drive, so it must be a plain file name.
fn is_file_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 255
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !k.starts_with('.')
}

/// Whether an offering's providers give its networks' instances a config
/// drive rather than (only) the host's metadata service.
pub fn offering_wants_config_drive(o: &NetworkOffering) -> bool {
    o.providers
        .get("UserData")
        .is_some_and(|p| p.eq_ignore_ascii_case("ConfigDrive"))
}

impl Service {
    /// The metadata an instance's guest sees, from the stored records.
    pub(crate) async fn guest_metadata(&self, vm: &Vm) -> SResult<GuestMetadata> {
        let zone = self.load_cached::<Zone>(vm.zone_id).await?;
        let offering = self
            .load_cached::<ServiceOffering>(vm.service_offering_id)
            .await?;
        let nics: Vec<Nic> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let default_nic = nics.iter().find(|n| n.is_default).or_else(|| nics.first());
        let mut config_drive = vm
            .details
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("configdrive") && v.eq_ignore_ascii_case("true"));
        for n in &nics {
            let Some(net) = self.load_cached::<Network>(n.network_id).await? else {
                continue;
            };
            if let Some(o) = self
                .load_cached::<NetworkOffering>(net.network_offering_id)
                .await?
            {
                config_drive |= offering_wants_config_drive(&o);
            }
        }
        // The root domain's uuid is made once at `init` and never changes:
        // a stable identity for this cloud.
        let identifier = self
            .load_cached::<Domain>(1)
            .await?
            .map(|d| d.uuid)
            .unwrap_or_default();
        Ok(build(&MetadataInputs {
            zone_name: zone.map(|z| z.name).unwrap_or_default(),
            offering: offering.map(|o| o.display_text).unwrap_or_default(),
            instance_name: vm.instance_name.clone(),
            uuid: vm.uuid.clone(),
            host_name: vm.name.clone(),
            ip: default_nic
                .map(|n| n.ip_address.clone())
                .unwrap_or_default(),
            cloud_identifier: format!("CloudStack-{{{identifier}}}"),
            public_keys: vm.ssh_public_keys.clone(),
            userdata: vm.userdata.clone(),
            details: vm.userdata_details.clone(),
            config_drive,
        }))
    }

    /// Hands a running instance's host its new metadata. A failure is
    /// logged, not returned: the records changed and the next start
    /// carries them in any case.
    pub(crate) async fn push_metadata(&self, vm: &Vm) {
        let (Some(host), VmState::Running) = (vm.host_id, vm.state) else {
            return;
        };
        match self.guest_metadata(vm).await {
            Ok(meta) => {
                if let Err(e) = self
                    .agents
                    .update_metadata(host, &vm.instance_name, &meta)
                    .await
                {
                    tracing::warn!(instance = %vm.uuid, error = %e, "metadata not updated on the host");
                }
            }
            Err(e) => tracing::warn!(instance = %vm.uuid, error = %e, "metadata not built"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> MetadataInputs {
        MetadataInputs {
            zone_name: "zone1".into(),
            offering: "Small".into(),
            instance_name: "i-2-7-VM".into(),
            uuid: "5c1d".into(),
            host_name: "web1".into(),
            ip: "10.1.1.5".into(),
            cloud_identifier: "CloudStack-{abc}".into(),
            public_keys: vec!["ssh-rsa AAA a".into(), "ssh-ed25519 BBB b".into()],
            userdata: Some("IyEvYmluL3NoCmVjaG8gaGk=".into()),
            details: [("variable1".to_string(), "v1".to_string())].into(),
            config_drive: false,
        }
    }

    #[test]
    fn files_follow_cloudstack_names_and_values() {
        let m = build(&inputs());
        let get = |n: &str| {
            m.entries
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("instance-id"), Some("i-2-7-VM"));
        assert_eq!(get("vm-id"), Some("5c1d"));
        assert_eq!(get("local-hostname"), Some("web1"));
        assert_eq!(get("public-ipv4"), Some("10.1.1.5"));
        assert_eq!(get("public-keys"), Some("ssh-rsa AAA a\nssh-ed25519 BBB b"));
        assert_eq!(get("cloud-identifier"), Some("CloudStack-{abc}"));
        assert_eq!(get("variable1"), Some("v1"));
        assert_eq!(m.user_data, b"#!/bin/sh\necho hi");
    }

    #[test]
    fn variables_cannot_shadow_files_or_escape_the_directory() {
        let mut i = inputs();
        i.details = [
            ("instance-id".to_string(), "forged".to_string()),
            ("../x".to_string(), "y".to_string()),
            ("a/b".to_string(), "y".to_string()),
        ]
        .into();
        let m = build(&i);
        let ids: Vec<_> = m
            .entries
            .iter()
            .filter(|(k, _)| k == "instance-id")
            .collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].1, "i-2-7-VM");
        assert!(!m.entries.iter().any(|(k, _)| k.contains('/')));
    }

    #[test]
    fn no_keys_no_keys_file_and_bad_base64_gives_no_user_data() {
        let mut i = inputs();
        i.public_keys.clear();
        i.userdata = Some("%%%".into());
        let m = build(&i);
        assert!(!m.entries.iter().any(|(k, _)| k == "public-keys"));
        assert!(m.user_data.is_empty());
    }
}
