//! Config drives: an ISO 9660 image labelled `config-2` with CloudStack's
//! layout (its own `cloudstack/` tree and the OpenStack one cloud-init's
//! ConfigDrive data source reads), attached to the instance as a CD-ROM.
//! [`layout`] decides every file and is pure; [`build`] writes them and
//! runs `genisoimage`, as CloudStack does.

use orrery_proto::v1 as pb;
use std::path::{Path, PathBuf};

pub const LABEL: &str = "config-2";

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("config drive: {0}")]
    Io(String),
    #[error("config drive: genisoimage failed: {0}")]
    Tool(String),
    #[error("config drive: metadata file name {0:?} is not a plain name")]
    BadName(String),
}

/// A NIC as `network_data.json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveNic {
    pub mac: String,
    pub network_uuid: String,
}

/// Every file of the drive: (relative path, content), in a stable order.
pub fn layout(
    meta: &pb::GuestMetadata,
    nics: &[DriveNic],
) -> Result<Vec<(String, Vec<u8>)>, ConfigDriveError> {
    let mut files = Vec::new();
    for e in &meta.entries {
        let plain = !e.name.is_empty()
            && !e.name.starts_with('.')
            && e.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(ConfigDriveError::BadName(e.name.clone()));
        }
        files.push((
            format!("cloudstack/metadata/{}.txt", e.name),
            e.value.clone().into_bytes(),
        ));
    }
    if !meta.user_data.is_empty() {
        files.push((
            "cloudstack/userdata/user_data.txt".into(),
            meta.user_data.clone(),
        ));
        files.push(("openstack/latest/user_data".into(), meta.user_data.clone()));
    }
    let keys: serde_json::Map<String, serde_json::Value> = meta
        .public_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("key-{i}"), serde_json::Value::String(k.clone())))
        .collect();
    // Variables (entries past CloudStack's own files) go to "meta", where
    // cloud-init's templates find them as ds.meta_data.meta.<name>.
    let own = [
        "service-offering",
        "availability-zone",
        "local-ipv4",
        "local-hostname",
        "public-ipv4",
        "public-hostname",
        "instance-id",
        "vm-id",
        "public-keys",
        "cloud-identifier",
    ];
    let vars: serde_json::Map<String, serde_json::Value> = meta
        .entries
        .iter()
        .filter(|e| !own.contains(&e.name.as_str()))
        .map(|e| (e.name.clone(), serde_json::Value::String(e.value.clone())))
        .collect();
    let meta_data = serde_json::json!({
        "uuid": meta.uuid,
        "name": meta.hostname,
        "hostname": meta.hostname,
        "availability_zone": meta.availability_zone,
        "launch_index": 0,
        "public_keys": keys,
        "meta": vars,
    });
    files.push((
        "openstack/latest/meta_data.json".into(),
        serde_json::to_vec_pretty(&meta_data).unwrap_or_default(),
    ));
    files.push(("openstack/latest/vendor_data.json".into(), b"{}".to_vec()));
    let links: Vec<_> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "id": format!("eth{i}"),
                "type": "phy",
                "ethernet_mac_address": n.mac,
            })
        })
        .collect();
    let networks: Vec<_> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "id": format!("network{i}"),
                "link": format!("eth{i}"),
                "type": "ipv4_dhcp",
                "network_id": n.network_uuid,
            })
        })
        .collect();
    let network_data = serde_json::json!({
        "links": links,
        "networks": networks,
        "services": [],
    });
    files.push((
        "openstack/latest/network_data.json".into(),
        serde_json::to_vec_pretty(&network_data).unwrap_or_default(),
    ));
    Ok(files)
}

/// Where an instance's drive lives under `dir`.
pub fn path_for(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("{instance}.iso"))
}

/// Writes the drive for `instance` into `dir` (replacing an older one in
/// one rename, so a running QEMU keeps reading the image it opened).
pub async fn build(
    dir: &Path,
    instance: &str,
    meta: &pb::GuestMetadata,
    nics: &[DriveNic],
) -> Result<PathBuf, ConfigDriveError> {
    let files = layout(meta, nics)?;
    let io = |e: std::io::Error| ConfigDriveError::Io(e.to_string());
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let staging = dir.join(format!(".{instance}.d"));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    for (rel, content) in &files {
        let p = staging.join(rel);
        if let Some(parent) = p.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::write(&p, content).await.map_err(io)?;
    }
    let out = path_for(dir, instance);
    let tmp = dir.join(format!(".{instance}.iso.tmp"));
    let result = tokio::process::Command::new("genisoimage")
        .arg("-quiet")
        .args(["-o"])
        .arg(&tmp)
        // Rock Ridge and Joliet keep the long, lower-case names.
        .args([
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-r",
            "-J",
            "-V",
            LABEL,
        ])
        .arg(&staging)
        .output()
        .await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let output = result.map_err(|e| ConfigDriveError::Tool(e.to_string()))?;
    if !output.status.success() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ConfigDriveError::Tool(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    // QEMU (another user) reads it; the data is the guest's own.
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .await
        .map_err(io)?;
    tokio::fs::rename(&tmp, &out).await.map_err(io)?;
    Ok(out)
}

pub async fn remove(dir: &Path, instance: &str) {
    let _ = tokio::fs::remove_file(path_for(dir, instance)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> pb::GuestMetadata {
        pb::GuestMetadata {
            entries: [
                ("instance-id", "i-2-7-VM"),
                ("vm-id", "5c1d"),
                ("variable1", "v1"),
            ]
            .iter()
            .map(|(n, v)| pb::MetadataEntry {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
            user_data: b"#!/bin/sh\n".to_vec(),
            config_drive: true,
            uuid: "5c1d".into(),
            hostname: "web1".into(),
            availability_zone: "zone1".into(),
            public_keys: vec!["ssh-rsa AAA a".into()],
        }
    }

    #[test]
    fn layout_has_cloudstack_and_openstack_trees() {
        let nics = [DriveNic {
            mac: "52:54:00:aa:00:01".into(),
            network_uuid: "n1".into(),
        }];
        let files = layout(&meta(), &nics).unwrap();
        let get = |p: &str| {
            files
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(get("cloudstack/metadata/instance-id.txt"), b"i-2-7-VM");
        assert_eq!(get("cloudstack/userdata/user_data.txt"), b"#!/bin/sh\n");
        assert_eq!(get("openstack/latest/user_data"), b"#!/bin/sh\n");
        let md: serde_json::Value =
            serde_json::from_slice(&get("openstack/latest/meta_data.json")).unwrap();
        assert_eq!(md["uuid"], "5c1d");
        assert_eq!(md["hostname"], "web1");
        assert_eq!(md["public_keys"]["key-0"], "ssh-rsa AAA a");
        assert_eq!(md["meta"]["variable1"], "v1");
        assert!(md["meta"].get("instance-id").is_none());
        let nd: serde_json::Value =
            serde_json::from_slice(&get("openstack/latest/network_data.json")).unwrap();
        assert_eq!(nd["links"][0]["ethernet_mac_address"], "52:54:00:aa:00:01");
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let mut m = meta();
        m.entries.push(pb::MetadataEntry {
            name: "../escape".into(),
            value: String::new(),
        });
        assert!(matches!(layout(&m, &[]), Err(ConfigDriveError::BadName(_))));
    }
}
