//! A host's GPUs as CloudStack lists them (`gpugroup` with its vGPU types
//! and capacities), from the devices its agent discovered in sysfs.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use crate::placement as pl;

/// What a host's instances hold of its GPUs: whole cards, and vGPUs by the
/// type name their offerings use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpusInUse {
    pub passthrough: u64,
    pub vgpus: Vec<String>,
}

/// A mediated type's whole capacity: what its cards can still make plus
/// what they have made, which stays put while instances come and go.
fn mdev_max(t: &Value) -> u64 {
    t["available"].as_u64().unwrap_or(0) + t["created"].as_u64().unwrap_or(0)
}

/// Pure: `listHosts`' `gpugroup` and the host's GPU total. Cards are
/// grouped by vendor:device; a card bound to vfio-pci counts once as
/// `passthrough`, and each mediated type counts what its cards hold. What
/// the host's instances hold comes off the remaining capacity, in group
/// order (the host hands out cards in address order).
pub fn groups(facts: Option<&Value>, used: &GpusInUse) -> (Vec<Value>, u64) {
    let Some(gpus) = facts.and_then(|f| f["gpus"].as_array()) else {
        return (Vec::new(), 0);
    };
    // group -> listed type name -> (names it answers to, max, remaining)
    type Types = BTreeMap<String, (Vec<String>, u64, u64)>;
    let mut by_group: BTreeMap<String, Types> = BTreeMap::new();
    for g in gpus {
        let name = format!(
            "{}:{}",
            g["vendor_id"].as_str().unwrap_or("?"),
            g["device_id"].as_str().unwrap_or("?")
        );
        let types = by_group.entry(name).or_default();
        if g["driver"].as_str() == Some("vfio-pci") {
            let e = types.entry("passthrough".into()).or_default();
            e.1 += 1;
            e.2 += 1;
        }
        for t in g["mdev_types"].as_array().into_iter().flatten() {
            let max = mdev_max(t);
            let listed = t["name"].as_str().unwrap_or("?").to_string();
            let e = types.entry(listed.clone()).or_default();
            if e.0.is_empty() {
                e.0 = vec![listed, t["type_id"].as_str().unwrap_or("?").to_string()];
            }
            e.1 += max;
            e.2 += max;
        }
    }
    let mut passthrough = used.passthrough;
    let mut vgpus = used.vgpus.clone();
    for types in by_group.values_mut() {
        for (listed, (names, _, free)) in types.iter_mut() {
            if listed == "passthrough" {
                let take = passthrough.min(*free);
                *free -= take;
                passthrough -= take;
                continue;
            }
            while *free > 0 {
                let Some(i) = vgpus
                    .iter()
                    .position(|v| names.iter().any(|n| n.eq_ignore_ascii_case(v)))
                else {
                    break;
                };
                vgpus.swap_remove(i);
                *free -= 1;
            }
        }
    }
    let out = by_group
        .into_iter()
        .map(|(name, types)| {
            json!({
                "gpugroupname": name,
                "vgpu": types.into_iter().map(|(t, (_, max, free))| json!({
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

/// Pure: the vGPU types a host's cards offer, each under its type id and
/// name, with what all its cards hold of it.
pub fn vgpu_capacity(facts: Option<&Value>) -> Vec<pl::VgpuCapacity> {
    let mut out: Vec<pl::VgpuCapacity> = Vec::new();
    for g in facts
        .and_then(|f| f["gpus"].as_array())
        .into_iter()
        .flatten()
    {
        for t in g["mdev_types"].as_array().into_iter().flatten() {
            let Some(type_id) = t["type_id"].as_str() else {
                continue;
            };
            let max = u32::try_from(mdev_max(t)).unwrap_or(u32::MAX);
            match out.iter_mut().find(|c| c.names[0] == type_id) {
                Some(c) => c.max = c.max.saturating_add(max),
                None => {
                    let mut names = vec![type_id.to_string()];
                    if let Some(n) = t["name"].as_str().filter(|n| *n != type_id) {
                        names.push(n.to_string());
                    }
                    out.push(pl::VgpuCapacity { names, max });
                }
            }
        }
    }
    out
}

impl super::Service {
    /// What the instances holding a host (running, or about to) have of
    /// its GPUs.
    pub fn gpus_used_on(&self, h: &super::Host) -> GpusInUse {
        let mut used = GpusInUse::default();
        for i in self
            .capacity
            .instances(h.zone_id)
            .iter()
            .filter(|i| i.host_id == Some(h.id))
        {
            used.passthrough += u64::from(i.gpu_count);
            if let Some(t) = &i.vgpu_type {
                used.vgpus.push(t.clone());
            }
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Value {
        json!({"gpus": [
            {"address": "0000:3b:00.0", "vendor_id": "10de", "device_id": "1db6", "driver": "vfio-pci", "mdev_types": []},
            {"address": "0000:5e:00.0", "vendor_id": "10de", "device_id": "1db6", "driver": "vfio-pci", "mdev_types": []},
            {"address": "0000:af:00.0", "vendor_id": "10de", "device_id": "1eb8", "driver": "nvidia", "mdev_types": [
                {"type_id": "nvidia-222", "name": "GRID T4-1B", "available": 16},
                {"type_id": "nvidia-231", "name": "GRID T4-8Q", "available": 1, "created": 1}]}
        ]})
    }

    #[test]
    fn cards_group_by_ids_with_passthrough_and_vgpu_capacity() {
        let facts = facts();
        let (listed, total) = groups(Some(&facts), &GpusInUse::default());
        assert_eq!(total, 3);
        assert_eq!(listed[0]["gpugroupname"], "10de:1db6");
        assert_eq!(
            listed[0]["vgpu"][0],
            json!({"vgputype": "passthrough", "maxcapacity": 2, "remainingcapacity": 2})
        );
        assert_eq!(listed[1]["vgpu"].as_array().unwrap().len(), 2);
        // One made and one still to make: two in all.
        assert_eq!(listed[1]["vgpu"][1]["maxcapacity"], 2);
        assert_eq!(passthrough_count(Some(&facts)), 2);
        // A card and two 8Q vGPUs (one asked for by type id) held: one card
        // left, no 8Q left, however the offering names the type.
        let used = GpusInUse {
            passthrough: 1,
            vgpus: vec!["nvidia-231".into(), "grid t4-8q".into()],
        };
        let (listed, _) = groups(Some(&facts), &used);
        assert_eq!(
            listed[0]["vgpu"][0],
            json!({"vgputype": "passthrough", "maxcapacity": 2, "remainingcapacity": 1})
        );
        assert_eq!(
            listed[1]["vgpu"][1],
            json!({"vgputype": "GRID T4-8Q", "maxcapacity": 2, "remainingcapacity": 0})
        );
        assert_eq!(listed[1]["vgpu"][0]["remainingcapacity"], 16);
    }

    #[test]
    fn vgpu_capacity_sums_cards_by_type() {
        let mut facts = facts();
        let second = json!({"address": "0000:d8:00.0", "vendor_id": "10de", "device_id": "1eb8",
            "driver": "nvidia", "mdev_types": [
                {"type_id": "nvidia-231", "name": "GRID T4-8Q", "available": 2}]});
        facts["gpus"].as_array_mut().unwrap().push(second);
        let caps = vgpu_capacity(Some(&facts));
        assert_eq!(
            caps,
            vec![
                pl::VgpuCapacity {
                    names: vec!["nvidia-222".into(), "GRID T4-1B".into()],
                    max: 16
                },
                pl::VgpuCapacity {
                    names: vec!["nvidia-231".into(), "GRID T4-8Q".into()],
                    max: 4
                },
            ]
        );
        assert!(caps[1].is("grid t4-8q") && caps[1].is("nvidia-231") && !caps[1].is("nvidia-222"));
    }

    #[test]
    fn hosts_without_facts_have_no_gpus() {
        assert_eq!(groups(None, &GpusInUse::default()), (Vec::new(), 0));
        assert_eq!(passthrough_count(None), 0);
        assert!(vgpu_capacity(None).is_empty());
    }
}
