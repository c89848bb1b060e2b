//! Turns an instance specification into a libvirt domain definition.
//!
//! All policy lives here (which accelerator, which chipset, which device
//! models, how disks are named), and nothing else: [`design`] is a pure
//! function of its three inputs, so the same request on the same host always
//! yields the same domain, and every rule can be tested without a hypervisor.

mod spec;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use thiserror::Error;

use crate::domxml::{
    Channel, ChannelSourceMode, CharDevice, CharSource, ClockOffset, Cpu, CpuMode, CpuTopology,
    Devices, Disk, DiskBus, DiskCache, DiskDevice, DiskDiscard, DiskDriver, DiskFormat, DiskType,
    DomXmlError, Domain, DomainType, Features, Graphics, Hostdev, Input, InputBus, InputType,
    Interface, InterfaceSource, IoTune, LifecycleAction, Loader, LoaderType, MaxMemory, MdevModel,
    MemBalloon, MemBalloonModel, NicModel, NumaCell, Nvram, OrreryMetadata, Os, PciAddress, Rng,
    RngModel, SmbiosMode, SysInfo, Tpm, TpmModel, TpmVersion, Vcpu, VcpuPlacement, Video,
    VideoModel, XmlFragment, XmlValue,
};

pub use spec::{
    BootMode, DesignConfig, Firmware, GpuSpec, HostFacts, InstanceSpec, NicSpec, VolumeFormat,
    VolumeKind, VolumeSpec, DEFAULT_SMBIOS_MANUFACTURER, DEFAULT_SMBIOS_PRODUCT,
};

/// Detail choosing the root disk's bus: `virtio` (default), `sata`, `ide`.
pub const DETAIL_ROOT_DISK_CONTROLLER: &str = "rootDiskController";
/// Detail choosing the data disks' bus; defaults to the root disk's.
pub const DETAIL_DATA_DISK_CONTROLLER: &str = "dataDiskController";
/// Detail choosing the NIC model: `virtio` (default), `e1000`, `e1000e`,
/// `rtl8139`.
pub const DETAIL_NIC_ADAPTER: &str = "nicAdapter";
/// Detail choosing the video model: `vga` (default), `virtio`, `cirrus`,
/// `qxl`, `bochs`.
pub const DETAIL_VIDEO_HARDWARE: &str = "video.hardware";
/// Detail asking for a number of cores per socket.
pub const DETAIL_CORES_PER_SOCKET: &str = "cpu.corespersocket";
/// vTPM version (`2.0`, the default, or `1.2`) and model (`tpm-tis`,
/// `tpm-crb`); either one asks for a vTPM.
pub const DETAIL_TPM_VERSION: &str = "tpmversion";
pub const DETAIL_TPM_MODEL: &str = "tpmmodel";
/// Guest CPU: `guest.cpu.mode` (custom, host-model, host-passthrough) and
/// `guest.cpu.model` (a model QEMU knows; implies custom). Root admin only,
/// decided by the coordinator.
pub const DETAIL_CPU_MODE: &str = "guest.cpu.mode";
pub const DETAIL_CPU_MODEL: &str = "guest.cpu.model";
/// The QEMU machine type, one the host's emulator offers.
pub const DETAIL_MACHINE_TYPE: &str = "kvm.guest.os.machine.type";

/// QEMU's VNC authentication is DES-based with an 8-byte key: characters
/// after the eighth are ignored by the server.
pub const VNC_PASSWORD_MAX_LEN: usize = 8;

/// virtio-serial port name the QEMU guest agent looks for.
pub const GUEST_AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// Seconds between balloon statistics updates; with no period the guest
/// never reports memory statistics.
pub const BALLOON_STATS_PERIOD_SECS: u32 = 10;

/// CPU model used when the host can only emulate (TCG).
///
/// `host-passthrough` and `host-model` describe the host's CPU, which only
/// makes sense when the guest runs on it through KVM; libvirt refuses
/// `host-passthrough` for TCG domains. `qemu64` is a baseline x86-64 model
/// that TCG implements completely on every QEMU version, so the guest sees
/// the same CPU on every host of a lab. Guests built for x86-64-v2 or later
/// need KVM.
pub const TCG_CPU_MODEL: &str = "qemu64";

/// SMBIOS system version, identifying the software that designed the domain.
pub const SMBIOS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Memory slots of a scalable instance: each memory module plugged in
/// while it runs takes one, so it can grow this many times before it must
/// be restarted. CloudStack's KVM agent defines as many.
pub const MEMORY_SLOTS: u32 = 16;

/// The guest NUMA node of a scalable instance. libvirt plugs memory modules
/// only into a guest with NUMA nodes, so the instance gets one holding all
/// its vCPUs and its start memory, and modules are plugged into it.
pub const HOTPLUG_NUMA_NODE: u32 = 0;

/// Host entropy source for the virtio RNG. `/dev/urandom` never blocks, so
/// a guest draining it cannot stall other guests or the host.
pub const RNG_SOURCE: &str = "/dev/urandom";

/// Reasons a specification cannot be turned into a domain on this host.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DesignError {
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{field}: {value:?} appears more than once")]
    Duplicate { field: String, value: String },
    #[error("{field}: MAC address {mac} is used by more than one NIC")]
    DuplicateMac { field: String, mac: String },
    #[error("details[{key}] = {value:?}: {reason}")]
    InvalidDetail {
        key: String,
        value: String,
        reason: String,
    },
    #[error("extraconfig: only an administrator may supply extra configuration")]
    ExtraConfigNotAllowed,
    #[error("extraconfig[{index}]: {source}")]
    MalformedExtraConfig {
        index: usize,
        #[source]
        source: DomXmlError,
    },
    #[error("host facts domain_types: none of {offered:?} is kvm or qemu")]
    NoDomainType { offered: Vec<String> },
    #[error(
        "config forced_domain_type: {forced:?} is not offered by the host (offered: {offered:?})"
    )]
    ForcedDomainTypeUnavailable {
        forced: String,
        offered: Vec<String>,
    },
    #[error("host facts arch: {arch:?} is not supported, only x86_64 is")]
    UnsupportedArch { arch: String },
    #[error("host facts machine_types: no {wanted} machine type among {offered:?}")]
    NoMachineType {
        wanted: &'static str,
        offered: Vec<String>,
    },
    #[error(
        "boot_mode: the host has no {} UEFI firmware",
        if *secure { "Secure Boot" } else { "non-Secure-Boot" }
    )]
    NoFirmware { secure: bool },
    #[error("tpm: requested but the host has no TPM emulator")]
    TpmUnsupported,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DesignError {
    DesignError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Designs the libvirt domain for `spec` on a host described by `facts`.
pub fn design(
    spec: &InstanceSpec,
    facts: &HostFacts,
    config: &DesignConfig,
) -> Result<Domain, DesignError> {
    validate_identity(spec)?;
    let domain_type = choose_domain_type(facts, config)?;
    if facts.arch != "x86_64" {
        return Err(DesignError::UnsupportedArch {
            arch: facts.arch.clone(),
        });
    }
    let (machine, chipset) = match detail(spec, DETAIL_MACHINE_TYPE) {
        Some(m) => named_machine(m, spec.boot_mode, facts)?,
        None => choose_machine(spec.boot_mode, facts)?,
    };

    if spec.vcpus == 0 {
        return Err(invalid("vcpus", "must be at least 1"));
    }
    if spec.memory_mib == 0 {
        return Err(invalid("memory_mib", "must be at least 1"));
    }
    let memory_kib = spec
        .memory_mib
        .checked_mul(1024)
        .ok_or_else(|| invalid("memory_mib", "is too large"))?;
    // A scalable instance is defined for its maximums from the start:
    // vCPUs and memory slots cannot be added to a running domain, only
    // filled.
    let max_vcpus = match spec.max_vcpus {
        Some(max) if max < spec.vcpus => {
            return Err(invalid(
                "max_vcpus",
                format!(
                    "{max} is below the {} vCPUs the instance starts with",
                    spec.vcpus
                ),
            ))
        }
        Some(max) => max,
        None => spec.vcpus,
    };
    let max_memory_kib = match spec.max_memory_mib {
        Some(max) if max < spec.memory_mib => {
            return Err(invalid(
                "max_memory_mib",
                format!(
                    "{max} is below the {} MiB the instance starts with",
                    spec.memory_mib
                ),
            ))
        }
        Some(max) => max
            .checked_mul(1024)
            .ok_or_else(|| invalid("max_memory_mib", "is too large"))?,
        None => memory_kib,
    };
    let max_memory = (max_memory_kib > memory_kib).then_some(MaxMemory {
        slots: MEMORY_SLOTS,
        kib: max_memory_kib,
    });
    let numa = match max_memory {
        Some(_) => vec![NumaCell {
            id: HOTPLUG_NUMA_NODE,
            cpus: cpu_list(max_vcpus),
            memory_kib,
        }],
        None => Vec::new(),
    };

    let secure_boot = matches!(spec.boot_mode, BootMode::Uefi { secure: true });
    let (loader, nvram) = firmware(spec, facts, config)?;

    let mut devices = Devices {
        emulator: facts.emulator.clone(),
        disks: disks(spec, chipset)?,
        interfaces: interfaces(spec)?,
        ..Devices::default()
    };

    let console_log = CharSource::File {
        path: join_path(
            "config console_log_dir",
            &config.console_log_dir,
            &format!("{}.log", spec.internal_name),
        )?,
        append: Some(true),
    };
    devices.serials.push(CharDevice {
        source: console_log.clone(),
        target_type: Some("isa-serial".to_string()),
        target_port: Some(0),
    });
    devices.consoles.push(CharDevice {
        source: console_log,
        target_type: Some("serial".to_string()),
        target_port: Some(0),
    });
    devices.channels.push(Channel {
        // Without a path libvirt creates the socket in its own channel
        // directory; the agent reaches the guest agent through libvirt.
        source_mode: Some(ChannelSourceMode::Bind),
        source_path: None,
        target_name: GUEST_AGENT_CHANNEL.to_string(),
    });
    // An absolute pointing device keeps the VNC cursor in step with the
    // guest's; a relative PS/2 mouse drifts.
    devices.inputs.push(Input {
        input_type: InputType::Tablet,
        bus: Some(InputBus::Usb),
    });
    devices.tpms.extend(tpm(spec, facts)?);
    devices.graphics.push(vnc(spec, config)?);
    devices.videos.push(video(spec)?);
    devices.hostdevs = gpu(spec)?;
    devices.memballoon = Some(MemBalloon {
        model: MemBalloonModel::Virtio,
        stats_period: Some(BALLOON_STATS_PERIOD_SECS),
    });
    devices.rngs.push(Rng {
        model: RngModel::Virtio,
        source: Some(RNG_SOURCE.to_string()),
    });
    devices.extra = extraconfig(spec)?;

    let uuid = spec.uuid.to_ascii_lowercase();
    Ok(Domain {
        domain_type,
        name: spec.internal_name.clone(),
        uuid: Some(uuid.clone()),
        title: Some(spec.display_name.clone()),
        description: Some(spec.os_type.clone()),
        metadata: Some(OrreryMetadata {
            instance_uuid: uuid.clone(),
            instance_name: spec.host_name.clone(),
        }),
        max_memory,
        memory_kib,
        current_memory_kib: Some(memory_kib),
        vcpu: Vcpu {
            count: max_vcpus,
            placement: Some(VcpuPlacement::Static),
            current: (max_vcpus > spec.vcpus).then_some(spec.vcpus),
        },
        sysinfo: Some(SysInfo {
            manufacturer: non_empty(&spec.smbios_manufacturer),
            product: non_empty(&spec.smbios_product),
            version: Some(SMBIOS_VERSION.to_string()),
            // Guests read their identity from SMBIOS (cloud-init, inventory
            // tools), so both serial and UUID carry the instance UUID.
            // libvirt requires the SMBIOS UUID to equal the domain UUID.
            serial: Some(uuid.clone()),
            uuid: Some(uuid),
            family: None,
        }),
        os: Os {
            os_type: "hvm".to_string(),
            arch: Some(facts.arch.clone()),
            machine: Some(machine),
            loader,
            nvram,
            smbios_mode: Some(SmbiosMode::Sysinfo),
            // Boot order is given per device; libvirt rejects a domain that
            // also lists `<boot dev>` here.
            boot: Vec::new(),
        },
        features: Features {
            // ACPI is how a guest learns about the power button, so without
            // it a graceful shutdown request is ignored.
            acpi: true,
            apic: true,
            // Secure Boot firmware keeps its variable store in SMM-protected
            // flash and will not start without SMM.
            smm: secure_boot,
        },
        cpu: Some(cpu(spec, domain_type, max_vcpus, numa)?),
        clock: Some(clock_offset(&spec.os_type)),
        on_poweroff: Some(LifecycleAction::Destroy),
        on_reboot: Some(LifecycleAction::Restart),
        on_crash: Some(LifecycleAction::Destroy),
        devices,
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Characters XML 1.0 can carry. Anything else would make the rendered
/// document unreadable to libvirt, so it is refused up front.
fn check_xml_text(field: &str, value: &str) -> Result<(), DesignError> {
    let bad = value.chars().find(|&c| {
        !matches!(c,
            '\t' | '\n' | '\r'
            | '\u{20}'..='\u{D7FF}'
            | '\u{E000}'..='\u{FFFD}'
            | '\u{10000}'..='\u{10FFFF}')
    });
    match bad {
        Some(c) => Err(invalid(
            field,
            format!(
                "contains character U+{:04X}, which XML cannot carry",
                c as u32
            ),
        )),
        None => Ok(()),
    }
}

fn check_single_line(field: &str, value: &str) -> Result<(), DesignError> {
    check_xml_text(field, value)?;
    if value.contains(['\n', '\r']) {
        return Err(invalid(field, "must be a single line"));
    }
    Ok(())
}

fn check_absolute_path(field: &str, value: &str) -> Result<(), DesignError> {
    check_single_line(field, value)?;
    if !value.starts_with('/') {
        return Err(invalid(field, format!("{value:?} is not an absolute path")));
    }
    Ok(())
}

fn join_path(field: &str, dir: &str, file: &str) -> Result<String, DesignError> {
    check_absolute_path(field, dir)?;
    let dir = dir.trim_end_matches('/');
    Ok(format!("{dir}/{file}"))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn validate_identity(spec: &InstanceSpec) -> Result<(), DesignError> {
    if !is_uuid(&spec.uuid) {
        return Err(invalid(
            "uuid",
            format!("{:?} is not a UUID (8-4-4-4-12 hex digits)", spec.uuid),
        ));
    }
    // The internal name is the libvirt domain name and also a file name
    // (console log, NVRAM store); keeping it to a portable character set
    // rules out path traversal and shell-hostile names.
    let name = &spec.internal_name;
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("internal_name", "must be 1 to 64 characters long"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with(['.', '-'])
    {
        return Err(invalid(
            "internal_name",
            format!("{name:?} may contain only A-Z a-z 0-9 - _ . and must not start with . or -"),
        ));
    }
    // libvirt rejects titles spanning several lines.
    check_single_line("display_name", &spec.display_name)?;
    check_xml_text("host_name", &spec.host_name)?;
    check_xml_text("os_type", &spec.os_type)?;
    check_xml_text("smbios_manufacturer", &spec.smbios_manufacturer)?;
    check_xml_text("smbios_product", &spec.smbios_product)?;
    Ok(())
}

fn choose_domain_type(facts: &HostFacts, config: &DesignConfig) -> Result<DomainType, DesignError> {
    let offered: Vec<DomainType> = facts
        .domain_types
        .iter()
        .filter_map(|t| DomainType::from_xml_value(t))
        .collect();
    if let Some(forced) = &config.forced_domain_type {
        return DomainType::from_xml_value(forced)
            .filter(|t| offered.contains(t))
            .ok_or_else(|| DesignError::ForcedDomainTypeUnavailable {
                forced: forced.clone(),
                offered: facts.domain_types.clone(),
            });
    }
    // Hardware acceleration whenever the host has it; emulation otherwise.
    [DomainType::Kvm, DomainType::Qemu]
        .into_iter()
        .find(|t| offered.contains(t))
        .ok_or_else(|| DesignError::NoDomainType {
            offered: facts.domain_types.clone(),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chipset {
    /// i440FX + PIIX: IDE, conventional PCI.
    I440fx,
    /// Q35 + ICH9: AHCI (SATA), PCIe, SMM; no IDE.
    Q35,
}

impl Chipset {
    fn describe(self) -> &'static str {
        match self {
            Chipset::I440fx => "i440fx (pc)",
            Chipset::Q35 => "q35",
        }
    }

    fn classify(machine: &str) -> Option<(Chipset, bool)> {
        match machine {
            "pc" => Some((Chipset::I440fx, true)),
            "q35" => Some((Chipset::Q35, true)),
            m if m.starts_with("pc-i440fx-") => Some((Chipset::I440fx, false)),
            m if m.starts_with("pc-q35-") => Some((Chipset::Q35, false)),
            _ => None,
        }
    }
}

/// Numbers in a versioned machine type, for ordering `pc-q35-8.2` below
/// `pc-q35-10.0` or `pc-q35-rhel9.4.0`.
fn version_key(machine: &str) -> Vec<u64> {
    machine
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// BIOS guests get i440FX: it is what older templates were built on, and
/// guests from before AHCI drivers only boot from IDE. UEFI guests get Q35,
/// which Secure Boot requires (SMM) and which modern firmware targets. A
/// BIOS guest on a host without i440FX falls back to Q35.
///
/// The unversioned alias (`pc`, `q35`) is preferred, because it names the
/// emulator's current default; otherwise the newest versioned type.
fn choose_machine(boot: BootMode, facts: &HostFacts) -> Result<(String, Chipset), DesignError> {
    let wanted: &[Chipset] = match boot {
        BootMode::Bios => &[Chipset::I440fx, Chipset::Q35],
        BootMode::Uefi { .. } => &[Chipset::Q35],
    };
    for &chipset in wanted {
        let best = facts
            .machine_types
            .iter()
            .filter_map(|m| Chipset::classify(m).map(|(c, alias)| (m, c, alias)))
            .filter(|(_, c, _)| *c == chipset)
            .max_by(|a, b| a.2.cmp(&b.2).then(version_key(a.0).cmp(&version_key(b.0))));
        if let Some((m, c, _)) = best {
            return Ok((m.clone(), c));
        }
    }
    Err(DesignError::NoMachineType {
        wanted: wanted[0].describe(),
        offered: facts.machine_types.clone(),
    })
}

/// A machine type the instance's settings name: it must be one this host's
/// QEMU offers, of a chipset the designer knows, and Q35 for UEFI (secure
/// boot needs its SMM).
fn named_machine(
    m: &str,
    boot: BootMode,
    facts: &HostFacts,
) -> Result<(String, Chipset), DesignError> {
    if !facts.machine_types.iter().any(|t| t == m) {
        return Err(bad_detail(
            DETAIL_MACHINE_TYPE,
            m,
            format!(
                "not a machine type of this host's QEMU (offered: {})",
                facts.machine_types.join(", ")
            ),
        ));
    }
    let Some((chipset, _)) = Chipset::classify(m) else {
        return Err(bad_detail(
            DETAIL_MACHINE_TYPE,
            m,
            "only pc/i440fx and q35 machine types are supported",
        ));
    };
    if matches!(boot, BootMode::Uefi { .. }) && chipset != Chipset::Q35 {
        return Err(bad_detail(
            DETAIL_MACHINE_TYPE,
            m,
            "UEFI instances need a q35 machine type",
        ));
    }
    Ok((m.to_string(), chipset))
}

fn firmware(
    spec: &InstanceSpec,
    facts: &HostFacts,
    config: &DesignConfig,
) -> Result<(Option<Loader>, Option<Nvram>), DesignError> {
    let BootMode::Uefi { secure } = spec.boot_mode else {
        return Ok((None, None));
    };
    // A Secure Boot build needs SMM and enforces signatures, a plain build
    // cannot enforce them; so the image must match the request either way.
    let fw = facts
        .firmware
        .iter()
        .find(|f| f.secure_boot == secure)
        .ok_or(DesignError::NoFirmware { secure })?;
    check_absolute_path("host facts firmware loader", &fw.loader)?;
    if let Some(t) = &fw.nvram_template {
        check_absolute_path("host facts firmware nvram_template", t)?;
    }
    let loader = Loader {
        path: fw.loader.clone(),
        readonly: Some(true),
        loader_type: Some(LoaderType::Pflash),
        secure: Some(secure),
    };
    let nvram = Nvram {
        path: join_path(
            "config nvram_dir",
            &config.nvram_dir,
            &format!("{}_VARS.fd", spec.internal_name),
        )?,
        template: fw.nvram_template.clone(),
    };
    Ok((Some(loader), Some(nvram)))
}

fn detail<'a>(spec: &'a InstanceSpec, key: &str) -> Option<&'a str> {
    spec.details
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

fn bad_detail(key: &str, value: &str, reason: impl Into<String>) -> DesignError {
    DesignError::InvalidDetail {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// vCPU ids `0` to `count - 1` in libvirt's list syntax.
fn cpu_list(count: u32) -> String {
    match count {
        0 | 1 => "0".to_string(),
        n => format!("0-{}", n - 1),
    }
}

/// The CPU for `vcpus` vCPUs in all: the most a scalable instance may
/// have, since the topology has to hold every vCPU that may be plugged in.
fn cpu(
    spec: &InstanceSpec,
    domain_type: DomainType,
    vcpus: u32,
    numa: Vec<NumaCell>,
) -> Result<Cpu, DesignError> {
    // Guests license and schedule by sockets and cores, so the requested
    // layout is honoured when it fits the vCPU count; otherwise every vCPU
    // is its own socket, which every guest accepts.
    let cores = match detail(spec, DETAIL_CORES_PER_SOCKET) {
        None => 1,
        Some(v) => {
            let n: u32 = v.parse().map_err(|_| {
                bad_detail(DETAIL_CORES_PER_SOCKET, v, "must be a positive integer")
            })?;
            if n == 0 {
                return Err(bad_detail(
                    DETAIL_CORES_PER_SOCKET,
                    v,
                    "must be a positive integer",
                ));
            }
            if vcpus.is_multiple_of(n) {
                n
            } else {
                1
            }
        }
    };
    let topology = CpuTopology {
        sockets: vcpus / cores,
        cores,
        threads: 1,
    };
    let model = detail(spec, DETAIL_CPU_MODEL);
    if let Some(m) = model {
        if m.len() > 64
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad_detail(
                DETAIL_CPU_MODEL,
                m,
                "a CPU model name (letters, digits, '-', '_', '.')",
            ));
        }
    }
    let mode = match detail(spec, DETAIL_CPU_MODE)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("custom") => Some(CpuMode::Custom),
        Some("host-model") => Some(CpuMode::HostModel),
        Some("host-passthrough") => Some(CpuMode::HostPassthrough),
        Some(_) => {
            return Err(bad_detail(
                DETAIL_CPU_MODE,
                detail(spec, DETAIL_CPU_MODE).unwrap_or_default(),
                "expected custom, host-model or host-passthrough",
            ))
        }
    };
    match (mode, model) {
        (Some(CpuMode::Custom), None) => {
            return Err(bad_detail(
                DETAIL_CPU_MODE,
                "custom",
                "custom needs guest.cpu.model",
            ))
        }
        (Some(m), Some(_)) if m != CpuMode::Custom => {
            return Err(bad_detail(
                DETAIL_CPU_MODEL,
                model.unwrap_or_default(),
                "a model is only used with guest.cpu.mode custom",
            ))
        }
        (_, Some(m)) => {
            return Ok(Cpu {
                mode: CpuMode::Custom,
                model: Some(m.to_string()),
                topology: Some(topology),
                numa,
            })
        }
        (Some(m), None) => {
            return Ok(Cpu {
                mode: m,
                model: None,
                topology: Some(topology),
                numa,
            })
        }
        (None, None) => {}
    }
    Ok(match domain_type {
        // The guest sees the host CPU as is: best performance and every
        // instruction set extension. The price is that live migration needs
        // an identical CPU on the destination.
        DomainType::Kvm => Cpu {
            mode: CpuMode::HostPassthrough,
            model: None,
            topology: Some(topology),
            numa,
        },
        DomainType::Qemu => Cpu {
            mode: CpuMode::Custom,
            model: Some(TCG_CPU_MODEL.to_string()),
            topology: Some(topology),
            numa,
        },
    })
}

/// Windows keeps the hardware clock in local time; everything else in UTC.
fn clock_offset(os_type: &str) -> ClockOffset {
    if os_type.to_ascii_lowercase().contains("windows") {
        ClockOffset::Localtime
    } else {
        ClockOffset::Utc
    }
}

fn disk_bus(
    spec: &InstanceSpec,
    key: &str,
    chipset: Chipset,
) -> Result<Option<DiskBus>, DesignError> {
    let Some(v) = detail(spec, key) else {
        return Ok(None);
    };
    let bus = match v.to_ascii_lowercase().as_str() {
        "virtio" => DiskBus::Virtio,
        "sata" => DiskBus::Sata,
        "ide" => DiskBus::Ide,
        "scsi" => return Err(bad_detail(
            key,
            v,
            "scsi needs a virtio-scsi controller, which is not defined; use virtio, sata or ide",
        )),
        _ => return Err(bad_detail(key, v, "expected virtio, sata or ide")),
    };
    if bus == DiskBus::Ide && chipset == Chipset::Q35 {
        return Err(bad_detail(
            key,
            v,
            "the q35 machine type (used for UEFI) has no IDE controller; use virtio or sata",
        ));
    }
    Ok(Some(bus))
}

fn target_prefix(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "vd",
        DiskBus::Ide => "hd",
        DiskBus::Sata | DiskBus::Scsi | DiskBus::Usb => "sd",
    }
}

/// libvirt's disk naming: a..z, aa..az, ba.. (bijective base 26).
fn disk_letters(mut index: u32) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    letters.reverse();
    String::from_utf8(letters).expect("ASCII letters")
}

/// IDE has two channels with two devices each.
const IDE_MAX_DEVICES: u32 = 4;

/// The CD-ROM is always the third device (`hdc`) of its bus: a long-standing
/// convention guests and templates rely on. libvirt derives the unit from
/// the name's letters whatever the bus, so disks on the same bus skip it.
const CDROM_INDEX: u32 = 2;
const CDROM_TARGET: &str = "hdc";
/// The config drive is the fourth device (`hdd`) of the CD-ROM's bus.
const CONFIG_DRIVE_INDEX: u32 = 3;
const CONFIG_DRIVE_TARGET: &str = "hdd";

fn disks(spec: &InstanceSpec, chipset: Chipset) -> Result<Vec<Disk>, DesignError> {
    let roots = spec
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Root)
        .count();
    if roots != 1 {
        return Err(invalid(
            "volumes",
            format!("exactly one root volume is required, found {roots}"),
        ));
    }
    let mut ids = HashSet::new();
    let mut device_ids = HashSet::new();
    let mut paths = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        if v.id.trim().is_empty() {
            return Err(invalid(format!("volumes[{i}].id"), "must not be empty"));
        }
        check_xml_text(&format!("volumes[{i}].id"), &v.id)?;
        check_absolute_path(&format!("volumes[{i}].path"), &v.path)?;
        if !ids.insert(v.id.as_str()) {
            return Err(DesignError::Duplicate {
                field: format!("volumes[{i}].id"),
                value: v.id.clone(),
            });
        }
        if !device_ids.insert(v.device_id) {
            return Err(DesignError::Duplicate {
                field: format!("volumes[{i}].device_id"),
                value: v.device_id.to_string(),
            });
        }
        // Two writers on one image corrupt it.
        if !paths.insert(v.path.as_str()) {
            return Err(DesignError::Duplicate {
                field: format!("volumes[{i}].path"),
                value: v.path.clone(),
            });
        }
    }
    if let Some(iso) = &spec.cdrom {
        check_absolute_path("cdrom", iso)?;
    }
    if let Some(iso) = &spec.config_drive {
        check_absolute_path("config_drive", iso)?;
    }

    let root_bus = disk_bus(spec, DETAIL_ROOT_DISK_CONTROLLER, chipset)?.unwrap_or(DiskBus::Virtio);
    let data_bus = disk_bus(spec, DETAIL_DATA_DISK_CONTROLLER, chipset)?.unwrap_or(root_bus);
    let cdrom_bus = match chipset {
        Chipset::I440fx => DiskBus::Ide,
        Chipset::Q35 => DiskBus::Sata,
    };

    let mut ordered: Vec<&VolumeSpec> = spec.volumes.iter().collect();
    ordered.sort_by_key(|v| (v.kind != VolumeKind::Root, v.device_id));

    let mut next_index: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut disks = Vec::with_capacity(ordered.len() + 1);
    for v in ordered {
        let bus = if v.kind == VolumeKind::Root {
            root_bus
        } else {
            data_bus
        };
        let prefix = target_prefix(bus);
        let index = next_index.entry(prefix).or_insert(0);
        if bus == cdrom_bus && *index == CDROM_INDEX {
            *index += 1;
        }
        if bus == cdrom_bus && spec.config_drive.is_some() && *index == CONFIG_DRIVE_INDEX {
            *index += 1;
        }
        if bus == DiskBus::Ide && *index >= IDE_MAX_DEVICES {
            return Err(invalid(
                "volumes",
                "IDE holds at most 3 disks besides the CD-ROM (2 with a config drive); choose virtio or sata",
            ));
        }
        let target_dev = format!("{prefix}{}", disk_letters(*index));
        *index += 1;
        disks.push(Disk {
            // Host block devices are passed as such so QEMU does not treat
            // them as files (no size probing through the file system).
            disk_type: if v.path.starts_with("/dev/") {
                DiskType::Block
            } else {
                DiskType::File
            },
            device: DiskDevice::Disk,
            driver: Some(DiskDriver {
                name: Some("qemu".to_string()),
                format: Some(match v.format {
                    VolumeFormat::Qcow2 => DiskFormat::Qcow2,
                    VolumeFormat::Raw => DiskFormat::Raw,
                }),
                // No host page cache: guest flushes reach storage, memory is
                // not double-cached, and the disk is safe to migrate.
                cache: Some(DiskCache::None),
                // Guest TRIM frees space in thin images and storage.
                discard: Some(DiskDiscard::Unmap),
            }),
            source: Some(v.path.clone()),
            target_dev,
            target_bus: bus,
            serial: disk_serial(&v.id),
            readonly: false,
            boot_order: (v.kind == VolumeKind::Root).then_some(1),
            iotune: iotune(v),
        });
    }

    // The drive is present even without media so an ISO can be inserted
    // later: IDE and SATA drives cannot be hot-plugged, media can be changed.
    // Root disk first: a blank root disk is not bootable, so firmware falls
    // through to the installer ISO, and once installed the guest boots from
    // disk without the ISO having to be ejected.
    disks.push(cdrom_drive(
        spec.cdrom.clone(),
        CDROM_TARGET,
        cdrom_bus,
        spec.cdrom.as_ref().map(|_| 2),
    ));
    if let Some(iso) = &spec.config_drive {
        disks.push(cdrom_drive(
            Some(iso.clone()),
            CONFIG_DRIVE_TARGET,
            cdrom_bus,
            None,
        ));
    }
    Ok(disks)
}

/// A read-only CD-ROM drive holding `source` (or empty).
fn cdrom_drive(
    source: Option<String>,
    target: &str,
    bus: DiskBus,
    boot_order: Option<u32>,
) -> Disk {
    Disk {
        disk_type: DiskType::File,
        device: DiskDevice::Cdrom,
        driver: Some(DiskDriver {
            name: Some("qemu".to_string()),
            format: Some(DiskFormat::Raw),
            cache: None,
            discard: None,
        }),
        source,
        target_dev: target.to_string(),
        target_bus: bus,
        serial: None,
        readonly: true,
        boot_order,
        iotune: None,
    }
}

/// virtio-blk serials hold 20 bytes and libvirt accepts only a limited
/// character set, so the serial is the volume ID's alphanumerics, truncated.
/// Guests then find the volume under /dev/disk/by-id.
fn disk_serial(id: &str) -> Option<String> {
    let serial: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    (!serial.is_empty()).then_some(serial)
}

fn iotune(v: &VolumeSpec) -> Option<IoTune> {
    // Zero means "no limit" both to the coordinator and to libvirt; leaving
    // it out keeps the definition free of throttles that do nothing.
    let limit = |x: Option<u64>| x.filter(|&n| n > 0);
    let t = IoTune {
        read_bytes_sec: limit(v.read_bytes_sec),
        write_bytes_sec: limit(v.write_bytes_sec),
        read_iops_sec: limit(v.read_iops_sec),
        write_iops_sec: limit(v.write_iops_sec),
        ..IoTune::default()
    };
    (t != IoTune::default()).then_some(t)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

fn interfaces(spec: &InstanceSpec) -> Result<Vec<Interface>, DesignError> {
    let model = match detail(spec, DETAIL_NIC_ADAPTER) {
        None => NicModel::Virtio,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "virtio" => NicModel::Virtio,
            "e1000" => NicModel::E1000,
            "e1000e" => NicModel::E1000e,
            "rtl8139" => NicModel::Rtl8139,
            _ => {
                return Err(bad_detail(
                    DETAIL_NIC_ADAPTER,
                    v,
                    "expected virtio, e1000, e1000e or rtl8139",
                ))
            }
        },
    };
    let defaults = spec.nics.iter().filter(|n| n.is_default).count();
    if !spec.nics.is_empty() && defaults != 1 {
        return Err(invalid(
            "nics",
            format!("exactly one NIC must be the default, found {defaults}"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(spec.nics.len());
    // Spec order is device order: the guest numbers its NICs by it.
    for (i, nic) in spec.nics.iter().enumerate() {
        let field = format!("nics[{i}].mac");
        let mac = parse_mac(&nic.mac)
            .ok_or_else(|| invalid(&field, format!("{:?} is not a MAC address", nic.mac)))?;
        if mac[0] & 1 == 1 {
            return Err(invalid(
                &field,
                format!("{} is a multicast address", nic.mac),
            ));
        }
        let mac = nic.mac.to_ascii_lowercase();
        if !seen.insert(mac.clone()) {
            return Err(DesignError::DuplicateMac { field, mac });
        }
        if nic.network.trim().is_empty() {
            return Err(invalid(format!("nics[{i}].network"), "must not be empty"));
        }
        check_single_line(&format!("nics[{i}].network"), &nic.network)?;
        out.push(Interface {
            source: InterfaceSource::Network(nic.network.clone()),
            mac: Some(mac),
            model: Some(model),
            target_dev: None,
            bandwidth: None,
        });
    }
    Ok(out)
}

/// The password QEMU will actually check: the first
/// [`VNC_PASSWORD_MAX_LEN`] characters. Longer passwords are truncated
/// rather than refused because the coordinator generates them and QEMU
/// would ignore the rest anyway; writing the effective password keeps the
/// definition truthful, and the console proxy must truncate the same way.
pub fn effective_vnc_password(password: &str) -> &str {
    match password.char_indices().nth(VNC_PASSWORD_MAX_LEN) {
        Some((end, _)) => &password[..end],
        None => password,
    }
}

fn vnc(spec: &InstanceSpec, config: &DesignConfig) -> Result<Graphics, DesignError> {
    // Every console must be authenticated; the VNC protocol carries the
    // password as Latin-1 bytes, so only printable ASCII is portable.
    if spec.vnc_password.is_empty() {
        return Err(invalid("vnc_password", "must not be empty"));
    }
    if !spec
        .vnc_password
        .chars()
        .all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err(invalid(
            "vnc_password",
            "may contain only printable ASCII characters",
        ));
    }
    if config.vnc_listen.parse::<IpAddr>().is_err() {
        return Err(invalid(
            "config vnc_listen",
            format!("{:?} is not an IP address", config.vnc_listen),
        ));
    }
    Ok(Graphics {
        port: Some(-1),
        autoport: true,
        listen: Some(config.vnc_listen.clone()),
        passwd: Some(effective_vnc_password(&spec.vnc_password).to_string()),
    })
}

/// Standard VGA by default: SeaBIOS and OVMF both drive it and every guest
/// OS has a driver for it, including installers and Windows without extra
/// drivers. virtio-gpu is available through the detail for guests that
/// have its driver.
fn video(spec: &InstanceSpec) -> Result<Video, DesignError> {
    let model = match detail(spec, DETAIL_VIDEO_HARDWARE) {
        None => VideoModel::Vga,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "vga" => VideoModel::Vga,
            "virtio" => VideoModel::Virtio,
            "cirrus" => VideoModel::Cirrus,
            "qxl" => VideoModel::Qxl,
            "bochs" => VideoModel::Bochs,
            // A passed-through GPU is the display (gpudisplay offerings).
            "none" => VideoModel::None,
            _ => {
                return Err(bad_detail(
                    DETAIL_VIDEO_HARDWARE,
                    v,
                    "expected vga, virtio, cirrus, qxl, bochs or none",
                ))
            }
        },
    };
    Ok(Video {
        model,
        vram_kib: None,
        heads: None,
    })
}

fn tpm(spec: &InstanceSpec, facts: &HostFacts) -> Result<Option<Tpm>, DesignError> {
    let version_detail = detail(spec, DETAIL_TPM_VERSION);
    let model_detail = detail(spec, DETAIL_TPM_MODEL);
    if !spec.tpm && version_detail.is_none() && model_detail.is_none() {
        return Ok(None);
    }
    if !facts.tpm_supported {
        return Err(DesignError::TpmUnsupported);
    }
    // CRB is the TPM 2.0 interface UEFI firmware and Windows 11 expect;
    // SeaBIOS's TPM support is built around TIS.
    let model = match model_detail.map(str::to_ascii_lowercase).as_deref() {
        None => match spec.boot_mode {
            BootMode::Uefi { .. } => TpmModel::TpmCrb,
            BootMode::Bios => TpmModel::TpmTis,
        },
        Some("tpm-tis") => TpmModel::TpmTis,
        Some("tpm-crb") => TpmModel::TpmCrb,
        Some(_) => {
            return Err(bad_detail(
                DETAIL_TPM_MODEL,
                model_detail.unwrap_or_default(),
                "expected tpm-tis or tpm-crb",
            ))
        }
    };
    // 2.0 unless 1.2 is asked for: an unknown version falls back to the
    // default, as the seed says.
    let version = match version_detail.map(str::trim) {
        Some("1.2") => TpmVersion::V1_2,
        _ => TpmVersion::V2_0,
    };
    if version == TpmVersion::V1_2 && model == TpmModel::TpmCrb {
        return Err(bad_detail(
            DETAIL_TPM_VERSION,
            "1.2",
            "TPM 1.2 is not supported with the tpm-crb model; use tpm-tis or version 2.0",
        ));
    }
    Ok(Some(Tpm {
        model,
        version: Some(version),
    }))
}

/// Accepts `DDDD:BB:SS.F` (as sysfs and `lspci -D` print) or `BB:SS.F`
/// (PCI domain 0).
fn parse_pci_address(field: &str, s: &str) -> Result<PciAddress, DesignError> {
    let bad = || {
        invalid(
            field,
            format!("{s:?} is not a PCI address (DDDD:BB:SS.F or BB:SS.F)"),
        )
    };
    let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (domain, bus, slot) = match parts.as_slice() {
        [d, b, s] => (*d, *b, *s),
        [b, s] => ("0", *b, *s),
        _ => return Err(bad()),
    };
    let hex = |v: &str, max_len: usize| {
        (!v.is_empty() && v.len() <= max_len)
            .then(|| u32::from_str_radix(v, 16).ok())
            .flatten()
    };
    let address = PciAddress {
        domain: hex(domain, 4).ok_or_else(bad)? as u16,
        bus: hex(bus, 2).ok_or_else(bad)? as u8,
        slot: hex(slot, 2).filter(|&v| v < 32).ok_or_else(bad)? as u8,
        function: hex(function, 1).filter(|&v| v < 8).ok_or_else(bad)? as u8,
    };
    Ok(address)
}

fn gpu(spec: &InstanceSpec) -> Result<Vec<Hostdev>, DesignError> {
    match &spec.gpu {
        None => Ok(Vec::new()),
        Some(GpuSpec::Passthrough { pci_addresses }) => {
            if pci_addresses.is_empty() {
                return Err(invalid(
                    "gpu.pci_addresses",
                    "must list at least one device",
                ));
            }
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(pci_addresses.len());
            for (i, a) in pci_addresses.iter().enumerate() {
                let field = format!("gpu.pci_addresses[{i}]");
                let address = parse_pci_address(&field, a)?;
                if !seen.insert(address) {
                    return Err(DesignError::Duplicate {
                        field,
                        value: a.clone(),
                    });
                }
                // libvirt detaches the device from its host driver and binds
                // it to vfio-pci at start, and gives it back at stop.
                out.push(Hostdev::Pci {
                    address,
                    managed: true,
                });
            }
            Ok(out)
        }
        Some(GpuSpec::Mdev { uuid, mdev_type }) => {
            if !is_uuid(uuid) {
                return Err(invalid(
                    "gpu.uuid",
                    format!("{uuid:?} is not a UUID (8-4-4-4-12 hex digits)"),
                ));
            }
            if mdev_type.trim().is_empty() {
                return Err(invalid("gpu.mdev_type", "must not be empty"));
            }
            Ok(vec![Hostdev::Mdev {
                uuid: uuid.to_ascii_lowercase(),
                model: MdevModel::VfioPci,
            }])
        }
    }
}

fn extraconfig(spec: &InstanceSpec) -> Result<Vec<XmlFragment>, DesignError> {
    if spec.extraconfig.is_empty() {
        return Ok(Vec::new());
    }
    // Extra configuration can attach arbitrary host resources to a guest;
    // only an administrator may ask for that.
    if !spec.caller_is_admin {
        return Err(DesignError::ExtraConfigNotAllowed);
    }
    spec.extraconfig
        .iter()
        .enumerate()
        .map(|(index, xml)| {
            XmlFragment::new(xml.as_str())
                .map_err(|source| DesignError::MalformedExtraConfig { index, source })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_letters_follow_libvirt_naming() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
        assert_eq!(disk_letters(51), "az");
        assert_eq!(disk_letters(52), "ba");
        assert_eq!(disk_letters(701), "zz");
        assert_eq!(disk_letters(702), "aaa");
    }

    #[test]
    fn machine_versions_order_numerically() {
        assert!(version_key("pc-q35-10.0") > version_key("pc-q35-8.2"));
        assert!(version_key("pc-q35-8.2") > version_key("pc-q35-8.1"));
    }

    #[test]
    fn pci_addresses_parse_in_both_spellings() {
        let a = parse_pci_address("f", "0000:3b:00.1").unwrap();
        assert_eq!(
            a,
            PciAddress {
                domain: 0,
                bus: 0x3b,
                slot: 0,
                function: 1
            }
        );
        assert_eq!(parse_pci_address("f", "3b:00.1").unwrap(), a);
        assert_eq!(a.to_string(), "0000:3b:00.1");
        for bad in [
            "",
            "3b:00",
            "3b:00.8",
            "3b:20.0",
            "100:00.0",
            "x:00.0",
            "0:0:0:0.0",
        ] {
            assert!(parse_pci_address("f", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uuids_are_checked_by_shape() {
        assert!(is_uuid("6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12"));
        assert!(!is_uuid("6f1c2b9e0d4a4c3e9a512b7c8d9e0f12"));
        assert!(!is_uuid("6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f1g"));
    }
}
