//! TLS to PostgreSQL with rustls, and the URL settings that ask for it.
//!
//! `sslmode=require` (or libpq's `verify-ca` / `verify-full`) in the URL
//! makes every connection TLS, the server verified by name or address
//! against `sslrootcert=FILE` (PEM, libpq's parameter) or, without it, the
//! system's CA bundle. Unlike libpq's `require`, the server is always
//! verified: a store is not worth encrypting to an unknown party. Without
//! `sslmode` (or with `disable` / `prefer`) connections stay plain, as they
//! were.

use super::StoreError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;

/// Where Debian keeps the system's trusted CAs.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Pure: the URL without the settings tokio-postgres does not know, and
/// what they asked for: whether TLS is required and the CA file, if any.
pub fn split_url(url: &str) -> (String, bool, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), false, None);
    };
    let mut kept = Vec::new();
    let (mut tls, mut root) = (false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslrootcert" => root = Some(v.to_string()),
            "sslmode" if matches!(v, "require" | "verify-ca" | "verify-full") => {
                tls = true;
                kept.push("sslmode=require".to_string());
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, tls, root)
}

/// The connector for a store URL's settings.
pub fn connector(tls: bool, root: Option<&str>) -> Result<PgTls, StoreError> {
    if !tls {
        return Ok(PgTls(None));
    }
    use rustls::pki_types::pem::PemObject;
    orrery_tls::install_crypto();
    let file = root.unwrap_or(SYSTEM_ROOTS);
    let pem = std::fs::read(file)
        .map_err(|e| StoreError::Db(format!("reading the PostgreSQL CA file {file}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| StoreError::Db(format!("{file}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| StoreError::Db(format!("{file}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Db(format!("{file} holds no certificate")));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(PgTls(Some(Arc::new(config))))
}

/// How to reach the database: its settings and the TLS connector.
#[derive(Clone)]
pub struct Dial {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

/// A connection's background half, to be spawned.
pub type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, PgTlsStream<tokio_postgres::Socket>>;

impl Dial {
    pub fn parse(url: &str) -> Result<Dial, StoreError> {
        let (url, tls, root) = split_url(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Db(format!("invalid PostgreSQL URL: {e}")))?;
        if !tls {
            // Plain, never a TLS attempt this connector would refuse.
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Ok(Dial {
            config,
            tls: connector(tls, root.as_deref())?,
        })
    }

    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// Makes TLS connections when configured; plain ones otherwise.
#[derive(Clone)]
pub struct PgTls(Option<Arc<rustls::ClientConfig>>);

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, io::Error> {
        Ok(PgTlsConnect {
            config: self.0.clone(),
            domain: domain.to_string(),
        })
    }
}

pub struct PgTlsConnect {
    config: Option<Arc<rustls::ClientConfig>>,
    domain: String,
}

type Connecting<S> = Pin<Box<dyn Future<Output = Result<PgTlsStream<S>, io::Error>> + Send>>;

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Connecting<S>;

    fn connect(self, stream: S) -> Connecting<S> {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS to PostgreSQL is not configured"))?;
            let name =
                rustls::pki_types::ServerName::try_from(self.domain).map_err(io::Error::other)?;
            let s = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(PgTlsStream(s))
        })
    }
}

pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    /// No channel binding: SCRAM still authenticates, without tying the
    /// exchange to this TLS session.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        let plain = "postgres://u:p@h/db";
        assert_eq!(split_url(plain), (plain.to_string(), false, None));
        assert_eq!(
            split_url("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u:p@h/db?sslmode=require".to_string(),
                true,
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split_url("postgres://h/db?application_name=x&sslmode=require"),
            (
                "postgres://h/db?application_name=x&sslmode=require".to_string(),
                true,
                None
            )
        );
        assert_eq!(
            split_url("postgres://h/db?sslmode=prefer"),
            ("postgres://h/db?sslmode=prefer".to_string(), false, None)
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "nothing here").unwrap();
        let e = connector(true, f.to_str()).err().unwrap();
        assert!(e.to_string().contains("empty.pem"), "{e}");
        assert!(connector(false, None).unwrap().0.is_none());
    }
}
