//! The coordinator's records and which index columns each one fills.

use super::{Entity, Index, Kind};
use orrery_model::VmState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

macro_rules! entity {
    ($t:ty, $k:expr, |$s:ident| $idx:expr) => {
        impl Entity for $t {
            const KIND: Kind = $k;
            fn id(&self) -> i64 {
                self.id
            }
            fn uuid(&self) -> &str {
                &self.uuid
            }
            fn version(&self) -> i64 {
                self.version
            }
            fn set_version(&mut self, v: i64) {
                self.version = v;
            }
            fn set_id(&mut self, id: i64) {
                self.id = id;
            }
            fn index(&self) -> Index {
                let $s = self;
                $idx
            }
        }
    };
}

fn live(removed: &Option<i64>, ukey: String) -> Option<String> {
    // A removed record frees its unique name for reuse.
    if removed.is_some() {
        None
    } else {
        Some(ukey)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Domain {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub parent_id: Option<i64>,
    /// "ROOT", "ROOT/child", ...
    pub path: String,
    pub level: i64,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Domain, Kind::Domain, |s| Index {
    ukey: live(&s.removed, s.path.to_lowercase()),
    name: Some(s.name.clone()),
    state: Some(
        if s.removed.is_some() {
            "Removed"
        } else {
            "Active"
        }
        .into()
    ),
    parent_id: s.parent_id,
    k1: Some(s.path.clone()),
    created: s.created,
    ..Default::default()
});

pub const ACCOUNT_USER: i64 = 0;
pub const ACCOUNT_ADMIN: i64 = 1;
pub const ACCOUNT_DOMAIN_ADMIN: i64 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Account {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub domain_id: i64,
    pub account_type: i64,
    pub role_id: i64,
    /// enabled, disabled, locked
    pub state: String,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Account, Kind::Account, |s| Index {
    ukey: live(
        &s.removed,
        format!("{}/{}", s.domain_id, s.name.to_lowercase())
    ),
    name: Some(s.name.clone()),
    state: Some(if s.removed.is_some() {
        "removed".into()
    } else {
        s.state.clone()
    }),
    domain_id: Some(s.domain_id),
    ref_id: Some(s.role_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct User {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub username: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub firstname: String,
    pub lastname: String,
    pub email: Option<String>,
    /// "salt$hex(sha256(salt || password))"; None for users that cannot log in.
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub secret_key: Option<String>,
    pub state: String,
    pub timezone: Option<String>,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(User, Kind::User, |s| Index {
    ukey: live(
        &s.removed,
        format!("{}/{}", s.domain_id, s.username.to_lowercase())
    ),
    name: Some(s.username.clone()),
    state: Some(if s.removed.is_some() {
        "removed".into()
    } else {
        s.state.clone()
    }),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    k1: s.api_key.clone(),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Role {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    /// Admin, DomainAdmin, User
    pub role_type: String,
    pub description: String,
    pub is_default: bool,
    pub created: i64,
}
entity!(Role, Kind::Role, |s| Index {
    ukey: Some(s.name.to_lowercase()),
    name: Some(s.name.clone()),
    state: Some(s.role_type.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RolePermission {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub role_id: i64,
    pub rule: String,
    /// allow or deny
    pub permission: String,
    pub description: String,
    pub sort_order: i64,
    pub created: i64,
}
entity!(RolePermission, Kind::RolePermission, |s| Index {
    name: Some(s.rule.clone()),
    parent_id: Some(s.role_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Zone {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub description: Option<String>,
    pub network_type: String,
    pub allocation_state: String,
    pub dns1: Option<String>,
    pub internal_dns1: Option<String>,
    pub security_groups_enabled: bool,
    pub local_storage_enabled: bool,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Zone, Kind::Zone, |s| Index {
    ukey: live(&s.removed, s.name.to_lowercase()),
    name: Some(s.name.clone()),
    state: Some(s.allocation_state.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Pod {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub zone_id: i64,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: Option<String>,
    pub end_ip: Option<String>,
    pub allocation_state: String,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Pod, Kind::Pod, |s| Index {
    ukey: live(
        &s.removed,
        format!("{}/{}", s.zone_id, s.name.to_lowercase())
    ),
    name: Some(s.name.clone()),
    state: Some(s.allocation_state.clone()),
    zone_id: Some(s.zone_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Cluster {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub zone_id: i64,
    pub pod_id: i64,
    pub hypervisor: String,
    pub allocation_state: String,
    pub managed_state: String,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Cluster, Kind::Cluster, |s| Index {
    ukey: live(
        &s.removed,
        format!("{}/{}", s.pod_id, s.name.to_lowercase())
    ),
    name: Some(s.name.clone()),
    state: Some(s.allocation_state.clone()),
    zone_id: Some(s.zone_id),
    parent_id: Some(s.pod_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Host {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub zone_id: i64,
    pub pod_id: i64,
    pub cluster_id: i64,
    pub hypervisor: String,
    pub ip_address: String,
    /// Up, Down, Disconnected, Connecting, Alert
    pub state: String,
    /// Enabled, Disabled, PrepareForMaintenance, Maintenance
    pub resource_state: String,
    pub cpu_number: i64,
    pub cpu_speed: i64,
    pub memory_total: i64,
    pub host_tags: Vec<String>,
    pub simulated: bool,
    pub last_ping: Option<i64>,
    /// Serial of the host certificate currently valid for this host; a
    /// connection with any other certificate is refused.
    #[serde(default)]
    pub cert_serial: Option<String>,
    #[serde(default)]
    pub cert_not_after: Option<i64>,
    #[serde(default)]
    pub agent_version: Option<String>,
    /// The OS category whose guests this host takes first (`updateHost
    /// oscategoryid`); others still fit.
    #[serde(default)]
    pub os_category_id: Option<i64>,
    /// What the agent last reported about the host (capabilities, versions).
    #[serde(default)]
    pub facts: Option<Value>,
    /// The names and addresses the host gave at enrolment: its certificates
    /// carry them (renewals too, with its current address), so libvirt and
    /// QEMU peers can verify it by any of them.
    #[serde(default)]
    pub cert_names: Vec<String>,
    /// Whether the agent set up libvirt's and QEMU's TLS from its
    /// certificate: migration uses TLS only between two such hosts.
    #[serde(default)]
    pub libvirt_tls: bool,
    /// HA's view of the host (listHosts `hostha.hastate`): Available while
    /// its agent is heard, Suspect while silent but its storage lease lives,
    /// Ineligible when nobody can investigate it, Fenced once declared Down.
    #[serde(default)]
    pub ha_state: String,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Host, Kind::Host, |s| Index {
    ukey: live(&s.removed, s.name.to_lowercase()),
    name: Some(s.name.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        s.state.clone()
    }),
    zone_id: Some(s.zone_id),
    parent_id: Some(s.cluster_id),
    ref_id: Some(s.pod_id),
    k1: Some(s.resource_state.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StoragePool {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub zone_id: i64,
    pub pod_id: Option<i64>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub path: String,
    pub pool_type: String,
    pub scope: String,
    pub capacity_bytes: i64,
    pub state: String,
    pub created: i64,
}
entity!(StoragePool, Kind::StoragePool, |s| Index {
    name: Some(s.name.clone()),
    state: Some(s.state.clone()),
    zone_id: Some(s.zone_id),
    host_id: s.host_id,
    parent_id: s.cluster_id,
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NetworkOffering {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_text: String,
    /// Shared, Isolated, L2
    pub guest_ip_type: String,
    pub traffic_type: String,
    pub state: String,
    pub is_default: bool,
    pub specify_vlan: bool,
    pub specify_ip_ranges: bool,
    pub availability: String,
    pub created: i64,
    pub removed: Option<i64>,
    /// `serviceproviderlist`: service -> provider (e.g. UserData ->
    /// ConfigDrive, which gives instances a config drive).
    #[serde(default)]
    pub providers: BTreeMap<String, String>,
}
entity!(NetworkOffering, Kind::NetworkOffering, |s| Index {
    ukey: live(&s.removed, s.name.to_lowercase()),
    name: Some(s.name.clone()),
    keyword: Some(s.display_text.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        s.state.clone()
    }),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Network {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_text: String,
    pub zone_id: i64,
    pub network_offering_id: i64,
    pub account_id: Option<i64>,
    pub domain_id: i64,
    pub cidr: String,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: String,
    pub end_ip: String,
    pub state: String,
    pub guest_type: String,
    pub acl_type: String,
    pub is_zone_default: bool,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Network, Kind::Network, |s| Index {
    name: Some(s.name.clone()),
    keyword: Some(s.display_text.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        s.state.clone()
    }),
    account_id: s.account_id,
    domain_id: Some(s.domain_id),
    zone_id: Some(s.zone_id),
    ref_id: Some(s.network_offering_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServiceOffering {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_text: String,
    pub cpu_number: Option<i64>,
    pub cpu_speed: Option<i64>,
    pub memory: Option<i64>,
    pub customized: bool,
    pub min_cpu: Option<i64>,
    pub max_cpu: Option<i64>,
    pub min_memory: Option<i64>,
    pub max_memory: Option<i64>,
    pub offer_ha: bool,
    pub limit_cpu_use: bool,
    pub host_tags: Option<String>,
    pub storage_tags: Option<String>,
    pub dynamic_scaling: bool,
    pub storage_type: String,
    pub root_disk_size: Option<i64>,
    pub disk_offering_id: Option<i64>,
    pub is_system: bool,
    pub state: String,
    pub created: i64,
    pub removed: Option<i64>,
    /// Days of the lease instances deployed with this offering get.
    #[serde(default)]
    pub lease_duration: Option<i64>,
    /// STOP or DESTROY, with `lease_duration`.
    #[serde(default)]
    pub lease_expiry_action: Option<String>,
    /// Domains the offering is restricted to; empty for a global offering.
    #[serde(default)]
    pub domain_ids: Vec<i64>,
    /// Volatile: an instance's root disk is recreated from its template on
    /// every reboot, so nothing the guest wrote survives one.
    #[serde(default)]
    pub volatile: bool,
    /// Whole GPUs (PCI passthrough) each instance gets; 0 for none.
    #[serde(default)]
    pub gpu_count: i64,
    /// The GPU is the guest's display (no emulated video card).
    #[serde(default)]
    pub gpu_display: bool,
    /// A vGPU (mediated device) type instead of whole GPUs, by its type id
    /// or name (`nvidia-222`, `GRID T4-1B`).
    #[serde(default)]
    pub vgpu_type: Option<String>,
}
entity!(ServiceOffering, Kind::ServiceOffering, |s| Index {
    name: Some(s.name.clone()),
    keyword: Some(s.display_text.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        s.state.clone()
    }),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DiskOffering {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_text: String,
    /// GiB; 0 for a custom-size offering.
    pub disk_size_gb: i64,
    pub customized: bool,
    pub storage_type: String,
    pub tags: Option<String>,
    pub state: String,
    pub created: i64,
    pub removed: Option<i64>,
    /// Domains the offering is restricted to; empty for a global offering.
    #[serde(default)]
    pub domain_ids: Vec<i64>,
}
entity!(DiskOffering, Kind::DiskOffering, |s| Index {
    name: Some(s.name.clone()),
    keyword: Some(s.display_text.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        s.state.clone()
    }),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OsCategory {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub created: i64,
}
entity!(OsCategory, Kind::OsCategory, |s| Index {
    ukey: Some(s.name.to_lowercase()),
    name: Some(s.name.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct OsType {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub description: String,
    pub category_id: i64,
    pub is_user_defined: bool,
    pub created: i64,
}
entity!(OsType, Kind::OsType, |s| Index {
    ukey: Some(s.description.to_lowercase()),
    name: Some(s.description.clone()),
    parent_id: Some(s.category_id),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Template {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_text: String,
    /// QCOW2, RAW, VHD, OVA, ISO
    pub format: String,
    pub is_iso: bool,
    pub hypervisor: String,
    pub os_type_id: i64,
    /// None for a cross-zone template.
    pub zone_id: Option<i64>,
    pub account_id: i64,
    pub domain_id: i64,
    pub is_public: bool,
    pub is_featured: bool,
    pub is_ready: bool,
    pub status: String,
    pub size: i64,
    pub physical_size: i64,
    pub checksum: Option<String>,
    /// True when a root admin registered a file on the coordinator itself
    /// (what an operator may do); the download reads it only then.
    #[serde(default)]
    pub local_source: bool,
    pub url: String,
    /// File in secondary storage, relative to its root.
    pub path: Option<String>,
    pub template_type: String,
    pub password_enabled: bool,
    pub dynamically_scalable: bool,
    pub requires_hvm: bool,
    pub bootable: bool,
    pub extractable: bool,
    pub details: BTreeMap<String, String>,
    /// Registered user data linked to the template, and how deployments
    /// may change it: ALLOWOVERRIDE, APPEND or DENYOVERRIDE.
    #[serde(default)]
    pub userdata_id: Option<i64>,
    #[serde(default)]
    pub userdata_policy: Option<String>,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Template, Kind::Template, |s| Index {
    name: Some(s.name.clone()),
    keyword: Some(s.display_text.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else if s.is_ready {
        "Ready".into()
    } else {
        "NotReady".into()
    }),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    zone_id: s.zone_id,
    ref_id: Some(s.os_type_id),
    k1: Some(if s.is_iso { "ISO" } else { "TEMPLATE" }.into()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Vm {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub display_name: String,
    pub instance_name: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub user_id: i64,
    pub zone_id: i64,
    pub pod_id: Option<i64>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub last_host_id: Option<i64>,
    pub template_id: Option<i64>,
    pub iso_id: Option<i64>,
    pub service_offering_id: i64,
    pub disk_offering_id: Option<i64>,
    pub os_type_id: i64,
    pub cpu_number: i64,
    pub cpu_speed: i64,
    pub memory: i64,
    pub state: VmState,
    pub group_id: Option<i64>,
    pub ha_enable: bool,
    pub dynamically_scalable: bool,
    pub delete_protection: bool,
    pub display_vm: bool,
    pub hypervisor: String,
    /// The VNC console password, random per instance (QEMU uses at most 8
    /// characters); never derived from anything an attacker could learn.
    #[serde(default)]
    pub vnc_password: Option<String>,
    pub details: BTreeMap<String, String>,
    pub keypairs: Vec<String>,
    /// The public keys of `keypairs` as they were when set: the instance
    /// keeps them if a pair is deleted later.
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    /// The effective user data (base64): the instance's own, a registered
    /// one's, or the template's with the instance's appended.
    pub userdata: Option<String>,
    /// The registered user data it came from, if any, and the values of its
    /// variables.
    #[serde(default)]
    pub userdata_id: Option<i64>,
    #[serde(default)]
    pub userdata_details: BTreeMap<String, String>,
    pub extraconfig: Option<String>,
    pub password_enabled: bool,
    /// Affinity groups the instance belongs to (placement honours them).
    #[serde(default)]
    pub affinity_group_ids: Vec<i64>,
    /// The latest async job on the instance, shown as `jobid` while it runs.
    pub job_id: Option<i64>,
    pub created: i64,
    pub last_updated: i64,
    /// When the instance entered Destroyed, for `expunge.delay`.
    pub destroyed_at: Option<i64>,
    pub removed: Option<i64>,
    /// The instance's lease (absent, active, or how it ended).
    #[serde(default)]
    pub lease: Lease,
    /// While Migrating: the host it is moving to (`host_id` is still the
    /// source), so an interrupted migration can be settled from both.
    #[serde(default)]
    pub migrating_to: Option<i64>,
    /// Whole GPUs its offering gives it (held on its host while it runs).
    #[serde(default)]
    pub gpu_count: i64,
    /// The vGPU type its offering gives it (one mediated device, held on
    /// its host while it runs), by the name the offering uses.
    #[serde(default)]
    pub vgpu_type: Option<String>,
}
entity!(Vm, Kind::Vm, |s| Index {
    name: Some(s.name.clone()),
    keyword: Some(s.display_name.clone()),
    state: Some(s.state.as_str().into()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    zone_id: Some(s.zone_id),
    host_id: s.host_id,
    parent_id: s.group_id,
    ref_id: s.template_id,
    k1: Some(s.service_offering_id.to_string()),
    // Leased instances are found by this key (`leased=true`); zero-padded so
    // the text order is the expiry order.
    k2: s.lease.expires().map(|t| format!("{t:012}")),
    created: s.created,
    ..Default::default()
});

/// An instance's lease as stored. Only deployment creates an active one.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(tag = "state")]
pub enum Lease {
    #[default]
    None,
    Active {
        days: i64,
        /// STOP or DESTROY
        action: String,
        /// Unix seconds.
        expires: i64,
    },
    /// Disabled by the user; never re-enabled.
    Disabled,
    /// The expiry action was started; the lease is annulled.
    Expired,
    /// Cancelled when the feature was switched off.
    Cancelled,
}

impl Lease {
    pub fn expires(&self) -> Option<i64> {
        match self {
            Lease::Active { expires, .. } => Some(*expires),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Volume {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub vm_id: Option<i64>,
    pub account_id: i64,
    pub domain_id: i64,
    pub zone_id: i64,
    /// ROOT or DATADISK
    pub volume_type: String,
    pub size: i64,
    pub disk_offering_id: Option<i64>,
    /// Allocated, Ready, Destroy, Expunged
    pub state: String,
    pub device_id: Option<i64>,
    pub pool_id: Option<i64>,
    pub template_id: Option<i64>,
    pub created: i64,
    pub attached: Option<i64>,
    pub removed: Option<i64>,
    /// A volume destroyed on its own (an old root after a restore): the
    /// host through which the expunger removes its file.
    #[serde(default)]
    pub last_host_id: Option<i64>,
    /// A volume created from a volume snapshot (its uuid): its file is made
    /// from the snapshot when first needed.
    #[serde(default)]
    pub from_snapshot: Option<String>,
}
entity!(Volume, Kind::Volume, |s| Index {
    name: Some(s.name.clone()),
    state: Some(s.state.clone()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    zone_id: Some(s.zone_id),
    parent_id: s.vm_id,
    k1: Some(s.volume_type.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Nic {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub vm_id: i64,
    pub network_id: i64,
    pub ip_address: String,
    pub mac_address: String,
    pub netmask: String,
    pub gateway: String,
    pub is_default: bool,
    pub device_id: i64,
    pub created: i64,
}
entity!(Nic, Kind::Nic, |s| Index {
    // One live NIC per address per network: the unique index is what makes an
    // address impossible to hand out twice.
    ukey: Some(format!("{}/{}", s.network_id, s.ip_address)),
    name: Some(s.ip_address.clone()),
    parent_id: Some(s.vm_id),
    ref_id: Some(s.network_id),
    k1: Some(s.mac_address.clone()),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InstanceGroup {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub created: i64,
}
entity!(InstanceGroup, Kind::InstanceGroup, |s| Index {
    ukey: Some(format!("{}/{}", s.account_id, s.name.to_lowercase())),
    name: Some(s.name.clone()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    created: s.created,
    ..Default::default()
});

pub const JOB_PENDING: i64 = 0;
pub const JOB_SUCCEEDED: i64 = 1;
pub const JOB_FAILED: i64 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Job {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    /// API command name, e.g. deployVirtualMachine.
    pub command: String,
    /// CloudStack's command class name, which clients display.
    pub cmd: String,
    pub account_id: i64,
    pub user_id: i64,
    pub domain_id: i64,
    pub status: i64,
    pub result_code: i64,
    pub result_type: Option<String>,
    pub result: Option<Value>,
    pub instance_type: Option<String>,
    pub instance_uuid: Option<String>,
    /// What the job does, so that it can be resumed after a restart.
    pub work: Value,
    pub created: i64,
    pub completed: Option<i64>,
    /// The coordinator process that runs it (with a shared store), so the
    /// leader can settle the jobs of one that died.
    #[serde(default)]
    pub runner: Option<String>,
}
entity!(Job, Kind::Job, |s| Index {
    name: Some(s.command.clone()),
    state: Some(s.status.to_string()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    k1: s.instance_uuid.clone(),
    keyword: s.instance_type.clone(),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Event {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub event_type: String,
    pub level: String,
    pub description: String,
    pub state: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub user_id: i64,
    pub resource_uuid: Option<String>,
    pub resource_type: Option<String>,
    pub resource_name: Option<String>,
    pub created: i64,
}
entity!(Event, Kind::Event, |s| Index {
    name: Some(s.event_type.clone()),
    keyword: Some(s.description.clone()),
    state: Some(s.level.clone()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    k1: s.resource_uuid.clone(),
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Config {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub value: String,
    /// global, zone, cluster, account
    pub scope: String,
    pub scope_id: Option<i64>,
    pub created: i64,
}
entity!(Config, Kind::Config, |s| Index {
    ukey: Some(format!(
        "{}/{}/{}",
        s.scope,
        s.scope_id.unwrap_or(0),
        s.name
    )),
    name: Some(s.name.clone()),
    state: Some(s.scope.clone()),
    parent_id: s.scope_id,
    created: s.created,
    ..Default::default()
});

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Session {
    pub id: i64,
    /// The session key itself.
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub user_id: i64,
    pub expires: i64,
    pub created: i64,
}
entity!(Session, Kind::Session, |s| Index {
    account_id: Some(s.user_id),
    created: s.created,
    ..Default::default()
});

/// A one-time enrolment token. Only a hash of its secret is stored.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EnrollToken {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub secret_hash: String,
    pub zone_id: i64,
    pub pod_id: i64,
    pub cluster_id: i64,
    pub expires: i64,
    pub used: Option<i64>,
    pub host_id: Option<i64>,
    pub created: i64,
}
entity!(EnrollToken, Kind::EnrollToken, |s| Index {
    ukey: Some(s.secret_hash.clone()),
    zone_id: Some(s.zone_id),
    host_id: s.host_id,
    created: s.created,
    ..Default::default()
});

/// An account's SSH key pair: only the public key is kept (the private key
/// of a created pair is returned once and forgotten).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SshKeyPair {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    /// One line in OpenSSH's format: `type base64 [comment]`.
    pub public_key: String,
    /// MD5 of the key's blob, colon-separated hex, as CloudStack shows it.
    pub fingerprint: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(SshKeyPair, Kind::SshKeyPair, |s| Index {
    // Names are unique per account, as given (CloudStack compares them
    // exactly).
    ukey: live(&s.removed, format!("{}/{}", s.account_id, s.name)),
    name: Some(s.name.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        "Active".into()
    }),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    k1: Some(s.fingerprint.clone()),
    created: s.created,
    ..Default::default()
});

/// Registered user data of an account (the user data library), with the
/// names of the variables its content uses.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UserData {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    /// Base64, padded.
    pub userdata: String,
    pub params: Vec<String>,
    pub account_id: i64,
    pub domain_id: i64,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(UserData, Kind::UserData, |s| Index {
    ukey: live(&s.removed, format!("{}/{}", s.account_id, s.name)),
    name: Some(s.name.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        "Active".into()
    }),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    created: s.created,
    ..Default::default()
});

/// An outstanding console token (`createConsoleEndpoint`), kept in the
/// store so that any coordinator's console proxy can take it. Only a hash
/// of the token is stored; the record is removed when the token is spent.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ConsoleTicket {
    pub id: i64,
    /// SHA-256 of the token, hex.
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub vm_id: i64,
    /// Who asked for it; the session it opens is recorded in their name.
    pub user_id: i64,
    /// Unix milliseconds after which the token no longer works.
    pub expires_ms: i64,
    pub created: i64,
}
entity!(ConsoleTicket, Kind::ConsoleTicket, |s| Index {
    ref_id: Some(s.vm_id),
    created: s.created,
    ..Default::default()
});

/// The icon the web UI shows for one resource (`uploadResourceIcon`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ResourceIcon {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    /// As CloudStack names the type: VirtualMachine, Template, ISO,
    /// Volume, Zone, Account, Domain.
    pub resource_type: String,
    pub resource_uuid: String,
    /// The image, base64.
    pub image: String,
    /// The owner of the resource, for scoping.
    pub account_id: i64,
    pub domain_id: i64,
    pub created: i64,
}
entity!(ResourceIcon, Kind::ResourceIcon, |s| Index {
    ukey: Some(format!("{}/{}", s.resource_type, s.resource_uuid)),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    created: s.created,
    ..Default::default()
});

/// An account's affinity group; members are listed on the instances.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AffinityGroup {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub description: Option<String>,
    /// "host anti-affinity", "host affinity", "non-strict host anti-affinity",
    /// "non-strict host affinity"
    pub group_type: String,
    pub account_id: i64,
    pub domain_id: i64,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(AffinityGroup, Kind::AffinityGroup, |s| Index {
    ukey: live(
        &s.removed,
        format!("{}/{}", s.account_id, s.name.to_lowercase())
    ),
    name: Some(s.name.clone()),
    state: Some(if s.removed.is_some() {
        "Removed".into()
    } else {
        "Active".into()
    }),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    k1: Some(s.group_type.clone()),
    created: s.created,
    ..Default::default()
});

/// A cron schedule of a lifecycle action on an instance.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct VmSchedule {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub vm_id: i64,
    pub account_id: i64,
    pub domain_id: i64,
    /// START, STOP, REBOOT, FORCE_STOP, FORCE_REBOOT
    pub action: String,
    /// Five-field cron.
    pub schedule: String,
    pub timezone: String,
    pub description: String,
    /// Unix seconds.
    pub start_date: i64,
    pub end_date: Option<i64>,
    pub enabled: bool,
    /// The next time it falls due (unix seconds), persisted so a restart
    /// knows what it missed; None when it will not fire again.
    pub next_due: Option<i64>,
    /// The due time it last fired for.
    pub last_fired: Option<i64>,
    pub created: i64,
}
entity!(VmSchedule, Kind::VmSchedule, |s| Index {
    name: Some(s.action.clone()),
    keyword: Some(s.description.clone()),
    state: Some(if s.enabled { "Enabled" } else { "Disabled" }.into()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    parent_id: Some(s.vm_id),
    created: s.created,
    ..Default::default()
});

/// An instance snapshot: a named internal snapshot inside each of the
/// instance's volumes, with the guest's memory when `memory`. Its place in
/// the instance's tree is `parent_id`; `current` marks the one the
/// instance's state last came from or was saved to.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct VmSnapshot {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    /// The internal name, also the snapshot's name inside the volumes.
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub vm_id: i64,
    pub account_id: i64,
    pub domain_id: i64,
    pub zone_id: i64,
    /// With the guest's memory and device state (DiskAndMemory).
    pub memory: bool,
    pub quiesce: bool,
    /// Allocated, Creating, Ready, Reverting, Expunging, Error
    pub state: String,
    pub parent_id: Option<i64>,
    pub current: bool,
    /// The hypervisor's record of a snapshot with memory, given back to a
    /// host that lacks it at a revert.
    pub saved: Option<String>,
    pub created: i64,
    /// Set when deleted: kept (and not listed) as CloudStack keeps it, so
    /// its id stays known.
    pub removed: Option<i64>,
}
entity!(VmSnapshot, Kind::VmSnapshot, |s| Index {
    ukey: live(&s.removed, format!("{}/{}", s.vm_id, s.name)),
    name: Some(s.display_name.clone()),
    keyword: Some(s.description.clone()),
    state: Some(s.state.clone()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    zone_id: Some(s.zone_id),
    ref_id: s.parent_id,
    k1: Some(if s.memory { "DiskAndMemory" } else { "Disk" }.into()),
    // Removed ones hang from no instance, so its lists never see them.
    parent_id: if s.removed.is_some() {
        None
    } else {
        Some(s.vm_id)
    },
    created: s.created,
    ..Default::default()
});

/// A volume snapshot: a copy of a volume at one instant, kept in secondary
/// storage so it outlives the volume.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub name: String,
    pub volume_id: i64,
    pub account_id: i64,
    pub domain_id: i64,
    pub zone_id: i64,
    /// MANUAL, or the policy's interval (HOURLY, DAILY, WEEKLY, MONTHLY).
    pub snapshot_type: String,
    pub policy_id: Option<i64>,
    /// Allocated, Creating, BackedUp, Error, Destroyed
    pub state: String,
    /// The volume's size when taken (bytes).
    pub virtual_size: i64,
    /// Bytes the copy takes in secondary storage.
    pub physical_size: i64,
    pub quiesce: bool,
    pub created: i64,
    pub removed: Option<i64>,
}
entity!(Snapshot, Kind::Snapshot, |s| Index {
    name: Some(s.name.clone()),
    state: Some(s.state.clone()),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    zone_id: Some(s.zone_id),
    parent_id: Some(s.volume_id),
    ref_id: s.policy_id,
    k1: Some(s.snapshot_type.clone()),
    created: s.created,
    ..Default::default()
});

/// A recurring volume snapshot: one per volume and interval type.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SnapshotPolicy {
    pub id: i64,
    pub uuid: String,
    #[serde(skip)]
    pub version: i64,
    pub volume_id: i64,
    pub account_id: i64,
    pub domain_id: i64,
    /// HOURLY, DAILY, WEEKLY, MONTHLY
    pub interval_type: String,
    /// As CloudStack writes it: MM, MM:HH, MM:HH:D (day of week 1-7) or
    /// MM:HH:DD (day of month).
    pub schedule: String,
    pub timezone: String,
    pub max_snaps: i64,
    pub for_display: bool,
    /// The next time it falls due (unix seconds), persisted so a restart
    /// knows what it missed.
    pub next_due: Option<i64>,
    pub last_fired: Option<i64>,
    pub created: i64,
}
entity!(SnapshotPolicy, Kind::SnapshotPolicy, |s| Index {
    ukey: Some(format!("{}/{}", s.volume_id, s.interval_type)),
    account_id: Some(s.account_id),
    domain_id: Some(s.domain_id),
    parent_id: Some(s.volume_id),
    k2: s.next_due.map(|t| format!("{t:012}")),
    created: s.created,
    ..Default::default()
});
