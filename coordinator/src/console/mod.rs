//! The console proxy: its own listener serving noVNC's page (from Debian's
//! `novnc` package) at `/console/` and a WebSocket at
//! `/console/websockify?token=...` that bridges the browser to the
//! instance's VNC console. The token is traded with the service (once);
//! the leg to QEMU uses TLS with the proxy's client certificate from the
//! Orrery CA where the host requires it, and the instance's VNC password.

pub mod rfb;

use crate::api::static_ui::{content_type, relative};
use crate::service::Service;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Default place of noVNC's files (Debian's `novnc` package).
pub const DEFAULT_NOVNC_DIR: &str = "/usr/share/novnc";
/// Name in the proxy's client certificate.
const PROXY_CN: &str = "orrery-console-proxy";

struct ProxyState {
    svc: Arc<Service>,
    novnc: PathBuf,
    tls: tokio_rustls::TlsConnector,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console proxy: {0}")]
    Setup(String),
}

/// Serves the console proxy on `listener` until the process ends.
pub async fn serve(
    svc: Arc<Service>,
    listener: tokio::net::TcpListener,
    novnc: PathBuf,
) -> Result<(), ConsoleError> {
    let ca = svc
        .load_ca()
        .map_err(|e| ConsoleError::Setup(e.to_string()))?;
    let client = ca
        .issue_client(PROXY_CN, 365)
        .map_err(|e| ConsoleError::Setup(e.to_string()))?;
    let tls = orrery_tls::client_connector(ca.pem(), &client)
        .map_err(|e| ConsoleError::Setup(e.to_string()))?;
    let state = Arc::new(ProxyState { svc, novnc, tls });
    let app = Router::new()
        .route("/console/websockify", get(websocket))
        .route("/console/*path", get(file))
        .with_state(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| ConsoleError::Setup(e.to_string()))
}

async fn file(State(st): State<Arc<ProxyState>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(rel) = relative(&path) else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    let root = match tokio::fs::canonicalize(&st.novnc).await {
        Ok(r) => r,
        Err(_) => return (StatusCode::NOT_FOUND, "noVNC is not installed").into_response(),
    };
    let p = match tokio::fs::canonicalize(root.join(&rel)).await {
        Ok(p) if p.starts_with(&root) && p.is_file() => p,
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    match tokio::fs::read(&p).await {
        Ok(bytes) => {
            let mut r = Response::new(axum::body::Body::from(bytes));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&p)),
            );
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn websocket(
    State(st): State<Arc<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or("");
    // The token is spent here, before the upgrade: a second use of the
    // same URL is refused with a plain 403.
    let session = match st
        .svc
        .guest_access
        .open_console(token, &peer.ip().to_string())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(%peer, error = %e.text(), "console refused");
            return (StatusCode::FORBIDDEN, e.text()).into_response();
        }
    };
    let st2 = Arc::clone(&st);
    ws.protocols(["binary"])
        .on_upgrade(move |socket| async move {
            let vm = session.vm_uuid.clone();
            if let Err(e) = bridge(st2, socket, session).await {
                tracing::info!(instance = %vm, %peer, error = %e, "console session ended");
            }
        })
}

async fn bridge(
    st: Arc<ProxyState>,
    socket: WebSocket,
    session: crate::service::console::ConsoleSession,
) -> Result<(), rfb::RfbError> {
    let t = &session.target;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| {
        rfb::RfbError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{}:{} did not answer", t.host, t.port),
        ))
    })??;
    // VNC uses the password's first 8 bytes, as the host's definition does.
    let mut upstream = rfb::connect_upstream(
        tcp,
        rfb::Upstream {
            password: &session.password,
            tls: t.tls.then_some((&st.tls, t.host.as_str())),
        },
    )
    .await?;
    let mut down = WsStream::new(socket);
    rfb::accept_downstream(&mut down).await?;
    tokio::io::copy_bidirectional(&mut down, &mut upstream).await?;
    let _ = upstream.shutdown().await;
    Ok(())
}

/// A WebSocket as a byte stream: binary messages in, binary messages out.
struct WsStream {
    ws: WebSocket,
    pending: VecDeque<u8>,
    closed: bool,
}

impl WsStream {
    fn new(ws: WebSocket) -> Self {
        WsStream {
            ws,
            pending: VecDeque::new(),
            closed: false,
        }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                let chunk: Vec<u8> = self.pending.drain(..n).collect();
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            let next = futures::Stream::poll_next(Pin::new(&mut self.ws), cx);
            match next {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.closed = true,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e.to_string())))
                }
                Poll::Ready(Some(Ok(msg))) => match msg {
                    Message::Binary(b) => self.pending.extend(b),
                    // noVNC speaks binary; text would be a base64 client.
                    Message::Text(_) => {
                        return Poll::Ready(Err(std::io::Error::other(
                            "text WebSocket messages are not supported",
                        )))
                    }
                    Message::Close(_) => self.closed = true,
                    Message::Ping(_) | Message::Pong(_) => {}
                },
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let sink = Pin::new(&mut self.ws);
        match futures::Sink::poll_ready(sink, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e.to_string()))),
            Poll::Ready(Ok(())) => {}
        }
        match futures::Sink::start_send(Pin::new(&mut self.ws), Message::Binary(data.to_vec())) {
            Ok(()) => Poll::Ready(Ok(data.len())),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e.to_string()))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::Sink::poll_flush(Pin::new(&mut self.ws), cx)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures::Sink::poll_close(Pin::new(&mut self.ws), cx)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
