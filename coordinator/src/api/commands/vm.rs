//! Instance, instance group and volume commands.

use super::*;
use crate::api::registry::{f, opt, req, Access, Field, P, PAGING};
use crate::api::render::Reply;
use crate::api::views::{self, Lookup};
use crate::handler;
use crate::service::lifecycle::VmAction;
use crate::service::listing::{GroupListFilter, VmFilter};
use crate::service::reshape::{ChangeOffering, ScaleRequest};
use crate::service::vm::{DeployArgs, Pin, VmUpdate};
use crate::service::Service;
use serde_json::json;

pub const VM_FIELDS: &[Field] = &[
    f("id", "string", "the ID of the instance"),
    f("name", "string", "the host name of the instance"),
    f("displayname", "string", "the display name of the instance"),
    f(
        "instancename",
        "string",
        "the internal name, for root admins",
    ),
    f("state", "string", "the state of the instance"),
    f("account", "string", "the owning account"),
    f("domainid", "string", "the domain ID"),
    f("zoneid", "string", "the zone ID"),
    f("hostid", "string", "the host ID, for admins"),
    f("templateid", "string", "the template ID"),
    f("serviceofferingid", "string", "the service offering ID"),
    f("cpunumber", "integer", "the number of CPUs"),
    f("cpuspeed", "integer", "the CPU speed in MHz"),
    f("memory", "integer", "the memory in MB"),
    f("nic", "list", "the NICs of the instance"),
    f("created", "date", "when the instance was created"),
    f(
        "deleteprotection",
        "boolean",
        "whether delete protection is on",
    ),
    f(
        "leaseduration",
        "integer",
        "days of the instance's lease, while it has one",
    ),
    f(
        "leaseexpiryaction",
        "string",
        "STOP or DESTROY, while it has a lease",
    ),
    f("leaseexpirydate", "date", "when the lease expires"),
    f("jobid", "string", "the latest async job on the instance"),
];

const SUCCESS_FIELDS: &[Field] = &[
    f("success", "boolean", "true if the operation succeeded"),
    f("displaytext", "string", "any text"),
];
const GROUP_FIELDS: &[Field] = &[
    f("id", "string", "the group ID"),
    f("name", "string", "the group name"),
    f("account", "string", "the owner"),
    f("created", "date", "creation time"),
];

const ID: [P; 1] = [req("id", "uuid", "the ID of the instance")];

pub fn commands() -> Vec<Command> {
    vec![
        Command {
            name: "deployVirtualMachine",
            description: "Creates and automatically starts an instance based on a service offering, disk offering, and template.",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("zoneid", "uuid", "availability zone for the instance"),
                req("serviceofferingid", "uuid", "the service offering"),
                opt("templateid", "uuid", "the template or ISO for the instance"),
                opt("name", "string", "host name for the instance (RFC 1123)"),
                opt("displayname", "string", "display name of the instance"),
                opt("group", "string", "instance group name"),
                opt("startvm", "boolean", "true (default) to start the instance"),
                opt("diskofferingid", "uuid", "disk offering for a data disk, or the root disk of an ISO deploy"),
                opt("size", "long", "data disk size in GB for a custom disk offering"),
                opt("rootdisksize", "long", "root disk size in GB"),
                opt("details", "map", "details: cpuNumber, cpuSpeed, memory for custom offerings"),
                opt("keypair", "string", "SSH key pair name"),
                opt("keypairs", "list", "SSH key pair names"),
                opt("userdata", "string", "base64 user data").len(1_048_576),
                opt("userdataid", "uuid", "registered user data"),
                opt("userdatadetails", "map", "values of the registered user data's variables"),
                opt("extraconfig", "string", "extra hypervisor configuration, admins only").len(5120),
                opt("hostid", "uuid", "destination host, admins only"),
                opt("podid", "uuid", "destination pod, admins only"),
                opt("clusterid", "uuid", "destination cluster, admins only"),
                opt("networkids", "list", "network IDs"),
                opt("affinitygroupids", "list", "affinity groups by id"),
                opt("affinitygroupnames", "list", "affinity groups by name"),
                opt("account", "string", "owning account, with domainid"),
                opt("domainid", "uuid", "domain of the owning account"),
                opt("hypervisor", "string", "hypervisor of the instance"),
                opt("displayvm", "boolean", "whether users see the instance"),
                opt("leaseduration", "integer", "lease days (1-36500), or -1 for none"),
                opt("leaseexpiryaction", "string", "STOP or DESTROY when the lease expires"),
                opt("dynamicscalingenabled", "boolean", "allow dynamic scaling"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(deploy),
        },
        Command {
            name: "startVirtualMachine",
            description: "Starts an instance.",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                opt("hostid", "uuid", "destination host, admins only"),
                opt("podid", "uuid", "destination pod, admins only"),
                opt("clusterid", "uuid", "destination cluster, admins only"),
                opt("considerlasthost", "boolean", "prefer the last host"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(start),
        },
        Command {
            name: "stopVirtualMachine",
            description: "Stops an instance.",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[req("id", "uuid", "the ID of the instance"), opt("forced", "boolean", "stop at once, without a guest shutdown")]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(stop),
        },
        Command {
            name: "rebootVirtualMachine",
            description: "Reboots an instance.",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[req("id", "uuid", "the ID of the instance"), opt("forced", "boolean", "reboot at once")]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(reboot),
        },
        Command {
            name: "destroyVirtualMachine",
            description: "Destroys an instance. Unless expunged, it can be recovered until the expunger removes it.",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                opt("expunge", "boolean", "expunge at once"),
                opt("volumeids", "list", "data volumes to delete with the instance"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(destroy),
        },
        Command {
            name: "expungeVirtualMachine",
            description: "Expunges a destroyed instance.",
            is_async: true,
            access: Access::All,
            params: &ID,
            response: SUCCESS_FIELDS,
            response_key: None,
            handler: handler!(expunge),
        },
        Command {
            name: "recoverVirtualMachine",
            description: "Recovers a destroyed instance.",
            is_async: false,
            access: Access::All,
            params: &ID,
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(recover),
        },
        Command {
            name: "updateVirtualMachine",
            description: "Updates properties of an instance. Name, OS type and settings need a stopped instance.",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                opt("name", "string", "new host name"),
                opt("displayname", "string", "new display name"),
                opt("group", "string", "instance group; empty to clear"),
                opt("ostypeid", "uuid", "OS type"),
                opt("haenable", "boolean", "HA on or off"),
                opt("isdynamicallyscalable", "boolean", "dynamic scaling on or off"),
                opt("deleteprotection", "boolean", "delete protection on or off"),
                opt("details", "map", "instance settings"),
                opt("cleanupdetails", "boolean", "remove all settings"),
                opt("displayvm", "boolean", "whether users see the instance"),
                opt("leaseduration", "integer", "lease days (1-36500), or -1 for none"),
                opt("leaseexpiryaction", "string", "STOP or DESTROY when the lease expires"),
                opt("extraconfig", "string", "extra configuration, admins only").len(5120),
                opt("userdata", "string", "base64 user data").len(1_048_576),
                opt("userdataid", "uuid", "registered user data"),
                opt("userdatadetails", "map", "values of the registered user data's variables"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(update),
        },
        Command {
            name: "scaleVirtualMachine",
            description: "Scales a running instance up to a new compute offering without stopping it (enable.dynamic.scale.vm; a stopped instance just changes offering).",
            is_async: true,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                req("serviceofferingid", "uuid", "the new compute offering"),
                opt("details", "map", "cpuNumber, cpuSpeed and memory for a custom offering"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(scale),
        },
        Command {
            name: "changeServiceForVirtualMachine",
            description: "Changes the compute offering of a stopped instance; the new size applies at its next start.",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                req("serviceofferingid", "uuid", "the new compute offering"),
                opt("details", "map", "cpuNumber, cpuSpeed and memory for a custom offering"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(change_service),
        },
        Command {
            name: "upgradeVirtualMachine",
            description: "Changes the compute offering of a stopped instance (as changeServiceForVirtualMachine).",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                req("id", "uuid", "the ID of the instance"),
                req("serviceofferingid", "uuid", "the new compute offering"),
                opt("details", "map", "cpuNumber, cpuSpeed and memory for a custom offering"),
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(change_service),
        },
        Command {
            name: "listVirtualMachines",
            description: "Lists instances.",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[
                opt("id", "uuid", "instance ID"),
                opt("ids", "list", "instance IDs"),
                opt("name", "string", "instance name"),
                opt("state", "string", "state, or Present"),
                opt("zoneid", "uuid", "zone"),
                opt("hostid", "uuid", "host, admins only"),
                opt("templateid", "uuid", "template"),
                opt("serviceofferingid", "uuid", "service offering"),
                opt("groupid", "uuid", "instance group"),
                opt("account", "string", "account, with domainid"),
                opt("domainid", "uuid", "domain"),
                opt("isrecursive", "boolean", "include subdomains"),
                opt("listall", "boolean", "everything the caller may see"),
                opt("details", "list", "detail groups to return"),
                opt("leased", "boolean", "only instances with an active lease"),
                opt("showicon", "boolean", "include each instance's icon"),
                PAGING[0], PAGING[1], PAGING[2],
            ]; PARAMS },
            response: VM_FIELDS,
            response_key: None,
            handler: handler!(list),
        },
        Command {
            name: "createInstanceGroup",
            description: "Creates an instance group.",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[req("name", "string", "group name"), opt("account", "string", "owner"), opt("domainid", "uuid", "owner's domain")]; PARAMS },
            response: GROUP_FIELDS,
            response_key: None,
            handler: handler!(create_group),
        },
        Command {
            name: "listInstanceGroups",
            description: "Lists instance groups.",
            is_async: false,
            access: Access::All,
            params: { const PARAMS: &[P] = &[opt("id", "uuid", "group"), opt("name", "string", "name"), opt("listall", "boolean", "all visible"), opt("account", "string", "owner"), opt("domainid", "uuid", "domain"), PAGING[0], PAGING[1], PAGING[2]]; PARAMS },
            response: GROUP_FIELDS,
            response_key: None,
            handler: handler!(list_groups),
        },
    ]
}

pub(crate) async fn vm_reply(svc: &Service, caller: &Caller, v: &Vm) -> Result<Reply, ApiError> {
    let mut l = Lookup::new(svc);
    Ok(Reply::Object(
        "virtualmachine",
        views::vm(&mut l, caller, v, None).await?,
    ))
}

/// Admin-only placement parameters; users get CloudStack's permission error.
async fn admin_pin(ctx: &Ctx) -> Result<Pin, ApiError> {
    let mut p = Pin::default();
    for name in ["hostid", "podid", "clusterid"] {
        if ctx.p.has(name) && !ctx.caller.is_root_admin() {
            return Err(ApiError::denied(format!(
                "Parameter {name} can only be specified by a Root Admin"
            )));
        }
    }
    if let Some(h) = opt_ref::<Host>(ctx, "hostid").await? {
        p.host_id = Some(h.id);
    }
    if let Some(x) = opt_ref::<Pod>(ctx, "podid").await? {
        p.pod_id = Some(x.id);
    }
    if let Some(x) = opt_ref::<Cluster>(ctx, "clusterid").await? {
        p.cluster_id = Some(x.id);
    }
    Ok(p)
}

async fn deploy(ctx: Ctx) -> Result<Reply, ApiError> {
    let zone: Zone = ctx.svc.by_uuid("zoneid", ctx.p.required("zoneid")?).await?;
    let offering: ServiceOffering = ctx
        .svc
        .catalog
        .visible_offering(
            &ctx.caller,
            "serviceofferingid",
            ctx.p.required("serviceofferingid")?,
        )
        .await?;
    let Some(tid) = ctx.p.str("templateid") else {
        return Err(ApiError::missing(&ctx.p.command, "templateid"));
    };
    let t: Template = ctx.svc.by_uuid("templateid", tid).await?;
    let (template, iso) = if t.is_iso {
        (None, Some(t))
    } else {
        (Some(t), None)
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
    let pin = admin_pin(&ctx).await?;
    let owner = owner(&ctx).await?;
    let affinity_groups = super::affinity::groups_param(&ctx, &owner).await?;
    let network = match ctx.p.list("networkids").first() {
        Some(n) => Some(ctx.svc.by_uuid::<Network>("networkids", n).await?),
        None => None,
    };
    let mut keypairs = ctx.p.list("keypairs");
    if let Some(k) = ctx.p.str("keypair") {
        if !keypairs.iter().any(|x| x == k) {
            keypairs.push(k.to_string());
        }
    }
    let mut details = ctx.p.map_merged("details");
    let root_gb = match ctx.p.i64("rootdisksize")? {
        Some(x) => Some(x),
        None => match details.remove("rootdisksize") {
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| ApiError::param("Invalid value for details rootdisksize"))?,
            ),
            None => None,
        },
    };
    let args = DeployArgs {
        zone,
        offering,
        template,
        iso,
        disk_offering,
        owner,
        name: ctx.p.string("name"),
        display_name: ctx.p.string("displayname"),
        group: ctx.p.string("group"),
        details,
        root_disk_size_gb: root_gb,
        data_disk_size_gb: ctx.p.i64("size")?,
        keypairs,
        ssh_public_keys: Vec::new(),
        userdata: ctx.p.string("userdata"),
        userdata_ref: ctx.p.string("userdataid"),
        userdata_details: ctx.p.map_merged("userdatadetails"),
        userdata_id: None,
        post: ctx.post,
        extraconfig: ctx.p.string("extraconfig"),
        start: ctx.p.bool_or("startvm", true),
        pin,
        network,
        affinity_groups,
        ha_enable: None,
        dynamically_scalable: ctx.p.bool("dynamicscalingenabled"),
        display_vm: ctx.p.bool_or("displayvm", true),
        lease: crate::service::leases::request(
            ctx.p.i64("leaseduration")?,
            ctx.p.str("leaseexpiryaction"),
        )?,
    };
    let (vm, job) = ctx.svc.deploy(&ctx.caller, args).await?;
    Ok(Reply::Async {
        job: job.uuid,
        id: Some(vm.uuid),
    })
}

async fn load_vm(ctx: &Ctx, param: &str) -> Result<Vm, ApiError> {
    let id = ctx.p.required(param)?;
    Ok(ctx.svc.owned::<Vm>(&ctx.caller, param, id).await?)
}

/// Queues one of the instance actions; the service checks its rules.
async fn act(ctx: &Ctx, command: &str, action: VmAction) -> Result<Reply, ApiError> {
    let job = ctx
        .svc
        .vm_action(&ctx.caller, ctx.p.required("id")?, command, action)
        .await?;
    Ok(Reply::Async { job, id: None })
}

async fn start(ctx: Ctx) -> Result<Reply, ApiError> {
    let pin = admin_pin(&ctx).await?;
    act(&ctx, "startVirtualMachine", VmAction::Start { pin }).await
}

async fn stop(ctx: Ctx) -> Result<Reply, ApiError> {
    let forced = ctx.p.bool_or("forced", false);
    act(&ctx, "stopVirtualMachine", VmAction::Stop { forced }).await
}

async fn reboot(ctx: Ctx) -> Result<Reply, ApiError> {
    act(&ctx, "rebootVirtualMachine", VmAction::Reboot).await
}

async fn destroy(ctx: Ctx) -> Result<Reply, ApiError> {
    let action = VmAction::Destroy {
        expunge: ctx.p.bool_or("expunge", false),
        volumes: ctx.p.list("volumeids"),
    };
    act(&ctx, "destroyVirtualMachine", action).await
}

async fn expunge(ctx: Ctx) -> Result<Reply, ApiError> {
    act(&ctx, "expungeVirtualMachine", VmAction::Expunge).await
}

async fn recover(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm = load_vm(&ctx, "id").await?;
    let vm = ctx.svc.recover(&ctx.caller, &vm).await?;
    vm_reply(&ctx.svc, &ctx.caller, &vm).await
}

/// `userdata`, `userdataid` and `userdatadetails` of a request.
pub fn userdata_request(ctx: &Ctx) -> crate::service::userdata::UserDataRequest {
    crate::service::userdata::UserDataRequest {
        userdata: ctx.p.string("userdata"),
        userdata_id: ctx.p.string("userdataid"),
        details: ctx.p.map_merged("userdatadetails"),
        post: ctx.post,
    }
}

async fn update(ctx: Ctx) -> Result<Reply, ApiError> {
    let vm = load_vm(&ctx, "id").await?;
    let u = VmUpdate {
        name: ctx.p.string("name"),
        display_name: ctx.p.string("displayname"),
        group: ctx.p.raw("group").map(str::to_string),
        os_type: ctx.p.string("ostypeid"),
        ha_enable: ctx.p.bool("haenable"),
        dynamically_scalable: ctx.p.bool("isdynamicallyscalable"),
        delete_protection: ctx.p.bool("deleteprotection"),
        display_vm: ctx.p.bool("displayvm"),
        details: ctx.p.map_merged("details"),
        cleanup_details: ctx.p.bool_or("cleanupdetails", false),
        extraconfig: ctx.p.string("extraconfig"),
        userdata: userdata_request(&ctx),
        lease: crate::service::leases::request(
            ctx.p.i64("leaseduration")?,
            ctx.p.str("leaseexpiryaction"),
        )?,
    };
    let nothing = u.lease.duration.is_none()
        && u.name.is_none()
        && u.display_name.is_none()
        && u.group.is_none()
        && u.os_type.is_none()
        && u.ha_enable.is_none()
        && u.dynamically_scalable.is_none()
        && u.delete_protection.is_none()
        && u.display_vm.is_none()
        && u.details.is_empty()
        && !u.cleanup_details
        && u.extraconfig.is_none()
        && u.userdata.is_empty();
    // With nothing to change, clients use the call as a getter.
    let vm = if nothing {
        vm
    } else {
        ctx.svc.update_vm(&ctx.caller, vm, u).await?
    };
    vm_reply(&ctx.svc, &ctx.caller, &vm).await
}

async fn scale(ctx: Ctx) -> Result<Reply, ApiError> {
    let req = ScaleRequest {
        vm_uuid: ctx.p.required("id")?.to_string(),
        offering_uuid: ctx.p.required("serviceofferingid")?.to_string(),
        details: ctx.p.map_merged("details"),
    };
    let job = ctx.svc.scale_vm(&ctx.caller, req).await?;
    Ok(Reply::Async { job, id: None })
}

async fn change_service(ctx: Ctx) -> Result<Reply, ApiError> {
    let req = ChangeOffering {
        vm_uuid: ctx.p.required("id")?.to_string(),
        offering_uuid: ctx.p.required("serviceofferingid")?.to_string(),
        details: ctx.p.map_merged("details"),
    };
    let vm = ctx.svc.change_offering(&ctx.caller, req).await?;
    vm_reply(&ctx.svc, &ctx.caller, &vm).await
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    let (vms, total) = query_vms(&ctx).await?;
    let mut l = Lookup::new(&ctx.svc);
    l.prefetch_nics(&vms.iter().map(|v| v.id).collect::<Vec<_>>())
        .await?;
    let mut items = Vec::with_capacity(vms.len());
    for v in &vms {
        items.push(views::vm(&mut l, &ctx.caller, v, None).await?);
    }
    let items = super::ui::with_icons(&ctx, "VirtualMachine", items).await?;
    Ok(Reply::List("virtualmachine", items, total))
}

/// The page of instances listVirtualMachines' filters select for the
/// caller, and the total.
pub(super) async fn query_vms(ctx: &Ctx) -> Result<(Vec<Vm>, u64), ApiError> {
    let f = VmFilter {
        id: ctx.p.string("id"),
        ids: ctx.p.list("ids"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        state: ctx.p.string("state"),
        zone: ctx.p.string("zoneid"),
        host: ctx.p.string("hostid"),
        template: ctx.p.string("templateid"),
        offering: ctx.p.string("serviceofferingid"),
        group: ctx.p.string("groupid"),
        leased: ctx.p.bool("leased"),
        page: paging(ctx)?,
    };
    Ok(ctx.svc.list_vms(&ctx.caller, &scope_of(ctx), &f).await?)
}

async fn create_group(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let name = ctx.p.required("name")?;
    let g = ctx.svc.create_instance_group(&owner, name).await?;
    Ok(Reply::Object(
        "instancegroup",
        group_json(&ctx, &g, &owner).await?,
    ))
}

async fn group_json(
    ctx: &Ctx,
    g: &InstanceGroup,
    owner: &Account,
) -> Result<serde_json::Value, ApiError> {
    let dom: Option<Domain> = ctx.svc.load_cached(g.domain_id).await?;
    Ok(
        json!({"id": g.uuid, "name": g.name, "account": owner.name, "domainid": dom.as_ref().map(|d| d.uuid.clone()), "domain": dom.map(|d| d.name), "created": crate::api::render::date(g.created)}),
    )
}

async fn list_groups(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = GroupListFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        page: paging(&ctx)?,
    };
    let (gs, total) = ctx
        .svc
        .list_instance_groups(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut items = Vec::new();
    for g in &gs {
        let owner: Account = ctx
            .svc
            .load_cached(g.account_id)
            .await?
            .ok_or_else(|| ApiError::internal("owner missing"))?;
        items.push(group_json(&ctx, g, &owner).await?);
    }
    Ok(Reply::List("instancegroup", items, total))
}
