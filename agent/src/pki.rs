//! libvirt's and QEMU's TLS files, made from the host's Orrery certificate.
//!
//! Hosts migrate guests and serve consoles to each other over libvirt's TLS
//! listener and QEMU's own TLS channels. Both look for their CA, certificate
//! and key at fixed places under `/etc/pki`; the coordinator's CA issues the
//! host certificate (server and client use, naming the host's names and
//! addresses), so writing it there is all it takes for two enrolled hosts to
//! trust each other and nothing else. The agent writes there only when the
//! operator allows it (`libvirt_tls = true`).
//!
//! [`files`] decides paths, contents, modes and owners (pure); [`write`]
//! puts them in place atomically; [`install`] and [`refresh`] tie them to
//! the agent's state and settings.

use crate::config::AgentConfig;
use crate::host::qemu_access::{self, EmulatorUser};
use crate::ops::Ops;
use crate::state::StateDir;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Where QEMU's user is configured when libvirt cannot be asked.
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// The user Debian's libvirt runs QEMU as when `qemu.conf` does not say.
const DEFAULT_QEMU_USER: &str = "libvirt-qemu";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("reading the host's credentials: {0}")]
    State(#[from] crate::state::StateError),
}

/// A file's owner as numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// One file to put under the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFile {
    /// Relative to the PKI directory.
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
    pub owner: Owner,
}

/// The directories the files go in, with the mode each gets when it has to
/// be created: libvirt's private keys sit in a directory only root enters;
/// QEMU, running as its own user, must traverse `qemu/`.
pub const DIRS: [(&str, u32); 4] = [
    ("CA", 0o755),
    ("libvirt", 0o755),
    ("libvirt/private", 0o700),
    ("qemu", 0o755),
];

/// Pure: the files libvirt and QEMU read, from the host's key, certificate
/// and CA (PEM). One certificate serves as server and client (it carries
/// both purposes). libvirtd runs as root and reads its keys as root only;
/// QEMU runs as `emulator`, so its keys belong to root with the emulator's
/// group and are readable by the group only.
pub fn files(key_pem: &str, cert_pem: &str, ca_pem: &str, emulator: Owner) -> Vec<PkiFile> {
    let qemu_group = Owner {
        uid: 0,
        gid: emulator.gid,
    };
    let f = |path: &str, contents: &str, mode: u32, owner: Owner| PkiFile {
        path: PathBuf::from(path),
        contents: contents.to_string(),
        mode,
        owner,
    };
    vec![
        f("CA/cacert.pem", ca_pem, 0o644, Owner::ROOT),
        f("libvirt/servercert.pem", cert_pem, 0o644, Owner::ROOT),
        f("libvirt/clientcert.pem", cert_pem, 0o644, Owner::ROOT),
        f("libvirt/private/serverkey.pem", key_pem, 0o600, Owner::ROOT),
        f("libvirt/private/clientkey.pem", key_pem, 0o600, Owner::ROOT),
        f("qemu/ca-cert.pem", ca_pem, 0o644, qemu_group),
        f("qemu/server-cert.pem", cert_pem, 0o644, qemu_group),
        f("qemu/server-key.pem", key_pem, 0o640, qemu_group),
        f("qemu/client-cert.pem", cert_pem, 0o644, qemu_group),
        f("qemu/client-key.pem", key_pem, 0o640, qemu_group),
    ]
}

/// Writes `files` under `dir`, creating missing directories (modes from
/// [`DIRS`], others 0755). Each file is written to a temporary name with its
/// mode and owner set before it is renamed into place, so libvirt and QEMU
/// never read a partial key or one with the wrong permissions. A file that
/// already holds the same contents, mode and owner is left alone. Returns
/// how many files were written.
pub fn write(dir: &Path, files: &[PkiFile]) -> Result<usize, PkiError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| PkiError::Io(p, e)
    };
    let mut written = 0;
    for file in files {
        let path = dir.join(&file.path);
        let parent = path.parent().unwrap_or(dir);
        ensure_dirs(dir, parent)?;
        if same(&path, file) {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let result = (|| {
            std::os::unix::fs::fchown(&f, Some(file.owner.uid), Some(file.owner.gid))?;
            // Set after the owner: changing the owner may clear mode bits.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
            f.write_all(file.contents.as_bytes())?;
            f.sync_all()
        })();
        drop(f);
        if let Err(e) = result.and_then(|_| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(PkiError::Io(path.display().to_string(), e));
        }
        written += 1;
    }
    Ok(written)
}

/// Creates the directories from `root` down to `dir` that are missing;
/// existing ones keep their modes (they may be the operator's).
fn ensure_dirs(root: &Path, dir: &Path) -> Result<(), PkiError> {
    let mut todo = Vec::new();
    let mut d = dir;
    while !d.is_dir() {
        todo.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for d in todo.into_iter().rev() {
        let rel = d.strip_prefix(root).unwrap_or(&d);
        let mode = DIRS
            .iter()
            .find(|(p, _)| Path::new(p) == rel)
            .map_or(0o755, |(_, m)| *m);
        match std::fs::DirBuilder::new().mode(mode).create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PkiError::Io(d.display().to_string(), e)),
        }
    }
    Ok(())
}

fn same(path: &Path, file: &PkiFile) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o7777 == file.mode
        && meta.uid() == file.owner.uid
        && meta.gid() == file.owner.gid
        && std::fs::read(path).is_ok_and(|c| c == file.contents.as_bytes())
}

/// QEMU's user and group: what libvirt reports when it could be asked, else
/// `qemu.conf`'s setting, else the distribution's default user, else root.
pub fn emulator_owner(reported: Option<(u32, u32)>) -> Owner {
    if let Some((uid, gid)) = reported {
        return Owner { uid, gid };
    }
    let configured = std::fs::read_to_string(QEMU_CONF)
        .ok()
        .and_then(|text| match qemu_access::parse_qemu_conf(&text) {
            (Some(user), group) => EmulatorUser::from_names(&user, group.as_deref()),
            (None, _) => None,
        })
        .or_else(|| EmulatorUser::from_names(DEFAULT_QEMU_USER, None));
    configured.map_or(Owner::ROOT, |u| Owner {
        uid: u.uid,
        gid: u.gid,
    })
}

/// Writes the TLS files from the host's enrolled credentials when the
/// configuration allows it. Returns whether the files are in place.
pub fn install(cfg: &AgentConfig, emulator: Owner) -> Result<bool, PkiError> {
    if !cfg.libvirt_tls {
        return Ok(false);
    }
    let creds = StateDir::new(&cfg.state_dir).credentials()?;
    let files = files(&creds.key_pem, &creds.cert_pem, &creds.ca_pem, emulator);
    let n = write(&cfg.pki_dir, &files)?;
    if n > 0 {
        tracing::info!(dir = %cfg.pki_dir.display(), files = n, "libvirt and QEMU TLS files written");
    }
    Ok(true)
}

/// [`install`] for a running agent (at start and after a certificate
/// renewal), with QEMU's user as libvirt reports it; records the outcome in
/// the host facts. A failure is logged, not fatal: guests run without it,
/// only TLS migration to and from this host is off.
pub async fn refresh(ops: &Ops) -> bool {
    if !ops.cfg.libvirt_tls {
        return false;
    }
    let reported = ops.host_info().await.ok().and_then(|i| i.emulator_user);
    let cfg = ops.cfg.clone();
    let done = tokio::task::spawn_blocking(move || install(&cfg, emulator_owner(reported)))
        .await
        .unwrap_or_else(|e| {
            Err(PkiError::Io(
                ops.cfg.pki_dir.display().to_string(),
                std::io::Error::other(e.to_string()),
            ))
        });
    let ok = match done {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(error = %e, "libvirt and QEMU TLS files not written; TLS migration is off");
            false
        }
    };
    ops.libvirt_tls.store(ok, Ordering::Relaxed);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    #[test]
    fn every_file_libvirt_and_qemu_read_with_safe_modes() {
        let qemu = Owner {
            uid: 64055,
            gid: 107,
        };
        let fs = files("KEY", "CERT", "CA", qemu);
        let get = |p: &str| fs.iter().find(|f| f.path == Path::new(p)).unwrap();
        assert_eq!(fs.len(), 10);
        assert_eq!(get("CA/cacert.pem").contents, "CA");
        assert_eq!(get("qemu/ca-cert.pem").contents, "CA");
        for p in [
            "libvirt/servercert.pem",
            "libvirt/clientcert.pem",
            "qemu/server-cert.pem",
            "qemu/client-cert.pem",
        ] {
            assert_eq!(get(p).contents, "CERT", "{p}");
            assert_eq!(get(p).mode & 0o002, 0, "{p} is not world-writable");
        }
        for p in [
            "libvirt/private/serverkey.pem",
            "libvirt/private/clientkey.pem",
        ] {
            let f = get(p);
            assert_eq!(
                (f.contents.as_str(), f.mode, f.owner),
                ("KEY", 0o600, Owner::ROOT)
            );
        }
        for p in ["qemu/server-key.pem", "qemu/client-key.pem"] {
            let f = get(p);
            assert_eq!(f.contents, "KEY");
            assert_eq!(f.mode, 0o640, "{p}: group-readable, nothing for others");
            assert_eq!(f.owner, Owner { uid: 0, gid: 107 }, "{p}: QEMU's group");
        }
        // Every file lies in one of the directories the writer knows.
        for f in &fs {
            let dir = f.path.parent().unwrap();
            assert!(
                DIRS.iter().any(|(d, _)| Path::new(d) == dir),
                "{:?}",
                f.path
            );
        }
    }

    #[test]
    fn the_writer_creates_directories_and_replaces_files_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let owner = me();
        let fs = files("KEY1", "CERT1", "CA", owner);
        assert_eq!(write(&dir, &fs).unwrap(), 10);
        for f in &fs {
            let p = dir.join(&f.path);
            assert_eq!(std::fs::read_to_string(&p).unwrap(), f.contents);
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, f.mode, "{p:?}");
            assert_eq!((meta.uid(), meta.gid()), (owner.uid, owner.gid));
        }
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("libvirt/private"), 0o700);
        assert_eq!(mode("qemu"), 0o755);
        // Unchanged files are not rewritten; a renewed certificate is.
        assert_eq!(write(&dir, &fs).unwrap(), 0);
        let renewed = files("KEY1", "CERT2", "CA", owner);
        assert_eq!(write(&dir, &renewed).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(dir.join("qemu/server-cert.pem")).unwrap(),
            "CERT2"
        );
        // A wrong mode is put right.
        let key = dir.join("qemu/client-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(write(&dir, &renewed).unwrap(), 1);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No temporary files are left behind.
        for (d, _) in DIRS {
            for e in std::fs::read_dir(dir.join(d)).unwrap() {
                let name = e.unwrap().file_name();
                assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
            }
        }
    }

    #[test]
    fn install_writes_only_when_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("state"));
        let id = crate::state::Identity {
            host_id: "h".into(),
            coordinator: "127.0.0.1:1".into(),
        };
        state.save_enrolment("KEY", "CERT", "CA", &id).unwrap();
        let toml = format!(
            "state_dir = {:?}\npki_dir = {:?}\n",
            tmp.path().join("state"),
            tmp.path().join("pki")
        );
        let file: crate::config::FileConfig = toml::from_str(&toml).unwrap();
        let mut cfg = AgentConfig::merge(file, None, None, None, None);
        assert!(!install(&cfg, me()).unwrap());
        assert!(!tmp.path().join("pki").exists());
        cfg.libvirt_tls = true;
        assert!(install(&cfg, me()).unwrap());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("pki/libvirt/private/serverkey.pem")).unwrap(),
            "KEY"
        );
    }
}
