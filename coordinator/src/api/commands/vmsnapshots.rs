//! Instance snapshots (createVMSnapshot, listVMSnapshot, revertToVMSnapshot,
//! deleteVMSnapshot) and restoring an instance's root volume
//! (restoreVirtualMachine).

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::api::views::{self, Lookup};
use crate::cmd;
use crate::service::restore::RestoreRequest;
use crate::service::vmsnapshots::{NewVmSnapshot, VmSnapshotFilter};

const SNAPSHOT_FIELDS: &[Field] = &[
    f("id", "string", "the snapshot's ID"),
    f(
        "name",
        "string",
        "internal name, <instance>_VS_<time>, also its name in the volumes",
    ),
    f("displayname", "string", "the name given at creation"),
    f("description", "string", "description"),
    f(
        "state",
        "string",
        "Allocated, Creating, Ready, Reverting, Expunging or Error",
    ),
    f("type", "string", "Disk or DiskAndMemory"),
    f(
        "current",
        "boolean",
        "whether the instance's state last came from or was saved to it",
    ),
    f("parent", "string", "ID of the snapshot it was taken after"),
    f("parentName", "string", "display name of that snapshot"),
    f("created", "date", "when it was taken"),
    f("virtualmachineid", "string", "the instance"),
    f("virtualmachinename", "string", "the instance's name"),
    f("hypervisor", "string", "the instance's hypervisor"),
    f("zoneid", "string", "zone ID"),
    f("zonename", "string", "zone name"),
    f("account", "string", "owner account"),
    f("domainid", "string", "owner domain ID"),
    f("domain", "string", "owner domain"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createVMSnapshot",
            "Takes a snapshot of all of an instance's volumes, with its memory when asked.",
            true,
            All,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                opt("name", "string", "display name; the internal name when empty").len(255),
                opt("description", "string", "description").len(255),
                opt(
                    "snapshotmemory",
                    "boolean",
                    "include the running guest's memory (default false)"
                ),
                opt(
                    "quiescevm",
                    "boolean",
                    "freeze the guest's file systems through its guest agent around a disk-only snapshot of a running instance (default false)"
                )
            ],
            SNAPSHOT_FIELDS,
            create
        ),
        cmd!(
            "listVMSnapshot",
            "Lists instance snapshots, newest first.",
            false,
            All,
            &[
                opt("vmsnapshotid", "uuid", "one snapshot"),
                opt("vmsnapshotids", "list", "several snapshots"),
                opt("virtualmachineid", "uuid", "the snapshots of this instance"),
                opt("name", "string", "display name"),
                opt("state", "string", "only this state"),
                opt("account", "string", "owner account, with domainid"),
                opt("domainid", "uuid", "owner domain"),
                opt("isrecursive", "boolean", "with subdomains"),
                opt("listall", "boolean", "all the caller may see"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            SNAPSHOT_FIELDS,
            list
        ),
        cmd!(
            "revertToVMSnapshot",
            "Reverts an instance to a snapshot: a Running one to a snapshot with memory, a Stopped one to a disk-only snapshot.",
            true,
            All,
            &[req("vmsnapshotid", "uuid", "the snapshot")],
            &[f("id", "string", "the instance (virtualmachine)")],
            revert
        ),
        cmd!(
            "deleteVMSnapshot",
            "Deletes an instance snapshot; its children hang from its parent.",
            true,
            All,
            &[req("vmsnapshotid", "uuid", "the snapshot")],
            &[f("success", "boolean", "true")],
            delete
        ),
        Command {
            response_key: Some("restorevmresponse"),
            ..cmd!(
                "restoreVirtualMachine",
                "Gives an instance a new root volume from its template or another one; a Running instance runs again afterwards.",
                true,
                All,
                &[
                    req("virtualmachineid", "uuid", "the instance"),
                    opt("templateid", "uuid", "the template; its current one when left out"),
                    opt("diskofferingid", "uuid", "disk offering of the new root volume"),
                    opt(
                        "rootdisksize",
                        "long",
                        "size of the new root volume in GB, at least the template's"
                    ),
                    opt(
                        "details",
                        "map",
                        "details[0].rootdisksize wins over rootdisksize"
                    ),
                    opt(
                        "expunge",
                        "boolean",
                        "remove the old root volume at once (default false: it is destroyed and expunged later)"
                    )
                ],
                &[f("id", "string", "the instance (virtualmachine)")],
                restore
            )
        },
    ]
}

async fn restore(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm: Vm = ctx
        .svc
        .owned(
            &ctx.caller,
            "virtualmachineid",
            ctx.p.required("virtualmachineid")?,
        )
        .await?;
    let template: Option<Template> = match ctx.p.str("templateid") {
        Some(u) => Some(ctx.svc.by_uuid("templateid", u).await?),
        None => None,
    };
    let disk_offering: Option<DiskOffering> = match ctx.p.str("diskofferingid") {
        Some(u) => Some(
            ctx.svc
                .catalog
                .visible_offering(&ctx.caller, "diskofferingid", u)
                .await?,
        ),
        None => None,
    };
    let details = ctx.p.map_merged("details");
    let root_disk_size_gb = match details.get("rootdisksize") {
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            ApiError::param(format!(
                "Invalid value for parameter details[0].rootdisksize: {v} is not a whole number of GB"
            ))
        })?),
        None => ctx.p.i64("rootdisksize")?,
    };
    let req = RestoreRequest {
        template,
        disk_offering,
        root_disk_size_gb,
        expunge: ctx.p.bool_or("expunge", false),
    };
    let job = ctx.svc.restore_vm(&ctx.caller, &vm, req).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn create(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm: Vm = ctx
        .svc
        .owned(
            &ctx.caller,
            "virtualmachineid",
            ctx.p.required("virtualmachineid")?,
        )
        .await?;
    let req = NewVmSnapshot {
        display_name: ctx.p.string("name"),
        description: ctx.p.string("description"),
        memory: ctx.p.bool_or("snapshotmemory", false),
        quiesce: ctx.p.bool_or("quiescevm", false),
    };
    let (job, snap) = ctx.svc.create_vm_snapshot(&ctx.caller, &vm, &req).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: Some(snap.uuid),
    })
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    if ctx.p.has("vmsnapshotid") && ctx.p.has("vmsnapshotids") {
        return Err(ApiError::param(
            "vmsnapshotid and vmsnapshotids cannot be given together",
        ));
    }
    let f = VmSnapshotFilter {
        id: ctx.p.string("vmsnapshotid"),
        ids: ctx.p.list("vmsnapshotids"),
        vm: ctx.p.string("virtualmachineid"),
        name: ctx.p.string("name"),
        state: ctx.p.string("state"),
        keyword: ctx.p.string("keyword"),
        page: paging(&ctx)?,
    };
    let mut scope = scope_of(&ctx);
    scope.by_id = ctx.p.has("vmsnapshotid");
    let (items, total) = ctx.svc.list_vm_snapshots(&ctx.caller, &scope, &f).await?;
    let mut l = Lookup::new(&ctx.svc);
    let mut out = Vec::new();
    for s in &items {
        out.push(views::vm_snapshot(&mut l, s).await?);
    }
    // CloudStack names the list's items in camel case here.
    Ok(Reply::List("vmSnapshot", out, total))
}

async fn revert(ctx: Ctx) -> Result<Reply, ApiError> {
    let s = ctx
        .svc
        .vm_snapshot(&ctx.caller, "vmsnapshotid", ctx.p.required("vmsnapshotid")?)
        .await?;
    let job = ctx.svc.revert_vm_snapshot(&ctx.caller, &s).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn delete(ctx: Ctx) -> Result<Reply, ApiError> {
    let s = ctx
        .svc
        .vm_snapshot(&ctx.caller, "vmsnapshotid", ctx.p.required("vmsnapshotid")?)
        .await?;
    let job = ctx.svc.delete_vm_snapshot(&ctx.caller, &s).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}
