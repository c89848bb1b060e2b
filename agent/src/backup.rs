//! Volume snapshots on this host: a volume's content at one instant copied
//! into secondary storage (so it outlives the volume), a volume's content
//! replaced from one, and a new volume made from one.
//!
//! A running instance's volume is copied from a momentary internal snapshot
//! (taken over all its disks at once, the guest's file systems frozen around
//! it when asked, and removed again after the copy), so the guest runs on
//! while the copy is read; a stopped one's file is copied as it is. Either
//! way the copy is a standalone qcow2 (its template flattened in).

use orrery_proto::v1 as pb;
use tokio::io::AsyncWriteExt;

use crate::hypervisor::{HvError, Power};
use crate::ops::{OpError, Ops, TemplateSource};
use crate::storage::{ImageFormat, QemuImg, StorageError};

fn volume_of<'a, T>(v: &'a Option<T>, what: &str) -> Result<&'a T, OpError> {
    v.as_ref()
        .ok_or_else(|| OpError::Invalid(format!("{what} without a volume")))
}

impl Ops {
    async fn instance_running(&self, instance: &str) -> Result<bool, OpError> {
        if instance.is_empty() {
            return Ok(false);
        }
        match self.hv.power(instance).await {
            Ok(Power::Off) | Err(HvError::NotFound(_)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies the volume into secondary storage under `b.grant`; the bytes
    /// sent.
    pub async fn backup_volume(
        &self,
        b: &pb::BackupVolume,
        src: &dyn TemplateSource,
    ) -> Result<u64, OpError> {
        let vol = volume_of(&b.volume, "backup")?;
        let pool = self.pool(&vol.pool)?;
        let path = pool.volume_path(&vol.uuid)?;
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(OpError::Invalid(format!(
                "volume {} has no file on this host yet (it was never used)",
                vol.uuid
            )));
        }
        let scratch = pool.scratch_path(&vol.uuid)?;
        let _ = tokio::fs::remove_file(&scratch).await;
        let copied = if self.instance_running(&b.instance).await? {
            self.copy_live(b, &path, &scratch).await
        } else {
            pool.qemu_img()
                .convert(&path, ImageFormat::Qcow2, &scratch, ImageFormat::Qcow2)
                .await
                .map_err(OpError::from)
        };
        let sent = match copied {
            Ok(()) => src
                .upload(&b.grant, &scratch)
                .await
                .map_err(|e| OpError::Transfer(e.to_string())),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&scratch).await;
        sent
    }

    /// The running instance's volume at one instant, into `scratch`.
    async fn copy_live(
        &self,
        b: &pb::BackupVolume,
        path: &std::path::Path,
        scratch: &std::path::Path,
    ) -> Result<(), OpError> {
        let vol = volume_of(&b.volume, "backup")?;
        let name = format!(
            "orrery-backup-{}",
            vol.uuid
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect::<String>()
        );
        if b.quiesce {
            self.hv.fs_freeze(&b.instance, true).await?;
        }
        let taken = self.hv.snapshot_disks(&b.instance, &name).await;
        if b.quiesce {
            // Thawed whatever happened: a guest left frozen stops writing.
            if let Err(e) = self.hv.fs_freeze(&b.instance, false).await {
                tracing::error!(instance = %b.instance, error = %e, "thawing the guest's file systems");
                if taken.is_ok() {
                    let _ = self.hv.delete_snapshot_live(&b.instance, &name).await;
                    return Err(e.into());
                }
            }
        }
        taken?;
        let copied = self
            .pool(&vol.pool)?
            .qemu_img()
            .convert_snapshot(path, &name, scratch)
            .await;
        // The momentary snapshot goes whatever the copy did.
        if let Err(e) = self.hv.delete_snapshot_live(&b.instance, &name).await {
            tracing::warn!(instance = %b.instance, error = %e, "removing a backup's momentary snapshot");
        }
        copied.map_err(OpError::from)
    }

    /// Replaces the volume's content with volume snapshot `r.snapshot`.
    pub async fn restore_volume(
        &self,
        r: &pb::RestoreVolume,
        src: &dyn TemplateSource,
    ) -> Result<(), OpError> {
        let vol = volume_of(&r.volume, "restore")?;
        if self.instance_running(&r.instance).await? {
            return Err(OpError::Invalid(format!(
                "instance {} is running; its volume {} is not replaced under it",
                r.instance, vol.uuid
            )));
        }
        let pool = self.pool(&vol.pool)?;
        pool.replace_filled(&vol.uuid, |part| async move {
            fetch_snapshot_into(src, pool.qemu_img(), &r.snapshot, &part).await
        })
        .await?;
        Ok(())
    }

    /// A data volume's file: from its volume snapshot when it names one
    /// (grown to its size when that is larger), else empty.
    pub async fn create_data_volume(
        &self,
        v: &pb::VolumeSpec,
        src: &dyn TemplateSource,
    ) -> Result<(), OpError> {
        let pool = self.pool(&v.pool)?;
        if v.from_snapshot.is_empty() {
            pool.create_data(&v.uuid, v.size_bytes).await?;
            return Ok(());
        }
        let snapshot = v.from_snapshot.clone();
        let size = v.size_bytes;
        pool.create_filled(&v.uuid, |part| async move {
            fetch_snapshot_into(src, pool.qemu_img(), &snapshot, &part).await?;
            let info = pool
                .qemu_img()
                .info(&part, Some(ImageFormat::Qcow2))
                .await?;
            if info.virtual_size < size {
                pool.qemu_img()
                    .resize(&part, ImageFormat::Qcow2, size, false)
                    .await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// Writes volume snapshot `uuid` from secondary storage into `path` and
/// checks that it is a plain qcow2 (no backing file to follow).
async fn fetch_snapshot_into(
    src: &dyn TemplateSource,
    qemu_img: &QemuImg,
    uuid: &str,
    path: &std::path::Path,
) -> Result<(), StorageError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| StorageError::io(path, e))?;
    let mut file = src
        .fetch_snapshot(uuid, file)
        .await
        .map_err(|source| StorageError::Fetch {
            uuid: uuid.to_string(),
            source,
        })?;
    file.flush().await.map_err(|e| StorageError::io(path, e))?;
    file.sync_all()
        .await
        .map_err(|e| StorageError::io(path, e))?;
    // Whoever wrote it, a backing file it names could be any file of this
    // host: such an image is refused, as a template would be.
    let info = qemu_img.info(path, Some(ImageFormat::Qcow2)).await?;
    if let Some(b) = info.backing {
        return Err(StorageError::UnsafeImage {
            uuid: uuid.to_string(),
            reason: format!("the snapshot names a backing file ({})", b.display()),
        });
    }
    Ok(())
}
