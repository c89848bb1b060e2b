//! Internal snapshots of a running domain: each writable qcow2 disk keeps
//! a named snapshot of itself inside its own file, and, for a snapshot
//! with memory, the first of them also holds the guest's RAM and device
//! state.
//!
//! With memory, libvirt's own snapshot API does the work (QEMU's savevm
//! and loadvm under it) and keeps a record of the snapshot, returned to
//! the caller so a host that does not have it (the instance was restarted
//! elsewhere) can be given it back before a revert. libvirt 9 cannot take
//! an internal snapshot of a running domain's disks alone, so those are
//! one QMP transaction of `blockdev-snapshot-internal-sync` per disk, sent
//! through libvirt's monitor passthrough: atomic across the disks, and the
//! guest runs on meanwhile. libvirt marks a domain it was used on as
//! tainted ("custom-monitor"), which changes nothing about how it runs.

use serde::Deserialize;
use serde_json::json;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::Error as VirtError;
use virt::sys;

use super::super::codes;
use super::super::HvError;
use crate::domxml;

/// A writable disk that can keep internal snapshots: QEMU's node name for
/// it and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SnapshotDisk {
    pub node: String,
    pub file: String,
}

#[derive(Deserialize)]
struct QmpReturn<T> {
    #[serde(rename = "return")]
    ret: T,
}

#[derive(Deserialize)]
struct BlockInfo {
    inserted: Option<Inserted>,
}

#[derive(Deserialize)]
struct Inserted {
    #[serde(rename = "node-name")]
    node_name: Option<String>,
    file: String,
    ro: bool,
    drv: String,
}

/// The disks of `query-block`'s answer that take internal snapshots:
/// writable qcow2 images (a CD-ROM or config drive is read-only raw).
pub(super) fn snapshot_disks(query_block: &str) -> Result<Vec<SnapshotDisk>, HvError> {
    let q: QmpReturn<Vec<BlockInfo>> = serde_json::from_str(query_block)
        .map_err(|e| HvError::Invalid(format!("unreadable query-block answer: {e}")))?;
    Ok(q.ret
        .into_iter()
        .filter_map(|b| b.inserted)
        .filter(|i| !i.ro && i.drv == "qcow2")
        .filter_map(|i| i.node_name.map(|node| SnapshotDisk { node, file: i.file }))
        .collect())
}

/// One QMP transaction creating the internal snapshot `name` on every
/// disk at the same instant.
pub(super) fn create_transaction(disks: &[SnapshotDisk], name: &str) -> String {
    let actions: Vec<_> = disks
        .iter()
        .map(|d| {
            json!({
                "type": "blockdev-snapshot-internal-sync",
                "data": {"device": d.node, "name": name},
            })
        })
        .collect();
    json!({"execute": "transaction", "arguments": {"actions": actions}}).to_string()
}

pub(super) fn delete_command(disk: &SnapshotDisk, name: &str) -> String {
    json!({
        "execute": "blockdev-snapshot-delete-internal-sync",
        "arguments": {"device": disk.node, "name": name},
    })
    .to_string()
}

/// libvirt's description of a snapshot with memory of `domain_xml`.
pub(super) fn memory_snapshot_xml(name: &str, domain_xml: &str) -> Result<String, HvError> {
    let dom = domxml::Domain::from_xml(domain_xml)
        .map_err(|e| HvError::Invalid(format!("unreadable domain definition: {e}")))?;
    Ok(domxml::InternalSnapshot::of(name, &dom).to_xml())
}

fn monitor(dom: &Domain, cmd: &str) -> Result<String, VirtError> {
    dom.qemu_monitor_command(cmd, 0)
}

pub(super) fn live_disks(dom: &Domain) -> Result<Vec<SnapshotDisk>, HvError> {
    let out = monitor(dom, r#"{"execute":"query-block"}"#)
        .map_err(|e| HvError::backend(e.code().to_raw() as i32, e.message().to_string()))?;
    snapshot_disks(&out)
}

fn virt_err(e: VirtError) -> HvError {
    HvError::backend(e.code().to_raw() as i32, e.message().to_string())
}

/// Freezes (or thaws) every file system of the guest through its guest
/// agent; the number of file systems it acted on.
pub(super) fn fs_freeze(dom: &Domain, freeze: bool) -> Result<u32, HvError> {
    // SAFETY: the pointer is the live domain handle `dom` owns; no mount
    // points (null, 0) means all of them.
    let r = unsafe {
        if freeze {
            sys::virDomainFSFreeze(dom.as_ptr(), std::ptr::null_mut(), 0, 0)
        } else {
            sys::virDomainFSThaw(dom.as_ptr(), std::ptr::null_mut(), 0, 0)
        }
    };
    if r < 0 {
        let e = VirtError::last_error();
        return Err(guest_agent_error(e));
    }
    Ok(r as u32)
}

/// A guest agent that is not there or does not answer is the caller's
/// problem to explain (a quiesce it cannot have), so it is told apart.
fn guest_agent_error(e: VirtError) -> HvError {
    let code = e.code().to_raw() as i32;
    let message = e.message().to_string();
    if code == sys::VIR_ERR_AGENT_UNRESPONSIVE as i32
        || message.contains("guest agent")
        || message.contains("agent is not")
    {
        HvError::backend(codes::AGENT_UNRESPONSIVE, message)
    } else {
        HvError::backend(code, message)
    }
}

/// Internal snapshot of a running domain's disks only.
pub(super) fn create_disks(dom: &Domain, name: &str) -> Result<(), HvError> {
    let disks = live_disks(dom)?;
    if disks.is_empty() {
        return Err(HvError::Invalid(
            "the domain has no qcow2 disk to snapshot".into(),
        ));
    }
    monitor(dom, &create_transaction(&disks, name)).map_err(virt_err)?;
    Ok(())
}

/// Internal snapshot with memory; returns libvirt's record of it.
pub(super) fn create_with_memory(dom: &Domain, name: &str) -> Result<String, HvError> {
    let xml = dom.xml_desc(0).map_err(virt_err)?;
    let snap_xml = memory_snapshot_xml(name, &xml)?;
    let snap = dom.create_snapshot_xml(&snap_xml, 0).map_err(virt_err)?;
    snap.xml_desc(sys::VIR_DOMAIN_SNAPSHOT_XML_SECURE)
        .map_err(virt_err)
}

fn lookup(dom: &Domain, name: &str) -> Result<Option<DomainSnapshot>, HvError> {
    match Domain::lookup_snapshot_by_name(dom, name, 0) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.code().to_raw() as i32 == sys::VIR_ERR_NO_DOMAIN_SNAPSHOT as i32 => Ok(None),
        Err(e) => Err(virt_err(e)),
    }
}

/// Reverts a running domain to a snapshot with memory; it runs on in the
/// saved state. `saved` is libvirt's record from the snapshot's creation,
/// redefined first when this host's libvirt does not know the snapshot.
pub(super) fn revert_with_memory(dom: &Domain, name: &str, saved: &str) -> Result<(), HvError> {
    let snap = match lookup(dom, name)? {
        Some(s) => s,
        None => {
            if saved.is_empty() {
                return Err(HvError::Invalid(format!(
                    "this host has no record of snapshot {name} and none was given"
                )));
            }
            dom.create_snapshot_xml(saved, sys::VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)
                .map_err(virt_err)?
        }
    };
    match snap.revert(sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING) {
        Ok(()) => Ok(()),
        // The definition changed since (it is rendered again at every
        // start): libvirt wants the revert forced, which restarts QEMU from
        // the snapshot's own definition.
        Err(e) if e.code().to_raw() as i32 == sys::VIR_ERR_SNAPSHOT_REVERT_RISKY as i32 => snap
            .revert(sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING | sys::VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
            .map_err(virt_err),
        Err(e) => Err(virt_err(e)),
    }
}

/// Removes a snapshot from every disk of a running domain, and libvirt's
/// record of it. A disk without it is skipped.
pub(super) fn delete_live(dom: &Domain, name: &str) -> Result<(), HvError> {
    for d in live_disks(dom)? {
        if let Err(e) = monitor(dom, &delete_command(&d, name)) {
            let msg = e.message().to_string();
            if !msg.contains("does not exist") && !msg.contains("not found") {
                return Err(virt_err(e));
            }
        }
    }
    forget(dom, name)
}

/// Drops libvirt's record of a snapshot (none is fine); the disks are not
/// touched.
pub(super) fn forget(dom: &Domain, name: &str) -> Result<(), HvError> {
    if let Some(s) = lookup(dom, name)? {
        s.delete(sys::VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            .map_err(virt_err)?;
    }
    Ok(())
}

/// Drops libvirt's records of every snapshot of the domain (the disks keep
/// them): libvirt refuses to migrate a domain it has snapshot records of,
/// and the coordinator gives a record back where a revert needs it.
pub(super) fn forget_all(dom: &Domain) -> Result<u32, HvError> {
    let snaps = dom.list_all_snapshots(0).map_err(virt_err)?;
    let n = snaps.len() as u32;
    for s in snaps {
        s.delete(sys::VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            .map_err(virt_err)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY_BLOCK: &str = r#"{"return": [
        {"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
         "inserted": {"node-name": "libvirt-2-format", "file": "/p/root.qcow2", "ro": false, "drv": "qcow2"}},
        {"device": "", "qdev": "ide0-0-0",
         "inserted": {"node-name": "libvirt-1-format", "file": "/p/cfg.iso", "ro": true, "drv": "raw"}},
        {"device": "", "qdev": "ide0-1-0"},
        {"device": "", "qdev": "/machine/peripheral/virtio-disk1/virtio-backend",
         "inserted": {"node-name": "libvirt-3-format", "file": "/p/data.qcow2", "ro": false, "drv": "qcow2"}}
    ], "id": "libvirt-1"}"#;

    #[test]
    fn only_writable_qcow2_disks_take_snapshots() {
        let d = snapshot_disks(QUERY_BLOCK).unwrap();
        assert_eq!(
            d,
            vec![
                SnapshotDisk {
                    node: "libvirt-2-format".into(),
                    file: "/p/root.qcow2".into()
                },
                SnapshotDisk {
                    node: "libvirt-3-format".into(),
                    file: "/p/data.qcow2".into()
                },
            ]
        );
        assert!(snapshot_disks("not json").is_err());
    }

    #[test]
    fn one_transaction_covers_every_disk() {
        let d = snapshot_disks(QUERY_BLOCK).unwrap();
        let t: serde_json::Value = serde_json::from_str(&create_transaction(&d, "s1")).unwrap();
        assert_eq!(t["execute"], "transaction");
        let actions = t["arguments"]["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[1]["type"], "blockdev-snapshot-internal-sync");
        assert_eq!(actions[1]["data"]["device"], "libvirt-3-format");
        assert_eq!(actions[1]["data"]["name"], "s1");
        let del: serde_json::Value = serde_json::from_str(&delete_command(&d[0], "s1")).unwrap();
        assert_eq!(del["arguments"]["device"], "libvirt-2-format");
    }

    #[test]
    fn a_memory_snapshot_leaves_read_only_disks_out() {
        let dom = "<domain type='qemu'><name>i-1</name><memory>1</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/root.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/p/c.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>\
            </devices></domain>";
        let x = memory_snapshot_xml("a<b", dom).unwrap();
        assert!(x.contains("<name>a&lt;b</name>"), "{x}");
        assert!(
            x.contains(r#"<disk name="vda" snapshot="internal"/>"#),
            "{x}"
        );
        assert!(x.contains(r#"<disk name="hdc" snapshot="no"/>"#), "{x}");
        assert!(x.contains(r#"<memory snapshot="internal"/>"#), "{x}");
    }
}
