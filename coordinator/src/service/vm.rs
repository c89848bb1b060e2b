//! Instances, their volumes and NICs: deploy, the lifecycle operations, first-fit
//! placement, address allocation and the expunger.

use super::agent::{AgentError, PowerState, VmSpec};
use super::jobs::{JobOutput, NewJob, Work};
use super::*;
use crate::store::Kind;
use orrery_model::{naming, Transition, VmState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Admin placement choices on deploy and start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pin {
    pub host_id: Option<i64>,
    pub pod_id: Option<i64>,
    pub cluster_id: Option<i64>,
}

pub struct DeployArgs {
    pub zone: Zone,
    pub offering: ServiceOffering,
    pub template: Option<Template>,
    pub iso: Option<Template>,
    pub disk_offering: Option<DiskOffering>,
    pub owner: Account,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub group: Option<String>,
    pub details: BTreeMap<String, String>,
    pub root_disk_size_gb: Option<i64>,
    pub data_disk_size_gb: Option<i64>,
    pub keypairs: Vec<String>,
    /// Filled by `deploy` from `keypairs`.
    pub ssh_public_keys: Vec<String>,
    pub userdata: Option<String>,
    /// `userdataid` / `userdatadetails` as given; `deploy` resolves them
    /// with the template's link into `userdata`.
    pub userdata_ref: Option<String>,
    pub userdata_details: BTreeMap<String, String>,
    /// Filled by `deploy`.
    pub userdata_id: Option<i64>,
    /// The request came as a POST (user data may be larger).
    pub post: bool,
    pub extraconfig: Option<String>,
    pub start: bool,
    pub pin: Pin,
    pub network: Option<Network>,
    /// Affinity groups of the owner the instance joins.
    pub affinity_groups: Vec<AffinityGroup>,
    pub ha_enable: Option<bool>,
    pub dynamically_scalable: Option<bool>,
    pub display_vm: bool,
    /// `leaseduration` / `leaseexpiryaction`, validated.
    pub lease: orrery_schedule::lease::LeaseRequest,
}

pub const GIB: i64 = 1 << 30;

/// Per-network address pools, loaded lazily from the NICs in the store;
/// shared with the infrastructure part, which drops a deleted network's.
pub type IpPools = Arc<tokio::sync::Mutex<HashMap<i64, IpPool>>>;

/// Free addresses of one guest network.
pub struct IpPool {
    next: u32,
    start: u32,
    end: u32,
    used: std::collections::HashSet<u32>,
}

impl IpPool {
    fn take(&mut self) -> Option<Ipv4Addr> {
        let span = self.end - self.start + 1;
        for _ in 0..span {
            let cand = self.next;
            self.next = if self.next >= self.end {
                self.start
            } else {
                self.next + 1
            };
            if self.used.insert(cand) {
                return Some(Ipv4Addr::from(cand));
            }
        }
        None
    }
    fn release(&mut self, ip: &str) {
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            self.used.remove(&u32::from(a));
        }
    }
}

pub(crate) fn running_like() -> Vec<crate::store::Val> {
    [
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Migrating,
    ]
    .iter()
    .map(|s| s.as_str().into())
    .collect()
}

impl Service {
    #[allow(clippy::map_entry)] // the pool is built with awaits between the check and the insert
    async fn ip_take(&self, net: &Network) -> SResult<Ipv4Addr> {
        let mut pools = self.ip_pools.lock().await;
        if !pools.contains_key(&net.id) {
            let start: Ipv4Addr = net
                .start_ip
                .parse()
                .map_err(|_| ServiceError::internal("bad network range"))?;
            let end: Ipv4Addr = net
                .end_ip
                .parse()
                .map_err(|_| ServiceError::internal("bad network range"))?;
            let used = self.addresses_taken(net).await?;
            pools.insert(
                net.id,
                IpPool {
                    next: u32::from(start),
                    start: u32::from(start),
                    end: u32::from(end),
                    used,
                },
            );
        }
        let pool = pools.get_mut(&net.id).expect("pool inserted above");
        if let Some(ip) = pool.take() {
            return Ok(ip);
        }
        // Full as this process sees it; addresses other coordinators freed
        // are only in the store. (One taken here but not yet committed may
        // be offered again: the store's unique key catches that.)
        pool.used = self.addresses_taken(net).await?;
        pool.take().ok_or_else(|| {
            ServiceError::limit(format!(
                "Insufficient address capacity: no free IP address left in network {}",
                net.name
            ))
        })
    }

    /// Adds the addresses the store knows as taken (by other coordinators
    /// too) to the network's pool, keeping those this process is about to
    /// commit.
    async fn ip_refresh(&self, net: &Network) -> SResult<()> {
        let taken = self.addresses_taken(net).await?;
        if let Some(p) = self.ip_pools.lock().await.get_mut(&net.id) {
            p.used.extend(taken);
        }
        Ok(())
    }

    /// The addresses the network's NICs hold, as the store has them.
    async fn addresses_taken(&self, net: &Network) -> SResult<std::collections::HashSet<u32>> {
        let nics: Vec<Nic> = self.store.all(Query::new().eq(Col::Ref, net.id)).await?;
        Ok(nics
            .iter()
            .filter_map(|n| n.ip_address.parse::<Ipv4Addr>().ok().map(u32::from))
            .collect())
    }

    async fn ip_release(&self, network_id: i64, ip: &str) {
        if let Some(p) = self.ip_pools.lock().await.get_mut(&network_id) {
            p.release(ip);
        }
    }

    /// Whether `owner`'s instance may join `n`: an account's network only
    /// for that account; a domain's for accounts of it and its subdomains.
    /// Another tenant's network does not exist for the caller.
    pub async fn check_network_usable(
        &self,
        owner: &Account,
        zone_id: i64,
        n: &Network,
    ) -> SResult<()> {
        let usable = n.removed.is_none()
            && match n.account_id {
                Some(a) => a == owner.id,
                None => {
                    let net = self.domain_path(n.domain_id).await?;
                    let own = self.domain_path(owner.domain_id).await?;
                    own == net || own.starts_with(&format!("{}/", net.trim_end_matches('/')))
                }
            };
        if !usable {
            return Err(ServiceError::not_found("networkids", &n.uuid));
        }
        if n.zone_id != zone_id {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter networkids: network {} is in another zone",
                n.uuid
            )));
        }
        Ok(())
    }

    pub async fn zone_default_network(&self, zone_id: i64) -> SResult<Network> {
        let nets: Vec<Network> = self.zone_records(zone_id).await?;
        nets.into_iter()
            .find(|n| n.is_zone_default && n.removed.is_none())
            .ok_or_else(|| ServiceError::unavailable("The zone has no guest network"))
    }

    /// Validates everything, then creates the instance, its ROOT volume, its NIC
    /// and the deploy job in one transaction. The job starts the instance when
    /// asked to.
    pub async fn deploy(self: &Arc<Self>, caller: &Caller, a: DeployArgs) -> SResult<(Vm, Job)> {
        if let Some(n) = &a.name {
            naming::validate_hostname(n).map_err(|e| {
                ServiceError::invalid(format!("Invalid value for parameter name: {e}"))
            })?;
        }
        let mut a = a;
        if let Some(x) = &a.extraconfig {
            a.extraconfig = Some(self.check_extraconfig(a.owner.id, x)?);
        }
        super::details::check_values(&a.details).map_err(ServiceError::invalid)?;
        self.check_root_only_details(caller, &a.details.keys().cloned().collect::<Vec<_>>())?;
        self.check_gpu_limit(&a.owner, super::limits::gpu_units(&a.offering), None)
            .await?;
        let (cpu, speed, mem) = compute_size(&a.offering, &a.details)?;
        let tmpl = a.template.as_ref().or(a.iso.as_ref());
        if let Some(t) = tmpl {
            // A template the caller may not see does not exist for it.
            let visible = t.is_public
                || caller.can_access(t.account_id, &self.domain_path(t.domain_id).await?);
            if t.removed.is_some() || !visible {
                return Err(ServiceError::not_found("templateid", &t.uuid));
            }
            if !t.is_ready {
                return Err(ServiceError::invalid(format!(
                    "Template {} is not ready yet (status: {})",
                    t.uuid, t.status
                )));
            }
            if t.zone_id.is_some() && t.zone_id != Some(a.zone.id) {
                return Err(ServiceError::invalid(format!(
                    "Template {} is not available in zone {}",
                    t.uuid, a.zone.uuid
                )));
            }
        }
        if a.zone.allocation_state != "Enabled" && !caller.is_root_admin() {
            return Err(ServiceError::invalid(format!(
                "Zone {} is disabled for allocation",
                a.zone.uuid
            )));
        }
        let root_size = root_size(
            a.template.as_ref(),
            a.disk_offering.as_ref(),
            a.root_disk_size_gb,
            a.iso.is_some(),
            a.data_disk_size_gb,
        )?;
        // Every named key pair must be the owner's; the instance keeps
        // their public keys as they are now.
        let pairs = self
            .guest_access
            .ssh_keypairs_for(&a.owner, &a.keypairs)
            .await?;
        let req = super::userdata::UserDataRequest {
            userdata: a.userdata.clone(),
            userdata_id: a.userdata_ref.clone(),
            details: a.userdata_details.clone(),
            post: a.post,
        };
        let resolved = self
            .guest_access
            .resolve_userdata(caller, &a.owner, a.template.as_ref(), &req)
            .await?;
        a.userdata = resolved.userdata;
        a.userdata_id = resolved.userdata_id;
        a.userdata_details = resolved.details;
        a.keypairs = pairs.iter().map(|k| k.name.clone()).collect();
        a.ssh_public_keys = pairs.into_iter().map(|k| k.public_key).collect();
        let network = match &a.network {
            Some(n) => {
                self.check_network_usable(&a.owner, a.zone.id, n).await?;
                n.clone()
            }
            None => self.zone_default_network(a.zone.id).await?,
        };
        let group = match &a.group {
            Some(g) => Some(self.group_for(&a.owner, g).await?),
            None => None,
        };
        // Another coordinator sharing the store may take the same address
        // between this one's look at the network and its commit: the store's
        // unique key refuses the second, and the pool is read afresh.
        let mut tries = 0;
        loop {
            let ip = self.ip_take(&network).await?;
            let created = self
                .create_vm_records(
                    caller,
                    &a,
                    cpu,
                    speed,
                    mem,
                    root_size,
                    &network,
                    ip,
                    group.clone(),
                )
                .await;
            match created {
                Ok(x) => return Ok(x),
                Err(e) if e.is_duplicate(crate::store::Kind::Nic) && tries < 8 => {
                    // The address stays marked as used here: someone has it.
                    tries += 1;
                    self.ip_refresh(&network).await?;
                }
                Err(e) => {
                    self.ip_release(network.id, &ip.to_string()).await;
                    return Err(e);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_vm_records(
        self: &Arc<Self>,
        caller: &Caller,
        a: &DeployArgs,
        cpu: i64,
        speed: i64,
        mem: i64,
        root_size: i64,
        network: &Network,
        ip: Ipv4Addr,
        group: Option<(InstanceGroup, bool)>,
    ) -> SResult<(Vm, Job)> {
        let vm_id = self.store.new_id::<Vm>().await?;
        let uuid = new_uuid();
        let names = naming::instance_names(
            a.owner.id,
            vm_id,
            &uuid,
            a.name.as_deref(),
            a.display_name.as_deref(),
            &self.setting("instance.name", &[]),
            self.setting_bool("vm.instancename.flag"),
        );
        let t = self.clock_now().timestamp();
        let tmpl = a.template.as_ref().or(a.iso.as_ref());
        let mut tx = Tx::new();
        let group_id = match group {
            Some((g, is_new)) => {
                if is_new {
                    tx.insert(&g);
                }
                Some(g.id)
            }
            None => None,
        };
        let mut vm = Vm {
            id: vm_id,
            uuid: uuid.clone(),
            version: 1,
            vnc_password: Some(vnc_password()),
            name: names.name,
            display_name: names.display_name,
            instance_name: names.internal_name,
            account_id: a.owner.id,
            domain_id: a.owner.domain_id,
            user_id: caller.user.id,
            zone_id: a.zone.id,
            pod_id: None,
            cluster_id: None,
            host_id: None,
            last_host_id: None,
            template_id: a.template.as_ref().map(|x| x.id),
            iso_id: a.iso.as_ref().map(|x| x.id),
            service_offering_id: a.offering.id,
            disk_offering_id: a.disk_offering.as_ref().map(|d| d.id),
            os_type_id: tmpl.map(|x| x.os_type_id).unwrap_or(0),
            cpu_number: cpu,
            cpu_speed: speed,
            memory: mem,
            state: VmState::Creating,
            group_id,
            ha_enable: a.ha_enable.unwrap_or(a.offering.offer_ha),
            dynamically_scalable: a.dynamically_scalable.unwrap_or(
                a.offering.dynamic_scaling && tmpl.map(|x| x.dynamically_scalable).unwrap_or(false),
            ),
            delete_protection: false,
            display_vm: a.display_vm,
            hypervisor: tmpl
                .map(|x| x.hypervisor.clone())
                .unwrap_or_else(|| "Simulator".into()),
            details: a.details.clone(),
            keypairs: a.keypairs.clone(),
            ssh_public_keys: a.ssh_public_keys.clone(),
            userdata: a.userdata.clone(),
            userdata_id: a.userdata_id,
            userdata_details: a.userdata_details.clone(),
            extraconfig: a.extraconfig.clone(),
            password_enabled: tmpl.map(|x| x.password_enabled).unwrap_or(false),
            affinity_group_ids: a.affinity_groups.iter().map(|g| g.id).collect(),
            job_id: None,
            created: t,
            last_updated: t,
            destroyed_at: None,
            removed: None,
            lease: self.lease_at_deploy(&a.offering, a.lease, t)?,
            migrating_to: None,
            gpu_count: if a.offering.vgpu_type.is_some() {
                0
            } else {
                a.offering.gpu_count
            },
            vgpu_type: a.offering.vgpu_type.clone(),
        };
        let vol_ids = self.store.allocate_ids(Kind::Volume, 2).await?;
        let root = Volume {
            id: vol_ids,
            uuid: new_uuid(),
            version: 1,
            name: format!("ROOT-{vm_id}"),
            vm_id: Some(vm_id),
            account_id: a.owner.id,
            domain_id: a.owner.domain_id,
            zone_id: a.zone.id,
            volume_type: "ROOT".into(),
            size: root_size,
            disk_offering_id: if a.iso.is_some() {
                a.disk_offering.as_ref().map(|d| d.id)
            } else {
                None
            },
            state: "Allocated".into(),
            device_id: Some(0),
            pool_id: None,
            template_id: a.template.as_ref().map(|x| x.id),
            created: t,
            attached: Some(t),
            removed: None,
            last_host_id: None,
            from_snapshot: None,
        };
        tx.insert(&root);
        // A disk offering next to a template asks for a data disk as well.
        if let (Some(d), Some(_)) = (&a.disk_offering, &a.template) {
            let size = if d.customized {
                a.data_disk_size_gb.unwrap_or(0) * GIB
            } else {
                d.disk_size_gb * GIB
            };
            tx.insert(&Volume {
                id: vol_ids + 1,
                uuid: new_uuid(),
                version: 1,
                name: format!("DATA-{vm_id}"),
                vm_id: Some(vm_id),
                account_id: a.owner.id,
                domain_id: a.owner.domain_id,
                zone_id: a.zone.id,
                volume_type: "DATADISK".into(),
                size,
                disk_offering_id: Some(d.id),
                state: "Allocated".into(),
                device_id: Some(1),
                pool_id: None,
                template_id: None,
                created: t,
                attached: Some(t),
                removed: None,
                last_host_id: None,
                from_snapshot: None,
            });
        }
        let nic = Nic {
            id: self.store.new_id::<Nic>().await?,
            uuid: new_uuid(),
            version: 1,
            vm_id,
            network_id: network.id,
            ip_address: ip.to_string(),
            mac_address: mac_for(vm_id, 0),
            netmask: network.netmask.clone(),
            gateway: network.gateway.clone(),
            is_default: true,
            device_id: 0,
            created: t,
        };
        tx.insert(&nic);
        let job = self.new_job(
            caller,
            NewJob {
                command: "deployVirtualMachine",
                instance_type: Some("VirtualMachine"),
                instance_uuid: Some(&uuid),
                work: Work::Deploy {
                    vm_id,
                    start: a.start,
                    pin: a.pin.clone(),
                },
            },
        );
        vm.job_id = None;
        tx.insert(&vm);
        tx.insert(&job);
        self.event(
            &mut tx,
            caller,
            "VM.CREATE",
            format!(
                "Successfully created entity for deploying instance. Instance Id: {}",
                vm.uuid
            ),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        self.store.commit(tx.ops).await?;
        if let Some(at) = vm.lease.expires() {
            self.schedules.state.lock().await.track_lease(vm.id, at);
        }
        self.spawn_job(job.uuid.clone());
        Ok((vm, job))
    }

    /// The instance group of an account with this name, created when missing.
    async fn group_for(&self, owner: &Account, name: &str) -> SResult<(InstanceGroup, bool)> {
        let existing: Option<InstanceGroup> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", owner.id, name.to_lowercase())))
            .await?;
        if let Some(g) = existing {
            return Ok((g, false));
        }
        Ok((self.new_instance_group(owner, name).await?, true))
    }

    /// Moves an instance through one transition, re-reading it on a concurrent
    /// change; `edit` may change other fields in the same write.
    pub(crate) async fn transition(
        &self,
        vm_id: i64,
        t: Transition,
        edit: impl Fn(&mut Vm),
        extra: impl Fn(&Vm, &mut Tx),
    ) -> SResult<Vm> {
        for _ in 0..10 {
            let mut vm: Vm = self
                .store
                .load(vm_id)
                .await?
                .ok_or_else(|| ServiceError::internal("instance vanished"))?;
            let to = t
                .apply(vm.state)
                .map_err(|e| ServiceError::state(format!("Instance {} {}", vm.uuid, e)))?;
            vm.state = to;
            vm.last_updated = now();
            edit(&mut vm);
            let mut tx = Tx::new();
            extra(&vm, &mut tx);
            tx.update(&mut vm);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(vm),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::conflict(
            "The instance is being changed concurrently; retry",
        ))
    }

    /// Checks that an operation may begin, before its job is queued.
    pub fn check_transition(vm: &Vm, t: Transition) -> SResult<()> {
        if vm.state.is_transitional() {
            return Err(ServiceError::state(format!(
                "Instance {} is in state {}; another operation is in progress",
                vm.uuid, vm.state
            )));
        }
        t.apply(vm.state)
            .map(|_| ())
            .map_err(|e| ServiceError::state(format!("Instance {}: {}", vm.uuid, e)))
    }

    /// Queues a lifecycle job on an instance.
    pub async fn queue_vm_job(
        self: &Arc<Self>,
        caller: &Caller,
        vm: &Vm,
        command: &str,
        work: Work,
    ) -> SResult<Job> {
        let job = self.vm_job(caller, vm, command, work);
        let mut tx = Tx::new();
        tx.insert(&job);
        self.store.commit(tx.ops).await?;
        self.spawn_job(job.uuid.clone());
        Ok(job)
    }

    /// A job on an instance, for the caller to commit (with whatever else
    /// must land with it) and then spawn.
    pub(crate) fn vm_job(&self, caller: &Caller, vm: &Vm, command: &str, work: Work) -> Job {
        self.new_job(
            caller,
            NewJob {
                command,
                instance_type: Some("VirtualMachine"),
                instance_uuid: Some(&vm.uuid),
                work,
            },
        )
    }

    pub(crate) async fn exec_deploy(
        self: &Arc<Self>,
        caller: &Caller,
        vm_id: i64,
        start: bool,
        pin: Pin,
    ) -> SResult<JobOutput> {
        if !start {
            let vm = self
                .transition(vm_id, Transition::CreateStopped, |_| {}, |_, _| {})
                .await?;
            return Ok(JobOutput::Vm { id: vm.id });
        }
        match self.exec_start(caller, vm_id, pin).await {
            Ok(out) => Ok(out),
            Err(e) => {
                // A deploy that cannot start leaves the record in Error, as in CloudStack.
                if let Some(mut vm) = self.store.load::<Vm>(vm_id).await? {
                    if matches!(vm.state, VmState::Creating | VmState::Starting) {
                        vm.state = VmState::Error;
                        vm.host_id = None;
                        let mut tx = Tx::new();
                        tx.update(&mut vm);
                        let _ = self.store.commit(tx.ops).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// First fit over the zone's hosts, honouring admin pins, host and cluster
    /// state, host tags and capacity with the over-provisioning factors. Returns
    /// the host or a 533 saying why each host was rejected.
    /// Renders what a host needs to run the instance from the stored records,
    /// so changes made while it was stopped take effect on the next start.
    pub async fn vm_spec(&self, vm: &Vm) -> SResult<VmSpec> {
        use super::agent::{NetSpec, NicSpec};
        let os: Option<OsType> = self.store.load(vm.os_type_id).await?;
        let template = match vm.template_id {
            Some(t) => Some(self.template_ref(t).await?),
            None => None,
        };
        let iso = match vm.iso_id {
            Some(t) => Some(self.template_ref(t).await?),
            None => None,
        };
        let mut vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        vols.retain(|v| v.removed.is_none());
        vols.sort_by_key(|v| (v.volume_type != "ROOT", v.device_id));
        let nics: Vec<Nic> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        let mut nic_specs = Vec::new();
        for n in &nics {
            let net: Option<Network> = self.store.load(n.network_id).await?;
            let net = net.ok_or_else(|| ServiceError::internal("network vanished"))?;
            let zone: Option<Zone> = self.store.load(net.zone_id).await?;
            nic_specs.push(NicSpec {
                mac: n.mac_address.clone(),
                ip: n.ip_address.clone(),
                is_default: n.is_default,
                network: NetSpec {
                    uuid: net.uuid.clone(),
                    name: net.name.clone(),
                    gateway: net.gateway.clone(),
                    netmask: net.netmask.clone(),
                    start_ip: net.start_ip.clone(),
                    end_ip: net.end_ip.clone(),
                    dns: zone.and_then(|z| z.dns1).unwrap_or_default(),
                },
            });
        }
        let zone_scope = [("zone", vm.zone_id)];
        let needs = super::placing::boot_needs(&vm.details);
        let (max_cpu, max_memory_mb) = self.scaling_room(vm).await?;
        let mut volume_specs = Vec::with_capacity(vols.len());
        for v in &vols {
            volume_specs.push(self.volume_spec(v).await?);
        }
        let metadata = self.guest_metadata(vm).await?;
        let offering: Option<ServiceOffering> = self.load_cached(vm.service_offering_id).await?;
        Ok(VmSpec {
            metadata,
            instance_name: vm.instance_name.clone(),
            uuid: vm.uuid.clone(),
            name: vm.name.clone(),
            display_name: vm.display_name.clone(),
            os_type: os.map(|o| o.description).unwrap_or_default(),
            cpu_number: vm.cpu_number,
            cpu_speed: vm.cpu_speed,
            memory_mb: vm.memory,
            volumes: volume_specs,
            template,
            iso,
            nics: nic_specs,
            // Instances made before passwords were stored get a fresh random
            // one per start rather than one derived from guessable inputs.
            vnc_password: vm.vnc_password.clone().unwrap_or_else(vnc_password),
            details: vm.details.clone(),
            extraconfig: vm.extraconfig.iter().cloned().collect(),
            smbios_manufacturer: self.setting("vm.metadata.manufacturer", &zone_scope),
            smbios_product: self.setting("vm.metadata.product", &zone_scope),
            uefi: needs.uefi,
            secure_boot: needs.secure_boot,
            tpm: needs.tpm,
            max_cpu,
            max_memory_mb,
            gpu_count: vm.gpu_count,
            vgpu_type: offering.as_ref().and_then(|o| o.vgpu_type.clone()),
            gpu_display: offering.as_ref().is_some_and(|o| o.gpu_display),
        })
    }

    /// Whether an instance has GPUs or a vGPU from its offering.
    pub(crate) async fn has_gpu(&self, vm: &Vm) -> SResult<bool> {
        if vm.gpu_count > 0 {
            return Ok(true);
        }
        Ok(self
            .load_cached::<ServiceOffering>(vm.service_offering_id)
            .await?
            .is_some_and(|o| o.vgpu_type.is_some()))
    }

    /// Narrows where an instance may start to where its volumes are: a
    /// volume on a host's own pool pins that host, one on a cluster's pool
    /// that cluster. An admin's pin elsewhere is refused rather than
    /// starting the instance without its disks.
    pub(crate) async fn storage_pin(&self, vm: &Vm, mut pin: Pin) -> SResult<Pin> {
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm.id)).await?;
        for v in &vols {
            let Some(pid) = v.pool_id else { continue };
            let Some(pool) = self.load_cached::<StoragePool>(pid).await? else {
                continue;
            };
            let (slot, want, what) = match (pool.scope.as_str(), pool.host_id, pool.cluster_id) {
                ("HOST", Some(h), _) => (&mut pin.host_id, h, "host"),
                ("CLUSTER", _, Some(c)) => (&mut pin.cluster_id, c, "cluster"),
                _ => continue,
            };
            match *slot {
                Some(other) if other != want => {
                    return Err(ServiceError::invalid(format!(
                        "Instance {}'s volume {} is on storage pool {}, which only its {what} can use; it cannot start elsewhere",
                        vm.uuid, v.uuid, pool.name
                    )))
                }
                _ => *slot = Some(want),
            }
        }
        if let (Some(h), Some(c)) = (pin.host_id, pin.cluster_id) {
            if let Some(host) = self.load_cached::<Host>(h).await? {
                if host.cluster_id != c {
                    return Err(ServiceError::invalid(format!(
                        "Instance {}'s volumes are on pools that no single host can use",
                        vm.uuid
                    )));
                }
            }
        }
        Ok(pin)
    }

    /// Whether a running instance may be scaled: the zone's setting, the
    /// instance's flag, its template's and its offering's.
    pub(crate) async fn scalable(&self, vm: &Vm) -> SResult<Result<(), String>> {
        if self.setting("enable.dynamic.scale.vm", &[("zone", vm.zone_id)]) != "true" {
            return Ok(Err(
                "dynamic scaling is disabled: set enable.dynamic.scale.vm to true in the instance's zone".into(),
            ));
        }
        if !vm.dynamically_scalable {
            return Ok(Err(format!(
                "instance {} is not dynamically scalable",
                vm.uuid
            )));
        }
        if let Some(t) = vm.template_id {
            if let Some(t) = self.load_cached::<Template>(t).await? {
                if !t.dynamically_scalable {
                    return Ok(Err(format!(
                        "its template {} is not dynamically scalable",
                        t.name
                    )));
                }
            }
        }
        if let Some(o) = self
            .load_cached::<ServiceOffering>(vm.service_offering_id)
            .await?
        {
            if !o.dynamic_scaling {
                return Ok(Err(format!(
                    "its service offering {} does not enable dynamic scaling",
                    o.name
                )));
            }
        }
        Ok(Ok(()))
    }

    /// The most vCPUs and MB a scalable instance may grow to, from
    /// `vm.serviceoffering.cpu.cores.max` and `vm.serviceoffering.ram.size.max`
    /// (0: the host's own); (0, 0) when it is not scalable.
    async fn scaling_room(&self, vm: &Vm) -> SResult<(i64, i64)> {
        if self.scalable(vm).await?.is_err() {
            return Ok((0, 0));
        }
        let host = match vm.host_id {
            Some(h) => self.load_cached::<Host>(h).await?,
            None => None,
        };
        let pick = |setting: i64, host: Option<i64>, own: i64| {
            let limit = if setting > 0 {
                setting
            } else {
                host.unwrap_or(own)
            };
            limit.max(own)
        };
        Ok((
            pick(
                self.setting_i64("vm.serviceoffering.cpu.cores.max"),
                host.as_ref().map(|h| h.cpu_number),
                vm.cpu_number,
            ),
            pick(
                self.setting_i64("vm.serviceoffering.ram.size.max"),
                host.as_ref().map(|h| h.memory_total / (1 << 20)),
                vm.memory,
            ),
        ))
    }

    /// A template as hosts fetch it, with a SHA-256 of the stored file that the
    /// host verifies after the transfer (computed once and kept).
    async fn template_ref(&self, id: i64) -> SResult<super::agent::TemplateRef> {
        let mut t: Template = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("template vanished"))?;
        let sum = match t.details.get("orrery.sha256") {
            Some(s) => s.clone(),
            None => {
                let path = self.secondary_path(&t)?;
                let sum = tokio::task::spawn_blocking(move || sha256_file(&path))
                    .await
                    .map_err(|e| ServiceError::internal(e.to_string()))?
                    .map_err(|e| ServiceError::internal(format!("reading template: {e}")))?;
                t.details.insert("orrery.sha256".into(), sum.clone());
                let mut tx = Tx::new();
                tx.update(&mut t);
                // Losing this race only means computing the sum again later.
                let _ = self.store.commit(tx.ops).await;
                sum
            }
        };
        Ok(super::agent::TemplateRef {
            uuid: t.uuid.clone(),
            format: t.format.to_lowercase(),
            checksum: format!("{{SHA-256}}{sum}"),
            size: t.size,
        })
    }

    /// Where a template's file lives in secondary storage.
    pub fn secondary_path(&self, t: &Template) -> SResult<std::path::PathBuf> {
        let p = t.path.as_ref().ok_or_else(|| {
            ServiceError::unavailable(format!("Template {} is not downloaded yet", t.uuid))
        })?;
        Ok(self.data_dir.join("secondary").join(p))
    }

    pub(crate) async fn exec_start(
        self: &Arc<Self>,
        _caller: &Caller,
        vm_id: i64,
        pin: Pin,
    ) -> SResult<JobOutput> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        // The decision is taken under the placement lock and reserved in the
        // capacity view, so the next decision sees it while this one's
        // Starting commit is still on its way.
        let (host, held) = {
            let g = self.placement_guard().await?;
            let pin = self.storage_pin(&vm, pin).await?;
            let host = self.place(&vm, &pin).await?;
            self.capacity.reserve(&vm, host.id);
            (host, g.until_committed())
        };
        let (hid, pod, cl) = (host.id, host.pod_id, host.cluster_id);
        let begun = self
            .transition(
                vm_id,
                Transition::BeginStart,
                move |v| {
                    v.host_id = Some(hid);
                    v.pod_id = Some(pod);
                    v.cluster_id = Some(cl);
                },
                |_, _| {},
            )
            .await;
        drop(held);
        self.capacity.release(vm_id);
        // The spec from the record as it now is: placed on its host.
        let vm = begun?;
        let spec = match self.vm_spec(&vm).await {
            Ok(s) => s,
            Err(e) => {
                self.transition(
                    vm_id,
                    Transition::StartFailed,
                    |v| v.host_id = None,
                    |_, _| {},
                )
                .await?;
                return Err(e);
            }
        };
        if let Err(e) = self.agents.start(host.id, &spec).await {
            self.transition(
                vm_id,
                Transition::StartFailed,
                |v| v.host_id = None,
                |_, _| {},
            )
            .await?;
            return Err(e.into());
        }
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm_id)).await?;
        let hid = host.id;
        let vm = self
            .transition(
                vm_id,
                Transition::StartSucceeded,
                move |v| v.last_host_id = Some(hid),
                |v, tx| {
                    for vol in &vols {
                        if vol.state == "Allocated" {
                            let mut vol = vol.clone();
                            vol.state = "Ready".into();
                            tx.update(&mut vol);
                        }
                    }
                    let _ = v;
                },
            )
            .await?;
        self.record(&vm, "VM.START", "Started instance").await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    pub(crate) async fn exec_stop(
        &self,
        _caller: &Caller,
        vm_id: i64,
        forced: bool,
    ) -> SResult<JobOutput> {
        let vm = self.stop_inner(vm_id, forced).await?;
        self.record(&vm, "VM.STOP", "Stopped instance").await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    /// A volatile offering's reboot: the instance stops, its root disk is
    /// recreated from the template, and it starts again on the same host
    /// (where its volumes are), with its data volumes as they were.
    async fn reboot_with_new_root(
        self: &Arc<Self>,
        caller: &Caller,
        vm: Vm,
        host_id: i64,
    ) -> SResult<JobOutput> {
        let root: Option<Volume> = self
            .store
            .all::<Volume>(Query::new().eq(Col::Parent, vm.id))
            .await?
            .into_iter()
            .find(|v| v.volume_type == "ROOT");
        let root = root.ok_or_else(|| {
            ServiceError::invalid(format!("Instance {} has no root volume to reset", vm.uuid))
        })?;
        if vm.template_id.is_none() {
            return Err(ServiceError::invalid(format!(
                "Instance {} was deployed from an ISO: there is no template to reset its root disk from",
                vm.uuid
            )));
        }
        self.stop_inner(vm.id, false).await?;
        let spec = self.volume_spec(&root).await?;
        self.agents
            .reset_volume(host_id, &vm.instance_name, &spec)
            .await?;
        let pin = Pin {
            host_id: Some(host_id),
            ..Pin::default()
        };
        self.exec_start(caller, vm.id, pin).await?;
        let vm: Vm = self
            .store
            .load(vm.id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        self.record(
            &vm,
            "VM.REBOOT",
            "Rebooted instance with a new root disk from its template (volatile offering)",
        )
        .await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    async fn stop_inner(&self, vm_id: i64, forced: bool) -> SResult<Vm> {
        let vm = self
            .transition(vm_id, Transition::BeginStop, |_| {}, |_, _| {})
            .await?;
        if let Some(h) = vm.host_id {
            if let Err(e) = self.agents.stop(h, &vm.instance_name, forced).await {
                if !forced {
                    // Stay Running: the host still runs it.
                    let mut v: Vm = self
                        .store
                        .load(vm_id)
                        .await?
                        .ok_or_else(|| ServiceError::internal("instance vanished"))?;
                    v.state = VmState::Running;
                    let mut tx = Tx::new();
                    tx.update(&mut v);
                    self.store.commit(tx.ops).await?;
                    return Err(e.into());
                }
            }
        }
        self.transition(
            vm_id,
            Transition::StopSucceeded,
            |v| v.host_id = None,
            |_, _| {},
        )
        .await
    }

    pub(crate) async fn exec_reboot(
        self: &Arc<Self>,
        caller: &Caller,
        vm_id: i64,
    ) -> SResult<JobOutput> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        Transition::Reboot
            .apply(vm.state)
            .map_err(|e| ServiceError::state(format!("Instance {}: {e}", vm.uuid)))?;
        let h = vm
            .host_id
            .ok_or_else(|| ServiceError::internal("running instance without host"))?;
        let volatile = self
            .load_cached::<ServiceOffering>(vm.service_offering_id)
            .await?
            .is_some_and(|o| o.volatile);
        if volatile {
            return self.reboot_with_new_root(caller, vm, h).await;
        }
        self.agents.reboot(h, &vm.instance_name).await?;
        let vm = self
            .transition(vm_id, Transition::Reboot, |_| {}, |_, _| {})
            .await?;
        self.record(&vm, "VM.REBOOT", "Rebooted instance").await?;
        Ok(JobOutput::Vm { id: vm.id })
    }

    pub(crate) async fn exec_destroy(
        &self,
        caller: &Caller,
        vm_id: i64,
        expunge: bool,
        volume_ids: Vec<i64>,
    ) -> SResult<JobOutput> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        if vm.state == VmState::Running {
            self.stop_inner(vm_id, self.setting_bool("vm.destroy.forcestop"))
                .await?;
        }
        let vm: Vm = self.load_vm(vm_id).await?;
        self.destroy_vm_snapshots(&vm).await?;
        let t = now();
        let vm = if vm.state == VmState::Destroyed {
            vm
        } else {
            let vols: Vec<Volume> = self
                .store
                .all(Query::new().and(Cond::In(
                    Col::Id,
                    volume_ids.iter().map(|v| (*v).into()).collect(),
                )))
                .await?;
            self.transition(
                vm_id,
                Transition::Destroy,
                move |v| {
                    v.destroyed_at = Some(t);
                    v.host_id = None;
                },
                |_, tx| {
                    for vol in &vols {
                        let mut vol = vol.clone();
                        vol.state = "Destroy".into();
                        vol.vm_id = None;
                        vol.removed = Some(t);
                        tx.update(&mut vol);
                    }
                },
            )
            .await?
        };
        self.record(&vm, "VM.DESTROY", "Destroyed instance").await?;
        if expunge {
            self.exec_expunge(caller, vm_id).await?;
            return Ok(JobOutput::VmGone);
        }
        Ok(JobOutput::Vm { id: vm.id })
    }

    /// Removes the instance for good: host resources, volumes and addresses.
    pub(crate) async fn exec_expunge(&self, _caller: &Caller, vm_id: i64) -> SResult<()> {
        let vm: Vm = self
            .store
            .load(vm_id)
            .await?
            .ok_or_else(|| ServiceError::internal("instance vanished"))?;
        if vm.state == VmState::Running {
            self.stop_inner(vm_id, true).await?;
        }
        // Gone with the volumes they live in (an instance expunged without
        // being destroyed first still has its records).
        self.destroy_vm_snapshots(&self.load_vm(vm_id).await?)
            .await?;
        let vm = if vm.state == VmState::Expunging {
            vm
        } else {
            self.transition(vm_id, Transition::BeginExpunge, |_| {}, |_, _| {})
                .await?
        };
        if let Some(h) = vm.last_host_id.or(vm.host_id) {
            self.agents.expunge(h, &vm.instance_name).await?;
        }
        let nics: Vec<Nic> = self.store.all(Query::new().eq(Col::Parent, vm_id)).await?;
        let vols: Vec<Volume> = self.store.all(Query::new().eq(Col::Parent, vm_id)).await?;
        // Its icon goes with it (and its root volume's).
        let mut icons = Vec::new();
        for (ty, uuid) in std::iter::once(("VirtualMachine", vm.uuid.as_str())).chain(
            vols.iter()
                .filter(|v| v.volume_type == "ROOT")
                .map(|v| ("Volume", v.uuid.as_str())),
        ) {
            icons.extend(self.icon_id(ty, uuid).await?);
        }
        let t = now();
        let vm = self
            .transition(
                vm_id,
                Transition::ExpungeDone,
                move |v| {
                    v.removed = Some(t);
                    v.host_id = None;
                },
                |_, tx| {
                    for id in &icons {
                        tx.delete::<ResourceIcon>(*id);
                    }
                    for n in &nics {
                        tx.delete::<Nic>(n.id);
                    }
                    for vol in &vols {
                        let mut vol = vol.clone();
                        if vol.volume_type == "ROOT" {
                            vol.state = "Expunged".into();
                            vol.removed = Some(t);
                        } else {
                            // Data disks survive the instance, detached.
                            vol.vm_id = None;
                            vol.device_id = None;
                            vol.attached = None;
                        }
                        tx.update(&mut vol);
                    }
                },
            )
            .await?;
        for n in &nics {
            self.ip_release(n.network_id, &n.ip_address).await;
        }
        self.record(&vm, "VM.EXPUNGE", "Expunged instance").await?;
        Ok(())
    }

    pub async fn recover(&self, caller: &Caller, vm: &Vm) -> SResult<Vm> {
        Self::check_transition(vm, Transition::Recover)?;
        let vm = self
            .transition(
                vm.id,
                Transition::Recover,
                |v| v.destroyed_at = None,
                |_, _| {},
            )
            .await?;
        let _ = caller;
        self.record(&vm, "VM.RECOVER", "Recovered instance").await?;
        Ok(vm)
    }

    /// Writes an event attributed to the instance's owner.
    pub(crate) async fn record(&self, vm: &Vm, kind: &str, what: &str) -> SResult<()> {
        let mut tx = Tx::new();
        tx.insert(&Event {
            id: 0,
            uuid: new_uuid(),
            version: 0,
            event_type: kind.into(),
            level: "INFO".into(),
            description: format!("{what}. Instance Id: {}", vm.uuid),
            state: "Completed".into(),
            account_id: vm.account_id,
            domain_id: vm.domain_id,
            user_id: vm.user_id,
            resource_uuid: Some(vm.uuid.clone()),
            resource_type: Some("VirtualMachine".into()),
            resource_name: Some(vm.name.clone()),
            created: now(),
        });
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Instances left in a transitional state by an interrupted run are settled
    /// by asking their hosts what really runs.
    pub(crate) async fn reconcile_transitional(&self) -> SResult<()> {
        let states: Vec<crate::store::Val> = [
            VmState::Creating,
            VmState::Starting,
            VmState::Stopping,
            VmState::Migrating,
            VmState::Expunging,
        ]
        .iter()
        .map(|s| s.as_str().into())
        .collect();
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().and(Cond::In(Col::State, states)))
            .await?;
        for vm in vms {
            self.settle(vm).await?;
        }
        self.settle_running().await
    }

    /// Brings one instance out of a transitional state from what its host
    /// reports: after a restart, or after a job that could not record its
    /// outcome (a full disk) and left it Starting or Creating.
    pub(crate) async fn settle(&self, mut vm: Vm) -> SResult<()> {
        // An interrupted migration: the instance may already run on the
        // destination.
        if let (VmState::Migrating, Some(dest)) = (vm.state, vm.migrating_to) {
            vm.migrating_to = None;
            if let Ok(PowerState::On) = self.agents.power_state(dest, &vm.instance_name).await {
                if let Some(h) = self.load_cached::<Host>(dest).await? {
                    vm.state = VmState::Running;
                    vm.host_id = Some(h.id);
                    vm.last_host_id = Some(h.id);
                    vm.pod_id = Some(h.pod_id);
                    vm.cluster_id = Some(h.cluster_id);
                    let mut tx = Tx::new();
                    tx.update(&mut vm);
                    self.store.commit(tx.ops).await?;
                    return Ok(());
                }
            }
        }
        {
            let power = match vm.host_id {
                Some(h) => match self.agents.power_state(h, &vm.instance_name).await {
                    Ok(p) => p,
                    // A real host that has not reconnected yet: its agent's
                    // report settles the instance when it does.
                    Err(AgentError::NotConnected(_))
                        if !matches!(vm.state, VmState::Creating | VmState::Expunging) =>
                    {
                        return Ok(())
                    }
                    Err(_) => PowerState::Missing,
                },
                None => PowerState::Missing,
            };
            match vm.state {
                VmState::Expunging => {
                    let c = self.identity.system_caller().await?;
                    self.exec_expunge(&c, vm.id).await?;
                    return Ok(());
                }
                VmState::Creating => vm.state = VmState::Stopped,
                _ if power == PowerState::On => vm.state = VmState::Running,
                _ => {
                    vm.state = VmState::Stopped;
                    vm.host_id = None;
                }
            }
            let mut tx = Tx::new();
            tx.update(&mut vm);
            self.store.commit(tx.ops).await?;
        }
        Ok(())
    }

    /// Running instances whose host no longer knows them (a simulated host
    /// forgets across restarts) are reported powered off.
    async fn settle_running(&self) -> SResult<()> {
        let running: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::State, "Running"))
            .await?;
        for vm in running {
            if let Some(h) = vm.host_id {
                let power = match self.agents.power_state(h, &vm.instance_name).await {
                    Ok(p) => p,
                    Err(AgentError::NotConnected(_)) => continue,
                    Err(_) => PowerState::Missing,
                };
                if power != PowerState::On {
                    self.transition(
                        vm.id,
                        Transition::PoweredOffOutOfBand,
                        |v| v.host_id = None,
                        |_, _| {},
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// One expunger pass: instances destroyed longer than `expunge.delay` ago.
    pub async fn expunge_due(&self) -> SResult<usize> {
        let delay = self.setting_i64("expunge.delay");
        let cutoff = now() - delay;
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::State, "Destroyed"))
            .await?;
        let c = self.identity.system_caller().await?;
        let mut n = 0;
        for vm in vms
            .into_iter()
            .filter(|v| v.destroyed_at.unwrap_or(0) <= cutoff)
        {
            self.exec_expunge(&c, vm.id).await?;
            n += 1;
        }
        Ok(n)
    }

    pub async fn update_vm(&self, caller: &Caller, mut vm: Vm, u: VmUpdate) -> SResult<Vm> {
        let mut u = u;
        if let Some(x) = &u.extraconfig {
            u.extraconfig = Some(self.check_extraconfig(vm.account_id, x)?);
        }
        let os_type_id = match &u.os_type {
            Some(uuid) => Some(self.by_uuid::<OsType>("ostypeid", uuid).await?.id),
            None => None,
        };
        let needs_stop =
            u.name.is_some() || os_type_id.is_some() || !u.details.is_empty() || u.cleanup_details;
        if needs_stop && vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} must be stopped to change its name, OS type or settings; it is {}",
                vm.uuid, vm.state
            )));
        }
        self.check_detail_change(caller, &u.details.keys().cloned().collect::<Vec<_>>())?;
        super::details::check_values(&u.details).map_err(ServiceError::invalid)?;
        if let Some(n) = &u.name {
            naming::validate_hostname(n).map_err(|e| {
                ServiceError::invalid(format!("Invalid value for parameter name: {e}"))
            })?;
        }
        // New user data is resolved as at deploy, under the template's policy.
        let userdata = if u.userdata.is_empty() {
            None
        } else {
            let owner: Account = self
                .load_cached(vm.account_id)
                .await?
                .ok_or_else(|| ServiceError::internal("the instance's account vanished"))?;
            let template: Option<Template> = match vm.template_id {
                Some(id) => self.load_cached(id).await?,
                None => None,
            };
            Some(
                self.guest_access
                    .resolve_userdata(caller, &owner, template.as_ref(), &u.userdata)
                    .await?,
            )
        };
        let mut tx = Tx::new();
        if let Some(g) = &u.group {
            if g.is_empty() {
                vm.group_id = None;
            } else {
                let owner: Account = self
                    .store
                    .load(vm.account_id)
                    .await?
                    .ok_or_else(|| ServiceError::internal("owner missing"))?;
                let (grp, is_new) = self.group_for(&owner, g).await?;
                if is_new {
                    tx.insert(&grp);
                }
                vm.group_id = Some(grp.id);
            }
        }
        if let Some(n) = u.name {
            vm.name = n;
        }
        if let Some(d) = u.display_name {
            vm.display_name = d;
        }
        if let Some(o) = os_type_id {
            vm.os_type_id = o;
        }
        if let Some(h) = u.ha_enable {
            vm.ha_enable = h;
        }
        if let Some(d) = u.dynamically_scalable {
            vm.dynamically_scalable = d;
        }
        if let Some(p) = u.delete_protection {
            vm.delete_protection = p;
        }
        if let Some(x) = u.display_vm {
            vm.display_vm = x;
        }
        if let Some(x) = u.extraconfig {
            vm.extraconfig = Some(x);
        }
        let user_data_changed = userdata.is_some();
        if let Some(r) = userdata {
            vm.userdata = r.userdata;
            vm.userdata_id = r.userdata_id;
            vm.userdata_details = r.details;
        }
        if u.cleanup_details {
            vm.details = self.details_after_cleanup(caller, &vm.details);
        }
        for (k, v) in u.details {
            vm.details.insert(k, v);
        }
        let lease_event = self.lease_update(&mut vm, u.lease, self.clock_now().timestamp())?;
        if let Some(e) = lease_event {
            self.event(
                &mut tx,
                caller,
                e,
                format!("Lease of instance {} disabled", vm.uuid),
                vm.account_id,
                vm.domain_id,
                Some((&vm.uuid, "VirtualMachine", &vm.name)),
            );
        }
        vm.last_updated = now();
        let (acct, dom, uuid, name) = (
            vm.account_id,
            vm.domain_id,
            vm.uuid.clone(),
            vm.name.clone(),
        );
        tx.update(&mut vm);
        self.event(
            &mut tx,
            caller,
            "VM.UPDATE",
            format!("Updated instance. Instance Id: {uuid}"),
            acct,
            dom,
            Some((&uuid, "VirtualMachine", &name)),
        );
        self.store.commit(tx.ops).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(..) => {
                ServiceError::conflict("The instance changed concurrently; retry")
            }
            e => e.into(),
        })?;
        {
            let mut st = self.schedules.state.lock().await;
            match vm.lease.expires() {
                Some(at) => st.track_lease(vm.id, at),
                None => st.untrack_lease(vm.id),
            }
        }
        // New user data reaches a running guest's metadata service at once.
        if user_data_changed {
            self.push_metadata(&vm).await;
        }
        Ok(vm)
    }
}

#[derive(Default)]
pub struct VmUpdate {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub group: Option<String>,
    /// `ostypeid`, resolved by the service.
    pub os_type: Option<String>,
    pub ha_enable: Option<bool>,
    pub dynamically_scalable: Option<bool>,
    pub delete_protection: Option<bool>,
    pub display_vm: Option<bool>,
    pub details: BTreeMap<String, String>,
    pub cleanup_details: bool,
    pub extraconfig: Option<String>,
    /// `userdata`, `userdataid`, `userdatadetails`.
    pub userdata: super::userdata::UserDataRequest,
    pub lease: orrery_schedule::lease::LeaseRequest,
}

/// Details that size an instance; their values must be positive integers.
const SIZE_DETAILS: [&str; 5] = ["cpuNumber", "cpuSpeed", "memory", "rootdisksize", "size"];

/// CPU count, speed and memory from a fixed offering, or from `details` within a
/// custom offering's limits.
pub fn compute_size(
    o: &ServiceOffering,
    details: &BTreeMap<String, String>,
) -> SResult<(i64, i64, i64)> {
    // Size details are checked even when a fixed offering ignores them: a
    // request that says memory=abc is wrong whatever the offering.
    for (k, v) in details {
        if SIZE_DETAILS.iter().any(|s| s.eq_ignore_ascii_case(k))
            && !v.trim().parse::<i64>().is_ok_and(|n| n > 0)
        {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter details: {k}={} is not a positive integer",
                v.chars().take(32).collect::<String>()
            )));
        }
    }
    let get = |k: &str| -> SResult<Option<i64>> {
        match details.iter().find(|(dk, _)| dk.eq_ignore_ascii_case(k)) {
            None => Ok(None),
            Some((_, v)) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ServiceError::invalid(format!(
                    "Invalid value for details {k}: {v} is not an integer"
                ))
            }),
        }
    };
    let cpu = match o.cpu_number {
        Some(c) => c,
        None => get("cpuNumber")?.ok_or_else(|| {
            ServiceError::invalid(
                "The service offering is custom: details[0].cpuNumber is required",
            )
        })?,
    };
    let speed = match o.cpu_speed {
        Some(s) => s,
        None => get("cpuSpeed")?.unwrap_or(1000),
    };
    let mem = match o.memory {
        Some(m) => m,
        None => get("memory")?.ok_or_else(|| {
            ServiceError::invalid("The service offering is custom: details[0].memory is required")
        })?,
    };
    if o.customized {
        if let (Some(lo), Some(hi)) = (o.min_cpu, o.max_cpu) {
            if cpu < lo || cpu > hi {
                return Err(ServiceError::invalid(format!(
                    "Invalid cpuNumber {cpu}: the offering allows {lo} to {hi}"
                )));
            }
        }
        if let (Some(lo), Some(hi)) = (o.min_memory, o.max_memory) {
            if mem < lo || mem > hi {
                return Err(ServiceError::invalid(format!(
                    "Invalid memory {mem}: the offering allows {lo} to {hi} MB"
                )));
            }
        }
    }
    if cpu < 1 || speed < 1 || mem < 32 {
        return Err(ServiceError::invalid(format!(
            "Invalid compute size: {cpu} CPUs at {speed} MHz with {mem} MB"
        )));
    }
    Ok((cpu, speed, mem))
}

fn root_size(
    t: Option<&Template>,
    d: Option<&DiskOffering>,
    root_gb: Option<i64>,
    iso: bool,
    custom_gb: Option<i64>,
) -> SResult<i64> {
    if let Some(gb) = root_gb {
        if gb <= 0 {
            return Err(ServiceError::invalid(
                "Invalid value for parameter rootdisksize: it must be positive",
            ));
        }
        let want = gb * GIB;
        if let Some(t) = t {
            if want < t.size {
                return Err(ServiceError::invalid(format!(
                    "Invalid value for parameter rootdisksize: {gb} GB is smaller than the template's size of {} bytes",
                    t.size
                )));
            }
        }
        return Ok(want);
    }
    if iso {
        let d = d.ok_or_else(|| {
            ServiceError::invalid(
                "A disk offering (diskofferingid) is required when deploying from an ISO",
            )
        })?;
        return Ok(if d.customized {
            custom_gb.unwrap_or(0) * GIB
        } else {
            d.disk_size_gb * GIB
        });
    }
    Ok(t.map(|t| t.size).unwrap_or(0))
}

/// Locally administered unicast MACs derived from ids: unique per NIC, stable.
pub fn mac_for(vm_id: i64, dev: i64) -> String {
    let v = (vm_id as u64) << 4 | (dev as u64 & 0xf);
    format!(
        "1e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (v >> 32) & 0xff,
        (v >> 24) & 0xff,
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff
    )
}

fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A random VNC password of 8 characters (QEMU uses at most 8), from the
/// operating system's generator.
pub fn vnc_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_passwords_are_random() {
        let a = vnc_password();
        let b = vnc_password();
        assert_eq!(a.len(), 8);
        assert_ne!(a, b);
    }

    #[test]
    fn pool_never_repeats_until_released() {
        let mut p = IpPool {
            next: 10,
            start: 10,
            end: 12,
            used: Default::default(),
        };
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let c = p.take().unwrap();
        assert!(a != b && b != c && a != c);
        assert!(p.take().is_none());
        p.release(&b.to_string());
        assert_eq!(p.take(), Some(b));
    }

    #[test]
    fn macs_are_unique_per_vm_and_device() {
        assert_ne!(mac_for(1, 0), mac_for(1, 1));
        assert_ne!(mac_for(1, 0), mac_for(2, 0));
        assert!(mac_for(1, 0).starts_with("1e:"));
    }

    #[test]
    fn custom_offering_needs_details() {
        let o = ServiceOffering {
            customized: true,
            min_cpu: Some(1),
            max_cpu: Some(4),
            min_memory: Some(256),
            max_memory: Some(4096),
            ..Default::default()
        };
        let mut d = BTreeMap::new();
        assert!(compute_size(&o, &d).is_err());
        d.insert("cpuNumber".to_string(), "2".to_string());
        d.insert("memory".to_string(), "512".to_string());
        assert_eq!(compute_size(&o, &d).unwrap(), (2, 1000, 512));
        d.insert("cpuNumber".to_string(), "8".to_string());
        assert!(compute_size(&o, &d).is_err());
    }

    #[test]
    fn size_details_must_be_numbers_even_for_fixed_offerings() {
        let o = ServiceOffering {
            cpu_number: Some(1),
            cpu_speed: Some(500),
            memory: Some(256),
            ..Default::default()
        };
        let mut d = BTreeMap::new();
        d.insert("memory".to_string(), "abc".to_string());
        let e = compute_size(&o, &d).unwrap_err();
        assert!(e.text().contains("parameter details"), "{}", e.text());
        d.insert("memory".to_string(), "512".to_string());
        assert_eq!(compute_size(&o, &d).unwrap(), (1, 500, 256));
    }
}
