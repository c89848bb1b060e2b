//! The narrow interface the agent's operations layer uses to run domains.
//! `libvirt/` is the only code that names the `virt` crate; `fake` stands in
//! for it in fast unit tests.

pub mod codes;
pub mod fake;
pub mod libvirt;

use crate::designer::HostFacts as DesignFacts;
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    /// Paused, crashed, suspended: present but not running normally.
    Other,
}

/// One domain as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    /// The coordinator's instance uuid, from the domain's Orrery metadata;
    /// None for domains Orrery did not create.
    pub instance_uuid: Option<String>,
    pub power: Power,
}

/// What the host offers: the designer's facts plus capacity.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub cpu_mhz: u64,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub libvirt_version: String,
    pub design: DesignFacts,
}

/// A guest network realised on the host (a libvirt network with DHCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    /// libvirt network name, e.g. `orrery-<first 8 of uuid>`
    pub name: String,
    pub bridge: String,
    pub gateway: String,
    pub netmask: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
}

/// A DHCP reservation: the guest with this MAC gets this address and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("domain {0} not found")]
    NotFound(String),
    #[error("operation timed out: {0}")]
    Timeout(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Any other hypervisor failure; `code` is libvirt's error code when there is one.
    #[error("hypervisor error {code}: {message}")]
    Backend { code: i32, message: String },
}

impl HvError {
    /// A stable name for the protocol's `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            HvError::NotFound(_) => "not-found",
            HvError::Timeout(_) => "timeout",
            HvError::Invalid(_) => "invalid",
            HvError::Backend { .. } => "hypervisor",
        }
    }
}

#[async_trait]
pub trait Hypervisor: Send + Sync {
    async fn host_info(&self) -> Result<HostInfo, HvError>;
    async fn domains(&self) -> Result<Vec<DomainInfo>, HvError>;
    async fn power(&self, name: &str) -> Result<Power, HvError>;
    /// Defines (or redefines) a persistent domain from XML.
    async fn define(&self, xml: &str) -> Result<(), HvError>;
    async fn start(&self, name: &str) -> Result<(), HvError>;
    /// ACPI shutdown, waiting up to `timeout` for the guest to power off, then
    /// a hard stop.
    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), HvError>;
    /// Hard stop at once.
    async fn destroy(&self, name: &str) -> Result<(), HvError>;
    /// Guest reboot without redefining the domain.
    async fn reboot(&self, name: &str) -> Result<(), HvError>;
    /// Removes the persistent definition (and NVRAM); the domain must be off.
    async fn undefine(&self, name: &str) -> Result<(), HvError>;
    async fn domain_xml(&self, name: &str) -> Result<String, HvError>;
    /// Creates and starts the network when missing; leaves a matching one alone.
    async fn ensure_network(&self, net: &NetworkDef) -> Result<(), HvError>;
    /// Adds or replaces the reservation for `host.mac` on a running network.
    async fn set_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<(), HvError>;
    async fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError>;
    /// Hot-plugs / unplugs a device given as XML on a running domain (and in its
    /// persistent definition).
    async fn attach_device(&self, name: &str, xml: &str) -> Result<(), HvError>;
    async fn detach_device(&self, name: &str, xml: &str) -> Result<(), HvError>;
    /// Tells a running domain its disk `target` (e.g. vdb) grew to `bytes`.
    async fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HvError>;
}
