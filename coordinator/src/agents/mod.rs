//! The agent endpoint: live sessions with enrolled hosts and command dispatch
//! with deadlines. `Router` is the coordinator's `AgentClient`: it sends work
//! to a connected agent, or to the simulator for simulated hosts.

mod convert;
pub mod server;

use crate::service::agent::{
    AgentClient, AgentError, ConsoleTarget, GuestMetadata, HeartbeatSeen, MigrateCmd, PowerState,
    Progress, Simulator, VmSnapshotCmd, VmSpec, VolumeSpec,
};
use crate::service::records::Host;
use crate::service::Service;
use async_trait::async_trait;
use orrery_proto::v1 as pb;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, tonic::Status>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::CommandResult>>>>;

struct Session {
    epoch: u64,
    tx: Outbound,
    pending: Pending,
}

/// Connected agents, by host id.
pub struct Hub {
    svc: OnceLock<Weak<Service>>,
    sessions: Mutex<HashMap<i64, Session>>,
    next: AtomicU64,
    /// Who hears the progress of commands still running, by command id.
    listeners: Mutex<HashMap<u64, Progress>>,
    /// When each host's agent last said anything on its stream.
    heard: Mutex<HashMap<i64, std::time::Instant>>,
    /// Channels to the other coordinators sharing the store, by address.
    peer_channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    /// This process's client certificate and key for them.
    peer_identity: OnceLock<(String, String)>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            svc: OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            listeners: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            peer_channels: Mutex::new(HashMap::new()),
            peer_identity: OnceLock::new(),
        }
    }

    /// The host's agent said something (any message on its stream).
    pub fn heard(&self, host_id: i64) {
        self.heard.lock().insert(host_id, std::time::Instant::now());
    }

    /// Time since the host's agent last said anything, if it has since this
    /// process started.
    pub fn silence(&self, host_id: i64) -> Option<Duration> {
        self.heard.lock().get(&host_id).map(|t| t.elapsed())
    }

    /// The service is created after the hub (it holds the hub as its agent
    /// client), so it is attached afterwards and held weakly.
    pub fn attach(&self, svc: &Arc<Service>) {
        let _ = self.svc.set(Arc::downgrade(svc));
    }

    fn svc(&self) -> Option<Arc<Service>> {
        self.svc.get().and_then(Weak::upgrade)
    }

    pub fn is_connected(&self, host_id: i64) -> bool {
        self.sessions.lock().contains_key(&host_id)
    }

    pub fn connected(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Registers a session, replacing (and so closing) an older one of the same
    /// host. Returns the epoch that identifies it.
    fn register(&self, host_id: i64, tx: Outbound, pending: Pending) -> u64 {
        let epoch = self.next.fetch_add(1, Ordering::Relaxed);
        let old = self
            .sessions
            .lock()
            .insert(host_id, Session { epoch, tx, pending });
        if let Some(old) = old {
            fail_pending(&old.pending, "the agent reconnected");
        }
        epoch
    }

    /// Removes a session if it is still the current one for its host.
    fn unregister(&self, host_id: i64, epoch: u64) -> bool {
        let mut s = self.sessions.lock();
        if s.get(&host_id).is_some_and(|x| x.epoch == epoch) {
            if let Some(old) = s.remove(&host_id) {
                fail_pending(&old.pending, "the agent disconnected");
            }
            return true;
        }
        false
    }

    /// Drops a host's live session (after its host was deleted).
    pub fn disconnect(&self, host_id: i64) {
        if let Some(old) = self.sessions.lock().remove(&host_id) {
            fail_pending(&old.pending, "the host was removed");
        }
    }

    /// Sends one command and waits for its result until the deadline.
    pub async fn call(
        &self,
        host_id: i64,
        op: pb::command::Op,
        timeout: Duration,
    ) -> Result<pb::CommandResult, AgentError> {
        self.call_with_progress(host_id, op, timeout, None).await
    }

    /// A progress report from an agent, for a command still running.
    pub fn progress(&self, command_id: u64, percent: u32) {
        let l = self.listeners.lock().get(&command_id).cloned();
        if let Some(l) = l {
            l(percent.min(100));
        }
    }

    /// Like `call`, with `progress` hearing the agent's reports meanwhile.
    pub async fn call_with_progress(
        &self,
        host_id: i64,
        op: pb::command::Op,
        timeout: Duration,
        progress: Option<Progress>,
    ) -> Result<pb::CommandResult, AgentError> {
        // A host whose agent keeps its session with another coordinator
        // only (it cannot reach this one) is commanded through that one.
        let local = self.is_connected(host_id);
        let raw = self
            .with_listener(progress, |id| async move {
                if local {
                    self.exchange(host_id, id, op, timeout).await
                } else {
                    self.forward(host_id, id, op, timeout).await
                }
            })
            .await;
        match raw? {
            r if r.ok => Ok(r),
            r if r.error_code == "guest-agent" => Err(AgentError::GuestAgent {
                host: host_id,
                reason: r.error,
            }),
            r => Err(AgentError::Failed {
                host: host_id,
                reason: if r.error.is_empty() {
                    r.error_code
                } else {
                    r.error
                },
            }),
        }
    }

    /// Runs a command through this process's own session with the host,
    /// with `progress` hearing its reports: the agent's result as it is.
    pub(crate) async fn call_local(
        &self,
        host_id: i64,
        op: pb::command::Op,
        timeout: Duration,
        progress: Progress,
    ) -> Result<pb::CommandResult, AgentError> {
        self.with_listener(Some(progress), |id| self.exchange(host_id, id, op, timeout))
            .await
    }

    /// Runs `call` with a new command id, `progress` hearing the reports
    /// for that id meanwhile.
    async fn with_listener<F, Fut>(&self, progress: Option<Progress>, call: F) -> Fut::Output
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = progress {
            self.listeners.lock().insert(id, p);
        }
        let r = call(id).await;
        self.listeners.lock().remove(&id);
        r
    }

    async fn exchange(
        &self,
        host_id: i64,
        id: u64,
        op: pb::command::Op,
        timeout: Duration,
    ) -> Result<pb::CommandResult, AgentError> {
        let (tx, pending) = {
            let s = self.sessions.lock();
            let sess = s.get(&host_id).ok_or(AgentError::NotConnected(host_id))?;
            (sess.tx.clone(), sess.pending.clone())
        };
        let (done_tx, done_rx) = oneshot::channel();
        pending.lock().insert(id, done_tx);
        let msg = pb::CoordinatorMessage {
            body: Some(pb::coordinator_message::Body::Command(command(
                id, op, timeout,
            ))),
        };
        if tx.send(Ok(msg)).await.is_err() {
            pending.lock().remove(&id);
            return Err(AgentError::NotConnected(host_id));
        }
        // A little grace past the deadline for the agent's own timeout report.
        match tokio::time::timeout(timeout + Duration::from_secs(5), done_rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(AgentError::NotConnected(host_id)),
            Err(_) => {
                pending.lock().remove(&id);
                Err(AgentError::Timeout(host_id))
            }
        }
    }
}

impl Hub {
    /// Carries a command to the other coordinators sharing the store, one
    /// after the other, until one that holds the host's session runs it.
    async fn forward(
        &self,
        host_id: i64,
        id: u64,
        op: pb::command::Op,
        timeout: Duration,
    ) -> Result<pb::CommandResult, AgentError> {
        let Some(svc) = self.svc() else {
            return Err(AgentError::NotConnected(host_id));
        };
        for addr in svc.peer_endpoints().await {
            let client = match self.peer_client(&svc, &addr) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(peer = %addr, error = %e, "cannot reach another coordinator");
                    continue;
                }
            };
            match self
                .forward_to(client, host_id, id, op.clone(), timeout)
                .await
            {
                Err(AgentError::NotConnected(_)) => continue,
                other => return other,
            }
        }
        Err(AgentError::NotConnected(host_id))
    }

    async fn forward_to(
        &self,
        mut client: pb::peer_client::PeerClient<tonic::transport::Channel>,
        host_id: i64,
        id: u64,
        op: pb::command::Op,
        timeout: Duration,
    ) -> Result<pb::CommandResult, AgentError> {
        use pb::forward_event::Body;
        let svc = self.svc();
        let upload = match (&op, &svc) {
            (pb::command::Op::BackupVolume(b), Some(svc)) => {
                svc.uploads
                    .lookup(&b.grant)
                    .and_then(|(_, dest, max_bytes)| {
                        let dest = dest.strip_prefix(&svc.data_dir).ok()?;
                        Some(pb::UploadGrant {
                            token: b.grant.clone(),
                            dest: dest.to_string_lossy().into_owned(),
                            max_bytes,
                        })
                    })
            }
            _ => None,
        };
        let token = upload.as_ref().map(|u| u.token.clone());
        let req = pb::ForwardRequest {
            host_id,
            timeout_ms: timeout.as_millis().min(u128::from(u64::MAX)) as u64,
            command: Some(command(id, op, timeout)),
            upload,
        };
        let run = async {
            // Not reached at all: as if it had no session either.
            let mut events = client
                .forward(req)
                .await
                .map_err(|_| AgentError::NotConnected(host_id))?
                .into_inner();
            loop {
                match events.message().await {
                    Ok(Some(pb::ForwardEvent {
                        body: Some(b),
                        uploaded,
                    })) => match b {
                        Body::Progress(p) => self.progress(id, p),
                        Body::Result(r) => {
                            if let (Some(t), Some(u), Some(svc)) = (&token, uploaded, &svc) {
                                svc.uploads.received_elsewhere(t, u.bytes);
                            }
                            return Ok(r);
                        }
                        Body::NotConnected(_) => return Err(AgentError::NotConnected(host_id)),
                    },
                    Ok(Some(_)) => {}
                    // The other coordinator's deadline passed first.
                    Ok(None) => return Err(AgentError::Timeout(host_id)),
                    Err(s) => {
                        return Err(AgentError::Failed {
                            host: host_id,
                            reason: format!(
                                "the coordinator holding the host's session: {}",
                                s.message()
                            ),
                        })
                    }
                }
            }
        };
        tokio::time::timeout(timeout + Duration::from_secs(10), run)
            .await
            .unwrap_or(Err(AgentError::Timeout(host_id)))
    }

    /// A client for the coordinator at `addr`: mutual TLS under the shared
    /// CA, this process presenting a peer certificate it issued itself.
    fn peer_client(
        &self,
        svc: &Service,
        addr: &str,
    ) -> Result<pb::peer_client::PeerClient<tonic::transport::Channel>, String> {
        if let Some(ch) = self.peer_channels.lock().get(addr) {
            return Ok(pb::peer_client::PeerClient::new(ch.clone()));
        }
        let ca = svc.load_ca().map_err(|e| e.text())?;
        let (cert, key) = match self.peer_identity.get() {
            Some(i) => i.clone(),
            None => {
                let issued = ca
                    .issue_client(orrery_tls::PEER_CN, 825)
                    .map_err(|e| e.to_string())?;
                let _ = self.peer_identity.set((issued.cert_pem, issued.key_pem));
                self.peer_identity
                    .get()
                    .cloned()
                    .ok_or("no peer certificate")?
            }
        };
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .domain_name(orrery_tls::COORDINATOR_NAME);
        let ch = tonic::transport::Channel::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        self.peer_channels
            .lock()
            .insert(addr.to_string(), ch.clone());
        Ok(pb::peer_client::PeerClient::new(ch))
    }
}

/// A command for an agent, due within `timeout` from now.
fn command(id: u64, op: pb::command::Op, timeout: Duration) -> pb::Command {
    let deadline = chrono::Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
    pb::Command {
        id,
        deadline_unix_ms: deadline.timestamp_millis(),
        op: Some(op),
    }
}

fn fail_pending(p: &Pending, why: &str) {
    for (id, tx) in p.lock().drain() {
        let _ = tx.send(pb::CommandResult {
            command_id: id,
            ok: false,
            error_code: "disconnected".into(),
            error: why.into(),
            detail: None,
        });
    }
}

/// The coordinator's agent client: real hosts through their sessions,
/// simulated hosts through the simulator.
pub struct Router {
    pub hub: Arc<Hub>,
    pub sim: Arc<Simulator>,
    /// Seconds a graceful stop waits before powering off (`vm.stop.timeout`).
    pub stop_timeout: Duration,
}

impl Router {
    async fn simulated(&self, host_id: i64) -> bool {
        if self.hub.is_connected(host_id) {
            return false;
        }
        let Some(svc) = self.hub.svc() else {
            return true;
        };
        svc.load_cached::<Host>(host_id)
            .await
            .ok()
            .flatten()
            .map(|h| h.simulated)
            .unwrap_or(false)
    }

    async fn volume_call(&self, host_id: i64, op: pb::command::Op) -> Result<(), AgentError> {
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }

    fn stop_timeout(&self) -> Duration {
        self.hub
            .svc()
            .map(|s| Duration::from_secs(s.setting_i64("vm.stop.timeout").max(1) as u64))
            .unwrap_or(self.stop_timeout)
    }
}

const SHORT: Duration = Duration::from_secs(60);
/// Saving or loading a guest's memory takes a while under emulation
/// (`vmsnapshot.create.wait` bounds it in the service).
const SNAPSHOT: Duration = Duration::from_secs(1800);
/// Starting may include copying a template to the host.
const START: Duration = Duration::from_secs(900);

#[async_trait]
impl AgentClient for Router {
    async fn start(&self, host_id: i64, spec: &VmSpec) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.start(host_id, spec).await;
        }
        let op = pb::command::Op::Start(pb::StartInstance {
            spec: Some(convert::instance_spec(spec)),
        });
        self.hub.call(host_id, op, START).await.map(|_| ())
    }
    async fn stop(&self, host_id: i64, instance: &str, forced: bool) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.stop(host_id, instance, forced).await;
        }
        let t = self.stop_timeout();
        let op = pb::command::Op::Stop(pb::StopInstance {
            name: instance.into(),
            forced,
            timeout_seconds: t.as_secs() as u32,
        });
        self.hub.call(host_id, op, t + SHORT).await.map(|_| ())
    }
    async fn reboot(&self, host_id: i64, instance: &str) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.reboot(host_id, instance).await;
        }
        let op = pb::command::Op::Reboot(pb::RebootInstance {
            name: instance.into(),
        });
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }
    async fn expunge(&self, host_id: i64, instance: &str) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.expunge(host_id, instance).await;
        }
        let op = pb::command::Op::Expunge(pb::ExpungeInstance {
            name: instance.into(),
            instance_uuid: String::new(),
        });
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }
    async fn power_state(&self, host_id: i64, instance: &str) -> Result<PowerState, AgentError> {
        if self.simulated(host_id).await {
            return self.sim.power_state(host_id, instance).await;
        }
        let op = pb::command::Op::Query(pb::QueryInstance {
            name: instance.into(),
        });
        let r = self.hub.call(host_id, op, SHORT).await?;
        Ok(match r.detail {
            Some(pb::command_result::Detail::Power(p)) => convert::power(p),
            _ => PowerState::Missing,
        })
    }
    async fn attach_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.attach_volume(host_id, instance, vol).await;
        }
        self.volume_call(
            host_id,
            pb::command::Op::AttachVolume(convert::volume_op(instance, vol)),
        )
        .await
    }
    async fn detach_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.detach_volume(host_id, instance, vol).await;
        }
        self.volume_call(
            host_id,
            pb::command::Op::DetachVolume(convert::volume_op(instance, vol)),
        )
        .await
    }
    async fn resize_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.resize_volume(host_id, instance, vol).await;
        }
        self.volume_call(
            host_id,
            pb::command::Op::ResizeVolume(convert::volume_op(instance, vol)),
        )
        .await
    }
    async fn move_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        to_pool: &str,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.move_volume(host_id, instance, vol, to_pool).await;
        }
        let op = pb::command::Op::MoveVolume(pb::MoveVolume {
            volume: convert::volume_op(instance, vol).volume,
            to_pool: to_pool.into(),
            instance: instance.into(),
        });
        // A copy of a whole disk: allow as long as a template download.
        self.hub.call(host_id, op, START).await.map(|_| ())
    }
    async fn reset_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.reset_volume(host_id, instance, vol).await;
        }
        self.volume_call(
            host_id,
            pb::command::Op::ResetVolume(convert::volume_op(instance, vol)),
        )
        .await
    }
    async fn scale(
        &self,
        host_id: i64,
        instance: &str,
        cpu_number: i64,
        memory_mb: i64,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self
                .sim
                .scale(host_id, instance, cpu_number, memory_mb)
                .await;
        }
        let op = pb::command::Op::Scale(pb::ScaleInstance {
            name: instance.into(),
            vcpus: cpu_number.max(0) as u32,
            memory_mib: memory_mb.max(0) as u64,
        });
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }
    async fn update_metadata(
        &self,
        host_id: i64,
        instance: &str,
        meta: &GuestMetadata,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.update_metadata(host_id, instance, meta).await;
        }
        let op = pb::command::Op::UpdateMetadata(pb::UpdateMetadata {
            name: instance.into(),
            metadata: Some(convert::metadata(meta)),
        });
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }
    async fn create_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<Option<String>, AgentError> {
        if self.simulated(host_id).await {
            return self.sim.create_vm_snapshot(host_id, cmd).await;
        }
        let op = pb::command::Op::CreateVmSnapshot(convert::vm_snapshot_op(cmd));
        let r = self.hub.call(host_id, op, SNAPSHOT).await?;
        Ok(match r.detail {
            Some(pb::command_result::Detail::Text(t)) => Some(t),
            _ => None,
        })
    }
    async fn revert_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.revert_vm_snapshot(host_id, cmd).await;
        }
        let op = pb::command::Op::RevertVmSnapshot(convert::vm_snapshot_op(cmd));
        self.hub.call(host_id, op, SNAPSHOT).await.map(|_| ())
    }
    async fn delete_vm_snapshot(
        &self,
        host_id: i64,
        cmd: &VmSnapshotCmd,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self.sim.delete_vm_snapshot(host_id, cmd).await;
        }
        let op = pb::command::Op::DeleteVmSnapshot(convert::vm_snapshot_op(cmd));
        self.hub.call(host_id, op, SNAPSHOT).await.map(|_| ())
    }
    async fn backup_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        quiesce: bool,
        grant: &str,
    ) -> Result<u64, AgentError> {
        if self.simulated(host_id).await {
            return self
                .sim
                .backup_volume(host_id, instance, vol, quiesce, grant)
                .await;
        }
        let op = pb::command::Op::BackupVolume(pb::BackupVolume {
            instance: instance.into(),
            volume: Some(convert::volume(vol)),
            quiesce,
            grant: grant.into(),
        });
        // A copy of a whole disk: as long as a template download.
        let r = self.hub.call(host_id, op, START).await?;
        Ok(match r.detail {
            Some(pb::command_result::Detail::Text(t)) => t.parse().unwrap_or(0),
            _ => 0,
        })
    }
    async fn restore_volume(
        &self,
        host_id: i64,
        instance: &str,
        vol: &VolumeSpec,
        snapshot_uuid: &str,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self
                .sim
                .restore_volume(host_id, instance, vol, snapshot_uuid)
                .await;
        }
        let op = pb::command::Op::RestoreVolume(pb::RestoreVolume {
            instance: instance.into(),
            volume: Some(convert::volume(vol)),
            snapshot: snapshot_uuid.into(),
        });
        self.hub.call(host_id, op, START).await.map(|_| ())
    }
    async fn console(&self, host_id: i64, instance: &str) -> Result<ConsoleTarget, AgentError> {
        if self.simulated(host_id).await {
            return self.sim.console(host_id, instance).await;
        }
        let op = pb::command::Op::Console(pb::QueryInstance {
            name: instance.into(),
        });
        let r = self.hub.call(host_id, op, SHORT).await?;
        match r.detail {
            Some(pb::command_result::Detail::Console(c)) => Ok(ConsoleTarget {
                host: c.host,
                port: u16::try_from(c.port).map_err(|_| AgentError::Failed {
                    host: host_id,
                    reason: format!("console port {} out of range", c.port),
                })?,
                tls: c.tls,
            }),
            _ => Err(AgentError::Failed {
                host: host_id,
                reason: "the host did not say where the console is".into(),
            }),
        }
    }
    async fn prepare_migration(
        &self,
        host_id: i64,
        spec: &VmSpec,
        copy_storage: bool,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self
                .sim
                .prepare_migration(host_id, spec, copy_storage)
                .await;
        }
        let op = pb::command::Op::PrepareMigration(pb::PrepareMigration {
            spec: Some(convert::instance_spec(spec)),
            copy_storage,
        });
        self.hub.call(host_id, op, START).await.map(|_| ())
    }
    async fn migrate(
        &self,
        source: i64,
        destination: i64,
        cmd: &MigrateCmd,
        progress: Progress,
    ) -> Result<(), AgentError> {
        if self.simulated(source).await {
            return self.sim.migrate(source, destination, cmd, progress).await;
        }
        let op = pb::command::Op::Migrate(pb::MigrateInstance {
            name: cmd.instance.clone(),
            destination_uri: cmd.destination_uri.clone(),
            migrate_uri: cmd.migrate_uri.clone(),
            tls: cmd.tls,
            copy_storage: cmd.copy_storage,
            shared_storage: cmd.shared_storage,
            timeout_seconds: cmd.timeout.as_secs().min(u32::MAX as u64) as u32,
            max_downtime_ms: cmd.max_downtime_ms,
            bandwidth_mib: cmd.bandwidth_mib,
            moves: cmd
                .moves
                .iter()
                .map(|(uuid, pool, from_pool)| pb::VolumeMove {
                    uuid: uuid.clone(),
                    pool: pool.clone(),
                    from_pool: from_pool.clone(),
                })
                .collect(),
        });
        // The agent aborts at `timeout` itself; the deadline leaves it time
        // to report that and the instance's state.
        self.hub
            .call_with_progress(source, op, cmd.timeout + SHORT, Some(progress))
            .await
            .map(|_| ())
    }
    async fn cleanup_migration(
        &self,
        host_id: i64,
        instance: &str,
        instance_uuid: &str,
        volume_uuids: &[String],
        pool: &str,
    ) -> Result<(), AgentError> {
        if self.simulated(host_id).await {
            return self
                .sim
                .cleanup_migration(host_id, instance, instance_uuid, volume_uuids, pool)
                .await;
        }
        let op = pb::command::Op::CleanupMigration(pb::CleanupMigration {
            name: instance.into(),
            instance_uuid: instance_uuid.into(),
            volume_uuids: volume_uuids.to_vec(),
            pool: pool.into(),
        });
        self.hub.call(host_id, op, SHORT).await.map(|_| ())
    }
    async fn renew_certificate(&self, host_id: i64) -> Result<String, AgentError> {
        if self.simulated(host_id).await {
            return self.sim.renew_certificate(host_id).await;
        }
        let svc = self.hub.svc().ok_or(AgentError::NotConnected(host_id))?;
        // Step one: the agent makes a CSR for the key it already has.
        let r = self
            .hub
            .call(
                host_id,
                pb::command::Op::RenewCertificate(pb::RenewCertificate::default()),
                SHORT,
            )
            .await?;
        let csr = match r.detail {
            Some(pb::command_result::Detail::Text(hex)) => hex,
            _ => String::new(),
        };
        let csr_der = convert::unhex(&csr).ok_or_else(|| AgentError::Failed {
            host: host_id,
            reason: "the agent sent no CSR".into(),
        })?;
        let host: Host = svc
            .load_cached(host_id)
            .await
            .ok()
            .flatten()
            .ok_or(AgentError::NotConnected(host_id))?;
        let pem = svc
            .infrastructure
            .sign_renewal(&host, &csr_der)
            .map_err(|e| AgentError::Failed {
                host: host_id,
                reason: e.text(),
            })?;
        // Step two: the agent stores the certificate; the stream stays up.
        self.hub
            .call(
                host_id,
                pb::command::Op::RenewCertificate(pb::RenewCertificate {
                    csr_der: Vec::new(),
                    certificate_pem: pem.clone(),
                }),
                SHORT,
            )
            .await?;
        Ok(pem)
    }
    fn disconnect(&self, host_id: i64) {
        self.hub.disconnect(host_id);
    }

    async fn investigate(
        &self,
        investigator: i64,
        suspects: &[String],
    ) -> Result<Vec<HeartbeatSeen>, AgentError> {
        let op = pb::command::Op::Investigate(pb::InvestigateHosts {
            host_ids: suspects.to_vec(),
        });
        // An investigation that cannot answer within a second is no help
        // to a decision that must be made within seconds.
        let r = self
            .hub
            .call(investigator, op, Duration::from_secs(1))
            .await?;
        match r.detail {
            Some(pb::command_result::Detail::Heartbeats(r)) => Ok(r
                .hosts
                .into_iter()
                .map(|h| HeartbeatSeen {
                    host: h.host_id,
                    found: h.found,
                    age_ms: h.age_ms,
                    lease_ms: h.lease_ms,
                })
                .collect()),
            _ => Err(AgentError::Failed {
                host: investigator,
                reason: "the agent does not investigate (an older version)".into(),
            }),
        }
    }

    fn silence(&self, host_id: i64) -> Option<Duration> {
        self.hub.silence(host_id)
    }

    fn has_session(&self, host_id: i64) -> bool {
        self.hub.is_connected(host_id)
    }

    fn connected_agents(&self) -> usize {
        self.hub.connected()
    }
}
