//! Rendering: golden output, escaping, determinism and round trips of fixed
//! models.

mod common;

use common::{assert_golden, full_domain, minimal_domain};
use orrery_agent::domxml::*;

#[test]
fn full_domain_matches_golden() {
    assert_golden("domxml_full.xml", &full_domain().to_xml());
}

#[test]
fn minimal_domain_renders_only_what_is_set() {
    let expected = "\
<domain type=\"qemu\">
  <name>tiny</name>
  <memory unit=\"KiB\">65536</memory>
  <vcpu>1</vcpu>
  <os>
    <type>hvm</type>
  </os>
  <devices/>
</domain>
";
    assert_eq!(minimal_domain().to_xml(), expected);
}

#[test]
fn rendering_is_deterministic() {
    let d = full_domain();
    assert_eq!(d.to_xml(), d.to_xml());
    assert_eq!(d.to_xml(), d.clone().to_xml());
}

#[test]
fn minimal_domain_round_trips() {
    let d = minimal_domain();
    assert_eq!(Domain::from_xml(&d.to_xml()).unwrap(), d);
}

#[test]
fn full_domain_round_trips_except_extra() {
    let d = full_domain();
    let parsed = Domain::from_xml(&d.to_xml()).unwrap();
    let mut expected = d.clone();
    // The extra fragments here are devices the model does not know, so they
    // are skipped when read back.
    expected.devices.extra.clear();
    assert_eq!(parsed, expected);
    // Rendering what was parsed is stable from then on.
    assert_eq!(
        Domain::from_xml(&parsed.to_xml()).unwrap().to_xml(),
        parsed.to_xml()
    );
}

#[test]
fn extra_fragments_are_rendered_as_elements_at_the_end_of_devices() {
    let xml = full_domain().to_xml();
    let rng = xml.find("<rng model=\"virtio\">").unwrap();
    let watchdog = xml
        .find("<watchdog model=\"i6300esb\" action=\"reset\"/>")
        .unwrap();
    let shmem = xml.find("<shmem name=\"ivshmem0\">").unwrap();
    let end = xml.find("</devices>").unwrap();
    assert!(rng < watchdog && watchdog < shmem && shmem < end);
    // Re-indented with the rest of the document, not pasted verbatim.
    assert!(xml.contains("    <shmem name=\"ivshmem0\">\n      <model type=\"ivshmem-plain\"/>\n      <size unit=\"M\">4</size>\n    </shmem>\n"));
}

#[test]
fn extra_fragment_that_is_a_modelled_device_reads_back_typed() {
    let mut d = minimal_domain();
    d.devices.extra.push(
        XmlFragment::new("<input type='mouse' bus='ps2'/><input type='keyboard' bus='ps2'/>")
            .unwrap(),
    );
    let parsed = Domain::from_xml(&d.to_xml()).unwrap();
    assert!(parsed.devices.extra.is_empty());
    assert_eq!(
        parsed.devices.inputs,
        vec![
            Input {
                input_type: InputType::Mouse,
                bus: Some(InputBus::Ps2)
            },
            Input {
                input_type: InputType::Keyboard,
                bus: Some(InputBus::Ps2)
            },
        ]
    );
}

#[test]
fn text_is_escaped() {
    let mut d = minimal_domain();
    d.name = "a<b>&c\"d'e".into();
    d.title = Some("</title><evil/>".into());
    d.description = Some("x & y < z > w ]]> \"quoted\" 'single'".into());
    let xml = d.to_xml();
    assert!(xml.contains("<name>a&lt;b&gt;&amp;c\"d'e</name>"), "{xml}");
    assert!(
        xml.contains("<title>&lt;/title&gt;&lt;evil/&gt;</title>"),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<description>x &amp; y &lt; z &gt; w ]]&gt; \"quoted\" 'single'</description>"
        ),
        "{xml}"
    );
    assert!(!xml.contains("<evil/>"));
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}

#[test]
fn attribute_values_are_escaped() {
    let mut d = minimal_domain();
    d.devices.graphics.push(Graphics {
        port: None,
        autoport: true,
        listen: Some("::1".into()),
        passwd: Some("a\"b'c<d>e&f".into()),
    });
    d.devices.disks.push(Disk {
        disk_type: DiskType::File,
        device: DiskDevice::Disk,
        driver: None,
        source: Some("/images/it's \"here\"\tand\nthere\r.img".into()),
        target_dev: "vda".into(),
        target_bus: DiskBus::Virtio,
        serial: None,
        readonly: false,
        boot_order: None,
        iotune: None,
    });
    let xml = d.to_xml();
    assert!(
        xml.contains("passwd=\"a&quot;b&apos;c&lt;d&gt;e&amp;f\""),
        "{xml}"
    );
    // Whitespace other than spaces would be normalised away by an XML
    // reader, so it travels as character references.
    assert!(
        xml.contains("file=\"/images/it&apos;s &quot;here&quot;&#9;and&#10;there&#13;.img\""),
        "{xml}"
    );
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}

#[test]
fn carriage_return_in_text_survives() {
    let mut d = minimal_domain();
    d.description = Some("line one\r\nline two\n".into());
    let xml = d.to_xml();
    assert!(xml.contains("line one&#13;\nline two\n</description>"));
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}

#[test]
fn whitespace_in_text_is_kept_exactly() {
    let mut d = minimal_domain();
    d.name = "  padded  ".into();
    d.description = Some(String::new());
    d.title = Some("   ".into());
    let parsed = Domain::from_xml(&d.to_xml()).unwrap();
    assert_eq!(parsed, d);
}

#[test]
fn metadata_is_namespaced() {
    let mut d = minimal_domain();
    d.metadata = Some(OrreryMetadata {
        instance_uuid: "6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12".into(),
        instance_name: "web & db".into(),
    });
    let xml = d.to_xml();
    assert!(xml.contains(
        "  <metadata>\n    <orrery:instance xmlns:orrery=\"https://orrery.dev/xmlns/domain/1\">\n      <orrery:uuid>6f1c2b9e-0d4a-4c3e-9a51-2b7c8d9e0f12</orrery:uuid>\n      <orrery:name>web &amp; db</orrery:name>\n    </orrery:instance>\n  </metadata>\n"
    ), "{xml}");
    assert_eq!(orrery_metadata(&xml).unwrap(), d.metadata);
}

#[test]
fn a_memory_module_renders_alone_for_hot_plug() {
    let module = MemoryDevice {
        size_kib: 131_072,
        node: Some(0),
    };
    let xml = module.to_xml();
    assert_eq!(
        xml,
        "<memory model=\"dimm\">\n  <target>\n    <size unit=\"KiB\">131072</size>\n    \
         <node>0</node>\n  </target>\n</memory>\n"
    );
    assert_eq!(MemoryDevice::from_xml(&xml).unwrap(), module);
    let anywhere = MemoryDevice {
        size_kib: 2048,
        node: None,
    };
    assert!(!anywhere.to_xml().contains("<node>"));
    assert_eq!(
        MemoryDevice::from_xml(&anywhere.to_xml()).unwrap(),
        anywhere
    );
}

#[test]
fn room_to_scale_renders_where_libvirt_puts_it() {
    let mut d = minimal_domain();
    d.max_memory = Some(MaxMemory {
        slots: 16,
        kib: 524_288,
    });
    d.cpu = Some(Cpu {
        mode: CpuMode::Custom,
        model: None,
        topology: None,
        numa: vec![NumaCell {
            id: 0,
            cpus: "0-3".into(),
            memory_kib: 65536,
        }],
    });
    let xml = d.to_xml();
    // Before `<memory>`, and the NUMA cells inside `<cpu>`.
    assert!(
        xml.contains(
            "  <maxMemory slots=\"16\" unit=\"KiB\">524288</maxMemory>\n  <memory unit=\"KiB\">65536</memory>\n"
        ),
        "{xml}"
    );
    assert!(
        xml.contains(
            "  <cpu mode=\"custom\">\n    <numa>\n      <cell id=\"0\" cpus=\"0-3\" memory=\"65536\" unit=\"KiB\"/>\n    </numa>\n  </cpu>\n"
        ),
        "{xml}"
    );
    assert_eq!(Domain::from_xml(&xml).unwrap(), d);
}
