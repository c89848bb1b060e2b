//! [`Hypervisor`] on libvirt, through the `virt` crate. This is the only
//! module that names `virt`.
//!
//! Threading: every libvirt call is blocking FFI, so each trait method runs
//! its calls inside one `tokio::task::spawn_blocking` closure. A libvirt
//! connection is thread-safe (`virt::connect::Connect` is `Send + Sync`
//! and reference-counted), so one connection is shared by all of them
//! rather than kept on a dedicated thread. libvirt reports errors through
//! thread-local state, which is why a call and the reading of its error
//! must stay on one thread, as they do inside a closure.
//!
//! Reconnection: before each use the connection is asked whether it is
//! still alive (a local check, no round trip); a dead one (libvirtd
//! restarted) is replaced by a fresh connection to the same URI. A call
//! that was in flight when the daemon went away fails; the next one
//! reconnects.
//!
//! Statistics: one bulk call per pass for every active domain; see
//! [`stats`].
//!
//! Waiting: a graceful shutdown polls the domain's state from the async
//! side between short blocking calls, so no thread is held while a guest
//! takes its time to power off.

mod caps;
mod netxml;
mod snapshots;
pub mod stats;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use async_trait::async_trait;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState, DomainStateEnum};
use virt::error::Error as VirtError;
use virt::network::Network;
use virt::sys;

use super::codes;
use super::{
    DhcpHost, DomainCounters, DomainInfo, HostInfo, HvError, Hypervisor, JobProgress,
    MigrationPlan, NetworkDef, Power,
};
use crate::domxml;
use crate::host::kvm::DeviceProbe;
use netxml::{HostXml, NetworkXml};

/// How often a domain's state is checked while waiting for it to stop.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often a graceful stop presses the power button again while the
/// guest stays on.
const POWER_BUTTON_AGAIN: Duration = Duration::from_secs(10);

/// Interface names are limited to IFNAMSIZ - 1 bytes.
const MAX_BRIDGE_NAME: usize = 15;

/// How long the KVM probe's guest must keep running: QEMU fails either
/// while starting (libvirt then reports its error) or as the first vCPU
/// runs, which pauses or stops the guest within moments.
const KVM_PROBE_WATCH: Duration = Duration::from_millis(600);

/// What a call was about, to turn a missing domain into `NotFound`.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Domain(&'a str),
    /// The host, a network: libvirt's message names the object.
    Other,
}

/// Maps a libvirt error by its number: a missing domain is `NotFound`, a
/// timeout `Timeout`, malformed XML `Invalid`, everything else `Backend`
/// with libvirt's number (see [`codes`]).
fn map_err(e: VirtError, subject: Subject<'_>) -> HvError {
    let code = e.code().to_raw() as i32;
    let message = e.message().to_string();
    match code {
        codes::NO_DOMAIN => match subject {
            Subject::Domain(name) => HvError::NotFound(name.to_string()),
            _ => HvError::backend(code, message),
        },
        codes::OPERATION_TIMEOUT => HvError::Timeout(message),
        _ if code == codes::XML_ERROR
            || code == sys::VIR_ERR_XML_DETAIL as i32
            || code == sys::VIR_ERR_XML_INVALID_SCHEMA as i32 =>
        {
            HvError::Invalid(message)
        }
        _ => HvError::backend(code, message),
    }
}

fn power_of(state: DomainStateEnum) -> Power {
    match state.known() {
        // `Shutdown` is "being shut down": the guest still runs.
        Some(DomainState::Running | DomainState::Blocked | DomainState::Shutdown) => Power::On,
        Some(DomainState::Shutoff) => Power::Off,
        _ => Power::Other,
    }
}

/// A driver that does not know a flag rejects the call with one of these;
/// the caller then retries with the driver's default behaviour.
fn flags_unsupported(e: &VirtError) -> bool {
    let code = e.code().to_raw() as i32;
    code == codes::INVALID_ARG || code == sys::VIR_ERR_ARGUMENT_UNSUPPORTED as i32
}

fn not_running(name: &str) -> HvError {
    HvError::backend(
        codes::OPERATION_INVALID,
        format!("Requested operation is not valid: domain '{name}' is not running"),
    )
}

/// Whether `uri` names the hypervisor on this machine (no host part), so
/// its devices are this machine's.
fn uri_is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => rest.starts_with('/') || rest.is_empty(),
        None => true,
    }
}

/// The KVM probe's guest: no disk, no network, the smallest memory SeaBIOS
/// runs in, and the CPU mode the designer gives KVM guests, since that is
/// what fails where KVM is incomplete (QEMU cannot set the host's MSRs).
/// It boots nothing and loops in the firmware until destroyed.
fn kvm_probe_xml(name: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <cpu mode='host-passthrough'/><os><type>hvm</type></os>\
         <on_crash>destroy</on_crash><devices><memballoon model='none'/></devices></domain>"
    )
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1000) % 1000, v % 1000)
}

/// One libvirt connection, reopened when it dies.
struct Connection {
    uri: String,
    current: Mutex<Option<Connect>>,
}

impl Connection {
    fn open(uri: &str) -> Result<Connect, HvError> {
        Connect::open(Some(uri)).map_err(|e| map_err(e, Subject::Other))
    }

    fn get(&self) -> Result<Connect, HvError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = current.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost, reconnecting");
        }
        let fresh = Connection::open(&self.uri)?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

/// A host's libvirt, e.g. `qemu:///system`.
pub struct LibvirtHypervisor {
    conn: Arc<Connection>,
    /// Root under which QEMU's firmware descriptors are read.
    host_root: PathBuf,
    /// Serialises network changes made by this agent: each is a
    /// read-check-write sequence over several libvirt calls.
    network_lock: tokio::sync::Mutex<()>,
}

static SILENCE_DEFAULT_ERROR_HANDLER: Once = Once::new();

impl LibvirtHypervisor {
    /// One press of the guest's ACPI power button (libvirt's default
    /// shutdown where the flag is not supported).
    async fn press_power_button(&self, name: &str) -> Result<(), HvError> {
        let owned = name.to_string();
        self.call(move |c| {
            let subject = Subject::Domain(&owned);
            let d = c
                .lookup_domain_by_name(&owned)
                .map_err(|e| map_err(e, subject))?;
            // Checked here so every driver answers alike (the test driver
            // reports an internal error instead).
            if power_of(d.info().map_err(|e| map_err(e, subject))?.state) == Power::Off {
                return Err(not_running(&owned));
            }
            d.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                .or_else(|e| {
                    if flags_unsupported(&e) {
                        d.shutdown()
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| map_err(e, subject))
        })
        .await
    }

    pub async fn connect(uri: &str) -> Result<Self, HvError> {
        // libvirt's default handler prints every error to stderr, including
        // the expected ones (a lookup of a domain that is not there); errors
        // are reported through return values instead.
        SILENCE_DEFAULT_ERROR_HANDLER.call_once(virt::error::clear_error_callback);
        let owned = uri.to_string();
        let conn = tokio::task::spawn_blocking(move || Connection::open(&owned))
            .await
            .map_err(join_error)??;
        Ok(LibvirtHypervisor {
            conn: Arc::new(Connection {
                uri: uri.to_string(),
                current: Mutex::new(Some(conn)),
            }),
            host_root: PathBuf::from("/"),
            network_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads host files (firmware descriptors) under `root` instead of `/`.
    pub fn with_host_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.host_root = root.into();
        self
    }

    pub fn uri(&self) -> &str {
        &self.conn.uri
    }

    async fn call<T, F>(&self, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> Result<T, HvError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let c = conn.get()?;
            f(&c)
        })
        .await
        .map_err(join_error)?
    }

    /// Runs `f` on the named domain.
    async fn with_domain<T, F>(&self, name: &str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain, &str) -> Result<T, VirtError> + Send + 'static,
    {
        let name = name.to_string();
        self.call(move |c| {
            let subject = Subject::Domain(&name);
            let dom = c
                .lookup_domain_by_name(&name)
                .map_err(|e| map_err(e, subject))?;
            f(&dom, &name).map_err(|e| map_err(e, subject))
        })
        .await
    }

    /// Runs `f` on the named domain, `f` mapping its own errors.
    async fn with_domain_hv<T, F>(&self, name: &str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain) -> Result<T, HvError> + Send + 'static,
    {
        let name = name.to_string();
        self.call(move |c| {
            let dom = c
                .lookup_domain_by_name(&name)
                .map_err(|e| map_err(e, Subject::Domain(&name)))?;
            f(&dom)
        })
        .await
    }

    /// Runs `f` on the named network, which must exist.
    async fn with_network<T, F>(&self, name: &str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&Network, &str) -> Result<T, HvError> + Send + 'static,
    {
        let name = name.to_string();
        self.call(move |c| {
            let net = c
                .lookup_network_by_name(&name)
                .map_err(|e| map_err(e, Subject::Other))?;
            f(&net, &name)
        })
        .await
    }
}

/// libvirt's flags for a plan: always live, peer to peer (the source's
/// libvirt opens the destination with its own client certificate), the
/// definition moved (persistent there, undefined here).
fn migrate_flags(plan: &MigrationPlan) -> u32 {
    let mut f = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE
        | sys::VIR_MIGRATE_AUTO_CONVERGE;
    if plan.tls {
        f |= sys::VIR_MIGRATE_TLS;
    }
    if plan.copy_storage {
        f |= sys::VIR_MIGRATE_NON_SHARED_DISK;
    }
    if plan.shared_storage {
        // libvirt refuses disks it does not copy unless it recognises their
        // file system as shared; the coordinator knows the pool is. With
        // storage copied this covers the disks that stay where they are.
        f |= sys::VIR_MIGRATE_UNSAFE;
    }
    f
}

/// libvirt's parameters for a plan. A destination definition serves as
/// both the live and the persistent one: without the persistent one,
/// libvirt would persist the source's definition there, naming files that
/// are not where the disks went.
fn migrate_params(plan: &MigrationPlan) -> virt::domain::MigrateParameters {
    virt::domain::MigrateParameters {
        uri: plan.migrate_uri.clone(),
        bandwidth: plan.bandwidth_mib,
        dest_xml: plan.dest_xml.clone(),
        persist_xml: plan.dest_xml.clone(),
        migrate_disks: if plan.copy_storage {
            plan.migrate_disks.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

fn join_error(e: tokio::task::JoinError) -> HvError {
    HvError::backend(
        codes::OPERATION_FAILED,
        format!("libvirt call did not complete: {e}"),
    )
}

fn host_info_blocking(c: &Connect, host_root: &std::path::Path) -> Result<HostInfo, HvError> {
    let host = |e| map_err(e, Subject::Other);
    let node = c.node_info().map_err(host)?;
    let hostname = c.hostname().map_err(host)?;
    let version = c.lib_version().map_err(host)?;
    let capabilities = caps::parse_capabilities(&c.capabilities().map_err(host)?)
        .map_err(|m| HvError::backend(codes::XML_ERROR, m))?;
    // Firmware and TPM support depend on the accelerator and machine type
    // asked about: the preferred accelerator, and q35 because only it
    // offers Secure Boot images (SMM).
    let virt_type = ["kvm", "qemu"]
        .into_iter()
        .find(|t| capabilities.domain_types.iter().any(|d| d == t));
    let machine = capabilities
        .machine_types
        .iter()
        .any(|m| m == "q35")
        .then_some("q35");
    let domcaps = match c.domain_capabilities(None, Some(&capabilities.arch), machine, virt_type, 0)
    {
        Ok(xml) => caps::parse_domain_capabilities(&xml)
            .map_err(|m| HvError::backend(codes::XML_ERROR, m))?,
        Err(e) => {
            // Older or non-QEMU drivers lack domain capabilities; the host
            // can still run BIOS guests without a TPM.
            tracing::warn!(error = %e, "no domain capabilities; assuming no UEFI firmware and no TPM");
            caps::DomainCapabilities::default()
        }
    };
    let descriptors = crate::host::firmware_descriptors(host_root);
    let design = caps::host_facts(&capabilities, &domcaps, &descriptors);
    Ok(HostInfo {
        hostname,
        cpus: node.cpus,
        cpu_mhz: u64::from(node.mhz),
        // The node info's "model" is the architecture (x86_64); the CPU
        // model name is in the capabilities.
        cpu_model: capabilities.cpu_model.clone().unwrap_or(node.model),
        // libvirt reports KiB.
        memory_bytes: node.memory.saturating_mul(1024),
        libvirt_version: version_string(version),
        design,
        emulator_user: capabilities.emulator_user,
    })
}

fn domain_info(dom: &Domain) -> Result<DomainInfo, VirtError> {
    let name = dom.name()?;
    let power = power_of(dom.info()?.state);
    let xml = dom.xml_desc(0)?;
    let instance_uuid = match domxml::orrery_metadata(&xml) {
        Ok(meta) => meta.map(|m| m.instance_uuid),
        Err(e) => {
            tracing::warn!(domain = %name, error = %e, "unreadable domain XML; treating it as foreign");
            None
        }
    };
    Ok(DomainInfo {
        name,
        instance_uuid,
        power,
    })
}

fn validate_network(def: &NetworkDef) -> Result<(), HvError> {
    let bad = |what: String| Err(HvError::Invalid(format!("network {}: {what}", def.name)));
    if def.name.is_empty() || def.name.contains('/') {
        return bad("name must be non-empty and contain no '/'".to_string());
    }
    if def.bridge.is_empty()
        || def.bridge.len() > MAX_BRIDGE_NAME
        || !def
            .bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad(format!(
            "bridge {:?} must be 1 to {MAX_BRIDGE_NAME} characters of A-Z a-z 0-9 - _ .",
            def.bridge
        ));
    }
    for (field, value) in [
        ("gateway", &def.gateway),
        ("netmask", &def.netmask),
        ("dhcp_start", &def.dhcp_start),
        ("dhcp_end", &def.dhcp_end),
    ] {
        if value.parse::<Ipv4Addr>().is_err() {
            return bad(format!("{field} {value:?} is not an IPv4 address"));
        }
    }
    Ok(())
}

fn validate_dhcp_host(host: &DhcpHost) -> Result<(), HvError> {
    let mac_ok = host.mac.len() == 17
        && host.mac.split(':').count() == 6
        && host
            .mac
            .split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !mac_ok {
        return Err(HvError::Invalid(format!(
            "{:?} is not a MAC address",
            host.mac
        )));
    }
    if host.ip.parse::<Ipv4Addr>().is_err() {
        return Err(HvError::Invalid(format!(
            "{:?} is not an IPv4 address",
            host.ip
        )));
    }
    Ok(())
}

/// Which sides of a network a change must reach: always the persistent
/// definition, and the running dnsmasq too when the network is up.
fn update_flags(net: &Network) -> Result<sys::virNetworkUpdateFlags, VirtError> {
    let mut flags = sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
    if net.is_active()? {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
    }
    Ok(flags)
}

fn update_dhcp_host(
    net: &Network,
    command: sys::virNetworkUpdateCommand,
    host: &HostXml,
    flags: sys::virNetworkUpdateFlags,
) -> Result<(), HvError> {
    // -1: libvirt picks the <ip> element that has a <dhcp> section.
    net.update(
        command,
        sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        &host.to_xml(),
        flags,
    )
    .map_err(|e| map_err(e, Subject::Other))
}

fn config_of(net: &Network) -> Result<NetworkXml, HvError> {
    let xml = net
        .xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
        .or_else(|e| {
            // Drivers without separate live and persistent definitions
            // (the test driver) refuse the flag; theirs is the only one.
            if flags_unsupported(&e) {
                net.xml_desc(0)
            } else {
                Err(e)
            }
        })
        .map_err(|e| map_err(e, Subject::Other))?;
    NetworkXml::parse(&xml).map_err(|m| HvError::backend(codes::XML_ERROR, m))
}

/// Every running network as libvirt describes it live; those that cannot be
/// read (stopped meanwhile) are left out, since this only serves to explain
/// an error.
fn active_networks(c: &Connect) -> Vec<NetworkXml> {
    c.list_all_networks(sys::VIR_CONNECT_LIST_NETWORKS_ACTIVE)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| NetworkXml::parse(&n.xml_desc(0).ok()?).ok())
        .collect()
}

/// Device changes reach the persistent definition always, and the running
/// guest when there is one.
fn device_flags(dom: &Domain) -> Result<u32, VirtError> {
    let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if dom.is_active()? {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    Ok(flags)
}

#[async_trait]
impl Hypervisor for LibvirtHypervisor {
    async fn host_info(&self) -> Result<HostInfo, HvError> {
        let root = self.host_root.clone();
        self.call(move |c| host_info_blocking(c, &root)).await
    }

    async fn domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        self.call(|c| {
            // 0: active and inactive, persistent and transient.
            let all = c
                .list_all_domains(0)
                .map_err(|e| map_err(e, Subject::Other))?;
            let mut out = Vec::with_capacity(all.len());
            for dom in &all {
                match domain_info(dom) {
                    Ok(info) => out.push(info),
                    // Undefined between listing and reading: no longer there.
                    Err(e) if e.code().to_raw() as i32 == codes::NO_DOMAIN => {}
                    Err(e) => return Err(map_err(e, Subject::Other)),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn power(&self, name: &str) -> Result<Power, HvError> {
        // `virDomainGetInfo` rather than `virDomainGetState`: the crate's
        // wrapper of the latter drops its error.
        self.with_domain(name, |d, _| Ok(power_of(d.info()?.state)))
            .await
    }

    async fn define(&self, xml: &str) -> Result<(), HvError> {
        let xml = xml.to_string();
        self.call(move |c| {
            // VALIDATE checks the document against libvirt's schema, so a
            // misspelt element is an error instead of being dropped.
            c.define_domain_xml_flags(&xml, sys::VIR_DOMAIN_DEFINE_VALIDATE)
                .map(drop)
                .map_err(|e| map_err(e, Subject::Other))
        })
        .await
    }

    async fn start(&self, name: &str) -> Result<(), HvError> {
        let owned = name.to_string();
        self.call(move |c| {
            let subject = Subject::Domain(&owned);
            let d = c
                .lookup_domain_by_name(&owned)
                .map_err(|e| map_err(e, subject))?;
            // As in `shutdown`: the same answer from every driver.
            if d.is_active().map_err(|e| map_err(e, subject))? {
                return Err(HvError::backend(
                    codes::OPERATION_INVALID,
                    format!(
                        "Requested operation is not valid: domain '{owned}' is already running"
                    ),
                ));
            }
            d.create().map(drop).map_err(|e| map_err(e, subject))
        })
        .await
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), HvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.press_power_button(name).await?;
        let mut next_press = tokio::time::Instant::now() + POWER_BUTTON_AGAIN;
        loop {
            match self.power(name).await {
                Ok(Power::Off) => return Ok(()),
                // A transient domain disappears once it stops.
                Err(HvError::NotFound(_)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_press {
                // A guest still booting may not listen to the button yet
                // (its ACPI handler not started): pressed again, as a
                // person at the machine would, until the timeout.
                match self.press_power_button(name).await {
                    Ok(()) => {}
                    Err(HvError::NotFound(_)) => return Ok(()),
                    Err(e) if e.is_operation_invalid() => {}
                    Err(e) => return Err(e),
                }
                next_press = now + POWER_BUTTON_AGAIN;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
        tracing::warn!(domain = %name, ?timeout, "guest did not power off, stopping it hard");
        match self.destroy(name).await {
            Ok(()) | Err(HvError::NotFound(_)) => Ok(()),
            // It powered off between the last check and the destroy.
            Err(e) if e.is_operation_invalid() && self.power(name).await? == Power::Off => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn destroy(&self, name: &str) -> Result<(), HvError> {
        self.with_domain(name, |d, _| d.destroy()).await
    }

    async fn reboot(&self, name: &str) -> Result<(), HvError> {
        // ACPI: the guest reboots cleanly if it listens to the power button.
        // libvirt presses it and restarts the guest once it powers off, so
        // this works under emulation too.
        self.with_domain(name, |d, _| {
            d.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
                .or_else(|e| {
                    if flags_unsupported(&e) {
                        d.reboot(0)
                    } else {
                        Err(e)
                    }
                })
        })
        .await
    }

    async fn undefine(&self, name: &str) -> Result<(), HvError> {
        let name = name.to_string();
        self.call(move |c| {
            let subject = Subject::Domain(&name);
            let d = c
                .lookup_domain_by_name(&name)
                .map_err(|e| map_err(e, subject))?;
            // libvirt would turn a running persistent domain into a
            // transient one; the contract is that it must be off.
            if d.is_active().map_err(|e| map_err(e, subject))? {
                return Err(HvError::backend(
                    codes::OPERATION_INVALID,
                    format!("Requested operation is not valid: domain '{name}' is running"),
                ));
            }
            // With the domain go its UEFI variable store and whatever
            // libvirt keeps about it (saved state, snapshot and checkpoint
            // records); the disks are the caller's.
            d.undefine_flags(
                sys::VIR_DOMAIN_UNDEFINE_NVRAM
                    | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
            )
            .or_else(|e| {
                // Drivers without such state (the test driver) reject the
                // flags.
                if flags_unsupported(&e) {
                    d.undefine()
                } else {
                    Err(e)
                }
            })
            .map_err(|e| map_err(e, subject))
        })
        .await
    }

    async fn domain_xml(&self, name: &str) -> Result<String, HvError> {
        // Flags 0: the live definition of a running domain, without secrets
        // such as the VNC password.
        self.with_domain(name, |d, _| d.xml_desc(0)).await
    }

    async fn migratable_xml(&self, name: &str) -> Result<String, HvError> {
        self.with_domain(name, |d, _| {
            d.xml_desc(sys::VIR_DOMAIN_XML_SECURE | sys::VIR_DOMAIN_XML_MIGRATABLE)
        })
        .await
    }

    async fn ensure_network(&self, net: &NetworkDef) -> Result<(), HvError> {
        validate_network(net)?;
        let _guard = self.network_lock.lock().await;
        let def = net.clone();
        self.call(move |c| {
            let subject = Subject::Other;
            let network = match c.lookup_network_by_name(&def.name) {
                Ok(existing) => {
                    let diffs = config_of(&existing)?.differences(&def);
                    if !diffs.is_empty() {
                        return Err(HvError::Invalid(format!(
                            "network {} exists with a different definition: {}",
                            def.name,
                            diffs.join("; ")
                        )));
                    }
                    existing
                }
                Err(e) if e.code().to_raw() as i32 == codes::NO_NETWORK => c
                    .define_network_xml(&NetworkXml::from_def(&def).to_xml())
                    .map_err(|e| map_err(e, subject))?,
                Err(e) => return Err(map_err(e, subject)),
            };
            if !network.autostart().map_err(|e| map_err(e, subject))? {
                network
                    .set_autostart(true)
                    .map_err(|e| map_err(e, subject))?;
            }
            if !network.is_active().map_err(|e| map_err(e, subject))? {
                if let Err(e) = network.create() {
                    if let Some(iface) = netxml::interface_in_use(e.message()) {
                        let explained =
                            netxml::explain_in_use(&def, iface, &active_networks(c), e.message());
                        return Err(HvError::backend(e.code().to_raw() as i32, explained));
                    }
                    return Err(map_err(e, subject));
                }
            }
            Ok(())
        })
        .await
    }

    async fn set_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<(), HvError> {
        validate_dhcp_host(host)?;
        let _guard = self.network_lock.lock().await;
        let host = host.clone();
        self.with_network(network, move |net, name| {
            let flags = update_flags(net).map_err(|e| map_err(e, Subject::Other))?;
            let config = config_of(net)?;
            let existing = config.dhcp_hosts();
            if existing.iter().any(|h| h.is(&host)) {
                return Ok(());
            }
            // libvirt refuses an entry whose address or name another MAC
            // already holds. The coordinator has handed both to this MAC,
            // so such entries are stale (an instance that is gone).
            for stale in existing.iter().filter(|h| {
                !h.has_mac(&host.mac)
                    && (h.ip.as_deref() == Some(host.ip.as_str())
                        || (!host.name.is_empty() && h.name.as_deref() == Some(host.name.as_str())))
            }) {
                tracing::info!(network = %name, mac = ?stale.mac, ip = ?stale.ip, "removing stale DHCP reservation");
                update_dhcp_host(net, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, stale, flags)?;
            }
            let command = if existing.iter().any(|h| h.has_mac(&host.mac)) {
                sys::VIR_NETWORK_UPDATE_COMMAND_MODIFY
            } else {
                sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
            };
            update_dhcp_host(net, command, &HostXml::from(&host), flags)
        })
        .await
    }

    async fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError> {
        let _guard = self.network_lock.lock().await;
        let mac = mac.to_string();
        self.with_network(network, move |net, _| {
            let flags = update_flags(net).map_err(|e| map_err(e, Subject::Other))?;
            // Deleting needs the entry as stored: libvirt matches every
            // attribute given.
            for h in config_of(net)?
                .dhcp_hosts()
                .iter()
                .filter(|h| h.has_mac(&mac))
            {
                update_dhcp_host(net, sys::VIR_NETWORK_UPDATE_COMMAND_DELETE, h, flags)?;
            }
            Ok(())
        })
        .await
    }

    async fn attach_device(&self, name: &str, xml: &str) -> Result<(), HvError> {
        let xml = xml.to_string();
        self.with_domain(name, move |d, _| {
            d.attach_device_flags(&xml, device_flags(d)?)
        })
        .await
    }

    async fn detach_device(&self, name: &str, xml: &str) -> Result<(), HvError> {
        let xml = xml.to_string();
        // Live detach asks the guest to release the device; libvirt waits a
        // few seconds for it and otherwise returns with the removal still
        // pending, to complete whenever the guest acknowledges it.
        self.with_domain(name, move |d, _| {
            d.detach_device_flags(&xml, device_flags(d)?)
        })
        .await
    }

    async fn set_vcpus(&self, name: &str, vcpus: u32) -> Result<(), HvError> {
        // LIVE plugs the vCPUs into the guest (libvirt refuses it for a
        // domain that is not running); CONFIG keeps the count in the
        // persistent definition, so a reboot does not take them away.
        self.with_domain(name, move |d, _| {
            d.set_vcpus_flags(
                vcpus,
                sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG,
            )
        })
        .await
    }

    async fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HvError> {
        let target = target.to_string();
        self.with_domain(name, move |d, _| {
            d.block_resize(&target, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        })
        .await
    }

    async fn domain_counters(&self, disks: bool) -> Result<Vec<DomainCounters>, HvError> {
        self.call(move |c| stats::domain_counters_blocking(c, disks))
            .await
    }

    async fn migrate(&self, name: &str, plan: &MigrationPlan) -> Result<(), HvError> {
        let plan = plan.clone();
        self.with_domain(name, move |d, _| {
            if let Some(ms) = plan.max_downtime_ms {
                d.migrate_set_max_downtime(ms, 0)?;
            }
            d.migrate_to_uri3(
                Some(plan.destination_uri.as_str()),
                migrate_params(&plan),
                migrate_flags(&plan),
            )
        })
        .await
    }

    async fn abort_job(&self, name: &str) -> Result<(), HvError> {
        self.with_domain(name, |d, _| {
            // SAFETY: `d` is a live domain handle for the whole call; the
            // function takes no other pointers.
            let rc = unsafe { sys::virDomainAbortJob(d.as_ptr()) };
            if rc < 0 {
                Err(VirtError::last_error())
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn job_progress(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        self.with_domain(name, |d, _| {
            let j = d.job_info()?;
            if j.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
                return Ok(None);
            }
            Ok(Some(JobProgress {
                processed: j.data_processed.unwrap_or(0),
                total: j.data_total.unwrap_or(0),
                remaining: j.data_remaining,
            }))
        })
        .await
    }

    async fn snapshot_with_memory(&self, name: &str, snap: &str) -> Result<String, HvError> {
        let snap = snap.to_string();
        self.with_domain_hv(name, move |d| snapshots::create_with_memory(d, &snap))
            .await
    }

    async fn snapshot_disks(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let snap = snap.to_string();
        self.with_domain_hv(name, move |d| snapshots::create_disks(d, &snap))
            .await
    }

    async fn revert_with_memory(&self, name: &str, snap: &str, saved: &str) -> Result<(), HvError> {
        let (snap, saved) = (snap.to_string(), saved.to_string());
        self.with_domain_hv(name, move |d| {
            snapshots::revert_with_memory(d, &snap, &saved)
        })
        .await
    }

    async fn delete_snapshot_live(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let snap = snap.to_string();
        self.with_domain_hv(name, move |d| snapshots::delete_live(d, &snap))
            .await
    }

    async fn forget_snapshot(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let snap = snap.to_string();
        self.with_domain_hv(name, move |d| snapshots::forget(d, &snap))
            .await
    }

    async fn forget_snapshots(&self, name: &str) -> Result<u32, HvError> {
        self.with_domain_hv(name, snapshots::forget_all).await
    }

    async fn fs_freeze(&self, name: &str, freeze: bool) -> Result<u32, HvError> {
        self.with_domain_hv(name, move |d| snapshots::fs_freeze(d, freeze))
            .await
    }

    async fn probe_kvm(&self) -> Result<(), HvError> {
        let failed = |m: String| HvError::backend(codes::OPERATION_FAILED, m);
        if uri_is_local(self.uri()) {
            let device = self.host_root.join("dev/kvm");
            match tokio::task::spawn_blocking(move || crate::host::kvm::probe_device(&device))
                .await
                .map_err(join_error)?
            {
                DeviceProbe::Works => {}
                DeviceProbe::Unusable(why) => return Err(failed(why)),
                // QEMU may be allowed what the agent is not; the guest tells.
                DeviceProbe::Unknown(why) => tracing::debug!(%why, "KVM device not probed"),
            }
        }
        let name = format!("orrery-kvm-probe-{}", std::process::id());
        let xml = kvm_probe_xml(&name);
        let owned = name.clone();
        self.call(move |c| {
            // A guest left by an earlier run of an agent with this pid.
            if let Ok(old) = c.lookup_domain_by_name(&owned) {
                let _ = old.destroy();
            }
            // Transient, and destroyed by libvirt should this connection
            // close before the probe does.
            c.create_domain_xml(&xml, sys::VIR_DOMAIN_START_AUTODESTROY)
                .map(drop)
                .map_err(|e| map_err(e, Subject::Other))
        })
        .await?;
        tokio::time::sleep(KVM_PROBE_WATCH).await;
        let state = self
            .with_domain(&name, |d, _| d.info().map(|i| i.state))
            .await;
        let _ = self.destroy(&name).await;
        match state {
            Ok(s) if s.known() == Some(DomainState::Running) => Ok(()),
            Ok(s) => Err(failed(format!(
                "the guest left the running state right after starting ({:?})",
                s.known()
            ))),
            Err(HvError::NotFound(_)) => {
                Err(failed("the guest stopped right after starting".to_string()))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_numbers_match_libvirt() {
        assert_eq!(codes::INTERNAL_ERROR, sys::VIR_ERR_INTERNAL_ERROR as i32);
        assert_eq!(codes::INVALID_ARG, sys::VIR_ERR_INVALID_ARG as i32);
        assert_eq!(
            codes::OPERATION_FAILED,
            sys::VIR_ERR_OPERATION_FAILED as i32
        );
        assert_eq!(codes::XML_ERROR, sys::VIR_ERR_XML_ERROR as i32);
        assert_eq!(codes::NO_DOMAIN, sys::VIR_ERR_NO_DOMAIN as i32);
        assert_eq!(codes::NO_NETWORK, sys::VIR_ERR_NO_NETWORK as i32);
        assert_eq!(
            codes::OPERATION_INVALID,
            sys::VIR_ERR_OPERATION_INVALID as i32
        );
        assert_eq!(
            codes::OPERATION_TIMEOUT,
            sys::VIR_ERR_OPERATION_TIMEOUT as i32
        );
        assert_eq!(codes::DEVICE_MISSING, sys::VIR_ERR_DEVICE_MISSING as i32);
    }

    #[test]
    fn migration_flags_follow_the_plan() {
        let plan = MigrationPlan {
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            migrate_uri: Some("tcp://10.99.0.2".into()),
            tls: true,
            copy_storage: false,
            shared_storage: true,
            max_downtime_ms: None,
            bandwidth_mib: None,
            dest_xml: None,
            migrate_disks: Vec::new(),
        };
        let f = migrate_flags(&plan);
        for must in [
            sys::VIR_MIGRATE_LIVE,
            sys::VIR_MIGRATE_PEER2PEER,
            sys::VIR_MIGRATE_PERSIST_DEST,
            sys::VIR_MIGRATE_UNDEFINE_SOURCE,
            sys::VIR_MIGRATE_TLS,
            sys::VIR_MIGRATE_UNSAFE,
        ] {
            assert_ne!(f & must, 0, "{must:#x}");
        }
        assert_eq!(f & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        let plain_copy = migrate_flags(&MigrationPlan {
            tls: false,
            copy_storage: true,
            shared_storage: false,
            ..plan.clone()
        });
        assert_eq!(plain_copy & sys::VIR_MIGRATE_TLS, 0);
        assert_ne!(plain_copy & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        // Copied disks are not shared: libvirt's safety check stays on.
        assert_eq!(plain_copy & sys::VIR_MIGRATE_UNSAFE, 0);
        // Some disks copied, the others on shared storage: both.
        let partial_copy = migrate_flags(&MigrationPlan {
            copy_storage: true,
            shared_storage: true,
            ..plan
        });
        assert_ne!(partial_copy & sys::VIR_MIGRATE_NON_SHARED_DISK, 0);
        assert_ne!(partial_copy & sys::VIR_MIGRATE_UNSAFE, 0);
    }

    #[test]
    fn a_destination_definition_is_both_live_and_persistent() {
        let plan = MigrationPlan {
            destination_uri: "qemu+tls://10.99.0.2/system".into(),
            migrate_uri: Some("tcp://10.99.0.2".into()),
            tls: false,
            copy_storage: true,
            shared_storage: false,
            max_downtime_ms: None,
            bandwidth_mib: Some(100),
            dest_xml: Some("<domain/>".into()),
            migrate_disks: vec!["vda".into(), "vdb".into()],
        };
        let p = migrate_params(&plan);
        assert_eq!(p.dest_xml.as_deref(), Some("<domain/>"));
        assert_eq!(p.persist_xml.as_deref(), Some("<domain/>"));
        assert_eq!(p.migrate_disks, vec!["vda", "vdb"]);
        assert_eq!(p.uri.as_deref(), Some("tcp://10.99.0.2"));
        assert_eq!(p.bandwidth, Some(100));
        // libvirt refuses disks to copy when storage is not copied.
        let shared = migrate_params(&MigrationPlan {
            copy_storage: false,
            dest_xml: None,
            ..plan
        });
        assert!(shared.migrate_disks.is_empty());
        assert_eq!(shared.dest_xml, None);
        assert_eq!(shared.persist_xml, None);
    }

    #[test]
    fn local_uris() {
        assert!(uri_is_local("qemu:///system"));
        assert!(uri_is_local("qemu:///session"));
        assert!(uri_is_local("test:///default"));
        assert!(!uri_is_local("qemu+ssh://root@host/system"));
        assert!(!uri_is_local("qemu+tcp://10.0.0.5/system"));
    }

    #[test]
    fn kvm_probe_guest_uses_the_kvm_cpu_mode_and_no_disk() {
        let xml = kvm_probe_xml("orrery-kvm-probe-1");
        assert!(xml.starts_with("<domain type='kvm'><name>orrery-kvm-probe-1</name>"));
        assert!(xml.contains("<cpu mode='host-passthrough'/>"));
        assert!(!xml.contains("<disk"));
    }

    #[test]
    fn versions() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(10_010_002), "10.10.2");
    }

    fn net() -> NetworkDef {
        NetworkDef {
            name: "orrery-1234abcd".to_string(),
            bridge: "obr-1234abcd".to_string(),
            gateway: "10.1.1.1".to_string(),
            netmask: "255.255.255.0".to_string(),
            dhcp_start: "10.1.1.100".to_string(),
            dhcp_end: "10.1.1.200".to_string(),
        }
    }

    #[test]
    fn network_definitions_are_checked() {
        assert!(validate_network(&net()).is_ok());
        let mut n = net();
        n.bridge = "a-bridge-name-too-long".to_string();
        assert!(matches!(validate_network(&n), Err(HvError::Invalid(_))));
        let mut n = net();
        n.bridge = "br0;rm".to_string();
        assert!(validate_network(&n).is_err());
        let mut n = net();
        n.dhcp_end = "10.1.1".to_string();
        assert!(validate_network(&n).is_err());
        let mut n = net();
        n.name = String::new();
        assert!(validate_network(&n).is_err());
    }

    #[test]
    fn reservations_are_checked() {
        let ok = DhcpHost {
            mac: "52:54:00:AB:cd:01".to_string(),
            ip: "10.1.1.5".to_string(),
            name: String::new(),
        };
        assert!(validate_dhcp_host(&ok).is_ok());
        for (mac, ip) in [
            ("52:54:00:ab:cd", "10.1.1.5"),
            ("52:54:00:ab:cd:0g", "10.1.1.5"),
            ("52-54-00-ab-cd-01", "10.1.1.5"),
            ("52:54:00:ab:cd:01", "fd00::5"),
        ] {
            let h = DhcpHost {
                mac: mac.to_string(),
                ip: ip.to_string(),
                name: String::new(),
            };
            assert!(validate_dhcp_host(&h).is_err(), "{mac} {ip}");
        }
    }
}
