//! A protocol-level agent: it enrols and holds its session exactly as
//! `orrery-agent` does (same TLS identity, same endpoint settings, same
//! Hello, heartbeat pace and reconnect schedule), but has no hypervisor or
//! storage behind it. It reports no domains and refuses every command.

use anyhow::{anyhow, Context, Result};
use orrery_proto::v1 as pb;
use pb::agent_link_client::AgentLinkClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The version the test agents report in their Hello.
const VERSION: &str = concat!("storm-", env!("CARGO_PKG_VERSION"));
/// A session that lasted longer than this resets the backoff, as in the agent.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// The agent's stream heartbeat until the coordinator's `HaConfig` says
/// otherwise (`orrery_agent::ha::DEFAULT_HEARTBEAT_MS`), and the bounds it
/// clamps a configured one to.
const HEARTBEAT_DEFAULT_MS: u64 = 500;
const HEARTBEAT_MIN_MS: u64 = 100;
const HEARTBEAT_MAX_MS: u64 = 60_000;

/// `orrery_agent::link::backoff`, copied because the agent crate links
/// libvirt: doubling from 1 s to 5 s, with up to 50 % random jitter. The
/// storm's figure depends on it, so it must stay the agent's schedule.
pub fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let base = Duration::from_secs(base.min(5));
    let jitter = rand::random::<f64>() * 0.5;
    base.mul_f64(1.0 + jitter)
}

/// What enrolment leaves on a host: its id, key, certificate and the CA.
pub struct Credentials {
    pub host_id: String,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

fn endpoint(addr: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("https://{addr}"))?.connect_timeout(Duration::from_secs(10)))
}

/// Enrols one host as `orrery-agent enroll` does: pin the CA the token names,
/// make a key and CSR here, and trade them with the token for a certificate.
pub async fn enrol(addr: &str, token: &str, hostname: &str) -> Result<Credentials> {
    let (_, pin) = orrery_tls::split_token(token).context("malformed token")?;
    let chain = orrery_tls::probe_chain(addr).await?;
    let ca_pem = orrery_tls::der_to_pem(&orrery_tls::pinned_ca(&chain, pin)?);
    let (key_pem, csr_der) = orrery_tls::host_key_and_csr()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name(orrery_tls::COORDINATOR_NAME);
    let channel = endpoint(addr)?.tls_config(tls)?.connect().await?;
    let resp = pb::enrollment_client::EnrollmentClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.trim().to_string(),
            csr_der,
            hostname: hostname.to_string(),
            addresses: vec!["127.0.0.1".into()],
        })
        .await
        .map_err(|s| anyhow!("enrolment refused: {}", s.message()))?
        .into_inner();
    if !orrery_tls::pem_fingerprint(&resp.ca_pem)?.eq_ignore_ascii_case(pin) {
        return Err(anyhow!("the coordinator answered with another CA"));
    }
    Ok(Credentials {
        host_id: resp.host_id,
        key_pem,
        cert_pem: resp.certificate_pem,
        ca_pem: resp.ca_pem,
    })
}

/// What the agents saw, shared with the driver.
pub struct Tracker {
    /// When each agent last received a Welcome. The coordinator sends it
    /// only after it recorded the host Up, so it is when the host came Up.
    welcomed: Mutex<Vec<Option<Instant>>>,
    pub connect_failures: AtomicU64,
    pub refused: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub commands: AtomicU64,
}

impl Tracker {
    pub fn new(agents: usize) -> Self {
        Tracker {
            welcomed: Mutex::new(vec![None; agents]),
            connect_failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sessions_ended: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        }
    }

    fn welcome(&self, agent: usize) {
        let mut w = self.welcomed.lock().unwrap_or_else(|e| e.into_inner());
        w[agent] = Some(Instant::now());
    }

    /// For every agent welcomed after `since`, how long after it.
    pub fn up_since(&self, since: Instant) -> Vec<Duration> {
        let w = self.welcomed.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .filter_map(|t| t.filter(|t| *t > since).map(|t| t - since))
            .collect()
    }

    pub fn snapshot(&self) -> Counters {
        Counters {
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            sessions_ended: self.sessions_ended.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub connect_failures: u64,
    pub refused: u64,
    pub sessions_ended: u64,
    pub commands: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            connect_failures: self.connect_failures - o.connect_failures,
            refused: self.refused - o.refused,
            sessions_ended: self.sessions_ended - o.sessions_ended,
            commands: self.commands - o.commands,
        }
    }
}

/// One test agent: its index, credentials and the facts it reports.
pub struct Agent {
    pub index: usize,
    pub creds: Credentials,
    pub hostname: String,
    pub coordinator: String,
}

impl Agent {
    /// Plausible facts of a mid-sized KVM host.
    fn facts(&self) -> pb::HostFacts {
        pb::HostFacts {
            hostname: self.hostname.clone(),
            arch: "x86_64".into(),
            cpus: 32,
            cpu_mhz: 2400,
            cpu_model: "Storm Virtual CPU".into(),
            memory_bytes: 128 << 30,
            hypervisor: "KVM".into(),
            libvirt_version: "9.0.0".into(),
            domain_types: vec!["kvm".into(), "qemu".into()],
            machine_types: vec!["pc-q35-7.2".into(), "pc-i440fx-7.2".into()],
            firmware: vec![pb::Firmware {
                path: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                secure_boot: false,
            }],
            tpm: false,
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            ip_address: "127.0.0.1".into(),
            storage_bytes: 1 << 40,
            storage_free_bytes: 1 << 39,
            kvm_usable: Some(true),
            kvm_probe: "ok".into(),
            libvirt_tls: false,
            local_dir: "/var/lib/orrery/local".into(),
            local_bytes: 1 << 40,
            local_free_bytes: 1 << 39,
            gpus: vec![],
        }
    }

    /// The agent's link loop: a session, then the backoff, forever.
    pub async fn run(self: Arc<Self>, tracker: Arc<Tracker>) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            // Why a session ended is not the storm's business: the counters
            // say how many did, the coordinator's log says why.
            let _ = self.session(&tracker).await;
            if started.elapsed() > BACKOFF_RESET {
                attempt = 0;
            }
            let wait = backoff(attempt);
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(wait).await;
        }
    }

    async fn session(&self, tracker: &Tracker) -> Result<()> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.creds.ca_pem))
            .identity(Identity::from_pem(
                &self.creds.cert_pem,
                &self.creds.key_pem,
            ))
            .domain_name(orrery_tls::COORDINATOR_NAME);
        // The agent's link settings (`orrery_agent::link::channel`).
        let connected = endpoint(&self.coordinator)?
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tls_config(tls)?
            .connect()
            .await;
        let ch = match connected {
            Ok(ch) => ch,
            Err(e) => {
                tracker.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
        let hello = pb::Hello {
            host_id: self.creds.host_id.clone(),
            agent_version: VERSION.into(),
            facts: Some(self.facts()),
            domains: Vec::new(),
        };
        send(&tx, pb::agent_message::Body::Hello(hello)).await;
        let mut inbound = match AgentLinkClient::new(ch)
            .session(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                tracker.refused.fetch_add(1, Ordering::Relaxed);
                return Err(s.into());
            }
        };
        // Heartbeats go at the pace of the storage heartbeat, as the agent's
        // do: the coordinator counts a host unheard after a few missed ones.
        let pace = Arc::new(AtomicU64::new(HEARTBEAT_DEFAULT_MS));
        let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break Ok(()),
                Err(s) => break Err(s.into()),
            };
            match msg.body {
                Some(pb::coordinator_message::Body::Welcome(_)) => {
                    tracker.welcome(self.index);
                    if let Some(h) = heartbeat.take() {
                        h.abort();
                    }
                    heartbeat = Some(tokio::spawn(heartbeats(tx.clone(), pace.clone())));
                }
                Some(pb::coordinator_message::Body::HaConfig(c)) => {
                    let ms = u64::from(c.heartbeat_ms).clamp(HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS);
                    pace.store(ms, Ordering::Relaxed);
                }
                Some(pb::coordinator_message::Body::Command(cmd)) => {
                    tracker.commands.fetch_add(1, Ordering::Relaxed);
                    let r = pb::CommandResult {
                        command_id: cmd.id,
                        ok: false,
                        error_code: "unsupported".into(),
                        error: "a protocol-level test agent runs no instances".into(),
                        detail: None,
                    };
                    send(&tx, pb::agent_message::Body::Result(r)).await;
                }
                // Statistics settings, heartbeat answers and anything newer:
                // nothing to do without a hypervisor.
                _ => {}
            }
        };
        if let Some(h) = heartbeat {
            h.abort();
        }
        tracker.sessions_ended.fetch_add(1, Ordering::Relaxed);
        result
    }
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, body: pb::agent_message::Body) -> bool {
    tx.send(pb::AgentMessage { body: Some(body) }).await.is_ok()
}

async fn heartbeats(tx: mpsc::Sender<pb::AgentMessage>, pace_ms: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(Duration::from_millis(pace_ms.load(Ordering::Relaxed))).await;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let hb = pb::Heartbeat {
            unix_ms,
            running: 0,
        };
        if !send(&tx, pb::agent_message::Body::Heartbeat(hb)).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_the_agents_schedule() {
        for a in 0..10 {
            let b = backoff(a).as_secs_f64();
            let base = (1u64 << a.min(6)).min(5) as f64;
            assert!(b >= base && b <= base * 1.5, "{a}: {b}");
        }
    }

    #[test]
    fn up_since_counts_only_later_welcomes() {
        let t = Tracker::new(3);
        t.welcome(0);
        let mark = Instant::now();
        assert!(t.up_since(mark).is_empty());
        t.welcome(1);
        t.welcome(0);
        assert_eq!(t.up_since(mark).len(), 2);
    }
}
