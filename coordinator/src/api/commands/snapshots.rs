//! Volume snapshots (createSnapshot, listSnapshots, deleteSnapshot,
//! revertSnapshot), snapshot policies (createSnapshotPolicy,
//! listSnapshotPolicies, updateSnapshotPolicy, deleteSnapshotPolicies) and
//! templates made from a snapshot or a volume (createTemplate).

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::api::views::{self, Lookup};
use crate::cmd;
use crate::service::jobs::JobOutput;
use crate::service::snapshot_policies::NewPolicy;
use crate::service::snapshots::{NewPrivateTemplate, NewSnapshot, SnapshotFilter};

const SNAP_FIELDS: &[Field] = &[
    f("id", "string", "the snapshot's ID"),
    f("name", "string", "its name"),
    f("volumeid", "string", "the volume it was taken of"),
    f("volumename", "string", "that volume's name"),
    f("volumetype", "string", "ROOT or DATADISK"),
    f(
        "snapshottype",
        "string",
        "MANUAL, or HOURLY / DAILY / WEEKLY / MONTHLY for a policy's",
    ),
    f("intervaltype", "string", "as snapshottype"),
    f(
        "state",
        "string",
        "Allocated, Creating, BackedUp, Error or Destroyed",
    ),
    f("created", "date", "when it was taken"),
    f("virtualsize", "long", "the volume's size then, in bytes"),
    f(
        "physicalsize",
        "long",
        "bytes it takes in secondary storage",
    ),
    f("revertable", "boolean", "whether revertSnapshot can use it"),
    f("zoneid", "string", "zone ID"),
    f("account", "string", "owner account"),
    f("domainid", "string", "owner domain ID"),
];

const POLICY_FIELDS: &[Field] = &[
    f("id", "string", "the policy's ID"),
    f("volumeid", "string", "its volume"),
    f(
        "schedule",
        "string",
        "MM, MM:HH, MM:HH:D (1 Sunday) or MM:HH:DD",
    ),
    f(
        "intervaltype",
        "short",
        "0 HOURLY, 1 DAILY, 2 WEEKLY, 3 MONTHLY",
    ),
    f("maxsnaps", "int", "snapshots of its interval kept"),
    f("timezone", "string", "time zone its schedule runs in"),
    f(
        "fordisplay",
        "boolean",
        "whether users see it (and it runs)",
    ),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createSnapshot",
            "Copies a volume as it is now into secondary storage.",
            true,
            All,
            &[
                req("volumeid", "uuid", "the volume"),
                opt("name", "string", "name; <instance>_<volume>_<time> when empty").len(255),
                opt(
                    "quiescevm",
                    "boolean",
                    "freeze a running instance's file systems through its guest agent at the instant"
                ),
                opt("policyid", "uuid", "the policy it is taken for"),
                opt("asyncbackup", "boolean", "accepted; the copy is always made before the job ends"),
                opt("account", "string", "owner account, with domainid"),
                opt("domainid", "uuid", "owner domain")
            ],
            SNAP_FIELDS,
            create
        ),
        cmd!(
            "listSnapshots",
            "Lists volume snapshots, newest first.",
            false,
            All,
            &[
                opt("id", "uuid", "one snapshot"),
                opt("ids", "list", "several snapshots"),
                opt("name", "string", "name"),
                opt("volumeid", "uuid", "the snapshots of this volume"),
                opt(
                    "snapshottype",
                    "string",
                    "MANUAL, RECURRING or an interval type"
                ),
                opt("intervaltype", "string", "with volumeid: HOURLY, DAILY, WEEKLY or MONTHLY"),
                opt("zoneid", "uuid", "zone"),
                opt("account", "string", "owner account, with domainid"),
                opt("domainid", "uuid", "owner domain"),
                opt("isrecursive", "boolean", "with subdomains"),
                opt("listall", "boolean", "all the caller may see"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            SNAP_FIELDS,
            list
        ),
        cmd!(
            "deleteSnapshot",
            "Deletes a volume snapshot and its copy.",
            true,
            All,
            &[req("id", "uuid", "the snapshot")],
            &[f("success", "boolean", "true")],
            delete
        ),
        cmd!(
            "revertSnapshot",
            "Puts a volume's content back to a snapshot's; the volume must be detached or its instance Stopped.",
            true,
            All,
            &[req("id", "uuid", "the snapshot")],
            SNAP_FIELDS,
            revert
        ),
        cmd!(
            "createSnapshotPolicy",
            "Takes snapshots of a volume on a schedule, keeping the newest maxsnaps; one policy per interval type (a second one updates it).",
            false,
            All,
            &[
                req("volumeid", "uuid", "the volume"),
                req("intervaltype", "string", "HOURLY, DAILY, WEEKLY or MONTHLY"),
                req(
                    "schedule",
                    "string",
                    "MM (hourly), MM:HH (daily), MM:HH:D (weekly, 1 Sunday) or MM:HH:DD (monthly, 1-28)"
                ),
                req("timezone", "string", "IANA time zone, e.g. Europe/Berlin"),
                req("maxsnaps", "integer", "snapshots kept, at most snapshot.max.<interval>"),
                opt("fordisplay", "boolean", "whether users see it (default true)")
            ],
            POLICY_FIELDS,
            create_policy
        ),
        cmd!(
            "listSnapshotPolicies",
            "Lists a volume's snapshot policies.",
            false,
            All,
            &[
                opt("volumeid", "uuid", "the volume; or id"),
                opt("id", "uuid", "one policy"),
                opt("fordisplay", "boolean", "admins: only displayed ones"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            POLICY_FIELDS,
            list_policies
        ),
        cmd!(
            "updateSnapshotPolicy",
            "Shows or hides a snapshot policy (a hidden one does not run).",
            true,
            All,
            &[
                req("id", "uuid", "the policy"),
                opt("fordisplay", "boolean", "whether users see it")
            ],
            POLICY_FIELDS,
            update_policy
        ),
        cmd!(
            "deleteSnapshotPolicies",
            "Deletes snapshot policies; their snapshots stay.",
            false,
            All,
            &[
                opt("id", "uuid", "one policy"),
                opt("ids", "list", "several policies")
            ],
            &[f("success", "boolean", "true")],
            delete_policies
        ),
        cmd!(
            "createTemplate",
            "Makes a template from a volume snapshot or a stopped instance's volume.",
            true,
            All,
            &[
                req("name", "string", "template name, at most 32 characters"),
                opt("displaytext", "string", "description; the name when empty"),
                req("ostypeid", "uuid", "guest OS type"),
                opt("snapshotid", "uuid", "the snapshot; or volumeid"),
                opt("volumeid", "uuid", "the volume (its instance Stopped); or snapshotid"),
                opt("ispublic", "boolean", "everyone may use it"),
                opt("isfeatured", "boolean", "admins: featured"),
                opt("passwordenabled", "boolean", "the guest resets its password"),
                opt("isdynamicallyscalable", "boolean", "instances from it may scale live"),
                opt("bits", "integer", "32 or 64"),
                opt("requireshvm", "boolean", "accepted; always true on KVM")
            ],
            &[f("id", "string", "the template (template)")],
            create_template
        ),
    ]
}

async fn create(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol: Volume = ctx
        .svc
        .owned(&ctx.caller, "volumeid", ctx.p.required("volumeid")?)
        .await?;
    let policy: Option<SnapshotPolicy> = match ctx.p.str("policyid") {
        Some(u) => Some(ctx.svc.owned(&ctx.caller, "policyid", u).await?),
        None => None,
    };
    let req = NewSnapshot {
        name: ctx.p.string("name"),
        quiesce: ctx.p.bool_or("quiescevm", false),
        policy,
    };
    let (job, snap) = ctx.svc.create_snapshot(&ctx.caller, &vol, req).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: Some(snap.uuid),
    })
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = SnapshotFilter {
        id: ctx.p.string("id"),
        ids: ctx.p.list("ids"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        volume: ctx.p.string("volumeid"),
        snapshot_type: ctx.p.string("snapshottype"),
        interval_type: ctx.p.string("intervaltype"),
        zone: ctx.p.string("zoneid"),
        page: paging(&ctx)?,
    };
    let (items, total) = ctx
        .svc
        .list_snapshots(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut l = Lookup::new(&ctx.svc);
    let mut out = Vec::new();
    for s in &items {
        out.push(views::volume_snapshot(&mut l, s).await?);
    }
    Ok(Reply::List("snapshot", out, total))
}

async fn delete(ctx: Ctx) -> Result<Reply, ApiError> {
    let s = ctx
        .svc
        .volume_snapshot(&ctx.caller, "id", ctx.p.required("id")?)
        .await?;
    let job = ctx.svc.delete_snapshot(&ctx.caller, s).await?;
    Ok(Reply::Async { job, id: None })
}

async fn revert(ctx: Ctx) -> Result<Reply, ApiError> {
    let s = ctx
        .svc
        .volume_snapshot(&ctx.caller, "id", ctx.p.required("id")?)
        .await?;
    let job = ctx.svc.revert_snapshot(&ctx.caller, &s).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: None,
    })
}

async fn create_policy(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol: Volume = ctx
        .svc
        .owned(&ctx.caller, "volumeid", ctx.p.required("volumeid")?)
        .await?;
    let max_snaps = ctx
        .p
        .i64("maxsnaps")?
        .ok_or_else(|| ApiError::missing("createSnapshotPolicy", "maxsnaps"))?;
    let req = NewPolicy {
        interval_type: ctx.p.required("intervaltype")?.to_string(),
        schedule: ctx.p.required("schedule")?.to_string(),
        timezone: ctx.p.required("timezone")?.to_string(),
        max_snaps,
        // Hiding a policy is an admin's choice.
        for_display: if ctx.caller.is_admin() {
            ctx.p.bool_or("fordisplay", true)
        } else {
            true
        },
    };
    let p = ctx
        .svc
        .create_snapshot_policy(&ctx.caller, &vol, req)
        .await?;
    let mut l = Lookup::new(&ctx.svc);
    Ok(Reply::Object(
        "snapshotpolicy",
        views::snapshot_policy(&mut l, &p).await?,
    ))
}

async fn list_policies(ctx: Ctx) -> Result<Reply, ApiError> {
    let vol: Option<Volume> = match ctx.p.str("volumeid") {
        Some(u) => Some(ctx.svc.owned(&ctx.caller, "volumeid", u).await?),
        None => None,
    };
    let mut items = ctx
        .svc
        .list_snapshot_policies(&ctx.caller, vol.as_ref(), ctx.p.str("id"))
        .await?;
    if let Some(d) = ctx.p.bool("fordisplay") {
        items.retain(|p| p.for_display == d);
    }
    let mut l = Lookup::new(&ctx.svc);
    let mut out = Vec::new();
    for p in &items {
        out.push(views::snapshot_policy(&mut l, p).await?);
    }
    let n = out.len() as u64;
    Ok(Reply::List("snapshotpolicy", out, n))
}

async fn update_policy(ctx: Ctx) -> Result<Reply, ApiError> {
    let p: SnapshotPolicy = ctx
        .svc
        .owned(&ctx.caller, "id", ctx.p.required("id")?)
        .await?;
    let display = if ctx.caller.is_admin() {
        ctx.p.bool("fordisplay")
    } else {
        None
    };
    let p = ctx
        .svc
        .update_snapshot_policy(&ctx.caller, p, display)
        .await?;
    // Async in CloudStack; the change is made already.
    let job = ctx
        .svc
        .done_job_with(
            &ctx.caller,
            "updateSnapshotPolicy",
            "SnapshotPolicy",
            &p.uuid,
            JobOutput::SnapshotPolicy { id: p.id },
        )
        .await?;
    Ok(Reply::Async {
        job,
        id: Some(p.uuid),
    })
}

async fn delete_policies(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut ids = ctx.p.list("ids");
    if let Some(id) = ctx.p.string("id") {
        ids.push(id);
    }
    ctx.svc.delete_snapshot_policies(&ctx.caller, &ids).await?;
    Ok(Reply::Success(None))
}

async fn create_template(ctx: Ctx) -> Result<Reply, ApiError> {
    let snapshot = match ctx.p.str("snapshotid") {
        Some(u) => Some(
            ctx.svc
                .volume_snapshot(&ctx.caller, "snapshotid", u)
                .await?,
        ),
        None => None,
    };
    let volume: Option<Volume> = match ctx.p.str("volumeid") {
        Some(u) => Some(ctx.svc.owned(&ctx.caller, "volumeid", u).await?),
        None => None,
    };
    let os_type: OsType = ctx
        .svc
        .by_uuid("ostypeid", ctx.p.required("ostypeid")?)
        .await?;
    let req = NewPrivateTemplate {
        name: ctx.p.required("name")?.to_string(),
        display_text: ctx.p.string("displaytext"),
        os_type,
        snapshot,
        volume,
        public: ctx.p.bool_or("ispublic", false),
        featured: ctx.p.bool_or("isfeatured", false),
        password_enabled: ctx.p.bool_or("passwordenabled", false),
        dynamically_scalable: ctx.p.bool_or("isdynamicallyscalable", false),
    };
    let (t, job) = ctx.svc.create_private_template(&ctx.caller, req).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: Some(t.uuid),
    })
}
