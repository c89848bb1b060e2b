//! Records rendered as CloudStack response objects. Related names are looked up
//! once per reply through a small cache.

use super::render::{date, Obj};
use crate::error::ApiError;
use crate::service::error::JobFailure;
use crate::service::jobs::JobOutput;
use crate::service::records::*;
use crate::service::Record;
use crate::service::{Caller, SResult, Service};
use serde_json::{json, Value};
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// Per-reply cache of related records, kept typed so a hit is a clone.
pub struct Lookup<'a> {
    svc: &'a Service,
    cache: HashMap<(std::any::TypeId, i64), Option<Arc<dyn Any + Send + Sync>>>,
    /// NICs per instance, when a list loaded them for the whole page at once.
    nics: Option<HashMap<i64, Vec<Nic>>>,
    /// The pool of volumes without one of their own, per zone.
    zone_pools: HashMap<i64, Option<StoragePool>>,
}

impl<'a> Lookup<'a> {
    pub fn new(svc: &'a Service) -> Self {
        Lookup {
            svc,
            cache: HashMap::new(),
            nics: None,
            zone_pools: HashMap::new(),
        }
    }

    /// The pool a volume is on (see `Service::volume_pool`), looked up once
    /// per zone for volumes without a pool of their own.
    pub async fn pool_of(&mut self, v: &Volume) -> SResult<Option<StoragePool>> {
        if v.pool_id.is_some() {
            return self.get(v.pool_id).await;
        }
        if let Some(p) = self.zone_pools.get(&v.zone_id) {
            return Ok(p.clone());
        }
        let p = self.svc.infrastructure.volume_pool(v).await?;
        self.zone_pools.insert(v.zone_id, p.clone());
        Ok(p)
    }
    pub async fn get<E: Record + 'static>(&mut self, id: Option<i64>) -> SResult<Option<E>> {
        let Some(id) = id else { return Ok(None) };
        let k = (std::any::TypeId::of::<E>(), id);
        if let Some(v) = self.cache.get(&k) {
            return Ok(v.as_ref().and_then(|v| v.downcast_ref::<E>().cloned()));
        }
        let e: Option<E> = self.svc.load_cached(id).await?;
        self.cache.insert(
            k,
            e.clone().map(|x| Arc::new(x) as Arc<dyn Any + Send + Sync>),
        );
        Ok(e)
    }

    /// Loads the NICs of a page of instances in one query.
    pub async fn prefetch_nics(&mut self, vm_ids: &[i64]) -> SResult<()> {
        self.nics = Some(self.svc.nics_of_many(vm_ids).await?);
        Ok(())
    }

    async fn nics_of(&mut self, vm_id: i64) -> SResult<Vec<Nic>> {
        if let Some(n) = self.nics.as_ref().and_then(|m| m.get(&vm_id)) {
            return Ok(n.clone());
        }
        self.svc.nics_of(vm_id).await
    }
}

pub async fn vm(
    l: &mut Lookup<'_>,
    caller: &Caller,
    v: &Vm,
    job: Option<(&str, i64)>,
) -> SResult<Value> {
    let zone: Option<Zone> = l.get(Some(v.zone_id)).await?;
    let acct: Option<Account> = l.get(Some(v.account_id)).await?;
    let dom: Option<Domain> = l.get(Some(v.domain_id)).await?;
    let tmpl: Option<Template> = l.get(v.template_id).await?;
    let iso: Option<Template> = l.get(v.iso_id).await?;
    let so: Option<ServiceOffering> = l.get(Some(v.service_offering_id)).await?;
    let dso: Option<DiskOffering> = l.get(v.disk_offering_id).await?;
    let host: Option<Host> = l.get(v.host_id).await?;
    let group: Option<InstanceGroup> = l.get(v.group_id).await?;
    let os: Option<OsType> = l.get(Some(v.os_type_id)).await?;
    let user: Option<User> = l.get(Some(v.user_id)).await?;
    let nics = l.nics_of(v.id).await?;
    let mut groups = Vec::new();
    for gid in &v.affinity_group_ids {
        if let Some(g) = l.get::<AffinityGroup>(Some(*gid)).await? {
            groups.push(json!({
                "id": g.uuid, "name": g.name, "type": g.group_type,
                "description": g.description.unwrap_or_default(),
            }));
        }
    }
    let mut nic_json = Vec::new();
    for n in &nics {
        let net: Option<Network> = l.get(Some(n.network_id)).await?;
        nic_json.push(
            Obj::new()
                .s("id", &n.uuid)
                .os("networkid", net.as_ref().map(|x| x.uuid.clone()))
                .os("networkname", net.as_ref().map(|x| x.name.clone()))
                .s("netmask", &n.netmask)
                .s("gateway", &n.gateway)
                .s("ipaddress", &n.ip_address)
                .s("isolationuri", "vlan://untagged")
                .s("broadcasturi", "vlan://untagged")
                .s("traffictype", "Guest")
                .s(
                    "type",
                    net.as_ref()
                        .map(|x| x.guest_type.clone())
                        .unwrap_or_else(|| "Shared".into()),
                )
                .v("isdefault", n.is_default)
                .s("macaddress", &n.mac_address)
                .s("deviceid", n.device_id.to_string())
                .s("virtualmachineid", &v.uuid)
                .v("secondaryip", json!([]))
                .v("extradhcpoption", json!([]))
                .build(),
        );
    }
    let admin = caller.is_root_admin();
    let ud: Option<UserData> = match v.userdata_id {
        Some(id) => l.svc.load_cached(id).await?,
        None => None,
    };
    let details: serde_json::Map<String, Value> = l
        .svc
        .visible_details(caller, &v.details)
        .iter()
        .map(|(k, x)| (k.clone(), json!(x)))
        .collect();
    Ok(Obj::new()
        .s("id", &v.uuid)
        .s("name", &v.name)
        .s("displayname", &v.display_name)
        .when(admin, |o| o.s("instancename", &v.instance_name))
        .os("account", acct.map(|a| a.name))
        .os("userid", user.as_ref().map(|u| u.uuid.clone()))
        .os("username", user.map(|u| u.username))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.as_ref().map(|d| d.name.clone()))
        .os("domainpath", dom.map(|d| d.path))
        .s("created", date(v.created))
        .s("lastupdated", date(v.last_updated))
        .s("state", v.state.as_str())
        .v("haenable", v.ha_enable)
        .os("groupid", group.as_ref().map(|g| g.uuid.clone()))
        .os("group", group.map(|g| g.name))
        .os("zoneid", zone.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", zone.map(|z| z.name))
        .when(admin, |o| {
            o.os("hostid", host.as_ref().map(|h| h.uuid.clone()))
                .os("hostname", host.as_ref().map(|h| h.name.clone()))
        })
        .os("templateid", tmpl.as_ref().map(|t| t.uuid.clone()))
        .os("templatename", tmpl.as_ref().map(|t| t.name.clone()))
        .os(
            "templatedisplaytext",
            tmpl.as_ref().map(|t| t.display_text.clone()),
        )
        .os(
            "templatetype",
            tmpl.as_ref().map(|t| t.template_type.clone()),
        )
        .os("templateformat", tmpl.as_ref().map(|t| t.format.clone()))
        .os("isoid", iso.as_ref().map(|t| t.uuid.clone()))
        .os("isoname", iso.as_ref().map(|t| t.name.clone()))
        .os(
            "isodisplaytext",
            iso.as_ref().map(|t| t.display_text.clone()),
        )
        .v("passwordenabled", v.password_enabled)
        .os("serviceofferingid", so.as_ref().map(|s| s.uuid.clone()))
        .os("serviceofferingname", so.map(|s| s.name))
        .os("diskofferingid", dso.as_ref().map(|s| s.uuid.clone()))
        .os("diskofferingname", dso.map(|s| s.name))
        .v("cpunumber", v.cpu_number)
        .v("cpuspeed", v.cpu_speed)
        .v("memory", v.memory)
        .os("guestosid", os.as_ref().map(|o| o.uuid.clone()))
        .os("ostypeid", os.as_ref().map(|o| o.uuid.clone()))
        .os("osdisplayname", os.map(|o| o.description))
        .v("rootdeviceid", 0)
        .s("rootdevicetype", "ROOT")
        .s("hypervisor", &v.hypervisor)
        .v("securitygroup", json!([]))
        .v("affinitygroup", json!(groups))
        .v("nic", Value::Array(nic_json))
        .v("tags", json!([]))
        .when(!v.keypairs.is_empty(), |o| {
            o.s("keypairs", v.keypairs.join(","))
                .s("keypair", v.keypairs.join(","))
        })
        .os("userdataid", ud.as_ref().map(|u| u.uuid.clone()))
        .os("userdataname", ud.map(|u| u.name))
        .os(
            "userdatapolicy",
            tmpl.as_ref().and_then(|t| t.userdata_policy.clone()),
        )
        .when(!v.userdata_details.is_empty(), |o| {
            // As CloudStack prints the map: {key=value, key2=value2}.
            let pairs: Vec<String> = v
                .userdata_details
                .iter()
                .map(|(k, x)| format!("{k}={x}"))
                .collect();
            o.s("userdatadetails", format!("{{{}}}", pairs.join(", ")))
        })
        .v("details", Value::Object(details))
        .v("isdynamicallyscalable", v.dynamically_scalable)
        .when(caller.is_admin(), |o| o.v("displayvm", v.display_vm))
        .s("bootmode", "legacy")
        .s("boottype", "BIOS")
        .v("deleteprotection", v.delete_protection)
        .when_some(l.svc.statistics.hub.vm_latest(v.id), |o, f| {
            o.s("cpuused", format!("{:.2}%", f.cpu_percent))
                .v("networkkbsread", f.network_kbs_read)
                .v("networkkbswrite", f.network_kbs_write)
                .v("diskkbsread", f.disk_kbs_read)
                .v("diskkbswrite", f.disk_kbs_write)
                .v("diskioread", f.disk_io_read)
                .v("diskiowrite", f.disk_io_write)
                .v("memorykbs", f.memory_kbs)
                .v("memoryintfreekbs", f.memory_free_kbs)
                .v("memorytargetkbs", f.memory_target_kbs)
        })
        .when(v.lease.expires().is_some(), |o| match &v.lease {
            Lease::Active {
                days,
                action,
                expires,
            } => o
                .v("leaseduration", *days)
                .s("leaseexpiryaction", action)
                .s("leaseexpirydate", date(*expires)),
            _ => o,
        })
        .s("arch", "x86_64")
        .when(caller.is_admin(), |o| {
            o.os("extraconfig", v.extraconfig.clone())
        })
        .ov("jobid", job.map(|j| j.0.to_string()))
        .ov("jobstatus", job.map(|j| j.1))
        .build())
}

pub async fn volume(l: &mut Lookup<'_>, caller: &Caller, v: &Volume) -> SResult<Value> {
    let zone: Option<Zone> = l.get(Some(v.zone_id)).await?;
    let acct: Option<Account> = l.get(Some(v.account_id)).await?;
    let dom: Option<Domain> = l.get(Some(v.domain_id)).await?;
    let vm: Option<Vm> = l.get(v.vm_id).await?;
    let dso: Option<DiskOffering> = l.get(v.disk_offering_id).await?;
    let tmpl: Option<Template> = l.get(v.template_id).await?;
    let pool: Option<StoragePool> = l.pool_of(v).await?;
    Ok(Obj::new()
        .s("id", &v.uuid)
        .s("name", &v.name)
        .os("zoneid", zone.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", zone.map(|z| z.name))
        .s("type", &v.volume_type)
        .ov("deviceid", v.device_id)
        .os("virtualmachineid", vm.as_ref().map(|x| x.uuid.clone()))
        .os("vmname", vm.as_ref().map(|x| x.name.clone()))
        .os("vmdisplayname", vm.as_ref().map(|x| x.display_name.clone()))
        .os("vmstate", vm.as_ref().map(|x| x.state.as_str().to_string()))
        .v("size", v.size)
        .s("created", date(v.created))
        .ov("attached", v.attached.map(date))
        .s("state", &v.state)
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.map(|d| d.name))
        .s(
            "storagetype",
            if pool.as_ref().is_some_and(|p| p.scope == "HOST") {
                "local"
            } else {
                "shared"
            },
        )
        .s(
            "hypervisor",
            vm.as_ref()
                .map(|x| x.hypervisor.clone())
                .unwrap_or_else(|| "None".into()),
        )
        .os("diskofferingid", dso.as_ref().map(|d| d.uuid.clone()))
        .os(
            "diskofferingdisplaytext",
            dso.as_ref().map(|d| d.display_text.clone()),
        )
        .os("diskofferingname", dso.map(|d| d.name))
        .s("provisioningtype", "thin")
        .os("templateid", tmpl.as_ref().map(|t| t.uuid.clone()))
        .os("templatename", tmpl.map(|t| t.name))
        .when(caller.is_root_admin(), |o| {
            o.os("storageid", pool.as_ref().map(|p| p.uuid.clone()))
                .os("storage", pool.map(|p| p.name))
        })
        .v("destroyed", v.state == "Destroy")
        .v("isextractable", true)
        .v("tags", json!([]))
        .build())
}

/// A template or ISO as the template lists show it (and a template job's
/// result).
pub async fn template(svc: &Service, t: &Template) -> SResult<Value> {
    let z: Option<Zone> = match t.zone_id {
        Some(z) => svc.load_cached(z).await?,
        None => None,
    };
    let os: Option<OsType> = svc.load_cached(t.os_type_id).await?;
    let a: Option<Account> = svc.load_cached(t.account_id).await?;
    let d: Option<Domain> = svc.load_cached(t.domain_id).await?;
    let ud: Option<UserData> = match t.userdata_id {
        Some(id) => svc.load_cached(id).await?,
        None => None,
    };
    Ok(Obj::new()
        .s("id", &t.uuid)
        .s("name", &t.name)
        .s("displaytext", &t.display_text)
        .os("userdataid", ud.as_ref().map(|u| u.uuid.clone()))
        .os("userdataname", ud.as_ref().map(|u| u.name.clone()))
        .os("userdatapolicy", t.userdata_policy.clone())
        .os("userdataparams", ud.map(|u| u.params.join(",")))
        .s("format", &t.format)
        .s("hypervisor", &t.hypervisor)
        .os("ostypeid", os.as_ref().map(|o| o.uuid.clone()))
        .os("ostypename", os.map(|o| o.description))
        .v("size", t.size)
        .v("physicalsize", t.physical_size)
        .v("isready", t.is_ready)
        .s("status", &t.status)
        .v("ispublic", t.is_public)
        .v("isfeatured", t.is_featured)
        .v("passwordenabled", t.password_enabled)
        .v("isdynamicallyscalable", t.dynamically_scalable)
        .v("bootable", t.bootable)
        .v("isextractable", t.extractable)
        .s("templatetype", &t.template_type)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .v("crossZones", t.zone_id.is_none())
        .os("account", a.map(|a| a.name))
        .os("domainid", d.as_ref().map(|d| d.uuid.clone()))
        .os("domain", d.map(|d| d.name))
        .os("checksum", t.checksum.clone())
        .s("created", date(t.created))
        .v("requireshvm", t.requires_hvm)
        .v("deployasis", false)
        .v("directdownload", false)
        .v("tags", json!([]))
        .v("details", json!(t.details))
        .build())
}

/// A volume snapshot as listSnapshots and createSnapshot show it.
pub async fn volume_snapshot(l: &mut Lookup<'_>, s: &Snapshot) -> SResult<Value> {
    let zone: Option<Zone> = l.get(Some(s.zone_id)).await?;
    let acct: Option<Account> = l.get(Some(s.account_id)).await?;
    let dom: Option<Domain> = l.get(Some(s.domain_id)).await?;
    let vol: Option<Volume> = l.get(Some(s.volume_id)).await?;
    let vm: Option<Vm> = l.get(vol.as_ref().and_then(|v| v.vm_id)).await?;
    let os: Option<OsType> = match (&vol, &vm) {
        (Some(v), Some(vm)) if v.volume_type == "ROOT" => l.get(Some(vm.os_type_id)).await?,
        _ => None,
    };
    Ok(Obj::new()
        .s("id", &s.uuid)
        .s("name", &s.name)
        .os("volumeid", vol.as_ref().map(|v| v.uuid.clone()))
        .os("volumename", vol.as_ref().map(|v| v.name.clone()))
        .os("volumetype", vol.as_ref().map(|v| v.volume_type.clone()))
        .os("volumestate", vol.as_ref().map(|v| v.state.clone()))
        .s("snapshottype", &s.snapshot_type)
        .s("intervaltype", &s.snapshot_type)
        .s("state", &s.state)
        .s("created", date(s.created))
        .v("virtualsize", s.virtual_size)
        .v("physicalsize", s.physical_size)
        .v("revertable", s.state == "BackedUp")
        .s("locationtype", "SECONDARY")
        .os("ostypeid", os.as_ref().map(|o| o.uuid.clone()))
        .os("osdisplayname", os.map(|o| o.description))
        .os("zoneid", zone.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", zone.map(|z| z.name))
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.map(|d| d.name))
        .v("tags", json!([]))
        .v("hasannotations", false)
        .build())
}

/// A snapshot policy as listSnapshotPolicies shows it.
pub async fn snapshot_policy(l: &mut Lookup<'_>, p: &SnapshotPolicy) -> SResult<Value> {
    let vol: Option<Volume> = l.get(Some(p.volume_id)).await?;
    let interval = orrery_schedule::interval::IntervalType::parse(&p.interval_type);
    Ok(Obj::new()
        .s("id", &p.uuid)
        .os("volumeid", vol.as_ref().map(|v| v.uuid.clone()))
        .os("volumename", vol.as_ref().map(|v| v.name.clone()))
        .os("volumestate", vol.map(|v| v.state))
        .s("schedule", &p.schedule)
        // CloudStack gives the interval as its number (0 HOURLY .. 3 MONTHLY).
        .v("intervaltype", interval.map(|i| i.ordinal()).unwrap_or(-1))
        .v("maxsnaps", p.max_snaps)
        .s("timezone", &p.timezone)
        .v("fordisplay", p.for_display)
        .v("tags", json!([]))
        .build())
}

/// An instance snapshot as listVMSnapshot and createVMSnapshot show it.
pub async fn vm_snapshot(l: &mut Lookup<'_>, s: &VmSnapshot) -> SResult<Value> {
    let zone: Option<Zone> = l.get(Some(s.zone_id)).await?;
    let acct: Option<Account> = l.get(Some(s.account_id)).await?;
    let dom: Option<Domain> = l.get(Some(s.domain_id)).await?;
    let vm: Option<Vm> = l.get(Some(s.vm_id)).await?;
    let parent: Option<VmSnapshot> = l.get(s.parent_id).await?;
    Ok(Obj::new()
        .s("id", &s.uuid)
        .s("name", &s.name)
        .s("displayname", &s.display_name)
        .s("description", &s.description)
        .s("state", &s.state)
        .s("type", if s.memory { "DiskAndMemory" } else { "Disk" })
        .v("current", s.current)
        .os("parent", parent.as_ref().map(|p| p.uuid.clone()))
        .os("parentName", parent.map(|p| p.display_name))
        .s("created", date(s.created))
        .os("virtualmachineid", vm.as_ref().map(|v| v.uuid.clone()))
        .os(
            "virtualmachinename",
            vm.as_ref().map(|v| {
                if v.display_name.is_empty() {
                    v.name.clone()
                } else {
                    v.display_name.clone()
                }
            }),
        )
        .os("hypervisor", vm.map(|v| v.hypervisor))
        .os("zoneid", zone.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", zone.map(|z| z.name))
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.map(|d| d.name))
        .v("tags", json!([]))
        .v("hasannotations", false)
        .build())
}

pub async fn affinity_group(svc: &Service, g: &AffinityGroup) -> SResult<Value> {
    let acct: Option<Account> = svc.load_cached(g.account_id).await?;
    let dom: Option<Domain> = svc.load_cached(g.domain_id).await?;
    let members = svc.affinity_members(g.id, g.account_id).await?;
    Ok(Obj::new()
        .s("id", &g.uuid)
        .s("name", &g.name)
        .os("description", g.description.clone())
        .s("type", &g.group_type)
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.as_ref().map(|d| d.name.clone()))
        .os("domainpath", dom.map(|d| d.path))
        .v(
            "virtualmachineIds",
            json!(members.iter().map(|v| v.uuid.clone()).collect::<Vec<_>>()),
        )
        .build())
}

/// An SSH key pair as CloudStack shows it (`privatekey` is added by
/// createSSHKeyPair, the only time it exists).
pub async fn ssh_keypair(svc: &Service, k: &SshKeyPair) -> SResult<Value> {
    let acct: Option<Account> = svc.load_cached(k.account_id).await?;
    let dom: Option<Domain> = svc.load_cached(k.domain_id).await?;
    Ok(Obj::new()
        .s("id", &k.uuid)
        .s("name", &k.name)
        .s("fingerprint", &k.fingerprint)
        .os("account", acct.map(|a| a.name))
        .os("domainid", dom.as_ref().map(|d| d.uuid.clone()))
        .os("domain", dom.as_ref().map(|d| d.name.clone()))
        .os("domainpath", dom.map(|d| d.path))
        .build())
}

/// A job as CloudStack shows it; its result is rendered now from what the
/// job recorded (the resource it produced, or its failure).
pub async fn job(
    svc: &Service,
    caller: &Caller,
    j: &Job,
    acct: Option<&Account>,
    user: Option<&User>,
    dom: Option<&Domain>,
) -> Result<Value, ApiError> {
    let (code, result) = if j.status == JOB_PENDING {
        (0, None)
    } else {
        job_result(svc, caller, j).await?
    };
    Ok(Obj::new()
        .s("jobid", &j.uuid)
        .os("accountid", acct.map(|a| a.uuid.clone()))
        .os("account", acct.map(|a| a.name.clone()))
        .os("userid", user.map(|u| u.uuid.clone()))
        .os("domainid", dom.map(|d| d.uuid.clone()))
        .os("domainpath", dom.map(|d| d.path.clone()))
        .s("cmd", &j.cmd)
        .v("jobstatus", j.status)
        .v(
            "jobprocstatus",
            match (&j.instance_uuid, j.status == JOB_PENDING) {
                (Some(u), true) => svc.job_progress(u),
                _ => 0,
            },
        )
        .v("jobresultcode", code)
        .when(j.status != JOB_PENDING, |o| {
            o.os("jobresulttype", j.result_type.clone())
                .ov("jobresult", result)
        })
        .os("jobinstancetype", j.instance_type.clone())
        .os("jobinstanceid", j.instance_uuid.clone())
        .s("created", date(j.created))
        .ov("completed", j.completed.map(date))
        .build())
}

/// The result code and object of a finished job.
async fn job_result(
    svc: &Service,
    caller: &Caller,
    j: &Job,
) -> Result<(i64, Option<Value>), ApiError> {
    let Some(stored) = &j.result else {
        return Ok((j.result_code, None));
    };
    if let Ok(f) = serde_json::from_value::<JobFailure>(stored.clone()) {
        let e = ApiError::from_kind(f.error, f.errortext);
        return Ok((i64::from(e.code), Some(e.body())));
    }
    if let Ok(out) = serde_json::from_value::<JobOutput>(stored.clone()) {
        return Ok((0, Some(render_output(svc, caller, &out, &j.uuid).await?)));
    }
    // Written before outputs were stored typed: already a CloudStack object.
    Ok((j.result_code, Some(stored.clone())))
}

/// What a job produced, as the object CloudStack returns for it. A resource
/// that has gone since shows as an empty object.
async fn render_output(
    svc: &Service,
    caller: &Caller,
    out: &JobOutput,
    job_uuid: &str,
) -> Result<Value, ApiError> {
    let mut l = Lookup::new(svc);
    Ok(match out {
        JobOutput::Vm { id } => match svc.load_cached::<Vm>(*id).await? {
            Some(v) if v.state != orrery_model::VmState::Expunged => {
                json!({"virtualmachine": vm(&mut l, caller, &v, Some((job_uuid, 1))).await?})
            }
            _ => json!({"virtualmachine": {}}),
        },
        JobOutput::VmGone => json!({"virtualmachine": {}}),
        JobOutput::Volume { id } => match svc.load_cached::<Volume>(*id).await? {
            Some(v) => json!({"volume": volume(&mut l, caller, &v).await?}),
            None => json!({"volume": {}}),
        },
        JobOutput::AffinityGroup { id } => match svc.load_cached::<AffinityGroup>(*id).await? {
            Some(g) => json!({"affinitygroup": affinity_group(svc, &g).await?}),
            None => json!({"affinitygroup": {}}),
        },
        JobOutput::Host { id } => match svc.load_cached::<Host>(*id).await? {
            Some(h) => json!({"host": host(svc, &h).await?}),
            None => json!({"host": {}}),
        },
        JobOutput::VmSnapshot { id } => match svc.load_cached::<VmSnapshot>(*id).await? {
            Some(s) => json!({"vmsnapshot": vm_snapshot(&mut l, &s).await?}),
            None => json!({"vmsnapshot": {}}),
        },
        JobOutput::SnapshotPolicy { id } => match svc.load_cached::<SnapshotPolicy>(*id).await? {
            Some(p) => json!({"snapshotpolicy": snapshot_policy(&mut l, &p).await?}),
            None => json!({"snapshotpolicy": {}}),
        },
        JobOutput::Template { id } => match svc.load_cached::<Template>(*id).await? {
            Some(t) => json!({"template": template(svc, &t).await?}),
            None => json!({"template": {}}),
        },
        JobOutput::Snapshot { id } => match svc.load_cached::<Snapshot>(*id).await? {
            Some(s) => json!({"snapshot": volume_snapshot(&mut l, &s).await?}),
            None => json!({"snapshot": {}}),
        },
        JobOutput::Success => json!({"success": true}),
    })
}

/// A host as listHosts shows it (also a host job's result).
pub async fn host(svc: &Service, h: &Host) -> Result<Value, ApiError> {
    let os_cat: Option<OsCategory> = match h.os_category_id {
        Some(id) => svc.load_cached(id).await?,
        None => None,
    };
    let z: Option<Zone> = svc.load_cached(h.zone_id).await?;
    let p: Option<Pod> = svc.load_cached(h.pod_id).await?;
    let c: Option<Cluster> = svc.load_cached(h.cluster_id).await?;
    let (mem, cpu) = svc.infrastructure.host_allocation(h.id).await?;
    let total = (h.cpu_number * h.cpu_speed).max(1);
    let (gpu_groups, gpu_total) =
        crate::service::gpus::groups(h.facts.as_ref(), &svc.gpus_used_on(h));
    Ok(Obj::new()
        .s("id", &h.uuid)
        .s("name", &h.name)
        .s("type", "Routing")
        .s("state", &h.state)
        .s("resourcestate", &h.resource_state)
        .s("ipaddress", &h.ip_address)
        .s("hypervisor", &h.hypervisor)
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .os("podid", p.as_ref().map(|p| p.uuid.clone()))
        .os("podname", p.map(|p| p.name))
        .os("clusterid", c.as_ref().map(|c| c.uuid.clone()))
        .os("clustername", c.map(|c| c.name))
        .v("cpunumber", h.cpu_number)
        .v("cpuspeed", h.cpu_speed)
        .v("memorytotal", h.memory_total)
        .v("memoryused", mem)
        .v("memoryallocated", mem)
        .s(
            "cpuallocated",
            format!("{:.2}%", cpu as f64 * 100.0 / total as f64),
        )
        .v("cpuallocatedvalue", cpu)
        .s("hosttags", h.host_tags.join(","))
        .os("oscategoryid", os_cat.as_ref().map(|c| c.uuid.clone()))
        .os("oscategoryname", os_cat.map(|c| c.name))
        .ov("lastpinged", h.last_ping.map(date))
        .s("created", date(h.created))
        .v(
            "details",
            json!({"secured": (!h.simulated && h.cert_serial.is_some()).to_string()}),
        )
        .s(
            "arch",
            h.facts
                .as_ref()
                .and_then(|f| f.get("arch"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .unwrap_or("x86_64"),
        )
        // Simulated hosts run inside the coordinator: its version is theirs.
        .s(
            "version",
            h.agent_version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        )
        .s("managementservername", svc.coordinator_name())
        .v("hahost", {
            let tag = svc.setting("ha.tag", &[]);
            !tag.is_empty() && h.host_tags.contains(&tag)
        })
        .v("hostha", {
            // Simulated hosts have no agent, so no heartbeat to judge.
            let state = match (h.simulated, h.ha_state.as_str()) {
                (true, _) => "Ineligible",
                (false, "") => "Available",
                (false, s) => s,
            };
            json!({"haenable": !h.simulated, "hastate": state, "haprovider": "kvmhaprovider"})
        })
        // No out-of-band management (IPMI): CloudStack's answer for a
        // host without it, which the UI's host page reads.
        .v(
            "outofbandmanagement",
            json!({"powerstate": "Disabled", "enabled": false}),
        )
        .v("gputotal", gpu_total)
        .v("gpuused", 0)
        .v("gpugroup", gpu_groups)
        .v("islocalstorageactive", false)
        .build())
}

/// A storage pool as listStoragePools shows it.
pub async fn storage_pool(svc: &Service, p: &StoragePool) -> Result<Value, ApiError> {
    let z: Option<Zone> = svc.load_cached(p.zone_id).await?;
    let alloc = svc.infrastructure.pool_allocated(p).await?;
    let host: Option<Host> = match p.host_id {
        Some(h) => svc.load_cached(h).await?,
        None => None,
    };
    let cluster: Option<Cluster> = match p.cluster_id {
        Some(c) => svc.load_cached(c).await?,
        None => None,
    };
    let pod: Option<Pod> = match p.pod_id {
        Some(x) => svc.load_cached(x).await?,
        None => None,
    };
    Ok(Obj::new()
        .s("id", &p.uuid)
        .s("name", &p.name)
        // A host's own storage is reached at the host; a shared mount point
        // on each host, as CloudStack names such pools' address.
        .s(
            "ipaddress",
            host.as_ref()
                .map(|h| h.ip_address.clone())
                .unwrap_or_else(|| "localhost".into()),
        )
        .s("provider", "DefaultPrimary")
        .s(
            "hypervisor",
            host.as_ref()
                .map(|h| h.hypervisor.clone())
                .or_else(|| cluster.as_ref().map(|c| c.hypervisor.clone()))
                .unwrap_or_else(|| "KVM".into()),
        )
        // Volumes are placed by their full size: no overprovisioning.
        .s("overprovisionfactor", "1.0")
        .os("clusterid", cluster.as_ref().map(|c| c.uuid.clone()))
        .os("clustername", cluster.map(|c| c.name))
        .os("podid", pod.as_ref().map(|x| x.uuid.clone()))
        .os("podname", pod.map(|x| x.name))
        .os("hostid", host.as_ref().map(|h| h.uuid.clone()))
        .os("hostname", host.map(|h| h.name))
        .os("zoneid", z.as_ref().map(|z| z.uuid.clone()))
        .os("zonename", z.map(|z| z.name))
        .s("path", &p.path)
        .s("type", &p.pool_type)
        .s("scope", &p.scope)
        .s("state", &p.state)
        .v("disksizetotal", p.capacity_bytes)
        .v("disksizeallocated", alloc)
        .s("created", date(p.created))
        .build())
}
