//! An in-memory [`Hypervisor`] for fast tests of the code above it.
//!
//! It follows libvirt's rules where callers can observe them: starting a
//! running domain, or stopping a stopped one, fails with
//! [`codes::OPERATION_INVALID`]; an unknown domain is
//! [`HvError::NotFound`]; a domain must be off to be undefined. Domains are
//! defined from real domain XML, parsed with [`crate::domxml`], so a test
//! that defines what the designer produced also checks it parses.
//!
//! Guests honour ACPI at once unless told otherwise
//! ([`FakeHypervisor::set_ignores_acpi`]); one that ignores it makes
//! [`Hypervisor::shutdown`] wait out its timeout (use tokio's paused clock
//! to keep such tests instant) and then stop it hard.
//!
//! Scaling follows libvirt too: [`Hypervisor::set_vcpus`] and plugging in
//! a `<memory>` module change what [`Hypervisor::domain_xml`] reports (the
//! online vCPUs; the module, with `<memory>` and `<currentMemory>` grown
//! by its size), within the domain's vCPU count and `<maxMemory>`. The
//! XML is then the model's rendering of the definition, so elements the
//! model does not know are no longer in it.
//!
//! Statistics are whatever a test sets with [`FakeHypervisor::set_counters`]
//! (zero counters otherwise); only domains that are not off report them,
//! and each start gives the domain a new run id, as libvirt's domain ids do.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::codes;
use super::{
    DhcpHost, DomainCounters, DomainInfo, HostInfo, HvError, Hypervisor, JobProgress,
    MigrationPlan, NetworkDef, Power,
};
use crate::designer::{Firmware, HostFacts};
use crate::domxml::{self, Domain, MemoryDevice};

/// `VIR_ERR_CONFIG_UNSUPPORTED`: what libvirt answers a memory module that
/// the domain has no room for.
const CONFIG_UNSUPPORTED: i32 = 67;

/// One domain as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDomain {
    pub name: String,
    pub uuid: Option<String>,
    pub instance_uuid: Option<String>,
    pub power: Power,
    /// The XML last given to `define`.
    pub xml: String,
    /// Device XML attached after definition, in order.
    pub attached: Vec<String>,
    /// Sizes last given to `block_resize`, by disk target.
    pub block_sizes: BTreeMap<String, u64>,
    /// Times the domain was started (including reboots).
    pub boots: u32,
    pub ignores_acpi: bool,
    /// What `domain_counters` reports while the domain is not off; its
    /// name, instance uuid and run id are the domain's own.
    pub counters: DomainCounters,
    /// Set by each start.
    run_id: Option<u32>,
    /// Disk targets of the defined domain.
    targets: Vec<String>,
    /// Snapshots taken while running: (name, with memory), oldest first.
    pub snapshots: Vec<(String, bool)>,
    /// Snapshots reverted to, in order.
    pub reverts: Vec<String>,
    /// Whether the guest runs a guest agent (freeze works).
    pub guest_agent: bool,
    /// Whether its file systems are frozen now.
    pub frozen: bool,
}

/// One network as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNetwork {
    pub def: NetworkDef,
    pub active: bool,
    pub autostart: bool,
    pub hosts: Vec<DhcpHost>,
}

#[derive(Debug, Default)]
struct State {
    domains: BTreeMap<String, FakeDomain>,
    /// Handed out on each start, like libvirt's domain ids.
    next_run_id: u32,
    networks: BTreeMap<String, FakeNetwork>,
    calls: Vec<String>,
    failures: HashMap<&'static str, VecDeque<HvError>>,
    /// Every migration that succeeded: the domain and its plan.
    migrations: Vec<(String, MigrationPlan)>,
    /// Migrations do not finish until their job is aborted (a destination
    /// that stopped answering).
    migrations_hang: bool,
    /// Set by `abort_job` while a migration hangs.
    aborted: bool,
}

#[derive(Debug)]
pub struct FakeHypervisor {
    host: Mutex<HostInfo>,
    state: Mutex<State>,
}

impl Default for FakeHypervisor {
    fn default() -> Self {
        FakeHypervisor::new()
    }
}

/// Facts of a typical KVM host with OVMF and swtpm installed.
pub fn sample_host_info() -> HostInfo {
    HostInfo {
        hostname: "fake-host".to_string(),
        cpus: 8,
        cpu_mhz: 2400,
        cpu_model: "EPYC-Rome".to_string(),
        memory_bytes: 32 << 30,
        libvirt_version: "9.0.0".to_string(),
        design: HostFacts {
            domain_types: vec!["kvm".to_string(), "qemu".to_string()],
            arch: "x86_64".to_string(),
            machine_types: ["pc", "pc-i440fx-7.2", "q35", "pc-q35-7.2"]
                .map(String::from)
                .to_vec(),
            emulator: Some("/usr/bin/qemu-system-x86_64".to_string()),
            firmware: vec![
                Firmware {
                    loader: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".to_string(),
                    nvram_template: Some("/usr/share/OVMF/OVMF_VARS_4M.ms.fd".to_string()),
                    secure_boot: true,
                },
                Firmware {
                    loader: "/usr/share/OVMF/OVMF_CODE_4M.fd".to_string(),
                    nvram_template: Some("/usr/share/OVMF/OVMF_VARS_4M.fd".to_string()),
                    secure_boot: false,
                },
            ],
            tpm_supported: true,
            cpu_model: Some("EPYC-Rome".to_string()),
        },
        emulator_user: Some((64055, 64055)),
    }
}

fn not_running(name: &str) -> HvError {
    HvError::backend(
        codes::OPERATION_INVALID,
        format!("Requested operation is not valid: domain '{name}' is not running"),
    )
}

fn no_network(name: &str) -> HvError {
    HvError::backend(
        codes::NO_NETWORK,
        format!("Network not found: no network with matching name '{name}'"),
    )
}

impl State {
    fn domain(&mut self, name: &str) -> Result<&mut FakeDomain, HvError> {
        self.domains
            .get_mut(name)
            .ok_or_else(|| HvError::NotFound(name.to_string()))
    }

    fn running(&mut self, name: &str) -> Result<&mut FakeDomain, HvError> {
        let d = self.domain(name)?;
        if d.power == Power::Off {
            return Err(not_running(name));
        }
        Ok(d)
    }

    fn network(&mut self, name: &str) -> Result<&mut FakeNetwork, HvError> {
        self.networks.get_mut(name).ok_or_else(|| no_network(name))
    }
}

impl FakeHypervisor {
    pub fn new() -> Self {
        FakeHypervisor::with_host_info(sample_host_info())
    }

    pub fn with_host_info(host: HostInfo) -> Self {
        FakeHypervisor {
            host: Mutex::new(host),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the call and returns the failure queued for `method`, if any.
    fn enter(&self, method: &'static str, arg: &str) -> Result<MutexGuard<'_, State>, HvError> {
        let mut st = self.lock();
        st.calls.push(if arg.is_empty() {
            method.to_string()
        } else {
            format!("{method} {arg}")
        });
        if let Some(err) = st.failures.get_mut(method).and_then(|q| q.pop_front()) {
            return Err(err);
        }
        Ok(st)
    }

    pub fn set_host_info(&self, host: HostInfo) {
        *self.host.lock().unwrap_or_else(|e| e.into_inner()) = host;
    }

    /// Makes every migration hang until its job is aborted.
    pub fn hang_migrations(&self) {
        self.lock().migrations_hang = true;
    }

    /// Makes the next call of trait method `method` (e.g. `"start"`) fail
    /// with `error`; queued failures are used in order.
    pub fn fail_next(&self, method: &'static str, error: HvError) {
        self.lock()
            .failures
            .entry(method)
            .or_default()
            .push_back(error);
    }

    /// Every trait call so far, as `"method argument"` (the domain or
    /// network name; nothing for host-wide calls).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The migrations that succeeded, in order: domain name and plan.
    pub fn migrations(&self) -> Vec<(String, MigrationPlan)> {
        self.lock().migrations.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    pub fn domain(&self, name: &str) -> Option<FakeDomain> {
        self.lock().domains.get(name).cloned()
    }

    pub fn domain_names(&self) -> Vec<String> {
        self.lock().domains.keys().cloned().collect()
    }

    pub fn network(&self, name: &str) -> Option<FakeNetwork> {
        self.lock().networks.get(name).cloned()
    }

    pub fn dhcp_hosts(&self, network: &str) -> Vec<DhcpHost> {
        self.lock()
            .networks
            .get(network)
            .map(|n| n.hosts.clone())
            .unwrap_or_default()
    }

    /// The guest powers itself off (shutdown from inside, crash with
    /// `on_crash=destroy`). Returns false when the domain is unknown or
    /// already off.
    pub fn guest_power_off(&self, name: &str) -> bool {
        match self.lock().domains.get_mut(name) {
            Some(d) if d.power != Power::Off => {
                d.power = Power::Off;
                true
            }
            _ => false,
        }
    }

    /// Puts a domain in a state other than on or off (paused, crashed).
    pub fn set_power(&self, name: &str, power: Power) -> bool {
        match self.lock().domains.get_mut(name) {
            Some(d) => {
                d.power = power;
                true
            }
            None => false,
        }
    }

    /// Sets the counters the domain reports from now on (its name, instance
    /// uuid and run id are kept). Returns false when the domain is unknown.
    pub fn set_counters(&self, name: &str, counters: DomainCounters) -> bool {
        match self.lock().domains.get_mut(name) {
            Some(d) => {
                d.counters = counters;
                true
            }
            None => false,
        }
    }

    /// A guest that ignores the ACPI power button (no OS running yet, or no
    /// ACPI daemon) only stops when `shutdown`'s timeout runs out.
    pub fn set_ignores_acpi(&self, name: &str, ignores: bool) -> bool {
        match self.lock().domains.get_mut(name) {
            Some(d) => {
                d.ignores_acpi = ignores;
                true
            }
            None => false,
        }
    }
}

fn same_mac(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn parsed(d: &FakeDomain) -> Result<Domain, HvError> {
    Domain::from_xml(&d.xml).map_err(|e| HvError::Invalid(e.to_string()))
}

/// Adds a memory module to the domain as libvirt does: only into room its
/// `<maxMemory>` leaves, growing `<memory>` and `<currentMemory>` with it.
fn plug_memory(d: &mut FakeDomain, module: MemoryDevice) -> Result<(), HvError> {
    let mut dom = parsed(d)?;
    let Some(max) = dom.max_memory else {
        return Err(HvError::backend(
            CONFIG_UNSUPPORTED,
            "unsupported configuration: cannot use/hotplug a memory device when domain \
             'maxMemory' is not defined",
        ));
    };
    let total = dom.memory_kib.saturating_add(module.size_kib);
    if total > max.kib {
        return Err(HvError::backend(
            CONFIG_UNSUPPORTED,
            format!(
                "unsupported configuration: Attaching memory device with size '{}' would \
                 exceed domain's maxMemory config size '{}'",
                module.size_kib, max.kib
            ),
        ));
    }
    if dom.devices.memories.len() >= max.slots as usize {
        return Err(HvError::backend(
            CONFIG_UNSUPPORTED,
            format!(
                "unsupported configuration: no free memory device slot available (all {} used)",
                max.slots
            ),
        ));
    }
    dom.memory_kib = total;
    dom.current_memory_kib = Some(
        dom.current_memory_kib
            .unwrap_or(total - module.size_kib)
            .saturating_add(module.size_kib),
    );
    dom.devices.memories.push(module);
    d.xml = dom.to_xml();
    Ok(())
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    async fn host_info(&self) -> Result<HostInfo, HvError> {
        drop(self.enter("host_info", "")?);
        Ok(self.host.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    async fn domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        let st = self.enter("domains", "")?;
        Ok(st
            .domains
            .values()
            .map(|d| DomainInfo {
                name: d.name.clone(),
                instance_uuid: d.instance_uuid.clone(),
                power: d.power,
            })
            .collect())
    }

    async fn power(&self, name: &str) -> Result<Power, HvError> {
        let mut st = self.enter("power", name)?;
        Ok(st.domain(name)?.power)
    }

    async fn define(&self, xml: &str) -> Result<(), HvError> {
        let parsed = Domain::from_xml(xml).map_err(|e| HvError::Invalid(e.to_string()))?;
        let meta = domxml::orrery_metadata(xml).map_err(|e| HvError::Invalid(e.to_string()))?;
        let name = parsed.name.clone();
        let uuid = parsed.uuid.as_ref().map(|u| u.to_ascii_lowercase());
        let mut st = self.enter("define", &name)?;
        // libvirt keys domains by both name and UUID: neither may move to
        // another domain on redefinition.
        if let Some(u) = &uuid {
            if let Some(other) = st
                .domains
                .values()
                .find(|d| d.name != name && d.uuid.as_ref() == Some(u))
            {
                return Err(HvError::backend(
                    codes::OPERATION_FAILED,
                    format!("domain '{}' already exists with uuid {u}", other.name),
                ));
            }
        }
        let targets = parsed
            .devices
            .disks
            .iter()
            .map(|d| d.target_dev.clone())
            .collect();
        match st.domains.get_mut(&name) {
            Some(existing) => {
                if let (Some(old), Some(new)) = (&existing.uuid, &uuid) {
                    if old != new {
                        return Err(HvError::backend(
                            codes::OPERATION_FAILED,
                            format!("domain '{name}' already exists with uuid {old}"),
                        ));
                    }
                }
                existing.xml = xml.to_string();
                existing.instance_uuid = meta.map(|m| m.instance_uuid);
                existing.targets = targets;
            }
            None => {
                st.domains.insert(
                    name.clone(),
                    FakeDomain {
                        name,
                        uuid,
                        instance_uuid: meta.map(|m| m.instance_uuid),
                        power: Power::Off,
                        xml: xml.to_string(),
                        attached: Vec::new(),
                        block_sizes: BTreeMap::new(),
                        boots: 0,
                        ignores_acpi: false,
                        counters: DomainCounters::default(),
                        run_id: None,
                        targets,
                        snapshots: Vec::new(),
                        reverts: Vec::new(),
                        guest_agent: true,
                        frozen: false,
                    },
                );
            }
        }
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), HvError> {
        let mut st = self.enter("start", name)?;
        let d = st.domain(name)?;
        if d.power != Power::Off {
            return Err(HvError::backend(
                codes::OPERATION_INVALID,
                format!("Requested operation is not valid: domain '{name}' is already running"),
            ));
        }
        st.next_run_id += 1;
        let run_id = st.next_run_id;
        let d = st.domain(name)?;
        d.power = Power::On;
        d.boots += 1;
        d.run_id = Some(run_id);
        Ok(())
    }

    async fn shutdown(&self, name: &str, timeout: Duration) -> Result<(), HvError> {
        {
            let mut st = self.enter("shutdown", name)?;
            let d = st.running(name)?;
            if !d.ignores_acpi {
                d.power = Power::Off;
                return Ok(());
            }
        }
        tokio::time::sleep(timeout).await;
        let mut st = self.lock();
        st.calls.push(format!("shutdown-forced {name}"));
        // The guest may have powered off (or been undefined) meanwhile.
        if let Some(d) = st.domains.get_mut(name) {
            d.power = Power::Off;
        }
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), HvError> {
        let mut st = self.enter("destroy", name)?;
        st.running(name)?.power = Power::Off;
        Ok(())
    }

    async fn reboot(&self, name: &str) -> Result<(), HvError> {
        let mut st = self.enter("reboot", name)?;
        let d = st.running(name)?;
        if !d.ignores_acpi {
            d.boots += 1;
        }
        Ok(())
    }

    async fn undefine(&self, name: &str) -> Result<(), HvError> {
        let mut st = self.enter("undefine", name)?;
        if st.domain(name)?.power != Power::Off {
            return Err(HvError::backend(
                codes::OPERATION_INVALID,
                format!("Requested operation is not valid: domain '{name}' is running"),
            ));
        }
        st.domains.remove(name);
        Ok(())
    }

    async fn domain_xml(&self, name: &str) -> Result<String, HvError> {
        let mut st = self.enter("domain_xml", name)?;
        Ok(st.domain(name)?.xml.clone())
    }

    /// The fake keeps no secrets apart: the same XML as `domain_xml`.
    async fn migratable_xml(&self, name: &str) -> Result<String, HvError> {
        let mut st = self.enter("migratable_xml", name)?;
        Ok(st.domain(name)?.xml.clone())
    }

    async fn ensure_network(&self, net: &NetworkDef) -> Result<(), HvError> {
        let mut st = self.enter("ensure_network", &net.name)?;
        match st.networks.get_mut(&net.name) {
            Some(existing) if existing.def != *net => Err(HvError::Invalid(format!(
                "network {} exists with a different definition",
                net.name
            ))),
            Some(existing) => {
                existing.active = true;
                existing.autostart = true;
                Ok(())
            }
            None => {
                st.networks.insert(
                    net.name.clone(),
                    FakeNetwork {
                        def: net.clone(),
                        active: true,
                        autostart: true,
                        hosts: Vec::new(),
                    },
                );
                Ok(())
            }
        }
    }

    async fn set_dhcp_host(&self, network: &str, host: &DhcpHost) -> Result<(), HvError> {
        let mut st = self.enter("set_dhcp_host", network)?;
        let net = st.network(network)?;
        // A reservation owns its address and name: stale entries of other
        // MACs holding either are dropped, as the libvirt backend does.
        net.hosts
            .retain(|h| same_mac(&h.mac, &host.mac) || (h.ip != host.ip && h.name != host.name));
        match net.hosts.iter_mut().find(|h| same_mac(&h.mac, &host.mac)) {
            Some(h) => *h = host.clone(),
            None => net.hosts.push(host.clone()),
        }
        Ok(())
    }

    async fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError> {
        let mut st = self.enter("remove_dhcp_host", network)?;
        st.network(network)?
            .hosts
            .retain(|h| !same_mac(&h.mac, mac));
        Ok(())
    }

    async fn attach_device(&self, name: &str, xml: &str) -> Result<(), HvError> {
        crate::domxml::XmlFragment::new(xml).map_err(|e| HvError::Invalid(e.to_string()))?;
        let mut st = self.enter("attach_device", name)?;
        let d = st.domain(name)?;
        if let Ok(module) = MemoryDevice::from_xml(xml) {
            plug_memory(d, module)?;
        }
        d.attached.push(xml.trim().to_string());
        Ok(())
    }

    async fn detach_device(&self, name: &str, xml: &str) -> Result<(), HvError> {
        let mut st = self.enter("detach_device", name)?;
        let d = st.domain(name)?;
        match d.attached.iter().position(|a| a == xml.trim()) {
            Some(i) => {
                d.attached.remove(i);
                Ok(())
            }
            None => Err(HvError::backend(
                codes::DEVICE_MISSING,
                "device not found: matching device not found",
            )),
        }
    }

    async fn set_vcpus(&self, name: &str, vcpus: u32) -> Result<(), HvError> {
        let mut st = self.enter("set_vcpus", name)?;
        let d = st.running(name)?;
        let mut dom = parsed(d)?;
        let max = dom.vcpu.count;
        if vcpus == 0 || vcpus > max {
            return Err(HvError::backend(
                codes::INVALID_ARG,
                format!(
                    "invalid argument: requested vcpus is greater than max allowable vcpus \
                     for the live domain: {vcpus} > {max}"
                ),
            ));
        }
        // libvirt drops `current` once every vCPU is online.
        dom.vcpu.current = (vcpus < max).then_some(vcpus);
        d.xml = dom.to_xml();
        Ok(())
    }

    async fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), HvError> {
        let mut st = self.enter("block_resize", name)?;
        let d = st.running(name)?;
        let attached = |a: &String| {
            a.contains(&format!("dev='{target}'")) || a.contains(&format!("dev=\"{target}\""))
        };
        if !d.targets.iter().any(|t| t == target) && !d.attached.iter().any(attached) {
            return Err(HvError::backend(
                codes::INVALID_ARG,
                format!("invalid argument: disk '{target}' was not found in the domain"),
            ));
        }
        d.block_sizes.insert(target.to_string(), bytes);
        Ok(())
    }

    async fn domain_counters(&self, disks: bool) -> Result<Vec<DomainCounters>, HvError> {
        let st = self.enter("domain_counters", "")?;
        Ok(st
            .domains
            .values()
            .filter(|d| d.power != Power::Off)
            .map(|d| {
                let mut c = d.counters.clone();
                c.name = d.name.clone();
                c.instance_uuid = d.instance_uuid.clone();
                c.run_id = d.run_id;
                if !disks {
                    c.disks.clear();
                }
                c
            })
            .collect())
    }

    /// Succeeds unless a failure is queued with
    /// `fail_next("probe_kvm", ...)`.
    async fn probe_kvm(&self) -> Result<(), HvError> {
        drop(self.enter("probe_kvm", "")?);
        Ok(())
    }

    /// The domain leaves this fake host; where it goes is not modelled.
    /// As libvirt, it refuses disks to copy without storage being copied,
    /// a disk target the domain lacks, and a destination definition of
    /// another domain.
    async fn migrate(&self, name: &str, plan: &MigrationPlan) -> Result<(), HvError> {
        if self.lock().migrations_hang {
            drop(self.enter("migrate", name)?);
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let mut st = self.lock();
                if st.aborted {
                    st.aborted = false;
                    return Err(HvError::backend(
                        codes::OPERATION_FAILED,
                        "operation aborted: migration job: canceled by client",
                    ));
                }
            }
        }
        let mut st = self.enter("migrate", name)?;
        if plan.destination_uri.is_empty() {
            return Err(HvError::Invalid("no destination".into()));
        }
        let d = st.running(name)?;
        if !plan.migrate_disks.is_empty() && !plan.copy_storage {
            return Err(HvError::backend(
                codes::INVALID_ARG,
                "invalid argument: use of 'migrate_disks' requires storage migration",
            ));
        }
        if let Some(t) = plan.migrate_disks.iter().find(|t| !d.targets.contains(t)) {
            return Err(HvError::backend(
                codes::INVALID_ARG,
                format!("invalid argument: disk target {t} not found"),
            ));
        }
        if let Some(xml) = &plan.dest_xml {
            let dest = Domain::from_xml(xml)
                .map_err(|e| HvError::backend(codes::XML_ERROR, format!("destination XML: {e}")))?;
            if dest.name != d.name || dest.uuid != d.uuid {
                return Err(HvError::backend(
                    codes::INVALID_ARG,
                    "invalid argument: target domain name or uuid does not match source",
                ));
            }
        }
        st.domains.remove(name);
        st.migrations.push((name.to_string(), plan.clone()));
        Ok(())
    }

    async fn abort_job(&self, name: &str) -> Result<(), HvError> {
        let mut st = self.enter("abort_job", name)?;
        st.domain(name)?;
        st.aborted = true;
        Ok(())
    }

    async fn job_progress(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        let mut st = self.enter("job_progress", name)?;
        st.domain(name)?;
        Ok(None)
    }

    async fn snapshot_with_memory(&self, name: &str, snap: &str) -> Result<String, HvError> {
        let mut st = self.enter("snapshot_with_memory", name)?;
        let d = st.running(name)?;
        d.snapshots.push((snap.to_string(), true));
        Ok(format!(
            "<domainsnapshot><name>{snap}</name></domainsnapshot>"
        ))
    }

    async fn snapshot_disks(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let mut st = self.enter("snapshot_disks", name)?;
        let d = st.running(name)?;
        d.snapshots.push((snap.to_string(), false));
        Ok(())
    }

    async fn revert_with_memory(&self, name: &str, snap: &str, saved: &str) -> Result<(), HvError> {
        let mut st = self.enter("revert_with_memory", name)?;
        let d = st.running(name)?;
        let known = d.snapshots.iter().any(|(n, m)| n == snap && *m);
        if !known && saved.is_empty() {
            return Err(HvError::Invalid(format!("no record of snapshot {snap}")));
        }
        if !known {
            d.snapshots.push((snap.to_string(), true));
        }
        d.reverts.push(snap.to_string());
        Ok(())
    }

    async fn delete_snapshot_live(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let mut st = self.enter("delete_snapshot_live", name)?;
        let d = st.running(name)?;
        d.snapshots.retain(|(n, _)| n != snap);
        Ok(())
    }

    async fn forget_snapshot(&self, name: &str, snap: &str) -> Result<(), HvError> {
        let mut st = self.enter("forget_snapshot", name)?;
        let d = st.domain(name)?;
        d.snapshots.retain(|(n, _)| n != snap);
        Ok(())
    }

    async fn forget_snapshots(&self, name: &str) -> Result<u32, HvError> {
        let mut st = self.enter("forget_snapshots", name)?;
        let d = st.domain(name)?;
        let n = d.snapshots.len() as u32;
        d.snapshots.clear();
        Ok(n)
    }

    async fn fs_freeze(&self, name: &str, freeze: bool) -> Result<u32, HvError> {
        let mut st = self.enter("fs_freeze", name)?;
        let d = st.running(name)?;
        if !d.guest_agent {
            return Err(HvError::backend(
                codes::AGENT_UNRESPONSIVE,
                "Guest agent is not responding: QEMU guest agent is not connected",
            ));
        }
        d.frozen = freeze;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::designer::{
        design, BootMode, DesignConfig, InstanceSpec, NicSpec, VolumeFormat, VolumeKind, VolumeSpec,
    };

    const UUID: &str = "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10";

    fn spec(name: &str, uuid: &str) -> InstanceSpec {
        InstanceSpec {
            uuid: uuid.to_string(),
            internal_name: name.to_string(),
            display_name: "web".to_string(),
            host_name: "web".to_string(),
            vcpus: 1,
            cpu_speed_mhz: 1000,
            memory_mib: 256,
            max_vcpus: None,
            max_memory_mib: None,
            os_type: "Other Linux (64-bit)".to_string(),
            boot_mode: BootMode::Bios,
            tpm: false,
            volumes: vec![VolumeSpec {
                id: "0c5f7d1e-aaaa-bbbb-cccc-000000000001".to_string(),
                kind: VolumeKind::Root,
                path: "/var/lib/orrery/primary/root.qcow2".to_string(),
                format: VolumeFormat::Qcow2,
                device_id: 0,
                read_bytes_sec: None,
                write_bytes_sec: None,
                read_iops_sec: None,
                write_iops_sec: None,
            }],
            cdrom: None,
            config_drive: None,
            nics: vec![NicSpec {
                mac: "52:54:00:12:34:56".to_string(),
                network: "orrery-net".to_string(),
                is_default: true,
                ip: None,
            }],
            vnc_password: "secret".to_string(),
            gpu: None,
            details: Default::default(),
            extraconfig: Vec::new(),
            caller_is_admin: false,
            smbios_manufacturer: "Orrery".to_string(),
            smbios_product: "CloudStack KVM Hypervisor".to_string(),
        }
    }

    async fn defined(hv: &FakeHypervisor, name: &str, uuid: &str) -> String {
        let facts = hv.host_info().await.unwrap().design;
        let xml = design(&spec(name, uuid), &facts, &DesignConfig::default())
            .unwrap()
            .to_xml();
        hv.define(&xml).await.unwrap();
        xml
    }

    #[tokio::test]
    async fn define_reads_name_and_instance_uuid() {
        let hv = FakeHypervisor::new();
        defined(&hv, "i-2-1-VM", UUID).await;
        let list = hv.domains().await.unwrap();
        assert_eq!(
            list,
            vec![DomainInfo {
                name: "i-2-1-VM".to_string(),
                instance_uuid: Some(UUID.to_string()),
                power: Power::Off,
            }]
        );
    }

    #[tokio::test]
    async fn define_rejects_malformed_xml() {
        let hv = FakeHypervisor::new();
        let err = hv.define("<domain").await.unwrap_err();
        assert!(matches!(err, HvError::Invalid(_)), "{err:?}");
        assert!(hv.domain_names().is_empty());
    }

    #[tokio::test]
    async fn redefine_keeps_power_and_refuses_uuid_change() {
        let hv = FakeHypervisor::new();
        defined(&hv, "i-2-1-VM", UUID).await;
        hv.start("i-2-1-VM").await.unwrap();
        defined(&hv, "i-2-1-VM", UUID).await;
        assert_eq!(hv.power("i-2-1-VM").await.unwrap(), Power::On);

        let facts = hv.host_info().await.unwrap().design;
        let other = "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d11";
        let xml = design(&spec("i-2-1-VM", other), &facts, &DesignConfig::default())
            .unwrap()
            .to_xml();
        let err = hv.define(&xml).await.unwrap_err();
        assert_eq!(err.libvirt_code(), Some(codes::OPERATION_FAILED));
        // Same UUID under another name.
        let xml = design(&spec("i-2-2-VM", UUID), &facts, &DesignConfig::default())
            .unwrap()
            .to_xml();
        assert!(hv.define(&xml).await.is_err());
    }

    #[tokio::test]
    async fn lifecycle_follows_libvirt_rules() {
        let hv = FakeHypervisor::new();
        let name = "i-2-1-VM";
        assert!(matches!(hv.start(name).await, Err(HvError::NotFound(_))));
        defined(&hv, name, UUID).await;

        assert!(hv
            .shutdown(name, Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_operation_invalid());
        assert!(hv.destroy(name).await.unwrap_err().is_operation_invalid());
        assert!(hv.reboot(name).await.unwrap_err().is_operation_invalid());

        hv.start(name).await.unwrap();
        assert!(hv.start(name).await.unwrap_err().is_operation_invalid());
        assert!(hv.undefine(name).await.unwrap_err().is_operation_invalid());

        hv.reboot(name).await.unwrap();
        assert_eq!(hv.domain(name).unwrap().boots, 2);
        assert_eq!(hv.power(name).await.unwrap(), Power::On);

        hv.shutdown(name, Duration::from_secs(60)).await.unwrap();
        assert_eq!(hv.power(name).await.unwrap(), Power::Off);

        hv.start(name).await.unwrap();
        hv.destroy(name).await.unwrap();
        assert_eq!(hv.power(name).await.unwrap(), Power::Off);

        hv.undefine(name).await.unwrap();
        assert!(matches!(hv.power(name).await, Err(HvError::NotFound(n)) if n == name));
        assert!(matches!(
            hv.domain_xml(name).await,
            Err(HvError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_of_a_guest_ignoring_acpi_waits_then_forces() {
        let hv = FakeHypervisor::new();
        let name = "i-2-1-VM";
        defined(&hv, name, UUID).await;
        hv.start(name).await.unwrap();
        hv.set_ignores_acpi(name, true);
        let t0 = tokio::time::Instant::now();
        hv.shutdown(name, Duration::from_secs(30)).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(hv.power(name).await.unwrap(), Power::Off);
        assert!(hv.calls().contains(&format!("shutdown-forced {name}")));
    }

    #[tokio::test]
    async fn counters_of_active_domains_with_a_new_run_id_per_start() {
        let hv = FakeHypervisor::new();
        let name = "i-2-1-VM";
        defined(&hv, name, UUID).await;
        assert!(hv.domain_counters(true).await.unwrap().is_empty());
        assert!(!hv.set_counters("nope", DomainCounters::default()));
        hv.set_counters(
            name,
            DomainCounters {
                name: "ignored".to_string(),
                cpu_time_ns: Some(42),
                disks: vec![super::super::DiskCounters::default()],
                ..DomainCounters::default()
            },
        );
        hv.start(name).await.unwrap();
        let first = hv.domain_counters(true).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].name, name);
        assert_eq!(first[0].instance_uuid.as_deref(), Some(UUID));
        assert_eq!(first[0].cpu_time_ns, Some(42));
        assert_eq!(first[0].disks.len(), 1);
        assert!(hv.domain_counters(false).await.unwrap()[0].disks.is_empty());

        // Paused domains still report.
        hv.set_power(name, Power::Other);
        assert_eq!(hv.domain_counters(false).await.unwrap().len(), 1);
        hv.destroy(name).await.unwrap();
        assert!(hv.domain_counters(false).await.unwrap().is_empty());
        hv.start(name).await.unwrap();
        let second = hv.domain_counters(false).await.unwrap();
        assert_ne!(second[0].run_id, first[0].run_id);
        assert!(second[0].run_id.is_some());
    }

    #[tokio::test]
    async fn guest_powering_off_by_itself() {
        let hv = FakeHypervisor::new();
        let name = "i-2-1-VM";
        defined(&hv, name, UUID).await;
        assert!(!hv.guest_power_off(name));
        hv.start(name).await.unwrap();
        assert!(hv.guest_power_off(name));
        assert_eq!(hv.power(name).await.unwrap(), Power::Off);
        hv.start(name).await.unwrap();
    }

    #[tokio::test]
    async fn injected_failures_are_used_once_and_calls_are_recorded() {
        let hv = FakeHypervisor::new();
        defined(&hv, "a", UUID).await;
        hv.fail_next("start", HvError::backend(codes::OPERATION_FAILED, "boom"));
        assert_eq!(
            hv.start("a").await.unwrap_err().libvirt_code(),
            Some(codes::OPERATION_FAILED)
        );
        hv.start("a").await.unwrap();
        assert_eq!(
            hv.calls(),
            ["host_info", "define a", "start a", "start a"].map(String::from)
        );
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

    fn host(mac: &str, ip: &str, name: &str) -> DhcpHost {
        DhcpHost {
            mac: mac.to_string(),
            ip: ip.to_string(),
            name: name.to_string(),
        }
    }

    #[tokio::test]
    async fn networks_and_reservations() {
        let hv = FakeHypervisor::new();
        let n = net();
        let err = hv
            .set_dhcp_host(&n.name, &host("52:54:00:00:00:01", "10.1.1.10", "a"))
            .await
            .unwrap_err();
        assert_eq!(err.libvirt_code(), Some(codes::NO_NETWORK));

        hv.ensure_network(&n).await.unwrap();
        hv.ensure_network(&n).await.unwrap();
        let mut changed = n.clone();
        changed.gateway = "10.1.2.1".to_string();
        assert!(matches!(
            hv.ensure_network(&changed).await,
            Err(HvError::Invalid(_))
        ));
        let fake = hv.network(&n.name).unwrap();
        assert!(fake.active && fake.autostart);

        hv.set_dhcp_host(&n.name, &host("52:54:00:00:00:0a", "10.1.1.10", "a"))
            .await
            .unwrap();
        hv.set_dhcp_host(&n.name, &host("52:54:00:00:00:02", "10.1.1.11", "b"))
            .await
            .unwrap();
        // Same MAC (other case): replaced in place.
        hv.set_dhcp_host(&n.name, &host("52:54:00:00:00:0A", "10.1.1.12", "a2"))
            .await
            .unwrap();
        // New MAC taking b's address: b's stale entry goes.
        hv.set_dhcp_host(&n.name, &host("52:54:00:00:00:03", "10.1.1.11", "c"))
            .await
            .unwrap();
        assert_eq!(
            hv.dhcp_hosts(&n.name),
            vec![
                host("52:54:00:00:00:0A", "10.1.1.12", "a2"),
                host("52:54:00:00:00:03", "10.1.1.11", "c"),
            ]
        );
        hv.remove_dhcp_host(&n.name, "52:54:00:00:00:0a")
            .await
            .unwrap();
        hv.remove_dhcp_host(&n.name, "52:54:00:00:00:0a")
            .await
            .unwrap();
        assert_eq!(
            hv.dhcp_hosts(&n.name),
            vec![host("52:54:00:00:00:03", "10.1.1.11", "c")]
        );
    }

    #[tokio::test]
    async fn devices_and_block_resize() {
        let hv = FakeHypervisor::new();
        let name = "i-2-1-VM";
        defined(&hv, name, UUID).await;
        let disk = "<disk type='file' device='disk'><source file='/d.qcow2'/><target dev='vdb' bus='virtio'/></disk>";
        assert!(hv.attach_device(name, "<disk").await.is_err());
        hv.attach_device(name, disk).await.unwrap();
        assert!(hv
            .block_resize(name, "vdb", 1 << 30)
            .await
            .unwrap_err()
            .is_operation_invalid());
        hv.start(name).await.unwrap();
        hv.block_resize(name, "vdb", 1 << 30).await.unwrap();
        hv.block_resize(name, "vda", 2 << 30).await.unwrap();
        assert_eq!(
            hv.block_resize(name, "vdz", 1)
                .await
                .unwrap_err()
                .libvirt_code(),
            Some(codes::INVALID_ARG)
        );
        assert_eq!(hv.domain(name).unwrap().block_sizes["vdb"], 1 << 30);
        hv.detach_device(name, disk).await.unwrap();
        assert_eq!(
            hv.detach_device(name, disk)
                .await
                .unwrap_err()
                .libvirt_code(),
            Some(codes::DEVICE_MISSING)
        );
    }

    #[tokio::test]
    async fn scaling_changes_the_reported_definition_within_its_room() {
        let hv = FakeHypervisor::new();
        let name = "i-2-2-VM";
        let facts = hv.host_info().await.unwrap().design;
        let mut s = spec(name, UUID);
        s.max_vcpus = Some(3);
        s.max_memory_mib = Some(512);
        let xml = design(&s, &facts, &DesignConfig::default())
            .unwrap()
            .to_xml();
        hv.define(&xml).await.unwrap();
        let module = |mib: u64| {
            MemoryDevice {
                size_kib: mib * 1024,
                node: Some(0),
            }
            .to_xml()
        };
        let live = |xml: String| Domain::from_xml(&xml).unwrap();

        // vCPUs only on a running domain, up to the defined count.
        assert!(hv
            .set_vcpus(name, 2)
            .await
            .unwrap_err()
            .is_operation_invalid());
        hv.start(name).await.unwrap();
        hv.set_vcpus(name, 2).await.unwrap();
        let d = live(hv.domain_xml(name).await.unwrap());
        assert_eq!((d.vcpu.count, d.vcpu.current), (3, Some(2)));
        for bad in [0, 4] {
            assert_eq!(
                hv.set_vcpus(name, bad).await.unwrap_err().libvirt_code(),
                Some(codes::INVALID_ARG)
            );
        }
        hv.set_vcpus(name, 3).await.unwrap();
        assert_eq!(live(hv.domain_xml(name).await.unwrap()).vcpu.current, None);

        // Memory modules grow the memory up to maxMemory.
        hv.attach_device(name, &module(128)).await.unwrap();
        let d = live(hv.domain_xml(name).await.unwrap());
        assert_eq!(d.memory_kib, 384 * 1024);
        assert_eq!(d.current_memory_kib, Some(384 * 1024));
        assert_eq!(d.devices.memories.len(), 1);
        assert_eq!(
            hv.attach_device(name, &module(256))
                .await
                .unwrap_err()
                .libvirt_code(),
            Some(CONFIG_UNSUPPORTED)
        );
        hv.attach_device(name, &module(128)).await.unwrap();
        assert_eq!(
            live(hv.domain_xml(name).await.unwrap()).memory_kib,
            512 * 1024
        );

        // A domain defined without room takes no module.
        let other = "i-2-3-VM";
        defined(&hv, other, "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d11").await;
        hv.start(other).await.unwrap();
        let err = hv.attach_device(other, &module(128)).await.unwrap_err();
        assert!(err.to_string().contains("maxMemory"), "{err}");
    }
}
