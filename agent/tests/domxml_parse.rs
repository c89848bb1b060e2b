//! Parsing what libvirt returns, and rejecting what is not a domain.

mod common;

use common::{minimal_domain, read_golden};
use orrery_agent::domxml::*;

const UUID: &str = "6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12";

#[test]
fn parses_libvirt_running_domain_ignoring_unmodelled_parts() {
    let d = Domain::from_xml(&read_golden("libvirt_dumpxml_running.xml")).unwrap();

    assert_eq!(d.domain_type, DomainType::Kvm);
    assert_eq!(d.name, "i-2-15-VM");
    assert_eq!(d.uuid.as_deref(), Some(UUID));
    assert_eq!(d.title.as_deref(), Some("web01 (staging)"));
    assert_eq!(d.description.as_deref(), Some("Other Linux (64-bit)"));
    // Found by namespace although libvirt kept another prefix, next to
    // another tool's metadata.
    assert_eq!(
        d.metadata,
        Some(OrreryMetadata {
            instance_uuid: UUID.into(),
            instance_name: "web01".into()
        })
    );
    assert_eq!(d.max_memory, None);
    assert_eq!(d.memory_kib, 2_097_152);
    assert_eq!(d.current_memory_kib, Some(2_097_152));
    assert_eq!(
        d.vcpu,
        Vcpu {
            count: 2,
            placement: Some(VcpuPlacement::Static),
            current: None
        }
    );
    let sysinfo = d.sysinfo.as_ref().unwrap();
    assert_eq!(
        sysinfo.product.as_deref(),
        Some("CloudStack KVM Hypervisor")
    );
    assert_eq!(sysinfo.serial.as_deref(), Some(UUID));
    assert_eq!(sysinfo.family, None);

    assert_eq!(d.os.os_type, "hvm");
    assert_eq!(d.os.machine.as_deref(), Some("pc-q35-rhel9.4.0"));
    assert_eq!(
        d.os.loader,
        Some(Loader {
            path: "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd".into(),
            readonly: Some(true),
            loader_type: Some(LoaderType::Pflash),
            secure: Some(true),
        })
    );
    assert_eq!(
        d.os.nvram.as_ref().unwrap().template.as_deref(),
        Some("/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd")
    );
    assert_eq!(d.os.smbios_mode, Some(SmbiosMode::Sysinfo));
    assert!(d.os.boot.is_empty());
    assert_eq!(
        d.features,
        Features {
            acpi: true,
            apic: true,
            smm: true
        }
    );
    assert_eq!(
        d.cpu,
        Some(Cpu {
            mode: CpuMode::HostPassthrough,
            model: None,
            topology: Some(CpuTopology {
                sockets: 1,
                cores: 2,
                threads: 1
            }),
            numa: vec![],
        })
    );
    assert_eq!(d.clock, Some(ClockOffset::Utc));
    assert_eq!(d.on_crash, Some(LifecycleAction::Destroy));

    let dev = &d.devices;
    assert_eq!(dev.emulator.as_deref(), Some("/usr/libexec/qemu-kvm"));
    assert_eq!(dev.disks.len(), 2);
    assert_eq!(
        dev.disks[0].source.as_deref(),
        Some("/var/lib/orrery/pool/root.qcow2")
    );
    assert_eq!(dev.disks[0].target_dev, "vda");
    assert_eq!(dev.disks[0].boot_order, Some(1));
    assert_eq!(
        dev.disks[0].iotune,
        Some(IoTune {
            read_iops_sec: Some(500),
            write_iops_sec: Some(250),
            ..IoTune::default()
        })
    );
    assert_eq!(dev.disks[1].device, DiskDevice::Cdrom);
    assert!(dev.disks[1].readonly);
    assert_eq!(dev.disks[1].target_bus, DiskBus::Sata);

    assert_eq!(
        dev.interfaces,
        vec![Interface {
            source: InterfaceSource::Network("default".into()),
            mac: Some("02:00:4c:11:22:33".into()),
            model: Some(NicModel::Virtio),
            target_dev: Some("vnet3".into()),
            bandwidth: None,
        }]
    );
    assert_eq!(dev.serials.len(), 1);
    assert_eq!(dev.consoles.len(), 1);
    assert_eq!(dev.consoles[0].target_type.as_deref(), Some("serial"));
    assert_eq!(dev.channels[0].target_name, "org.qemu.guest_agent.0");
    assert!(dev.channels[0].source_path.is_some());
    assert_eq!(dev.inputs.len(), 3);
    assert_eq!(
        dev.tpms,
        vec![Tpm {
            model: TpmModel::TpmCrb,
            version: Some(TpmVersion::V2_0)
        }]
    );
    assert_eq!(
        dev.graphics,
        vec![Graphics {
            port: Some(5901),
            autoport: true,
            listen: Some("0.0.0.0".into()),
            passwd: None,
        }]
    );
    assert_eq!(dev.videos[0].model, VideoModel::Vga);
    assert_eq!(
        dev.hostdevs,
        vec![Hostdev::Pci {
            address: PciAddress {
                domain: 0,
                bus: 0x3b,
                slot: 0,
                function: 0
            },
            managed: true
        }]
    );
    assert_eq!(dev.memballoon.as_ref().unwrap().stats_period, Some(10));
    assert_eq!(dev.rngs[0].source.as_deref(), Some("/dev/urandom"));
    assert!(dev.extra.is_empty());
}

#[test]
fn parsed_libvirt_domain_renders_and_reparses_identically() {
    let d = Domain::from_xml(&read_golden("libvirt_dumpxml_running.xml")).unwrap();
    assert_eq!(Domain::from_xml(&d.to_xml()).unwrap(), d);
}

#[test]
fn recognises_orrery_domains_by_metadata_only() {
    let ours = orrery_metadata(&read_golden("libvirt_dumpxml_running.xml")).unwrap();
    assert_eq!(ours.unwrap().instance_name, "web01");

    // A foreign domain with devices outside the model: the full parser
    // refuses it, the metadata reader just says "not ours".
    let foreign = "<domain type='kvm'><name>desktop</name><memory>1024</memory><vcpu>1</vcpu>\
        <os><type>hvm</type></os><devices><graphics type='spice' autoport='yes'/>\
        <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>\
        </devices></domain>";
    assert_eq!(orrery_metadata(foreign).unwrap(), None);
    assert!(Domain::from_xml(foreign).is_err());

    assert!(matches!(
        orrery_metadata("<network><name>default</name></network>"),
        Err(DomXmlError::NotADomain { .. })
    ));
}

#[test]
fn nic_devices_tie_host_devices_to_macs() {
    assert_eq!(
        nic_devices(&read_golden("libvirt_dumpxml_running.xml")).unwrap(),
        vec![NicDevice {
            device: "vnet3".into(),
            mac: "02:00:4c:11:22:33".into(),
        }]
    );
    // Interface types outside the model count too; an interface without a
    // host device (user networking, an inactive definition) does not.
    let foreign = "<domain type='kvm'><name>desktop</name><devices>\
        <interface type='direct'><mac address='52:54:00:00:00:01'/>\
        <source dev='eth0' mode='bridge'/><target dev='macvtap0'/></interface>\
        <interface type='user'><mac address='52:54:00:00:00:02'/></interface>\
        </devices></domain>";
    assert_eq!(
        nic_devices(foreign).unwrap(),
        vec![NicDevice {
            device: "macvtap0".into(),
            mac: "52:54:00:00:00:01".into(),
        }]
    );
    assert!(matches!(
        nic_devices("<network><name>default</name></network>"),
        Err(DomXmlError::NotADomain { .. })
    ));
}

#[test]
fn metadata_in_another_namespace_is_not_ours() {
    let xml = "<domain type='qemu'><name>x</name><metadata>\
        <orrery:instance xmlns:orrery='https://example.com/other'><orrery:uuid>u</orrery:uuid>\
        <orrery:name>n</orrery:name></orrery:instance></metadata>\
        <memory>1</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";
    assert_eq!(Domain::from_xml(xml).unwrap().metadata, None);
}

#[test]
fn incomplete_orrery_metadata_is_an_error() {
    let xml = "<domain type='qemu'><name>x</name><metadata>\
        <instance xmlns='https://orrery.dev/xmlns/domain/1'><uuid>u</uuid></instance></metadata>\
        <memory>1</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";
    assert_eq!(
        Domain::from_xml(xml).unwrap_err(),
        DomXmlError::MissingElement {
            path: "domain/metadata/instance/name".into()
        }
    );
}

#[test]
fn memory_units_are_converted_to_kib() {
    let with_memory = |memory: &str| {
        format!(
            "<domain type='qemu'><name>x</name>{memory}<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        )
    };
    let cases = [
        ("<memory unit='MiB'>512</memory>", 524_288),
        ("<memory unit='G'>2</memory>", 2_097_152),
        ("<memory unit='GiB'>1</memory>", 1_048_576),
        ("<memory unit='bytes'>1025</memory>", 2),
        ("<memory unit='KB'>1024</memory>", 1000),
        ("<memory>64</memory>", 64),
        ("<memory unit='TiB'>1</memory>", 1 << 30),
    ];
    for (memory, kib) in cases {
        let d = Domain::from_xml(&with_memory(memory)).unwrap();
        assert_eq!(d.memory_kib, kib, "{memory}");
    }
    assert!(matches!(
        Domain::from_xml(&with_memory("<memory unit='parsec'>1</memory>")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/memory/@unit"
    ));
    assert!(matches!(
        Domain::from_xml(&with_memory("<memory unit='TiB'>99999999999</memory>")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/memory"
    ));
}

#[test]
fn pty_console_takes_tty_from_source_or_attribute() {
    let xml = "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu>\
        <os><type>hvm</type></os><devices>\
        <serial type='pty'><source path='/dev/pts/4'/><target port='0'/></serial>\
        <console type='pty' tty='/dev/pts/4'><target type='serial' port='0'/></console>\
        </devices></domain>";
    let d = Domain::from_xml(xml).unwrap();
    let pty = CharSource::Pty {
        path: Some("/dev/pts/4".into()),
    };
    assert_eq!(d.devices.serials[0].source, pty);
    assert_eq!(d.devices.consoles[0].source, pty);
}

#[test]
fn mdev_hostdev_and_bridge_interface_parse() {
    let xml = "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu>\
        <os><type>hvm</type></os><devices>\
        <interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='cloudbr0'/>\
        <bandwidth><inbound average='100'/></bandwidth><model type='rtl8139'/></interface>\
        <hostdev mode='subsystem' type='mdev' model='vfio-pci' display='off'>\
        <source><address uuid='c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d'/></source></hostdev>\
        <hostdev mode='subsystem' type='pci' managed='no'>\
        <source><address domain='0' bus='59' slot='2' function='1'/></source></hostdev>\
        </devices></domain>";
    let d = Domain::from_xml(xml).unwrap();
    assert_eq!(
        d.devices.interfaces[0].source,
        InterfaceSource::Bridge("cloudbr0".into())
    );
    assert_eq!(
        d.devices.interfaces[0].bandwidth,
        Some(Bandwidth {
            inbound: Some(BandwidthLimit {
                average: 100,
                peak: None,
                burst: None
            }),
            outbound: None
        })
    );
    assert_eq!(
        d.devices.hostdevs,
        vec![
            Hostdev::Mdev {
                uuid: "c2b4e1a0-5d6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
                model: MdevModel::VfioPci
            },
            Hostdev::Pci {
                address: PciAddress {
                    domain: 0,
                    bus: 59,
                    slot: 2,
                    function: 1
                },
                managed: false
            },
        ]
    );
}

#[test]
fn explicitly_disabled_feature_is_off() {
    let xml = "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu>\
        <os><type>hvm</type></os><features><acpi/><smm state='off'/></features></domain>";
    assert_eq!(
        Domain::from_xml(xml).unwrap().features,
        Features {
            acpi: true,
            apic: false,
            smm: false
        }
    );
}

#[test]
fn cdata_text_is_read() {
    let mut d = minimal_domain();
    d.description = Some("a <b> & c".into());
    let xml = d
        .to_xml()
        .replace("a &lt;b&gt; &amp; c", "a <![CDATA[<b> & ]]>c");
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}

#[test]
fn rejects_malformed_documents() {
    for bad in [
        "",
        "   ",
        "<domain type='kvm'><name>x</name>",
        "<domain type='kvm'><name>x</nom></domain>",
        "<domain type='kvm' type='qemu'/>",
        "<domain type='kvm'>&bogus;</domain>",
        "<domain type='kvm'><x:name>y</x:name></domain>",
        "<!DOCTYPE domain [<!ENTITY e 'boom'>]><domain type='kvm'>&e;</domain>",
        "<domain type='kvm'/><domain type='kvm'/>",
        "stray text <domain type='kvm'/>",
    ] {
        assert!(
            matches!(Domain::from_xml(bad), Err(DomXmlError::Malformed(_))),
            "{bad:?} gave {:?}",
            Domain::from_xml(bad)
        );
    }
}

#[test]
fn reports_structural_errors_with_paths() {
    assert_eq!(
        Domain::from_xml("<network/>").unwrap_err(),
        DomXmlError::NotADomain {
            found: "network".into()
        }
    );
    assert_eq!(
        Domain::from_xml("<domain><name>x</name></domain>").unwrap_err(),
        DomXmlError::MissingAttribute {
            path: "domain/@type".into()
        }
    );
    assert_eq!(
        Domain::from_xml("<domain type='kvm'><name>x</name></domain>").unwrap_err(),
        DomXmlError::MissingElement {
            path: "domain/memory".into()
        }
    );
    let base = |devices: &str| {
        format!(
            "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os><devices>{devices}</devices></domain>"
        )
    };
    let err = Domain::from_xml(&base(
        "<disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>\
         <disk type='file' device='disk'><target dev='vdb' bus='floppy-bus'/></disk>",
    ))
    .unwrap_err();
    assert_eq!(
        err,
        DomXmlError::InvalidValue {
            path: "domain/devices/disk[1]/target/@bus".into(),
            value: "floppy-bus".into(),
            expected: "virtio | sata | ide | scsi | usb".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid value \"floppy-bus\" at domain/devices/disk[1]/target/@bus: expected virtio | sata | ide | scsi | usb"
    );
    assert!(matches!(
        Domain::from_xml(&base("<interface type='ethernet'><source/></interface>")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/devices/interface[0]/@type"
    ));
    assert!(matches!(
        Domain::from_xml(&base("<hostdev mode='subsystem' type='pci'><source><address bus='0x3b' slot='0' function='0'/></source></hostdev>")),
        Err(DomXmlError::MissingAttribute { path }) if path == "domain/devices/hostdev[0]/source/address/@domain"
    ));
    assert!(matches!(
        Domain::from_xml(&base("<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0x1ff' slot='0' function='0'/></source></hostdev>")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/devices/hostdev[0]/source/address/@bus"
    ));
    assert!(matches!(
        Domain::from_xml(&base("<graphics type='vnc' autoport='maybe'/>")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/devices/graphics[0]/@autoport"
    ));
}

#[test]
fn fragments_must_be_well_formed_elements() {
    assert!(XmlFragment::new("<watchdog model='i6300esb'/>").is_ok());
    assert!(XmlFragment::new("  <a/>\n<b>text &amp; more</b>  ").is_ok());
    assert!(XmlFragment::new("<q:x xmlns:q='urn:q'><q:y/></q:x>").is_ok());
    assert!(XmlFragment::try_from("<a/>".to_string()).is_ok());
    for bad in [
        "",
        "   ",
        "just text",
        "<a>",
        "<a></b>",
        "</a>",
        "<a/>trailing",
        "<a x='1' x='2'/>",
        "<a>&undefined;</a>",
        "<q:x/>",
        "<!DOCTYPE a><a/>",
        "<a><!-- unterminated </a>",
        "</devices><disk type='file'/>",
    ] {
        assert!(
            matches!(XmlFragment::new(bad), Err(DomXmlError::InvalidFragment(_))),
            "{bad:?} gave {:?}",
            XmlFragment::new(bad)
        );
    }
}

#[test]
fn fragment_keeps_its_text() {
    let f = XmlFragment::new("<a b='1'/>").unwrap();
    assert_eq!(f.as_str(), "<a b='1'/>");
}

/// The parts of a running scalable domain that libvirt 9.0 reports after
/// one vCPU and one memory module were plugged in (QEMU 7.2, TCG).
const SCALED_LIVE: &str = "\
<domain type='qemu' id='11'>
  <name>scaled</name>
  <maxMemory slots='16' unit='KiB'>524288</maxMemory>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <vcpus>
    <vcpu id='0' enabled='yes' hotpluggable='no' order='1'/>
    <vcpu id='1' enabled='yes' hotpluggable='yes' order='2'/>
  </vcpus>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
  </os>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='2' dies='1' cores='1' threads='1'/>
    <feature policy='require' name='hypervisor'/>
    <numa>
      <cell id='0' cpus='0-1' memory='131072' unit='KiB'/>
    </numa>
  </cpu>
  <devices>
    <memballoon model='virtio'>
      <alias name='balloon0'/>
    </memballoon>
    <memory model='dimm'>
      <target>
        <size unit='KiB'>131072</size>
        <node>0</node>
      </target>
      <alias name='dimm0'/>
      <address type='dimm' slot='0' base='0x100000000'/>
    </memory>
  </devices>
</domain>
";

#[test]
fn parses_the_room_and_modules_of_a_scaled_running_domain() {
    let d = Domain::from_xml(SCALED_LIVE).unwrap();
    assert_eq!(
        d.max_memory,
        Some(MaxMemory {
            slots: 16,
            kib: 524_288
        })
    );
    // Plugged modules are counted in `<memory>`.
    assert_eq!(d.memory_kib, 262_144);
    assert_eq!(d.current_memory_kib, Some(262_144));
    // All vCPUs online: libvirt leaves `current` out.
    assert_eq!(
        d.vcpu,
        Vcpu {
            count: 2,
            placement: Some(VcpuPlacement::Static),
            current: None
        }
    );
    assert_eq!(
        d.cpu.as_ref().unwrap().numa,
        vec![NumaCell {
            id: 0,
            cpus: "0-1".into(),
            memory_kib: 131_072
        }]
    );
    assert_eq!(
        d.devices.memories,
        vec![MemoryDevice {
            size_kib: 131_072,
            node: Some(0)
        }]
    );
    assert_eq!(Domain::from_xml(&d.to_xml()).unwrap(), d);
}

#[test]
fn a_memory_module_parses_alone_as_libvirt_reports_it() {
    let module = "<memory model='dimm'>\n  <target>\n    <size unit='MiB'>128</size>\n  \
                  </target>\n  <alias name='dimm1'/>\n  <address type='dimm' slot='1' \
                  base='0x108000000'/>\n</memory>";
    assert_eq!(
        MemoryDevice::from_xml(module).unwrap(),
        MemoryDevice {
            size_kib: 131_072,
            node: None
        }
    );
    assert!(matches!(
        MemoryDevice::from_xml("<disk type='file'/>"),
        Err(DomXmlError::InvalidValue { value, .. }) if value == "disk"
    ));
    assert_eq!(
        MemoryDevice::from_xml("<memory model='dimm'><target/></memory>").unwrap_err(),
        DomXmlError::MissingElement {
            path: "memory/target/size".into()
        }
    );
}

#[test]
fn scaling_elements_convert_units_and_number_cells_in_order() {
    let xml = "<domain type='kvm'><name>x</name>\
               <maxMemory slots='4' unit='GiB'>8</maxMemory><memory unit='GiB'>2</memory>\
               <vcpu current='1'>4</vcpu><os><type>hvm</type></os>\
               <cpu><numa><cell cpus='0-1' memory='1' unit='GiB'/>\
               <cell cpus='2-3' memory='1024'/></numa></cpu>\
               <devices><memory model='dimm'><target><size unit='GiB'>1</size>\
               <node>1</node></target></memory></devices></domain>";
    let d = Domain::from_xml(xml).unwrap();
    assert_eq!(
        d.max_memory,
        Some(MaxMemory {
            slots: 4,
            kib: 8 << 20
        })
    );
    assert_eq!(d.vcpu.current, Some(1));
    let numa = &d.cpu.as_ref().unwrap().numa;
    assert_eq!(
        numa.iter()
            .map(|c| (c.id, c.cpus.as_str(), c.memory_kib))
            .collect::<Vec<_>>(),
        vec![(0, "0-1", 1 << 20), (1, "2-3", 1024)]
    );
    assert_eq!(
        d.devices.memories,
        vec![MemoryDevice {
            size_kib: 1 << 20,
            node: Some(1)
        }]
    );
}

#[test]
fn scaling_elements_report_errors_with_paths() {
    let with = |top: &str, cpu: &str, devices: &str| {
        format!(
            "<domain type='kvm'><name>x</name>{top}<memory>1</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os>{cpu}<devices>{devices}</devices></domain>"
        )
    };
    assert_eq!(
        Domain::from_xml(&with("<maxMemory unit='KiB'>2048</maxMemory>", "", "")).unwrap_err(),
        DomXmlError::MissingAttribute {
            path: "domain/maxMemory/@slots".into()
        }
    );
    assert!(matches!(
        Domain::from_xml(&with("<maxMemory slots='16' unit='parsec'>1</maxMemory>", "", "")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/maxMemory/@unit"
    ));
    assert_eq!(
        Domain::from_xml(&with(
            "",
            "<cpu><numa><cell id='0' cpus='0'/></numa></cpu>",
            ""
        ))
        .unwrap_err(),
        DomXmlError::MissingAttribute {
            path: "domain/cpu/numa/cell[0]/@memory".into()
        }
    );
    assert!(matches!(
        Domain::from_xml(&with("", "<cpu><numa><cell id='0' cpus='0' memory='1' unit='ly'/></numa></cpu>", "")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/cpu/numa/cell[0]/@unit"
    ));
    assert!(matches!(
        Domain::from_xml(&with("", "<cpu><numa><cell id='0' cpus='0' memory='x'/></numa></cpu>", "")),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/cpu/numa/cell[0]/@memory"
    ));
    // Other memory device models are other devices, not modules.
    assert_eq!(
        Domain::from_xml(&with(
            "",
            "",
            "<memory model='nvdimm'><target><size>1</size></target></memory>"
        ))
        .unwrap_err(),
        DomXmlError::InvalidValue {
            path: "domain/devices/memory[0]/@model".into(),
            value: "nvdimm".into(),
            expected: "dimm".into(),
        }
    );
    assert!(matches!(
        Domain::from_xml(&with(
            "",
            "",
            "<memory model='dimm'><target><size>1</size><node>first</node></target></memory>"
        )),
        Err(DomXmlError::InvalidValue { path, .. }) if path == "domain/devices/memory[0]/target/node"
    ));
}
