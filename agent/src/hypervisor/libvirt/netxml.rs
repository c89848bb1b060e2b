//! The slice of libvirt's network XML that Orrery writes and reads back:
//! an isolated bridge with one IPv4 address and a DHCP range with
//! reservations.
//!
//! No `<forward>` element: an isolated network gives guests DHCP and a path
//! to the host without libvirt turning on IP forwarding or adding NAT rules
//! to the host's firewall.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::hypervisor::{DhcpHost, NetworkDef};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkXml {
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
