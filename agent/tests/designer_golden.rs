//! Complete designs for representative instances, compared with reviewed
//! renderings.

mod common;

use common::{assert_golden, kvm_facts, lab_config, lab_facts, lab_spec};
use orrery_agent::designer::{design, BootMode, GpuSpec, SMBIOS_VERSION};
use orrery_agent::domxml::Domain;

/// The SMBIOS version follows the crate version; the golden files carry a
/// placeholder so that a release does not rewrite them.
fn normalise(xml: &str) -> String {
    let entry = format!("<entry name=\"version\">{SMBIOS_VERSION}</entry>");
    assert!(xml.contains(&entry), "no SMBIOS version entry in:\n{xml}");
    xml.replace(&entry, "<entry name=\"version\">@VERSION@</entry>")
}

#[test]
fn lab_bios_instance_on_emulation_only_host() {
    let domain = design(&lab_spec(), &lab_facts(), &lab_config()).unwrap();
    let xml = domain.to_xml();
    assert_golden("design_lab_bios.xml", &normalise(&xml));
    assert_eq!(Domain::from_xml(&xml).unwrap(), domain);
}

#[test]
fn uefi_secure_boot_tpm_gpu_instance_on_kvm_host() {
    let mut spec = lab_spec();
    spec.internal_name = "i-7-42-VM".into();
    spec.display_name = "Windows 11 CAD workstation".into();
    spec.host_name = "cad-ws-01".into();
    spec.os_type = "Windows 11 (64-bit)".into();
    spec.vcpus = 8;
    spec.memory_mib = 16384;
    spec.boot_mode = BootMode::Uefi { secure: true };
    spec.tpm = true;
    spec.cdrom = None;
    spec.gpu = Some(GpuSpec::Passthrough {
        pci_addresses: vec!["0000:3b:00.0".into(), "0000:3b:00.1".into()],
    });
    spec.details.insert("cpu.corespersocket".into(), "4".into());
    spec.details
        .insert("rootDiskController".into(), "sata".into());
    spec.details
        .insert("dataDiskController".into(), "virtio".into());
    spec.details.insert("nicAdapter".into(), "e1000e".into());
    spec.volumes[0].path = "/dev/disk/by-id/dm-uuid-LVM-data42".into();
    spec.volumes[0].format = orrery_agent::designer::VolumeFormat::Raw;

    let domain = design(&spec, &kvm_facts(), &lab_config()).unwrap();
    let xml = domain.to_xml();
    assert_golden("design_uefi_secure_tpm_gpu.xml", &normalise(&xml));
    assert_eq!(Domain::from_xml(&xml).unwrap(), domain);
}

#[test]
fn vgpu_instance_whose_gpu_is_the_display() {
    let mut spec = lab_spec();
    spec.internal_name = "i-3-77-VM".into();
    spec.display_name = "render node".into();
    spec.host_name = "render-01".into();
    spec.vcpus = 4;
    spec.memory_mib = 8192;
    spec.gpu = Some(GpuSpec::Mdev {
        uuid: "6F1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D".into(),
        mdev_type: "nvidia-231".into(),
    });
    // gpudisplay offerings: the vGPU replaces the emulated video card.
    spec.details.insert("video.hardware".into(), "none".into());

    let domain = design(&spec, &kvm_facts(), &lab_config()).unwrap();
    let xml = domain.to_xml();
    assert_golden("design_vgpu_display.xml", &normalise(&xml));
    assert_eq!(Domain::from_xml(&xml).unwrap(), domain);
}
