//! Property: any model renders to XML that parses back to the same model.

use orrery_agent::domxml::Rng;
use orrery_agent::domxml::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

/// Free text as it may appear in names, titles, paths and passwords:
/// markup characters, quotes, whitespace (including CR and tab) and
/// non-ASCII. XML cannot carry control characters, so none are generated.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./-]{0,16}",
        "[<>&\"' \t\r\na-z]{0,12}",
        "\\PC{0,12}",
        Just("]]>".to_string()),
    ]
}

/// Values the parser trims (identifiers, numbers as text, paths in leaf
/// elements whose surrounding whitespace is insignificant).
fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_.:-]{1,16}"
}

fn xml_enum<T: XmlValue + std::fmt::Debug>() -> impl Strategy<Value = T> {
    proptest::sample::select(T::ALL)
}

fn os() -> BoxedStrategy<Os> {
    (
        token(),
        of(text()),
        of(text()),
        of((text(), of(any::<bool>()), of(xml_enum()), of(any::<bool>()))),
        of((text(), of(text()))),
        of(xml_enum()),
        vec(xml_enum(), 0..3),
    )
        .prop_map(
            |(os_type, arch, machine, loader, nvram, smbios_mode, boot)| Os {
                os_type,
                arch,
                machine,
                loader: loader.map(|(path, readonly, loader_type, secure)| Loader {
                    path,
                    readonly,
                    loader_type,
                    secure,
                }),
                nvram: nvram.map(|(path, template)| Nvram { path, template }),
                smbios_mode,
                boot,
            },
        )
        .boxed()
}

fn sysinfo() -> BoxedStrategy<SysInfo> {
    (
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(text()),
        of(text()),
    )
        .prop_map(
            |(manufacturer, product, version, serial, uuid, family)| SysInfo {
                manufacturer,
                product,
                version,
                serial,
                uuid,
                family,
            },
        )
        .boxed()
}

fn numa_cell() -> BoxedStrategy<NumaCell> {
    (any::<u32>(), text(), any::<u64>())
        .prop_map(|(id, cpus, memory_kib)| NumaCell {
            id,
            cpus,
            memory_kib,
        })
        .boxed()
}

fn cpu() -> BoxedStrategy<Cpu> {
    (
        xml_enum(),
        of(token()),
        of((any::<u32>(), any::<u32>(), any::<u32>())),
        vec(numa_cell(), 0..3),
    )
        .prop_map(|(mode, model, topology, numa)| Cpu {
            mode,
            model,
            topology: topology.map(|(sockets, cores, threads)| CpuTopology {
                sockets,
                cores,
                threads,
            }),
            numa,
        })
        .boxed()
}

fn iotune() -> BoxedStrategy<IoTune> {
    (
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
    )
        .prop_map(|(a, b, c, d, e, f)| IoTune {
            total_bytes_sec: a,
            read_bytes_sec: b,
            write_bytes_sec: c,
            total_iops_sec: d,
            read_iops_sec: e,
            write_iops_sec: f,
        })
        .boxed()
}

fn disk() -> BoxedStrategy<Disk> {
    (
        (
            xml_enum(),
            xml_enum(),
            of((of(text()), of(xml_enum()), of(xml_enum()), of(xml_enum()))),
            of(text()),
        ),
        (
            text(),
            xml_enum(),
            of(text()),
            any::<bool>(),
            of(any::<u32>()),
            of(iotune()),
        ),
    )
        .prop_map(
            |(
                (disk_type, device, driver, source),
                (target_dev, target_bus, serial, readonly, boot_order, iotune),
            )| Disk {
                disk_type,
                device,
                driver: driver.map(|(name, format, cache, discard)| DiskDriver {
                    name,
                    format,
                    cache,
                    discard,
                }),
                source,
                target_dev,
                target_bus,
                serial,
                readonly,
                boot_order,
                iotune,
            },
        )
        .boxed()
}

fn bandwidth_limit() -> BoxedStrategy<BandwidthLimit> {
    (any::<u64>(), of(any::<u64>()), of(any::<u64>()))
        .prop_map(|(average, peak, burst)| BandwidthLimit {
            average,
            peak,
            burst,
        })
        .boxed()
}

fn interface() -> BoxedStrategy<Interface> {
    (
        prop_oneof![
            text().prop_map(InterfaceSource::Network),
            text().prop_map(InterfaceSource::Bridge),
        ],
        of(text()),
        of(xml_enum()),
        of(text()),
        of((of(bandwidth_limit()), of(bandwidth_limit()))),
    )
        .prop_map(|(source, mac, model, target_dev, bandwidth)| Interface {
            source,
            mac,
            model,
            target_dev,
            bandwidth: bandwidth.map(|(inbound, outbound)| Bandwidth { inbound, outbound }),
        })
        .boxed()
}

fn char_device() -> BoxedStrategy<CharDevice> {
    (
        prop_oneof![
            (text(), of(any::<bool>()))
                .prop_map(|(path, append)| CharSource::File { path, append }),
            of(text()).prop_map(|path| CharSource::Pty { path }),
        ],
        of(text()),
        of(any::<u32>()),
    )
        .prop_map(|(source, target_type, target_port)| CharDevice {
            source,
            target_type,
            target_port,
        })
        .boxed()
}

fn hostdev() -> BoxedStrategy<Hostdev> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(domain, bus, slot, function, managed)| Hostdev::Pci {
                address: PciAddress {
                    domain,
                    bus,
                    slot,
                    function
                },
                managed
            }),
        (text(), xml_enum()).prop_map(|(uuid, model)| Hostdev::Mdev { uuid, model }),
    ]
    .boxed()
}

fn devices() -> BoxedStrategy<Devices> {
    (
        (
            of(token()),
            vec(disk(), 0..4),
            vec(interface(), 0..3),
            vec(char_device(), 0..2),
            vec(char_device(), 0..2),
            vec(
                (of(xml_enum()), of(text()), text()).prop_map(
                    |(source_mode, source_path, target_name)| Channel {
                        source_mode,
                        source_path,
                        target_name,
                    },
                ),
                0..2,
            ),
        ),
        (
            vec(
                (xml_enum(), of(xml_enum()))
                    .prop_map(|(input_type, bus)| Input { input_type, bus }),
                0..3,
            ),
            vec(
                (xml_enum(), of(xml_enum())).prop_map(|(model, version)| Tpm { model, version }),
                0..2,
            ),
            vec(
                (of(any::<i32>()), any::<bool>(), of(text()), of(text())).prop_map(
                    |(port, autoport, listen, passwd)| Graphics {
                        port,
                        autoport,
                        listen,
                        passwd,
                    },
                ),
                0..2,
            ),
            vec(
                (xml_enum(), of(any::<u32>()), of(any::<u32>())).prop_map(
                    |(model, vram_kib, heads)| Video {
                        model,
                        vram_kib,
                        heads,
                    },
                ),
                0..2,
            ),
            vec(hostdev(), 0..3),
            of(
                (xml_enum(), of(any::<u32>())).prop_map(|(model, stats_period)| MemBalloon {
                    model,
                    stats_period,
                }),
            ),
            vec(
                (xml_enum(), of(token())).prop_map(|(model, source)| Rng { model, source }),
                0..2,
            ),
            vec(
                (any::<u64>(), of(any::<u32>()))
                    .prop_map(|(size_kib, node)| MemoryDevice { size_kib, node }),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(
                (emulator, disks, interfaces, serials, consoles, channels),
                (inputs, tpms, graphics, videos, hostdevs, memballoon, rngs, memories),
            )| Devices {
                emulator,
                disks,
                interfaces,
                serials,
                consoles,
                channels,
                inputs,
                tpms,
                graphics,
                videos,
                hostdevs,
                memballoon,
                rngs,
                memories,
                extra: Vec::new(),
            },
        )
        .boxed()
}

fn domain() -> BoxedStrategy<Domain> {
    (
        (
            xml_enum(),
            text(),
            of(token()),
            of(text()),
            of(text()),
            of((token(), text())),
            of((any::<u32>(), any::<u64>())),
            any::<u64>(),
            of(any::<u64>()),
        ),
        (
            (any::<u32>(), of(xml_enum()), of(any::<u32>())),
            of(sysinfo()),
            os(),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            of(cpu()),
            of(xml_enum()),
            (of(xml_enum()), of(xml_enum()), of(xml_enum())),
            devices(),
        ),
    )
        .prop_map(
            |(
                (
                    domain_type,
                    name,
                    uuid,
                    title,
                    description,
                    metadata,
                    max_memory,
                    memory_kib,
                    current,
                ),
                (
                    (count, placement, vcpu_current),
                    sysinfo,
                    os,
                    (acpi, apic, smm),
                    cpu,
                    clock,
                    (on_poweroff, on_reboot, on_crash),
                    devices,
                ),
            )| Domain {
                domain_type,
                name,
                uuid,
                title,
                description,
                metadata: metadata.map(|(instance_uuid, instance_name)| OrreryMetadata {
                    instance_uuid,
                    instance_name,
                }),
                max_memory: max_memory.map(|(slots, kib)| MaxMemory { slots, kib }),
                memory_kib,
                current_memory_kib: current,
                vcpu: Vcpu {
                    count,
                    placement,
                    current: vcpu_current,
                },
                sysinfo,
                os,
                features: Features { acpi, apic, smm },
                cpu,
                clock,
                on_poweroff,
                on_reboot,
                on_crash,
                devices,
            },
        )
        .boxed()
}

/// Elements outside the model, as an administrator might add them.
fn unknown_fragment() -> impl Strategy<Value = XmlFragment> {
    proptest::sample::select(vec![
        "<watchdog model='i6300esb' action='reset'/>",
        "<panic model='isa'><address type='isa' iobase='0x505'/></panic>",
        "<sound model='ich9'/>",
        "<vsock model='virtio'><cid auto='yes'/></vsock>",
    ])
    .prop_map(|s| XmlFragment::new(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn render_then_parse_is_identity(d in domain()) {
        let xml = d.to_xml();
        let parsed = Domain::from_xml(&xml)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(parsed, d);
    }

    #[test]
    fn unknown_extra_elements_are_skipped_on_the_way_back(
        d in domain(),
        extra in vec(unknown_fragment(), 1..4),
    ) {
        let mut with_extra = d.clone();
        with_extra.devices.extra = extra;
        let xml = with_extra.to_xml();
        prop_assert_eq!(Domain::from_xml(&xml).unwrap(), d);
        prop_assert_eq!(orrery_metadata(&xml).unwrap(), with_extra.metadata);
    }
}
