//! Facts about this host that need no hypervisor connection: its name, the
//! address the coordinator should reach it at, free space of a directory,
//! the UEFI firmware descriptors installed with QEMU, whether `/dev/kvm`
//! creates VMs ([`kvm`]) and whether QEMU can reach primary storage
//! ([`qemu_access`]).
//!
//! Readers of files take a root directory (normally `/`) so tests can point
//! them at fixtures.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::Deserialize;

pub mod gpu;
pub mod kvm;
pub mod qemu_access;

/// The host's name as the kernel knows it.
pub fn hostname() -> io::Result<String> {
    let name = nix::unistd::gethostname().map_err(io::Error::from)?;
    name.into_string()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "host name is not UTF-8"))
}

/// The interface of the IPv4 default route in a `/proc/net/route` table
/// (the one with the lowest metric when there are several).
pub fn default_route_interface(route_table: &str) -> Option<String> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (iface, dest, flags, metric, mask) =
                (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
            (up && *dest == "00000000" && *mask == "00000000")
                .then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), iface.to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The IPv4 address this host is reached at: the first address of the
/// default route's interface, or else the first global address of any
/// interface that is up. `root` is where `proc/net/route` is read from.
pub fn primary_ipv4(root: &Path) -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string(root.join("proc/net/route")).unwrap_or_default();
    let iface = default_route_interface(&table);
    let addrs: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect();
    choose_primary(iface.as_deref(), &addrs)
}

fn choose_primary(default_iface: Option<&str>, addrs: &[(String, Ipv4Addr)]) -> Option<Ipv4Addr> {
    let usable = |ip: &Ipv4Addr| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified();
    default_iface
        .and_then(|want| {
            addrs
                .iter()
                .find(|(name, ip)| name == want && usable(ip))
                .map(|(_, ip)| *ip)
        })
        .or_else(|| addrs.iter().map(|(_, ip)| *ip).find(usable))
}

/// [`primary_ipv4`] as an [`IpAddr`].
pub fn primary_ip(root: &Path) -> Option<IpAddr> {
    primary_ipv4(root).map(IpAddr::V4)
}

/// Every address of every interface that is up, with the interface's name.
pub fn interface_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let sa = a.address?;
            let ip = match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
                (Some(v4), _) => IpAddr::V4(v4.ip()),
                (None, Some(v6)) => IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some((a.interface_name, ip))
        })
        .collect()
}

/// The most addresses a coordinator writes into a host certificate.
pub const MAX_CERT_ADDRESSES: usize = 16;

/// Bridges the hypervisor makes for guest networks (libvirt's default
/// network, the agent's own): their addresses are the guests' gateways,
/// never where another host reaches this one.
const GUEST_BRIDGE_PREFIXES: [&str; 2] = ["virbr", "orrbr-"];

/// Pure: the addresses a host asks its certificate to name, the address it
/// is reached at (`first`, configured or detected) before the others peers
/// might dial; loopback, link-local, unspecified and guest-bridge addresses
/// are left out, each address once, at most `limit`.
pub fn peer_addresses(first: Option<&str>, all: &[(String, IpAddr)], limit: usize) -> Vec<String> {
    let usable = |ip: &IpAddr| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                // fe80::/10
                IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
            }
    };
    let mut out: Vec<String> = first.map(str::to_string).into_iter().collect();
    for (iface, ip) in all {
        if GUEST_BRIDGE_PREFIXES.iter().any(|p| iface.starts_with(p)) || !usable(ip) {
            continue;
        }
        let ip = ip.to_string();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.truncate(limit);
    out
}

/// Capacity of the file system holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer can still use (excludes the blocks
    /// reserved for root).
    pub available_bytes: u64,
}

pub fn disk_space(dir: &Path) -> io::Result<DiskSpace> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    Ok(DiskSpace {
        total_bytes: st.blocks() as u64 * frsize,
        available_bytes: st.blocks_available() as u64 * frsize,
    })
}

/// A QEMU firmware descriptor (`docs/interop/firmware.json` in QEMU), the
/// file libvirt itself consults to pick and pair UEFI images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareDescriptor {
    /// The code image (`mapping.executable.filename`).
    pub executable: String,
    /// The variable store template (`mapping.nvram-template.filename`).
    pub nvram_template: Option<String>,
    /// e.g. `secure-boot`, `enrolled-keys`, `requires-smm`.
    pub features: Vec<String>,
    pub architectures: Vec<String>,
}

impl FirmwareDescriptor {
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    pub fn supports_arch(&self, arch: &str) -> bool {
        self.architectures.iter().any(|a| a == arch)
    }
}

#[derive(Deserialize)]
struct DescriptorJson {
    #[serde(rename = "interface-types", default)]
    interface_types: Vec<String>,
    mapping: MappingJson,
    #[serde(default)]
    targets: Vec<TargetJson>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct MappingJson {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    executable: Option<FileJson>,
    #[serde(rename = "nvram-template", default)]
    nvram_template: Option<FileJson>,
}

#[derive(Deserialize)]
struct FileJson {
    filename: String,
}

#[derive(Deserialize)]
struct TargetJson {
    architecture: String,
}

/// Parses one descriptor; `None` for descriptors of something other than
/// UEFI flash images (BIOS, memory-mapped kernels).
pub fn parse_firmware_descriptor(json: &str) -> Result<Option<FirmwareDescriptor>, String> {
    let d: DescriptorJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if !d.interface_types.iter().any(|t| t == "uefi")
        || d.mapping.device.as_deref() != Some("flash")
    {
        return Ok(None);
    }
    let Some(executable) = d.mapping.executable else {
        return Ok(None);
    };
    Ok(Some(FirmwareDescriptor {
        executable: executable.filename,
        nvram_template: d.mapping.nvram_template.map(|f| f.filename),
        features: d.features,
        architectures: d.targets.into_iter().map(|t| t.architecture).collect(),
    }))
}

/// Firmware descriptors under `root`, in QEMU's precedence: files are
/// ordered by name across `etc/qemu/firmware` and `usr/share/qemu/firmware`,
/// and a file in `etc` replaces the one of the same name in `usr/share`
/// (an empty one hides it). Unreadable descriptors are skipped.
pub fn firmware_descriptors(root: &Path) -> Vec<FirmwareDescriptor> {
    let mut by_name: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    // Lowest precedence first, so later directories overwrite.
    for dir in ["usr/share/qemu/firmware", "etc/qemu/firmware"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                by_name.insert(name, entry.path());
            }
        }
    }
    by_name
        .values()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            if text.trim().is_empty() {
                return None;
            }
            match parse_firmware_descriptor(&text) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping firmware descriptor");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_put_the_reached_address_first_and_skip_the_rest() {
        let a = |n: &str, ip: &str| (n.to_string(), ip.parse::<IpAddr>().unwrap());
        let all = [
            a("lo", "127.0.0.1"),
            a("lo", "::1"),
            a("eth0", "10.99.0.2"),
            a("eth0", "fe80::1"),
            a("eth1", "192.168.5.7"),
            a("eth1", "2001:db8::7"),
            a("virbr0", "192.168.122.1"),
            a("orrbr-1a2b3c4d", "10.1.1.1"),
            a("eth2", "169.254.1.1"),
        ];
        assert_eq!(
            peer_addresses(Some("10.99.0.2"), &all, 16),
            ["10.99.0.2", "192.168.5.7", "2001:db8::7"]
        );
        assert_eq!(
            peer_addresses(Some("h2.example.org"), &all, 2),
            ["h2.example.org", "10.99.0.2"]
        );
        assert_eq!(peer_addresses(None, &all[..2], 16), Vec::<String>::new());
    }

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t010011AC\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth2\t00000000\t010011AC\t0002\t0\t0\t1\t00000000\t0\t0\t0
";

    #[test]
    fn default_route_with_lowest_metric() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
        assert_eq!(default_route_interface(""), None);
    }

    #[test]
    fn primary_address_prefers_the_default_route() {
        let addrs = vec![
            ("lo".to_string(), Ipv4Addr::LOCALHOST),
            ("eth1".to_string(), Ipv4Addr::new(192, 168, 1, 5)),
            ("eth0".to_string(), Ipv4Addr::new(169, 254, 0, 9)),
            ("eth0".to_string(), Ipv4Addr::new(172, 17, 0, 2)),
        ];
        assert_eq!(
            choose_primary(Some("eth0"), &addrs),
            Some(Ipv4Addr::new(172, 17, 0, 2))
        );
        assert_eq!(
            choose_primary(None, &addrs),
            Some(Ipv4Addr::new(192, 168, 1, 5))
        );
        assert_eq!(choose_primary(Some("eth9"), &addrs[..1]), None);
    }

    #[test]
    fn this_host() {
        assert!(!hostname().unwrap().is_empty());
        let space = disk_space(Path::new("/")).unwrap();
        assert!(space.total_bytes > 0 && space.available_bytes <= space.total_bytes);
        assert!(disk_space(Path::new("/nonexistent/dir")).is_err());
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const SECURE: &str = r#"{
        "description": "UEFI firmware for x86_64, with Secure Boot and SMM",
        "interface-types": ["uefi"],
        "mapping": {
            "device": "flash",
            "executable": {"filename": "/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "format": "raw"},
            "nvram-template": {"filename": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "format": "raw"}
        },
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
        "features": ["enrolled-keys", "requires-smm", "secure-boot"],
        "tags": []
    }"#;

    #[test]
    fn firmware_descriptors_in_precedence_order() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "usr/share/qemu/firmware/40-secure.json", SECURE);
        write(
            r,
            "usr/share/qemu/firmware/60-plain.json",
            &SECURE
                .replace(".ms.fd", ".fd")
                .replace(r#""enrolled-keys", "requires-smm", "secure-boot""#, ""),
        );
        write(r, "usr/share/qemu/firmware/50-hidden.json", SECURE);
        write(r, "etc/qemu/firmware/50-hidden.json", "");
        write(r, "usr/share/qemu/firmware/70-broken.json", "{");
        write(
            r,
            "usr/share/qemu/firmware/80-bios.json",
            r#"{"interface-types": ["bios"], "mapping": {"device": "memory", "filename": "/x"}}"#,
        );
        write(r, "usr/share/qemu/firmware/README", "not a descriptor");

        let list = firmware_descriptors(r);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].executable, "/usr/share/OVMF/OVMF_CODE_4M.ms.fd");
        assert!(list[0].has_feature("secure-boot") && list[0].supports_arch("x86_64"));
        assert_eq!(list[1].executable, "/usr/share/OVMF/OVMF_CODE_4M.fd");
        assert_eq!(
            list[1].nvram_template.as_deref(),
            Some("/usr/share/OVMF/OVMF_VARS_4M.fd")
        );
        assert!(!list[1].has_feature("secure-boot"));
        assert!(firmware_descriptors(&r.join("missing")).is_empty());
    }
}
