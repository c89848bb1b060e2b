//! Enrolment: trade a one-time token for a host certificate. The CA is pinned
//! by the fingerprint the token carries, so a coordinator impostor learns
//! nothing (the token is only sent after the pin matched).

use crate::state::{Identity, StateDir, StateError};
use orrery_proto::v1 as pb;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("the token is malformed (expected orr1.<secret>.<fingerprint>)")]
    BadToken,
    #[error("{0}")]
    Tls(#[from] orrery_tls::TlsError),
    #[error("connecting to the coordinator: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the coordinator refused the enrolment: {0}")]
    Refused(String),
    #[error("the coordinator answered with another CA than the token pins")]
    CaChanged,
    #[error("{0}")]
    State(#[from] StateError),
}

pub fn endpoint(coordinator: &str) -> Result<Endpoint, EnrollError> {
    Ok(Endpoint::from_shared(format!("https://{coordinator}"))?
        .connect_timeout(std::time::Duration::from_secs(10)))
}

/// `hostname` and `addresses` are what the host's certificate will name,
/// so that libvirt and QEMU on other hosts can verify it by them.
pub async fn enroll(
    coordinator: &str,
    token: &str,
    hostname: &str,
    addresses: &[String],
    state: &StateDir,
) -> Result<Identity, EnrollError> {
    orrery_tls::install_crypto();
    let (_, pin) = orrery_tls::split_token(token).ok_or(EnrollError::BadToken)?;
    let chain = orrery_tls::probe_chain(coordinator).await?;
    let ca_der = orrery_tls::pinned_ca(&chain, pin)?;
    let ca_pem = orrery_tls::der_to_pem(&ca_der);
    let (key_pem, csr_der) = orrery_tls::host_key_and_csr()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .domain_name(orrery_tls::COORDINATOR_NAME);
    let channel = endpoint(coordinator)?.tls_config(tls)?.connect().await?;
    let resp = pb::enrollment_client::EnrollmentClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.trim().to_string(),
            csr_der,
            hostname: hostname.to_string(),
            addresses: addresses.to_vec(),
        })
        .await
        .map_err(|s| EnrollError::Refused(s.message().to_string()))?
        .into_inner();
    if !orrery_tls::pem_fingerprint(&resp.ca_pem)?.eq_ignore_ascii_case(pin) {
        return Err(EnrollError::CaChanged);
    }
    let identity = Identity {
        host_id: resp.host_id,
        coordinator: coordinator.to_string(),
    };
    state.save_enrolment(&key_pem, &resp.certificate_pem, &resp.ca_pem, &identity)?;
    Ok(identity)
}
