//! Model -> element tree. Element and attribute order follows the order in
//! which libvirt itself formats a domain, so a rendered definition and the
//! one libvirt returns line up when compared by eye.

use super::tree::Element;
use super::*;

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn text_el(name: &str, text: &str) -> Element {
    Element::new(name).text(text)
}

pub(crate) fn domain(d: &Domain) -> Element {
    let mut root = Element::new("domain").attr("type", d.domain_type.as_str());
    root.push(text_el("name", &d.name));
    if let Some(uuid) = &d.uuid {
        root.push(text_el("uuid", uuid));
    }
    if let Some(title) = &d.title {
        root.push(text_el("title", title));
    }
    if let Some(description) = &d.description {
        root.push(text_el("description", description));
    }
    if let Some(meta) = &d.metadata {
        root.push(metadata(meta));
    }
    if let Some(max) = d.max_memory {
        root.push(
            Element::new("maxMemory")
                .attr("slots", max.slots.to_string())
                .attr("unit", "KiB")
                .text(max.kib.to_string()),
        );
    }
    root.push(
        Element::new("memory")
            .attr("unit", "KiB")
            .text(d.memory_kib.to_string()),
    );
    if let Some(current) = d.current_memory_kib {
        root.push(
            Element::new("currentMemory")
                .attr("unit", "KiB")
                .text(current.to_string()),
        );
    }
    root.push(
        Element::new("vcpu")
            .attr_opt("placement", d.vcpu.placement.map(XmlValue::as_str))
            .attr_opt("current", d.vcpu.current.map(|c| c.to_string()))
            .text(d.vcpu.count.to_string()),
    );
    if let Some(sysinfo) = &d.sysinfo {
        root.push(self::sysinfo(sysinfo));
    }
    root.push(os(&d.os));
    if let Some(f) = features(&d.features) {
        root.push(f);
    }
    if let Some(c) = &d.cpu {
        root.push(cpu(c));
    }
    if let Some(offset) = d.clock {
        root.push(Element::new("clock").attr("offset", offset.as_str()));
    }
    for (name, action) in [
        ("on_poweroff", d.on_poweroff),
        ("on_reboot", d.on_reboot),
        ("on_crash", d.on_crash),
    ] {
        if let Some(action) = action {
            root.push(text_el(name, action.as_str()));
        }
    }
    root.push(devices(&d.devices));
    // Extra elements that are not devices belong to the domain itself
    // (`<memoryBacking>`, `<cputune>`, ...).
    for fragment in &d.devices.extra {
        for child in fragment.elements() {
            if !is_device_element(&child.local) {
                root.push(child);
            }
        }
    }
    root
}

/// Element names libvirt accepts inside `<devices>`.
fn is_device_element(name: &str) -> bool {
    matches!(
        name,
        "emulator"
            | "disk"
            | "controller"
            | "lease"
            | "filesystem"
            | "interface"
            | "input"
            | "hub"
            | "graphics"
            | "video"
            | "serial"
            | "parallel"
            | "console"
            | "channel"
            | "sound"
            | "watchdog"
            | "memballoon"
            | "rng"
            | "tpm"
            | "nvram"
            | "panic"
            | "shmem"
            | "memory"
            | "iommu"
            | "vsock"
            | "hostdev"
            | "redirdev"
            | "redirfilter"
            | "smartcard"
            | "audio"
            | "crypto"
            | "pstore"
    )
}

fn metadata(m: &OrreryMetadata) -> Element {
    let instance = Element::new_ns(ORRERY_NS_PREFIX, "instance", ORRERY_NS)
        .attr(&format!("xmlns:{ORRERY_NS_PREFIX}"), ORRERY_NS)
        .child(Element::new_ns(ORRERY_NS_PREFIX, "uuid", ORRERY_NS).text(&m.instance_uuid))
        .child(Element::new_ns(ORRERY_NS_PREFIX, "name", ORRERY_NS).text(&m.instance_name));
    Element::new("metadata").child(instance)
}

fn sysinfo(s: &SysInfo) -> Element {
    let mut system = Element::new("system");
    for (name, value) in [
        ("manufacturer", &s.manufacturer),
        ("product", &s.product),
        ("version", &s.version),
        ("serial", &s.serial),
        ("uuid", &s.uuid),
        ("family", &s.family),
    ] {
        if let Some(value) = value {
            system.push(Element::new("entry").attr("name", name).text(value));
        }
    }
    Element::new("sysinfo").attr("type", "smbios").child(system)
}

fn os(o: &Os) -> Element {
    let mut el = Element::new("os").child(
        Element::new("type")
            .attr_opt("arch", o.arch.as_deref())
            .attr_opt("machine", o.machine.as_deref())
            .text(&o.os_type),
    );
    if let Some(l) = &o.loader {
        el.push(
            Element::new("loader")
                .attr_opt("readonly", l.readonly.map(yes_no))
                .attr_opt("secure", l.secure.map(yes_no))
                .attr_opt("type", l.loader_type.map(XmlValue::as_str))
                .text(&l.path),
        );
    }
    if let Some(n) = &o.nvram {
        el.push(
            Element::new("nvram")
                .attr_opt("template", n.template.as_deref())
                .text(&n.path),
        );
    }
    for dev in &o.boot {
        el.push(Element::new("boot").attr("dev", dev.as_str()));
    }
    if let Some(mode) = o.smbios_mode {
        el.push(Element::new("smbios").attr("mode", mode.as_str()));
    }
    el
}

fn features(f: &Features) -> Option<Element> {
    if !(f.acpi || f.apic || f.smm) {
        return None;
    }
    let mut el = Element::new("features");
    if f.acpi {
        el.push(Element::new("acpi"));
    }
    if f.apic {
        el.push(Element::new("apic"));
    }
    if f.smm {
        el.push(Element::new("smm").attr("state", "on"));
    }
    Some(el)
}

fn cpu(c: &Cpu) -> Element {
    let numa = (!c.numa.is_empty()).then(|| {
        let mut numa = Element::new("numa");
        for cell in &c.numa {
            numa.push(
                Element::new("cell")
                    .attr("id", cell.id.to_string())
                    .attr("cpus", &cell.cpus)
                    .attr("memory", cell.memory_kib.to_string())
                    .attr("unit", "KiB"),
            );
        }
        numa
    });
    Element::new("cpu")
        .attr("mode", c.mode.as_str())
        .child_opt(c.model.as_deref().map(|m| text_el("model", m)))
        .child_opt(c.topology.map(|t| {
            Element::new("topology")
                .attr("sockets", t.sockets.to_string())
                .attr("cores", t.cores.to_string())
                .attr("threads", t.threads.to_string())
        }))
        .child_opt(numa)
}

fn devices(d: &Devices) -> Element {
    let mut el = Element::new("devices");
    if let Some(emulator) = &d.emulator {
        el.push(text_el("emulator", emulator));
    }
    for x in &d.disks {
        el.push(disk(x));
    }
    for x in &d.interfaces {
        el.push(interface(x));
    }
    for x in &d.serials {
        el.push(char_device("serial", x));
    }
    for x in &d.consoles {
        el.push(char_device("console", x));
    }
    for x in &d.channels {
        el.push(channel(x));
    }
    for x in &d.inputs {
        el.push(
            Element::new("input")
                .attr("type", x.input_type.as_str())
                .attr_opt("bus", x.bus.map(XmlValue::as_str)),
        );
    }
    for x in &d.tpms {
        el.push(
            Element::new("tpm").attr("model", x.model.as_str()).child(
                Element::new("backend")
                    .attr("type", "emulator")
                    .attr_opt("version", x.version.map(XmlValue::as_str)),
            ),
        );
    }
    for x in &d.graphics {
        el.push(graphics(x));
    }
    for x in &d.videos {
        el.push(
            Element::new("video").child(
                Element::new("model")
                    .attr("type", x.model.as_str())
                    .attr_opt("vram", x.vram_kib.map(|v| v.to_string()))
                    .attr_opt("heads", x.heads.map(|v| v.to_string())),
            ),
        );
    }
    for x in &d.hostdevs {
        el.push(hostdev(x));
    }
    if let Some(b) = &d.memballoon {
        el.push(
            Element::new("memballoon")
                .attr("model", b.model.as_str())
                .child_opt(
                    b.stats_period
                        .map(|p| Element::new("stats").attr("period", p.to_string())),
                ),
        );
    }
    for x in &d.rngs {
        let mut backend = Element::new("backend").attr("model", "random");
        if let Some(source) = &x.source {
            backend = backend.text(source);
        }
        el.push(
            Element::new("rng")
                .attr("model", x.model.as_str())
                .child(backend),
        );
    }
    for x in &d.memories {
        el.push(memory_device(x));
    }
    for fragment in &d.extra {
        for child in fragment.elements() {
            if is_device_element(&child.local) {
                el.push(child);
            }
        }
    }
    el
}

pub(crate) fn disk(d: &Disk) -> Element {
    let mut el = Element::new("disk")
        .attr("type", d.disk_type.as_str())
        .attr("device", d.device.as_str());
    if let Some(drv) = &d.driver {
        el.push(
            Element::new("driver")
                .attr_opt("name", drv.name.as_deref())
                .attr_opt("type", drv.format.map(XmlValue::as_str))
                .attr_opt("cache", drv.cache.map(XmlValue::as_str))
                .attr_opt("discard", drv.discard.map(XmlValue::as_str)),
        );
    }
    if let Some(source) = &d.source {
        let attr = match d.disk_type {
            DiskType::File => "file",
            DiskType::Block => "dev",
        };
        el.push(Element::new("source").attr(attr, source));
    }
    el.push(
        Element::new("target")
            .attr("dev", &d.target_dev)
            .attr("bus", d.target_bus.as_str()),
    );
    if let Some(t) = &d.iotune {
        el.push(iotune(t));
    }
    if let Some(order) = d.boot_order {
        el.push(Element::new("boot").attr("order", order.to_string()));
    }
    if d.readonly {
        el.push(Element::new("readonly"));
    }
    if let Some(serial) = &d.serial {
        el.push(text_el("serial", serial));
    }
    el
}

pub(crate) fn memory_device(m: &MemoryDevice) -> Element {
    let target = Element::new("target")
        .child(
            Element::new("size")
                .attr("unit", "KiB")
                .text(m.size_kib.to_string()),
        )
        .child_opt(m.node.map(|n| text_el("node", &n.to_string())));
    Element::new("memory").attr("model", "dimm").child(target)
}

fn iotune(t: &IoTune) -> Element {
    let mut el = Element::new("iotune");
    for (name, value) in [
        ("total_bytes_sec", t.total_bytes_sec),
        ("read_bytes_sec", t.read_bytes_sec),
        ("write_bytes_sec", t.write_bytes_sec),
        ("total_iops_sec", t.total_iops_sec),
        ("read_iops_sec", t.read_iops_sec),
        ("write_iops_sec", t.write_iops_sec),
    ] {
        if let Some(v) = value {
            el.push(text_el(name, &v.to_string()));
        }
    }
    el
}

fn interface(i: &Interface) -> Element {
    let (kind, source) = match &i.source {
        InterfaceSource::Network(n) => ("network", Element::new("source").attr("network", n)),
        InterfaceSource::Bridge(b) => ("bridge", Element::new("source").attr("bridge", b)),
    };
    let mut el = Element::new("interface").attr("type", kind);
    if let Some(mac) = &i.mac {
        el.push(Element::new("mac").attr("address", mac));
    }
    el.push(source);
    if let Some(bw) = &i.bandwidth {
        let limit = |name: &str, l: &BandwidthLimit| {
            Element::new(name)
                .attr("average", l.average.to_string())
                .attr_opt("peak", l.peak.map(|v| v.to_string()))
                .attr_opt("burst", l.burst.map(|v| v.to_string()))
        };
        el.push(
            Element::new("bandwidth")
                .child_opt(bw.inbound.as_ref().map(|l| limit("inbound", l)))
                .child_opt(bw.outbound.as_ref().map(|l| limit("outbound", l))),
        );
    }
    if let Some(dev) = &i.target_dev {
        el.push(Element::new("target").attr("dev", dev));
    }
    if let Some(model) = i.model {
        el.push(Element::new("model").attr("type", model.as_str()));
    }
    el
}

fn char_device(name: &str, c: &CharDevice) -> Element {
    let (kind, source) = match &c.source {
        CharSource::File { path, append } => (
            "file",
            Some(
                Element::new("source")
                    .attr("path", path)
                    .attr_opt("append", append.map(on_off)),
            ),
        ),
        CharSource::Pty { path } => (
            "pty",
            path.as_deref()
                .map(|p| Element::new("source").attr("path", p)),
        ),
    };
    let target = if c.target_type.is_some() || c.target_port.is_some() {
        Some(
            Element::new("target")
                .attr_opt("type", c.target_type.as_deref())
                .attr_opt("port", c.target_port.map(|p| p.to_string())),
        )
    } else {
        None
    };
    Element::new(name)
        .attr("type", kind)
        .child_opt(source)
        .child_opt(target)
}

fn channel(c: &Channel) -> Element {
    let source = if c.source_mode.is_some() || c.source_path.is_some() {
        Some(
            Element::new("source")
                .attr_opt("mode", c.source_mode.map(XmlValue::as_str))
                .attr_opt("path", c.source_path.as_deref()),
        )
    } else {
        None
    };
    Element::new("channel")
        .attr("type", "unix")
        .child_opt(source)
        .child(
            Element::new("target")
                .attr("type", "virtio")
                .attr("name", &c.target_name),
        )
}

fn graphics(g: &Graphics) -> Element {
    Element::new("graphics")
        .attr("type", "vnc")
        .attr_opt("port", g.port.map(|p| p.to_string()))
        .attr("autoport", yes_no(g.autoport))
        .attr_opt("listen", g.listen.as_deref())
        .attr_opt("passwd", g.passwd.as_deref())
        .child_opt(g.listen.as_deref().map(|addr| {
            Element::new("listen")
                .attr("type", "address")
                .attr("address", addr)
        }))
}

fn hostdev(h: &Hostdev) -> Element {
    match h {
        Hostdev::Pci { address, managed } => Element::new("hostdev")
            .attr("mode", "subsystem")
            .attr("type", "pci")
            .attr("managed", yes_no(*managed))
            .child(
                Element::new("source").child(
                    Element::new("address")
                        .attr("domain", format!("0x{:04x}", address.domain))
                        .attr("bus", format!("0x{:02x}", address.bus))
                        .attr("slot", format!("0x{:02x}", address.slot))
                        .attr("function", format!("0x{:x}", address.function)),
                ),
            ),
        Hostdev::Mdev { uuid, model } => Element::new("hostdev")
            .attr("mode", "subsystem")
            .attr("type", "mdev")
            .attr("model", model.as_str())
            .child(Element::new("source").child(Element::new("address").attr("uuid", uuid))),
    }
}
