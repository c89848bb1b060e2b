//! GPUs on this host, read from sysfs: PCI display controllers (class
//! 0x03xxxx) with their vendor and device ids, driver and IOMMU group, and
//! the mediated-device (vGPU) types a card offers with how many more of
//! each it can create. The sysfs root is a parameter so tests (and
//! `orrery-agent debug facts --sysfs-root`) can use a fixture tree.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MdevType {
    /// The type's directory name, e.g. `nvidia-63`: what creating one names.
    pub type_id: String,
    /// Its `name` file (e.g. `GRID T4-2Q`), else the type id.
    pub name: String,
    /// `available_instances`: how many more the card can create.
    pub available: u32,
    /// Mediated devices of this type the card has now (its `devices/`):
    /// with `available`, what the type holds in all, which stays the same
    /// while instances come and go.
    pub created: u32,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuDevice {
    /// PCI address `DDDD:BB:SS.F`.
    pub address: String,
    /// `10de`, `1002`, ... without the 0x.
    pub vendor_id: String,
    pub device_id: String,
    /// The bound driver (`vfio-pci` when ready for passthrough).
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub mdev_types: Vec<MdevType>,
}

impl GpuDevice {
    /// The group CloudStack lists a card under: its vendor and device ids.
    pub fn group_name(&self) -> String {
        format!("{}:{}", self.vendor_id, self.device_id)
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn hex_id(p: &Path) -> Option<String> {
    read_trim(p).map(|s| s.trim_start_matches("0x").to_ascii_lowercase())
}

/// Every PCI display controller under `<sysfs>/bus/pci/devices`, in address
/// order. Unreadable entries are skipped: a host without GPUs, or without
/// sysfs, simply has none.
pub fn discover(sysfs: &Path) -> Vec<GpuDevice> {
    let Ok(rd) = std::fs::read_dir(sysfs.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out: Vec<GpuDevice> = rd
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let class = hex_id(&dir.join("class"))?;
            // Base class 0x03: VGA, XGA and 3D controllers.
            if !class.starts_with("03") {
                return None;
            }
            let link_name = |name: &str| {
                std::fs::read_link(dir.join(name))
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            Some(GpuDevice {
                address: e.file_name().to_string_lossy().into_owned(),
                vendor_id: hex_id(&dir.join("vendor"))?,
                device_id: hex_id(&dir.join("device"))?,
                driver: link_name("driver"),
                iommu_group: link_name("iommu_group").and_then(|g| g.parse().ok()),
                mdev_types: mdev_types(&dir.join("mdev_supported_types")),
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

fn mdev_types(dir: &Path) -> Vec<MdevType> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut types: Vec<MdevType> = rd
        .flatten()
        .map(|e| {
            let p = e.path();
            let type_id = e.file_name().to_string_lossy().into_owned();
            MdevType {
                name: read_trim(&p.join("name")).unwrap_or_else(|| type_id.clone()),
                available: read_trim(&p.join("available_instances"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                created: std::fs::read_dir(p.join("devices"))
                    .map(|d| d.flatten().count() as u32)
                    .unwrap_or(0),
                description: read_trim(&p.join("description")).unwrap_or_default(),
                type_id,
            }
        })
        .collect();
    types.sort_by(|a, b| a.type_id.cmp(&b.type_id));
    types
}

#[cfg(test)]
pub(crate) mod fixture {
    use std::path::Path;

    /// A sysfs tree with two passthrough GPUs (bound to vfio-pci), a card
    /// offering two mdev types, a NIC, and a device without a class file.
    pub fn build(root: &Path) {
        let dev =
            |addr: &str, class: &str, vendor: &str, device: &str, driver: &str, group: u32| {
                let d = root.join("bus/pci/devices").join(addr);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
                std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
                std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
                let drv = root.join("bus/pci/drivers").join(driver);
                std::fs::create_dir_all(&drv).unwrap();
                std::os::unix::fs::symlink(&drv, d.join("driver")).unwrap();
                let g = root.join("kernel/iommu_groups").join(group.to_string());
                std::fs::create_dir_all(&g).unwrap();
                std::os::unix::fs::symlink(&g, d.join("iommu_group")).unwrap();
                d
            };
        dev(
            "0000:3b:00.0",
            "0x030200",
            "0x10de",
            "0x1db6",
            "vfio-pci",
            30,
        );
        dev(
            "0000:5e:00.0",
            "0x030200",
            "0x10de",
            "0x1db6",
            "vfio-pci",
            31,
        );
        let card = dev("0000:af:00.0", "0x030000", "0x10de", "0x1eb8", "nvidia", 40);
        for (t, name, avail) in [
            ("nvidia-222", "GRID T4-1B", 16),
            ("nvidia-231", "GRID T4-8Q", 2),
        ] {
            let p = card.join("mdev_supported_types").join(t);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(p.join("available_instances"), format!("{avail}\n")).unwrap();
            std::fs::write(p.join("description"), "num_heads=4\n").unwrap();
            std::fs::write(p.join("device_api"), "vfio-pci\n").unwrap();
            std::fs::create_dir_all(p.join("devices")).unwrap();
        }
        dev("0000:18:00.0", "0x020000", "0x8086", "0x1572", "i40e", 12);
        std::fs::create_dir_all(root.join("bus/pci/devices/0000:00:1f.4")).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_controllers_with_their_mdev_types() {
        let dir = tempfile::tempdir().unwrap();
        fixture::build(dir.path());
        let gpus = discover(dir.path());
        assert_eq!(
            gpus.iter().map(|g| g.address.as_str()).collect::<Vec<_>>(),
            vec!["0000:3b:00.0", "0000:5e:00.0", "0000:af:00.0"]
        );
        assert_eq!(gpus[0].group_name(), "10de:1db6");
        assert_eq!(gpus[0].driver.as_deref(), Some("vfio-pci"));
        assert_eq!(gpus[0].iommu_group, Some(30));
        assert!(gpus[0].mdev_types.is_empty());
        let t = &gpus[2].mdev_types;
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].type_id.as_str(), t[0].name.as_str(), t[0].available),
            ("nvidia-222", "GRID T4-1B", 16)
        );
        assert_eq!(t[1].available, 2);
        assert_eq!(t[1].created, 0);
        // One made: the card has one fewer to offer and counts the one made.
        let ty = dir
            .path()
            .join("bus/pci/devices/0000:af:00.0/mdev_supported_types/nvidia-231");
        std::fs::write(ty.join("available_instances"), "1\n").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("bus/mdev/devices/x"),
            ty.join("devices/0b5ca1ee-0000-4000-8000-000000000001"),
        )
        .unwrap();
        let t = &discover(dir.path())[2].mdev_types[1];
        assert_eq!((t.available, t.created), (1, 1));
    }

    #[test]
    fn no_sysfs_no_gpus() {
        assert!(discover(Path::new("/nonexistent-sysfs")).is_empty());
    }
}
