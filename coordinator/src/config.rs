//! Coordinator settings from `/etc/orrery/coordinator.toml` (or `--config`);
//! command-line flags win over the file.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub api_listen: Option<String>,
    pub agent_listen: Option<String>,
    pub simulated_hosts: Option<usize>,
    /// Milliseconds a simulated host takes to change an instance's power state.
    pub simulator_delay_ms: Option<u64>,
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
