//! Volumes: the ROOT volume of each instance and data volumes.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::api::views::{self, Lookup};
use crate::cmd;
use crate::service::volumes::NewVolume;
use crate::service::volumes::VolumeFilter;

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "listVolumes",
            "Lists volumes; an instance's ROOT volume comes first.",
            false,
            All,
            &[
                opt("id", "uuid", "volume"),
                opt("ids", "list", "several volumes"),
                opt("virtualmachineid", "uuid", "instance"),
                opt("type", "string", "ROOT or DATADISK"),
                opt("name", "string", "name"),
                opt("keyword", "string", "text in the name"),
                opt("zoneid", "uuid", "zone"),
                opt("listall", "boolean", "all visible"),
                opt("account", "string", "owner"),
                opt("domainid", "uuid", "domain"),
                opt("showicon", "boolean", "include each volume's icon"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            VOLUME_FIELDS,
            list_volumes
        ),
        cmd!(
            "createVolume",
            "Creates a data volume from a disk offering or a volume snapshot, optionally attaching it.",
            true,
            All,
            &[
                opt("name", "string", "volume name"),
                opt(
                    "diskofferingid",
                    "uuid",
                    "disk offering; required unless snapshotid is given"
                ),
                opt(
                    "snapshotid",
                    "uuid",
                    "volume snapshot the new volume starts from"
                ),
                opt("size", "long", "size in GB, for a custom disk offering"),
                opt(
                    "zoneid",
                    "uuid",
                    "zone; required unless virtualmachineid is given"
                ),
                opt(
                    "virtualmachineid",
                    "uuid",
                    "instance to attach the new volume to"
                ),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain")
            ],
            VOLUME_FIELDS,
            create_volume
        ),
        cmd!(
            "attachVolume",
            "Attaches a data volume to an instance.",
            true,
            All,
            &[
                req("id", "uuid", "volume"),
                req("virtualmachineid", "uuid", "instance"),
                opt("deviceid", "long", "device id; 3 is the CD-ROM's")
            ],
            VOLUME_FIELDS,
            attach_volume
        ),
        cmd!(
            "detachVolume",
            "Detaches a data volume from its instance.",
            true,
            All,
            &[
                opt("id", "uuid", "volume"),
                opt("virtualmachineid", "uuid", "instance, with deviceid"),
                opt("deviceid", "long", "device id, with virtualmachineid")
            ],
            VOLUME_FIELDS,
            detach_volume
        ),
        cmd!(
            "resizeVolume",
            "Resizes a volume to a new size or disk offering.",
            true,
            All,
            &[
                req("id", "uuid", "volume"),
                opt("size", "long", "new size in GB"),
                opt("diskofferingid", "uuid", "new disk offering"),
                opt("shrinkok", "boolean", "allow making the volume smaller")
            ],
            VOLUME_FIELDS,
            resize_volume
        ),
        cmd!(
            "migrateVolume",
            "Moves a running instance's volume to a pool of another host, the instance going along (livemigrate=true).",
            true,
            RootAdmin,
            &[
                req("volumeid", "uuid", "volume"),
                req("storageid", "uuid", "destination storage pool"),
                opt("livemigrate", "boolean", "move while the instance runs")
            ],
            VOLUME_FIELDS,
            migrate_volume
        ),
        cmd!(
            "deleteVolume",
            "Deletes a detached data volume.",
            false,
            All,
            &[req("id", "uuid", "volume")],
            &[f("success", "boolean", "true")],
            delete_volume
        ),
    ]
}

async fn load_volume(ctx: &Ctx, param: &str) -> Result<Volume, ApiError> {
    let id = ctx.p.required(param)?;
    Ok(ctx.svc.owned::<Volume>(&ctx.caller, param, id).await?)
}

fn size_gb(ctx: &Ctx) -> Result<Option<i64>, ApiError> {
    ctx.p.i64("size")
}

async fn create_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let snapshot: Option<Snapshot> = match ctx.p.str("snapshotid") {
        Some(u) => Some(
            ctx.svc
                .volume_snapshot(&ctx.caller, "snapshotid", u)
                .await?,
        ),
        None => None,
    };
    let offering: Option<DiskOffering> = match ctx.p.str("diskofferingid") {
        Some(u) => Some(
            ctx.svc
                .catalog
                .visible_offering(&ctx.caller, "diskofferingid", u)
                .await?,
        ),
        None if snapshot.is_some() => None,
        None => return Err(ApiError::missing("createVolume", "diskofferingid")),
    };
    let vm: Option<Vm> = match ctx.p.str("virtualmachineid") {
        Some(id) => Some(ctx.svc.owned(&ctx.caller, "virtualmachineid", id).await?),
        None => None,
    };
    let zone: Zone = match (ctx.p.str("zoneid"), &vm) {
        (Some(z), _) => ctx.svc.by_uuid("zoneid", z).await?,
        (None, None) if snapshot.is_some() => ctx
            .svc
            .load_cached(snapshot.as_ref().map(|s| s.zone_id).unwrap_or(0))
            .await?
            .ok_or_else(|| ApiError::internal("zone vanished"))?,
        (None, Some(vm)) => ctx
            .svc
            .load_cached(vm.zone_id)
            .await?
            .ok_or_else(|| ApiError::internal("zone vanished"))?,
        (None, None) => return Err(ApiError::missing("createVolume", "zoneid")),
    };
    let owner = match &vm {
        Some(vm) => ctx
            .svc
            .load_cached::<Account>(vm.account_id)
            .await?
            .ok_or_else(|| ApiError::internal("account vanished"))?,
        None => owner(&ctx).await?,
    };
    let (vol, job) = ctx
        .svc
        .create_volume(
            &ctx.caller,
            NewVolume {
                owner,
                zone,
                offering,
                from_snapshot: snapshot,
                size_gb: size_gb(&ctx)?,
                name: ctx.p.string("name"),
                attach_to: vm,
                device_id: None,
            },
        )
        .await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: Some(vol.uuid),
    })
}

async fn attach_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol = load_volume(&ctx, "id").await?;
    let vm: Vm = ctx
        .svc
        .owned(
            &ctx.caller,
            "virtualmachineid",
            ctx.p.required("virtualmachineid")?,
        )
        .await?;
    let job = ctx
        .svc
        .attach_volume(&ctx.caller, &vol, &vm, ctx.p.i64("deviceid")?)
        .await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn detach_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol = if ctx.p.has("id") {
        load_volume(&ctx, "id").await?
    } else {
        let (Some(vm_id), Some(dev)) = (ctx.p.str("virtualmachineid"), ctx.p.i64("deviceid")?)
        else {
            return Err(ApiError::param(
                "Either parameter id or both virtualmachineid and deviceid are required",
            ));
        };
        ctx.svc.volume_at_device(&ctx.caller, vm_id, dev).await?
    };
    let job = ctx.svc.detach_volume(&ctx.caller, &vol).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn resize_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol = load_volume(&ctx, "id").await?;
    let offering: Option<DiskOffering> = match ctx.p.str("diskofferingid") {
        Some(u) => Some(
            ctx.svc
                .catalog
                .visible_offering(&ctx.caller, "diskofferingid", u)
                .await?,
        ),
        None => None,
    };
    let job = ctx
        .svc
        .resize_volume(
            &ctx.caller,
            &vol,
            size_gb(&ctx)?,
            offering,
            ctx.p.bool_or("shrinkok", false),
        )
        .await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn delete_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol = load_volume(&ctx, "id").await?;
    ctx.svc.delete_volume(&ctx.caller, vol).await?;
    Ok(Reply::Success(None))
}

const VOLUME_FIELDS: &[Field] = &[
    f("id", "string", "the volume ID"),
    f("name", "string", "the volume name"),
    f("type", "string", "ROOT or DATADISK"),
    f("size", "long", "the size in bytes"),
    f("state", "string", "the volume state"),
    f(
        "virtualmachineid",
        "string",
        "the instance it is attached to",
    ),
];

pub(crate) async fn list_volumes(ctx: Ctx) -> Result<Reply, ApiError> {
    let (vols, total) = query_volumes(&ctx).await?;
    let mut l = Lookup::new(&ctx.svc);
    let mut items = Vec::new();
    for v in &vols {
        items.push(views::volume(&mut l, &ctx.caller, v).await?);
    }
    let items = super::ui::with_icons(&ctx, "Volume", items).await?;
    Ok(Reply::List("volume", items, total))
}

/// The page of volumes listVolumes' filters select for the caller, and the
/// total.
pub(super) async fn query_volumes(ctx: &Ctx) -> Result<(Vec<Volume>, u64), ApiError> {
    let f = VolumeFilter {
        id: ctx.p.string("id"),
        ids: ctx.p.list("ids"),
        vm: ctx.p.string("virtualmachineid"),
        volume_type: ctx.p.string("type"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        zone: ctx.p.string("zoneid"),
        page: paging(ctx)?,
    };
    Ok(ctx
        .svc
        .list_volumes(&ctx.caller, &scope_of(ctx), &f)
        .await?)
}

async fn migrate_volume(ctx: Ctx) -> Result<Reply, ApiError> {
    let job = ctx
        .svc
        .migrate_volume(
            &ctx.caller,
            ctx.p.required("volumeid")?,
            ctx.p.required("storageid")?,
            ctx.p.bool_or("livemigrate", false),
        )
        .await?;
    Ok(Reply::Async { job, id: None })
}
