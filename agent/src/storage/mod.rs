//! Disk images on this host: a typed `qemu-img` runner and the pools:
//! primary storage (templates cached once per host, instance volumes as
//! qcow2 overlays on them) and the host's local storage (volumes only, its
//! root volumes overlays on templates cached in primary storage).
//!
//! Access by QEMU: directories are created 0755 and every image 0644
//! (explicitly, whatever the umask), so libvirt's `libvirt-qemu` user can
//! reach and read them; it gets write access to an instance's own volumes
//! through libvirt's `dynamic_ownership` (on by default), which hands the
//! top image of each disk to that user while the domain runs. Templates
//! stay root-owned and are only ever opened read-only, as backing files.

mod checksum;
mod primary;
mod qemu_img;

use std::path::PathBuf;

pub use checksum::{Checksum, ChecksumAlgorithm};
pub use primary::{volume_uuid_of, PoolVolume, Primary, TEMPLATE_DIR};
pub use qemu_img::{ImageFormat, ImageInfo, QemuImg, QemuImgCommand, SnapshotAction};

/// Boxed error a template download may fail with.
pub type FetchError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// qemu-img ran and failed; `stderr` is what it said.
    #[error("{command} failed ({status}): {stderr}")]
    QemuImg {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{command}: unexpected output: {reason}")]
    Output { command: String, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid checksum {0:?}: expected {{SHA-256}}, {{SHA-512}} or {{MD5}} followed by hex digits, or bare hex of one of those lengths"
    )]
    InvalidChecksum(String),
    #[error("template {uuid}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        uuid: String,
        expected: String,
        actual: String,
    },
    #[error("template {uuid}: download failed: {source}")]
    Fetch {
        uuid: String,
        #[source]
        source: FetchError,
    },
    /// The downloaded image is not something to boot guests from as is,
    /// e.g. a qcow2 naming a backing file (which could be any host file).
    #[error("template {uuid}: {reason}")]
    UnsafeImage { uuid: String, reason: String },
    #[error("{0:?} is not a UUID")]
    InvalidUuid(String),
    #[error("volume {0} already exists")]
    AlreadyExists(String),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Lower-cased `uuid` when it is 8-4-4-4-12 hex digits. Volume and
/// template files are named after UUIDs, so this is also what keeps names
/// from escaping the pool directory.
pub(crate) fn normalize_uuid(uuid: &str) -> Result<String, StorageError> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(uuid.to_ascii_lowercase())
    } else {
        Err(StorageError::InvalidUuid(uuid.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert_eq!(
            normalize_uuid("6A1C3F0E-3b1d-4a51-9a4e-2f8f0b6c7d10").unwrap(),
            "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10"
        );
        for bad in [
            "",
            "../../etc/passwd",
            "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d1",
            "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d10/..",
            "6a1c3f0e_3b1d_4a51_9a4e_2f8f0b6c7d10",
            "6a1c3f0e-3b1d-4a51-9a4e-2f8f0b6c7d1g",
        ] {
            assert!(normalize_uuid(bad).is_err(), "{bad}");
        }
    }
}
