//! The slice of libvirt's network XML that Orrery writes and reads back:
//! an isolated bridge with one IPv4 address and a DHCP range with
//! reservations.
//!
//! No `<forward>` element: an isolated network gives guests DHCP and a path
//! to the host without libvirt turning on IP forwarding or adding NAT rules
//! to the host's firewall.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::hypervisor::{DhcpHost, NetworkDef, NETWORK_PREFIX};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkXml {
    /// Guest interfaces attached, in the live definition of a running
    /// network.
    #[serde(
        rename = "@connections",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connections: Option<u32>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeXml>,
    #[serde(default, rename = "ip", skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpXml>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ForwardXml {
    #[serde(rename = "@mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BridgeXml {
    #[serde(rename = "@name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "@stp", default, skip_serializing_if = "Option::is_none")]
    pub stp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IpXml {
    #[serde(rename = "@family", default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(rename = "@address", default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(rename = "@netmask", default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    #[serde(rename = "@prefix", default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpXml>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DhcpXml {
    #[serde(default, rename = "range", skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<RangeXml>,
    #[serde(default, rename = "host", skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostXml>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RangeXml {
    #[serde(rename = "@start")]
    pub start: String,
    #[serde(rename = "@end")]
    pub end: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostXml {
    #[serde(rename = "@mac", default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(rename = "@name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "@ip", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl From<&DhcpHost> for HostXml {
    fn from(h: &DhcpHost) -> Self {
        HostXml {
            mac: Some(h.mac.to_ascii_lowercase()),
            name: (!h.name.is_empty()).then(|| h.name.clone()),
            ip: Some(h.ip.clone()),
        }
    }
}

impl HostXml {
    pub fn to_xml(&self) -> String {
        quick_xml::se::to_string_with_root("host", self).expect("plain strings serialize")
    }

    pub fn has_mac(&self, mac: &str) -> bool {
        self.mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }

    /// Whether this entry is exactly the reservation `h`.
    pub fn is(&self, h: &DhcpHost) -> bool {
        self.has_mac(&h.mac)
            && self.ip.as_deref() == Some(h.ip.as_str())
            && self.name.as_deref().unwrap_or("") == h.name
    }
}

impl NetworkXml {
    pub fn from_def(def: &NetworkDef) -> NetworkXml {
        NetworkXml {
            connections: None,
            name: def.name.clone(),
            forward: None,
            bridge: Some(BridgeXml {
                name: Some(def.bridge.clone()),
                // A bridge with only guests behind it has no loops to
                // detect; STP would hold each new port back for seconds.
                stp: Some("off".to_string()),
            }),
            ips: vec![IpXml {
                family: None,
                address: Some(def.gateway.clone()),
                netmask: Some(def.netmask.clone()),
                prefix: None,
                dhcp: Some(DhcpXml {
                    ranges: vec![RangeXml {
                        start: def.dhcp_start.clone(),
                        end: def.dhcp_end.clone(),
                    }],
                    hosts: Vec::new(),
                }),
            }],
        }
    }

    pub fn to_xml(&self) -> String {
        quick_xml::se::to_string_with_root("network", self).expect("plain strings serialize")
    }

    pub fn parse(xml: &str) -> Result<NetworkXml, String> {
        quick_xml::de::from_str(xml).map_err(|e| format!("unreadable network XML: {e}"))
    }

    /// The IPv4 address element that carries DHCP.
    pub fn dhcp_ipv4(&self) -> Option<&IpXml> {
        self.ips
            .iter()
            .filter(|ip| ip.family.as_deref().unwrap_or("ipv4") == "ipv4")
            .find(|ip| ip.dhcp.is_some())
    }

    pub fn dhcp_hosts(&self) -> &[HostXml] {
        self.dhcp_ipv4()
            .and_then(|ip| ip.dhcp.as_ref())
            .map(|d| d.hosts.as_slice())
            .unwrap_or(&[])
    }

    /// How this network differs from `def` in what `def` specifies; empty
    /// when it matches. Reservations and anything `def` does not cover
    /// (MAC, UUID, DNS settings) are not compared.
    pub fn differences(&self, def: &NetworkDef) -> Vec<String> {
        let mut diffs = Vec::new();
        let bridge = self.bridge.as_ref().and_then(|b| b.name.as_deref());
        if bridge != Some(def.bridge.as_str()) {
            diffs.push(format!("bridge {bridge:?}, wanted {:?}", def.bridge));
        }
        if let Some(f) = &self.forward {
            diffs.push(format!(
                "forward mode {:?}, wanted an isolated network",
                f.mode.as_deref().unwrap_or("nat")
            ));
        }
        let Some(ip) = self.dhcp_ipv4() else {
            diffs.push("no IPv4 address with DHCP".to_string());
            return diffs;
        };
        if !same_addr(ip.address.as_deref(), &def.gateway) {
            diffs.push(format!(
                "address {:?}, wanted {:?}",
                ip.address, def.gateway
            ));
        }
        let netmask = ip
            .netmask
            .as_deref()
            .and_then(|m| m.parse::<Ipv4Addr>().ok())
            .or_else(|| ip.prefix.and_then(prefix_to_netmask));
        if netmask != def.netmask.parse().ok() {
            diffs.push(format!(
                "netmask {:?}, wanted {:?}",
                netmask.map(|m| m.to_string()),
                def.netmask
            ));
        }
        let ranges = &ip.dhcp.as_ref().expect("filtered on dhcp").ranges;
        let range_ok = ranges.len() == 1
            && same_addr(Some(&ranges[0].start), &def.dhcp_start)
            && same_addr(Some(&ranges[0].end), &def.dhcp_end);
        if !range_ok {
            let have: Vec<String> = ranges
                .iter()
                .map(|r| format!("{}-{}", r.start, r.end))
                .collect();
            diffs.push(format!(
                "DHCP ranges {have:?}, wanted {}-{}",
                def.dhcp_start, def.dhcp_end
            ));
        }
        diffs
    }
}

impl NetworkXml {
    pub fn bridge_name(&self) -> Option<&str> {
        self.bridge.as_ref().and_then(|b| b.name.as_deref())
    }

    /// The IPv4 subnets the network puts on its bridge.
    pub fn ipv4_subnets(&self) -> Vec<Subnet> {
        self.ips
            .iter()
            .filter(|ip| ip.family.as_deref().unwrap_or("ipv4") == "ipv4")
            .filter_map(|ip| {
                let address = ip.address.as_deref()?.parse().ok()?;
                let prefix = match (&ip.netmask, ip.prefix) {
                    (Some(m), _) => netmask_to_prefix(m.parse().ok()?)?,
                    (None, Some(p)) if p <= 32 => p,
                    // libvirt's default for an address without a mask.
                    (None, _) => 24,
                };
                Some(Subnet::new(address, prefix))
            })
            .collect()
    }
}

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = prefix_to_netmask(prefix).unwrap_or(Ipv4Addr::BROADCAST);
        Subnet {
            network: Ipv4Addr::from(u32::from(address) & u32::from(mask)),
            prefix: prefix.min(32),
        }
    }

    pub fn of(def: &NetworkDef) -> Option<Subnet> {
        let address = def.gateway.parse().ok()?;
        let prefix = netmask_to_prefix(def.netmask.parse().ok()?)?;
        Some(Subnet::new(address, prefix))
    }

    /// Whether the two share any address: the shorter prefix decides.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = Subnet::new(other.network, self.prefix.min(other.prefix));
        Subnet::new(self.network, shorter.prefix) == shorter
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn netmask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    // Contiguous masks only, as libvirt requires.
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// The interface libvirt names when it refuses to start a network whose
/// addresses a route on the host already covers: "internal error: Network
/// is already in use by interface virbr1".
pub(crate) fn interface_in_use(message: &str) -> Option<&str> {
    const MARK: &str = "already in use by interface ";
    let at = message.find(MARK)? + MARK.len();
    let iface = message[at..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .next()?
        .trim_end_matches('.');
    (!iface.is_empty()).then_some(iface)
}

/// What to tell the operator when `ours` cannot start because `iface`
/// already carries (part of) its address range. `active` are the running
/// networks as libvirt describes them live (with their connection counts);
/// the one whose bridge is `iface`, or else the first whose addresses
/// overlap ours, is named with how to remove it.
pub(crate) fn explain_in_use(
    ours: &NetworkDef,
    iface: &str,
    active: &[NetworkXml],
    libvirt_message: &str,
) -> String {
    let subnet = Subnet::of(ours);
    let range = subnet.map_or_else(
        || format!("{}/{}", ours.gateway, ours.netmask),
        |s| s.to_string(),
    );
    let mut out = format!(
        "guest network {} ({range} on bridge {}) could not start: interface {iface} already \
         carries addresses in {range}. ",
        ours.name, ours.bridge
    );
    let others = || active.iter().filter(|n| n.name != ours.name);
    let clash = others()
        .find(|n| n.bridge_name() == Some(iface))
        .or_else(|| {
            others()
                .find(|n| subnet.is_some_and(|s| n.ipv4_subnets().iter().any(|t| t.overlaps(&s))))
        });
    match clash {
        Some(n) => {
            let theirs: Vec<String> = n.ipv4_subnets().iter().map(|s| s.to_string()).collect();
            let bridge = n.bridge_name().unwrap_or("?");
            if n.name.starts_with(NETWORK_PREFIX) {
                out.push_str(&format!(
                    "It belongs to {}, an Orrery guest network but not this one (names \
                     follow network uuids): another coordinator, or an earlier \
                     installation, created it on this host for a network with an \
                     overlapping address range ({} on bridge {bridge}). ",
                    n.name,
                    theirs.join(", ")
                ));
            } else {
                out.push_str(&format!(
                    "It is the bridge {bridge} of libvirt network {} ({}). ",
                    n.name,
                    theirs.join(", ")
                ));
            }
            if let Some(k) = n.connections.filter(|k| *k > 0) {
                out.push_str(&format!(
                    "{k} guest interface(s) still use {}: stop those guests first, or give \
                     one of the two networks another address range. ",
                    n.name
                ));
            }
            out.push_str(&format!(
                "If nothing needs {0}, remove it: virsh net-destroy {0} && virsh net-undefine {0}",
                n.name
            ));
        }
        None => out.push_str(&format!(
            "No running libvirt network uses {iface}: it is a host interface (or a bridge \
             another tool manages). Give this guest network an address range that does \
             not overlap {iface}'s addresses, or remove them from {iface}"
        )),
    }
    out.push_str(&format!(" (libvirt: {libvirt_message})"));
    out
}

fn same_addr(have: Option<&str>, want: &str) -> bool {
    match (
        have.and_then(|h| h.parse::<Ipv4Addr>().ok()),
        want.parse::<Ipv4Addr>(),
    ) {
        (Some(h), Ok(w)) => h == w,
        _ => have == Some(want),
    }
}

fn prefix_to_netmask(prefix: u8) -> Option<Ipv4Addr> {
    (prefix <= 32)
        .then(|| Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> NetworkDef {
        NetworkDef {
            name: "orrery-1234abcd".to_string(),
            bridge: "obr-1234abcd".to_string(),
            gateway: "10.1.1.1".to_string(),
            netmask: "255.255.255.0".to_string(),
            dhcp_start: "10.1.1.100".to_string(),
            dhcp_end: "10.1.1.200".to_string(),
        }
    }

    #[test]
    fn renders_an_isolated_network() {
        assert_eq!(
            NetworkXml::from_def(&def()).to_xml(),
            "<network><name>orrery-1234abcd</name>\
             <bridge name=\"obr-1234abcd\" stp=\"off\"/>\
             <ip address=\"10.1.1.1\" netmask=\"255.255.255.0\"><dhcp>\
             <range start=\"10.1.1.100\" end=\"10.1.1.200\"/></dhcp></ip></network>"
        );
    }

    #[test]
    fn escapes_values() {
        let h = HostXml::from(&DhcpHost {
            mac: "52:54:00:AA:BB:CC".to_string(),
            ip: "10.1.1.5".to_string(),
            name: "a<b>&'\"".to_string(),
        });
        let xml = h.to_xml();
        assert_eq!(
            xml,
            "<host mac=\"52:54:00:aa:bb:cc\" name=\"a&lt;b&gt;&amp;'&quot;\" ip=\"10.1.1.5\"/>"
        );
        let back: HostXml = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(back, h);
    }

    // As `virsh net-dumpxml` prints a network defined from `from_def`, after
    // two reservations were added and with an IPv6 address added by hand.
    const LIBVIRT_XML: &str = r#"<network connections='1'>
  <name>orrery-1234abcd</name>
  <uuid>0d6a3c55-1f55-4b8e-9d6c-0e9c1c7f2b11</uuid>
  <bridge name='obr-1234abcd' stp='off' delay='0'/>
  <mac address='52:54:00:3e:71:0a'/>
  <ip family='ipv6' address='fd00::1' prefix='64'>
  </ip>
  <ip address='10.1.1.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.1.1.100' end='10.1.1.200'/>
      <host mac='52:54:00:00:00:01' name='a' ip='10.1.1.10'/>
      <host mac='52:54:00:00:00:02' ip='10.1.1.11'/>
    </dhcp>
  </ip>
</network>
"#;

    #[test]
    fn reads_what_libvirt_writes_and_matches_the_definition() {
        let net = NetworkXml::parse(LIBVIRT_XML).unwrap();
        assert_eq!(net.differences(&def()), Vec::<String>::new());
        let hosts = net.dhcp_hosts();
        assert_eq!(hosts.len(), 2);
        assert!(hosts[0].is(&DhcpHost {
            mac: "52:54:00:00:00:01".to_string(),
            ip: "10.1.1.10".to_string(),
            name: "a".to_string(),
        }));
        assert!(hosts[1].has_mac("52:54:00:00:00:02") && hosts[1].name.is_none());
    }

    #[test]
    fn reports_each_difference() {
        let xml = LIBVIRT_XML
            .replace("obr-1234abcd", "virbr9")
            .replace("<bridge", "<forward mode='nat'/><bridge")
            .replace("netmask='255.255.255.0'", "prefix='16'")
            .replace("10.1.1.200", "10.1.1.201");
        let diffs = NetworkXml::parse(&xml).unwrap().differences(&def());
        assert_eq!(diffs.len(), 4, "{diffs:?}");
        assert!(diffs[0].contains("virbr9"));
        assert!(diffs[1].contains("nat"));
        assert!(diffs[2].contains("255.255.0.0"));
        assert!(diffs[3].contains("10.1.1.201"));

        let no_dhcp = "<network><name>x</name><bridge name='obr-1234abcd'/><ip address='10.1.1.1' prefix='24'/></network>";
        let diffs = NetworkXml::parse(no_dhcp).unwrap().differences(&def());
        assert_eq!(diffs, vec!["no IPv4 address with DHCP".to_string()]);
    }

    fn running(name: &str, bridge: &str, ip: &str, connections: Option<u32>) -> NetworkXml {
        let mut n = NetworkXml::from_def(&NetworkDef {
            name: name.to_string(),
            bridge: bridge.to_string(),
            gateway: ip.to_string(),
            netmask: "255.255.255.0".to_string(),
            dhcp_start: ip.to_string(),
            dhcp_end: ip.to_string(),
        });
        n.connections = connections;
        n
    }

    const REFUSAL: &str = "internal error: Network is already in use by interface virbr7";

    #[test]
    fn reads_the_interface_from_libvirts_refusal() {
        assert_eq!(interface_in_use(REFUSAL), Some("virbr7"));
        assert_eq!(
            interface_in_use("Network is already in use by interface eth0."),
            Some("eth0")
        );
        assert_eq!(interface_in_use("bridge name 'x' already in use."), None);
        assert_eq!(interface_in_use("already in use by interface "), None);
    }

    #[test]
    fn subnets_overlap_when_the_shorter_prefix_agrees() {
        let s = |a: &str, p| Subnet::new(a.parse().unwrap(), p);
        assert!(s("10.1.1.1", 24).overlaps(&s("10.1.1.200", 24)));
        assert!(s("10.1.1.1", 24).overlaps(&s("10.1.0.1", 16)));
        assert!(s("10.1.0.1", 16).overlaps(&s("10.1.1.1", 24)));
        assert!(!s("10.1.1.1", 24).overlaps(&s("10.1.2.1", 24)));
        assert!(!s("10.1.1.1", 25).overlaps(&s("10.1.1.200", 25)));
        assert!(s("192.168.0.1", 0).overlaps(&s("10.0.0.1", 8)));
        assert_eq!(s("10.1.1.77", 24).to_string(), "10.1.1.0/24");
        assert_eq!(Subnet::of(&def()), Some(s("10.1.1.0", 24)));
        assert_eq!(netmask_to_prefix("255.255.0.0".parse().unwrap()), Some(16));
        assert_eq!(netmask_to_prefix("255.0.255.0".parse().unwrap()), None);
        let prefixed = NetworkXml::parse(
            "<network><name>p</name><ip address='10.9.0.1' prefix='16'/>\
             <ip family='ipv6' address='fd00::1' prefix='64'/></network>",
        )
        .unwrap();
        assert_eq!(prefixed.ipv4_subnets(), vec![s("10.9.0.0", 16)]);
    }

    #[test]
    fn names_the_foreign_network_whose_bridge_is_in_use() {
        let active = [
            running("default", "virbr0", "192.168.122.1", None),
            running("lab", "virbr7", "10.1.1.1", Some(2)),
        ];
        let m = explain_in_use(&def(), "virbr7", &active, REFUSAL);
        assert!(
            m.starts_with("guest network orrery-1234abcd (10.1.1.0/24 on bridge obr-1234abcd) could not start: interface virbr7"),
            "{m}"
        );
        assert!(
            m.contains("bridge virbr7 of libvirt network lab (10.1.1.0/24)"),
            "{m}"
        );
        assert!(m.contains("2 guest interface(s) still use lab"), "{m}");
        assert!(
            m.contains("virsh net-destroy lab && virsh net-undefine lab"),
            "{m}"
        );
        assert!(m.ends_with(&format!("(libvirt: {REFUSAL})")), "{m}");
        assert!(!m.contains("Orrery guest network"), "{m}");
        assert!(!m.contains("  "), "{m}");
    }

    #[test]
    fn explains_an_orrery_network_left_by_another_coordinator() {
        let active = [running(
            "orrery-9abc0123",
            "orrbr-9abc0123",
            "10.1.1.1",
            None,
        )];
        // Found by its addresses when the interface named is not its bridge.
        let m = explain_in_use(&def(), "orrbr-other", &active, REFUSAL);
        assert!(
            m.contains("orrery-9abc0123, an Orrery guest network but not this one"),
            "{m}"
        );
        assert!(m.contains("another coordinator"), "{m}");
        assert!(
            m.contains("virsh net-destroy orrery-9abc0123 && virsh net-undefine orrery-9abc0123"),
            "{m}"
        );
        assert!(!m.contains("still use"), "{m}");
        assert!(!m.contains("  "), "{m}");
    }

    #[test]
    fn an_interface_of_no_network_is_called_a_host_interface() {
        let ours = running("orrery-1234abcd", "obr-1234abcd", "10.1.1.1", None);
        let elsewhere = running("default", "virbr0", "192.168.122.1", None);
        let m = explain_in_use(&def(), "eth0", &[ours, elsewhere], REFUSAL);
        assert!(m.contains("No running libvirt network uses eth0"), "{m}");
        assert!(!m.contains("virsh net-destroy"), "{m}");
        assert!(!m.contains("  "), "{m}");
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_to_netmask(24), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(prefix_to_netmask(0), Some(Ipv4Addr::new(0, 0, 0, 0)));
        assert_eq!(
            prefix_to_netmask(32),
            Some(Ipv4Addr::new(255, 255, 255, 255))
        );
        assert_eq!(prefix_to_netmask(33), None);
    }
}
