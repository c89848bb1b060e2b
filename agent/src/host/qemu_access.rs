//! Whether QEMU can reach the storage directories (primary and host-local).
//!
//! libvirt runs QEMU as an unprivileged user and hands each disk image to
//! that user while the guest runs (`dynamic_ownership`), but it leaves the
//! directories above the image alone. One private directory on the way (a
//! 0700 home or state directory) therefore makes every start fail with
//! "Permission denied" on the volume file, long after the agent started.
//! Checking once at start turns that into one clear message.
//!
//! The decision is pure over directory modes and owners ([`first_blocked`],
//! [`blocked_message`]); [`check`] reads them. ACLs and capabilities are
//! not considered: libvirt drops every capability of QEMU by default
//! (`clear_emulator_capabilities`), so even a QEMU running as root is
//! bound by the mode bits.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user and groups QEMU processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; libvirt gives QEMU those of its user.
    pub groups: Vec<u32>,
    /// For messages: the user name, or `uid N` when the user database does
    /// not know the uid.
    pub name: String,
}

impl EmulatorUser {
    /// Completes a uid and gid (as libvirt reports them) from the user
    /// database: the name and supplementary groups.
    pub fn resolve(uid: u32, gid: u32) -> EmulatorUser {
        use nix::unistd::{getgrouplist, Gid, Uid, User};
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let groups = user
            .as_ref()
            .and_then(|u| CString::new(u.name.clone()).ok())
            .and_then(|name| getgrouplist(&name, Gid::from_raw(gid)).ok())
            .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default();
        EmulatorUser {
            uid,
            gid,
            groups,
            name: user.map_or_else(|| format!("uid {uid}"), |u| u.name),
        }
    }

    /// The user named by `qemu.conf`'s `user` and `group` settings, which
    /// take a name or `+N` for a numeric id.
    pub fn from_names(user: &str, group: Option<&str>) -> Option<EmulatorUser> {
        use nix::unistd::{Group, User};
        let (uid, default_gid) = match user.strip_prefix('+') {
            Some(n) => (n.parse().ok()?, None),
            None => {
                let u = User::from_name(user).ok().flatten()?;
                (u.uid.as_raw(), Some(u.gid.as_raw()))
            }
        };
        let gid = match group {
            Some(g) => match g.strip_prefix('+') {
                Some(n) => n.parse().ok()?,
                None => Group::from_name(g).ok().flatten()?.gid.as_raw(),
            },
            None => default_gid?,
        };
        Some(EmulatorUser::resolve(uid, gid))
    }
}

/// The `user` and `group` settings of libvirt's `qemu.conf`, when set.
/// Whether qemu.conf requires TLS with verified client certificates for
/// VNC (`vnc_tls = 1` and `vnc_tls_x509_verify = 1`): then only holders of
/// an Orrery certificate reach the consoles.
pub fn vnc_tls_verified(text: &str) -> bool {
    let mut tls = false;
    let mut verify = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let on = value.trim() == "1";
        match key.trim() {
            "vnc_tls" => tls = on,
            "vnc_tls_x509_verify" => verify = on,
            _ => {}
        }
    }
    tls && verify
}

pub fn parse_qemu_conf(text: &str) -> (Option<String>, Option<String>) {
    let mut user = None;
    let mut group = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "user" => user = Some(value),
            "group" => group = Some(value),
            _ => {}
        }
    }
    (user, group)
}

/// Which of the agent's storage directories a check is about: the message
/// names it and the setting that moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDir {
    Primary,
    Local,
}

impl StorageDir {
    fn what(self) -> &'static str {
        match self {
            StorageDir::Primary => "primary storage",
            StorageDir::Local => "local storage",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            StorageDir::Primary => "primary_dir",
            StorageDir::Local => "local_dir",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            StorageDir::Primary => "--primary-dir",
            StorageDir::Local => "--local-dir",
        }
    }
}

/// One directory QEMU passes through, as `stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMeta {
    pub path: PathBuf,
    /// Permission bits (the low 12 bits of `st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Which class of a directory's permission bits applies to `who`: the
/// owner's bits for the owner even when the group's or others' would allow
/// more, as the kernel decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Owner,
    Group,
    Other,
}

impl Class {
    fn of(dir: &DirMeta, who: &EmulatorUser) -> Class {
        if dir.uid == who.uid {
            Class::Owner
        } else if dir.gid == who.gid || who.groups.contains(&dir.gid) {
            Class::Group
        } else {
            Class::Other
        }
    }

    fn search_bit(self) -> u32 {
        match self {
            Class::Owner => 0o100,
            Class::Group => 0o010,
            Class::Other => 0o001,
        }
    }

    fn chmod(self) -> &'static str {
        match self {
            Class::Owner => "u+x",
            Class::Group => "g+x",
            Class::Other => "o+x",
        }
    }
}

/// Whether `who` may pass through `dir` (search permission).
pub fn can_search(dir: &DirMeta, who: &EmulatorUser) -> bool {
    dir.mode & Class::of(dir, who).search_bit() != 0
}

/// The first directory, in the order given (from `/` down), that `who`
/// cannot pass through.
pub fn first_blocked<'a>(dirs: &'a [DirMeta], who: &EmulatorUser) -> Option<&'a DirMeta> {
    dirs.iter().find(|d| !can_search(d, who))
}

/// What to tell the operator when `blocked` keeps `who` from `target`.
pub fn blocked_message(
    target: &Path,
    which: StorageDir,
    blocked: &DirMeta,
    who: &EmulatorUser,
) -> String {
    let class = Class::of(blocked, who);
    format!(
        "QEMU runs as {} and cannot reach {} at {}: directory {} is mode {:04o} \
         (owner uid {}, group gid {}), which gives {} no search (x) permission. Run \
         `chmod {} {}`, or set {} in the agent's config (or {}) to a directory QEMU can reach",
        who.name,
        which.what(),
        target.display(),
        blocked.path.display(),
        blocked.mode & 0o7777,
        blocked.uid,
        blocked.gid,
        who.name,
        class.chmod(),
        blocked.path.display(),
        which.setting(),
        which.flag(),
    )
}

fn dir_meta(path: &Path) -> io::Result<DirMeta> {
    // Follows symbolic links: what matters is the directory reached.
    let m = std::fs::metadata(path)?;
    Ok(DirMeta {
        path: path.to_path_buf(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// Every directory a lookup of `target` passes through, from `/` down:
/// those of the path as written and, when symbolic links lead elsewhere,
/// those of where they lead.
fn dirs_on_the_way(target: &Path) -> io::Result<Vec<DirMeta>> {
    let absolute = if target.is_absolute() {
        target.to_path_buf()
    } else {
        std::env::current_dir()?.join(target)
    };
    let canonical = std::fs::canonicalize(&absolute)?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in [&absolute, &canonical] {
        let mut chain: Vec<&Path> = p.ancestors().collect();
        chain.reverse();
        for dir in chain {
            if !paths.iter().any(|q| q == dir) {
                paths.push(dir.to_path_buf());
            }
        }
    }
    paths.iter().map(|p| dir_meta(p)).collect()
}

/// Checks that `who` can pass through every directory down to `target`
/// (which must exist); the error says which directory blocks it and what
/// to do.
pub fn check(target: &Path, which: StorageDir, who: &EmulatorUser) -> Result<(), String> {
    let dirs = dirs_on_the_way(target)
        .map_err(|e| format!("reading the directories above {}: {e}", target.display()))?;
    match first_blocked(&dirs, who) {
        Some(blocked) => Err(blocked_message(target, which, blocked, who)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> EmulatorUser {
        EmulatorUser {
            uid: 64055,
            gid: 64055,
            groups: vec![64055, 993],
            name: "libvirt-qemu".to_string(),
        }
    }

    fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> DirMeta {
        DirMeta {
            path: PathBuf::from(path),
            mode,
            uid,
            gid,
        }
    }

    #[test]
    fn others_need_the_search_bit() {
        let who = qemu();
        assert!(can_search(&dir("/", 0o755, 0, 0), &who));
        assert!(can_search(&dir("/srv", 0o711, 0, 0), &who));
        assert!(!can_search(&dir("/root", 0o700, 0, 0), &who));
        // Readable is not enough to pass through.
        assert!(!can_search(&dir("/srv/a", 0o754, 0, 0), &who));
    }

    #[test]
    fn owner_and_group_bits_apply_to_their_class_only() {
        let who = qemu();
        // Owned by QEMU's user: only the owner bits count, even when
        // others may pass.
        assert!(can_search(&dir("/q", 0o700, 64055, 0), &who));
        assert!(!can_search(&dir("/q", 0o077, 64055, 0), &who));
        // Primary or supplementary group.
        assert!(can_search(&dir("/g", 0o750, 0, 64055), &who));
        assert!(can_search(&dir("/g", 0o750, 0, 993), &who));
        assert!(!can_search(&dir("/g", 0o705, 0, 993), &who));
        assert!(!can_search(&dir("/g", 0o750, 0, 27), &who));
    }

    #[test]
    fn root_is_bound_by_the_owner_bits_like_anyone() {
        let root = EmulatorUser {
            uid: 0,
            gid: 0,
            groups: vec![0],
            name: "root".to_string(),
        };
        assert!(can_search(&dir("/root", 0o700, 0, 0), &root));
        assert!(!can_search(&dir("/home/alice", 0o700, 1000, 1000), &root));
    }

    #[test]
    fn the_first_blocking_directory_is_named_with_the_fix() {
        let who = qemu();
        let dirs = [
            dir("/", 0o755, 0, 0),
            dir("/home", 0o755, 0, 0),
            dir("/home/op", 0o700, 1000, 1000),
            dir("/home/op/agent", 0o700, 0, 0),
            dir("/home/op/agent/primary", 0o755, 0, 0),
        ];
        let blocked = first_blocked(&dirs, &who).unwrap();
        assert_eq!(blocked.path, PathBuf::from("/home/op"));
        let m = blocked_message(
            Path::new("/home/op/agent/primary"),
            StorageDir::Primary,
            blocked,
            &who,
        );
        assert!(m.starts_with("QEMU runs as libvirt-qemu and cannot reach primary storage at /home/op/agent/primary: directory /home/op is mode 0700"), "{m}");
        assert!(m.contains("`chmod o+x /home/op`"), "{m}");
        assert!(m.contains("set primary_dir"), "{m}");
        let m = blocked_message(
            Path::new("/home/op/agent/local"),
            StorageDir::Local,
            blocked,
            &who,
        );
        assert!(
            m.starts_with(
                "QEMU runs as libvirt-qemu and cannot reach local storage at /home/op/agent/local:"
            ),
            "{m}"
        );
        assert!(
            m.contains("set local_dir in the agent's config (or --local-dir)"),
            "{m}"
        );
        let open: Vec<DirMeta> = dirs
            .iter()
            .map(|d| DirMeta {
                mode: d.mode | 0o001,
                ..d.clone()
            })
            .collect();
        assert_eq!(first_blocked(&open, &who), None);
    }

    #[test]
    fn the_fix_names_the_class_that_applies() {
        let who = qemu();
        let m = blocked_message(
            Path::new("/p"),
            StorageDir::Primary,
            &dir("/p", 0o705, 0, 993),
            &who,
        );
        assert!(m.contains("`chmod g+x /p`"), "{m}");
        let m = blocked_message(
            Path::new("/p"),
            StorageDir::Primary,
            &dir("/p", 0o077, 64055, 0),
            &who,
        );
        assert!(m.contains("`chmod u+x /p`"), "{m}");
    }

    #[test]
    fn qemu_conf_user_and_group() {
        let text = "# user = \"nobody\"\n#group=\"x\"\nuser = \"root\"  # run as root\n\
                    group=\"+64055\"\nremember_owner = 1\n";
        assert_eq!(
            parse_qemu_conf(text),
            (Some("root".to_string()), Some("+64055".to_string()))
        );
        assert_eq!(parse_qemu_conf("#user = \"root\"\n"), (None, None));
        let numeric = EmulatorUser::from_names("+64055", Some("+64055")).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (64055, 64055));
        let root = EmulatorUser::from_names("root", None).unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
    }

    #[test]
    fn checks_real_directories() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let private = base.path().join("private");
        let target = private.join("primary");
        std::fs::create_dir_all(&target).unwrap();
        for d in [base.path(), &private, &target] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Someone other than the owner of the test's directories (and not
        // in their group).
        let me = nix::unistd::geteuid().as_raw();
        let stranger = EmulatorUser {
            uid: me.wrapping_add(12345),
            gid: 4_000_000,
            groups: Vec::new(),
            name: "stranger".to_string(),
        };
        let above_ok = dirs_on_the_way(base.path())
            .unwrap()
            .iter()
            .all(|d| can_search(d, &stranger));
        if !above_ok {
            // The temporary directory itself lies somewhere private.
            return;
        }
        assert_eq!(check(&target, StorageDir::Primary, &stranger), Ok(()));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check(&target, StorageDir::Primary, &stranger).unwrap_err();
        assert!(
            err.contains(&format!("directory {} is mode 0700", private.display())),
            "{err}"
        );
        // Through a symbolic link, the directories it leads through count.
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(check(&link, StorageDir::Primary, &stranger).is_err());
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(check(&link, StorageDir::Primary, &stranger), Ok(()));
    }
}

#[cfg(test)]
mod vnc_tls_tests {
    use super::vnc_tls_verified;

    #[test]
    fn both_settings_are_needed_and_comments_do_not_count() {
        assert!(vnc_tls_verified("vnc_tls = 1\nvnc_tls_x509_verify = 1\n"));
        assert!(!vnc_tls_verified("vnc_tls = 1\n"));
        assert!(!vnc_tls_verified("#vnc_tls = 1\nvnc_tls_x509_verify = 1\n"));
        assert!(!vnc_tls_verified("vnc_tls = 0\nvnc_tls_x509_verify = 1\n"));
    }
}
