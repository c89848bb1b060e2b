//! Inputs of [`super::design`]: what the coordinator asks for, what the host
//! offers, and how this agent is configured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default SMBIOS system manufacturer when the zone does not set
/// `vm.metadata.manufacturer`.
pub const DEFAULT_SMBIOS_MANUFACTURER: &str = "Orrery";

/// Default SMBIOS system product when the zone does not set
/// `vm.metadata.product`. cloud-init's CloudStack data source only activates
/// when the product name contains "CloudStack", so the default keeps it.
pub const DEFAULT_SMBIOS_PRODUCT: &str = "CloudStack KVM Hypervisor";

fn default_smbios_manufacturer() -> String {
    DEFAULT_SMBIOS_MANUFACTURER.to_string()
}

fn default_smbios_product() -> String {
    DEFAULT_SMBIOS_PRODUCT.to_string()
}

/// One instance as the coordinator wants it run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance UUID; becomes the domain UUID and the SMBIOS UUID/serial.
    pub uuid: String,
    /// libvirt domain name, e.g. `i-2-15-VM`. Also names per-instance files
    /// (console log, NVRAM), so it is restricted to file-name-safe characters.
    pub internal_name: String,
    /// User-facing name; becomes the domain title.
    pub display_name: String,
    /// The instance's Name (guest host name) as the coordinator knows it.
    pub host_name: String,
    pub vcpus: u32,
    /// Nominal per-vCPU speed sold by the service offering. The domain
    /// definition does not express it.
    pub cpu_speed_mhz: u32,
    pub memory_mib: u64,
    /// The most vCPUs a dynamically scalable instance may be given while it
    /// runs; the domain starts with `vcpus` of them online and the rest
    /// ready to be plugged in. None, or `vcpus`: no room to grow.
    #[serde(default)]
    pub max_vcpus: Option<u32>,
    /// The most memory a dynamically scalable instance may reach while it
    /// runs, by memory modules plugged in; it starts with `memory_mib`.
    /// None, or `memory_mib`: no room to grow.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Guest OS type description, e.g. "Other Linux (64-bit)".
    pub os_type: String,
    #[serde(default)]
    pub boot_mode: BootMode,
    #[serde(default)]
    pub tpm: bool,
    pub volumes: Vec<VolumeSpec>,
    /// Host path of an ISO to insert in the CD-ROM drive.
    #[serde(default)]
    pub cdrom: Option<String>,
    /// Host path of the instance's config drive image (label config-2),
    /// in a second CD-ROM drive.
    #[serde(default)]
    pub config_drive: Option<String>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    pub vnc_password: String,
    #[serde(default)]
    pub gpu: Option<GpuSpec>,
    /// Instance details (CloudStack `details` map), e.g.
    /// `rootDiskController`, `nicAdapter`, `video.hardware`,
    /// `cpu.corespersocket`. Keys the designer does not know are ignored.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Raw XML fragments appended to `<devices>`.
    #[serde(default)]
    pub extraconfig: Vec<String>,
    /// Whether the caller who deployed the instance was an administrator;
    /// extra configuration is honoured only then.
    #[serde(default)]
    pub caller_is_admin: bool,
    /// From the zone setting `vm.metadata.manufacturer`.
    #[serde(default = "default_smbios_manufacturer")]
    pub smbios_manufacturer: String,
    /// From the zone setting `vm.metadata.product`.
    #[serde(default = "default_smbios_product")]
    pub smbios_product: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum BootMode {
    #[default]
    Bios,
    Uefi {
        secure: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    Root,
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeFormat {
    Qcow2,
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Volume UUID; its alphanumeric characters become the disk serial.
    pub id: String,
    pub kind: VolumeKind,
    /// Image file or block device on the host.
    pub path: String,
    pub format: VolumeFormat,
    /// Position among the instance's volumes; data disks are attached in
    /// this order.
    pub device_id: u32,
    #[serde(default)]
    pub read_bytes_sec: Option<u64>,
    #[serde(default)]
    pub write_bytes_sec: Option<u64>,
    #[serde(default)]
    pub read_iops_sec: Option<u64>,
    #[serde(default)]
    pub write_iops_sec: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    pub mac: String,
    /// libvirt network the NIC attaches to.
    pub network: String,
    pub is_default: bool,
    /// Address the coordinator assigned; informational only, the guest gets
    /// it from DHCP or configuration.
    #[serde(default)]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpuSpec {
    /// Whole PCI functions (`DDDD:BB:SS.F` or `BB:SS.F`) assigned to the guest.
    Passthrough { pci_addresses: Vec<String> },
    /// A mediated device. The domain refers to it by UUID only; `mdev_type`
    /// (e.g. `nvidia-63`) is what the device must be created with on the
    /// host before the domain starts.
    Mdev { uuid: String, mdev_type: String },
}

/// What the host offers, as far as designing a domain is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Domain types libvirt reports for the host, e.g. `["kvm", "qemu"]`.
    pub domain_types: Vec<String>,
    /// Host/guest architecture, e.g. `x86_64`.
    pub arch: String,
    /// Machine types the emulator offers, including aliases such as `pc` and
    /// `q35`.
    pub machine_types: Vec<String>,
    #[serde(default)]
    pub emulator: Option<String>,
    /// UEFI firmware images installed on the host.
    #[serde(default)]
    pub firmware: Vec<Firmware>,
    /// Whether a TPM emulator (swtpm) is available.
    #[serde(default)]
    pub tpm_supported: bool,
    /// Host CPU model name, for reporting.
    #[serde(default)]
    pub cpu_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// Read-only code image, e.g. `/usr/share/OVMF/OVMF_CODE_4M.secboot.fd`.
    pub loader: String,
    /// Variable store template matching the loader.
    #[serde(default)]
    pub nvram_template: Option<String>,
    /// Whether the image enforces Secure Boot (and therefore needs SMM).
    pub secure_boot: bool,
}

/// Agent-side settings that shape every domain on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DesignConfig {
    /// Serial console output goes to `<dir>/<internal name>.log`.
    pub console_log_dir: String,
    /// Address VNC servers listen on.
    pub vnc_listen: String,
    /// Use this domain type instead of the preferred one; it must still be
    /// one the host offers (e.g. `qemu` in a lab without nested KVM).
    pub forced_domain_type: Option<String>,
    /// Directory of per-instance UEFI variable stores.
    pub nvram_dir: String,
}

impl Default for DesignConfig {
    fn default() -> Self {
        DesignConfig {
            console_log_dir: "/var/log/orrery/console".to_string(),
            vnc_listen: "127.0.0.1".to_string(),
            forced_domain_type: None,
            nvram_dir: "/var/lib/libvirt/qemu/nvram".to_string(),
        }
    }
}
