//! Certificates for the agent link: the coordinator's CA, host certificates
//! issued from CSRs, the coordinator's server certificate, and the identity a
//! peer certificate carries. Pure functions over PEM/DER, plus one TLS probe
//! that reads the certificate chain a server presents (for CA pinning at
//! enrolment).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The DNS name the coordinator's server certificate always carries; agents
/// verify against it whatever address they dial.
pub const COORDINATOR_NAME: &str = "orrery-coordinator";
/// Host certificates carry the host id as `host-<uuid>` in their common name.
const HOST_CN_PREFIX: &str = "host-";
/// The common name of the client certificates coordinators sharing one CA
/// present to each other (never given to a host: host certificates are
/// named `host-<id>` whatever their CSR asks).
pub const PEER_CN: &str = "orrery-coordinator-peer";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Gen(#[from] rcgen::Error),
    #[error("malformed certificate or CSR: {0}")]
    Parse(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("the server's CA does not match the pinned fingerprint")]
    PinMismatch,
}

pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA certificate and key, loaded for signing.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl Ca {
    pub fn generate(common_name: &str) -> Result<(Ca, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365 * 20);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let pem = cert.pem();
        Ok((Ca { cert, key, pem }, key_pem))
    }

    /// Loads a CA from its PEM files. rcgen signs with an issuer certificate
    /// object, so the CA's parameters are re-read and re-signed with the same
    /// key: same subject, same key, so signatures chain to the stored CA.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            key,
            pem: cert_pem.to_string(),
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn fingerprint(&self) -> Result<String, TlsError> {
        pem_fingerprint(&self.pem)
    }

    /// Signs a host's CSR. The subject and names come from the CA, never from
    /// the CSR, so a host cannot ask for another host's identity.
    ///
    /// The certificate also serves libvirt and QEMU between hosts (migration,
    /// consoles), which verify a peer by the name or address they dialled and
    /// use one certificate both to listen and to connect: `names` (host names
    /// and addresses the caller vouches for) become SANs, invalid ones are
    /// skipped, and it is good for server and client authentication with the
    /// key usages libvirt insists on.
    pub fn sign_host_csr(
        &self,
        csr_der: &[u8],
        host_id: &str,
        names: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, TlsError> {
        let csr_der = rustls::pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{HOST_CN_PREFIX}{host_id}"));
        params.subject_alt_names = vec![SanType::DnsName(
            format!("{host_id}.hosts.{COORDINATOR_NAME}").try_into()?,
        )];
        for san in host_sans(names) {
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        // No basic constraints at all: rcgen's explicit "not a CA" encodes
        // the DER default value, which strict parsers (Python's
        // cryptography) refuse; libvirt and webpki take a missing extension
        // as an end-entity certificate.
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }

    /// The coordinator's server certificate for the agent port, with the fixed
    /// name agents verify plus any extra names and addresses.
    pub fn issue_server(&self, extra_names: &[String]) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut names = vec![COORDINATOR_NAME.to_string(), "localhost".to_string()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for n in names {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.try_into()?),
            };
            params.subject_alt_names.push(san);
        }
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, COORDINATOR_NAME);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(3600 * 24 * 825)).into();
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Ca {
    /// A client-only certificate for one of the coordinator's own services
    /// (the console proxy connecting to QEMU's VNC over TLS), named by
    /// `common_name`, valid for `days`.
    pub fn issue_client(&self, common_name: &str, days: u64) -> Result<Issued, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(3600 * 24 * days)).into();
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A TLS client that trusts only `ca_pem` and presents `client` as its
/// certificate: how the coordinator's services reach hosts.
pub fn client_connector(
    ca_pem: &str,
    client: &Issued,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(pem_to_der(ca_pem)?))
        .map_err(|e| TlsError::Parse(e.to_string()))?;
    let chain = vec![rustls::pki_types::CertificateDer::from(pem_to_der(
        &client.cert_pem,
    )?)];
    let key = rustls::pki_types::PrivateKeyDer::try_from(pem_to_der(&client.key_pem)?)
        .map_err(|e| TlsError::Parse(e.to_string()))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Parse(e.to_string()))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Completes a TLS handshake over an open stream, verifying the server as
/// `name` (a host name or an IP address its certificate carries).
pub async fn connect_over<S>(
    connector: &tokio_rustls::TlsConnector,
    name: &str,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let server = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::Handshake(format!("{name}: {e}")))?;
    connector
        .connect(server, stream)
        .await
        .map_err(|e| TlsError::Handshake(format!("{name}: {e}")))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut h = Sha256::new();
    h.update(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    h.update(std::process::id().to_le_bytes());
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let mut bytes = h.finalize()[..16].to_vec();
    // A positive serial: the top bit clear.
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Whether `name` can be a DNS name in a certificate: dot-separated labels
/// of 1 to 63 ASCII letters, digits and hyphens, not starting or ending with
/// a hyphen, 253 characters at most. A trailing dot is not accepted: peers
/// compare the names they dialled, which never carry one.
pub fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Whether `name` is an IP literal or a valid DNS name, i.e. something a host
/// certificate can carry.
pub fn valid_host_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok() || valid_dns_name(name)
}

/// SANs for a host's names and addresses: IP literals as IP addresses, the
/// rest as DNS names; anything else is left out. Duplicates are kept once.
fn host_sans(names: &[String]) -> Vec<SanType> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()) {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if valid_dns_name(n) => match n.to_ascii_lowercase().try_into() {
                Ok(dns) => SanType::DnsName(dns),
                Err(_) => continue,
            },
            Err(_) => continue,
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    out
}

/// Enrolment tokens read `orr1.<secret>.<CA SHA-256 fingerprint>`.
pub const TOKEN_PREFIX: &str = "orr1";

/// Splits a token into its secret and the CA fingerprint it pins.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let mut it = token.trim().splitn(3, '.');
    match (it.next(), it.next(), it.next()) {
        (Some(TOKEN_PREFIX), Some(secret), Some(fp))
            if !secret.is_empty()
                && fp.len() == 64
                && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some((secret, fp))
        }
        _ => None,
    }
}

/// A fresh host key and a CSR for it. The key stays on the host.
pub fn host_key_and_csr() -> Result<(String, Vec<u8>), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "orrery-agent");
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A CSR for an existing key (certificate renewal keeps the host's key).
pub fn csr_for_key(key_pem: &str) -> Result<Vec<u8>, TlsError> {
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "orrery-agent");
    Ok(params.serialize_request(&key)?.der().to_vec())
}

pub fn der_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::Parse(e.to_string()))?;
    Ok(p.contents)
}

pub fn pem_fingerprint(pem: &str) -> Result<String, TlsError> {
    Ok(der_fingerprint(&pem_to_der(pem)?))
}

/// What a host certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub host_id: String,
    pub serial_hex: String,
    pub not_after_unix: i64,
}

/// The host id and serial of a host certificate (DER), or None when the
/// certificate does not name a host.
pub fn peer_identity(der: &[u8]) -> Result<Option<PeerIdentity>, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default();
    let Some(host) = cn.strip_prefix(HOST_CN_PREFIX) else {
        return Ok(None);
    };
    Ok(Some(PeerIdentity {
        host_id: host.to_string(),
        serial_hex: cert.raw_serial_as_string().replace(':', ""),
        not_after_unix: cert.validity().not_after.timestamp(),
    }))
}

/// Whether a certificate (DER) is a coordinator's peer certificate.
pub fn is_peer_coordinator(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, cert)| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            == Some(PEER_CN)
    })
}

pub fn pem_identity(pem: &str) -> Result<Option<PeerIdentity>, TlsError> {
    peer_identity(&pem_to_der(pem)?)
}

/// Installs the process-wide rustls crypto provider (ring). Binaries call it
/// once at start; a second call is harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects to `addr`, completes a TLS handshake without trusting anything,
/// and returns the DER certificates the server presented. Used once, at
/// enrolment, to find the CA whose fingerprint the token pins; nothing secret
/// is sent on this connection.
pub async fn probe_chain(addr: &str) -> Result<Vec<Vec<u8>>, TlsError> {
    install_crypto();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let verifier = Arc::new(Recorder {
        seen: seen.clone(),
        algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| TlsError::Handshake(format!("{addr}: {e}")))?;
    let name = rustls::pki_types::ServerName::try_from(COORDINATOR_NAME)
        .map_err(|e| TlsError::Handshake(e.to_string()))?;
    conn.connect(name, tcp)
        .await
        .map_err(|e| TlsError::Handshake(format!("{addr}: {e}")))?;
    let chain = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(chain)
}

/// Picks the certificate whose SHA-256 fingerprint equals `pin` from a chain.
pub fn pinned_ca(chain: &[Vec<u8>], pin: &str) -> Result<Vec<u8>, TlsError> {
    chain
        .iter()
        .find(|c| der_fingerprint(c).eq_ignore_ascii_case(pin))
        .cloned()
        .ok_or(TlsError::PinMismatch)
}

pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[derive(Debug)]
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(end_entity.to_vec());
        seen.extend(intermediates.iter().map(|c| c.to_vec()));
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_certificates_name_the_host_whatever_the_csr_says() {
        let (ca, key_pem) = Ca::generate("test CA").unwrap();
        let ca2 = Ca::load(ca.pem(), &key_pem).unwrap();
        let (_key, csr) = host_key_and_csr().unwrap();
        let now = SystemTime::now();
        let pem = ca2
            .sign_host_csr(&csr, "abc-123", &[], now, now + Duration::from_secs(3600))
            .unwrap();
        let id = pem_identity(&pem).unwrap().unwrap();
        assert_eq!(id.host_id, "abc-123");
        assert!(!id.serial_hex.is_empty());
        // The server certificate is not a host certificate.
        let server = ca.issue_server(&["10.0.0.1".into()]).unwrap();
        assert_eq!(pem_identity(&server.cert_pem).unwrap(), None);
        assert_eq!(ca.fingerprint().unwrap(), ca2.fingerprint().unwrap());
        assert_eq!(ca.fingerprint().unwrap().len(), 64);
    }

    #[test]
    fn only_peer_certificates_are_taken_for_another_coordinator() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        let peer = ca.issue_client(PEER_CN, 1).unwrap();
        assert!(is_peer_coordinator(&pem_to_der(&peer.cert_pem).unwrap()));
        let console = ca.issue_client("orrery-console", 1).unwrap();
        assert!(!is_peer_coordinator(
            &pem_to_der(&console.cert_pem).unwrap()
        ));
        // A host asking for the peer name in its CSR still gets a host name.
        let (_key, csr) = host_key_and_csr().unwrap();
        let now = SystemTime::now();
        let host = ca
            .sign_host_csr(
                &csr,
                "h1",
                &[PEER_CN.into()],
                now,
                now + Duration::from_secs(60),
            )
            .unwrap();
        assert!(!is_peer_coordinator(&pem_to_der(&host).unwrap()));
        assert!(!is_peer_coordinator(b"not a certificate"));
    }

    #[test]
    fn host_certificates_serve_libvirt_and_qemu_by_name_and_address() {
        use x509_parser::extensions::GeneralName;
        let (ca, _) = Ca::generate("test CA").unwrap();
        let (_key, csr) = host_key_and_csr().unwrap();
        let now = SystemTime::now();
        let names: Vec<String> = ["h2", "10.99.0.2", "H2", "fe80::1", "bad name", "-x", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pem = ca
            .sign_host_csr(
                &csr,
                "abc-123",
                &names,
                now,
                now + Duration::from_secs(3600),
            )
            .unwrap();
        // Peer identity still comes from the subject alone.
        assert_eq!(pem_identity(&pem).unwrap().unwrap().host_id, "abc-123");
        let der = pem_to_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap())
                    ),
                    _ => format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap())
                    ),
                },
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            [
                "DNS:abc-123.hosts.orrery-coordinator",
                "DNS:h2",
                "IP:10.99.0.2",
                "IP:fe80::1"
            ]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign());
        assert!(cert.basic_constraints().unwrap().is_none());
        assert_eq!(cert.issuer().to_string(), "CN=test CA");
    }

    #[test]
    fn host_names_are_dns_names_or_ip_literals() {
        for ok in ["h1", "host-1.example.org", "10.0.0.1", "::1", "a1", "1a"] {
            assert!(valid_host_name(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghij"; 26].join(".");
        for bad in [
            "",
            "a b",
            "-a",
            "a-",
            "a..b",
            "a.",
            "under_score",
            "10.0.0.1/24",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!valid_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn pem_round_trip_and_pinning() {
        let (ca, _) = Ca::generate("pin CA").unwrap();
        let der = pem_to_der(ca.pem()).unwrap();
        assert_eq!(pem_to_der(&der_to_pem(&der)).unwrap(), der);
        let fp = ca.fingerprint().unwrap();
        let chain = vec![vec![1, 2, 3], der.clone()];
        assert_eq!(pinned_ca(&chain, &fp).unwrap(), der);
        assert!(matches!(
            pinned_ca(&chain[..1], &fp),
            Err(TlsError::PinMismatch)
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(peer_identity(b"not a certificate").is_err());
        assert!(pem_to_der("nope").is_err());
        let (ca, _) = Ca::generate("x").unwrap();
        let now = SystemTime::now();
        assert!(ca.sign_host_csr(b"junk", "h", &[], now, now).is_err());
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    #[test]
    fn client_certificates_load_into_a_connector() {
        let (ca, _) = Ca::generate("test CA").unwrap();
        let issued = ca.issue_client("orrery-console-proxy", 1).unwrap();
        let ident = pem_identity(&issued.cert_pem).unwrap();
        // Not a host certificate: it names no host.
        assert!(ident.is_none());
        assert!(client_connector(ca.pem(), &issued).is_ok());
    }
}
