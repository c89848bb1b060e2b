//! The coordinator's certificate authority. `init` creates it; agents enrol
//! against it (host certificates are issued from it).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Gen(#[from] rcgen::Error),
    #[error("cannot write {0}: {1}")]
    Io(String, std::io::Error),
}

/// Creates `ca.key` (0600) and `ca.pem` in `dir`; returns the certificate PEM.
pub fn create(dir: &Path) -> Result<String, CaError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Orrery coordinator CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    let cert = params.self_signed(&key)?;
    let kp = dir.join("ca.key");
    write_private(&kp, key.serialize_pem().as_bytes())
        .map_err(|e| CaError::Io(kp.display().to_string(), e))?;
    let cp = dir.join("ca.pem");
    std::fs::write(&cp, cert.pem()).map_err(|e| CaError::Io(cp.display().to_string(), e))?;
    Ok(cert.pem())
}

fn write_private(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)
}
