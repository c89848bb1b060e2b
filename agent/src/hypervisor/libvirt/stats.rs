//! Domain statistics through libvirt's bulk call,
//! `virConnectGetAllDomainStats`: one round trip for every active domain.
//!
//! The call is made through `virt-sys` rather than the `virt` crate's
//! `Connect::all_domain_stats`: that wrapper frees only the array and
//! exposes the records as raw pointers that nothing frees, so every pass
//! would leak the records, their parameters and a reference to each
//! domain. Here the list is owned by [`StatsList`] and released with
//! libvirt's own `virDomainStatsRecordListFree`.
//!
//! libvirt reports statistics as a flat list of typed parameters
//! (`cpu.time`, `net.0.rx.bytes`, `block.1.path`, ...); they are copied
//! into [`Param`]s and interpreted by [`counters_from_params`], which needs
//! no libvirt and is tested on its own.

use std::collections::BTreeMap;
use std::ffi::{c_int, CStr};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

use super::{flags_unsupported, map_err, Subject};
use crate::domxml;
use crate::hypervisor::{
    codes, DiskCounters, DomainCounters, HvError, MemoryCounters, NicCounters,
};

/// One typed parameter's value, in libvirt's typed-parameter types.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

impl ParamValue {
    /// Counters are unsigned; libvirt uses several integer types for them
    /// over its versions. A negative or non-integer value is no counter.
    fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(v) => u64::try_from(v).ok(),
            ParamValue::UInt(v) => Some(u64::from(v)),
            ParamValue::LLong(v) => u64::try_from(v).ok(),
            ParamValue::ULLong(v) => Some(v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A named statistic, as libvirt's typed-parameter list holds it.
pub type Param = (String, ParamValue);

/// Interprets the statistics of one domain. Unknown names, values of
/// unexpected types and the per-vCPU and latency details are ignored;
/// NICs and disks come out in libvirt's index order. Backing-chain images
/// (reported only when asked for, after the disk's top image and under the
/// same target) are left out: they are not what the guest sees.
/// `backingIndex` cannot tell them apart, since with `-blockdev` the top
/// image has a non-zero index too.
///
/// `name` and the fields that need more than the statistics (instance
/// uuid, run id, MACs) are the caller's to fill.
pub fn counters_from_params(name: &str, params: &[Param]) -> DomainCounters {
    let mut c = DomainCounters {
        name: name.to_string(),
        ..DomainCounters::default()
    };
    let mut memory = MemoryCounters::default();
    let mut nics: BTreeMap<usize, NicCounters> = BTreeMap::new();
    let mut disks: BTreeMap<usize, DiskCounters> = BTreeMap::new();
    let mut physical: BTreeMap<usize, u64> = BTreeMap::new();
    for (key, value) in params {
        let num = value.as_u64();
        match key.as_str() {
            "cpu.time" => c.cpu_time_ns = num,
            "vcpu.current" => c.vcpus = num.and_then(|n| u32::try_from(n).ok()),
            "balloon.current" => memory.current_kib = num.unwrap_or(0),
            "balloon.maximum" => memory.maximum_kib = num.unwrap_or(0),
            "balloon.unused" => memory.unused_kib = num.unwrap_or(0),
            "balloon.rss" => memory.rss_kib = num.unwrap_or(0),
            _ => {
                if let Some((i, field)) = indexed(key, "net.") {
                    let nic = nics.entry(i).or_default();
                    match field {
                        "name" => nic.device = value.as_str().unwrap_or_default().to_string(),
                        "rx.bytes" => nic.rx_bytes = num.unwrap_or(0),
                        "tx.bytes" => nic.tx_bytes = num.unwrap_or(0),
                        "rx.pkts" => nic.rx_packets = num.unwrap_or(0),
                        "tx.pkts" => nic.tx_packets = num.unwrap_or(0),
                        _ => {}
                    }
                } else if let Some((i, field)) = indexed(key, "block.") {
                    let disk = disks.entry(i).or_default();
                    match field {
                        "name" => disk.target = value.as_str().unwrap_or_default().to_string(),
                        "path" => disk.path = value.as_str().map(str::to_string),
                        "rd.bytes" => disk.read_bytes = num.unwrap_or(0),
                        "wr.bytes" => disk.write_bytes = num.unwrap_or(0),
                        "rd.reqs" => disk.read_ops = num.unwrap_or(0),
                        "wr.reqs" => disk.write_ops = num.unwrap_or(0),
                        "allocation" => disk.allocation_bytes = num.unwrap_or(0),
                        "capacity" => disk.capacity_bytes = num.unwrap_or(0),
                        "physical" => {
                            if let Some(n) = num {
                                physical.insert(i, n);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    // `allocation` is the highest offset written since QEMU opened the
    // image, 0 for an image only read so far; `physical` is what the image
    // takes on the host (a file's size, a device's), which is what the
    // allocation figure is meant to say.
    for (i, bytes) in physical {
        if let Some(d) = disks.get_mut(&i) {
            d.allocation_bytes = bytes;
        }
    }
    c.memory = memory;
    c.nics = nics.into_values().collect();
    let mut seen = std::collections::HashSet::new();
    c.disks = disks
        .into_values()
        .filter(|d| d.target.is_empty() || seen.insert(d.target.clone()))
        .collect();
    c
}

/// Splits `net.3.rx.bytes` into (3, "rx.bytes") for `prefix` "net.";
/// `net.count` and other unindexed names give None.
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    let (index, field) = rest.split_once('.')?;
    Some((index.parse().ok()?, field))
}

/// Puts MACs on the NICs whose host devices the domain's live definition
/// names; the others keep `mac: None`.
pub fn attach_macs(nics: &mut [NicCounters], devices: &[domxml::NicDevice]) {
    for nic in nics {
        nic.mac = devices
            .iter()
            .find(|d| d.device == nic.device)
            .map(|d| d.mac.to_ascii_lowercase());
    }
}

/// The list `virConnectGetAllDomainStats` returns, freed with libvirt's
/// own function.
struct StatsList {
    records: *mut sys::virDomainStatsRecordPtr,
    len: usize,
}

impl StatsList {
    fn fetch(conn: &Connect, stats: u32, flags: u32) -> Result<StatsList, VirtError> {
        let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
        // SAFETY: `conn` holds a live connection for the duration of the
        // call; libvirt allocates the list and stores it in `records`,
        // which is then owned by the returned value.
        let n =
            unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut records, flags) };
        if n < 0 {
            return Err(VirtError::last_error());
        }
        Ok(StatsList {
            records,
            len: n as usize,
        })
    }

    fn records(&self) -> impl Iterator<Item = &sys::virDomainStatsRecord> {
        (0..self.len).filter_map(move |i| {
            // SAFETY: libvirt returned `len` record pointers, each valid
            // until the list is freed, which borrowing `self` prevents.
            unsafe { (*self.records.add(i)).as_ref() }
        })
    }
}

impl Drop for StatsList {
    fn drop(&mut self) {
        if !self.records.is_null() {
            // SAFETY: the list came from virConnectGetAllDomainStats and is
            // freed once, here; this releases every record, its parameters
            // and its domain reference.
            unsafe { sys::virDomainStatsRecordListFree(self.records) };
        }
    }
}

/// Copies a record's typed parameters.
///
/// # Safety
/// `params` must point to `n` initialised typed parameters (or be null
/// with `n` 0) that stay valid during the call.
unsafe fn read_params(params: *const sys::virTypedParameter, n: c_int) -> Vec<Param> {
    if params.is_null() || n <= 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `n` initialised parameters at `params`,
    // valid for the whole call.
    let params = unsafe { std::slice::from_raw_parts(params, n as usize) };
    params
        .iter()
        .filter_map(|p| {
            // The name is NUL-terminated within its fixed-size buffer.
            let field = p.field.map(|c| c as u8);
            let name = CStr::from_bytes_until_nul(&field).ok()?.to_str().ok()?;
            // SAFETY: `type_` says which member of the value union libvirt
            // wrote, and only that member is read; a string member is a
            // NUL-terminated C string owned by the record, checked for null.
            let value = unsafe {
                match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => ParamValue::Int(p.value.i),
                    sys::VIR_TYPED_PARAM_UINT => ParamValue::UInt(p.value.ui),
                    sys::VIR_TYPED_PARAM_LLONG => ParamValue::LLong(p.value.l),
                    sys::VIR_TYPED_PARAM_ULLONG => ParamValue::ULLong(p.value.ul),
                    sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Double(p.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Boolean(p.value.b != 0),
                    sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                        ParamValue::String(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                    }
                    _ => return None,
                }
            };
            Some((name.to_string(), value))
        })
        .collect()
}

/// The statistics groups asked for; per-vCPU times come with `VCPU` but
/// are not used.
fn stat_groups(disks: bool) -> u32 {
    let mut groups = sys::VIR_DOMAIN_STATS_CPU_TOTAL
        | sys::VIR_DOMAIN_STATS_BALLOON
        | sys::VIR_DOMAIN_STATS_VCPU
        | sys::VIR_DOMAIN_STATS_INTERFACE;
    if disks {
        groups |= sys::VIR_DOMAIN_STATS_BLOCK;
    }
    groups
}

/// One pass over every active domain, blocking.
pub(super) fn domain_counters_blocking(
    conn: &Connect,
    disks: bool,
) -> Result<Vec<DomainCounters>, HvError> {
    let groups = stat_groups(disks);
    let active = sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE;
    // NOWAIT: a domain busy with a long job (a migration, a snapshot)
    // reports what it can at once instead of holding up the whole pass.
    let list = StatsList::fetch(
        conn,
        groups,
        active | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
    )
    .or_else(|e| {
        if flags_unsupported(&e) {
            StatsList::fetch(conn, groups, active)
        } else {
            Err(e)
        }
    })
    .map_err(|e| map_err(e, Subject::Other))?;
    let mut out = Vec::with_capacity(list.len);
    for record in list.records() {
        // SAFETY: the record's domain is a live reference held by the list;
        // taking another one gives `Domain` its own to release on drop.
        let dom = unsafe {
            if record.dom.is_null() || sys::virDomainRef(record.dom) < 0 {
                continue;
            }
            Domain::from_ptr(record.dom)
        };
        // SAFETY: the list, and so the parameters, outlive this call.
        let params = unsafe { read_params(record.params, record.nparams) };
        let name = dom.name().map_err(|e| map_err(e, Subject::Other))?;
        let mut counters = counters_from_params(&name, &params);
        counters.run_id = dom.id();
        match dom.xml_desc(0) {
            Ok(xml) => {
                counters.instance_uuid = domxml::orrery_metadata(&xml)
                    .ok()
                    .flatten()
                    .map(|m| m.instance_uuid);
                match domxml::nic_devices(&xml) {
                    Ok(devices) => attach_macs(&mut counters.nics, &devices),
                    Err(e) => {
                        tracing::debug!(domain = %name, error = %e, "no NIC devices in the domain XML")
                    }
                }
            }
            // Stopped and gone since the statistics were read.
            Err(e) if e.code().to_raw() as i32 == codes::NO_DOMAIN => continue,
            // Still worth reporting, though it cannot be attributed to an
            // instance.
            Err(e) => {
                tracing::warn!(domain = %name, error = %e, "could not read the domain XML for its statistics")
            }
        }
        out.push(counters);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: ParamValue) -> Param {
        (name.to_string(), value)
    }

    fn s(name: &str, value: &str) -> Param {
        p(name, ParamValue::String(value.to_string()))
    }

    fn u(name: &str, value: u64) -> Param {
        p(name, ParamValue::ULLong(value))
    }

    /// What libvirt 9 with QEMU reports for a running guest with one NIC
    /// and one disk (per-vCPU and latency details trimmed).
    fn running_guest() -> Vec<Param> {
        vec![
            p("state.state", ParamValue::Int(1)),
            u("cpu.time", 12_345_678_901),
            u("cpu.user", 9_000_000_000),
            u("cpu.system", 3_000_000_000),
            u("balloon.current", 262_144),
            u("balloon.maximum", 262_144),
            u("balloon.unused", 180_000),
            u("balloon.available", 240_000),
            u("balloon.rss", 150_000),
            p("vcpu.current", ParamValue::UInt(2)),
            p("vcpu.maximum", ParamValue::UInt(2)),
            p("vcpu.0.state", ParamValue::Int(1)),
            u("vcpu.0.time", 5_000_000_000),
            p("net.count", ParamValue::UInt(1)),
            s("net.0.name", "vnet7"),
            u("net.0.rx.bytes", 4_096),
            u("net.0.rx.pkts", 40),
            u("net.0.rx.errs", 0),
            u("net.0.tx.bytes", 2_048),
            u("net.0.tx.pkts", 20),
            p("block.count", ParamValue::UInt(1)),
            s("block.0.name", "vda"),
            s(
                "block.0.path",
                "/var/lib/orrery/primary/0c5f7d1e-aaaa-bbbb-cccc-000000000001.qcow2",
            ),
            p("block.0.backingIndex", ParamValue::UInt(2)),
            u("block.0.rd.reqs", 300),
            u("block.0.rd.bytes", 9_000_000),
            u("block.0.rd.times", 1_000_000),
            u("block.0.wr.reqs", 10),
            u("block.0.wr.bytes", 40_960),
            u("block.0.allocation", 5_000_000),
            u("block.0.capacity", 64 << 20),
            u("block.0.physical", 5_200_000),
        ]
    }

    #[test]
    fn parses_a_running_guest() {
        let c = counters_from_params("i-2-1-VM", &running_guest());
        assert_eq!(
            c,
            DomainCounters {
                name: "i-2-1-VM".into(),
                instance_uuid: None,
                run_id: None,
                cpu_time_ns: Some(12_345_678_901),
                vcpus: Some(2),
                memory: MemoryCounters {
                    current_kib: 262_144,
                    maximum_kib: 262_144,
                    unused_kib: 180_000,
                    rss_kib: 150_000,
                },
                nics: vec![NicCounters {
                    device: "vnet7".into(),
                    mac: None,
                    rx_bytes: 4_096,
                    tx_bytes: 2_048,
                    rx_packets: 40,
                    tx_packets: 20,
                }],
                disks: vec![DiskCounters {
                    target: "vda".into(),
                    path: Some(
                        "/var/lib/orrery/primary/0c5f7d1e-aaaa-bbbb-cccc-000000000001.qcow2".into()
                    ),
                    read_bytes: 9_000_000,
                    write_bytes: 40_960,
                    read_ops: 300,
                    write_ops: 10,
                    allocation_bytes: 5_200_000,
                    capacity_bytes: 64 << 20,
                }],
            }
        );
    }

    #[test]
    fn missing_groups_leave_defaults() {
        // A paused guest without a balloon driver, statistics of other
        // groups not asked for.
        let c = counters_from_params(
            "d",
            &[u("cpu.time", 5), p("vcpu.current", ParamValue::UInt(1))],
        );
        assert_eq!(c.cpu_time_ns, Some(5));
        assert_eq!(c.vcpus, Some(1));
        assert_eq!(c.memory, MemoryCounters::default());
        assert!(c.nics.is_empty() && c.disks.is_empty());

        let c = counters_from_params("d", &[]);
        assert_eq!(c.cpu_time_ns, None);
        assert_eq!(c.vcpus, None);
    }

    #[test]
    fn other_integer_types_and_bad_values() {
        let c = counters_from_params(
            "d",
            &[
                p("cpu.time", ParamValue::LLong(-1)),
                p("vcpu.current", ParamValue::Int(4)),
                p("balloon.current", ParamValue::UInt(1024)),
                p("balloon.rss", ParamValue::Double(3.5)),
                p("net.x.rx.bytes", ParamValue::ULLong(1)),
                p("net.count", ParamValue::UInt(3)),
                s("balloon.unused", "lots"),
            ],
        );
        assert_eq!(c.cpu_time_ns, None);
        assert_eq!(c.vcpus, Some(4));
        assert_eq!(c.memory.current_kib, 1024);
        assert_eq!(c.memory.rss_kib, 0);
        assert_eq!(c.memory.unused_kib, 0);
        assert!(c.nics.is_empty());
    }

    #[test]
    fn devices_in_index_order_without_backing_chain() {
        let c = counters_from_params(
            "d",
            &[
                s("net.1.name", "vnet9"),
                u("net.1.rx.bytes", 2),
                s("net.0.name", "vnet8"),
                u("net.0.rx.bytes", 1),
                s("block.0.name", "vda"),
                s("block.0.path", "/top.qcow2"),
                s("block.1.name", "vda"),
                s("block.1.path", "/template.qcow2"),
                p("block.1.backingIndex", ParamValue::UInt(1)),
                // The top image's index is not 0 under -blockdev.
                p("block.0.backingIndex", ParamValue::UInt(3)),
                u("block.1.rd.bytes", 77),
                // An empty CD-ROM drive has no path.
                s("block.2.name", "hdc"),
                s("block.3.name", "vdb"),
                s("block.3.path", "/data.qcow2"),
                u("block.3.wr.bytes", 5),
                // Without `physical`, the highest written offset stands.
                u("block.3.allocation", 9),
            ],
        );
        let nics: Vec<_> = c
            .nics
            .iter()
            .map(|n| (n.device.as_str(), n.rx_bytes))
            .collect();
        assert_eq!(nics, [("vnet8", 1), ("vnet9", 2)]);
        let disks: Vec<_> = c
            .disks
            .iter()
            .map(|d| {
                (
                    d.target.as_str(),
                    d.path.as_deref(),
                    d.write_bytes,
                    d.allocation_bytes,
                )
            })
            .collect();
        assert_eq!(
            disks,
            [
                ("vda", Some("/top.qcow2"), 0, 0),
                ("hdc", None, 0, 0),
                ("vdb", Some("/data.qcow2"), 5, 9)
            ]
        );
    }

    #[test]
    fn macs_come_from_the_live_definition() {
        let mut c = counters_from_params(
            "d",
            &[s("net.0.name", "vnet8"), s("net.1.name", "macvtap0")],
        );
        attach_macs(
            &mut c.nics,
            &[domxml::NicDevice {
                device: "vnet8".into(),
                mac: "52:54:00:AB:CD:EF".into(),
            }],
        );
        assert_eq!(c.nics[0].mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(c.nics[1].mac, None);
    }
}
