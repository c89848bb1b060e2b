//! The agent's settings: `/etc/orrery/agent.toml` (or `--config`), with
//! command-line flags taking precedence.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/orrery/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/orrery/agent";
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub libvirt_uri: Option<String>,
    /// Primary storage directory (default `<state_dir>/primary`).
    pub primary_dir: Option<PathBuf>,
    /// Force a libvirt domain type ("qemu" for software emulation); it must be
    /// one the host offers.
    pub domain_type: Option<String>,
    /// Address VNC consoles listen on (default 127.0.0.1).
    pub vnc_listen: Option<String>,
    /// Override the coordinator address recorded at enrolment.
    pub coordinator: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
}

/// Loads the config file: the given path must exist; the default path may not.
pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let (p, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| ConfigError::Parse(p.display().to_string(), e))
        }
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(FileConfig::default())
        }
        Err(e) => Err(ConfigError::Read(p.display().to_string(), e)),
    }
}

/// Settings after merging flags over the file.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub libvirt_uri: String,
    pub primary_dir: PathBuf,
    pub domain_type: Option<String>,
    pub vnc_listen: String,
    pub coordinator: Option<String>,
}

impl AgentConfig {
    pub fn merge(
        file: FileConfig,
        state_dir: Option<PathBuf>,
        libvirt_uri: Option<String>,
    ) -> Self {
        let state_dir = state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        AgentConfig {
            primary_dir: file
                .primary_dir
                .unwrap_or_else(|| state_dir.join("primary")),
            libvirt_uri: libvirt_uri
                .or(file.libvirt_uri)
                .unwrap_or_else(|| DEFAULT_LIBVIRT_URI.into()),
            domain_type: file.domain_type,
            vnc_listen: file.vnc_listen.unwrap_or_else(|| "127.0.0.1".into()),
            coordinator: file.coordinator,
            state_dir,
        }
    }

    pub fn console_dir(&self) -> PathBuf {
        self.state_dir.join("consoles")
    }

    pub fn nvram_dir(&self) -> PathBuf {
        self.state_dir.join("nvram")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            "state_dir = \"/srv/a\"\nlibvirt_uri = \"test:///default\"\ndomain_type = \"qemu\"\n",
        )
        .unwrap();
        let c = AgentConfig::merge(file.clone(), Some("/srv/b".into()), None);
        assert_eq!(c.state_dir, PathBuf::from("/srv/b"));
        assert_eq!(c.primary_dir, PathBuf::from("/srv/b/primary"));
        assert_eq!(c.libvirt_uri, "test:///default");
        assert_eq!(c.domain_type.as_deref(), Some("qemu"));
        let c = AgentConfig::merge(FileConfig::default(), None, None);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.libvirt_uri, DEFAULT_LIBVIRT_URI);
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
