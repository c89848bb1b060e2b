//! Just enough of the RFB (VNC) protocol for the console proxy: the
//! opening handshake as a client of QEMU (VeNCrypt with x509 TLS and VNC
//! password authentication, or plain VNC authentication where the host has
//! no VNC TLS), and as a server to the browser's noVNC (no authentication:
//! the one-time token already decided). After both, bytes are passed
//! through unchanged.

use des::cipher::{BlockEncrypt, KeyInit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum RfbError {
    #[error("console connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("console protocol: {0}")]
    Protocol(String),
    #[error("console TLS: {0}")]
    Tls(String),
    #[error("console authentication failed: {0}")]
    Auth(String),
}

const VERSION: &[u8; 12] = b"RFB 003.008\n";
const SEC_NONE: u8 = 1;
const SEC_VNC: u8 = 2;
const SEC_VENCRYPT: u8 = 19;
const VENCRYPT_X509_NONE: u32 = 260;
const VENCRYPT_X509_VNC: u32 = 261;

/// The DES response to a VNC authentication challenge: the password's
/// first 8 bytes (zero-padded), each bit-reversed, as the key; both
/// 8-byte halves of the challenge encrypted with it.
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.bytes()) {
        *k = b.reverse_bits();
    }
    let cipher = des::Des::new(&key.into());
    let mut out = *challenge;
    for half in out.chunks_exact_mut(8) {
        cipher.encrypt_block(half.into());
    }
    out
}

async fn read_u8<S: AsyncRead + Unpin>(s: &mut S) -> Result<u8, RfbError> {
    Ok(s.read_u8().await?)
}

async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let Ok(len) = s.read_u32().await else {
        return "no reason given".into();
    };
    let mut buf = vec![0u8; len.min(4096) as usize];
    match s.read_exact(&mut buf).await {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => "no reason given".into(),
    }
}

async fn security_result<S: AsyncRead + Unpin>(s: &mut S) -> Result<(), RfbError> {
    match s.read_u32().await? {
        0 => Ok(()),
        _ => Err(RfbError::Auth(read_reason(s).await)),
    }
}

async fn vnc_auth<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
) -> Result<(), RfbError> {
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).await?;
    s.write_all(&vnc_auth_response(password, &challenge))
        .await?;
    s.flush().await?;
    security_result(s).await
}

/// How the proxy secures its leg to QEMU.
pub struct Upstream<'a> {
    pub password: &'a str,
    /// With VNC TLS on the host: the connector (Orrery CA, the proxy's
    /// client certificate) and the name the host's certificate carries.
    pub tls: Option<(&'a tokio_rustls::TlsConnector, &'a str)>,
}

/// Runs the client side of the handshake with QEMU up to (not including)
/// ClientInit, and returns the stream to pass bytes through.
pub async fn connect_upstream(
    mut s: tokio::net::TcpStream,
    up: Upstream<'_>,
) -> Result<Box<dyn Io>, RfbError> {
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    if !version.starts_with(b"RFB 003.") {
        return Err(RfbError::Protocol("the host did not speak RFB".into()));
    }
    s.write_all(VERSION).await?;
    let n = read_u8(&mut s).await?;
    if n == 0 {
        return Err(RfbError::Protocol(read_reason(&mut s).await));
    }
    let mut types = vec![0u8; n as usize];
    s.read_exact(&mut types).await?;
    match up.tls {
        Some((connector, name)) => {
            if !types.contains(&SEC_VENCRYPT) {
                return Err(RfbError::Tls(format!(
                    "the host offers no TLS (security types {types:?})"
                )));
            }
            s.write_all(&[SEC_VENCRYPT]).await?;
            let mut ver = [0u8; 2];
            s.read_exact(&mut ver).await?;
            s.write_all(&[0, 2]).await?;
            if read_u8(&mut s).await? != 0 {
                return Err(RfbError::Tls("VeNCrypt 0.2 refused".into()));
            }
            let count = read_u8(&mut s).await?;
            let mut subtypes = Vec::with_capacity(count as usize);
            for _ in 0..count {
                subtypes.push(s.read_u32().await?);
            }
            let chosen = [VENCRYPT_X509_VNC, VENCRYPT_X509_NONE]
                .into_iter()
                .find(|t| subtypes.contains(t))
                .ok_or_else(|| {
                    RfbError::Tls(format!(
                        "the host offers no x509 VeNCrypt type ({subtypes:?})"
                    ))
                })?;
            s.write_u32(chosen).await?;
            s.flush().await?;
            if read_u8(&mut s).await? != 1 {
                return Err(RfbError::Tls("the host refused the VeNCrypt type".into()));
            }
            let mut tls = orrery_tls::connect_over(connector, name, s)
                .await
                .map_err(|e| RfbError::Tls(e.to_string()))?;
            if chosen == VENCRYPT_X509_VNC {
                vnc_auth(&mut tls, up.password).await?;
            } else {
                security_result(&mut tls).await?;
            }
            Ok(Box::new(tls))
        }
        None => {
            if types.contains(&SEC_VNC) {
                s.write_all(&[SEC_VNC]).await?;
                vnc_auth(&mut s, up.password).await?;
            } else if types.contains(&SEC_NONE) {
                s.write_all(&[SEC_NONE]).await?;
                security_result(&mut s).await?;
            } else {
                return Err(RfbError::Protocol(format!(
                    "no security type the proxy speaks ({types:?})"
                )));
            }
            Ok(Box::new(s))
        }
    }
}

/// The server side towards the browser: version, then "None" security,
/// which the token stands in for. Returns once the browser may send
/// ClientInit.
pub async fn accept_downstream<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(), RfbError> {
    s.write_all(VERSION).await?;
    s.flush().await?;
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    if &version == b"RFB 003.003\n" {
        // 3.3: the server names the type; no result follows None.
        s.write_u32(SEC_NONE as u32).await?;
        s.flush().await?;
        return Ok(());
    }
    if !version.starts_with(b"RFB 003.") {
        return Err(RfbError::Protocol("the browser did not speak RFB".into()));
    }
    s.write_all(&[1, SEC_NONE]).await?;
    s.flush().await?;
    if read_u8(s).await? != SEC_NONE {
        return Err(RfbError::Protocol(
            "the browser chose a security type not offered".into(),
        ));
    }
    s.write_u32(0).await?;
    s.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer for password "password" and challenge 0..16, as
    /// OpenSSL's DES-ECB gives it with the bit-reversed key 0e86ceceeef64e26.
    #[test]
    fn vnc_auth_matches_openssl_des() {
        let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
        let want = [
            0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5,
            0x38, 0xe2,
        ];
        assert_eq!(vnc_auth_response("password", &challenge), want);
        // Only the first 8 bytes of a password count.
        assert_eq!(vnc_auth_response("password-longer", &challenge), want);
        assert_ne!(vnc_auth_response("passwore", &challenge), want);
    }

    #[tokio::test]
    async fn downstream_offers_none_and_reports_success() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move { accept_downstream(&mut a).await });
        let mut v = [0u8; 12];
        b.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, VERSION);
        b.write_all(VERSION).await.unwrap();
        let mut types = [0u8; 2];
        b.read_exact(&mut types).await.unwrap();
        assert_eq!(types, [1, SEC_NONE]);
        b.write_all(&[SEC_NONE]).await.unwrap();
        assert_eq!(b.read_u32().await.unwrap(), 0);
        server.await.unwrap().unwrap();
    }
}
