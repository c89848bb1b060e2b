//! The coordinator's certificate authority. `init` creates it; agents enrol
//! against it (host certificates are issued from it).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Gen(#[from] orrery_tls::TlsError),
    #[error("cannot write {0}: {1}")]
    Io(String, std::io::Error),
}

/// Creates `ca.key` (0600) and `ca.pem` in `dir`; returns the certificate PEM.
pub fn create(dir: &Path) -> Result<String, CaError> {
    let (ca, key_pem) = orrery_tls::Ca::generate("Orrery coordinator CA")?;
    let kp = dir.join("ca.key");
    write_private(&kp, key_pem.as_bytes()).map_err(|e| CaError::Io(kp.display().to_string(), e))?;
    let cp = dir.join("ca.pem");
    std::fs::write(&cp, ca.pem()).map_err(|e| CaError::Io(cp.display().to_string(), e))?;
    Ok(ca.pem().to_string())
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
