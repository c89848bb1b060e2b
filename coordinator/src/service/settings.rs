//! Global settings: every key with its type, default, scope and description. The
//! defaults are the specification's. Values may be overridden per zone, cluster
//! or account where the setting allows that scope; the narrowest scope wins.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    Boolean,
    Integer,
    Float,
    String,
}

impl SettingType {
    pub fn name(self) -> &'static str {
        match self {
            SettingType::Boolean => "Boolean",
            SettingType::Integer => "Integer",
            SettingType::Float => "Float",
            SettingType::String => "String",
        }
    }
}

pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub ty: SettingType,
    pub category: &'static str,
    /// Scopes beyond global where the setting may be overridden.
    pub scopes: &'static [&'static str],
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub description: &'static str,
}

const fn s(
    name: &'static str,
    default: &'static str,
    ty: SettingType,
    category: &'static str,
    scopes: &'static [&'static str],
    description: &'static str,
) -> Setting {
    Setting {
        name,
        default,
        ty,
        category,
        scopes,
        min: None,
        max: None,
        description,
    }
}

const fn r(mut x: Setting, min: f64, max: f64) -> Setting {
    x.min = Some(min);
    x.max = Some(max);
    x
}

use SettingType::{Boolean, Float, Integer};

pub static SETTINGS: &[Setting] = &[
    r(s("expunge.delay", "86400", Integer, "Advanced", &[], "Seconds a destroyed instance is kept before it is expunged"), 0.0, 1e9),
    r(s("expunge.interval", "86400", Integer, "Advanced", &[], "Seconds between runs of the expunger"), 1.0, 1e9),
    s("vm.instancename.flag", "false", Boolean, "Advanced", &[], "Append the user-provided name to the internal name of an instance"),
    s("instance.name", "VM", SettingType::String, "Hidden", &[], "Name of the deployment instance, used in generated instance names"),
    r(s("default.page.size", "500", Integer, "Advanced", &[], "Default and largest page size of list commands"), 1.0, 1e7),
    r(s("cpu.overprovisioning.factor", "1", Float, "Advanced", &["cluster"], "CPU over-provisioning factor"), 1.0, 1000.0),
    r(s("mem.overprovisioning.factor", "1", Float, "Advanced", &["cluster"], "Memory over-provisioning factor"), 1.0, 1000.0),
    s("vm.allocation.algorithm", "random", SettingType::String, "Advanced", &[], "Host allocation algorithm: random, firstfit, userdispersing, userconcentratedpod_random, userconcentratedpod_firstfit, firstfitleastconsumed"),
    s("enforce.post.requests.and.timestamps", "false", Boolean, "Advanced", &[], "Require POST and signature version 3 with a timestamp of at most 15 minutes ahead"),
    r(s("vm.max.guests.per.host", "50", Integer, "Advanced", &[], "Instances one host may run (KVM's default guest limit); the HA-safe figure of a cluster is (hosts - 1) times this"), 1.0, 100000.0),
    s("enable.additional.vm.configuration", "false", Boolean, "Advanced", &["account"], "Whether instances of an account may carry extraconfig"),
    s("allow.additional.vm.configuration.list.kvm", "", SettingType::String, "Advanced", &[], "Top-level domain XML elements extraconfig may add on KVM, comma-separated"),
    s("user.vm.denied.details", "rootdisksize, cpuOvercommitRatio, memoryOvercommitRatio, Message.ReservedCapacityFreed.Flag", SettingType::String, "Advanced", &[], "Instance details users (not admins) neither see nor change"),
    s("user.vm.readonly.details", "dataDiskController, rootDiskController", SettingType::String, "Advanced", &[], "Instance details users (not admins) see but cannot change"),
    s("vm.strict.host.tags", "", SettingType::String, "Advanced", &[], "Host tags that must match wherever an instance is placed, started, migrated or resized, even on a host an admin names"),
    r(s("cluster.cpu.allocated.capacity.notificationthreshold", "0.75", Float, "Alert", &["cluster"], "Fraction of a cluster's CPU capacity used or allocated beyond which its metrics are flagged"), 0.0, 1.0),
    r(s("cluster.memory.allocated.capacity.notificationthreshold", "0.75", Float, "Alert", &["cluster"], "Fraction of a cluster's memory used or allocated beyond which its metrics are flagged"), 0.0, 1.0),
    r(s("cluster.storage.capacity.notificationthreshold", "0.75", Float, "Alert", &["cluster"], "Fraction of a storage pool used beyond which its metrics are flagged"), 0.0, 1.0),
    r(s("cluster.storage.allocated.capacity.notificationthreshold", "0.75", Float, "Alert", &["cluster"], "Fraction of a storage pool allocated beyond which its metrics are flagged"), 0.0, 1.0),
    r(s("pool.storage.capacity.disablethreshold", "0.85", Float, "Alert", &["zone"], "Fraction of a storage pool used beyond which its metrics flag it as past the disable threshold"), 0.0, 1.0),
    r(s("pool.storage.allocated.capacity.disablethreshold", "0.85", Float, "Alert", &["zone"], "Fraction of a storage pool allocated beyond which its metrics flag it as past the disable threshold"), 0.0, 1.0),
    r(s("cluster.cpu.allocated.capacity.disablethreshold", "0.85", Float, "Alert", &["cluster"], "Fraction of a cluster's CPU capacity allocated beyond which it takes no new instances"), 0.0, 1.0),
    r(s("cluster.memory.allocated.capacity.disablethreshold", "0.85", Float, "Alert", &["cluster"], "Fraction of a cluster's memory allocated beyond which it takes no new instances"), 0.0, 1.0),
    r(s("ping.interval", "60", Integer, "Advanced", &[], "Seconds between agent heartbeats"), 1.0, 86400.0),
    r(s("ping.timeout", "2.5", Float, "Advanced", &[], "Multiple of ping.interval after which a silent host is Disconnected"), 1.0, 100.0),
    r(s("ha.heartbeat.interval", "500", Integer, "Advanced", &[], "Milliseconds between a host's storage heartbeats (its lease record on shared primary storage) and its stream heartbeats"), 100.0, 60000.0),
    r(s("ha.lease.time", "3000", Integer, "Advanced", &[], "Milliseconds a host's lease lasts after its last storage heartbeat; at least three heartbeat intervals. A host that has heard neither its storage nor the coordinator for this time less two intervals kills its instances"), 300.0, 600000.0),
    r(s("ha.restart.margin", "500", Integer, "Advanced", &[], "Milliseconds past a lost host's lease before its instances are declared stopped and HA-enabled ones started elsewhere"), 0.0, 600000.0),
    r(s("vm.userdata.max.length", "32768", Integer, "Advanced", &[], "Most characters of an instance's base64 user data (at most 1048576; a GET request carries under 4096)"), 1.0, 1048576.0),
    s("ha.tag", "", SettingType::String, "Advanced", &[], "Host tag of the hosts reserved for restarting HA-enabled instances (listHosts hahost)"),
    s("host.maintenance.local.storage.strategy", "Error", SettingType::String, "Advanced", &[], "What maintenance does with instances that cannot be migrated off the host: Error (the host goes to ErrorInMaintenance and they keep running) or ForceStop (they are stopped)"),
    s("enable.dynamic.scale.vm", "false", Boolean, "Advanced", &["zone"], "Allow running instances to be scaled (scaleVirtualMachine); instances started while it is on get room for more vCPUs and memory"),
    r(s("scale.retry", "2", Integer, "Advanced", &[], "Attempts at scaling a running instance; when its host lacks room, an attempt may first migrate it within its cluster"), 0.0, 100.0),
    r(s("vm.serviceoffering.cpu.cores.max", "0", Integer, "Advanced", &[], "Most vCPUs a scalable instance can be scaled to; 0: its host's CPU count"), 0.0, 1e6),
    r(s("vm.serviceoffering.ram.size.max", "0", Integer, "Advanced", &[], "Most memory in MB a scalable instance can be scaled to; 0: its host's memory"), 0.0, 1e9),
    s("vm.migrate.tls", "true", Boolean, "Advanced", &[], "Migrate instances over TLS (libvirt qemu+tls and QEMU's TLS migration stream) with the certificates the coordinator issued; false migrates over plain TCP"),
    r(s("migratewait", "3600", Integer, "Advanced", &[], "Seconds a migration may take before it is aborted and the instance stays where it was"), 1.0, 86400.0),
    r(s("vm.migrate.speed", "0", Integer, "Advanced", &[], "Bandwidth cap of a live migration in MiB/s; 0 leaves it unlimited"), 0.0, 1e6),
    r(s("vm.migrate.downtime", "0", Integer, "Advanced", &[], "Largest pause in milliseconds a live migration may cause at switch-over; 0 keeps the hypervisor's default"), 0.0, 600000.0),
    s("allow.public.user.templates", "true", Boolean, "Advanced", &[], "Users may make the templates they create public"),
    r(s("max.domain.gpus", "-1", Integer, "Domain Defaults", &["domain"], "GPUs the instances of a domain and its subdomains may hold (-1: no limit); updateResourceLimit resourcetype 16 with only domainid sets it per domain"), -1.0, 1e6),
    r(s("max.account.gpus", "-1", Integer, "Account Defaults", &["account"], "GPUs an account's instances may hold (-1: no limit); updateResourceLimit resourcetype 16 sets it per account"), -1.0, 1e6),
    r(s("snapshot.max.hourly", "8", Integer, "Snapshots", &[], "The most recurring hourly snapshots a volume keeps"), 0.0, 1e6),
    r(s("snapshot.max.daily", "8", Integer, "Snapshots", &[], "The most recurring daily snapshots a volume keeps"), 0.0, 1e6),
    r(s("snapshot.max.weekly", "8", Integer, "Snapshots", &[], "The most recurring weekly snapshots a volume keeps"), 0.0, 1e6),
    r(s("snapshot.max.monthly", "8", Integer, "Snapshots", &[], "The most recurring monthly snapshots a volume keeps"), 0.0, 1e6),
    r(s("vmsnapshot.max", "10", Integer, "Advanced", &[], "The most instance snapshots one instance may have"), 1.0, 1e6),
    s("kvm.vmstoragesnapshot.enabled", "true", Boolean, "Advanced", &[], "Allow instance snapshots of a running instance's disks without its memory (its file systems frozen through the guest agent when quiescevm is asked)"),
    r(s("vmsnapshot.create.wait", "1800", Integer, "Advanced", &[], "Seconds an instance snapshot may take before it is declared failed"), 1.0, 86400.0),
    r(s("vm.stop.timeout", "120", Integer, "Advanced", &[], "Seconds a graceful stop waits for the guest before powering it off"), 1.0, 86400.0),
    s("vm.metadata.manufacturer", "Apache Software Foundation", SettingType::String, "Advanced", &["zone"], "Manufacturer in the SMBIOS system information of instances"),
    s("vm.metadata.product", "CloudStack KVM Hypervisor", SettingType::String, "Advanced", &["zone"], "Product in the SMBIOS system information of instances; cloud-init's CloudStack data source needs it to contain CloudStack"),
    r(s("vm.stats.interval", "60000", Integer, "Advanced", &[], "Milliseconds between instance statistics collections"), 0.0, 1e9),
    r(s("vm.disk.stats.interval", "0", Integer, "Advanced", &[], "Seconds between instance disk statistics collections; 0 disables them"), 0.0, 1e9),
    r(s("vm.disk.stats.interval.min", "300", Integer, "Advanced", &[], "Smallest interval in seconds for disk statistics"), 0.0, 1e9),
    s("vm.disk.stats.retention.enabled", "false", Boolean, "Advanced", &[], "Keep instance disk statistics"),
    r(s("vm.disk.stats.max.retention.time", "720", Integer, "Advanced", &[], "Minutes instance disk statistics are kept"), -1e9, 1e9),
    r(s("vm.stats.max.retention.time", "720", Integer, "Advanced", &[], "Minutes instance statistics are kept"), -1e9, 1e9),
    s("vm.stats.user.vm.only", "false", Boolean, "Advanced", &[], "Collect statistics of user instances only"),
    s("instance.lease.enabled", "false", Boolean, "Advanced", &[], "Enable instance leases"),
    r(s("instance.lease.scheduler.interval", "3600", Integer, "Advanced", &[], "Seconds between lease expiry checks"), 1.0, 1e9),
    r(s("instance.lease.eventscheduler.interval", "86400", Integer, "Advanced", &[], "Seconds between lease expiry event checks"), 1.0, 1e9),
    r(s("instance.lease.expiryevent.daysbefore", "7", Integer, "Advanced", &[], "Days before expiry when the lease expiring event is raised"), 0.0, 36500.0),
    r(s("session.timeout", "1800", Integer, "Advanced", &[], "Seconds a login session stays valid without use"), 60.0, 1e7),
    s("allow.user.expunge.recover.vm", "false", Boolean, "Advanced", &["account"], "Users may expunge and recover their instances"),
    s("vm.destroy.forcestop", "false", Boolean, "Advanced", &[], "Force-stop an instance when destroying it"),
    s("secstorage.allowed.internal.sites", "", SettingType::String, "Advanced", &[], "Comma-separated CIDRs of internal addresses (loopback, link-local, private, this server's own) that template and ISO URLs may point at; none by default"),
    s("backup.framework.enabled", "false", Boolean, "Advanced", &["zone"], "Whether the backup and recovery framework is enabled"),
    s("backup.framework.provider.plugin", "dummy", SettingType::String, "Advanced", &["zone"], "The backup and recovery provider plugin"),
    r(s("login.failures.max", "5", Integer, "Secure", &[], "Failed logins of one user from one address after which further attempts are refused for login.failures.lockout seconds"), 1.0, 1e6),
    r(s("login.failures.lockout", "60", Integer, "Secure", &[], "Seconds logins stay refused after login.failures.max failures"), 1.0, 1e7),
];

pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|x| x.name == name)
}

/// Checks a value against the setting's type and range; returns it normalised.
pub fn validate(setting: &Setting, value: &str) -> Result<String, String> {
    let v = value.trim();
    match setting.ty {
        Boolean => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(v.to_ascii_lowercase()),
            _ => Err(format!("value for {} must be true or false", setting.name)),
        },
        Integer => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("value for {} must be an integer", setting.name))?;
            check_range(setting, n as f64)?;
            Ok(n.to_string())
        }
        Float => {
            let n: f64 = v
                .parse()
                .map_err(|_| format!("value for {} must be a number", setting.name))?;
            if !n.is_finite() {
                return Err(format!("value for {} must be a number", setting.name));
            }
            check_range(setting, n)?;
            Ok(v.to_string())
        }
        SettingType::String => {
            if setting.name == "secstorage.allowed.internal.sites" {
                super::templates::parse_allowed(v)
                    .map_err(|e| format!("value for {}: {e}", setting.name))?;
            }
            Ok(value.to_string())
        }
    }
}

fn check_range(setting: &Setting, n: f64) -> Result<(), String> {
    if let (Some(min), Some(max)) = (setting.min, setting.max) {
        if n < min || n > max {
            return Err(format!(
                "value for {} must be between {} and {}",
                setting.name, min, max
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        for x in SETTINGS {
            assert!(validate(x, x.default).is_ok(), "{}", x.name);
        }
    }

    #[test]
    fn typed_validation() {
        let d = find("expunge.delay").unwrap();
        assert!(validate(d, "abc").is_err());
        assert!(validate(d, "-5").is_err());
        assert_eq!(validate(d, " 30 ").unwrap(), "30");
        let f = find("vm.instancename.flag").unwrap();
        assert_eq!(validate(f, "TRUE").unwrap(), "true");
        assert!(validate(f, "yes").is_err());
    }
}
