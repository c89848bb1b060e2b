//! One test (or a few) per design rule.

mod common;

use common::{kvm_facts, lab_config, lab_facts, lab_spec, INSTANCE_UUID};
use orrery_agent::designer::*;
use orrery_agent::domxml::*;

fn design_ok(spec: &InstanceSpec, facts: &HostFacts) -> Domain {
    design(spec, facts, &lab_config()).unwrap()
}

fn design_err(spec: &InstanceSpec, facts: &HostFacts) -> DesignError {
    design(spec, facts, &lab_config()).unwrap_err()
}

fn with_detail(mut spec: InstanceSpec, key: &str, value: &str) -> InstanceSpec {
    spec.details.insert(key.into(), value.into());
    spec
}

fn uefi(secure: bool) -> InstanceSpec {
    let mut spec = lab_spec();
    spec.boot_mode = BootMode::Uefi { secure };
    spec
}

fn assert_invalid_field(err: DesignError, field: &str) {
    match &err {
        DesignError::InvalidField { field: f, .. } if f == field => {
            assert!(
                err.to_string().starts_with(&format!("{field}: ")),
                "message does not name the field: {err}"
            );
        }
        other => panic!("expected InvalidField for {field}, got {other:?}"),
    }
}

fn assert_invalid_detail(err: DesignError, key: &str) {
    match &err {
        DesignError::InvalidDetail { key: k, .. } if k == key => {
            assert!(err.to_string().contains(key), "{err}");
        }
        other => panic!("expected InvalidDetail for {key}, got {other:?}"),
    }
}

// ---- domain type -------------------------------------------------------

#[test]
fn kvm_is_preferred_when_offered() {
    let d = design_ok(&lab_spec(), &kvm_facts());
    assert_eq!(d.domain_type, DomainType::Kvm);
}

#[test]
fn qemu_is_used_when_kvm_is_not_offered() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(d.domain_type, DomainType::Qemu);
}

#[test]
fn config_can_force_an_offered_type() {
    let config = DesignConfig {
        forced_domain_type: Some("qemu".into()),
        ..lab_config()
    };
    let d = design(&lab_spec(), &kvm_facts(), &config).unwrap();
    assert_eq!(d.domain_type, DomainType::Qemu);
}

#[test]
fn forced_type_must_be_offered() {
    for forced in ["kvm", "xen"] {
        let config = DesignConfig {
            forced_domain_type: Some(forced.into()),
            ..lab_config()
        };
        let err = design(&lab_spec(), &lab_facts(), &config).unwrap_err();
        assert_eq!(
            err,
            DesignError::ForcedDomainTypeUnavailable {
                forced: forced.into(),
                offered: vec!["qemu".into()],
            }
        );
        assert!(err.to_string().contains("forced_domain_type"));
    }
}

#[test]
fn host_without_kvm_or_qemu_is_refused() {
    let mut facts = lab_facts();
    facts.domain_types = vec!["lxc".into()];
    assert_eq!(
        design_err(&lab_spec(), &facts),
        DesignError::NoDomainType {
            offered: vec!["lxc".into()]
        }
    );
}

#[test]
fn only_x86_64_hosts_are_supported() {
    let mut facts = lab_facts();
    facts.arch = "aarch64".into();
    assert_eq!(
        design_err(&lab_spec(), &facts),
        DesignError::UnsupportedArch {
            arch: "aarch64".into()
        }
    );
}

// ---- machine type ------------------------------------------------------

#[test]
fn bios_uses_the_i440fx_alias() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(d.os.machine.as_deref(), Some("pc"));
    assert_eq!(d.os.arch.as_deref(), Some("x86_64"));
    assert_eq!(d.os.os_type, "hvm");
}

#[test]
fn a_named_machine_type_must_be_offered_and_fit_the_firmware() {
    let spec = with_detail(lab_spec(), DETAIL_MACHINE_TYPE, "pc-q35-8.2");
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.os.machine.as_deref(), Some("pc-q35-8.2"));
    // q35 has no IDE: the CD-ROM moves to SATA.
    assert!(d
        .devices
        .disks
        .iter()
        .any(|x| x.device == DiskDevice::Cdrom && x.target_bus == DiskBus::Sata));
    let spec = with_detail(lab_spec(), DETAIL_MACHINE_TYPE, "pc-i440fx-8.2");
    assert_eq!(
        design_ok(&spec, &lab_facts()).os.machine.as_deref(),
        Some("pc-i440fx-8.2")
    );
    for bad in ["pc-q35-99.0", "microvm", "pc-q35-8.2</machine>"] {
        let spec = with_detail(lab_spec(), DETAIL_MACHINE_TYPE, bad);
        assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_MACHINE_TYPE);
    }
    let spec = with_detail(uefi(true), DETAIL_MACHINE_TYPE, "pc-i440fx-rhel7.6.0");
    assert_invalid_detail(design_err(&spec, &kvm_facts()), DETAIL_MACHINE_TYPE);
}

#[test]
fn guest_cpu_model_and_mode_from_details() {
    let d = design_ok(
        &with_detail(lab_spec(), DETAIL_CPU_MODEL, "Westmere"),
        &lab_facts(),
    );
    assert_eq!(
        d.cpu.as_ref().map(|c| (c.mode, c.model.clone())),
        Some((CpuMode::Custom, Some("Westmere".into())))
    );
    let d = design_ok(
        &with_detail(lab_spec(), DETAIL_CPU_MODE, "host-model"),
        &kvm_facts(),
    );
    assert_eq!(d.cpu.as_ref().map(|c| c.mode), Some(CpuMode::HostModel));
    for (k, v) in [
        (DETAIL_CPU_MODEL, "Westmere</model><x>"),
        (DETAIL_CPU_MODE, "maximum"),
        (DETAIL_CPU_MODE, "custom"),
    ] {
        assert_invalid_detail(design_err(&with_detail(lab_spec(), k, v), &lab_facts()), k);
    }
    let both = with_detail(
        with_detail(lab_spec(), DETAIL_CPU_MODE, "host-passthrough"),
        DETAIL_CPU_MODEL,
        "Westmere",
    );
    assert_invalid_detail(design_err(&both, &kvm_facts()), DETAIL_CPU_MODEL);
}

#[test]
fn bios_without_alias_uses_newest_versioned_i440fx() {
    let mut facts = lab_facts();
    facts.machine_types = vec![
        "pc-i440fx-9.2".into(),
        "pc-i440fx-10.0".into(),
        "pc-i440fx-8.2".into(),
    ];
    let d = design_ok(&lab_spec(), &facts);
    assert_eq!(d.os.machine.as_deref(), Some("pc-i440fx-10.0"));
}

#[test]
fn bios_falls_back_to_q35_with_sata_cdrom() {
    let mut facts = lab_facts();
    facts.machine_types = vec!["pc-q35-8.2".into(), "microvm".into()];
    let d = design_ok(&lab_spec(), &facts);
    assert_eq!(d.os.machine.as_deref(), Some("pc-q35-8.2"));
    let cdrom = d.devices.disks.last().unwrap();
    assert_eq!(cdrom.target_bus, DiskBus::Sata);
}

#[test]
fn uefi_uses_q35() {
    let d = design_ok(&uefi(false), &kvm_facts());
    assert_eq!(d.os.machine.as_deref(), Some("pc-q35-rhel9.4.0"));
    let mut facts = kvm_facts();
    facts.machine_types.push("q35".into());
    let d = design_ok(&uefi(false), &facts);
    assert_eq!(d.os.machine.as_deref(), Some("q35"));
}

#[test]
fn uefi_without_q35_is_refused() {
    let mut facts = kvm_facts();
    facts.machine_types = vec!["pc".into(), "pc-i440fx-8.2".into()];
    let err = design_err(&uefi(false), &facts);
    assert!(matches!(
        err,
        DesignError::NoMachineType { wanted: "q35", .. }
    ));
    assert!(err.to_string().contains("machine_types"));
}

// ---- CPU and memory ----------------------------------------------------

#[test]
fn zero_vcpus_is_refused() {
    let mut spec = lab_spec();
    spec.vcpus = 0;
    assert_invalid_field(design_err(&spec, &lab_facts()), "vcpus");
}

#[test]
fn zero_memory_is_refused() {
    let mut spec = lab_spec();
    spec.memory_mib = 0;
    assert_invalid_field(design_err(&spec, &lab_facts()), "memory_mib");
}

#[test]
fn oversized_memory_is_refused() {
    let mut spec = lab_spec();
    spec.memory_mib = u64::MAX / 512;
    assert_invalid_field(design_err(&spec, &lab_facts()), "memory_mib");
}

#[test]
fn memory_is_set_in_kib() {
    let mut spec = lab_spec();
    spec.memory_mib = 3072;
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.memory_kib, 3072 * 1024);
    assert_eq!(d.current_memory_kib, Some(3072 * 1024));
}

#[test]
fn vcpu_count_is_static() {
    let mut spec = lab_spec();
    spec.vcpus = 6;
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        d.vcpu,
        Vcpu {
            count: 6,
            placement: Some(VcpuPlacement::Static),
            current: None
        }
    );
}

fn topology(d: &Domain) -> CpuTopology {
    d.cpu.as_ref().unwrap().topology.unwrap()
}

#[test]
fn topology_defaults_to_one_core_per_socket() {
    let mut spec = lab_spec();
    spec.vcpus = 4;
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 4,
            cores: 1,
            threads: 1
        }
    );
}

#[test]
fn cores_per_socket_is_honoured_when_it_divides() {
    let mut spec = with_detail(lab_spec(), DETAIL_CORES_PER_SOCKET, "4");
    spec.vcpus = 8;
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 2,
            cores: 4,
            threads: 1
        }
    );
    spec.vcpus = 4;
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 1,
            cores: 4,
            threads: 1
        }
    );
}

#[test]
fn cores_per_socket_that_does_not_divide_falls_back() {
    let mut spec = with_detail(lab_spec(), DETAIL_CORES_PER_SOCKET, "3");
    spec.vcpus = 4;
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 4,
            cores: 1,
            threads: 1
        }
    );
}

#[test]
fn cores_per_socket_must_be_a_positive_integer() {
    for bad in ["0", "two", "-2", "1.5"] {
        let spec = with_detail(lab_spec(), DETAIL_CORES_PER_SOCKET, bad);
        assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_CORES_PER_SOCKET);
    }
}

#[test]
fn kvm_passes_the_host_cpu_through() {
    let d = design_ok(&lab_spec(), &kvm_facts());
    let cpu = d.cpu.unwrap();
    assert_eq!(cpu.mode, CpuMode::HostPassthrough);
    assert_eq!(cpu.model, None);
}

#[test]
fn emulation_uses_a_fixed_custom_model() {
    let d = design_ok(&lab_spec(), &lab_facts());
    let cpu = d.cpu.unwrap();
    assert_eq!(cpu.mode, CpuMode::Custom);
    assert_eq!(cpu.model.as_deref(), Some(TCG_CPU_MODEL));
    assert_eq!(TCG_CPU_MODEL, "qemu64");
}

// ---- dynamic scaling ---------------------------------------------------

fn scalable(vcpus: u32, max_vcpus: u32, memory_mib: u64, max_memory_mib: u64) -> InstanceSpec {
    let mut spec = lab_spec();
    spec.vcpus = vcpus;
    spec.max_vcpus = Some(max_vcpus);
    spec.memory_mib = memory_mib;
    spec.max_memory_mib = Some(max_memory_mib);
    spec
}

#[test]
fn not_scalable_has_no_room_to_grow() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(d.max_memory, None);
    assert_eq!(d.vcpu.current, None);
    assert!(d.cpu.unwrap().numa.is_empty());
    assert!(d.devices.memories.is_empty());
}

#[test]
fn maximums_equal_to_the_start_values_are_not_scalable() {
    let spec = lab_spec();
    let equal = scalable(spec.vcpus, spec.vcpus, spec.memory_mib, spec.memory_mib);
    assert_eq!(
        design_ok(&equal, &lab_facts()).to_xml(),
        design_ok(&spec, &lab_facts()).to_xml()
    );
}

#[test]
fn scalable_vcpus_start_partly_online_with_a_topology_for_the_maximum() {
    let d = design_ok(&scalable(2, 8, 1024, 1024), &lab_facts());
    assert_eq!(
        d.vcpu,
        Vcpu {
            count: 8,
            placement: Some(VcpuPlacement::Static),
            current: Some(2)
        }
    );
    assert_eq!(
        topology(&d),
        CpuTopology {
            sockets: 8,
            cores: 1,
            threads: 1
        }
    );
    // Room for vCPUs alone needs no memory slots and no NUMA node.
    assert_eq!(d.max_memory, None);
    assert!(d.cpu.as_ref().unwrap().numa.is_empty());
    assert!(d
        .to_xml()
        .contains("<vcpu placement=\"static\" current=\"2\">8</vcpu>"));
}

#[test]
fn cores_per_socket_must_divide_the_maximum_not_the_start_count() {
    // 4 does not divide the 2 vCPUs started with, but does divide the 8
    // the topology has to hold.
    let spec = with_detail(scalable(2, 8, 1024, 1024), DETAIL_CORES_PER_SOCKET, "4");
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 2,
            cores: 4,
            threads: 1
        }
    );
    let spec = with_detail(scalable(4, 6, 1024, 1024), DETAIL_CORES_PER_SOCKET, "4");
    assert_eq!(
        topology(&design_ok(&spec, &lab_facts())),
        CpuTopology {
            sockets: 6,
            cores: 1,
            threads: 1
        }
    );
}

#[test]
fn the_topology_always_holds_exactly_the_maximum() {
    for cores in ["1", "2", "3", "4", "8"] {
        for vcpus in 1..=4 {
            for max in vcpus..=12 {
                let spec = with_detail(
                    scalable(vcpus, max, 512, 512),
                    DETAIL_CORES_PER_SOCKET,
                    cores,
                );
                let d = design_ok(&spec, &kvm_facts());
                let t = topology(&d);
                assert_eq!(
                    t.sockets * t.cores * t.threads,
                    max,
                    "{cores} {vcpus}/{max}"
                );
                assert_eq!(d.vcpu.count, max);
                assert_eq!(d.vcpu.current, (max > vcpus).then_some(vcpus));
            }
        }
    }
}

#[test]
fn scalable_memory_has_slots_and_one_numa_node_with_every_vcpu() {
    let d = design_ok(&scalable(2, 4, 1024, 4096), &lab_facts());
    assert_eq!(
        d.max_memory,
        Some(MaxMemory {
            slots: MEMORY_SLOTS,
            kib: 4096 * 1024
        })
    );
    assert_eq!(MEMORY_SLOTS, 16);
    // The guest starts with its start memory; modules bring the rest.
    assert_eq!(d.memory_kib, 1024 * 1024);
    assert_eq!(d.current_memory_kib, Some(1024 * 1024));
    assert_eq!(
        d.cpu.as_ref().unwrap().numa,
        vec![NumaCell {
            id: HOTPLUG_NUMA_NODE,
            cpus: "0-3".into(),
            memory_kib: 1024 * 1024
        }]
    );
    assert!(d.devices.memories.is_empty());
    let xml = d.to_xml();
    for line in [
        "<maxMemory slots=\"16\" unit=\"KiB\">4194304</maxMemory>",
        "<memory unit=\"KiB\">1048576</memory>",
        "<currentMemory unit=\"KiB\">1048576</currentMemory>",
        "<vcpu placement=\"static\" current=\"2\">4</vcpu>",
        "<cell id=\"0\" cpus=\"0-3\" memory=\"1048576\" unit=\"KiB\"/>",
    ] {
        assert!(xml.contains(line), "{line} not in\n{xml}");
    }
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}

#[test]
fn the_numa_node_holds_the_vcpus_a_memory_only_scalable_instance_has() {
    let d = design_ok(&scalable(2, 2, 1024, 2048), &kvm_facts());
    assert_eq!(d.vcpu.current, None);
    assert_eq!(d.cpu.as_ref().unwrap().numa[0].cpus, "0-1");
    let d = design_ok(&scalable(1, 1, 1024, 2048), &kvm_facts());
    assert_eq!(d.cpu.as_ref().unwrap().numa[0].cpus, "0");
    // The KVM CPU carries the node as well.
    assert_eq!(d.cpu.as_ref().unwrap().mode, CpuMode::HostPassthrough);
}

#[test]
fn a_maximum_below_the_start_value_is_refused() {
    let err = design_err(&scalable(4, 2, 1024, 1024), &lab_facts());
    assert_invalid_field(err.clone(), "max_vcpus");
    assert!(err.to_string().contains("below the 4 vCPUs"), "{err}");
    let err = design_err(&scalable(2, 2, 1024, 512), &lab_facts());
    assert_invalid_field(err.clone(), "max_memory_mib");
    assert!(err.to_string().contains("below the 1024 MiB"), "{err}");
}

#[test]
fn oversized_maximum_memory_is_refused() {
    let spec = scalable(2, 2, 1024, u64::MAX / 512);
    assert_invalid_field(design_err(&spec, &lab_facts()), "max_memory_mib");
}

#[test]
fn maximums_default_to_none_when_deserialised() {
    let mut json = serde_json::to_value(lab_spec()).unwrap();
    let fields = json.as_object_mut().unwrap();
    fields.remove("max_vcpus");
    fields.remove("max_memory_mib");
    let spec: InstanceSpec = serde_json::from_value(json).unwrap();
    assert_eq!(spec, lab_spec());
}

// ---- firmware, features, TPM ------------------------------------------

#[test]
fn bios_has_no_loader_and_no_smm() {
    let d = design_ok(&lab_spec(), &kvm_facts());
    assert_eq!(d.os.loader, None);
    assert_eq!(d.os.nvram, None);
    assert_eq!(
        d.features,
        Features {
            acpi: true,
            apic: true,
            smm: false
        }
    );
}

#[test]
fn uefi_uses_the_plain_firmware() {
    let d = design_ok(&uefi(false), &kvm_facts());
    assert_eq!(
        d.os.loader,
        Some(Loader {
            path: "/usr/share/OVMF/OVMF_CODE.fd".into(),
            readonly: Some(true),
            loader_type: Some(LoaderType::Pflash),
            secure: Some(false),
        })
    );
    assert_eq!(
        d.os.nvram,
        Some(Nvram {
            path: "/var/lib/orrery/nvram/i-2-15-VM_VARS.fd".into(),
            template: Some("/usr/share/OVMF/OVMF_VARS.fd".into()),
        })
    );
    assert!(!d.features.smm);
}

#[test]
fn secure_boot_uses_secure_firmware_and_smm() {
    let d = design_ok(&uefi(true), &kvm_facts());
    let loader = d.os.loader.unwrap();
    assert_eq!(loader.path, "/usr/share/OVMF/OVMF_CODE.secboot.fd");
    assert_eq!(loader.secure, Some(true));
    assert_eq!(
        d.os.nvram.unwrap().template.as_deref(),
        Some("/usr/share/OVMF/OVMF_VARS.secboot.fd")
    );
    assert!(d.features.smm && d.features.acpi && d.features.apic);
}

#[test]
fn missing_firmware_is_refused() {
    let mut facts = kvm_facts();
    facts.firmware.retain(|f| !f.secure_boot);
    let err = design_err(&uefi(true), &facts);
    assert_eq!(err, DesignError::NoFirmware { secure: true });
    assert!(err.to_string().starts_with("boot_mode:"));

    let mut facts = kvm_facts();
    facts.firmware.retain(|f| f.secure_boot);
    assert_eq!(
        design_err(&uefi(false), &facts),
        DesignError::NoFirmware { secure: false }
    );
}

#[test]
fn nvram_dir_must_be_absolute() {
    let config = DesignConfig {
        nvram_dir: "nvram".into(),
        ..lab_config()
    };
    let err = design(&uefi(false), &kvm_facts(), &config).unwrap_err();
    assert_invalid_field(err, "config nvram_dir");
}

#[test]
fn tpm_is_emulated_tpm2() {
    let mut spec = uefi(true);
    spec.tpm = true;
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(
        d.devices.tpms,
        vec![Tpm {
            model: TpmModel::TpmCrb,
            version: Some(TpmVersion::V2_0)
        }]
    );

    let mut spec = lab_spec();
    spec.tpm = true;
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(d.devices.tpms[0].model, TpmModel::TpmTis);
}

#[test]
fn tpm_version_and_model_follow_the_seeds_rules() {
    let tpm = |spec: &InstanceSpec| {
        let d = design_ok(spec, &kvm_facts());
        (d.devices.tpms[0].model, d.devices.tpms[0].version)
    };
    // Either detail asks for a vTPM; 2.0 by default, also for a version
    // that is not one.
    let s = with_detail(lab_spec(), DETAIL_TPM_MODEL, "tpm-crb");
    assert_eq!(tpm(&s), (TpmModel::TpmCrb, Some(TpmVersion::V2_0)));
    let s = with_detail(lab_spec(), DETAIL_TPM_VERSION, "3.7");
    assert_eq!(tpm(&s), (TpmModel::TpmTis, Some(TpmVersion::V2_0)));
    let s = with_detail(
        with_detail(lab_spec(), DETAIL_TPM_VERSION, "1.2"),
        DETAIL_TPM_MODEL,
        "TPM-TIS",
    );
    assert_eq!(tpm(&s), (TpmModel::TpmTis, Some(TpmVersion::V1_2)));
    // 1.2 has no CRB interface.
    let s = with_detail(
        with_detail(uefi(false), DETAIL_TPM_VERSION, "1.2"),
        DETAIL_TPM_MODEL,
        "tpm-crb",
    );
    assert_invalid_detail(design_err(&s, &kvm_facts()), DETAIL_TPM_VERSION);
    let s = with_detail(lab_spec(), DETAIL_TPM_MODEL, "tpm-spapr");
    assert_invalid_detail(design_err(&s, &kvm_facts()), DETAIL_TPM_MODEL);
}

#[test]
fn tpm_without_host_support_is_refused() {
    let mut spec = lab_spec();
    spec.tpm = true;
    let err = design_err(&spec, &lab_facts());
    assert_eq!(err, DesignError::TpmUnsupported);
    assert!(err.to_string().starts_with("tpm:"));
}

#[test]
fn no_tpm_unless_asked() {
    assert!(design_ok(&lab_spec(), &kvm_facts()).devices.tpms.is_empty());
}

// ---- disks -------------------------------------------------------------

fn targets(d: &Domain) -> Vec<(String, DiskBus)> {
    d.devices
        .disks
        .iter()
        .map(|x| (x.target_dev.clone(), x.target_bus))
        .collect()
}

fn data_volume(n: u32) -> VolumeSpec {
    VolumeSpec {
        id: format!("00000000-0000-4000-8000-00000000000{n}"),
        kind: VolumeKind::Data,
        path: format!("/var/lib/orrery/pool/data-{n}.raw"),
        format: VolumeFormat::Raw,
        device_id: n,
        read_bytes_sec: None,
        write_bytes_sec: None,
        read_iops_sec: None,
        write_iops_sec: None,
    }
}

#[test]
fn root_disk_comes_first_then_data_by_device_id() {
    let mut spec = lab_spec();
    spec.volumes.push(data_volume(5));
    spec.volumes.push(data_volume(3));
    let d = design_ok(&spec, &lab_facts());
    let sources: Vec<_> = d
        .devices
        .disks
        .iter()
        .map(|x| x.source.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        sources,
        vec![
            "/var/lib/orrery/pool/root.qcow2",
            "/var/lib/orrery/pool/data-1.qcow2",
            "/var/lib/orrery/pool/data-3.raw",
            "/var/lib/orrery/pool/data-5.raw",
            "/var/lib/orrery/iso/debian-12.iso",
        ]
    );
    assert_eq!(
        targets(&d),
        vec![
            ("vda".into(), DiskBus::Virtio),
            ("vdb".into(), DiskBus::Virtio),
            ("vdc".into(), DiskBus::Virtio),
            ("vdd".into(), DiskBus::Virtio),
            ("hdc".into(), DiskBus::Ide),
        ]
    );
}

#[test]
fn many_virtio_disks_continue_past_z() {
    let mut spec = lab_spec();
    spec.volumes.retain(|v| v.kind == VolumeKind::Root);
    for n in 1..=27 {
        let mut v = data_volume(n);
        v.id = format!("vol-{n}");
        v.path = format!("/pool/{n}.raw");
        spec.volumes.push(v);
    }
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.devices.disks[25].target_dev, "vdz");
    assert_eq!(d.devices.disks[26].target_dev, "vdaa");
    assert_eq!(d.devices.disks[27].target_dev, "vdab");
}

#[test]
fn disks_use_qemu_driver_without_host_cache_and_with_discard() {
    let d = design_ok(&lab_spec(), &lab_facts());
    let root = &d.devices.disks[0];
    assert_eq!(root.disk_type, DiskType::File);
    assert_eq!(root.device, DiskDevice::Disk);
    assert_eq!(
        root.driver,
        Some(DiskDriver {
            name: Some("qemu".into()),
            format: Some(DiskFormat::Qcow2),
            cache: Some(DiskCache::None),
            discard: Some(DiskDiscard::Unmap),
        })
    );
    assert_eq!(root.boot_order, Some(1));
    assert!(!root.readonly);
    assert_eq!(d.devices.disks[1].boot_order, None);
}

#[test]
fn raw_block_device_volume_is_a_block_disk() {
    let mut spec = lab_spec();
    spec.volumes[0].path = "/dev/mapper/vg-data1".into();
    spec.volumes[0].format = VolumeFormat::Raw;
    let d = design_ok(&spec, &lab_facts());
    let data = &d.devices.disks[1];
    assert_eq!(data.disk_type, DiskType::Block);
    assert_eq!(data.driver.as_ref().unwrap().format, Some(DiskFormat::Raw));
    assert!(d
        .to_xml()
        .contains("<source dev=\"/dev/mapper/vg-data1\"/>"));
}

#[test]
fn disk_serial_is_the_volume_id_alphanumerics_up_to_20() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(
        d.devices.disks[0].serial.as_deref(),
        Some("1b2c3d4e5f6a4b8c9d0e")
    );
    let mut spec = lab_spec();
    spec.volumes[0].id = "--".into();
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.devices.disks[1].serial, None);
}

#[test]
fn io_limits_become_iotune_and_zero_means_unlimited() {
    let mut spec = lab_spec();
    spec.volumes[1].read_bytes_sec = Some(10_485_760);
    spec.volumes[1].write_bytes_sec = Some(0);
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        d.devices.disks[0].iotune,
        Some(IoTune {
            read_bytes_sec: Some(10_485_760),
            ..IoTune::default()
        })
    );
    assert_eq!(
        d.devices.disks[1].iotune,
        Some(IoTune {
            read_iops_sec: Some(500),
            write_iops_sec: Some(250),
            ..IoTune::default()
        })
    );
    spec.volumes[1].read_bytes_sec = Some(0);
    assert_eq!(design_ok(&spec, &lab_facts()).devices.disks[0].iotune, None);
}

#[test]
fn root_disk_controller_sata_uses_sd_names() {
    let spec = with_detail(lab_spec(), DETAIL_ROOT_DISK_CONTROLLER, "SATA");
    let d = design_ok(&spec, &lab_facts());
    // Data disks follow the root disk unless told otherwise.
    assert_eq!(
        targets(&d),
        vec![
            ("sda".into(), DiskBus::Sata),
            ("sdb".into(), DiskBus::Sata),
            ("hdc".into(), DiskBus::Ide),
        ]
    );
}

#[test]
fn sata_disks_skip_the_cdrom_unit_on_q35() {
    let mut spec = with_detail(uefi(false), DETAIL_ROOT_DISK_CONTROLLER, "sata");
    spec.volumes.push(data_volume(2));
    spec.volumes.push(data_volume(3));
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(
        targets(&d),
        vec![
            ("sda".into(), DiskBus::Sata),
            ("sdb".into(), DiskBus::Sata),
            ("sdd".into(), DiskBus::Sata),
            ("sde".into(), DiskBus::Sata),
            ("hdc".into(), DiskBus::Sata),
        ]
    );
}

#[test]
fn ide_disks_skip_hdc_and_are_limited_to_three() {
    let mut spec = with_detail(lab_spec(), DETAIL_ROOT_DISK_CONTROLLER, "ide");
    spec.volumes.push(data_volume(2));
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        targets(&d),
        vec![
            ("hda".into(), DiskBus::Ide),
            ("hdb".into(), DiskBus::Ide),
            ("hdd".into(), DiskBus::Ide),
            ("hdc".into(), DiskBus::Ide),
        ]
    );
    spec.volumes.push(data_volume(3));
    assert_invalid_field(design_err(&spec, &lab_facts()), "volumes");
}

#[test]
fn config_drive_is_a_second_cdrom_that_disks_make_room_for() {
    let mut spec = with_detail(uefi(false), DETAIL_ROOT_DISK_CONTROLLER, "sata");
    spec.volumes.push(data_volume(2));
    spec.volumes.push(data_volume(3));
    spec.config_drive = Some("/var/lib/orrery/primary/configdrive/i-2-7-VM.iso".into());
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(
        targets(&d),
        vec![
            ("sda".into(), DiskBus::Sata),
            ("sdb".into(), DiskBus::Sata),
            ("sde".into(), DiskBus::Sata),
            ("sdf".into(), DiskBus::Sata),
            ("hdc".into(), DiskBus::Sata),
            ("hdd".into(), DiskBus::Sata),
        ]
    );
    let drive = d.devices.disks.last().unwrap();
    assert_eq!(drive.device, DiskDevice::Cdrom);
    assert!(drive.readonly);
    assert_eq!(drive.boot_order, None);
    assert_eq!(drive.source.as_deref(), spec.config_drive.as_deref());

    // IDE: two disks besides both CD-ROMs.
    let mut ide = with_detail(lab_spec(), DETAIL_ROOT_DISK_CONTROLLER, "ide");
    ide.config_drive = Some("/cfg.iso".into());
    assert_eq!(
        targets(&design_ok(&ide, &lab_facts())),
        vec![
            ("hda".into(), DiskBus::Ide),
            ("hdb".into(), DiskBus::Ide),
            ("hdc".into(), DiskBus::Ide),
            ("hdd".into(), DiskBus::Ide),
        ]
    );
    ide.volumes.push(data_volume(2));
    assert_invalid_field(design_err(&ide, &lab_facts()), "volumes");
    ide.config_drive = Some("relative.iso".into());
    ide.volumes.pop();
    assert_invalid_field(design_err(&ide, &lab_facts()), "config_drive");
}

#[test]
fn data_disk_controller_is_separate() {
    let spec = with_detail(
        with_detail(lab_spec(), DETAIL_ROOT_DISK_CONTROLLER, "ide"),
        DETAIL_DATA_DISK_CONTROLLER,
        "virtio",
    );
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        targets(&d),
        vec![
            ("hda".into(), DiskBus::Ide),
            ("vda".into(), DiskBus::Virtio),
            ("hdc".into(), DiskBus::Ide),
        ]
    );
}

#[test]
fn ide_is_refused_on_q35() {
    let spec = with_detail(uefi(false), DETAIL_ROOT_DISK_CONTROLLER, "ide");
    assert_invalid_detail(design_err(&spec, &kvm_facts()), DETAIL_ROOT_DISK_CONTROLLER);
}

#[test]
fn unsupported_disk_controllers_are_refused() {
    for bad in ["scsi", "nvme", "floppy"] {
        let spec = with_detail(lab_spec(), DETAIL_ROOT_DISK_CONTROLLER, bad);
        assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_ROOT_DISK_CONTROLLER);
        let spec = with_detail(lab_spec(), DETAIL_DATA_DISK_CONTROLLER, bad);
        assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_DATA_DISK_CONTROLLER);
    }
}

#[test]
fn exactly_one_root_volume_is_required() {
    let mut spec = lab_spec();
    spec.volumes.retain(|v| v.kind == VolumeKind::Data);
    assert_invalid_field(design_err(&spec, &lab_facts()), "volumes");

    let mut spec = lab_spec();
    spec.volumes[0].kind = VolumeKind::Root;
    assert_invalid_field(design_err(&spec, &lab_facts()), "volumes");
}

#[test]
fn duplicate_volumes_are_refused() {
    let mut spec = lab_spec();
    spec.volumes[0].device_id = 0;
    assert!(matches!(
        design_err(&spec, &lab_facts()),
        DesignError::Duplicate { field, .. } if field == "volumes[1].device_id"
    ));

    let mut spec = lab_spec();
    spec.volumes[1].id = spec.volumes[0].id.clone();
    assert!(matches!(
        design_err(&spec, &lab_facts()),
        DesignError::Duplicate { field, .. } if field == "volumes[1].id"
    ));

    let mut spec = lab_spec();
    spec.volumes[1].path = spec.volumes[0].path.clone();
    let err = design_err(&spec, &lab_facts());
    assert!(matches!(
        &err,
        DesignError::Duplicate { field, .. } if field == "volumes[1].path"
    ));
    assert!(err.to_string().starts_with("volumes[1].path:"));
}

#[test]
fn volume_fields_are_checked() {
    let mut spec = lab_spec();
    spec.volumes[1].path = "pool/root.qcow2".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "volumes[1].path");

    let mut spec = lab_spec();
    spec.volumes[0].id = " ".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "volumes[0].id");

    let mut spec = lab_spec();
    spec.cdrom = Some("debian.iso".into());
    assert_invalid_field(design_err(&spec, &lab_facts()), "cdrom");
}

#[test]
fn cdrom_drive_is_always_present_and_readonly() {
    let mut spec = lab_spec();
    spec.cdrom = None;
    let d = design_ok(&spec, &lab_facts());
    let cdrom = d.devices.disks.last().unwrap();
    assert_eq!(cdrom.device, DiskDevice::Cdrom);
    assert_eq!(cdrom.source, None);
    assert_eq!(cdrom.target_dev, "hdc");
    assert_eq!(cdrom.target_bus, DiskBus::Ide);
    assert!(cdrom.readonly);
    assert_eq!(cdrom.boot_order, None);
}

#[test]
fn inserted_iso_boots_after_the_root_disk() {
    let d = design_ok(&lab_spec(), &lab_facts());
    let cdrom = d.devices.disks.last().unwrap();
    assert_eq!(
        cdrom.source.as_deref(),
        Some("/var/lib/orrery/iso/debian-12.iso")
    );
    assert_eq!(cdrom.boot_order, Some(2));
    assert!(d.os.boot.is_empty());
}

#[test]
fn cdrom_is_on_sata_for_uefi() {
    let d = design_ok(&uefi(false), &kvm_facts());
    let cdrom = d.devices.disks.last().unwrap();
    assert_eq!(
        (cdrom.target_dev.as_str(), cdrom.target_bus),
        ("hdc", DiskBus::Sata)
    );
}

// ---- NICs --------------------------------------------------------------

fn nic(mac: &str, is_default: bool) -> NicSpec {
    NicSpec {
        mac: mac.into(),
        network: "guest".into(),
        is_default,
        ip: None,
    }
}

#[test]
fn nics_are_virtio_on_their_network_in_spec_order() {
    let mut spec = lab_spec();
    spec.nics.push(nic("02:00:4c:00:00:02", false));
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        d.devices.interfaces,
        vec![
            Interface {
                source: InterfaceSource::Network("default".into()),
                mac: Some("02:00:4c:11:22:33".into()),
                model: Some(NicModel::Virtio),
                target_dev: None,
                bandwidth: None,
            },
            Interface {
                source: InterfaceSource::Network("guest".into()),
                mac: Some("02:00:4c:00:00:02".into()),
                model: Some(NicModel::Virtio),
                target_dev: None,
                bandwidth: None,
            },
        ]
    );
}

#[test]
fn nic_adapter_detail_picks_the_model() {
    for (value, model) in [
        ("e1000", NicModel::E1000),
        ("E1000E", NicModel::E1000e),
        ("rtl8139", NicModel::Rtl8139),
        ("virtio", NicModel::Virtio),
    ] {
        let spec = with_detail(lab_spec(), DETAIL_NIC_ADAPTER, value);
        let d = design_ok(&spec, &lab_facts());
        assert_eq!(d.devices.interfaces[0].model, Some(model), "{value}");
    }
    let spec = with_detail(lab_spec(), DETAIL_NIC_ADAPTER, "vmxnet3");
    assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_NIC_ADAPTER);
}

#[test]
fn duplicate_macs_are_refused_whatever_their_case() {
    let mut spec = lab_spec();
    spec.nics.push(nic("02:00:4c:11:22:33", false));
    let err = design_err(&spec, &lab_facts());
    assert_eq!(
        err,
        DesignError::DuplicateMac {
            field: "nics[1].mac".into(),
            mac: "02:00:4c:11:22:33".into()
        }
    );
    assert!(err.to_string().starts_with("nics[1].mac:"));
}

#[test]
fn malformed_and_multicast_macs_are_refused() {
    for bad in [
        "02:00:4c:11:22",
        "02-00-4c-11-22-33",
        "02:00:4c:11:22:zz",
        "2:0:4c:11:22:33",
    ] {
        let mut spec = lab_spec();
        spec.nics[0].mac = bad.into();
        assert_invalid_field(design_err(&spec, &lab_facts()), "nics[0].mac");
    }
    let mut spec = lab_spec();
    spec.nics[0].mac = "01:00:5e:00:00:01".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "nics[0].mac");
}

#[test]
fn exactly_one_default_nic() {
    let mut spec = lab_spec();
    spec.nics[0].is_default = false;
    assert_invalid_field(design_err(&spec, &lab_facts()), "nics");

    let mut spec = lab_spec();
    spec.nics.push(nic("02:00:4c:00:00:02", true));
    assert_invalid_field(design_err(&spec, &lab_facts()), "nics");

    let mut spec = lab_spec();
    spec.nics.clear();
    assert!(design_ok(&spec, &lab_facts()).devices.interfaces.is_empty());
}

#[test]
fn nic_network_must_be_named() {
    let mut spec = lab_spec();
    spec.nics[0].network = "".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "nics[0].network");
}

// ---- consoles, VNC, video, misc devices --------------------------------

#[test]
fn serial_console_is_appended_to_a_log_file() {
    let config = DesignConfig {
        console_log_dir: "/var/log/orrery/console/".into(),
        ..lab_config()
    };
    let d = design(&lab_spec(), &lab_facts(), &config).unwrap();
    let file = CharSource::File {
        path: "/var/log/orrery/console/i-2-15-VM.log".into(),
        append: Some(true),
    };
    assert_eq!(
        d.devices.serials,
        vec![CharDevice {
            source: file.clone(),
            target_type: Some("isa-serial".into()),
            target_port: Some(0),
        }]
    );
    assert_eq!(
        d.devices.consoles,
        vec![CharDevice {
            source: file,
            target_type: Some("serial".into()),
            target_port: Some(0),
        }]
    );
}

#[test]
fn console_log_dir_must_be_absolute() {
    let config = DesignConfig {
        console_log_dir: "logs".into(),
        ..lab_config()
    };
    let err = design(&lab_spec(), &lab_facts(), &config).unwrap_err();
    assert_invalid_field(err, "config console_log_dir");
}

#[test]
fn vnc_autoports_on_the_configured_address_with_password() {
    let mut spec = lab_spec();
    spec.vnc_password = "short".into();
    let d = design(&spec, &lab_facts(), &DesignConfig::default()).unwrap();
    assert_eq!(
        d.devices.graphics,
        vec![Graphics {
            port: Some(-1),
            autoport: true,
            listen: Some("127.0.0.1".into()),
            passwd: Some("short".into()),
        }]
    );
}

#[test]
fn vnc_password_is_truncated_to_what_qemu_checks() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(d.devices.graphics[0].passwd.as_deref(), Some("Vnc-Pass"));
    assert_eq!(effective_vnc_password("123456789"), "12345678");
    assert_eq!(effective_vnc_password("12345678"), "12345678");
    assert_eq!(effective_vnc_password("1234"), "1234");
    assert_eq!(VNC_PASSWORD_MAX_LEN, 8);
}

#[test]
fn vnc_password_must_be_printable_ascii_and_present() {
    for bad in ["", "pässword", "tab\there"] {
        let mut spec = lab_spec();
        spec.vnc_password = bad.into();
        assert_invalid_field(design_err(&spec, &lab_facts()), "vnc_password");
    }
}

#[test]
fn vnc_listen_must_be_an_ip_address() {
    let config = DesignConfig {
        vnc_listen: "console.example".into(),
        ..lab_config()
    };
    let err = design(&lab_spec(), &lab_facts(), &config).unwrap_err();
    assert_invalid_field(err, "config vnc_listen");
    let config = DesignConfig {
        vnc_listen: "::".into(),
        ..lab_config()
    };
    assert!(design(&lab_spec(), &lab_facts(), &config).is_ok());
}

#[test]
fn video_defaults_to_vga_and_follows_the_detail() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(
        d.devices.videos,
        vec![Video {
            model: VideoModel::Vga,
            vram_kib: None,
            heads: None
        }]
    );
    for (value, model) in [
        ("virtio", VideoModel::Virtio),
        ("cirrus", VideoModel::Cirrus),
        ("QXL", VideoModel::Qxl),
        ("bochs", VideoModel::Bochs),
    ] {
        let spec = with_detail(lab_spec(), DETAIL_VIDEO_HARDWARE, value);
        assert_eq!(
            design_ok(&spec, &lab_facts()).devices.videos[0].model,
            model
        );
    }
    let spec = with_detail(lab_spec(), DETAIL_VIDEO_HARDWARE, "vmvga");
    assert_invalid_detail(design_err(&spec, &lab_facts()), DETAIL_VIDEO_HARDWARE);
}

#[test]
fn empty_detail_values_mean_default() {
    let spec = with_detail(
        with_detail(lab_spec(), DETAIL_VIDEO_HARDWARE, " "),
        DETAIL_NIC_ADAPTER,
        "",
    );
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.devices.videos[0].model, VideoModel::Vga);
    assert_eq!(d.devices.interfaces[0].model, Some(NicModel::Virtio));
}

#[test]
fn standard_devices_are_present() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(
        d.devices.emulator.as_deref(),
        Some("/usr/bin/qemu-system-x86_64")
    );
    assert_eq!(
        d.devices.inputs,
        vec![Input {
            input_type: InputType::Tablet,
            bus: Some(InputBus::Usb)
        }]
    );
    assert_eq!(
        d.devices.channels,
        vec![Channel {
            source_mode: Some(ChannelSourceMode::Bind),
            source_path: None,
            target_name: "org.qemu.guest_agent.0".into(),
        }]
    );
    assert_eq!(
        d.devices.memballoon,
        Some(MemBalloon {
            model: MemBalloonModel::Virtio,
            stats_period: Some(10)
        })
    );
    assert_eq!(
        d.devices.rngs,
        vec![Rng {
            model: RngModel::Virtio,
            source: Some("/dev/urandom".into())
        }]
    );
    assert!(d.devices.hostdevs.is_empty());
    assert!(d.devices.extra.is_empty());
}

#[test]
fn emulator_is_left_to_libvirt_when_unknown() {
    let mut facts = lab_facts();
    facts.emulator = None;
    assert_eq!(design_ok(&lab_spec(), &facts).devices.emulator, None);
}

// ---- identity, SMBIOS, metadata, lifecycle ------------------------------

#[test]
fn identity_fields_are_carried() {
    let mut spec = lab_spec();
    spec.uuid = INSTANCE_UUID.to_uppercase();
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(d.name, "i-2-15-VM");
    assert_eq!(d.uuid.as_deref(), Some(INSTANCE_UUID));
    assert_eq!(d.title.as_deref(), Some("web01 (staging)"));
    assert_eq!(d.description.as_deref(), Some("Other Linux (64-bit)"));
    assert_eq!(
        d.metadata,
        Some(OrreryMetadata {
            instance_uuid: INSTANCE_UUID.into(),
            instance_name: "web01".into(),
        })
    );
}

#[test]
fn smbios_identifies_the_instance() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(
        d.sysinfo,
        Some(SysInfo {
            manufacturer: Some("Orrery".into()),
            product: Some("CloudStack KVM Hypervisor".into()),
            version: Some(SMBIOS_VERSION.into()),
            serial: Some(INSTANCE_UUID.into()),
            uuid: Some(INSTANCE_UUID.into()),
            family: None,
        })
    );
    assert_eq!(d.os.smbios_mode, Some(SmbiosMode::Sysinfo));
}

#[test]
fn smbios_strings_come_from_the_spec_and_empty_ones_are_left_out() {
    let mut spec = lab_spec();
    spec.smbios_manufacturer = "ACME Cloud".into();
    spec.smbios_product = String::new();
    let sysinfo = design_ok(&spec, &lab_facts()).sysinfo.unwrap();
    assert_eq!(sysinfo.manufacturer.as_deref(), Some("ACME Cloud"));
    assert_eq!(sysinfo.product, None);
}

#[test]
fn lifecycle_actions() {
    let d = design_ok(&lab_spec(), &lab_facts());
    assert_eq!(d.on_poweroff, Some(LifecycleAction::Destroy));
    assert_eq!(d.on_reboot, Some(LifecycleAction::Restart));
    assert_eq!(d.on_crash, Some(LifecycleAction::Destroy));
}

#[test]
fn clock_is_utc_except_for_windows() {
    assert_eq!(
        design_ok(&lab_spec(), &lab_facts()).clock,
        Some(ClockOffset::Utc)
    );
    let mut spec = lab_spec();
    spec.os_type = "Windows Server 2022 (64-bit)".into();
    assert_eq!(
        design_ok(&spec, &lab_facts()).clock,
        Some(ClockOffset::Localtime)
    );
}

#[test]
fn uuid_must_be_well_formed() {
    for bad in ["", "not-a-uuid", "6f1c2b9e0d4a4c3e9a512b7c8d9e0f12"] {
        let mut spec = lab_spec();
        spec.uuid = bad.into();
        assert_invalid_field(design_err(&spec, &lab_facts()), "uuid");
    }
}

#[test]
fn internal_name_must_be_file_name_safe() {
    for bad in [
        "",
        "../etc/passwd",
        "a/b",
        ".hidden",
        "-flag",
        "sp ace",
        "ünï",
        &"x".repeat(65),
    ] {
        let mut spec = lab_spec();
        spec.internal_name = bad.into();
        assert_invalid_field(design_err(&spec, &lab_facts()), "internal_name");
    }
    let mut spec = lab_spec();
    spec.internal_name = "r-1_2.3-VM".into();
    assert!(design(&spec, &lab_facts(), &lab_config()).is_ok());
}

#[test]
fn display_name_must_be_one_line() {
    let mut spec = lab_spec();
    spec.display_name = "two\nlines".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "display_name");
}

#[test]
fn text_that_xml_cannot_carry_is_refused() {
    let mut spec = lab_spec();
    spec.host_name = "bell\u{7}".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "host_name");
    let mut spec = lab_spec();
    spec.os_type = "nul\u{0}".into();
    assert_invalid_field(design_err(&spec, &lab_facts()), "os_type");
}

#[test]
fn markup_in_names_is_escaped_not_interpreted() {
    let mut spec = lab_spec();
    spec.display_name = "</title><devices><hostdev/></devices>".into();
    spec.host_name = "a & b".into();
    let d = design_ok(&spec, &lab_facts());
    let parsed = Domain::from_xml(&d.to_xml()).unwrap();
    assert_eq!(parsed, d);
    assert!(parsed.devices.hostdevs.is_empty());
}

// ---- GPU ---------------------------------------------------------------

#[test]
fn pci_gpus_are_managed_hostdevs() {
    let mut spec = lab_spec();
    spec.gpu = Some(GpuSpec::Passthrough {
        pci_addresses: vec!["0000:3b:00.0".into(), "af:00.1".into()],
    });
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(
        d.devices.hostdevs,
        vec![
            Hostdev::Pci {
                address: PciAddress {
                    domain: 0,
                    bus: 0x3b,
                    slot: 0,
                    function: 0
                },
                managed: true
            },
            Hostdev::Pci {
                address: PciAddress {
                    domain: 0,
                    bus: 0xaf,
                    slot: 0,
                    function: 1
                },
                managed: true
            },
        ]
    );
}

#[test]
fn pci_gpu_addresses_are_checked() {
    for (addresses, field) in [
        (
            vec!["3b:00.0".to_string(), "0000:3b:00.0".to_string()],
            "gpu.pci_addresses[1]",
        ),
        (vec!["3b:00".to_string()], "gpu.pci_addresses[0]"),
    ] {
        let mut spec = lab_spec();
        spec.gpu = Some(GpuSpec::Passthrough {
            pci_addresses: addresses,
        });
        let err = design_err(&spec, &kvm_facts());
        match err {
            DesignError::Duplicate { field: f, .. }
            | DesignError::InvalidField { field: f, .. } => {
                assert_eq!(f, field)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut spec = lab_spec();
    spec.gpu = Some(GpuSpec::Passthrough {
        pci_addresses: vec![],
    });
    assert_invalid_field(design_err(&spec, &kvm_facts()), "gpu.pci_addresses");
}

#[test]
fn mdev_gpu_is_referenced_by_uuid() {
    let mut spec = lab_spec();
    spec.gpu = Some(GpuSpec::Mdev {
        uuid: "C2B4E1A0-5D6F-4A7B-8C9D-0E1F2A3B4C5D".into(),
        mdev_type: "nvidia-63".into(),
    });
    let d = design_ok(&spec, &kvm_facts());
    assert_eq!(
        d.devices.hostdevs,
        vec![Hostdev::Mdev {
            uuid: "c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
            model: MdevModel::VfioPci
        }]
    );
    assert!(d
        .to_xml()
        .contains("<hostdev mode=\"subsystem\" type=\"mdev\" model=\"vfio-pci\">"));
}

#[test]
fn mdev_gpu_fields_are_checked() {
    let mut spec = lab_spec();
    spec.gpu = Some(GpuSpec::Mdev {
        uuid: "nope".into(),
        mdev_type: "nvidia-63".into(),
    });
    assert_invalid_field(design_err(&spec, &kvm_facts()), "gpu.uuid");
    spec.gpu = Some(GpuSpec::Mdev {
        uuid: "c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
        mdev_type: " ".into(),
    });
    assert_invalid_field(design_err(&spec, &kvm_facts()), "gpu.mdev_type");
}

// ---- extra configuration -----------------------------------------------

#[test]
fn extraconfig_from_a_non_admin_is_refused() {
    let mut spec = lab_spec();
    spec.extraconfig = vec!["<watchdog model='i6300esb'/>".into()];
    spec.caller_is_admin = false;
    let err = design_err(&spec, &lab_facts());
    assert_eq!(err, DesignError::ExtraConfigNotAllowed);
    assert!(err.to_string().starts_with("extraconfig:"));
}

#[test]
fn extraconfig_from_an_admin_is_appended_to_devices() {
    let mut spec = lab_spec();
    spec.extraconfig = vec![
        "<watchdog model='i6300esb' action='reset'/>".into(),
        "<panic model='isa'/>".into(),
    ];
    spec.caller_is_admin = true;
    let d = design_ok(&spec, &lab_facts());
    assert_eq!(
        d.devices
            .extra
            .iter()
            .map(XmlFragment::as_str)
            .collect::<Vec<_>>(),
        vec![
            "<watchdog model='i6300esb' action='reset'/>",
            "<panic model='isa'/>"
        ]
    );
    let xml = d.to_xml();
    assert!(xml.contains(
        "    <watchdog model=\"i6300esb\" action=\"reset\"/>\n    <panic model=\"isa\"/>\n  </devices>"
    ));
}

#[test]
fn extraconfig_that_is_not_a_device_goes_to_the_domain() {
    let mut spec = lab_spec();
    spec.extraconfig =
        vec!["<memoryBacking><nosharepages/></memoryBacking><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>".into()];
    spec.caller_is_admin = true;
    let xml = design_ok(&spec, &lab_facts()).to_xml();
    let devices_end = xml.find("</devices>").unwrap();
    let backing = xml.find("<memoryBacking>").unwrap();
    assert!(backing > devices_end, "{xml}");
    assert!(
        xml[..devices_end].contains("<rng model=\"virtio\">"),
        "{xml}"
    );
    assert!(!xml[devices_end..].contains("<rng"), "{xml}");
}

#[test]
fn malformed_extraconfig_names_its_index() {
    let mut spec = lab_spec();
    spec.extraconfig = vec!["<ok/>".into(), "<broken>".into()];
    spec.caller_is_admin = true;
    let err = design_err(&spec, &lab_facts());
    assert!(matches!(
        &err,
        DesignError::MalformedExtraConfig {
            index: 1,
            source: DomXmlError::InvalidFragment(_)
        }
    ));
    assert!(err.to_string().starts_with("extraconfig[1]:"), "{err}");
}

// ---- serde -------------------------------------------------------------

#[test]
fn spec_round_trips_through_json() {
    let mut spec = uefi(true);
    spec.gpu = Some(GpuSpec::Mdev {
        uuid: "c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
        mdev_type: "nvidia-63".into(),
    });
    spec.details.insert("nicAdapter".into(), "e1000".into());
    let json = serde_json::to_string(&spec).unwrap();
    let back: InstanceSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);

    let value = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        value["boot_mode"],
        serde_json::json!({"mode": "uefi", "secure": true})
    );
    assert_eq!(value["gpu"]["kind"], "mdev");
    assert_eq!(value["volumes"][0]["kind"], "data");
    assert_eq!(value["volumes"][0]["format"], "qcow2");
}

#[test]
fn spec_defaults_apply_to_missing_fields() {
    let json = serde_json::json!({
        "uuid": INSTANCE_UUID,
        "internal_name": "i-2-15-VM",
        "display_name": "web01",
        "host_name": "web01",
        "vcpus": 1,
        "cpu_speed_mhz": 500,
        "memory_mib": 512,
        "os_type": "Other Linux (64-bit)",
        "volumes": [{
            "id": "1b2c3d4e-5f6a-4b8c-9d0e-1f2a3b4c5d6e",
            "kind": "root",
            "path": "/pool/root.qcow2",
            "format": "qcow2",
            "device_id": 0
        }],
        "vnc_password": "secret"
    });
    let spec: InstanceSpec = serde_json::from_value(json).unwrap();
    assert_eq!(spec.boot_mode, BootMode::Bios);
    assert!(!spec.tpm && !spec.caller_is_admin);
    assert!(spec.nics.is_empty() && spec.extraconfig.is_empty() && spec.details.is_empty());
    assert_eq!(spec.smbios_manufacturer, DEFAULT_SMBIOS_MANUFACTURER);
    assert_eq!(spec.smbios_product, DEFAULT_SMBIOS_PRODUCT);
    assert!(spec.smbios_product.contains("CloudStack"));
    assert!(design(&spec, &lab_facts(), &DesignConfig::default()).is_ok());
}

#[test]
fn facts_and_config_deserialise_with_defaults() {
    let facts: HostFacts = serde_json::from_value(serde_json::json!({
        "domain_types": ["kvm", "qemu"],
        "arch": "x86_64",
        "machine_types": ["pc", "q35"],
        "firmware": [{"loader": "/usr/share/OVMF/OVMF_CODE.fd", "secure_boot": false}]
    }))
    .unwrap();
    assert_eq!(facts.emulator, None);
    assert!(!facts.tpm_supported);
    assert_eq!(facts.firmware[0].nvram_template, None);

    let config: DesignConfig =
        serde_json::from_value(serde_json::json!({"forced_domain_type": "qemu"})).unwrap();
    assert_eq!(config.vnc_listen, "127.0.0.1");
    assert_eq!(config.forced_domain_type.as_deref(), Some("qemu"));
    assert_eq!(
        config,
        DesignConfig {
            forced_domain_type: Some("qemu".into()),
            ..DesignConfig::default()
        }
    );
}

#[test]
fn design_is_deterministic() {
    let a = design_ok(&lab_spec(), &kvm_facts()).to_xml();
    let b = design_ok(&lab_spec(), &kvm_facts()).to_xml();
    assert_eq!(a, b);
}
