//! Helpers shared by the integration tests. Each test binary uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use orrery_agent::designer::{
    BootMode, DesignConfig, Firmware, HostFacts, InstanceSpec, NicSpec, VolumeFormat, VolumeKind,
    VolumeSpec,
};
use orrery_agent::domxml::*;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

pub fn read_golden(name: &str) -> String {
    let path = golden_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Compares `actual` with the file `tests/golden/<name>`. With
/// `UPDATE_GOLDEN=1` in the environment the file is rewritten instead, so
/// intended changes are reviewed as a diff of the golden file.
pub fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = read_golden(name);
    if expected != actual {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the rendering, first at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             full rendering:\n{actual}",
            first_diff + 1,
            expected.lines().nth(first_diff),
            actual.lines().nth(first_diff),
        );
    }
}

/// A model exercising every element and attribute the renderer knows.
pub fn full_domain() -> Domain {
    Domain {
        domain_type: DomainType::Kvm,
        name: "i-2-15-VM".into(),
        uuid: Some("6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12".into()),
        title: Some("web <01> & \"friends\"".into()),
        description: Some("Ubuntu 22.04 LTS — it's 'quoted'".into()),
        metadata: Some(OrreryMetadata {
            instance_uuid: "6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12".into(),
            instance_name: "web01".into(),
        }),
        max_memory: Some(MaxMemory {
            slots: 16,
            kib: 8_388_608,
        }),
        memory_kib: 2_097_152,
        current_memory_kib: Some(1_048_576),
        vcpu: Vcpu {
            count: 4,
            placement: Some(VcpuPlacement::Static),
            current: Some(2),
        },
        sysinfo: Some(SysInfo {
            manufacturer: Some("Orrery".into()),
            product: Some("CloudStack KVM Hypervisor".into()),
            version: Some("0.1.0".into()),
            serial: Some("6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12".into()),
            uuid: Some("6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12".into()),
            family: Some("Orrery Cloud".into()),
        }),
        os: Os {
            os_type: "hvm".into(),
            arch: Some("x86_64".into()),
            machine: Some("q35".into()),
            loader: Some(Loader {
                path: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".into(),
                readonly: Some(true),
                loader_type: Some(LoaderType::Pflash),
                secure: Some(true),
            }),
            nvram: Some(Nvram {
                path: "/var/lib/libvirt/qemu/nvram/i-2-15-VM_VARS.fd".into(),
                template: Some("/usr/share/OVMF/OVMF_VARS_4M.ms.fd".into()),
            }),
            smbios_mode: Some(SmbiosMode::Sysinfo),
            boot: vec![BootDevice::Hd, BootDevice::Cdrom],
        },
        features: Features {
            acpi: true,
            apic: true,
            smm: true,
        },
        cpu: Some(Cpu {
            mode: CpuMode::Custom,
            model: Some("qemu64".into()),
            topology: Some(CpuTopology {
                sockets: 2,
                cores: 2,
                threads: 1,
            }),
            numa: vec![
                NumaCell {
                    id: 0,
                    cpus: "0-1".into(),
                    memory_kib: 1_048_576,
                },
                NumaCell {
                    id: 1,
                    cpus: "2,3".into(),
                    memory_kib: 1_048_576,
                },
            ],
        }),
        clock: Some(ClockOffset::Utc),
        on_poweroff: Some(LifecycleAction::Destroy),
        on_reboot: Some(LifecycleAction::Restart),
        on_crash: Some(LifecycleAction::CoredumpDestroy),
        devices: Devices {
            emulator: Some("/usr/bin/qemu-system-x86_64".into()),
            disks: vec![
                Disk {
                    disk_type: DiskType::File,
                    device: DiskDevice::Disk,
                    driver: Some(DiskDriver {
                        name: Some("qemu".into()),
                        format: Some(DiskFormat::Qcow2),
                        cache: Some(DiskCache::None),
                        discard: Some(DiskDiscard::Unmap),
                    }),
                    source: Some("/var/lib/orrery/pool/1b2c3d4e.qcow2".into()),
                    target_dev: "vda".into(),
                    target_bus: DiskBus::Virtio,
                    serial: Some("1b2c3d4e5f6a7b8c9d0e".into()),
                    readonly: false,
                    boot_order: Some(1),
                    iotune: Some(IoTune {
                        total_bytes_sec: Some(1),
                        read_bytes_sec: Some(2),
                        write_bytes_sec: Some(3),
                        total_iops_sec: Some(4),
                        read_iops_sec: Some(5),
                        write_iops_sec: Some(6),
                    }),
                },
                Disk {
                    disk_type: DiskType::Block,
                    device: DiskDevice::Disk,
                    driver: Some(DiskDriver {
                        name: Some("qemu".into()),
                        format: Some(DiskFormat::Raw),
                        cache: Some(DiskCache::Writeback),
                        discard: Some(DiskDiscard::Ignore),
                    }),
                    source: Some("/dev/vg0/data1".into()),
                    target_dev: "sdb".into(),
                    target_bus: DiskBus::Sata,
                    serial: None,
                    readonly: false,
                    boot_order: None,
                    iotune: None,
                },
                Disk {
                    disk_type: DiskType::File,
                    device: DiskDevice::Cdrom,
                    driver: Some(DiskDriver {
                        name: Some("qemu".into()),
                        format: Some(DiskFormat::Raw),
                        cache: None,
                        discard: None,
                    }),
                    source: None,
                    target_dev: "hdc".into(),
                    target_bus: DiskBus::Sata,
                    serial: None,
                    readonly: true,
                    boot_order: Some(2),
                    iotune: None,
                },
            ],
            interfaces: vec![
                Interface {
                    source: InterfaceSource::Network("guest-net".into()),
                    mac: Some("02:00:4c:11:22:33".into()),
                    model: Some(NicModel::Virtio),
                    target_dev: None,
                    bandwidth: None,
                },
                Interface {
                    source: InterfaceSource::Bridge("cloudbr0".into()),
                    mac: Some("02:00:4c:11:22:34".into()),
                    model: Some(NicModel::E1000),
                    target_dev: Some("vnet7".into()),
                    bandwidth: Some(Bandwidth {
                        inbound: Some(BandwidthLimit {
                            average: 1000,
                            peak: Some(5000),
                            burst: Some(1024),
                        }),
                        outbound: Some(BandwidthLimit {
                            average: 128,
                            peak: None,
                            burst: None,
                        }),
                    }),
                },
            ],
            serials: vec![
                CharDevice {
                    source: CharSource::File {
                        path: "/var/log/orrery/console/i-2-15-VM.log".into(),
                        append: Some(true),
                    },
                    target_type: Some("isa-serial".into()),
                    target_port: Some(0),
                },
                CharDevice {
                    source: CharSource::Pty { path: None },
                    target_type: None,
                    target_port: Some(1),
                },
            ],
            consoles: vec![CharDevice {
                source: CharSource::File {
                    path: "/var/log/orrery/console/i-2-15-VM.log".into(),
                    append: Some(true),
                },
                target_type: Some("serial".into()),
                target_port: Some(0),
            }],
            channels: vec![Channel {
                source_mode: Some(ChannelSourceMode::Bind),
                source_path: Some("/run/orrery/i-2-15-VM.agent".into()),
                target_name: "org.qemu.guest_agent.0".into(),
            }],
            inputs: vec![
                Input {
                    input_type: InputType::Tablet,
                    bus: Some(InputBus::Usb),
                },
                Input {
                    input_type: InputType::Keyboard,
                    bus: Some(InputBus::Ps2),
                },
            ],
            tpms: vec![Tpm {
                model: TpmModel::TpmCrb,
                version: Some(TpmVersion::V2_0),
            }],
            graphics: vec![Graphics {
                port: Some(-1),
                autoport: true,
                listen: Some("127.0.0.1".into()),
                passwd: Some("s3cr&t<'".into()),
            }],
            videos: vec![Video {
                model: VideoModel::Virtio,
                vram_kib: Some(16384),
                heads: Some(1),
            }],
            hostdevs: vec![
                Hostdev::Pci {
                    address: PciAddress {
                        domain: 0,
                        bus: 0x3b,
                        slot: 0,
                        function: 0,
                    },
                    managed: true,
                },
                Hostdev::Mdev {
                    uuid: "c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
                    model: MdevModel::VfioPci,
                },
            ],
            memballoon: Some(MemBalloon {
                model: MemBalloonModel::Virtio,
                stats_period: Some(10),
            }),
            rngs: vec![Rng {
                model: RngModel::Virtio,
                source: Some("/dev/urandom".into()),
            }],
            memories: vec![
                MemoryDevice {
                    size_kib: 1_048_576,
                    node: Some(0),
                },
                MemoryDevice {
                    size_kib: 524_288,
                    node: None,
                },
            ],
            extra: vec![
                XmlFragment::new("<watchdog model='i6300esb' action='reset'/>").unwrap(),
                XmlFragment::new(
                    "<shmem name='ivshmem0'>\n  <model type='ivshmem-plain'/>\n  <size unit='M'>4</size>\n</shmem>",
                )
                .unwrap(),
            ],
        },
    }
}

/// The smallest domain the parser accepts.
pub fn minimal_domain() -> Domain {
    Domain {
        domain_type: DomainType::Qemu,
        name: "tiny".into(),
        uuid: None,
        title: None,
        description: None,
        metadata: None,
        max_memory: None,
        memory_kib: 65536,
        current_memory_kib: None,
        vcpu: Vcpu {
            count: 1,
            placement: None,
            current: None,
        },
        sysinfo: None,
        os: Os {
            os_type: "hvm".into(),
            arch: None,
            machine: None,
            loader: None,
            nvram: None,
            smbios_mode: None,
            boot: vec![],
        },
        features: Features::default(),
        cpu: None,
        clock: None,
        on_poweroff: None,
        on_reboot: None,
        on_crash: None,
        devices: Devices::default(),
    }
}

pub const INSTANCE_UUID: &str = "6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12";

/// A typical small instance: root + one data disk, an installer ISO, one NIC.
pub fn lab_spec() -> InstanceSpec {
    InstanceSpec {
        uuid: INSTANCE_UUID.into(),
        internal_name: "i-2-15-VM".into(),
        display_name: "web01 (staging)".into(),
        host_name: "web01".into(),
        vcpus: 2,
        cpu_speed_mhz: 1000,
        memory_mib: 1024,
        max_vcpus: None,
        max_memory_mib: None,
        os_type: "Other Linux (64-bit)".into(),
        boot_mode: BootMode::Bios,
        tpm: false,
        volumes: vec![
            VolumeSpec {
                id: "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d".into(),
                kind: VolumeKind::Data,
                path: "/var/lib/orrery/pool/data-1.qcow2".into(),
                format: VolumeFormat::Qcow2,
                device_id: 1,
                read_bytes_sec: None,
                write_bytes_sec: None,
                read_iops_sec: Some(500),
                write_iops_sec: Some(250),
            },
            VolumeSpec {
                id: "1b2c3d4e-5f6a-4b8c-9d0e-1f2a3b4c5d6e".into(),
                kind: VolumeKind::Root,
                path: "/var/lib/orrery/pool/root.qcow2".into(),
                format: VolumeFormat::Qcow2,
                device_id: 0,
                read_bytes_sec: None,
                write_bytes_sec: None,
                read_iops_sec: None,
                write_iops_sec: None,
            },
        ],
        cdrom: Some("/var/lib/orrery/iso/debian-12.iso".into()),
        config_drive: None,
        nics: vec![NicSpec {
            mac: "02:00:4C:11:22:33".into(),
            network: "default".into(),
            is_default: true,
            ip: Some("10.1.1.15".into()),
        }],
        vnc_password: "Vnc-Passw0rd-Long".into(),
        gpu: None,
        details: BTreeMap::new(),
        extraconfig: vec![],
        caller_is_admin: false,
        smbios_manufacturer: "Orrery".into(),
        smbios_product: "CloudStack KVM Hypervisor".into(),
    }
}

/// A nested-virtualisation lab host: emulation only, no TPM.
pub fn lab_facts() -> HostFacts {
    HostFacts {
        domain_types: vec!["qemu".into()],
        arch: "x86_64".into(),
        machine_types: vec![
            "pc-i440fx-8.2".into(),
            "pc".into(),
            "pc-q35-8.2".into(),
            "q35".into(),
            "isapc".into(),
            "microvm".into(),
        ],
        emulator: Some("/usr/bin/qemu-system-x86_64".into()),
        firmware: vec![],
        tpm_supported: false,
        cpu_model: Some("EPYC-Rome".into()),
    }
}

/// A production KVM host with OVMF builds and swtpm.
pub fn kvm_facts() -> HostFacts {
    HostFacts {
        domain_types: vec!["qemu".into(), "kvm".into()],
        arch: "x86_64".into(),
        machine_types: vec![
            "pc-i440fx-rhel7.6.0".into(),
            "pc-q35-rhel9.2.0".into(),
            "pc-q35-rhel9.4.0".into(),
            "pc-q35-rhel8.6.0".into(),
        ],
        emulator: Some("/usr/libexec/qemu-kvm".into()),
        firmware: vec![
            Firmware {
                loader: "/usr/share/OVMF/OVMF_CODE.fd".into(),
                nvram_template: Some("/usr/share/OVMF/OVMF_VARS.fd".into()),
                secure_boot: false,
            },
            Firmware {
                loader: "/usr/share/OVMF/OVMF_CODE.secboot.fd".into(),
                nvram_template: Some("/usr/share/OVMF/OVMF_VARS.secboot.fd".into()),
                secure_boot: true,
            },
        ],
        tpm_supported: true,
        cpu_model: Some("Icelake-Server".into()),
    }
}

pub fn lab_config() -> DesignConfig {
    DesignConfig {
        console_log_dir: "/var/log/orrery/console".into(),
        vnc_listen: "0.0.0.0".into(),
        forced_domain_type: None,
        nvram_dir: "/var/lib/orrery/nvram/".into(),
    }
}
