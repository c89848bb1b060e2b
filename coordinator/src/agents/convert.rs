//! The one place where protocol messages and the service's types meet.

use crate::service::agent::{
    GuestMetadata, PowerState, TemplateRef, VmSnapshotCmd, VmSpec, VolumeSpec,
};
use crate::service::hosts::{DomainSeen, HostReport};
use orrery_proto::v1 as pb;

pub fn power(p: i32) -> PowerState {
    match pb::PowerState::try_from(p).unwrap_or(pb::PowerState::Unknown) {
        pb::PowerState::On => PowerState::On,
        pb::PowerState::Off => PowerState::Off,
        pb::PowerState::Missing | pb::PowerState::Unknown => PowerState::Missing,
    }
}

fn template(t: &TemplateRef) -> pb::TemplateRef {
    pb::TemplateRef {
        uuid: t.uuid.clone(),
        format: t.format.clone(),
        checksum: t.checksum.clone(),
        size_bytes: t.size.max(0) as u64,
    }
}

pub fn volume(v: &VolumeSpec) -> pb::VolumeSpec {
    pb::VolumeSpec {
        uuid: v.uuid.clone(),
        kind: v.kind.clone(),
        device_id: v.device_id,
        size_bytes: v.size.max(0) as u64,
        format: "qcow2".into(),
        pool: v.pool.clone(),
        from_snapshot: v.from_snapshot.clone(),
    }
}

pub fn volume_op(instance: &str, v: &VolumeSpec) -> pb::VolumeOp {
    pb::VolumeOp {
        instance: instance.into(),
        volume: Some(volume(v)),
    }
}

pub fn vm_snapshot_op(c: &VmSnapshotCmd) -> pb::VmSnapshotOp {
    pb::VmSnapshotOp {
        instance: c.instance.clone(),
        snapshot: c.snapshot.clone(),
        memory: c.memory,
        quiesce: c.quiesce,
        volumes: c.volumes.iter().map(volume).collect(),
        saved: c.saved.clone(),
    }
}

pub fn instance_spec(s: &VmSpec) -> pb::InstanceSpec {
    pb::InstanceSpec {
        uuid: s.uuid.clone(),
        name: s.instance_name.clone(),
        display_name: s.display_name.clone(),
        host_name: s.name.clone(),
        vcpus: s.cpu_number.max(0) as u32,
        cpu_mhz: s.cpu_speed.max(0) as u32,
        memory_mib: s.memory_mb.max(0) as u64,
        os_type: s.os_type.clone(),
        uefi: s.uefi,
        secure_boot: s.secure_boot,
        tpm: s.tpm,
        volumes: s.volumes.iter().map(volume).collect(),
        nics: s
            .nics
            .iter()
            .map(|n| pb::NicSpec {
                mac: n.mac.clone(),
                ip: n.ip.clone(),
                is_default: n.is_default,
                network: Some(pb::GuestNetwork {
                    uuid: n.network.uuid.clone(),
                    name: n.network.name.clone(),
                    gateway: n.network.gateway.clone(),
                    netmask: n.network.netmask.clone(),
                    start_ip: n.network.start_ip.clone(),
                    end_ip: n.network.end_ip.clone(),
                    dns: n.network.dns.clone(),
                }),
            })
            .collect(),
        vnc_password: s.vnc_password.clone(),
        details: s.details.clone().into_iter().collect(),
        extra_config: s.extraconfig.clone(),
        // The service let it through: the owner's account allows it and
        // every element is on the allow list.
        extra_config_allowed: !s.extraconfig.is_empty(),
        smbios_manufacturer: s.smbios_manufacturer.clone(),
        smbios_product: s.smbios_product.clone(),
        template: s.template.as_ref().map(template),
        iso: s.iso.as_ref().map(|i| i.uuid.clone()).unwrap_or_default(),
        max_vcpus: s.max_cpu.clamp(0, u32::MAX as i64) as u32,
        max_memory_mib: s.max_memory_mb.max(0) as u64,
        metadata: Some(metadata(&s.metadata)),
        gpu_count: s.gpu_count.clamp(0, 64) as u32,
        vgpu_type: s.vgpu_type.clone().unwrap_or_default(),
        gpu_display: s.gpu_display,
    }
}

pub fn metadata(m: &GuestMetadata) -> pb::GuestMetadata {
    pb::GuestMetadata {
        entries: m
            .entries
            .iter()
            .map(|(name, value)| pb::MetadataEntry {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        user_data: m.user_data.clone(),
        config_drive: m.config_drive,
        uuid: m.uuid.clone(),
        hostname: m.hostname.clone(),
        availability_zone: m.availability_zone.clone(),
        public_keys: m.public_keys.clone(),
    }
}

pub fn report(h: &pb::Hello) -> HostReport {
    let f = h.facts.clone().unwrap_or_default();
    HostReport {
        hostname: f.hostname.clone(),
        ip_address: f.ip_address.clone(),
        cpus: f.cpus as i64,
        cpu_mhz: f.cpu_mhz as i64,
        memory_bytes: f.memory_bytes as i64,
        agent_version: h.agent_version.clone(),
        libvirt_tls: f.libvirt_tls,
        local_dir: f.local_dir.clone(),
        local_bytes: f.local_bytes.min(i64::MAX as u64) as i64,
        facts: serde_json::json!({
            "hostname": f.hostname,
            "arch": f.arch,
            "cpumodel": f.cpu_model,
            "hypervisor": f.hypervisor,
            "libvirtversion": f.libvirt_version,
            "domaintypes": f.domain_types,
            "machinetypes": f.machine_types,
            "firmware": f.firmware.iter().map(|x| serde_json::json!({"path": x.path, "secureboot": x.secure_boot})).collect::<Vec<_>>(),
            "tpm": f.tpm,
            "emulator": f.emulator,
            "storagebytes": f.storage_bytes,
            "storagefreebytes": f.storage_free_bytes,
            "kvmusable": f.kvm_usable,
            "kvmprobe": f.kvm_probe,
            "libvirttls": f.libvirt_tls,
            "localdir": f.local_dir,
            "localbytes": f.local_bytes,
            "localfreebytes": f.local_free_bytes,
            "gpus": f.gpus.iter().map(|g| serde_json::json!({
                "address": g.address, "vendor_id": g.vendor_id, "device_id": g.device_id,
                "driver": g.driver, "iommu_group": g.iommu_group,
                "mdev_types": g.mdev_types.iter().map(|t| serde_json::json!({
                    "type_id": t.type_id, "name": t.name, "available": t.available,
                    "created": t.created,
                    "description": t.description,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    }
}

pub fn seen(d: &pb::DomainReport) -> DomainSeen {
    DomainSeen {
        name: d.name.clone(),
        instance_uuid: (!d.instance_uuid.is_empty()).then(|| d.instance_uuid.clone()),
        power: power(d.state),
    }
}

pub fn event(e: &pb::DomainEvent) -> DomainSeen {
    DomainSeen {
        name: e.name.clone(),
        instance_uuid: (!e.instance_uuid.is_empty()).then(|| e.instance_uuid.clone()),
        power: power(e.state),
    }
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A statistics report as the service takes it.
pub fn stats(r: &pb::StatsReport) -> crate::service::stats::HostStats {
    use crate::service::stats::{DiskReport, HostStats, InstanceReport};
    use orrery_series::{IoCounters, MemoryStats, NetCounters};
    HostStats {
        unix_ms: r.unix_ms,
        with_disks: r.with_disks,
        instances: r
            .instances
            .iter()
            .map(|i| {
                let mut net = NetCounters::default();
                for n in &i.nics {
                    net.rx_bytes = net.rx_bytes.wrapping_add(n.rx_bytes);
                    net.tx_bytes = net.tx_bytes.wrapping_add(n.tx_bytes);
                    net.rx_packets = net.rx_packets.wrapping_add(n.rx_packets);
                    net.tx_packets = net.tx_packets.wrapping_add(n.tx_packets);
                }
                let mut disk = IoCounters::default();
                let disks = i
                    .disks
                    .iter()
                    .map(|d| {
                        let io = IoCounters {
                            read_bytes: d.read_bytes,
                            write_bytes: d.write_bytes,
                            read_ops: d.read_ops,
                            write_ops: d.write_ops,
                        };
                        disk.read_bytes = disk.read_bytes.wrapping_add(io.read_bytes);
                        disk.write_bytes = disk.write_bytes.wrapping_add(io.write_bytes);
                        disk.read_ops = disk.read_ops.wrapping_add(io.read_ops);
                        disk.write_ops = disk.write_ops.wrapping_add(io.write_ops);
                        DiskReport {
                            volume_uuid: d.volume_uuid.clone(),
                            io,
                            allocation: d.allocation_bytes,
                            capacity: d.capacity_bytes,
                        }
                    })
                    .collect();
                InstanceReport {
                    instance_uuid: i.instance_uuid.clone(),
                    cpu_percent: i.cpu_percent,
                    vcpus: i.vcpus,
                    memory: MemoryStats {
                        actual_kib: i.memory_actual_kib,
                        unused_kib: i.memory_unused_kib,
                        rss_kib: i.memory_rss_kib,
                        target_kib: i.memory_target_kib,
                    },
                    network: net,
                    disk,
                    disks,
                }
            })
            .collect(),
    }
}
