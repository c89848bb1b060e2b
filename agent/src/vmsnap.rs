//! Instance snapshots on this host: a named internal snapshot inside each of
//! the instance's qcow2 volumes (with the guest's memory in the first one
//! when asked). Which of them exist and how they relate is the
//! coordinator's record; the host only makes, applies and removes them.
//!
//! Running instance: through the hypervisor (libvirt's snapshot with
//! memory, or one atomic transaction over the disks, the guest's file
//! systems frozen around it when a quiesce is asked). Stopped instance:
//! `qemu-img snapshot` on each volume file, which refuses an image a QEMU
//! still holds.

use orrery_proto::v1 as pb;

use crate::hypervisor::{HvError, Power};
use crate::ops::{OpError, Ops};
use crate::storage::SnapshotAction;

/// Whether the domain runs now; a domain this host does not have is off.
async fn running(ops: &Ops, name: &str) -> Result<bool, OpError> {
    match ops.hv.power(name).await {
        Ok(Power::Off) | Err(HvError::NotFound(_)) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

fn check_name(snap: &str) -> Result<(), OpError> {
    // The name goes into qemu-img's arguments and libvirt's XML: keep it
    // to what the coordinator generates.
    let ok = snap.starts_with(|c: char| c.is_ascii_alphanumeric())
        && snap.len() <= 128
        && snap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OpError::Invalid(format!("unusable snapshot name {snap:?}")))
    }
}

impl Ops {
    /// Takes snapshot `op.snapshot`; with memory, returns the hypervisor's
    /// record of it.
    pub async fn create_vm_snapshot(
        &self,
        op: &pb::VmSnapshotOp,
    ) -> Result<Option<String>, OpError> {
        check_name(&op.snapshot)?;
        let live = running(self, &op.instance).await?;
        if op.memory {
            if !live {
                return Err(OpError::Invalid(format!(
                    "instance {} is not running; a snapshot with memory needs a running instance",
                    op.instance
                )));
            }
            return Ok(Some(
                self.hv
                    .snapshot_with_memory(&op.instance, &op.snapshot)
                    .await?,
            ));
        }
        if live {
            if op.quiesce {
                self.hv.fs_freeze(&op.instance, true).await?;
            }
            let taken = self.hv.snapshot_disks(&op.instance, &op.snapshot).await;
            if op.quiesce {
                // Thawed whatever happened: a guest left frozen stops
                // writing for good.
                if let Err(e) = self.hv.fs_freeze(&op.instance, false).await {
                    tracing::error!(instance = %op.instance, error = %e, "thawing the guest's file systems");
                    if taken.is_ok() {
                        return Err(e.into());
                    }
                }
            }
            taken?;
            return Ok(None);
        }
        // Stopped: each volume file on its own. Nothing runs, so they
        // cannot drift apart; a failure part-way removes what was made.
        let mut done = Vec::new();
        for v in &op.volumes {
            let pool = self.pool(&v.pool)?;
            // A leftover of an earlier attempt under the same name would
            // make two snapshots of one name (qemu-img allows that).
            if pool.volume_snapshots(&v.uuid).await?.contains(&op.snapshot) {
                pool.snapshot_volume(&v.uuid, SnapshotAction::Delete, &op.snapshot)
                    .await?;
            }
            match pool
                .snapshot_volume(&v.uuid, SnapshotAction::Create, &op.snapshot)
                .await
            {
                Ok(()) => done.push(v),
                Err(e) => {
                    for d in done {
                        if let Ok(p) = self.pool(&d.pool) {
                            let _ = p
                                .snapshot_volume(&d.uuid, SnapshotAction::Delete, &op.snapshot)
                                .await;
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// Reverts to snapshot `op.snapshot`: with memory on the running
    /// domain (it runs on in the saved state), disks only on a domain that
    /// is off (it stays off).
    pub async fn revert_vm_snapshot(&self, op: &pb::VmSnapshotOp) -> Result<(), OpError> {
        check_name(&op.snapshot)?;
        let live = running(self, &op.instance).await?;
        if op.memory {
            if !live {
                return Err(OpError::Invalid(format!(
                    "instance {} is not running; it is started before a revert with memory",
                    op.instance
                )));
            }
            self.hv
                .revert_with_memory(&op.instance, &op.snapshot, &op.saved)
                .await?;
            return Ok(());
        }
        if live {
            return Err(OpError::Invalid(format!(
                "instance {} is running; it is stopped before a revert of its disks",
                op.instance
            )));
        }
        // Every volume must have it before any is touched, so a revert
        // never leaves the disks at different points in time.
        for v in &op.volumes {
            let pool = self.pool(&v.pool)?;
            if !pool.volume_snapshots(&v.uuid).await?.contains(&op.snapshot) {
                return Err(OpError::Invalid(format!(
                    "volume {} has no snapshot {}",
                    v.uuid, op.snapshot
                )));
            }
        }
        for v in &op.volumes {
            self.pool(&v.pool)?
                .snapshot_volume(&v.uuid, SnapshotAction::Apply, &op.snapshot)
                .await?;
        }
        Ok(())
    }

    /// Removes snapshot `op.snapshot` from every volume that has it.
    pub async fn delete_vm_snapshot(&self, op: &pb::VmSnapshotOp) -> Result<(), OpError> {
        check_name(&op.snapshot)?;
        if running(self, &op.instance).await? {
            self.hv
                .delete_snapshot_live(&op.instance, &op.snapshot)
                .await?;
            return Ok(());
        }
        for v in &op.volumes {
            let pool = self.pool(&v.pool)?;
            let path = pool.volume_path(&v.uuid)?;
            if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
                continue;
            }
            if pool.volume_snapshots(&v.uuid).await?.contains(&op.snapshot) {
                pool.snapshot_volume(&v.uuid, SnapshotAction::Delete, &op.snapshot)
                    .await?;
            }
        }
        match self.hv.forget_snapshot(&op.instance, &op.snapshot).await {
            Ok(()) | Err(HvError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_to_what_the_coordinator_makes() {
        assert!(check_name("i-2-10-VM_VS_20261207083000").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("../x").is_err());
        assert!(check_name("-c").is_err());
    }
}
