//! What enrolment leaves in the state directory: the host key (generated
//! here, never sent anywhere), its certificate, the pinned CA and the
//! coordinator's address. All files are 0600.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub host_id: String,
    pub coordinator: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not enrolled (run `orrery-agent enroll` first)")]
    NotEnrolled(String),
    #[error("{0}: {1}")]
    Corrupt(String, String),
}

pub struct StateDir {
    pub root: PathBuf,
}

/// The credentials a connection needs, read fresh for every connection so a
/// renewed certificate takes effect on the next one.
pub struct Credentials {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub identity: Identity,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn is_enrolled(&self) -> bool {
        self.path("agent.json").exists()
    }

    fn read(&self, name: &str) -> Result<String, StateError> {
        let p = self.path(name);
        std::fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotEnrolled(self.root.display().to_string())
            } else {
                StateError::Io(p.display().to_string(), e)
            }
        })
    }

    pub fn credentials(&self) -> Result<Credentials, StateError> {
        let id = self.read("agent.json")?;
        let identity: Identity = serde_json::from_str(&id)
            .map_err(|e| StateError::Corrupt("agent.json".into(), e.to_string()))?;
        Ok(Credentials {
            key_pem: self.read("host.key")?,
            cert_pem: self.read("host.pem")?,
            ca_pem: self.read("ca.pem")?,
            identity,
        })
    }

    /// Stores a fresh enrolment. The key is written first: a half-finished
    /// enrolment never leaves a certificate without its key.
    pub fn save_enrolment(
        &self,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
        identity: &Identity,
    ) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| StateError::Io(self.root.display().to_string(), e))?;
        write_private(&self.path("host.key"), key_pem.as_bytes())?;
        write_private(&self.path("ca.pem"), ca_pem.as_bytes())?;
        write_private(&self.path("host.pem"), cert_pem.as_bytes())?;
        let id = serde_json::to_vec_pretty(identity).expect("identity serialises");
        write_private(&self.path("agent.json"), &id)
    }

    /// Replaces the certificate atomically (renewal keeps the key).
    pub fn save_certificate(&self, cert_pem: &str) -> Result<(), StateError> {
        write_private(&self.path("host.pem"), cert_pem.as_bytes())
    }
}

/// Writes a 0600 file through a temporary name and a rename, so readers see
/// the old or the new content, never a partial one.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), StateError> {
    let err = |e| StateError::Io(path.display().to_string(), e);
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn enrolment_round_trips_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::new(dir.path().join("agent"));
        assert!(matches!(st.credentials(), Err(StateError::NotEnrolled(_))));
        let id = Identity {
            host_id: "h1".into(),
            coordinator: "127.0.0.1:8250".into(),
        };
        st.save_enrolment("KEY", "CERT", "CA", &id).unwrap();
        let c = st.credentials().unwrap();
        assert_eq!((c.key_pem.as_str(), c.cert_pem.as_str()), ("KEY", "CERT"));
        assert_eq!(c.identity, id);
        for f in ["host.key", "host.pem", "ca.pem", "agent.json"] {
            let mode = std::fs::metadata(st.root.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        st.save_certificate("CERT2").unwrap();
        assert_eq!(st.credentials().unwrap().cert_pem, "CERT2");
    }
}
