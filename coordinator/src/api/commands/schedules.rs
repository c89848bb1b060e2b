//! Instance schedules: createVMSchedule, listVMSchedule, updateVMSchedule,
//! deleteVMSchedule.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::service::schedules::ScheduleFilter;
use orrery_schedule::plan::{CreateRequest, UpdateRequest};
use serde_json::Value;

const SCHEDULE_FIELDS: &[Field] = &[
    f("id", "string", "schedule ID"),
    f("virtualmachineid", "string", "the instance"),
    f("description", "string", "description"),
    f("schedule", "string", "five-field cron expression"),
    f("timezone", "string", "time zone the schedule runs in"),
    f(
        "action",
        "string",
        "START, STOP, REBOOT, FORCE_STOP or FORCE_REBOOT",
    ),
    f("enabled", "boolean", "whether it runs"),
    f("startdate", "date", "it runs only after this"),
    f("enddate", "date", "it runs only before this"),
    f("created", "date", "when it was created"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createVMSchedule",
            "Creates a schedule of a lifecycle action on an instance.",
            false,
            All,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                req(
                    "action",
                    "string",
                    "START, STOP, REBOOT, FORCE_STOP or FORCE_REBOOT; cannot change later"
                ),
                req(
                    "schedule",
                    "string",
                    "five-field cron expression, e.g. '0 8 * * MON-FRI'"
                ),
                req(
                    "timezone",
                    "string",
                    "IANA time zone the schedule runs in, e.g. Europe/Berlin"
                ),
                opt(
                    "description",
                    "string",
                    "description; generated from the action and schedule when empty"
                ),
                opt(
                    "startdate",
                    "string",
                    "yyyy-MM-dd HH:mm:ss in the time zone; default now plus one minute"
                ),
                opt(
                    "enddate",
                    "string",
                    "yyyy-MM-dd HH:mm:ss in the time zone; once set it cannot be removed"
                ),
                opt("enabled", "boolean", "default true")
            ],
            SCHEDULE_FIELDS,
            create
        ),
        cmd!(
            "listVMSchedule",
            "Lists the schedules of an instance.",
            false,
            All,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                opt("id", "uuid", "one schedule"),
                opt("action", "string", "only this action"),
                opt("enabled", "boolean", "only enabled or disabled ones"),
                opt("keyword", "string", "text in the description"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            SCHEDULE_FIELDS,
            list
        ),
        cmd!(
            "updateVMSchedule",
            "Updates a schedule; its action cannot change.",
            false,
            All,
            &[
                req("id", "uuid", "the schedule"),
                opt("description", "string", "description"),
                opt("schedule", "string", "five-field cron expression"),
                opt("timezone", "string", "IANA time zone"),
                opt(
                    "startdate",
                    "string",
                    "yyyy-MM-dd HH:mm:ss in the time zone"
                ),
                opt(
                    "enddate",
                    "string",
                    "yyyy-MM-dd HH:mm:ss in the time zone; cannot be removed"
                ),
                opt("enabled", "boolean", "whether it runs")
            ],
            SCHEDULE_FIELDS,
            update
        ),
        cmd!(
            "deleteVMSchedule",
            "Deletes schedules of an instance.",
            false,
            All,
            &[
                req("virtualmachineid", "uuid", "the instance"),
                opt("id", "uuid", "one schedule"),
                opt(
                    "ids",
                    "list",
                    "several schedules; with neither, all of the instance's"
                )
            ],
            &[f("success", "boolean", "true")],
            delete
        ),
    ]
}

fn schedule_json(s: &VmSchedule, vm: &Vm) -> Value {
    Obj::new()
        .s("id", &s.uuid)
        .s("virtualmachineid", &vm.uuid)
        .s("description", &s.description)
        .s("schedule", &s.schedule)
        .s("timezone", &s.timezone)
        .s("action", &s.action)
        .v("enabled", s.enabled)
        .s("startdate", date(s.start_date))
        .os("enddate", s.end_date.map(date))
        .s("created", date(s.created))
        .build()
}

async fn vm_of(ctx: &Ctx) -> Result<Vm, ApiError> {
    let id = ctx.p.required("virtualmachineid")?;
    Ok(ctx
        .svc
        .owned::<Vm>(&ctx.caller, "virtualmachineid", id)
        .await?)
}

async fn create(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm = vm_of(&ctx).await?;
    let req = CreateRequest {
        schedule: ctx.p.required("schedule")?,
        timezone: ctx.p.required("timezone")?,
        action: ctx.p.required("action")?,
        start_date: ctx.p.raw("startdate"),
        end_date: ctx.p.raw("enddate"),
        description: ctx.p.raw("description"),
        enabled: ctx.p.bool("enabled"),
    };
    let s = ctx
        .svc
        .schedules
        .create_schedule(&ctx.caller, &vm, &req)
        .await?;
    Ok(Reply::Object("vmschedule", schedule_json(&s, &vm)))
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm = vm_of(&ctx).await?;
    let f = ScheduleFilter {
        id: ctx.p.string("id"),
        action: ctx.p.string("action"),
        enabled: ctx.p.bool("enabled"),
        keyword: ctx.p.string("keyword"),
        page: paging(&ctx)?,
    };
    let (items, total) = ctx
        .svc
        .schedules
        .list_schedules(&ctx.caller, &vm, &f)
        .await?;
    Ok(Reply::List(
        "vmschedule",
        items.iter().map(|s| schedule_json(s, &vm)).collect(),
        total,
    ))
}

async fn update(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    let s: VmSchedule = ctx.svc.owned(&ctx.caller, "id", id).await?;
    let vm: Vm = ctx
        .svc
        .load_cached(s.vm_id)
        .await?
        .ok_or_else(|| ApiError::unknown_id("id", id))?;
    let req = UpdateRequest {
        schedule: ctx.p.str("schedule"),
        timezone: ctx.p.str("timezone"),
        action: ctx.p.str("action"),
        start_date: ctx.p.raw("startdate"),
        end_date: ctx.p.raw("enddate"),
        description: ctx.p.raw("description"),
        enabled: ctx.p.bool("enabled"),
    };
    let s = ctx
        .svc
        .schedules
        .update_schedule(&ctx.caller, s, &req)
        .await?;
    Ok(Reply::Object("vmschedule", schedule_json(&s, &vm)))
}

async fn delete(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm = vm_of(&ctx).await?;
    let mut uuids: Vec<String> = ctx.p.list("ids");
    if let Some(id) = ctx.p.str("id") {
        uuids.push(id.to_string());
    }
    ctx.svc
        .schedules
        .delete_schedules_of(&ctx.caller, &vm, &uuids)
        .await?;
    Ok(Reply::Success(None))
}
