//! Snapshot policies: recurring volume snapshots, one policy per volume and
//! interval type (creating another of the same interval updates it, as in
//! CloudStack), run by the scheduler's tick.
//!
//! Restart safety as for instance schedules: each policy's next due time is
//! persisted and moved on in the same commit that records the firing, so a
//! firing is never repeated; after downtime the latest missed time runs
//! once if it is within the catch-up grace (five minutes) and is skipped
//! with an event otherwise; either way the policy then waits for its next
//! future time. After every recurring snapshot the oldest snapshots of that
//! interval beyond `maxsnaps` (and `snapshot.max.<interval>`) are removed;
//! manual snapshots are never counted or removed.

use super::snapshots::{NewSnapshot, BACKED_UP, DESTROYED};
use super::*;
use chrono::{DateTime, Utc};
use orrery_schedule::interval::{IntervalSchedule, IntervalType, PolicyTick};

/// createSnapshotPolicy's request.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub interval_type: String,
    pub schedule: String,
    pub timezone: String,
    pub max_snaps: i64,
    pub for_display: bool,
}

fn volume_desc(v: &Volume) -> String {
    format!(
        "Volume {{\"id\":{},\"name\":\"{}\",\"uuid\":\"{}\"}}",
        v.id, v.name, v.uuid
    )
}

/// The policy's schedule, parsed; a stored one that no longer parses
/// (edited by hand) is an internal error.
pub fn plan_of(p: &SnapshotPolicy) -> SResult<(IntervalSchedule, orrery_schedule::Tz)> {
    let interval = IntervalType::parse(&p.interval_type)
        .ok_or_else(|| ServiceError::internal(format!("policy {} has a bad interval", p.uuid)))?;
    let s = IntervalSchedule::parse(interval, &p.schedule)
        .map_err(|e| ServiceError::internal(format!("policy {}: {e}", p.uuid)))?;
    let tz = p
        .timezone
        .parse()
        .map_err(|_| ServiceError::internal(format!("policy {} has a bad time zone", p.uuid)))?;
    Ok((s, tz))
}

impl Service {
    fn max_for(&self, interval: IntervalType) -> i64 {
        self.setting_i64(&format!(
            "snapshot.max.{}",
            interval.as_str().to_ascii_lowercase()
        ))
    }

    pub async fn create_snapshot_policy(
        &self,
        caller: &Caller,
        vol: &Volume,
        req: NewPolicy,
    ) -> SResult<SnapshotPolicy> {
        self.check_owned(caller, vol).await?;
        let interval = IntervalType::parse(&req.interval_type).ok_or_else(|| {
            ServiceError::invalid(format!("Unsupported interval type {}", req.interval_type))
        })?;
        if req.for_display && vol.state != "Ready" {
            return Err(ServiceError::invalid(format!(
                "VolumeId: {} is not in Ready state but {}. Cannot take snapshot.",
                vol.uuid, vol.state
            )));
        }
        let sched = IntervalSchedule::parse(interval, &req.schedule).map_err(|e| {
            ServiceError::invalid(format!(
                "{} has an invalid schedule [{}] for interval type [{}]: {e}.",
                volume_desc(vol),
                req.schedule,
                interval.as_str()
            ))
        })?;
        let tz: orrery_schedule::Tz = req.timezone.trim().parse().map_err(|_| {
            ServiceError::invalid(format!(
                "Invalid value for parameter timezone: {} is not an IANA time zone",
                req.timezone
            ))
        })?;
        if req.max_snaps <= 0 {
            return Err(ServiceError::invalid(format!(
                "maxSnaps [{}] for volume {} should be greater than 0.",
                req.max_snaps,
                volume_desc(vol)
            )));
        }
        let limit = self.max_for(interval);
        if req.max_snaps > limit {
            return Err(ServiceError::invalid(format!(
                "maxSnaps [{}] for volume {} exceeds limit [{limit}] for interval type [{}].",
                req.max_snaps,
                volume_desc(vol),
                interval.as_str()
            )));
        }
        let next = sched.next_after(tz, self.clock_now()).timestamp();
        let existing: Option<SnapshotPolicy> = self
            .store
            .first(
                Query::new()
                    .eq(Col::Parent, vol.id)
                    .eq(Col::Ukey, format!("{}/{}", vol.id, interval.as_str())),
            )
            .await?;
        let mut tx = Tx::new();
        let policy = match existing {
            Some(mut p) => {
                p.schedule = req.schedule.trim().to_string();
                p.timezone = tz.name().to_string();
                p.max_snaps = req.max_snaps;
                p.for_display = req.for_display;
                p.next_due = Some(next);
                tx.update(&mut p);
                p
            }
            None => {
                let p = SnapshotPolicy {
                    id: self.store.new_id::<SnapshotPolicy>().await?,
                    uuid: new_uuid(),
                    version: 0,
                    volume_id: vol.id,
                    account_id: vol.account_id,
                    domain_id: vol.domain_id,
                    interval_type: interval.as_str().into(),
                    schedule: req.schedule.trim().to_string(),
                    timezone: tz.name().to_string(),
                    max_snaps: req.max_snaps,
                    for_display: req.for_display,
                    next_due: Some(next),
                    last_fired: None,
                    created: now(),
                };
                tx.insert(&p);
                p
            }
        };
        self.event(
            &mut tx,
            caller,
            "SNAPSHOTPOLICY.CREATE",
            format!(
                "Snapshot policy {} of volume {}: {} {} ({})",
                policy.uuid, vol.uuid, policy.interval_type, policy.schedule, policy.timezone
            ),
            vol.account_id,
            vol.domain_id,
            Some((&policy.uuid, "SnapshotPolicy", &policy.interval_type)),
        );
        self.store.commit(tx.ops).await?;
        Ok(policy)
    }

    /// The policies of a volume (or the one named), as the caller may see.
    pub async fn list_snapshot_policies(
        &self,
        caller: &Caller,
        vol: Option<&Volume>,
        id: Option<&str>,
    ) -> SResult<Vec<SnapshotPolicy>> {
        let mut q = Query::new();
        match (vol, id) {
            (_, Some(id)) => {
                let p: SnapshotPolicy = self.owned(caller, "id", id).await?;
                q = q.eq(Col::Id, p.id);
            }
            (Some(v), None) => {
                self.check_owned(caller, v).await?;
                q = q.eq(Col::Parent, v.id);
            }
            (None, None) => {
                return Err(ServiceError::invalid(
                    "Either parameter volumeid or id is required",
                ))
            }
        }
        let mut all: Vec<SnapshotPolicy> = self.store.all(q).await?;
        if !caller.is_admin() {
            all.retain(|p| p.for_display);
        }
        Ok(all)
    }

    /// updateSnapshotPolicy: whether users see it (and it runs).
    pub async fn update_snapshot_policy(
        &self,
        caller: &Caller,
        mut p: SnapshotPolicy,
        for_display: Option<bool>,
    ) -> SResult<SnapshotPolicy> {
        self.check_owned(caller, &p).await?;
        if let Some(d) = for_display {
            p.for_display = d;
            let (sched, tz) = plan_of(&p)?;
            p.next_due = d.then(|| sched.next_after(tz, self.clock_now()).timestamp());
            let mut tx = Tx::new();
            tx.update(&mut p);
            self.event(
                &mut tx,
                caller,
                "SNAPSHOTPOLICY.UPDATE",
                format!("Updated snapshot policy {}", p.uuid),
                p.account_id,
                p.domain_id,
                None,
            );
            self.store.commit(tx.ops).await?;
        }
        Ok(p)
    }

    /// Deletes policies; their snapshots stay.
    pub async fn delete_snapshot_policies(&self, caller: &Caller, uuids: &[String]) -> SResult<()> {
        if uuids.is_empty() {
            return Err(ServiceError::invalid(
                "No policy id (or list of ids) specified.",
            ));
        }
        let mut found = Vec::new();
        for u in uuids {
            let p: SnapshotPolicy = self.owned(caller, "id", u).await.map_err(|_| {
                ServiceError::invalid(format!("Policy id given: {u} does not exist"))
            })?;
            found.push(p);
        }
        let mut tx = Tx::new();
        for p in &found {
            tx.delete::<SnapshotPolicy>(p.id);
            self.event(
                &mut tx,
                caller,
                "SNAPSHOTPOLICY.DELETE",
                format!("Deleted snapshot policy {}", p.uuid),
                p.account_id,
                p.domain_id,
                None,
            );
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Fires the policies due at `now`; the number of snapshots started.
    pub async fn snapshot_policy_tick(self: &Arc<Self>, now: DateTime<Utc>) -> SResult<usize> {
        let due: Vec<SnapshotPolicy> = self
            .store
            .all(Query::new().and(Cond::Le(
                Col::NextDue,
                format!("{:012}", now.timestamp()).into(),
            )))
            .await?;
        let system = self.identity.system_caller().await?;
        let mut started = 0;
        for mut p in due {
            let Some(at) = p.next_due else { continue };
            let vol: Option<Volume> = self.store.load(p.volume_id).await?;
            let Some(vol) = vol.filter(|v| v.removed.is_none() && v.state != "Destroy") else {
                // Its volume is gone: so is the policy.
                let mut tx = Tx::new();
                tx.delete::<SnapshotPolicy>(p.id);
                self.store.commit(tx.ops).await?;
                continue;
            };
            let (sched, tz) = plan_of(&p)?;
            let at = chrono::TimeZone::timestamp_opt(&Utc, at, 0)
                .single()
                .unwrap_or(now);
            let (due, next, fire) =
                match sched.tick(tz, at, now, orrery_schedule::plan::default_catch_up_grace()) {
                    PolicyTick::Pending => continue,
                    PolicyTick::Fire { due, next } => (due, next, true),
                    PolicyTick::Skip { due, next } => (due, next, false),
                };
            // Moved on before the snapshot is asked for: a restart in
            // between never fires it twice.
            p.last_fired = Some(due.timestamp());
            p.next_due = Some(next.timestamp());
            let mut tx = Tx::new();
            tx.update(&mut p);
            if !fire {
                self.event(
                    &mut tx,
                    &system,
                    "SNAPSHOT.CREATE",
                    format!(
                        "Skipped the recurring snapshot of volume {} due at {} (policy {}): the coordinator was not running then",
                        vol.uuid,
                        due.to_rfc3339(),
                        p.uuid
                    ),
                    vol.account_id,
                    vol.domain_id,
                    Some((&vol.uuid, "Volume", &vol.name)),
                );
            }
            match self.store.commit(tx.ops).await {
                Ok(()) => {}
                // Changed meanwhile (updated, deleted): the next tick sees it.
                Err(crate::store::StoreError::Conflict(..)) => continue,
                Err(e) => return Err(e.into()),
            }
            if !fire {
                continue;
            }
            let req = NewSnapshot {
                name: None,
                quiesce: false,
                policy: Some(p.clone()),
            };
            match self.create_snapshot(&system, &vol, req).await {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::warn!(policy = %p.uuid, volume = %vol.uuid, error = %e, "recurring snapshot not taken");
                    let mut tx = Tx::new();
                    tx.insert(&Event {
                        id: 0,
                        uuid: new_uuid(),
                        version: 0,
                        event_type: "SNAPSHOT.CREATE".into(),
                        level: "ERROR".into(),
                        description: format!(
                            "Recurring snapshot of volume {} (policy {}) not taken: {}",
                            vol.uuid,
                            p.uuid,
                            e.text()
                        ),
                        state: "Completed".into(),
                        account_id: vol.account_id,
                        domain_id: vol.domain_id,
                        user_id: system.user.id,
                        resource_uuid: Some(vol.uuid.clone()),
                        resource_type: Some("Volume".into()),
                        resource_name: Some(vol.name.clone()),
                        created: now.timestamp(),
                    });
                    self.store.commit(tx.ops).await?;
                }
            }
        }
        Ok(started)
    }

    /// Removes the oldest snapshots a policy took beyond its maximum.
    pub(crate) async fn keep_policy_snapshots(&self, policy_id: i64) -> SResult<()> {
        let Some(p) = self.store.load::<SnapshotPolicy>(policy_id).await? else {
            return Ok(());
        };
        let interval = IntervalType::parse(&p.interval_type)
            .ok_or_else(|| ServiceError::internal("policy with a bad interval"))?;
        let max = p.max_snaps.min(self.max_for(interval)).max(1) as usize;
        let mut snaps: Vec<Snapshot> = self
            .store
            .all::<Snapshot>(
                Query::new()
                    .eq(Col::Parent, p.volume_id)
                    .eq(Col::SnapshotType, p.interval_type.clone()),
            )
            .await?
            .into_iter()
            .filter(|s| s.removed.is_none() && s.state != DESTROYED && s.state == BACKED_UP)
            .collect();
        snaps.sort_by_key(|s| (s.created, s.id));
        while snaps.len() > max {
            let oldest = snaps.remove(0);
            let uuid = oldest.uuid.clone();
            self.destroy_snapshot(oldest, "Successfully deleted oldest snapshot:")
                .await?;
            tracing::info!(snapshot = %uuid, policy = %p.uuid, "removed beyond maxsnaps");
        }
        Ok(())
    }
}
