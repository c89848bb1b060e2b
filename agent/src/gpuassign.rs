//! GPUs for an instance about to start on this host: whole GPUs (PCI
//! functions bound to vfio-pci) that no other active domain holds, or a
//! vGPU (mediated device) created on a card whose type has room. This host
//! is the truth about what is in use: a domain that stops frees its whole
//! GPUs with it, and its mediated devices are removed at stop.
//!
//! A mediated device is named by the instance's uuid, so a restart finds
//! (and reuses) the one it made before.

use std::path::{Path, PathBuf};

use orrery_proto::v1 as pb;

use crate::designer::GpuSpec;
use crate::domxml::{self, Hostdev};
use crate::host::gpu::{self, GpuDevice};
use crate::hypervisor::Power;
use crate::ops::{OpError, Ops};

/// Pure: the first `n` passthrough-ready cards not in `used`.
pub fn pick_passthrough(
    cards: &[GpuDevice],
    used: &[String],
    n: usize,
) -> Result<Vec<String>, String> {
    let free: Vec<String> = cards
        .iter()
        .filter(|c| c.driver.as_deref() == Some("vfio-pci") && !used.contains(&c.address))
        .map(|c| c.address.clone())
        .collect();
    if free.len() < n {
        return Err(format!(
            "this host has {} free GPU(s) bound to vfio-pci; {n} asked for",
            free.len()
        ));
    }
    Ok(free.into_iter().take(n).collect())
}

/// Pure: the card and type id that can create another vGPU of `wanted`
/// (a type id or name), the one with most room first.
pub fn pick_vgpu(cards: &[GpuDevice], wanted: &str) -> Result<(String, String), String> {
    cards
        .iter()
        .flat_map(|c| {
            c.mdev_types
                .iter()
                .filter(|t| t.type_id == wanted || t.name.eq_ignore_ascii_case(wanted))
                .map(move |t| (c, t))
        })
        .filter(|(_, t)| t.available > 0)
        .max_by_key(|(_, t)| t.available)
        .map(|(c, t)| (c.address.clone(), t.type_id.clone()))
        .ok_or_else(|| format!("no card on this host can create another vGPU of type {wanted}"))
}

fn mdev_dir(sysfs: &Path, uuid: &str) -> PathBuf {
    sysfs.join("bus/mdev/devices").join(uuid)
}

impl Ops {
    /// The GPUs `s` asks for, assigned on this host.
    pub async fn assign_gpu(&self, s: &pb::InstanceSpec) -> Result<Option<GpuSpec>, OpError> {
        if s.gpu_count == 0 && s.vgpu_type.is_empty() {
            return Ok(None);
        }
        let sysfs = self.cfg.sysfs_root.clone();
        let cards = gpu::discover(&sysfs);
        if !s.vgpu_type.is_empty() {
            let uuid = s.uuid.to_ascii_lowercase();
            let existing = mdev_dir(&sysfs, &uuid);
            if let Ok(t) = std::fs::read_link(existing.join("mdev_type")) {
                let mdev_type = t
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(Some(GpuSpec::Mdev { uuid, mdev_type }));
            }
            let (card, type_id) = pick_vgpu(&cards, &s.vgpu_type).map_err(OpError::Invalid)?;
            let create = sysfs
                .join("bus/pci/devices")
                .join(&card)
                .join("mdev_supported_types")
                .join(&type_id)
                .join("create");
            tokio::fs::write(&create, format!("{uuid}\n"))
                .await
                .map_err(|e| {
                    OpError::Setup(format!("creating a vGPU at {}: {e}", create.display()))
                })?;
            return Ok(Some(GpuSpec::Mdev {
                uuid,
                mdev_type: type_id,
            }));
        }
        let used = self.gpus_in_use(&s.name).await?;
        let picked =
            pick_passthrough(&cards, &used, s.gpu_count as usize).map_err(OpError::Invalid)?;
        Ok(Some(GpuSpec::Passthrough {
            pci_addresses: picked,
        }))
    }

    /// PCI addresses other active domains hold.
    async fn gpus_in_use(&self, except: &str) -> Result<Vec<String>, OpError> {
        let mut used = Vec::new();
        for d in self.hv.domains().await? {
            if d.name == except || d.power == Power::Off {
                continue;
            }
            let Ok(xml) = self.hv.domain_xml(&d.name).await else {
                continue;
            };
            if let Ok(dom) = domxml::Domain::from_xml(&xml) {
                for h in &dom.devices.hostdevs {
                    if let Hostdev::Pci { address, .. } = h {
                        used.push(address.to_string());
                    }
                }
            }
        }
        Ok(used)
    }

    /// Removes the mediated devices a stopped domain used (`xml`, its
    /// definition); a device already gone is fine.
    pub async fn release_vgpus(&self, xml: &str) {
        let Ok(dom) = domxml::Domain::from_xml(xml) else {
            return;
        };
        for h in &dom.devices.hostdevs {
            if let Hostdev::Mdev { uuid, .. } = h {
                let remove = mdev_dir(&self.cfg.sysfs_root, uuid).join("remove");
                if tokio::fs::try_exists(&remove).await.unwrap_or(false) {
                    if let Err(e) = tokio::fs::write(&remove, "1\n").await {
                        tracing::warn!(mdev = %uuid, error = %e, "removing a vGPU");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::gpu::fixture;

    #[test]
    fn whole_gpus_are_the_free_vfio_ones() {
        let dir = tempfile::tempdir().unwrap();
        fixture::build(dir.path());
        let cards = gpu::discover(dir.path());
        assert_eq!(
            pick_passthrough(&cards, &[], 2).unwrap(),
            vec!["0000:3b:00.0", "0000:5e:00.0"]
        );
        assert_eq!(
            pick_passthrough(&cards, &["0000:3b:00.0".into()], 1).unwrap(),
            vec!["0000:5e:00.0"]
        );
        // The nvidia-bound card is not passed through whole.
        let err = pick_passthrough(&cards, &["0000:3b:00.0".into()], 2).unwrap_err();
        assert!(err.contains("1 free GPU"), "{err}");
    }

    #[test]
    fn a_vgpu_comes_from_a_type_with_room_by_id_or_name() {
        let dir = tempfile::tempdir().unwrap();
        fixture::build(dir.path());
        let cards = gpu::discover(dir.path());
        assert_eq!(
            pick_vgpu(&cards, "GRID T4-8Q").unwrap(),
            ("0000:af:00.0".to_string(), "nvidia-231".to_string())
        );
        assert_eq!(pick_vgpu(&cards, "nvidia-222").unwrap().1, "nvidia-222");
        assert!(pick_vgpu(&cards, "GRID A100-40C").is_err());
        let full = dir.path().join(
            "bus/pci/devices/0000:af:00.0/mdev_supported_types/nvidia-231/available_instances",
        );
        std::fs::write(full, "0\n").unwrap();
        let cards = gpu::discover(dir.path());
        assert!(pick_vgpu(&cards, "GRID T4-8Q").is_err());
    }
}
