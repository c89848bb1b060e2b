//! First-time initialisation of a data directory, and the simulated host set.

use super::*;
use crate::store::records::*;

const OS: &[(&str, &[&str])] = &[
    ("CentOS", &["CentOS 7", "CentOS 8"]),
    (
        "Debian",
        &[
            "Debian GNU/Linux 11 (64-bit)",
            "Debian GNU/Linux 12 (64-bit)",
        ],
    ),
    ("Ubuntu", &["Ubuntu 22.04 LTS", "Ubuntu 24.04 LTS"]),
    (
        "RedHat",
        &["Red Hat Enterprise Linux 8", "Red Hat Enterprise Linux 9"],
    ),
    (
        "Windows",
        &[
            "Windows Server 2019 (64-bit)",
            "Windows Server 2022 (64-bit)",
        ],
    ),
    (
        "Other",
        &[
            "Other (64-bit)",
            "Other Linux (64-bit)",
            "Other PV (64-bit)",
        ],
    ),
];

pub struct InitOutput {
    pub api_key: String,
    pub secret_key: String,
    pub admin_user_uuid: String,
    /// The admin's password when it was generated here (not when given).
    pub generated_password: Option<String>,
}

impl Service {
    /// Creates the ROOT domain, the system and admin accounts, default roles, the
    /// catalog CloudStack ships (OS types, disk offerings "Small" and "Custom", a
    /// shared guest network offering) and the admin's API keys.
    /// `admin_password` is the root admin's password; without one a random
    /// one is made and returned once.
    pub async fn initialise(&self, admin_password: Option<String>) -> SResult<InitOutput> {
        if self.store.is_initialised().await? {
            return Err(ServiceError::internal(
                "the data directory is already initialised",
            ));
        }
        let t = now();
        let mut tx = Tx::new();
        let root = Domain {
            id: 1,
            uuid: new_uuid(),
            version: 1,
            name: "ROOT".into(),
            parent_id: None,
            path: "ROOT".into(),
            level: 0,
            created: t,
            removed: None,
        };
        tx.insert(&root);
        let roles = [
            ("Root Admin", "Admin"),
            ("Resource Admin", "Admin"),
            ("Domain Admin", "DomainAdmin"),
            ("User", "User"),
        ];
        for (i, (name, ty)) in roles.iter().enumerate() {
            let id = i as i64 + 1;
            tx.insert(&Role {
                id,
                uuid: new_uuid(),
                version: 1,
                name: name.to_string(),
                role_type: ty.to_string(),
                description: format!("Default {name} role"),
                is_default: true,
                created: t,
            });
            tx.insert(&RolePermission {
                id,
                uuid: new_uuid(),
                version: 1,
                role_id: id,
                rule: "*".into(),
                permission: "allow".into(),
                description: "all commands the role type permits".into(),
                sort_order: 1000,
                created: t,
            });
        }
        let system = Account {
            id: 1,
            uuid: new_uuid(),
            version: 1,
            name: "system".into(),
            domain_id: 1,
            account_type: ACCOUNT_ADMIN,
            role_id: 1,
            state: "enabled".into(),
            created: t,
            removed: None,
        };
        let admin = Account {
            id: 2,
            uuid: new_uuid(),
            version: 1,
            name: "admin".into(),
            domain_id: 1,
            account_type: ACCOUNT_ADMIN,
            role_id: 1,
            state: "enabled".into(),
            created: t,
            removed: None,
        };
        tx.insert(&system).insert(&admin);
        let sys_user = User {
            id: 1,
            uuid: new_uuid(),
            version: 1,
            username: "system".into(),
            account_id: 1,
            domain_id: 1,
            firstname: "system".into(),
            lastname: "cloud".into(),
            state: "enabled".into(),
            created: t,
            ..Default::default()
        };
        let api_key = identity::random_key(64);
        let secret_key = identity::random_key(64);
        let generated = admin_password.is_none();
        let password = admin_password.unwrap_or_else(|| identity::random_key(18));
        let admin_user = User {
            id: 2,
            uuid: new_uuid(),
            version: 1,
            username: "admin".into(),
            account_id: 2,
            domain_id: 1,
            firstname: "Admin".into(),
            lastname: "User".into(),
            email: None,
            password: Some(identity::hash_password(&password)),
            api_key: Some(api_key.clone()),
            secret_key: Some(secret_key.clone()),
            state: "enabled".into(),
            timezone: None,
            created: t,
            removed: None,
        };
        tx.insert(&sys_user).insert(&admin_user);
        let mut os_id = 0;
        for (cat_id, (cat, types)) in (1i64..).zip(OS) {
            tx.insert(&OsCategory {
                id: cat_id,
                uuid: new_uuid(),
                version: 1,
                name: cat.to_string(),
                created: t,
            });
            for ty in *types {
                os_id += 1;
                tx.insert(&OsType {
                    id: os_id,
                    uuid: new_uuid(),
                    version: 1,
                    description: ty.to_string(),
                    category_id: cat_id,
                    is_user_defined: false,
                    created: t,
                });
            }
        }
        tx.insert(&DiskOffering {
            id: 1,
            uuid: new_uuid(),
            version: 1,
            name: "Small".into(),
            display_text: "Small Disk, 5 GB".into(),
            disk_size_gb: 5,
            customized: false,
            storage_type: "shared".into(),
            tags: None,
            state: "Active".into(),
            created: t,
            removed: None,
            domain_ids: vec![],
        });
        tx.insert(&DiskOffering {
            id: 2,
            uuid: new_uuid(),
            version: 1,
            name: "Custom".into(),
            display_text: "Custom Disk".into(),
            disk_size_gb: 0,
            customized: true,
            storage_type: "shared".into(),
            tags: None,
            state: "Active".into(),
            created: t,
            removed: None,
            domain_ids: vec![],
        });
        tx.insert(&NetworkOffering {
            id: 1,
            uuid: new_uuid(),
            version: 1,
            name: "DefaultSharedNetworkOffering".into(),
            display_text: "Offering for shared guest networks".into(),
            guest_ip_type: "Shared".into(),
            traffic_type: "Guest".into(),
            state: "Enabled".into(),
            is_default: true,
            specify_vlan: true,
            specify_ip_ranges: true,
            availability: "Optional".into(),
            created: t,
            removed: None,
            // Each host's DHCP server and metadata service stand in for
            // CloudStack's virtual router.
            providers: [
                ("Dhcp", "VirtualRouter"),
                ("Dns", "VirtualRouter"),
                ("UserData", "VirtualRouter"),
            ]
            .into_iter()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect(),
        });
        self.store.commit(tx.ops).await?;
        Ok(InitOutput {
            api_key,
            secret_key,
            admin_user_uuid: admin_user.uuid,
            generated_password: generated.then_some(password),
        })
    }

    /// Makes sure a zone, pod, cluster, guest network and storage pool exist and
    /// that `n` simulated hosts are registered in them.
    pub async fn ensure_simulated_hosts(&self, n: usize, gpus: usize) -> SResult<()> {
        let t = now();
        let (zone, pod, cluster) = self.infrastructure.default_cluster("Simulator").await?;
        let existing: Vec<Host> = self
            .store
            .all(Query::new().eq(Col::Parent, cluster.id))
            .await?;
        let mut tx = Tx::new();
        for i in existing.len()..n {
            let host_id = self.store.new_id::<Host>().await?;
            // Each simulated host has its own local pool, as real hosts
            // report theirs.
            tx.insert(&StoragePool {
                id: self.store.new_id::<StoragePool>().await?,
                uuid: new_uuid(),
                version: 1,
                name: format!("sim-host-{}-local", i + 1),
                zone_id: zone.id,
                pod_id: Some(pod.id),
                cluster_id: Some(cluster.id),
                host_id: Some(host_id),
                path: "local".into(),
                pool_type: "Filesystem".into(),
                scope: "HOST".into(),
                capacity_bytes: 1 << 40,
                state: "Up".into(),
                created: t,
            });
            tx.insert(&Host {
                id: host_id,
                uuid: new_uuid(),
                version: 1,
                name: format!("sim-host-{}", i + 1),
                zone_id: zone.id,
                pod_id: pod.id,
                cluster_id: cluster.id,
                hypervisor: "Simulator".into(),
                ip_address: format!("10.0.1.{}", i + 1),
                state: "Up".into(),
                resource_state: "Enabled".into(),
                cpu_number: 32,
                cpu_speed: 2400,
                memory_total: 256 << 30,
                host_tags: vec![],
                simulated: true,
                last_ping: Some(t),
                created: t,
                facts: (gpus > 0).then(|| simulated_gpu_facts(gpus)),
                ..Default::default()
            });
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }
}

/// What a simulated host with `gpus` whole GPUs reports: that many cards on
/// vfio-pci and one more offering a vGPU type with room for four, with
/// UEFI, secure boot and a vTPM like a fully equipped host.
fn simulated_gpu_facts(gpus: usize) -> serde_json::Value {
    let mut cards: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            serde_json::json!({
                "address": format!("0000:{:02x}:00.0", 0x3b + i),
                "vendor_id": "10de", "device_id": "1db6", "driver": "vfio-pci",
                "iommu_group": 30 + i, "mdev_types": [],
            })
        })
        .collect();
    cards.push(serde_json::json!({
        "address": "0000:af:00.0", "vendor_id": "10de", "device_id": "1eb8", "driver": "nvidia",
        "iommu_group": 40, "mdev_types": [
            {"type_id": "nvidia-222", "name": "GRID T4-1B", "available": 4, "description": ""}
        ],
    }));
    serde_json::json!({
        "gpus": cards,
        "firmware": [{"secureboot": true}],
        "tpm": true,
    })
}
