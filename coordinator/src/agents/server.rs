//! The gRPC services agents dial: `Enrollment` (no client certificate yet)
//! and `AgentLink` (mutual TLS; the certificate names the host).

use super::{convert, Hub};
use crate::service::records::{Host, Template};
use crate::service::uploads::UploadError;
use crate::service::Service;
use orrery_proto::v1 as pb;
use parking_lot::Mutex;
use pb::agent_link_server::{AgentLink, AgentLinkServer};
use pb::enrollment_server::{Enrollment, EnrollmentServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How long a coordinator that does not lead waits before acting on a
/// domain event (see the event arm in `session`).
const FOLLOWER_EVENT_GRACE: Duration = Duration::from_secs(2);

/// Seconds between heartbeats the coordinator asks of agents.
const HEARTBEAT_SECS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("agent endpoint: {0}")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Clone)]
struct Endpoint {
    svc: Arc<Service>,
    hub: Arc<Hub>,
}

fn status(e: crate::service::ServiceError) -> Status {
    use crate::service::ErrorKind as K;
    match e.kind() {
        K::Denied => Status::permission_denied(e.text()),
        K::Invalid | K::Missing | K::NotFound | K::InvalidState => {
            Status::invalid_argument(e.text())
        }
        _ => Status::internal(e.text()),
    }
}

#[tonic::async_trait]
impl Enrollment for Endpoint {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        let (host, cert, ca) = self
            .svc
            .infrastructure
            .enroll(&r.token, &r.csr_der, &r.hostname, &r.addresses)
            .await
            .map_err(status)?;
        tracing::info!(host = %host.uuid, name = %host.name, "host enrolled");
        Ok(Response::new(pb::EnrollResponse {
            host_id: host.uuid,
            certificate_pem: cert,
            ca_pem: ca,
        }))
    }
}

impl Endpoint {
    /// The host a request's client certificate belongs to, checked against
    /// the store (removed hosts and superseded certificates are refused).
    async fn peer_host(
        &self,
        certs: Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>>,
    ) -> Result<Host, Status> {
        let certs =
            certs.ok_or_else(|| Status::unauthenticated("a host certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a host certificate is required"))?;
        let ident = orrery_tls::peer_identity(leaf)
            .map_err(|e| Status::unauthenticated(e.to_string()))?
            .ok_or_else(|| Status::unauthenticated("the certificate names no host"))?;
        self.svc
            .infrastructure
            .authorise_agent(&ident.host_id, &ident.serial_hex)
            .await
            .map_err(|e| Status::permission_denied(e.text()))
    }
}

type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;
type ChunkStream = ReceiverStream<Result<pb::TemplateChunk, Status>>;

#[tonic::async_trait]
impl AgentLink for Endpoint {
    type SessionStream = SessionStream;
    type FetchTemplateStream = ChunkStream;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let host = self.peer_host(req.peer_certs()).await?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 30 s"))??;
        let hello = match first.and_then(|m| m.body) {
            Some(pb::agent_message::Body::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ))
            }
        };
        if hello.host_id != host.uuid {
            return Err(Status::permission_denied(format!(
                "the certificate is for host {}, the hello claims {}",
                host.uuid, hello.host_id
            )));
        }
        let (tx, rx) = mpsc::channel(64);
        let pending = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let epoch = self.hub.register(host.id, tx.clone(), pending.clone());
        let seen: Vec<_> = hello.domains.iter().map(convert::seen).collect();
        if let Err(e) = self
            .svc
            .agent_connected(host.id, &convert::report(&hello), &seen)
            .await
        {
            self.hub.unregister(host.id, epoch);
            return Err(status(e));
        }
        tracing::info!(host = %host.uuid, name = %host.name, domains = seen.len(), "agent connected");
        let welcome = pb::CoordinatorMessage {
            body: Some(pb::coordinator_message::Body::Welcome(pb::Welcome {
                host_id: host.uuid.clone(),
                heartbeat_seconds: HEARTBEAT_SECS,
            })),
        };
        let _ = tx.send(Ok(welcome)).await;
        self.hub.heard(host.id);
        // HA settings now and after every change.
        let mut ha = self.svc.watch_ha_settings();
        let htx = tx.clone();
        tokio::spawn(async move {
            loop {
                let s = *ha.borrow_and_update();
                let msg = pb::CoordinatorMessage {
                    body: Some(pb::coordinator_message::Body::HaConfig(pb::HaConfig {
                        heartbeat_ms: s.heartbeat_ms,
                        lease_ms: s.lease_ms,
                    })),
                };
                if htx.send(Ok(msg)).await.is_err() || ha.changed().await.is_err() {
                    return;
                }
            }
        });
        // Sampling settings now and after every change, for as long as the
        // session lasts.
        let mut settings = self.svc.statistics.watch_settings();
        let stx = tx.clone();
        tokio::spawn(async move {
            loop {
                let s = *settings.borrow_and_update();
                let msg = pb::CoordinatorMessage {
                    body: Some(pb::coordinator_message::Body::StatsConfig(
                        pb::StatsConfig {
                            vm_interval_ms: s.vm_interval_ms,
                            disk_interval_ms: s.disk_interval_ms,
                            user_vm_only: s.user_vm_only,
                        },
                    )),
                };
                if stx.send(Ok(msg)).await.is_err() || settings.changed().await.is_err() {
                    return;
                }
            }
        });
        let (svc, hub) = (self.svc.clone(), self.hub.clone());
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(host = %host.uuid, error = %e, "agent stream ended");
                        break;
                    }
                };
                hub.heard(host.id);
                match msg.body {
                    Some(pb::agent_message::Body::Result(r)) => {
                        if let Some(done) = pending.lock().remove(&r.command_id) {
                            let _ = done.send(r);
                        }
                    }
                    Some(pb::agent_message::Body::Heartbeat(_)) => {
                        // The answer tells the agent's fencing watchdog the
                        // coordinator still hears it.
                        let ack = pb::CoordinatorMessage {
                            body: Some(pb::coordinator_message::Body::HeartbeatAck(
                                pb::HeartbeatAck {
                                    unix_ms: chrono::Utc::now().timestamp_millis(),
                                },
                            )),
                        };
                        let _ = tx.try_send(Ok(ack));
                        if let Err(e) = svc.agent_heartbeat(host.id).await {
                            tracing::warn!(error = %e.text(), "recording a heartbeat failed");
                        }
                    }
                    Some(pb::agent_message::Body::Event(ev)) => {
                        // Handled beside the stream: confirming an event
                        // asks the same agent, whose answer arrives here.
                        let (svc, host_id) = (svc.clone(), host.id);
                        tokio::spawn(async move {
                            // With several coordinators each one holding a
                            // session hears the event. The leader acts at
                            // once; the others after a grace, so that an
                            // agent reaching only them is still acted on
                            // while, where the leader heard it too, they
                            // find the record settled and ask nothing. Two
                            // acting at once is safe: each confirms with the
                            // host and commits against the record's version.
                            if svc.shared_store() && !svc.leads() {
                                tokio::time::sleep(FOLLOWER_EVENT_GRACE).await;
                            }
                            if let Err(e) = svc.domain_event(host_id, &convert::event(&ev)).await {
                                tracing::warn!(error = %e.text(), "handling a domain event failed");
                            }
                        });
                    }
                    Some(pb::agent_message::Body::Progress(p)) => {
                        tracing::debug!(host = %host.uuid, command = p.command_id, stage = %p.stage, percent = p.percent, "progress");
                        hub.progress(p.command_id, p.percent);
                    }
                    Some(pb::agent_message::Body::Stats(r)) => {
                        if let Err(e) = svc.statistics.ingest(&convert::stats(&r)).await {
                            tracing::warn!(error = %e.text(), "storing statistics failed");
                        }
                    }
                    Some(pb::agent_message::Body::Facts(_))
                    | Some(pb::agent_message::Body::Hello(_))
                    | None => {}
                }
            }
            if hub.unregister(host.id, epoch) {
                tracing::info!(host = %host.uuid, "agent disconnected");
                if let Err(e) = svc.agent_disconnected(host.id).await {
                    tracing::warn!(error = %e.text(), "recording a disconnect failed");
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_template(
        &self,
        req: Request<pb::TemplateRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        self.peer_host(req.peer_certs()).await?;
        let req = req.into_inner();
        let uuid = req.uuid;
        let path = if req.snapshot {
            self.svc
                .snapshot_file(&uuid)
                .await
                .map_err(|e| Status::not_found(e.text()))?
        } else {
            let t: Template = self
                .svc
                .load_uuid_cached(&uuid)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .filter(|t: &Template| t.removed.is_none())
                .ok_or_else(|| Status::not_found(format!("template {uuid}")))?;
            self.svc.secondary_path(&t).map_err(status)?
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::not_found(format!("{}: {e}", path.display())))?;
        let total = file
            .metadata()
            .await
            .map(|m| m.len())
            .map_err(|e| Status::internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = pb::TemplateChunk {
                            data: buf[..n].to_vec(),
                            total_bytes: total,
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn upload(
        &self,
        req: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadResult>, Status> {
        use futures::StreamExt;
        let host = self.peer_host(req.peer_certs()).await?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("an upload names its grant first"))?;
        let rest = inbound.map(|c| c.map(|c| c.data).map_err(|s| s.message().to_string()));
        let bytes = self
            .svc
            .uploads
            .receive(&first.grant, host.id, first.data, rest)
            .await
            .map_err(|e| match e {
                UploadError::UnknownGrant | UploadError::WrongHost => {
                    Status::permission_denied(e.to_string())
                }
                UploadError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
                UploadError::Io { .. } => Status::internal(e.to_string()),
            })?;
        Ok(Response::new(pb::UploadResult { bytes }))
    }
}

type ForwardStream = ReceiverStream<Result<pb::ForwardEvent, Status>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for Endpoint {
    type ForwardStream = ForwardStream;

    /// Runs another coordinator's command through this one's session with
    /// the host (never passed on again: a host without a session here is
    /// answered `not_connected`).
    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<ForwardStream>, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a coordinator certificate is required"))?;
        if !certs
            .first()
            .is_some_and(|c| orrery_tls::is_peer_coordinator(c))
        {
            return Err(Status::permission_denied(
                "only another coordinator may forward commands",
            ));
        }
        let r = req.into_inner();
        let op = r
            .command
            .and_then(|c| c.op)
            .ok_or_else(|| Status::invalid_argument("the request carries no command"))?;
        let timeout = Duration::from_millis(r.timeout_ms.clamp(1_000, 86_400_000));
        // The agent sends the file here: the grant moves along, to a place
        // in the shared secondary storage only.
        let upload = match &r.upload {
            Some(g) => {
                let rel = std::path::Path::new(&g.dest);
                let inside = rel.starts_with("secondary")
                    && rel
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside {
                    return Err(Status::invalid_argument(
                        "an upload may only go to secondary storage",
                    ));
                }
                Some((g.token.clone(), self.svc.data_dir.join(rel), g.max_bytes))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(32);
        let hub = self.hub.clone();
        let svc = self.svc.clone();
        tokio::spawn(async move {
            use pb::forward_event::Body;
            let event = |b: Body| pb::ForwardEvent {
                body: Some(b),
                uploaded: None,
            };
            if !hub.is_connected(r.host_id) {
                let _ = tx.send(Ok(event(Body::NotConnected(true)))).await;
                return;
            }
            let upload = upload.map(|(token, dest, max_bytes)| {
                svc.uploads.adopt(&token, r.host_id, dest, max_bytes);
                token
            });
            let progress_tx = tx.clone();
            let progress: crate::service::agent::Progress = Arc::new(move |p| {
                // Progress is advisory: a full channel drops a report.
                let _ = progress_tx.try_send(Ok(event(Body::Progress(p))));
            });
            let body = match hub.call_local(r.host_id, op, timeout, progress).await {
                Ok(result) => Some(Body::Result(result)),
                // The session went away during the command: a failure, not
                // a host to try elsewhere (it may have run in part).
                Err(crate::service::agent::AgentError::NotConnected(_)) => {
                    Some(Body::Result(pb::CommandResult {
                        ok: false,
                        error_code: "disconnected".into(),
                        error: "the agent disconnected".into(),
                        ..Default::default()
                    }))
                }
                // Past the deadline: the stream ends without a result.
                Err(_) => None,
            };
            let uploaded = upload
                .and_then(|t| svc.uploads.finished(&t))
                .map(|bytes| pb::Uploaded { bytes });
            if let Some(b) = body {
                let _ = tx
                    .send(Ok(pb::ForwardEvent {
                        body: Some(b),
                        uploaded,
                    }))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Binds the agent port and serves it until the process ends. Returns the
/// bound address at once (the port may have been 0).
pub async fn serve(
    svc: Arc<Service>,
    hub: Arc<Hub>,
    listen: &str,
) -> Result<SocketAddr, ServeError> {
    orrery_tls::install_crypto();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServeError::Bind(listen.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(listen.to_string(), e))?;
    let ca = svc.load_ca().map_err(|e| ServeError::Tls(e.text()))?;
    let mut names = Vec::new();
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    let server = ca
        .issue_server(&names)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    // The chain carries the CA so that enrolling agents can pin it.
    let chain = format!("{}{}", server.cert_pem, ca.pem());
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(chain, server.key_pem))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.pem()))
        .client_auth_optional(true);
    let ep = Endpoint { svc, hub };
    let router = tonic::transport::Server::builder()
        .tls_config(tls)?
        // A link cut without a reset (a partition) is noticed within
        // seconds, not minutes.
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(EnrollmentServer::new(ep.clone()))
        .add_service(pb::peer_server::PeerServer::new(ep.clone()))
        .add_service(AgentLinkServer::new(ep));
    tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
        {
            tracing::error!(error = %e, "agent endpoint stopped");
        }
    });
    Ok(addr)
}
