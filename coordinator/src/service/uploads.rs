//! Files hosts send into secondary storage (volume snapshots, templates
//! made from volumes). The service grants one upload per command: a random
//! token bound to one host, one destination and a most number of bytes,
//! valid for a limited time. The agent endpoint spends it: the bytes go to
//! a part file renamed into place only when complete, so a failed or
//! oversized upload leaves nothing behind.

use super::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a grant may wait for its upload to start.
const GRANT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Grant {
    host_id: i64,
    dest: PathBuf,
    max_bytes: u64,
    issued: Instant,
}

/// Outstanding grants, and the bytes each finished one received.
#[derive(Default)]
pub struct Uploads {
    grants: parking_lot::Mutex<HashMap<String, Grant>>,
    done: parking_lot::Mutex<HashMap<String, u64>>,
}

/// Why an upload was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    #[error("unknown or expired upload grant")]
    UnknownGrant,
    #[error("the grant is for another host")]
    WrongHost,
    #[error("more than the {0} bytes granted")]
    TooLarge(u64),
    #[error("writing {path}: {reason}")]
    Io { path: String, reason: String },
}

impl Uploads {
    /// A new grant for `host_id` to write `dest`.
    pub fn grant(&self, host_id: i64, dest: PathBuf, max_bytes: u64) -> String {
        let token = {
            use base64::Engine;
            use rand::RngCore;
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        };
        let mut g = self.grants.lock();
        g.retain(|_, v| v.issued.elapsed() < GRANT_TTL);
        g.insert(
            token.clone(),
            Grant {
                host_id,
                dest,
                max_bytes,
                issued: Instant::now(),
            },
        );
        token
    }

    /// A grant's host, destination and size bound, to carry it to the
    /// coordinator the agent will send the file to.
    pub fn lookup(&self, token: &str) -> Option<(i64, PathBuf, u64)> {
        self.grants
            .lock()
            .get(token)
            .map(|g| (g.host_id, g.dest.clone(), g.max_bytes))
    }

    /// Takes over a grant another coordinator gave, under its token.
    pub fn adopt(&self, token: &str, host_id: i64, dest: PathBuf, max_bytes: u64) {
        self.grants.lock().insert(
            token.to_string(),
            Grant {
                host_id,
                dest,
                max_bytes,
                issued: Instant::now(),
            },
        );
    }

    /// The bytes another coordinator received for one of this one's
    /// grants, for `finished` to report.
    pub fn received_elsewhere(&self, token: &str, bytes: u64) {
        self.grants.lock().remove(token);
        self.done.lock().insert(token.to_string(), bytes);
    }

    /// Takes a grant for `host_id` (once): where to write and how much.
    fn take(&self, token: &str, host_id: i64) -> Result<Grant, UploadError> {
        let mut g = self.grants.lock();
        let grant = g.get(token).ok_or(UploadError::UnknownGrant)?;
        if grant.issued.elapsed() >= GRANT_TTL {
            g.remove(token);
            return Err(UploadError::UnknownGrant);
        }
        if grant.host_id != host_id {
            return Err(UploadError::WrongHost);
        }
        Ok(g.remove(token).expect("present"))
    }

    /// The bytes a finished upload wrote (once), None when it did not
    /// finish; the grant is withdrawn either way.
    pub fn finished(&self, token: &str) -> Option<u64> {
        self.grants.lock().remove(token);
        self.done.lock().remove(token)
    }

    /// Writes an upload's chunks for `host_id` under `token`; the bytes
    /// written.
    pub async fn receive<S, E>(
        &self,
        token: &str,
        host_id: i64,
        first: Vec<u8>,
        mut rest: S,
    ) -> Result<u64, UploadError>
    where
        S: futures::Stream<Item = Result<Vec<u8>, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let grant = self.take(token, host_id)?;
        let io = |e: &dyn std::fmt::Display| UploadError::Io {
            path: grant.dest.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = grant.dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| io(&e))?;
        }
        let part = grant.dest.with_extension("upload");
        let result = async {
            let mut f = tokio::fs::File::create(&part).await.map_err(|e| io(&e))?;
            let mut n = 0u64;
            let mut chunk = Some(Ok(first));
            while let Some(c) = chunk {
                let data = c.map_err(|e| io(&e))?;
                n += data.len() as u64;
                if n > grant.max_bytes {
                    return Err(UploadError::TooLarge(grant.max_bytes));
                }
                f.write_all(&data).await.map_err(|e| io(&e))?;
                chunk = rest.next().await;
            }
            f.sync_all().await.map_err(|e| io(&e))?;
            tokio::fs::rename(&part, &grant.dest)
                .await
                .map_err(|e| io(&e))?;
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                self.done.lock().insert(token.to_string(), n);
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&[u8]]) -> impl futures::Stream<Item = Result<Vec<u8>, String>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(p.to_vec())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn a_grant_is_for_one_host_once_and_within_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let u = Uploads::default();
        let dest = dir.path().join("s/a.qcow2");
        let t = u.grant(7, dest.clone(), 10);
        assert_eq!(
            u.receive(&t, 8, b"x".to_vec(), chunks(&[])).await,
            Err(UploadError::WrongHost)
        );
        assert_eq!(
            u.receive(&t, 7, b"hello".to_vec(), chunks(&[b" world"]))
                .await,
            Err(UploadError::TooLarge(10))
        );
        assert!(!dest.exists() && !dest.with_extension("upload").exists());
        // Spent by the failed attempt.
        assert_eq!(
            u.receive(&t, 7, b"x".to_vec(), chunks(&[])).await,
            Err(UploadError::UnknownGrant)
        );
        let t = u.grant(7, dest.clone(), 10);
        assert_eq!(
            u.receive(&t, 7, b"hel".to_vec(), chunks(&[b"lo"])).await,
            Ok(5)
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(u.finished(&t), Some(5));
        assert_eq!(u.finished(&t), None);
    }

    #[tokio::test]
    async fn a_grant_carried_to_another_coordinator_reports_back() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, receiver) = (Uploads::default(), Uploads::default());
        let dest = dir.path().join("s/b.qcow2");
        let t = issuer.grant(3, dest.clone(), 8);
        let (host, to, max) = issuer.lookup(&t).unwrap();
        assert_eq!((host, &to, max), (3, &dest, 8));
        receiver.adopt(&t, host, to, max);
        // Still one host's, and within its size, where it was taken over.
        assert_eq!(
            receiver.receive(&t, 4, b"x".to_vec(), chunks(&[])).await,
            Err(UploadError::WrongHost)
        );
        assert_eq!(
            receiver.receive(&t, 3, b"abc".to_vec(), chunks(&[])).await,
            Ok(3)
        );
        let got = receiver.finished(&t).unwrap();
        issuer.received_elsewhere(&t, got);
        assert_eq!(issuer.lookup(&t), None);
        assert_eq!(issuer.finished(&t), Some(3));
    }
}
