//! Real hosts: enrolment tokens, certificates, agent sessions coming and
//! going, and reconciling what a host reports with what the store says.

use super::agent::PowerState;
use super::*;
use crate::store::records::*;
use orrery_model::{Transition, VmState};
use sha2::Digest;
use std::time::{Duration, SystemTime};

/// Host certificates last a year; `provisionCertificate` renews them.
pub const HOST_CERT_DAYS: u64 = 365;
/// Tokens are valid for a day unless asked otherwise.
pub const TOKEN_TTL_SECS: i64 = 24 * 3600;
/// The most addresses a host may ask its certificate to carry.
pub const MAX_ENROL_ADDRESSES: usize = 16;

/// What an agent says about its host when it connects.
#[derive(Debug, Clone, Default)]
pub struct HostReport {
    pub hostname: String,
    pub ip_address: String,
    pub cpus: i64,
    pub cpu_mhz: i64,
    pub memory_bytes: i64,
    pub agent_version: String,
    pub facts: serde_json::Value,
    /// The agent wrote libvirt's and QEMU's TLS files from its certificate.
    pub libvirt_tls: bool,
    /// The host's own storage directory and its size (its local pool).
    pub local_dir: String,
    pub local_bytes: i64,
}

/// One domain a host runs (or has defined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSeen {
    pub name: String,
    pub instance_uuid: Option<String>,
    pub power: PowerState,
}

/// What reconciling a host's report decides for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    PoweredOff,
    PoweredOn,
}

/// An instance as reconciling sees it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: i64,
    pub name: String,
    pub state: VmState,
    pub host_id: Option<i64>,
    pub last_host_id: Option<i64>,
    /// A job is working on the instance right now.
    pub busy: bool,
}

/// Pure: compares the instances the store places on a host with the domains
/// the host reports. Instances with a job in flight are left to that job.
/// Domains the store does not know are left alone.
pub fn reconcile(host_id: i64, vms: &[Placed], seen: &[DomainSeen]) -> Vec<(i64, Reconcile)> {
    let mut out = Vec::new();
    for p in vms {
        let (id, name, state, on_host, last_host) =
            (&p.id, &p.name, &p.state, &p.host_id, &p.last_host_id);
        if p.busy {
            continue;
        }
        let power = seen
            .iter()
            .find(|d| &d.name == name)
            .map(|d| d.power)
            .unwrap_or(PowerState::Missing);
        match state {
            VmState::Running | VmState::Starting | VmState::Stopping | VmState::Migrating
                if *on_host == Some(host_id) && power != PowerState::On =>
            {
                out.push((*id, Reconcile::PoweredOff))
            }
            VmState::Starting | VmState::Stopping
                if *on_host == Some(host_id) && power == PowerState::On =>
            {
                out.push((*id, Reconcile::PoweredOn))
            }
            VmState::Stopped if *last_host == Some(host_id) && power == PowerState::On => {
                out.push((*id, Reconcile::PoweredOn))
            }
            _ => {}
        }
    }
    out
}

fn placed(vm: &Vm, busy: bool) -> Placed {
    Placed {
        id: vm.id,
        name: vm.instance_name.clone(),
        state: vm.state,
        host_id: vm.host_id,
        last_host_id: vm.last_host_id,
        busy,
    }
}

/// A secret's SHA-256 in hex: what the store keeps of one-time tokens.
pub(crate) fn token_hash(secret: &str) -> String {
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pure: the names a host's certificate carries, from what it sent at
/// enrolment. Its addresses must each be a DNS name or an IP literal (at most
/// [`MAX_ENROL_ADDRESSES`]), else enrolment is refused with the reason; its
/// host name is only left out when unusable, since the kernel's name is not
/// the operator's to fix at enrolment time.
pub fn enrolment_names(hostname: &str, addresses: &[String]) -> Result<Vec<String>, String> {
    if addresses.len() > MAX_ENROL_ADDRESSES {
        return Err(format!(
            "{} addresses given, at most {MAX_ENROL_ADDRESSES} are allowed",
            addresses.len()
        ));
    }
    let mut names = Vec::new();
    let hostname = hostname.trim();
    if orrery_tls::valid_dns_name(hostname) {
        names.push(hostname.to_ascii_lowercase());
    }
    for a in addresses {
        if !orrery_tls::valid_host_name(a) {
            return Err(format!(
                "address {a:?} is neither a DNS name nor an IP address"
            ));
        }
        let a = a.to_ascii_lowercase();
        if !names.contains(&a) {
            names.push(a);
        }
    }
    Ok(names)
}

/// Pure: the names a renewed certificate carries: those recorded at
/// enrolment and the address the host reports now.
pub fn renewal_names(host: &Host) -> Vec<String> {
    let mut names = host.cert_names.clone();
    let ip = host.ip_address.trim();
    if !ip.is_empty() && !names.iter().any(|n| n == ip) {
        names.push(ip.to_string());
    }
    names
}

/// Splits `orr1.<secret>.<ca fingerprint>`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    orrery_tls::split_token(token)
}

impl Context {
    /// The agent endpoints of the other live coordinators sharing the
    /// store (none when they cannot be read: commands then stay local).
    pub async fn peer_endpoints(&self) -> Vec<String> {
        self.store.peers().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the other coordinators");
            Vec::new()
        })
    }

    /// Tells the other coordinators sharing the store where this one's
    /// agent endpoint is.
    pub async fn advertise_agent_endpoint(&self, address: &str) -> SResult<()> {
        Ok(self.store.advertise(address).await?)
    }

    pub fn load_ca(&self) -> SResult<orrery_tls::Ca> {
        let read = |n: &str| {
            std::fs::read_to_string(self.data_dir.join(n))
                .map_err(|e| ServiceError::internal(format!("reading {n}: {e}")))
        };
        orrery_tls::Ca::load(&read("ca.pem")?, &read("ca.key")?)
            .map_err(|e| ServiceError::internal(format!("loading the CA: {e}")))
    }
}

impl super::infra::Infrastructure {
    /// Creates a one-time enrolment token for a host joining `cluster`.
    pub async fn create_enroll_token(
        &self,
        zone: &Zone,
        pod: &Pod,
        cluster: &Cluster,
        ttl_secs: i64,
    ) -> SResult<String> {
        let fp = self
            .load_ca()?
            .fingerprint()
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let secret = identity::random_key(32);
        let t = EnrollToken {
            id: self.store.new_id::<EnrollToken>().await?,
            uuid: new_uuid(),
            version: 1,
            secret_hash: token_hash(&secret),
            zone_id: zone.id,
            pod_id: pod.id,
            cluster_id: cluster.id,
            expires: now() + ttl_secs,
            used: None,
            host_id: None,
            created: now(),
        };
        let mut tx = Tx::new();
        tx.insert(&t);
        self.store.commit(tx.ops).await?;
        Ok(format!("{}.{secret}.{fp}", orrery_tls::TOKEN_PREFIX))
    }

    /// Trades a token and a CSR for a host certificate naming the host's
    /// `hostname` and `addresses`. The token is spent in the same transaction
    /// that creates the host, so it works once.
    pub async fn enroll(
        &self,
        token: &str,
        csr_der: &[u8],
        hostname: &str,
        addresses: &[String],
    ) -> SResult<(Host, String, String)> {
        let denied = |why: &str| ServiceError::denied(format!("enrolment refused: {why}"));
        let (secret, _) = parse_token(token).ok_or_else(|| denied("malformed token"))?;
        let mut tok: EnrollToken = self
            .store
            .first(Query::new().eq(Col::Ukey, token_hash(secret)))
            .await?
            .ok_or_else(|| denied("unknown token"))?;
        if tok.used.is_some() {
            return Err(denied("the token was already used"));
        }
        if tok.expires < now() {
            return Err(denied("the token has expired"));
        }
        let cert_names = enrolment_names(hostname, addresses)
            .map_err(|why| ServiceError::invalid(format!("enrolment refused: {why}")))?;
        let ca = self.load_ca()?;
        let host_uuid = new_uuid();
        let not_before = SystemTime::now() - Duration::from_secs(300);
        let not_after = SystemTime::now() + Duration::from_secs(HOST_CERT_DAYS * 86400);
        let cert = ca
            .sign_host_csr(csr_der, &host_uuid, &cert_names, not_before, not_after)
            .map_err(|e| ServiceError::invalid(format!("Invalid CSR: {e}")))?;
        let ident = orrery_tls::pem_identity(&cert)
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .ok_or_else(|| ServiceError::internal("issued certificate names no host"))?;
        let name = self.unique_host_name(hostname).await?;
        let t = now();
        let host = Host {
            id: self.store.new_id::<Host>().await?,
            uuid: host_uuid,
            version: 1,
            name,
            zone_id: tok.zone_id,
            pod_id: tok.pod_id,
            cluster_id: tok.cluster_id,
            hypervisor: "KVM".into(),
            ip_address: String::new(),
            state: "Disconnected".into(),
            resource_state: "Enabled".into(),
            created: t,
            cert_serial: Some(ident.serial_hex),
            cert_not_after: Some(ident.not_after_unix),
            cert_names,
            ..Default::default()
        };
        tok.used = Some(t);
        tok.host_id = Some(host.id);
        let mut tx = Tx::new();
        tx.insert(&host);
        tx.update(&mut tok);
        self.store.commit(tx.ops).await?;
        Ok((host, cert, ca.pem().to_string()))
    }

    async fn unique_host_name(&self, wanted: &str) -> SResult<String> {
        let base: String = wanted
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .collect();
        let base = if base.is_empty() { "host".into() } else { base };
        for i in 0.. {
            let cand = if i == 0 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            let taken: Option<Host> = self
                .store
                .first(Query::new().eq(Col::Ukey, cand.to_lowercase()))
                .await?;
            if taken.is_none() {
                return Ok(cand);
            }
        }
        unreachable!("an unbounded search finds a free name")
    }

    /// Checks a connecting agent's certificate against its host record:
    /// unknown or removed hosts and superseded certificates are refused.
    pub async fn authorise_agent(&self, host_uuid: &str, serial_hex: &str) -> SResult<Host> {
        let host: Host = self
            .store
            .load_uuid(host_uuid)
            .await?
            .ok_or_else(|| ServiceError::denied(format!("unknown host {host_uuid}")))?;
        if host.removed.is_some() {
            return Err(ServiceError::denied(format!(
                "host {host_uuid} was removed"
            )));
        }
        if host.cert_serial.as_deref() != Some(serial_hex) {
            return Err(ServiceError::denied(format!(
                "certificate {serial_hex} is not the current certificate of host {host_uuid}"
            )));
        }
        Ok(host)
    }

    /// Signs a renewal CSR for a host, naming what enrolment recorded and the
    /// address it reports now; the serial becomes current once the agent
    /// confirms it stored the certificate.
    pub fn sign_renewal(&self, host: &Host, csr_der: &[u8]) -> SResult<String> {
        let ca = self.load_ca()?;
        let not_before = SystemTime::now() - Duration::from_secs(300);
        let not_after = SystemTime::now() + Duration::from_secs(HOST_CERT_DAYS * 86400);
        ca.sign_host_csr(
            csr_der,
            &host.uuid,
            &renewal_names(host),
            not_before,
            not_after,
        )
        .map_err(|e| ServiceError::internal(format!("signing the renewal: {e}")))
    }

    pub async fn set_host_certificate(&self, host_id: i64, cert_pem: &str) -> SResult<()> {
        let ident = orrery_tls::pem_identity(cert_pem)
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .ok_or_else(|| ServiceError::internal("certificate names no host"))?;
        let mut h: Host = self
            .store
            .load(host_id)
            .await?
            .ok_or_else(|| ServiceError::internal("host vanished"))?;
        h.cert_serial = Some(ident.serial_hex);
        h.cert_not_after = Some(ident.not_after_unix);
        let mut tx = Tx::new();
        tx.update(&mut h);
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Removes a host for good; its certificate stops working at once. Only a
    /// host without instances, and in maintenance or not connected, unless
    /// forced.
    pub async fn delete_host(&self, mut h: Host, forced: bool) -> SResult<()> {
        let vms: Vec<Vm> = self.store.all(Query::new().eq(Col::Host, h.id)).await?;
        if !vms.is_empty() {
            return Err(ServiceError::in_use(format!(
                "Host {} still runs {} instance(s); stop or migrate them first",
                h.uuid,
                vms.len()
            )));
        }
        if !forced && h.state == "Up" && h.resource_state != "Maintenance" {
            return Err(ServiceError::state(format!(
                "Host {} is Up and not in maintenance; put it in maintenance or pass forced=true",
                h.uuid
            )));
        }
        h.removed = Some(now());
        h.state = "Removed".into();
        h.cert_serial = None;
        let mut tx = Tx::new();
        tx.update(&mut h);
        self.store.commit(tx.ops).await?;
        Ok(())
    }
}

impl Service {
    /// An agent connected and said hello: record its facts, mark the host Up,
    /// and settle every instance against what the host really runs.
    pub async fn agent_connected(
        self: &Arc<Self>,
        host_id: i64,
        report: &HostReport,
        seen: &[DomainSeen],
    ) -> SResult<Host> {
        // Retried on a concurrent write: with several coordinators the
        // agent says hello to each at once, and each records it.
        self.change_host_record(host_id, |host| {
            host.state = "Up".into();
            host.ha_state = "Available".into();
            host.last_ping = Some(now());
            if host.name.is_empty() && !report.hostname.is_empty() {
                host.name = report.hostname.clone();
            }
            if !report.ip_address.is_empty() {
                host.ip_address = report.ip_address.clone();
            }
            host.cpu_number = report.cpus;
            host.cpu_speed = report.cpu_mhz;
            host.memory_total = report.memory_bytes;
            host.agent_version = Some(report.agent_version.clone());
            host.facts = Some(report.facts.clone());
            host.libvirt_tls = report.libvirt_tls;
            true
        })
        .await?;
        let host: Host = self
            .store
            .load(host_id)
            .await?
            .ok_or_else(|| ServiceError::internal("host vanished"))?;
        if !report.local_dir.is_empty() {
            self.ensure_local_pool(&host, report).await?;
        }
        // On a shared store the report may be overtaken by another
        // coordinator's job before it is applied: settled beside the session
        // then, each change confirmed with the host (which answers commands
        // only once the session is established, after this returns).
        let shared = self.store.shared();
        if !shared {
            self.reconcile_host(host_id, seen, false).await?;
        }
        let (svc, seen) = (self.clone(), seen.to_vec());
        tokio::spawn(async move {
            if shared {
                // Asked once the session is up (it is, moments after this).
                for _ in 0..100 {
                    if svc.agents.has_session(host_id) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                if let Err(e) = svc.reconcile_host(host_id, &seen, true).await {
                    tracing::warn!(host = host_id, error = %e.text(), "settling the host's instances failed");
                }
            }
            if let Err(e) = svc.remove_stale_domains(host_id, &seen).await {
                tracing::warn!(host = host_id, error = %e.text(), "removing stale domains failed");
            }
        });
        Ok(host)
    }

    /// Each host's own storage directory is a pool of scope HOST, where
    /// volumes go when storage migrates to a host without shared storage.
    async fn ensure_local_pool(&self, host: &Host, report: &HostReport) -> SResult<()> {
        let existing: Option<StoragePool> = self
            .store
            .all(Query::new().eq(Col::Host, host.id))
            .await?
            .into_iter()
            .find(|p: &StoragePool| p.scope == "HOST");
        let mut tx = Tx::new();
        match existing {
            Some(mut p) => {
                if p.path == report.local_dir && p.capacity_bytes == report.local_bytes {
                    return Ok(());
                }
                p.path = report.local_dir.clone();
                p.capacity_bytes = report.local_bytes;
                tx.update(&mut p);
            }
            None => {
                tx.insert(&StoragePool {
                    id: self.store.new_id::<StoragePool>().await?,
                    uuid: new_uuid(),
                    version: 1,
                    name: format!("{}-local", host.name),
                    zone_id: host.zone_id,
                    pod_id: Some(host.pod_id),
                    cluster_id: Some(host.cluster_id),
                    host_id: Some(host.id),
                    path: report.local_dir.clone(),
                    pool_type: "Filesystem".into(),
                    scope: "HOST".into(),
                    capacity_bytes: report.local_bytes,
                    state: "Up".into(),
                    created: now(),
                });
            }
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    pub async fn reconcile_host(
        self: &Arc<Self>,
        host_id: i64,
        seen: &[DomainSeen],
        confirm: bool,
    ) -> SResult<()> {
        let on_host: Vec<Vm> = self.store.all(Query::new().eq(Col::Host, host_id)).await?;
        let stopped: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::State, VmState::Stopped.as_str()))
            .await?;
        let mut rows = Vec::new();
        for vm in on_host
            .iter()
            .chain(stopped.iter().filter(|v| v.last_host_id == Some(host_id)))
        {
            let busy = self.is_busy_anywhere(&vm.uuid).await?;
            rows.push(placed(vm, busy));
        }
        self.apply_reconcile(host_id, &rows, seen, confirm).await
    }

    /// Domains a returning host still has of instances that now live on
    /// another host (restarted there after this host was lost, or moved
    /// while it was away): destroyed and undefined here, never started.
    async fn remove_stale_domains(&self, host_id: i64, seen: &[DomainSeen]) -> SResult<()> {
        for d in seen {
            let Some(uuid) = &d.instance_uuid else {
                continue;
            };
            let Some(vm) = self.store.load_uuid::<Vm>(uuid).await? else {
                continue;
            };
            let elsewhere = vm.host_id.is_some_and(|h| h != host_id)
                && vm.migrating_to != Some(host_id)
                && !self.is_busy_anywhere(&vm.uuid).await?;
            if !elsewhere {
                continue;
            }
            tracing::warn!(vm = %vm.uuid, host = host_id, domain = %d.name, "removing a stale copy of an instance that runs on another host");
            if d.power != PowerState::Off && d.power != PowerState::Missing {
                if let Err(e) = self.agents.stop(host_id, &d.name, true).await {
                    tracing::warn!(vm = %vm.uuid, error = %e, "destroying a stale domain failed");
                    continue;
                }
            }
            if let Err(e) = self
                .agents
                .cleanup_migration(host_id, &d.name, uuid, &[], "")
                .await
            {
                tracing::warn!(vm = %vm.uuid, error = %e, "undefining a stale domain failed");
                continue;
            }
            self.record(
                &vm,
                "VM.HA",
                &format!("Stale copy removed from a returning host (the instance runs on another host); domain {}", d.name),
            )
            .await?;
        }
        Ok(())
    }

    /// Acts on what reconciling `rows` against `seen` decides; instances not
    /// in `rows` are not touched.
    async fn apply_reconcile(
        self: &Arc<Self>,
        host_id: i64,
        rows: &[Placed],
        seen: &[DomainSeen],
        confirm: bool,
    ) -> SResult<()> {
        for (vm_id, action) in reconcile(host_id, rows, seen) {
            // A report can be overtaken by a job that finished meanwhile
            // (on this coordinator or another sharing the store): with
            // `confirm`, act only when the host still says so now.
            let name = rows
                .iter()
                .find(|r| r.id == vm_id)
                .map(|r| r.name.clone())
                .unwrap_or_default();
            let still = if !confirm {
                true
            } else {
                match self.agents.power_state(host_id, &name).await {
                    Ok(p) => match action {
                        Reconcile::PoweredOn => p == PowerState::On,
                        Reconcile::PoweredOff => {
                            matches!(p, PowerState::Off | PowerState::Missing)
                        }
                    },
                    // No answer: left to the next report or event.
                    Err(e) => {
                        tracing::debug!(vm = vm_id, error = %e, "power state not confirmed; report left");
                        false
                    }
                }
            };
            if !still {
                continue;
            }
            let res = match action {
                Reconcile::PoweredOff => {
                    self.transition(
                        vm_id,
                        Transition::PoweredOffOutOfBand,
                        |v| v.host_id = None,
                        |_, _| {},
                    )
                    .await
                }
                Reconcile::PoweredOn => {
                    self.transition(
                        vm_id,
                        Transition::PoweredOnOutOfBand,
                        move |v| {
                            v.host_id = Some(host_id);
                            v.last_host_id = Some(host_id);
                        },
                        |_, _| {},
                    )
                    .await
                }
            };
            match res {
                Ok(vm) => {
                    let (kind, what) = match action {
                        Reconcile::PoweredOff => ("VM.STOP", "Instance powered off on its host"),
                        Reconcile::PoweredOn => ("VM.START", "Instance found running on its host"),
                    };
                    self.record(&vm, kind, what).await?;
                    if action == Reconcile::PoweredOff && vm.ha_enable {
                        self.ha_restart(
                            &vm,
                            host_id,
                            "it powered off on its host without being asked",
                        )
                        .await?;
                    }
                }
                Err(e) => tracing::warn!(vm = vm_id, error = %e.text(), "reconcile skipped"),
            }
        }
        Ok(())
    }

    /// A domain changed power state while the agent watched.
    pub async fn domain_event(self: &Arc<Self>, host_id: i64, d: &DomainSeen) -> SResult<()> {
        self.reconcile_host_one(host_id, d).await
    }

    async fn reconcile_host_one(self: &Arc<Self>, host_id: i64, d: &DomainSeen) -> SResult<()> {
        let vm: Option<Vm> = match &d.instance_uuid {
            Some(u) => self.store.load_uuid(u).await?,
            None => None,
        };
        let Some(vm) = vm else { return Ok(()) };
        if vm.host_id != Some(host_id) && vm.last_host_id != Some(host_id) {
            return Ok(());
        }
        // Only this instance's row: one domain's event says nothing about
        // the host's other instances.
        let busy = self.is_busy_anywhere(&vm.uuid).await?;
        let rows = [placed(&vm, busy)];
        if reconcile(host_id, &rows, std::slice::from_ref(d)).is_empty() {
            if busy
                && self.is_busy(&vm.uuid)
                && !reconcile(host_id, &[placed(&vm, false)], std::slice::from_ref(d)).is_empty()
            {
                // Left to this process's job; looked at again when that job
                // ends, if it is one that leaves the power state alone.
                self.power_rechecks.lock().insert(vm.uuid.clone(), host_id);
            }
            return Ok(());
        }
        // An event can be overtaken by a job (a stop, a start) that finished
        // in the meantime: act only on the state the host confirms now, and
        // on the record as it is after asking.
        let power = match self.agents.power_state(host_id, &vm.instance_name).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(vm = %vm.uuid, error = %e, "power state not confirmed; event left");
                return Ok(());
            }
        };
        let Some(vm) = self.store.load::<Vm>(vm.id).await? else {
            return Ok(());
        };
        let confirmed = DomainSeen { power, ..d.clone() };
        let rows = [placed(&vm, self.is_busy_anywhere(&vm.uuid).await?)];
        self.apply_reconcile(host_id, &rows, std::slice::from_ref(&confirmed), false)
            .await
    }

    /// A power event about `vm_uuid` came while a job worked on it, and the
    /// job (a live scale or volume move, which settle no power) has ended:
    /// the host's word now decides, as for an event that came just now.
    pub(crate) async fn recheck_power(
        self: &Arc<Self>,
        host_id: i64,
        vm_uuid: &str,
    ) -> SResult<()> {
        let Some(vm) = self.store.load_uuid::<Vm>(vm_uuid).await? else {
            return Ok(());
        };
        // Only an instance still Running where the event came from: any
        // other state was set by someone who knew better since.
        if vm.state != VmState::Running || vm.host_id != Some(host_id) {
            return Ok(());
        }
        let seen = DomainSeen {
            name: vm.instance_name.clone(),
            instance_uuid: Some(vm.uuid.clone()),
            // Asked again of the host before anything is done.
            power: PowerState::Missing,
        };
        self.reconcile_host_one(host_id, &seen).await
    }

    /// An HA-enabled instance stopped without anyone asking: start it again,
    /// on the same host while that host is in service, else where placement
    /// puts it.
    pub(crate) async fn ha_restart(
        self: &Arc<Self>,
        vm: &Vm,
        host_id: i64,
        reason: &str,
    ) -> SResult<()> {
        let same_host = self
            .load_cached::<Host>(host_id)
            .await?
            .is_some_and(|h| h.state == "Up" && h.resource_state == "Enabled");
        let pin = super::vm::Pin {
            host_id: same_host.then_some(host_id),
            ..Default::default()
        };
        self.record(vm, "HA.RESTART", &format!("HA restart: {reason}"))
            .await?;
        let caller = self.identity.system_caller().await?;
        let work = super::jobs::Work::Start { vm_id: vm.id, pin };
        self.queue_vm_job(&caller, vm, "startVirtualMachine", work)
            .await?;
        Ok(())
    }

    /// Heartbeats come every `ha.heartbeat.interval`; the record's
    /// `lastpinged` is written only when the host was not Up or the stored
    /// ping is a few seconds old, so a thousand hosts do not mean a thousand
    /// writes a second.
    pub async fn agent_heartbeat(&self, host_id: i64) -> SResult<()> {
        if let Some(h) = self.load_cached::<Host>(host_id).await? {
            let fresh = h
                .last_ping
                .is_some_and(|p| now() - p < fencing::PING_RECORDED_EVERY_SECS);
            if h.state == "Up" && h.ha_state == "Available" && fresh {
                return Ok(());
            }
            if h.ha_state != "Available" {
                self.set_host_ha(host_id, Some("Up"), "Available").await?;
            }
        }
        self.set_host_state(host_id, Some("Up"), true).await
    }

    pub async fn agent_disconnected(&self, host_id: i64) -> SResult<()> {
        // With several coordinators the agent may still be talking to
        // another one: the leader's liveness check (the last heartbeat's
        // age) decides instead.
        if self.store.shared() {
            return Ok(());
        }
        self.set_host_state(host_id, Some("Disconnected"), false)
            .await
    }

    async fn set_host_state(&self, host_id: i64, state: Option<&str>, ping: bool) -> SResult<()> {
        self.change_host_record(host_id, |h| {
            if let Some(s) = state {
                h.state = s.into();
            }
            if ping {
                h.last_ping = Some(now());
            }
            true
        })
        .await
    }

    /// Applies `change` to a live host's record and commits it, retrying on
    /// a concurrent write; `change` returns false when there is nothing to do.
    pub(crate) async fn change_host_record(
        &self,
        host_id: i64,
        mut change: impl FnMut(&mut Host) -> bool,
    ) -> SResult<()> {
        for _ in 0..5 {
            let Some(mut h) = self.store.load::<Host>(host_id).await? else {
                return Ok(());
            };
            if h.removed.is_some() || !change(&mut h) {
                return Ok(());
            }
            let mut tx = Tx::new();
            tx.update(&mut h);
            match self.store.commit(tx.ops).await {
                Ok(()) => return Ok(()),
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Hosts whose agent went quiet: Disconnected after `ping.interval` x
    /// `ping.timeout` seconds without a heartbeat. Down is HA's decision
    /// alone (see `fencing`): it needs the storage heartbeat silent too.
    pub async fn check_liveness(&self) -> SResult<()> {
        let interval = self.setting_f64("ping.interval", &[]).max(1.0);
        let factor = self.setting_f64("ping.timeout", &[]).max(1.0);
        let quiet = (interval * factor) as i64;
        let hosts: Vec<Host> = self.store.all(Query::new()).await?;
        for h in hosts.iter().filter(|h| !h.simulated && h.removed.is_none()) {
            let since = now() - h.last_ping.unwrap_or(h.created);
            let heard = self
                .agents
                .silence(h.id)
                .is_some_and(|s| s.as_secs() as i64 <= quiet);
            if since > quiet && h.state == "Up" && !heard {
                self.set_host_state(h.id, Some("Disconnected"), false)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, power: PowerState) -> DomainSeen {
        DomainSeen {
            name: name.into(),
            instance_uuid: None,
            power,
        }
    }

    #[test]
    fn reconcile_marks_what_the_host_really_runs() {
        let p = |id: i64, state, host_id, last_host_id, busy| Placed {
            id,
            name: format!("i-{id}"),
            state,
            host_id,
            last_host_id,
            busy,
        };
        let vms = vec![
            p(1, VmState::Running, Some(7), Some(7), false),
            p(2, VmState::Running, Some(7), Some(7), false),
            p(3, VmState::Stopped, None, Some(7), false),
            p(4, VmState::Stopped, None, Some(8), false),
            p(5, VmState::Running, Some(7), Some(7), true),
            p(6, VmState::Starting, Some(7), Some(7), false),
        ];
        let domains = vec![
            seen("i-1", PowerState::On),
            seen("i-2", PowerState::Off),
            seen("i-3", PowerState::On),
            seen("i-4", PowerState::On),
            seen("foreign", PowerState::On),
            seen("i-6", PowerState::On),
        ];
        let out = reconcile(7, &vms, &domains);
        assert_eq!(
            out,
            vec![
                (2, Reconcile::PoweredOff),
                (3, Reconcile::PoweredOn),
                (6, Reconcile::PoweredOn)
            ]
        );
        // i-5 is missing but has a job in flight: left to the job.
        assert!(!out.iter().any(|(id, _)| *id == 5));
    }

    #[test]
    fn enrolment_names_the_host_and_refuses_bad_addresses() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            enrolment_names("H1", &a(&["10.99.0.1", "h1", "fe80::1"])).unwrap(),
            a(&["h1", "10.99.0.1", "fe80::1"])
        );
        // An unusable kernel host name is left out, not fatal.
        assert_eq!(
            enrolment_names("my_host", &a(&["10.0.0.1"])).unwrap(),
            a(&["10.0.0.1"])
        );
        let err = enrolment_names("h1", &a(&["10.0.0.1", "no spaces"])).unwrap_err();
        assert!(err.contains("\"no spaces\""), "{err}");
        let many: Vec<String> = (0..17).map(|i| format!("10.0.0.{i}")).collect();
        assert!(enrolment_names("h1", &many)
            .unwrap_err()
            .contains("at most 16"));
        assert_eq!(enrolment_names("h1", &many[..16]).unwrap().len(), 17);
    }

    #[test]
    fn renewals_name_the_recorded_names_and_the_current_address() {
        let mut h = Host {
            cert_names: vec!["h1".into(), "10.0.0.1".into()],
            ip_address: "10.0.0.9".into(),
            ..Default::default()
        };
        assert_eq!(renewal_names(&h), ["h1", "10.0.0.1", "10.0.0.9"]);
        h.ip_address = "10.0.0.1".into();
        assert_eq!(renewal_names(&h), ["h1", "10.0.0.1"]);
        h.ip_address.clear();
        assert_eq!(renewal_names(&h), ["h1", "10.0.0.1"]);
    }

    #[test]
    fn tokens_parse_strictly() {
        let fp = "a".repeat(64);
        let t = format!("orr1.secret.{fp}");
        assert_eq!(parse_token(&t), Some(("secret", fp.as_str())));
        assert_eq!(parse_token("orr1..x"), None);
        assert_eq!(parse_token(&format!("orr2.secret.{fp}")), None);
        assert_eq!(parse_token("garbage"), None);
    }
}
