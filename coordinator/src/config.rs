//! Coordinator settings from `/etc/orrery/coordinator.toml` (or `--config`);
//! command-line flags win over the file.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL for the records (default: SQLite in the data
    /// directory); `--store` wins.
    pub store: Option<String>,
    pub api_listen: Option<String>,
    pub agent_listen: Option<String>,
    /// Where the other coordinators sharing a PostgreSQL store reach this
    /// one's agent endpoint, `HOST:PORT` (default: the agent listen address,
    /// or this machine's name and that port when it listens on all).
    pub peer_address: Option<String>,
    pub simulated_hosts: Option<usize>,
    /// Milliseconds a simulated host takes to change an instance's power state.
    pub simulator_delay_ms: Option<u64>,
    /// Whole GPUs (vfio-pci) each simulated host made from now on reports,
    /// with one card offering a vGPU type (for trying GPU offerings without
    /// GPUs).
    pub simulated_gpus: Option<usize>,
    /// Where `/metrics` is served (default 127.0.0.1:9595); never on the API
    /// listener, since it names every tenant's instances.
    pub metrics_listen: Option<String>,
    /// Seconds a client has to send a request's headers (default 10).
    pub api_header_timeout_secs: Option<u64>,
    /// Seconds an idle kept-alive API connection stays open (default 60).
    pub api_idle_timeout_secs: Option<u64>,
    /// API connections open at once (default 4096, less if the descriptor
    /// limit is lower).
    pub api_max_connections: Option<usize>,
    /// A built web UI (CloudStack's `ui/`, `npm run build`) served at `/`.
    pub ui_dir: Option<PathBuf>,
    /// Where the console proxy listens (default 127.0.0.1:8082).
    pub console_listen: Option<String>,
    /// The console proxy's address as browsers reach it, e.g.
    /// `https://console.example:443` behind a TLS terminator (default
    /// `http://` and the bound listen address).
    pub console_url: Option<String>,
    /// noVNC's files (default /usr/share/novnc, Debian's `novnc`).
    pub novnc_dir: Option<PathBuf>,
}

impl FileConfig {
    /// The API listener's limits from the file, defaults elsewhere.
    pub fn listener_limits(&self) -> crate::listener::Limits {
        let d = crate::listener::Limits::default();
        crate::listener::Limits {
            header_timeout: self.api_header_timeout_secs.map_or(d.header_timeout, |s| {
                std::time::Duration::from_secs(s.max(1))
            }),
            idle_timeout: self
                .api_idle_timeout_secs
                .map_or(d.idle_timeout, |s| std::time::Duration::from_secs(s.max(1))),
            max_connections: self.api_max_connections.unwrap_or(d.max_connections).max(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid configuration in {0}: {1}")]
    Parse(String, toml::de::Error),
}

pub const DEFAULT_PATH: &str = "/etc/orrery/coordinator.toml";

/// Reads the file; a missing default file is an empty configuration, a missing
/// explicit one is an error.
pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let (p, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match std::fs::read_to_string(&p) {
        Ok(s) => toml::from_str(&s).map_err(|e| ConfigError::Parse(p.display().to_string(), e)),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(ConfigError::Read(p.display().to_string(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: FileConfig =
            toml::from_str("api_listen = \"127.0.0.1:9\"\nsimulated_hosts = 2\n").unwrap();
        assert_eq!(c.api_listen.as_deref(), Some("127.0.0.1:9"));
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
