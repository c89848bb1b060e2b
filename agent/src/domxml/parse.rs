//! Element tree -> model.
//!
//! Unknown elements and attributes are skipped; modelled values are checked
//! and reported with a path such as `domain/devices/disk[1]/target/@bus`.

use std::str::FromStr;

use super::tree::Element;
use super::*;

fn missing_attr(path: &str, name: &str) -> DomXmlError {
    DomXmlError::MissingAttribute {
        path: format!("{path}/@{name}"),
    }
}

fn missing_el(path: &str, name: &str) -> DomXmlError {
    DomXmlError::MissingElement {
        path: format!("{path}/{name}"),
    }
}

fn invalid(path: String, value: &str, expected: impl Into<String>) -> DomXmlError {
    DomXmlError::InvalidValue {
        path,
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn req_attr<'a>(el: &'a Element, path: &str, name: &str) -> Result<&'a str, DomXmlError> {
    el.get_attr(name).ok_or_else(|| missing_attr(path, name))
}

fn req_child<'a>(el: &'a Element, path: &str, name: &str) -> Result<&'a Element, DomXmlError> {
    el.first_child(name).ok_or_else(|| missing_el(path, name))
}

fn enum_value<T: XmlValue>(value: &str, path: String) -> Result<T, DomXmlError> {
    T::from_xml_value(value).ok_or_else(|| {
        let expected = T::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        invalid(path, value, expected)
    })
}

fn opt_enum_attr<T: XmlValue>(
    el: &Element,
    path: &str,
    name: &str,
) -> Result<Option<T>, DomXmlError> {
    el.get_attr(name)
        .map(|v| enum_value(v, format!("{path}/@{name}")))
        .transpose()
}

fn req_enum_attr<T: XmlValue>(el: &Element, path: &str, name: &str) -> Result<T, DomXmlError> {
    enum_value(req_attr(el, path, name)?, format!("{path}/@{name}"))
}

fn number<T: FromStr>(value: &str, path: String) -> Result<T, DomXmlError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(path, value, "a decimal integer in range"))
}

fn opt_num_attr<T: FromStr>(
    el: &Element,
    path: &str,
    name: &str,
) -> Result<Option<T>, DomXmlError> {
    el.get_attr(name)
        .map(|v| number(v, format!("{path}/@{name}")))
        .transpose()
}

fn req_num_attr<T: FromStr>(el: &Element, path: &str, name: &str) -> Result<T, DomXmlError> {
    number(req_attr(el, path, name)?, format!("{path}/@{name}"))
}

/// libvirt writes yes/no for most switches and on/off for others; both
/// spellings are accepted everywhere.
fn boolean(value: &str, path: String) -> Result<bool, DomXmlError> {
    match value {
        "yes" | "on" => Ok(true),
        "no" | "off" => Ok(false),
        _ => Err(invalid(path, value, "yes | no | on | off")),
    }
}

fn opt_bool_attr(el: &Element, path: &str, name: &str) -> Result<Option<bool>, DomXmlError> {
    el.get_attr(name)
        .map(|v| boolean(v, format!("{path}/@{name}")))
        .transpose()
}

/// Numbers in PCI addresses are hexadecimal with a `0x` prefix in libvirt's
/// output but decimal is accepted on input too.
fn pci_number<T: TryFrom<u32>>(el: &Element, path: &str, name: &str) -> Result<T, DomXmlError> {
    let raw = req_attr(el, path, name)?;
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => raw.parse::<u32>().ok(),
    };
    parsed
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| invalid(format!("{path}/@{name}"), raw, "a PCI address component"))
}

fn opt_text(el: &Element, name: &str) -> Option<String> {
    el.first_child(name).map(Element::text_content)
}

/// Converts a libvirt scaled memory value (an element's text, its unit in
/// the `unit` attribute) to KiB.
fn memory_kib(el: &Element, path: &str) -> Result<u64, DomXmlError> {
    scaled_kib(
        &el.text_content(),
        el.get_attr("unit"),
        path,
        &format!("{path}/@unit"),
    )
}

/// Converts a memory value in `unit` (KiB when absent) to KiB, rounding up
/// as libvirt does for values that are not whole KiB. `path` and
/// `unit_path` locate the value and the unit in errors.
fn scaled_kib(
    text: &str,
    unit: Option<&str>,
    path: &str,
    unit_path: &str,
) -> Result<u64, DomXmlError> {
    let value: u64 = number(text, path.to_string())?;
    let unit = unit.unwrap_or("KiB");
    let bytes_per_unit: u128 = match unit {
        "b" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(invalid(
                unit_path.to_string(),
                other,
                "a libvirt memory unit (b, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
            ))
        }
    };
    let kib = (u128::from(value) * bytes_per_unit).div_ceil(1024);
    u64::try_from(kib)
        .map_err(|_| invalid(path.to_string(), text, "a memory size that fits in 64 bits"))
}

pub(crate) fn domain(root: &Element) -> Result<Domain, DomXmlError> {
    if root.ns.is_some() || root.local != "domain" {
        return Err(DomXmlError::NotADomain {
            found: root.qname.clone(),
        });
    }
    let p = "domain";
    let domain_type = req_enum_attr(root, p, "type")?;
    let name = req_child(root, p, "name")?.text_content();

    let max_memory = root
        .first_child("maxMemory")
        .map(|el| -> Result<MaxMemory, DomXmlError> {
            let mp = "domain/maxMemory";
            Ok(MaxMemory {
                slots: req_num_attr(el, mp, "slots")?,
                kib: memory_kib(el, mp)?,
            })
        })
        .transpose()?;
    let memory = memory_kib(req_child(root, p, "memory")?, "domain/memory")?;
    let current_memory_kib = root
        .first_child("currentMemory")
        .map(|el| memory_kib(el, "domain/currentMemory"))
        .transpose()?;

    let vcpu_el = req_child(root, p, "vcpu")?;
    let vcpu = Vcpu {
        count: number(&vcpu_el.text_content(), "domain/vcpu".to_string())?,
        placement: opt_enum_attr(vcpu_el, "domain/vcpu", "placement")?,
        current: opt_num_attr(vcpu_el, "domain/vcpu", "current")?,
    };

    let sysinfo = root
        .children_named("sysinfo")
        .find(|s| s.get_attr("type") == Some("smbios"))
        .map(sysinfo);

    let features = root.first_child("features").map(features).transpose()?;

    let cpu = root.first_child("cpu").map(cpu).transpose()?;

    let clock = match root.first_child("clock") {
        Some(c) => opt_enum_attr(c, "domain/clock", "offset")?,
        None => None,
    };

    let lifecycle = |name: &str| -> Result<Option<LifecycleAction>, DomXmlError> {
        root.first_child(name)
            .map(|el| enum_value(el.text_content().trim(), format!("domain/{name}")))
            .transpose()
    };

    Ok(Domain {
        domain_type,
        name,
        uuid: opt_text(root, "uuid").map(|u| u.trim().to_string()),
        title: opt_text(root, "title"),
        description: opt_text(root, "description"),
        metadata: metadata(root)?,
        max_memory,
        memory_kib: memory,
        current_memory_kib,
        vcpu,
        sysinfo,
        os: os(req_child(root, p, "os")?)?,
        features: features.unwrap_or_default(),
        cpu,
        clock,
        on_poweroff: lifecycle("on_poweroff")?,
        on_reboot: lifecycle("on_reboot")?,
        on_crash: lifecycle("on_crash")?,
        devices: match root.first_child("devices") {
            Some(d) => devices(d)?,
            None => Devices::default(),
        },
    })
}

pub(crate) fn metadata(root: &Element) -> Result<Option<OrreryMetadata>, DomXmlError> {
    let Some(meta) = root.first_child("metadata") else {
        return Ok(None);
    };
    let ours = |e: &&Element| e.ns.as_deref() == Some(ORRERY_NS);
    let Some(instance) = meta.elements().filter(ours).find(|e| e.local == "instance") else {
        return Ok(None);
    };
    let field = |name: &str| {
        instance
            .elements()
            .filter(ours)
            .find(|e| e.local == name)
            .map(Element::text_content)
            .ok_or_else(|| missing_el("domain/metadata/instance", name))
    };
    Ok(Some(OrreryMetadata {
        instance_uuid: field("uuid")?.trim().to_string(),
        instance_name: field("name")?,
    }))
}

fn sysinfo(el: &Element) -> SysInfo {
    let mut s = SysInfo::default();
    if let Some(system) = el.first_child("system") {
        for entry in system.children_named("entry") {
            let slot = match entry.get_attr("name") {
                Some("manufacturer") => &mut s.manufacturer,
                Some("product") => &mut s.product,
                Some("version") => &mut s.version,
                Some("serial") => &mut s.serial,
                Some("uuid") => &mut s.uuid,
                Some("family") => &mut s.family,
                _ => continue,
            };
            *slot = Some(entry.text_content());
        }
    }
    s
}

fn os(el: &Element) -> Result<Os, DomXmlError> {
    let p = "domain/os";
    let ty = req_child(el, p, "type")?;
    let loader = el
        .first_child("loader")
        .map(|l| -> Result<Loader, DomXmlError> {
            let lp = "domain/os/loader";
            Ok(Loader {
                path: l.text_content(),
                readonly: opt_bool_attr(l, lp, "readonly")?,
                loader_type: opt_enum_attr(l, lp, "type")?,
                secure: opt_bool_attr(l, lp, "secure")?,
            })
        })
        .transpose()?;
    let nvram = el.first_child("nvram").map(|n| Nvram {
        path: n.text_content(),
        template: n.get_attr("template").map(str::to_string),
    });
    let smbios_mode = match el.first_child("smbios") {
        Some(s) => Some(req_enum_attr(s, "domain/os/smbios", "mode")?),
        None => None,
    };
    let boot = el
        .children_named("boot")
        .map(|b| req_enum_attr(b, "domain/os/boot", "dev"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Os {
        os_type: ty.text_content().trim().to_string(),
        arch: ty.get_attr("arch").map(str::to_string),
        machine: ty.get_attr("machine").map(str::to_string),
        loader,
        nvram,
        smbios_mode,
        boot,
    })
}

fn features(el: &Element) -> Result<Features, DomXmlError> {
    // A feature element without `state` means "on"; libvirt writes
    // `state='off'` to record an explicitly disabled one.
    let on = |name: &str| -> Result<bool, DomXmlError> {
        match el.first_child(name) {
            None => Ok(false),
            Some(f) => {
                Ok(opt_bool_attr(f, &format!("domain/features/{name}"), "state")?.unwrap_or(true))
            }
        }
    };
    Ok(Features {
        acpi: on("acpi")?,
        apic: on("apic")?,
        smm: on("smm")?,
    })
}

fn cpu(el: &Element) -> Result<Cpu, DomXmlError> {
    let p = "domain/cpu";
    let topology = el
        .first_child("topology")
        .map(|t| -> Result<CpuTopology, DomXmlError> {
            let tp = "domain/cpu/topology";
            Ok(CpuTopology {
                sockets: req_num_attr(t, tp, "sockets")?,
                cores: req_num_attr(t, tp, "cores")?,
                threads: req_num_attr(t, tp, "threads")?,
            })
        })
        .transpose()?;
    let numa = match el.first_child("numa") {
        Some(n) => n
            .children_named("cell")
            .enumerate()
            .map(|(i, c)| numa_cell(c, i))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(Cpu {
        // libvirt's default when the attribute is absent.
        mode: opt_enum_attr(el, p, "mode")?.unwrap_or(CpuMode::Custom),
        model: opt_text(el, "model").map(|m| m.trim().to_string()),
        topology,
        numa,
    })
}

fn numa_cell(el: &Element, index: usize) -> Result<NumaCell, DomXmlError> {
    let p = format!("domain/cpu/numa/cell[{index}]");
    let memory = req_attr(el, &p, "memory")?;
    Ok(NumaCell {
        // Cells without an id are numbered in document order, as libvirt
        // numbers them.
        id: match opt_num_attr(el, &p, "id")? {
            Some(id) => id,
            None => u32::try_from(index).unwrap_or(u32::MAX),
        },
        cpus: req_attr(el, &p, "cpus")?.to_string(),
        memory_kib: scaled_kib(
            memory,
            el.get_attr("unit"),
            &format!("{p}/@memory"),
            &format!("{p}/@unit"),
        )?,
    })
}

fn devices(el: &Element) -> Result<Devices, DomXmlError> {
    let mut d = Devices {
        emulator: opt_text(el, "emulator").map(|e| e.trim().to_string()),
        ..Devices::default()
    };
    for (i, child) in el.children_named("disk").enumerate() {
        d.disks
            .push(disk(child, &format!("domain/devices/disk[{i}]"))?);
    }
    for (i, child) in el.children_named("interface").enumerate() {
        d.interfaces
            .push(interface(child, &format!("domain/devices/interface[{i}]"))?);
    }
    for (i, child) in el.children_named("serial").enumerate() {
        d.serials
            .push(char_device(child, &format!("domain/devices/serial[{i}]"))?);
    }
    for (i, child) in el.children_named("console").enumerate() {
        d.consoles
            .push(char_device(child, &format!("domain/devices/console[{i}]"))?);
    }
    for (i, child) in el.children_named("channel").enumerate() {
        d.channels
            .push(channel(child, &format!("domain/devices/channel[{i}]"))?);
    }
    for (i, child) in el.children_named("input").enumerate() {
        let p = format!("domain/devices/input[{i}]");
        d.inputs.push(Input {
            input_type: req_enum_attr(child, &p, "type")?,
            bus: opt_enum_attr(child, &p, "bus")?,
        });
    }
    for (i, child) in el.children_named("tpm").enumerate() {
        d.tpms
            .push(tpm(child, &format!("domain/devices/tpm[{i}]"))?);
    }
    for (i, child) in el.children_named("graphics").enumerate() {
        d.graphics
            .push(graphics(child, &format!("domain/devices/graphics[{i}]"))?);
    }
    for (i, child) in el.children_named("video").enumerate() {
        let p = format!("domain/devices/video[{i}]");
        let model = req_child(child, &p, "model")?;
        let mp = format!("{p}/model");
        d.videos.push(Video {
            model: req_enum_attr(model, &mp, "type")?,
            vram_kib: opt_num_attr(model, &mp, "vram")?,
            heads: opt_num_attr(model, &mp, "heads")?,
        });
    }
    for (i, child) in el.children_named("hostdev").enumerate() {
        d.hostdevs
            .push(hostdev(child, &format!("domain/devices/hostdev[{i}]"))?);
    }
    if let Some(b) = el.first_child("memballoon") {
        let p = "domain/devices/memballoon";
        d.memballoon = Some(MemBalloon {
            model: req_enum_attr(b, p, "model")?,
            stats_period: match b.first_child("stats") {
                Some(s) => opt_num_attr(s, "domain/devices/memballoon/stats", "period")?,
                None => None,
            },
        });
    }
    for (i, child) in el.children_named("rng").enumerate() {
        let p = format!("domain/devices/rng[{i}]");
        let backend = req_child(child, &p, "backend")?;
        let bp = format!("{p}/backend");
        let backend_model = req_attr(backend, &bp, "model")?;
        if backend_model != "random" {
            return Err(invalid(format!("{bp}/@model"), backend_model, "random"));
        }
        let source = backend.text_content();
        d.rngs.push(Rng {
            model: req_enum_attr(child, &p, "model")?,
            source: (!source.trim().is_empty()).then(|| source.trim().to_string()),
        });
    }
    for (i, child) in el.children_named("memory").enumerate() {
        d.memories.push(memory_device(
            child,
            &format!("domain/devices/memory[{i}]"),
        )?);
    }
    Ok(d)
}

pub(crate) fn memory_device(el: &Element, p: &str) -> Result<MemoryDevice, DomXmlError> {
    // Other models (nvdimm, virtio-mem, ...) are different devices, not
    // modules of another size.
    let model = req_attr(el, p, "model")?;
    if model != "dimm" {
        return Err(invalid(format!("{p}/@model"), model, "dimm"));
    }
    let target = req_child(el, p, "target")?;
    let tp = format!("{p}/target");
    let size = req_child(target, &tp, "size")?;
    Ok(MemoryDevice {
        size_kib: memory_kib(size, &format!("{tp}/size"))?,
        node: target
            .first_child("node")
            .map(|n| number(&n.text_content(), format!("{tp}/node")))
            .transpose()?,
    })
}

fn disk(el: &Element, p: &str) -> Result<Disk, DomXmlError> {
    let disk_type: DiskType = req_enum_attr(el, p, "type")?;
    let driver = el
        .first_child("driver")
        .map(|drv| -> Result<DiskDriver, DomXmlError> {
            let dp = format!("{p}/driver");
            Ok(DiskDriver {
                name: drv.get_attr("name").map(str::to_string),
                format: opt_enum_attr(drv, &dp, "type")?,
                cache: opt_enum_attr(drv, &dp, "cache")?,
                discard: opt_enum_attr(drv, &dp, "discard")?,
            })
        })
        .transpose()?;
    let source_attr = match disk_type {
        DiskType::File => "file",
        DiskType::Block => "dev",
    };
    let source = el
        .first_child("source")
        .and_then(|s| s.get_attr(source_attr))
        .map(str::to_string);
    let target = req_child(el, p, "target")?;
    let tp = format!("{p}/target");
    let iotune = el
        .first_child("iotune")
        .map(|t| -> Result<IoTune, DomXmlError> {
            let ip = format!("{p}/iotune");
            let field = |name: &str| {
                t.first_child(name)
                    .map(|v| number(&v.text_content(), format!("{ip}/{name}")))
                    .transpose()
            };
            Ok(IoTune {
                total_bytes_sec: field("total_bytes_sec")?,
                read_bytes_sec: field("read_bytes_sec")?,
                write_bytes_sec: field("write_bytes_sec")?,
                total_iops_sec: field("total_iops_sec")?,
                read_iops_sec: field("read_iops_sec")?,
                write_iops_sec: field("write_iops_sec")?,
            })
        });
    Ok(Disk {
        disk_type,
        device: opt_enum_attr(el, p, "device")?.unwrap_or(DiskDevice::Disk),
        driver,
        source,
        target_dev: req_attr(target, &tp, "dev")?.to_string(),
        target_bus: req_enum_attr(target, &tp, "bus")?,
        serial: opt_text(el, "serial"),
        readonly: el.first_child("readonly").is_some(),
        boot_order: match el.first_child("boot") {
            Some(b) => Some(req_num_attr(b, &format!("{p}/boot"), "order")?),
            None => None,
        },
        iotune: iotune.transpose()?,
    })
}

fn interface(el: &Element, p: &str) -> Result<Interface, DomXmlError> {
    let kind = req_attr(el, p, "type")?;
    let src = req_child(el, p, "source")?;
    let sp = format!("{p}/source");
    let source = match kind {
        "network" => InterfaceSource::Network(req_attr(src, &sp, "network")?.to_string()),
        "bridge" => InterfaceSource::Bridge(req_attr(src, &sp, "bridge")?.to_string()),
        other => return Err(invalid(format!("{p}/@type"), other, "network | bridge")),
    };
    let mac = match el.first_child("mac") {
        Some(m) => Some(req_attr(m, &format!("{p}/mac"), "address")?.to_string()),
        None => None,
    };
    let model = match el.first_child("model") {
        Some(m) => Some(req_enum_attr(m, &format!("{p}/model"), "type")?),
        None => None,
    };
    let bandwidth = el
        .first_child("bandwidth")
        .map(|bw| -> Result<Bandwidth, DomXmlError> {
            let limit = |name: &str| -> Result<Option<BandwidthLimit>, DomXmlError> {
                let Some(l) = bw.first_child(name) else {
                    return Ok(None);
                };
                let lp = format!("{p}/bandwidth/{name}");
                Ok(Some(BandwidthLimit {
                    average: req_num_attr(l, &lp, "average")?,
                    peak: opt_num_attr(l, &lp, "peak")?,
                    burst: opt_num_attr(l, &lp, "burst")?,
                }))
            };
            Ok(Bandwidth {
                inbound: limit("inbound")?,
                outbound: limit("outbound")?,
            })
        })
        .transpose()?;
    Ok(Interface {
        source,
        mac,
        model,
        target_dev: el
            .first_child("target")
            .and_then(|t| t.get_attr("dev"))
            .map(str::to_string),
        bandwidth,
    })
}

fn char_device(el: &Element, p: &str) -> Result<CharDevice, DomXmlError> {
    let kind = req_attr(el, p, "type")?;
    let src = el.first_child("source");
    let sp = format!("{p}/source");
    let source = match kind {
        "file" => {
            let src = src.ok_or_else(|| missing_el(p, "source"))?;
            CharSource::File {
                path: req_attr(src, &sp, "path")?.to_string(),
                append: opt_bool_attr(src, &sp, "append")?,
            }
        }
        "pty" => CharSource::Pty {
            // A running domain's console may carry the tty both as
            // `<source path>` and as a `tty` attribute; the source wins.
            path: src
                .and_then(|s| s.get_attr("path"))
                .or_else(|| el.get_attr("tty"))
                .map(str::to_string),
        },
        other => return Err(invalid(format!("{p}/@type"), other, "file | pty")),
    };
    let target = el.first_child("target");
    Ok(CharDevice {
        source,
        target_type: target.and_then(|t| t.get_attr("type")).map(str::to_string),
        target_port: match target {
            Some(t) => opt_num_attr(t, &format!("{p}/target"), "port")?,
            None => None,
        },
    })
}

fn channel(el: &Element, p: &str) -> Result<Channel, DomXmlError> {
    let kind = req_attr(el, p, "type")?;
    if kind != "unix" {
        return Err(invalid(format!("{p}/@type"), kind, "unix"));
    }
    let target = req_child(el, p, "target")?;
    let tp = format!("{p}/target");
    let target_type = req_attr(target, &tp, "type")?;
    if target_type != "virtio" {
        return Err(invalid(format!("{tp}/@type"), target_type, "virtio"));
    }
    let src = el.first_child("source");
    Ok(Channel {
        source_mode: match src {
            Some(s) => opt_enum_attr(s, &format!("{p}/source"), "mode")?,
            None => None,
        },
        source_path: src.and_then(|s| s.get_attr("path")).map(str::to_string),
        target_name: req_attr(target, &tp, "name")?.to_string(),
    })
}

fn tpm(el: &Element, p: &str) -> Result<Tpm, DomXmlError> {
    let backend = req_child(el, p, "backend")?;
    let bp = format!("{p}/backend");
    let kind = req_attr(backend, &bp, "type")?;
    if kind != "emulator" {
        return Err(invalid(format!("{bp}/@type"), kind, "emulator"));
    }
    Ok(Tpm {
        model: opt_enum_attr(el, p, "model")?.unwrap_or(TpmModel::TpmTis),
        version: opt_enum_attr(backend, &bp, "version")?,
    })
}

fn graphics(el: &Element, p: &str) -> Result<Graphics, DomXmlError> {
    let kind = req_attr(el, p, "type")?;
    if kind != "vnc" {
        return Err(invalid(format!("{p}/@type"), kind, "vnc"));
    }
    // The `<listen type='address'>` child is authoritative in current
    // libvirt; the attribute is kept for compatibility with old readers.
    let listen = el
        .children_named("listen")
        .find(|l| l.get_attr("type") == Some("address"))
        .and_then(|l| l.get_attr("address"))
        .or_else(|| el.get_attr("listen"))
        .map(str::to_string);
    Ok(Graphics {
        port: opt_num_attr(el, p, "port")?,
        autoport: opt_bool_attr(el, p, "autoport")?.unwrap_or(false),
        listen,
        passwd: el.get_attr("passwd").map(str::to_string),
    })
}

fn hostdev(el: &Element, p: &str) -> Result<Hostdev, DomXmlError> {
    let mode = el.get_attr("mode").unwrap_or("subsystem");
    if mode != "subsystem" {
        return Err(invalid(format!("{p}/@mode"), mode, "subsystem"));
    }
    let kind = req_attr(el, p, "type")?;
    let source = req_child(el, p, "source")?;
    let sp = format!("{p}/source");
    let address = req_child(source, &sp, "address")?;
    let ap = format!("{sp}/address");
    match kind {
        "pci" => Ok(Hostdev::Pci {
            address: PciAddress {
                domain: pci_number(address, &ap, "domain")?,
                bus: pci_number(address, &ap, "bus")?,
                slot: pci_number(address, &ap, "slot")?,
                function: pci_number(address, &ap, "function")?,
            },
            managed: opt_bool_attr(el, p, "managed")?.unwrap_or(false),
        }),
        "mdev" => Ok(Hostdev::Mdev {
            uuid: req_attr(address, &ap, "uuid")?.to_string(),
            model: req_enum_attr(el, p, "model")?,
        }),
        other => Err(invalid(format!("{p}/@type"), other, "pci | mdev")),
    }
}
