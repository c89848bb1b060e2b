//! The agent's side of the link: one mutual-TLS stream to the coordinator,
//! re-established with backoff and jitter. Running domains are never touched
//! because the coordinator is away; on every (re)connect the agent reports
//! every domain the hypervisor has, and the coordinator reconciles.
//! Instance statistics are sampled only while the coordinator's latest
//! `StatsConfig` asks for them; see [`crate::stats`].

use crate::ha::{Ha, HaSettings};
use crate::hypervisor::{DomainInfo, Power};
use crate::ops::{OpError, Ops, TemplateSource, AGENT_VERSION};
use crate::state::StateDir;
use crate::stats::{self, StatsSettings};
use crate::storage::FetchError;
use orrery_proto::v1 as pb;
use pb::agent_link_client::AgentLinkClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the coordinator refused the session: {0}")]
    Refused(tonic::Status),
    #[error("the stream failed: {0}")]
    Stream(tonic::Status),
    #[error("{0}")]
    Host(#[from] OpError),
}

/// The longest wait between attempts: short, so that agents are back within
/// seconds of a coordinator restart however long it was away (a refused
/// connection every few seconds per host costs nothing).
pub const BACKOFF_CAP_SECS: u64 = 5;

/// Backoff between attempts: doubling from 1 s to 5 s, with up to 50 %
/// random jitter so a coordinator restart does not see every agent at once.
pub fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let base = Duration::from_secs(base.min(BACKOFF_CAP_SECS));
    let jitter = rand::random::<f64>() * 0.5;
    base.mul_f64(1.0 + jitter)
}

pub async fn channel(state: &StateDir, coordinator: &str) -> Result<Channel, LinkError> {
    let creds = state.credentials()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&creds.ca_pem))
        .identity(Identity::from_pem(&creds.cert_pem, &creds.key_pem))
        .domain_name(orrery_tls::COORDINATOR_NAME);
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{coordinator}"))?
        .connect_timeout(Duration::from_secs(10))
        // A cut link (no reset) is noticed within seconds.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ch)
}

struct Fetcher(AgentLinkClient<Channel>);

impl Fetcher {
    /// Streams a template (or, with `snapshot`, a volume snapshot) into
    /// `file`.
    async fn fetch_into(
        &self,
        uuid: &str,
        snapshot: bool,
        mut file: tokio::fs::File,
    ) -> Result<tokio::fs::File, FetchError> {
        let mut stream = self
            .0
            .clone()
            .fetch_template(pb::TemplateRequest {
                uuid: uuid.into(),
                snapshot,
            })
            .await?
            .into_inner();
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data).await?;
        }
        Ok(file)
    }
}

#[async_trait::async_trait]
impl TemplateSource for Fetcher {
    async fn fetch(
        &self,
        uuid: &str,
        file: tokio::fs::File,
    ) -> Result<tokio::fs::File, FetchError> {
        self.fetch_into(uuid, false, file).await
    }

    async fn fetch_snapshot(
        &self,
        uuid: &str,
        file: tokio::fs::File,
    ) -> Result<tokio::fs::File, FetchError> {
        self.fetch_into(uuid, true, file).await
    }

    async fn upload(&self, grant: &str, path: &std::path::Path) -> Result<u64, FetchError> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path).await?;
        let (tx, rx) = mpsc::channel::<pb::UploadChunk>(4);
        let grant = grant.to_string();
        // Read on one task while the stream sends on the caller's: a 1 MiB
        // chunk at a time, the grant with the first.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            let mut first = true;
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 && !first {
                    break;
                }
                let chunk = pb::UploadChunk {
                    grant: if first { grant.clone() } else { String::new() },
                    data: buf[..n].to_vec(),
                };
                first = false;
                if tx.send(chunk).await.is_err() || n == 0 {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        });
        let sent = self.0.clone().upload(ReceiverStream::new(rx)).await;
        reader.await.map_err(|e| e.to_string())??;
        Ok(sent?.into_inner().bytes)
    }
}

/// Runs the link until the process ends.
pub async fn run(ops: Arc<Ops>, state: Arc<StateDir>, coordinator: String, ha: Arc<Ha>) {
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        match session(&ops, &state, &coordinator, &ha).await {
            Ok(()) => tracing::info!("the coordinator closed the session"),
            Err(e) => tracing::warn!(error = %e, "session ended"),
        }
        // A session that lasted resets the backoff.
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::info!(seconds = wait.as_secs_f32(), "reconnecting");
        tokio::time::sleep(wait).await;
    }
}

/// The domains of `now` whose power differs from the baseline `last` once
/// the agent's own commands' `notes` are applied to it; `last` becomes `now`.
fn power_changes<'a>(
    last: &mut HashMap<String, Power>,
    notes: Vec<(String, Power)>,
    now: &'a [DomainInfo],
) -> Vec<&'a DomainInfo> {
    last.extend(notes);
    let changed = now
        .iter()
        .filter(|d| last.get(&d.name) != Some(&d.power))
        .collect();
    *last = now.iter().map(|d| (d.name.clone(), d.power)).collect();
    changed
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, body: pb::agent_message::Body) -> bool {
    tx.send(pb::AgentMessage { body: Some(body) }).await.is_ok()
}

async fn session(
    ops: &Arc<Ops>,
    state: &Arc<StateDir>,
    coordinator: &str,
    ha: &Arc<Ha>,
) -> Result<(), LinkError> {
    let host_id = state.credentials()?.identity.host_id;
    let ch = channel(state, coordinator).await?;
    let client = AgentLinkClient::new(ch);
    let facts = ops.facts().await?;
    let domains = ops.domains().await?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    send(
        &tx,
        pb::agent_message::Body::Hello(pb::Hello {
            host_id: host_id.clone(),
            agent_version: AGENT_VERSION.into(),
            facts: Some(facts),
            domains: Ops::reports(&domains),
        }),
    )
    .await;
    let mut inbound = client
        .clone()
        .session(ReceiverStream::new(rx))
        .await
        .map_err(LinkError::Refused)?
        .into_inner();
    tracing::info!(%coordinator, host = %host_id, "connected");

    let mut tasks = tokio::task::JoinSet::new();
    // Watch power states and report changes (a guest shutting itself down).
    {
        let (ops, tx) = (ops.clone(), tx.clone());
        let mut last: HashMap<String, Power> =
            domains.iter().map(|d| (d.name.clone(), d.power)).collect();
        // Notes older than this session's first list are in that list.
        let (mut noted, _) = ops.power_notes.since(u64::MAX);
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                // Taken before the list: a command finishing in between
                // leaves a note the list already agrees with.
                let (seq, notes) = ops.power_notes.since(noted);
                let Ok(now) = ops.domains().await else {
                    continue;
                };
                noted = seq;
                for d in power_changes(&mut last, notes, &now) {
                    let ev = pb::DomainEvent {
                        name: d.name.clone(),
                        instance_uuid: d.instance_uuid.clone().unwrap_or_default(),
                        state: Ops::reports(std::slice::from_ref(d))[0].state,
                        reason: "power state changed".into(),
                    };
                    if !send(&tx, pb::agent_message::Body::Event(ev)).await {
                        return;
                    }
                }
            }
        });
    }
    // Statistics: idle until the coordinator sends settings; each new
    // setting restarts the cadence in place.
    let (stats_settings, stats_rx) = watch::channel(StatsSettings::default());
    tasks.spawn(stats::run(ops.hv.clone(), stats_rx, tx.clone()));
    let fetcher = Arc::new(Fetcher(client.clone()));
    let mut hb_task: Option<tokio::task::AbortHandle> = None;
    let result = loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(s) => break Err(LinkError::Stream(s)),
        };
        // Any word from the coordinator keeps the fencing watchdog at bay.
        ha.contact();
        match msg.body {
            Some(pb::coordinator_message::Body::Welcome(_)) => {
                if let Some(h) = hb_task.take() {
                    h.abort();
                }
                let tx = tx.clone();
                let ha = ha.clone();
                // Heartbeats go at the storage heartbeat's pace: their answers
                // are how the watchdog knows the coordinator is there.
                hb_task = Some(tasks.spawn(async move {
                    loop {
                        tokio::time::sleep(ha.settings().heartbeat).await;
                        let hb = pb::Heartbeat {
                            unix_ms: chrono::Utc::now().timestamp_millis(),
                            running: 0,
                        };
                        if !send(&tx, pb::agent_message::Body::Heartbeat(hb)).await {
                            return;
                        }
                    }
                }));
            }
            Some(pb::coordinator_message::Body::StatsConfig(c)) => {
                let new = StatsSettings::from(&c);
                // The same settings sent again keep the running cadence.
                stats_settings.send_if_modified(|s| {
                    let changed = *s != new;
                    *s = new;
                    changed
                });
            }
            Some(pb::coordinator_message::Body::HaConfig(c)) => {
                ha.set_settings(HaSettings::from(&c));
            }
            Some(pb::coordinator_message::Body::HeartbeatAck(_)) => {}
            Some(pb::coordinator_message::Body::Command(cmd)) => {
                if let Some(pb::command::Op::Investigate(q)) = &cmd.op {
                    let seen = ha.investigate(&q.host_ids);
                    let r = pb::CommandResult {
                        command_id: cmd.id,
                        ok: true,
                        error_code: String::new(),
                        error: String::new(),
                        detail: Some(pb::command_result::Detail::Heartbeats(seen)),
                    };
                    send(&tx, pb::agent_message::Body::Result(r)).await;
                    continue;
                }
                let (ops, tx, fetcher, state) =
                    (ops.clone(), tx.clone(), fetcher.clone(), state.clone());
                tasks.spawn(async move {
                    let r = run_command(&ops, &state, fetcher.as_ref(), &tx, cmd).await;
                    send(&tx, pb::agent_message::Body::Result(r)).await;
                });
            }
            None => {}
        }
    };
    tasks.abort_all();
    result
}

async fn run_command(
    ops: &Ops,
    state: &StateDir,
    fetcher: &dyn TemplateSource,
    progress_tx: &mpsc::Sender<pb::AgentMessage>,
    cmd: pb::Command,
) -> pb::CommandResult {
    let id = cmd.id;
    let Some(op) = cmd.op else {
        return failure(id, "invalid", "a command without an operation".into());
    };
    let left = cmd.deadline_unix_ms - chrono::Utc::now().timestamp_millis();
    if left <= 0 {
        return failure(
            id,
            "timeout",
            "the command arrived after its deadline".into(),
        );
    }
    let renew = |pem: &str| renew_certificate(state, pem);
    // Progress is advisory: dropped rather than waited for when the
    // stream is busy.
    let progress = |stage: &str, percent: u32| {
        let p = pb::Progress {
            command_id: id,
            stage: stage.to_string(),
            percent,
        };
        let _ = progress_tx.try_send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Progress(p)),
        });
    };
    match tokio::time::timeout(
        Duration::from_millis(left as u64),
        ops.execute(op, fetcher, &renew, &progress),
    )
    .await
    {
        Ok(Ok(detail)) => pb::CommandResult {
            command_id: id,
            ok: true,
            error_code: String::new(),
            error: String::new(),
            detail,
        },
        Ok(Err(e)) => failure(id, e.code(), e.to_string()),
        Err(_) => failure(id, "timeout", "the command ran past its deadline".into()),
    }
}

fn failure(id: u64, code: &str, error: String) -> pb::CommandResult {
    pb::CommandResult {
        command_id: id,
        ok: false,
        error_code: code.into(),
        error,
        detail: None,
    }
}

/// Certificate renewal in two steps: with no certificate, answer a CSR (hex)
/// for the key the host already has; with one, store it for the next
/// connection (the current stream stays up).
fn renew_certificate(state: &StateDir, pem: &str) -> Result<Option<String>, OpError> {
    let creds = state
        .credentials()
        .map_err(|e| OpError::Certificate(e.to_string()))?;
    if pem.is_empty() {
        let csr = orrery_tls::csr_for_key(&creds.key_pem)
            .map_err(|e| OpError::Certificate(e.to_string()))?;
        return Ok(Some(csr.iter().map(|b| format!("{b:02x}")).collect()));
    }
    let id = orrery_tls::pem_identity(pem)
        .map_err(|e| OpError::Certificate(e.to_string()))?
        .ok_or_else(|| OpError::Certificate("the certificate names no host".into()))?;
    if id.host_id != creds.identity.host_id {
        return Err(OpError::Certificate(format!(
            "the certificate is for host {}, not {}",
            id.host_id, creds.identity.host_id
        )));
    }
    state
        .save_certificate(pem)
        .map_err(|e| OpError::Certificate(e.to_string()))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for a in 0..10 {
            let b = backoff(a);
            let base = (1u64 << a.min(6)).min(BACKOFF_CAP_SECS) as f64;
            assert!(
                b.as_secs_f64() >= base && b.as_secs_f64() <= base * 1.5,
                "{a}: {b:?}"
            );
        }
    }

    fn dom(name: &str, power: Power) -> DomainInfo {
        DomainInfo {
            name: name.into(),
            instance_uuid: None,
            power,
        }
    }

    fn names(changed: Vec<&DomainInfo>) -> Vec<&str> {
        changed.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn a_guest_started_here_and_destroyed_between_polls_is_reported() {
        let notes = crate::ops::PowerNotes::default();
        let (mut noted, _) = notes.since(u64::MAX);
        let mut last: HashMap<String, Power> = [("a".into(), Power::Off)].into();
        // Started by a command, destroyed out of band before the next poll.
        notes.note("a", Power::On);
        let (seq, taken) = notes.since(noted);
        noted = seq;
        let now = [dom("a", Power::Off)];
        assert_eq!(names(power_changes(&mut last, taken, &now)), ["a"]);
        // Taken once: the next poll with the same state reports nothing.
        let (_, taken) = notes.since(noted);
        assert!(taken.is_empty());
        assert!(power_changes(&mut last, taken, &now).is_empty());
    }

    #[test]
    fn the_agents_own_commands_are_not_reported_as_changes() {
        let notes = crate::ops::PowerNotes::default();
        let (noted, _) = notes.since(u64::MAX);
        let mut last: HashMap<String, Power> =
            [("a".into(), Power::On), ("b".into(), Power::On)].into();
        notes.note("a", Power::Off);
        let (_, taken) = notes.since(noted);
        // a stopped by a command; b shut itself down.
        let now = [
            dom("a", Power::Off),
            dom("b", Power::Off),
            dom("c", Power::On),
        ];
        assert_eq!(names(power_changes(&mut last, taken, &now)), ["b", "c"]);
        notes.forget("a");
        assert!(notes.since(0).1.is_empty());
    }
}
