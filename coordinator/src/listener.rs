//! Serving HTTP with limits a public listener needs: a deadline for request
//! headers, an idle timeout for kept-alive connections, a cap on open
//! connections, and a descriptor limit raised at start. Without them a client
//! that opens connections and says nothing holds descriptors for ever, and
//! enough of them lock every other client out.

use axum::extract::ConnectInfo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers once it starts one.
    pub header_timeout: Duration,
    /// Time a connection may stay open with nothing in flight.
    pub idle_timeout: Duration,
    /// Connections open at once; at the cap the longest-idle one is closed
    /// to make room, or the new one when all are busy.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit, so the
/// connection cap, not the descriptor limit, is what a flood meets first.
/// Returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read only by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(raised.rlim_cur);
    }
    Ok(lim.rlim_cur)
}

/// The connection cap that fits a descriptor limit: room is left for the
/// store, the agents' sessions and the statistics files.
pub fn cap_for(fd_limit: u64, wanted: usize) -> usize {
    let room = fd_limit.saturating_sub(256).max(16) as usize;
    wanted.min(room)
}

/// A connection's I/O that records when it last moved a byte, and when the
/// first byte of a request whose head is not yet complete arrived.
///
/// hyper's own header deadline also runs while a kept-alive connection waits
/// for its next request, so it would cut idle connections at the header
/// deadline instead of the idle one, abruptly, racing a client that sends
/// just then. The head deadline is kept here instead: it starts at a
/// request's first byte and ends when the request reaches the service.
struct Tracked<T> {
    inner: T,
    last: Arc<AtomicU64>,
    /// Milliseconds since `epoch` plus one of the first byte of an unfinished
    /// request head; 0 when none is being read.
    head_since: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Tracked<T> {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                let now = self.epoch.elapsed().as_millis() as u64 + 1;
                let _ =
                    self.head_since
                        .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One open connection as the accept loop sees it.
struct Live {
    last: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    close: Arc<tokio::sync::Notify>,
}

/// Open connections, so that at the cap the longest-idle one can make room:
/// idle connections cannot then lock out a client with a request to make.
#[derive(Default)]
struct Registry {
    next: u64,
    live: std::collections::HashMap<u64, Live>,
}

impl Registry {
    /// Asks the connection idle longest (none in flight) to close; false when
    /// every connection is busy.
    fn evict_idle(&mut self) -> bool {
        let victim = self
            .live
            .iter()
            .filter(|(_, l)| l.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, l)| l.last.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.live.remove(&id)) {
            Some(l) => {
                l.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then
/// lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let registry = Arc::new(parking_lot::Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tracker = tokio_util_tracker::Tracker::default();
    let epoch = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of
                    // spinning, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
        let in_flight = Arc::new(AtomicU64::new(0));
        let head_since = Arc::new(AtomicU64::new(0));
        let close = Arc::new(tokio::sync::Notify::new());
        let id = {
            let mut r = registry.lock();
            if r.live.len() >= limits.max_connections && !r.evict_idle() {
                tracing::warn!(%peer, cap = limits.max_connections, "connection refused: every open one is busy");
                continue;
            }
            r.next += 1;
            let id = r.next;
            r.live.insert(
                id,
                Live {
                    last: last.clone(),
                    in_flight: in_flight.clone(),
                    close: close.clone(),
                },
            );
            id
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let guard = tracker.enter();
        let registry = registry.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let io = hyper_util::rt::TokioIo::new(Tracked {
                inner: stream,
                last: last.clone(),
                head_since: head_since.clone(),
                in_flight: in_flight.clone(),
                epoch,
            });
            let flight = in_flight.clone();
            let head = head_since.clone();
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let app = app.clone();
                    let flight = flight.clone();
                    flight.fetch_add(1, Ordering::Relaxed);
                    head.store(0, Ordering::Relaxed);
                    async move {
                        let r = tower::ServiceExt::oneshot(app, req).await;
                        flight.fetch_sub(1, Ordering::Relaxed);
                        r
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(None)
                .keep_alive(true)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            let idle_ms = limits.idle_timeout.as_millis() as u64;
            let head_ms = limits.header_timeout.as_millis() as u64;
            let tick = Duration::from_millis(idle_ms.min(head_ms).clamp(50, 1000));
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stop.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = close.notified(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = tokio::time::sleep(tick) => {
                        let now = epoch.elapsed().as_millis() as u64;
                        let since = head_since.load(Ordering::Relaxed);
                        if since != 0 && (now + 1).saturating_sub(since) >= head_ms {
                            // A request head still incomplete at the deadline:
                            // the client is too slow or hostile; drop it.
                            tracing::debug!(%peer, "request head not complete in time");
                            break;
                        }
                        if closing {
                            continue;
                        }
                        let quiet = now.saturating_sub(last.load(Ordering::Relaxed));
                        if quiet >= idle_ms && in_flight.load(Ordering::Relaxed) == 0 {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            registry.lock().live.remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracker.wait().await;
    Ok(())
}

/// Counts live connection tasks so shutdown can wait for them.
mod tokio_util_tracker {
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub struct Tracker(Arc<Inner>);

    #[derive(Default)]
    pub struct Inner {
        live: std::sync::atomic::AtomicUsize,
        done: Notify,
    }

    pub struct Guard(Arc<Inner>);

    impl Tracker {
        pub fn enter(&self) -> Guard {
            self.0
                .live
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Guard(self.0.clone())
        }
        pub async fn wait(&self) {
            loop {
                let notified = self.0.done.notified();
                if self.0.live.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self
                .0
                .live
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
                == 1
            {
                self.0.done.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Reads until the peer closes; the time it took.
    async fn until_closed(s: &mut tokio::net::TcpStream) -> Duration {
        let t = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("connection still open after 10 s"),
            }
        }
    }

    #[tokio::test]
    async fn answers_with_the_peer_address() {
        let (addr, _stop) = start(Limits::default()).await;
        let out = get(addr).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("127.0.0.1"), "{out}");
    }

    #[tokio::test]
    async fn an_incomplete_header_is_cut_off() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        assert!(until_closed(&mut s).await < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_kept_alive_connection_outlives_the_header_deadline() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("answered")
                .unwrap();
            let out = String::from_utf8_lossy(&buf[..n]);
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            // Waiting between requests is idling, not a slow request head.
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t = until_closed(&mut idle).await;
        assert!(t < Duration::from_secs(5), "{t:?}");
    }

    #[tokio::test]
    async fn at_the_cap_idle_connections_make_room() {
        let limits = Limits {
            max_connections: 4,
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Four more than the cap: the oldest four were closed for them, and a
        // client with a request still gets an answer.
        for s in &mut idle[..4] {
            assert!(until_closed(s).await < Duration::from_secs(2));
        }
        let out = tokio::time::timeout(Duration::from_secs(5), get(addr))
            .await
            .expect("answered while the cap is full of idle connections");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        assert_eq!(cap_for(1024, 4096), 768);
        assert_eq!(cap_for(1 << 20, 4096), 4096);
        assert_eq!(cap_for(10, 4096), 16);
        assert!(raise_fd_limit().unwrap() >= 1);
    }
}
