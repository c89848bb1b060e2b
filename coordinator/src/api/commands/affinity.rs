//! Affinity groups: create, delete, list, types, and changing an instance's.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::cmd;
use crate::service::affinity::GroupFilter;
use crate::service::affinity::TYPES;
use serde_json::json;

const GROUP_FIELDS: &[Field] = &[
    f("id", "string", "group ID"),
    f("name", "string", "name"),
    f("type", "string", "one of the four affinity types"),
    f("description", "string", "description"),
    f("account", "string", "owner account"),
    f("virtualmachineIds", "list", "member instances"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createAffinityGroup",
            "Creates an affinity group of an account.",
            true,
            All,
            &[
                req("name", "string", "group name, unique in the account"),
                req("type", "string", "host anti-affinity, host affinity, non-strict host anti-affinity or non-strict host affinity"),
                opt("description", "string", "description"),
                opt("account", "string", "owner account"),
                opt("domainid", "uuid", "owner domain")
            ],
            GROUP_FIELDS,
            create_group
        ),
        cmd!(
            "deleteAffinityGroup",
            "Deletes an affinity group; its members leave it and keep running.",
            true,
            All,
            &[
                opt("id", "uuid", "group"),
                opt("name", "string", "group name, instead of id"),
                opt("account", "string", "owner account, with name"),
                opt("domainid", "uuid", "owner domain, with name")
            ],
            &[f("success", "boolean", "true")],
            delete_group
        ),
        cmd!(
            "listAffinityGroups",
            "Lists affinity groups with their members.",
            false,
            All,
            &[
                opt("id", "uuid", "group"),
                opt("name", "string", "name"),
                opt("type", "string", "type"),
                opt("virtualmachineid", "uuid", "groups of this instance"),
                opt("listall", "boolean", "all visible"),
                opt("account", "string", "owner"),
                opt("domainid", "uuid", "domain"),
                opt("isrecursive", "boolean", "include subdomains"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            GROUP_FIELDS,
            list_groups
        ),
        cmd!(
            "listAffinityGroupTypes",
            "Lists the affinity group types.",
            false,
            All,
            &[PAGING[0], PAGING[1], PAGING[2]],
            &[f("type", "string", "type")],
            list_types
        ),
        cmd!(
            "updateVMAffinityGroup",
            "Replaces the affinity groups of a stopped instance.",
            true,
            All,
            &[
                req("id", "uuid", "instance"),
                opt("affinitygroupids", "list", "groups by id"),
                opt("affinitygroupnames", "list", "groups by name")
            ],
            super::vm::VM_FIELDS,
            update_vm_groups
        ),
    ]
}

async fn group_json(ctx: &Ctx, g: &AffinityGroup) -> Result<serde_json::Value, ApiError> {
    Ok(crate::api::views::affinity_group(&ctx.svc, g).await?)
}

/// The groups named by `affinitygroupids` or `affinitygroupnames` (not both),
/// looked up in the owner's account.
pub async fn groups_param(ctx: &Ctx, owner: &Account) -> Result<Vec<AffinityGroup>, ApiError> {
    let ids = ctx.p.list("affinitygroupids");
    let names = ctx.p.list("affinitygroupnames");
    if !ids.is_empty() && !names.is_empty() {
        return Err(ApiError::param(
            "affinitygroupids parameter is mutually exclusive with affinitygroupnames parameter",
        ));
    }
    let mut out = Vec::new();
    for id in ids {
        let g: AffinityGroup = ctx.svc.owned(&ctx.caller, "affinitygroupids", &id).await?;
        out.push(g);
    }
    for n in names {
        let g = ctx.svc.affinity_group_named(owner, &n).await?;
        out.push(g.ok_or_else(|| {
            ApiError::param(format!(
                "Unable to find affinity group by name {n} in account {}",
                owner.name
            ))
        })?);
    }
    ctx.svc.check_groups_owner(owner, &out)?;
    out.dedup_by_key(|g| g.id);
    Ok(out)
}

async fn create_group(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let g = ctx
        .svc
        .create_affinity_group(
            &ctx.caller,
            &owner,
            ctx.p.required("name")?,
            ctx.p.required("type")?,
            ctx.p.string("description"),
        )
        .await?;
    let job = ctx
        .svc
        .done_job_with(
            &ctx.caller,
            "createAffinityGroup",
            "AffinityGroup",
            &g.uuid,
            crate::service::jobs::JobOutput::AffinityGroup { id: g.id },
        )
        .await?;
    Ok(Reply::Async {
        job,
        id: Some(g.uuid),
    })
}

async fn delete_group(ctx: Ctx) -> Result<Reply, ApiError> {
    let g: AffinityGroup = match (ctx.p.str("id"), ctx.p.str("name")) {
        (Some(id), _) => ctx.svc.owned(&ctx.caller, "id", id).await?,
        (None, Some(n)) => {
            let owner = owner(&ctx).await?;
            ctx.svc
                .affinity_group_named(&owner, n)
                .await?
                .ok_or_else(|| {
                    ApiError::param(format!("Unable to find affinity group by name {n}"))
                })?
        }
        (None, None) => {
            return Err(ApiError::param(
                "Either parameter id or parameter name is required",
            ))
        }
    };
    let uuid = g.uuid.clone();
    ctx.svc.delete_affinity_group(&ctx.caller, g).await?;
    let job = ctx
        .svc
        .done_job(&ctx.caller, "deleteAffinityGroup", "AffinityGroup", &uuid)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn list_groups(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = GroupFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        group_type: ctx.p.string("type"),
        keyword: ctx.p.string("keyword"),
        vm: ctx.p.string("virtualmachineid"),
        page: paging(&ctx)?,
    };
    let (groups, total) = ctx
        .svc
        .list_affinity_groups(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut items = Vec::new();
    for g in &groups {
        items.push(group_json(&ctx, g).await?);
    }
    Ok(Reply::List("affinitygroup", items, total))
}

async fn list_types(_ctx: Ctx) -> Result<Reply, ApiError> {
    let items = TYPES
        .iter()
        .map(|t| json!({ "type": t }))
        .collect::<Vec<_>>();
    let n = items.len() as u64;
    Ok(Reply::List("affinityGroupType", items, n))
}

async fn update_vm_groups(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    let vm: Vm = ctx.svc.owned(&ctx.caller, "id", id).await?;
    if !ctx.p.has("affinitygroupids") && !ctx.p.has("affinitygroupnames") {
        return Err(ApiError::param(
            "Either parameter affinitygroupids or affinitygroupnames is required (empty to clear)",
        ));
    }
    let owner: Account = ctx
        .svc
        .load_cached(vm.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account vanished"))?;
    let groups = groups_param(&ctx, &owner).await?;
    let vm = ctx.svc.update_vm_affinity(&ctx.caller, vm, &groups).await?;
    let job = ctx
        .svc
        .done_job_with(
            &ctx.caller,
            "updateVMAffinityGroup",
            "VirtualMachine",
            &vm.uuid,
            crate::service::jobs::JobOutput::Vm { id: vm.id },
        )
        .await?;
    Ok(Reply::Async { job, id: None })
}
