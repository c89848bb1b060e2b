//! The agent's settings: `/etc/orrery/agent.toml` (or `--config`), with
//! command-line flags taking precedence.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/orrery/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/orrery/agent";
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// Not under the state directory: that holds the host's private key and is
/// best kept private, while QEMU (an unprivileged user) must reach every
/// directory above a disk image.
pub const DEFAULT_PRIMARY_DIR: &str = "/var/lib/orrery/primary";
/// The host's own storage, for volumes that live on this host only; outside
/// the state directory for the same reason as [`DEFAULT_PRIMARY_DIR`].
pub const DEFAULT_LOCAL_DIR: &str = "/var/lib/orrery/local";
/// Where libvirt and QEMU look for their TLS files.
pub const DEFAULT_PKI_DIR: &str = "/etc/pki";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub libvirt_uri: Option<String>,
    /// Primary storage directory (default [`DEFAULT_PRIMARY_DIR`], whatever
    /// the state directory, except that a pool an earlier version created
    /// at `<state_dir>/primary` stays in use).
    pub primary_dir: Option<PathBuf>,
    /// Host-local storage directory (default [`DEFAULT_LOCAL_DIR`]): volumes
    /// kept on this host's own disks rather than on primary storage.
    pub local_dir: Option<PathBuf>,
    /// Force a libvirt domain type ("qemu" for software emulation); it must be
    /// one the host offers.
    pub domain_type: Option<String>,
    /// Address VNC consoles listen on (default 127.0.0.1).
    pub vnc_listen: Option<String>,
    /// Override the coordinator address recorded at enrolment; with several
    /// coordinators on one store, all of them, comma-separated (the agent
    /// keeps a session with each).
    pub coordinator: Option<String>,
    /// Write libvirt's and QEMU's TLS files (CA, certificate, key) from the
    /// host's certificate under `pki_dir` (default false: those directories
    /// belong to the operator until they allow it).
    pub libvirt_tls: Option<bool>,
    /// Where those files go (default [`DEFAULT_PKI_DIR`]).
    pub pki_dir: Option<PathBuf>,
    /// The address peers reach this host at; reported as its address and
    /// written into its certificate (default: detected from the default
    /// route).
    pub address: Option<String>,
    /// Port of the metadata service on each guest network's DHCP address
    /// (default 80, where cloud-init's CloudStack data source looks; 0
    /// turns the service off).
    pub metadata_port: Option<u16>,
    /// Where sysfs is (default /sys): GPUs are discovered under it.
    pub sysfs_root: Option<PathBuf>,
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
    /// Whether `primary_dir` was configured (flag or file) rather than
    /// defaulted.
    pub primary_dir_set: bool,
    pub local_dir: PathBuf,
    pub domain_type: Option<String>,
    pub vnc_listen: String,
    pub coordinator: Option<String>,
    pub libvirt_tls: bool,
    pub pki_dir: PathBuf,
    pub address: Option<String>,
    pub metadata_port: u16,
    pub sysfs_root: PathBuf,
}

impl AgentConfig {
    pub fn merge(
        file: FileConfig,
        state_dir: Option<PathBuf>,
        libvirt_uri: Option<String>,
        primary_dir: Option<PathBuf>,
        local_dir: Option<PathBuf>,
    ) -> Self {
        let state_dir = state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let primary_dir = primary_dir.or(file.primary_dir);
        AgentConfig {
            primary_dir_set: primary_dir.is_some(),
            primary_dir: primary_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PRIMARY_DIR)),
            local_dir: local_dir
                .or(file.local_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCAL_DIR)),
            libvirt_uri: libvirt_uri
                .or(file.libvirt_uri)
                .unwrap_or_else(|| DEFAULT_LIBVIRT_URI.into()),
            domain_type: file.domain_type,
            vnc_listen: file.vnc_listen.unwrap_or_else(|| "127.0.0.1".into()),
            coordinator: file.coordinator,
            libvirt_tls: file.libvirt_tls.unwrap_or(false),
            pki_dir: file
                .pki_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PKI_DIR)),
            address: file
                .address
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty()),
            metadata_port: file.metadata_port.unwrap_or(80),
            sysfs_root: file.sysfs_root.unwrap_or_else(|| PathBuf::from("/sys")),
            state_dir,
        }
    }

    /// Where libvirt keeps its running QEMU domains' status files (and their
    /// pids): what the fencing watchdog reads without asking libvirt.
    pub fn libvirt_run_dir(&self) -> PathBuf {
        if self.libvirt_uri.ends_with("/session") {
            let base = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::getuid())));
            return base.join("libvirt/qemu/run");
        }
        PathBuf::from("/run/libvirt/qemu")
    }

    /// Where the pool was before it had a default of its own: under the
    /// state directory.
    pub fn legacy_primary_dir(&self) -> PathBuf {
        self.state_dir.join("primary")
    }

    /// Keeps an unconfigured pool where an earlier version of the agent
    /// left it, when `is_dir` finds it there: instances defined on it
    /// would otherwise get fresh root volumes in the new default location
    /// the next time they start. Returns whether it did.
    pub fn keep_legacy_primary(&mut self, is_dir: impl Fn(&Path) -> bool) -> bool {
        let legacy = self.legacy_primary_dir();
        if self.primary_dir_set || !is_dir(&legacy) {
            return false;
        }
        self.primary_dir = legacy;
        true
    }

    pub fn console_dir(&self) -> PathBuf {
        self.state_dir.join("consoles")
    }

    pub fn nvram_dir(&self) -> PathBuf {
        self.state_dir.join("nvram")
    }

    /// Instances' metadata as last handed over, so the metadata service
    /// answers again after the agent restarts.
    pub fn metadata_dir(&self) -> PathBuf {
        self.state_dir.join("metadata")
    }

    /// Config drive images: on primary storage, which QEMU can read and
    /// every host of a shared pool sees at the same path.
    pub fn config_drive_dir(&self) -> PathBuf {
        self.primary_dir.join("configdrive")
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
        let c = AgentConfig::merge(file.clone(), Some("/srv/b".into()), None, None, None);
        assert_eq!(c.state_dir, PathBuf::from("/srv/b"));
        assert_eq!(c.libvirt_uri, "test:///default");
        assert_eq!(c.domain_type.as_deref(), Some("qemu"));
        let c = AgentConfig::merge(FileConfig::default(), None, None, None, None);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.libvirt_uri, DEFAULT_LIBVIRT_URI);
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }

    #[test]
    fn libvirt_tls_is_off_unless_allowed() {
        let c = AgentConfig::merge(FileConfig::default(), None, None, None, None);
        assert!(!c.libvirt_tls);
        assert_eq!(c.pki_dir, PathBuf::from(DEFAULT_PKI_DIR));
        assert_eq!(c.address, None);
        let file: FileConfig = toml::from_str(
            "libvirt_tls = true\npki_dir = \"/tmp/pki\"\naddress = \" 10.99.0.3 \"\n",
        )
        .unwrap();
        let c = AgentConfig::merge(file, None, None, None, None);
        assert!(c.libvirt_tls);
        assert_eq!(c.pki_dir, PathBuf::from("/tmp/pki"));
        assert_eq!(c.address.as_deref(), Some("10.99.0.3"));
    }

    #[test]
    fn primary_storage_does_not_follow_the_state_directory() {
        let c = AgentConfig::merge(
            FileConfig::default(),
            Some("/root/agent".into()),
            None,
            None,
            None,
        );
        assert_eq!(c.primary_dir, PathBuf::from(DEFAULT_PRIMARY_DIR));
        let file: FileConfig = toml::from_str("primary_dir = \"/srv/pool\"\n").unwrap();
        let c = AgentConfig::merge(file.clone(), Some("/root/agent".into()), None, None, None);
        assert_eq!(c.primary_dir, PathBuf::from("/srv/pool"));
        let c = AgentConfig::merge(file, None, None, Some("/srv/flag".into()), None);
        assert_eq!(c.primary_dir, PathBuf::from("/srv/flag"));
    }

    #[test]
    fn local_storage_has_its_own_default_and_flag() {
        let c = AgentConfig::merge(
            FileConfig::default(),
            Some("/root/agent".into()),
            None,
            None,
            None,
        );
        assert_eq!(c.local_dir, PathBuf::from(DEFAULT_LOCAL_DIR));
        let file: FileConfig = toml::from_str("local_dir = \"/srv/local\"\n").unwrap();
        let c = AgentConfig::merge(file.clone(), None, None, None, None);
        assert_eq!(c.local_dir, PathBuf::from("/srv/local"));
        assert_eq!(c.primary_dir, PathBuf::from(DEFAULT_PRIMARY_DIR));
        let c = AgentConfig::merge(file, None, None, None, Some("/srv/flag".into()));
        assert_eq!(c.local_dir, PathBuf::from("/srv/flag"));
    }

    #[test]
    fn an_existing_pool_under_the_state_directory_is_kept_unless_configured() {
        let mut c = AgentConfig::merge(
            FileConfig::default(),
            Some("/srv/a".into()),
            None,
            None,
            None,
        );
        assert!(!c.keep_legacy_primary(|_| false));
        assert_eq!(c.primary_dir, PathBuf::from(DEFAULT_PRIMARY_DIR));
        assert!(c.keep_legacy_primary(|p| p == Path::new("/srv/a/primary")));
        assert_eq!(c.primary_dir, PathBuf::from("/srv/a/primary"));

        let mut c = AgentConfig::merge(
            FileConfig::default(),
            Some("/srv/a".into()),
            None,
            Some("/srv/pool".into()),
            None,
        );
        assert!(!c.keep_legacy_primary(|_| true));
        assert_eq!(c.primary_dir, PathBuf::from("/srv/pool"));
    }
}
