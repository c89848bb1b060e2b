//! Pointing a domain's disks at other files: the definition a domain gets on
//! the destination of a migration that copies its storage, where some of
//! its volume files live in another directory than here.
//!
//! This works on the document's element tree rather than on
//! [`Domain`](super::Domain): the destination's definition must keep
//! everything libvirt put into the source's (device addresses,
//! controllers, aliases, the VNC password of a secure dump), since libvirt
//! refuses a definition that describes a different machine, and the model
//! holds only the parts Orrery writes.

use std::path::Path;

use super::{single_root, tree, DomXmlError};

/// A disk file that has another path on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFileMove {
    /// The disk's `<source file>` now.
    pub from: String,
    /// Its `<source file>` on the destination.
    pub to: String,
}

/// A domain document with moved disks, and which disks those are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedDisks {
    pub xml: String,
    /// The moved disks' `<target dev>` (e.g. `vda`), in the order of the
    /// moves: what libvirt's `migrate_disks` parameter names.
    pub targets: Vec<String>,
}

/// Rewrites the `<source file>` of every disk whose file is one of the
/// moves' `from` (compared as paths, so `/a//b` is `/a/b`) to that move's
/// `to`. A moved disk loses its `<backingStore>`: the file it gets on the
/// destination is a complete copy of the disk, with no backing file. The
/// rest of the document is kept as it is (its layout aside).
///
/// A move whose file no disk of the domain uses is an error: the caller
/// believes the domain has a disk it has not.
pub fn move_disk_files(xml: &str, moves: &[DiskFileMove]) -> Result<MovedDisks, DomXmlError> {
    let mut root = single_root(xml)?;
    if root.ns.is_some() || root.local != "domain" {
        return Err(DomXmlError::NotADomain { found: root.qname });
    }
    let mut found: Vec<Vec<String>> = vec![Vec::new(); moves.len()];
    if let Some(devices) = root.first_child_mut("devices") {
        for disk in devices.children_named_mut("disk") {
            let Some(file) = disk.first_child("source").and_then(|s| s.get_attr("file")) else {
                continue;
            };
            let Some(i) = moves
                .iter()
                .position(|m| Path::new(&m.from) == Path::new(file))
            else {
                continue;
            };
            let target = disk
                .first_child("target")
                .and_then(|t| t.get_attr("dev"))
                .ok_or_else(|| DomXmlError::MissingAttribute {
                    path: "/domain/devices/disk/target/@dev".to_string(),
                })?
                .to_string();
            if let Some(source) = disk.first_child_mut("source") {
                source.set_attr("file", moves[i].to.as_str());
            }
            disk.remove_children_named("backingStore");
            found[i].push(target);
        }
    }
    if let Some((m, _)) = moves.iter().zip(&found).find(|(_, t)| t.is_empty()) {
        return Err(DomXmlError::NoDiskWithFile(m.from.clone()));
    }
    Ok(MovedDisks {
        xml: tree::render(&root),
        targets: found.into_iter().flatten().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domxml::tree::{parse_elements, Element};
    use crate::domxml::Domain;

    /// What libvirt hands back for a running domain: addresses,
    /// controllers, aliases, a backing chain.
    const RUNNING: &str = include_str!("../../tests/golden/libvirt_dumpxml_running.xml");
    const ROOT: &str = "/var/lib/orrery/pool/root.qcow2";
    const ISO: &str = "/var/lib/orrery/iso/debian-12.iso";

    fn tree_of(xml: &str) -> Element {
        parse_elements(xml).unwrap().remove(0)
    }

    fn disk_sources(xml: &str) -> Vec<(String, Option<String>)> {
        Domain::from_xml(xml)
            .unwrap()
            .devices
            .disks
            .into_iter()
            .map(|d| (d.target_dev, d.source))
            .collect()
    }

    #[test]
    fn a_moved_disk_gets_its_new_file_and_nothing_else_changes() {
        let moved = move_disk_files(
            RUNNING,
            &[DiskFileMove {
                from: ROOT.to_string(),
                to: "/var/lib/orrery/local/root.qcow2".to_string(),
            }],
        )
        .unwrap();
        assert_eq!(moved.targets, vec!["vda"]);
        assert_eq!(
            disk_sources(&moved.xml),
            vec![
                (
                    "vda".to_string(),
                    Some("/var/lib/orrery/local/root.qcow2".to_string())
                ),
                ("hdc".to_string(), Some(ISO.to_string())),
            ]
        );

        // The same document but for the moved disk's file and backing chain:
        // the unmoved CD-ROM keeps its (empty) backing store, every address
        // and controller is still there.
        let mut expected = tree_of(RUNNING);
        let devices = expected.first_child_mut("devices").unwrap();
        let disk = devices.first_child_mut("disk").unwrap();
        disk.first_child_mut("source")
            .unwrap()
            .set_attr("file", "/var/lib/orrery/local/root.qcow2");
        disk.remove_children_named("backingStore");
        assert_eq!(strip_layout(tree_of(&moved.xml)), strip_layout(expected));
        assert!(moved.xml.contains("<controller type=\"sata\" index=\"0\">"));
        assert!(moved
            .xml
            .contains("<address type=\"pci\" domain=\"0x0000\" bus=\"0x04\""));
        assert!(moved
            .xml
            .contains("<source file=\"/var/lib/orrery/local/root.qcow2\" index=\"2\"/>"));
    }

    /// Whitespace between elements is layout, which rendering redoes.
    fn strip_layout(mut e: Element) -> Element {
        use crate::domxml::tree::Node;
        let has_elements = e.elements().next().is_some();
        e.children = e
            .children
            .into_iter()
            .filter_map(|n| match n {
                Node::Text(t) if has_elements && t.trim().is_empty() => None,
                Node::Element(c) => Some(Node::Element(strip_layout(c))),
                other => Some(other),
            })
            .collect();
        e
    }

    #[test]
    fn several_moves_report_their_targets_in_order() {
        let moved = move_disk_files(
            RUNNING,
            &[
                DiskFileMove {
                    from: ISO.to_string(),
                    to: "/elsewhere/iso.iso".to_string(),
                },
                DiskFileMove {
                    // Spelled differently, the same path.
                    from: "/var/lib/orrery//pool/root.qcow2".to_string(),
                    to: "/elsewhere/root.qcow2".to_string(),
                },
            ],
        )
        .unwrap();
        assert_eq!(moved.targets, vec!["hdc", "vda"]);
        assert_eq!(
            disk_sources(&moved.xml),
            vec![
                ("vda".to_string(), Some("/elsewhere/root.qcow2".to_string())),
                ("hdc".to_string(), Some("/elsewhere/iso.iso".to_string())),
            ]
        );
    }

    #[test]
    fn no_moves_keep_the_document() {
        let moved = move_disk_files(RUNNING, &[]).unwrap();
        assert!(moved.targets.is_empty());
        assert_eq!(
            strip_layout(tree_of(&moved.xml)),
            strip_layout(tree_of(RUNNING))
        );
    }

    #[test]
    fn a_file_no_disk_uses_is_an_error() {
        let err = move_disk_files(
            RUNNING,
            &[
                DiskFileMove {
                    from: ROOT.to_string(),
                    to: "/x/root.qcow2".to_string(),
                },
                DiskFileMove {
                    from: "/var/lib/orrery/pool/other.qcow2".to_string(),
                    to: "/x/other.qcow2".to_string(),
                },
            ],
        )
        .unwrap_err();
        assert_eq!(
            err,
            DomXmlError::NoDiskWithFile("/var/lib/orrery/pool/other.qcow2".to_string())
        );
        assert!(matches!(
            move_disk_files("<network/>", &[]),
            Err(DomXmlError::NotADomain { .. })
        ));
        assert!(move_disk_files("<domain>", &[]).is_err());
    }
}
