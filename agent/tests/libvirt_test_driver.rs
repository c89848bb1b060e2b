//! The libvirt backend against libvirt's built-in test driver
//! (`test:///default`): an in-process, in-memory hypervisor that needs no
//! daemon and no privileges, so these checks run wherever the agent builds.
//! Connections in one process share the driver's state, so each test uses
//! names of its own.

use std::time::Duration;

use orrery_agent::hypervisor::codes;
use orrery_agent::hypervisor::libvirt::LibvirtHypervisor;
use orrery_agent::hypervisor::{DhcpHost, DomainInfo, HvError, Hypervisor, NetworkDef, Power};

const URI: &str = "test:///default";
const UUID: &str = "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10";

async fn connect() -> LibvirtHypervisor {
    LibvirtHypervisor::connect(URI)
        .await
        .expect("the test driver is part of libvirt")
}

fn domain_xml(name: &str) -> String {
    format!(
        r#"<domain type='test'>
  <name>{name}</name>
  <uuid>{UUID}</uuid>
  <metadata>
    <orrery:instance xmlns:orrery="https://orrery.dev/xmlns/domain/1">
      <orrery:uuid>{UUID}</orrery:uuid>
      <orrery:name>web-1</orrery:name>
    </orrery:instance>
  </metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='i686'>hvm</type></os>
</domain>"#
    )
}

#[tokio::test]
async fn host_info_without_domain_capabilities() {
    let hv = connect().await;
    let info = hv.host_info().await.unwrap();
    assert!(info.cpus > 0 && info.memory_bytes > 0);
    assert!(!info.hostname.is_empty());
    // The test driver has no domain capabilities: no UEFI, no TPM.
    assert!(info.design.firmware.is_empty());
    assert!(!info.design.tpm_supported);
    assert_eq!(info.design.domain_types, vec!["test".to_string()]);
}

#[tokio::test]
async fn domain_lifecycle() {
    let hv = connect().await;
    let name = "orrery-lifecycle";
    hv.define(&domain_xml(name)).await.unwrap();
    let listed = hv.domains().await.unwrap();
    assert!(listed.contains(&DomainInfo {
        name: name.to_string(),
        instance_uuid: Some(UUID.to_string()),
        power: Power::Off,
    }));
    // The driver's own domain is not one of ours.
    assert!(listed
        .iter()
        .any(|d| d.name == "test" && d.instance_uuid.is_none()));

    assert!(hv.destroy(name).await.unwrap_err().is_operation_invalid());
    assert!(hv
        .shutdown(name, Duration::from_secs(1))
        .await
        .unwrap_err()
        .is_operation_invalid());
    hv.start(name).await.unwrap();
    assert_eq!(hv.power(name).await.unwrap(), Power::On);
    assert!(hv.start(name).await.unwrap_err().is_operation_invalid());
    assert!(hv.undefine(name).await.unwrap_err().is_operation_invalid());
    hv.reboot(name).await.unwrap();
    hv.shutdown(name, Duration::from_secs(5)).await.unwrap();
    assert_eq!(hv.power(name).await.unwrap(), Power::Off);
    hv.start(name).await.unwrap();
    hv.destroy(name).await.unwrap();
    assert!(hv
        .domain_xml(name)
        .await
        .unwrap()
        .contains("orrery:instance"));
    hv.undefine(name).await.unwrap();
    assert!(matches!(hv.power(name).await, Err(HvError::NotFound(n)) if n == name));
}

#[tokio::test]
async fn malformed_definitions_are_invalid() {
    let hv = connect().await;
    let err = hv.define("<domain type='test'>").await.unwrap_err();
    assert!(matches!(err, HvError::Invalid(_)), "{err:?}");
    let err = hv
        .define(
            &domain_xml("orrery-bad")
                .replace("<vcpu>", "<vcpus>")
                .replace("</vcpu>", "</vcpus>"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, HvError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn networks() {
    let hv = connect().await;
    let net = NetworkDef {
        name: "orrery-net".to_string(),
        bridge: "obr-net".to_string(),
        gateway: "10.9.9.1".to_string(),
        netmask: "255.255.255.0".to_string(),
        dhcp_start: "10.9.9.100".to_string(),
        dhcp_end: "10.9.9.200".to_string(),
    };
    hv.ensure_network(&net).await.unwrap();
    hv.ensure_network(&net).await.unwrap();
    // The driver's NAT network differs in every respect.
    let mut default = net.clone();
    default.name = "default".to_string();
    let err = hv.ensure_network(&default).await.unwrap_err();
    assert!(
        matches!(&err, HvError::Invalid(m) if m.contains("forward")),
        "{err:?}"
    );

    let host = DhcpHost {
        mac: "52:54:00:00:00:01".to_string(),
        ip: "10.9.9.10".to_string(),
        name: "web-1".to_string(),
    };
    hv.set_dhcp_host(&net.name, &host).await.unwrap();
    hv.set_dhcp_host(
        &net.name,
        &DhcpHost {
            ip: "10.9.9.11".to_string(),
            ..host.clone()
        },
    )
    .await
    .unwrap();
    hv.remove_dhcp_host(&net.name, &host.mac).await.unwrap();
    hv.remove_dhcp_host(&net.name, &host.mac).await.unwrap();

    let err = hv.set_dhcp_host("orrery-missing", &host).await.unwrap_err();
    assert_eq!(err.libvirt_code(), Some(codes::NO_NETWORK), "{err:?}");
    let bad = DhcpHost {
        mac: "not-a-mac".to_string(),
        ..host
    };
    assert!(matches!(
        hv.set_dhcp_host(&net.name, &bad).await,
        Err(HvError::Invalid(_))
    ));
}

#[tokio::test]
async fn statistics_of_active_domains() {
    let hv = connect().await;
    let name = "orrery-stats";
    let uuid = "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d11";
    hv.define(&domain_xml(name).replace(UUID, uuid))
        .await
        .unwrap();
    let before = hv.domain_counters(true).await.unwrap();
    assert!(!before.iter().any(|c| c.name == name), "{before:?}");
    // The driver's own domain runs from the start, and is not ours.
    let theirs = before.iter().find(|c| c.name == "test").unwrap();
    assert_eq!(theirs.instance_uuid, None);

    hv.start(name).await.unwrap();
    let counters = hv.domain_counters(false).await.unwrap();
    let ours = counters.iter().find(|c| c.name == name).unwrap();
    assert_eq!(ours.instance_uuid.as_deref(), Some(uuid));
    assert!(ours.run_id.is_some());
    // The test driver keeps no device statistics.
    assert!(ours.disks.is_empty());

    hv.destroy(name).await.unwrap();
    hv.undefine(name).await.unwrap();
    let after = hv.domain_counters(false).await.unwrap();
    assert!(!after.iter().any(|c| c.name == name));
}
