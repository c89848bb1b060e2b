//! A host's GPUs as CloudStack lists them (`gpugroup` with its vGPU types
//! and capacities), from the devices its agent discovered in sysfs.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Pure: `listHosts`' `gpugroup` and the host's GPU total. Cards are
/// grouped by vendor:device; a card bound to vfio-pci counts once as
/// `passthrough`, and each mediated type counts what the cards could create
/// of it when the host reported. `passthrough_used` whole GPUs held by the
/// host's instances come off the passthrough groups' remaining capacity, in
/// group order (the host hands out cards in address order).
pub fn groups(facts: Option<&Value>, passthrough_used: u64) -> (Vec<Value>, u64) {
    let Some(gpus) = facts.and_then(|f| f["gpus"].as_array()) else {
        return (Vec::new(), 0);
    };
    // group -> vgpu type -> (max, remaining)
    let mut by_group: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for g in gpus {
        let name = format!(
            "{}:{}",
            g["vendor_id"].as_str().unwrap_or("?"),
            g["device_id"].as_str().unwrap_or("?")
        );
        let types = by_group.entry(name).or_default();
        if g["driver"].as_str() == Some("vfio-pci") {
            let e = types.entry("passthrough".into()).or_default();
            e.0 += 1;
            e.1 += 1;
        }
        for t in g["mdev_types"].as_array().into_iter().flatten() {
            let avail = t["available"].as_u64().unwrap_or(0);
            let e = types
                .entry(t["name"].as_str().unwrap_or("?").to_string())
                .or_default();
            e.0 += avail;
            e.1 += avail;
        }
    }
    let mut used = passthrough_used;
    for types in by_group.values_mut() {
        if let Some(p) = types.get_mut("passthrough") {
            let take = used.min(p.1);
            p.1 -= take;
            used -= take;
        }
    }
    let out = by_group
        .into_iter()
        .map(|(name, types)| {
            json!({
                "gpugroupname": name,
                "vgpu": types.into_iter().map(|(t, (max, free))| json!({
                    "vgputype": t,
                    "maxcapacity": max,
                    "remainingcapacity": free,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    (out, gpus.len() as u64)
}

/// Pure: GPU devices placement may hand out whole (passthrough-ready).
pub fn passthrough_count(facts: Option<&Value>) -> u32 {
    facts
        .and_then(|f| f["gpus"].as_array())
        .map(|g| {
            g.iter()
                .filter(|d| d["driver"].as_str() == Some("vfio-pci"))
                .count() as u32
        })
        .unwrap_or(0)
}

/// Pure: the vGPU types a host's cards offer, each by type id and name.
pub fn vgpu_types(facts: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    for g in facts
        .and_then(|f| f["gpus"].as_array())
        .into_iter()
        .flatten()
    {
        for t in g["mdev_types"].as_array().into_iter().flatten() {
            for k in ["type_id", "name"] {
                if let Some(v) = t[k].as_str() {
                    if !out.iter().any(|o: &String| o == v) {
                        out.push(v.to_string());
                    }
                }
            }
        }
    }
    out
}

impl super::Service {
    /// Whole GPUs the instances holding a host (running, or about to) have.
    pub fn gpus_used_on(&self, h: &super::Host) -> u64 {
        self.capacity
            .instances(h.zone_id)
            .iter()
            .filter(|i| i.host_id == Some(h.id))
            .map(|i| u64::from(i.gpu_count))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_group_by_ids_with_passthrough_and_vgpu_capacity() {
        let facts = json!({"gpus": [
            {"address": "0000:3b:00.0", "vendor_id": "10de", "device_id": "1db6", "driver": "vfio-pci", "mdev_types": []},
            {"address": "0000:5e:00.0", "vendor_id": "10de", "device_id": "1db6", "driver": "vfio-pci", "mdev_types": []},
            {"address": "0000:af:00.0", "vendor_id": "10de", "device_id": "1eb8", "driver": "nvidia", "mdev_types": [
                {"type_id": "nvidia-222", "name": "GRID T4-1B", "available": 16},
                {"type_id": "nvidia-231", "name": "GRID T4-8Q", "available": 2}]}
        ]});
        let (listed, total) = groups(Some(&facts), 0);
        assert_eq!(total, 3);
        assert_eq!(listed[0]["gpugroupname"], "10de:1db6");
        assert_eq!(
            listed[0]["vgpu"][0],
            json!({"vgputype": "passthrough", "maxcapacity": 2, "remainingcapacity": 2})
        );
        assert_eq!(listed[1]["vgpu"].as_array().unwrap().len(), 2);
        assert_eq!(listed[1]["vgpu"][1]["maxcapacity"], 2);
        assert_eq!(passthrough_count(Some(&facts)), 2);
        // One held by an instance: one left.
        let (listed, _) = groups(Some(&facts), 1);
        assert_eq!(
            listed[0]["vgpu"][0],
            json!({"vgputype": "passthrough", "maxcapacity": 2, "remainingcapacity": 1})
        );
        assert_eq!(
            vgpu_types(Some(&facts)),
            vec!["nvidia-222", "GRID T4-1B", "nvidia-231", "GRID T4-8Q"]
        );
    }

    #[test]
    fn hosts_without_facts_have_no_gpus() {
        assert_eq!(groups(None, 0), (Vec::new(), 0));
        assert_eq!(passthrough_count(None), 0);
    }
}
