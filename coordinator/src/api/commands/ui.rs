//! What CloudStack's web UI asks at login and on every page: the real
//! capability flags, and CloudStack's empty answers for the features Orrery
//! does not have (LDAP, SAML, OAuth, VPCs, virtual routers, system VMs,
//! alerts, annotations, resource icons), so each page renders.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::cmd;
use serde_json::json;

/// The CloudStack release whose API Orrery answers as.
pub const CLOUDSTACK_VERSION: &str = "4.22.0.0";

const EMPTY_FIELDS: &[Field] = &[f(
    "count",
    "integer",
    "always 0: the feature is not offered",
)];

macro_rules! empty_list {
    ($name:literal, $desc:literal) => {
        cmd!(
            $name,
            $desc,
            false,
            All,
            &[
                opt("id", "uuid", "record"),
                opt("listall", "boolean", "all visible"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            EMPTY_FIELDS,
            empty
        )
    };
}

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "listDetailOptions",
            "Lists the instance details (settings) the caller may add, with their possible values.",
            false,
            All,
            &[
                req("resourcetype", "string", "UserVm"),
                opt(
                    "resourceid",
                    "uuid",
                    "an instance: values from its zone's hosts"
                )
            ],
            &[f("details", "map", "detail name -> possible values")],
            detail_options
        ),
        cmd!(
            "listCapabilities",
            "Lists the cloud's capabilities and the limits clients adapt to.",
            false,
            All,
            &[],
            &[
                f(
                    "cloudstackversion",
                    "string",
                    "the CloudStack API version answered"
                ),
                f("dynamicrolesenabled", "boolean", "roles are rule-based"),
                f("kvmsnapshotenabled", "boolean", "volume snapshots on KVM"),
                f("securitygroupsenabled", "boolean", "security groups")
            ],
            capabilities
        ),
        cmd!(
            "cloudianIsEnabled",
            "Whether the Cloudian connector is enabled (it is not).",
            false,
            All,
            &[],
            &[f("enabled", "boolean", "false"), f("url", "string", "none")],
            cloudian
        ),
        cmd!(
            "listHypervisors",
            "Lists the hypervisors of the cloud's hosts.",
            false,
            All,
            &[opt("zoneid", "uuid", "zone")],
            &[f("name", "string", "hypervisor")],
            hypervisors
        ),
        empty_list!(
            "listLdapConfigurations",
            "LDAP is not configured: an empty list."
        ),
        empty_list!("listIdps", "No SAML identity providers: an empty list."),
        empty_list!("listOauthProvider", "No OAuth providers: an empty list."),
        empty_list!(
            "listNetworkServiceProviders",
            "Network service providers: none beyond the built-in DHCP."
        ),
        empty_list!("listVPCs", "VPCs are not offered: an empty list."),
        empty_list!(
            "listRouters",
            "Virtual routers are not used: an empty list."
        ),
        empty_list!("listSystemVms", "System VMs are not used: an empty list."),
        empty_list!("listAlerts", "Alerts: none recorded."),
        empty_list!("listAnnotations", "Annotations: none recorded."),
        cmd!(
            "uploadResourceIcon",
            "Sets the icon of resources the caller may change.",
            false,
            All,
            &[
                req("resourceids", "list", "resources"),
                req(
                    "resourcetype",
                    "string",
                    "VirtualMachine, Template, ISO, Volume, Zone, Account or Domain"
                ),
                req(
                    "base64image",
                    "string",
                    "PNG, JPEG, GIF, WebP or SVG, base64"
                )
                .len(400_000)
            ],
            &[f("success", "boolean", "true")],
            upload_icon
        ),
        cmd!(
            "deleteResourceIcon",
            "Removes the icon of resources the caller may change.",
            false,
            All,
            &[
                req("resourceids", "list", "resources"),
                req("resourcetype", "string", "resource type")
            ],
            &[f("success", "boolean", "true")],
            delete_icon
        ),
        cmd!(
            "listResourceIcon",
            "Lists the icons of resources the caller may see.",
            false,
            All,
            &[
                req("resourceids", "list", "resources"),
                req("resourcetype", "string", "resource type")
            ],
            &[
                f("resourceid", "string", "the resource"),
                f("resourcetype", "string", "its type"),
                f("base64image", "string", "the image, base64")
            ],
            list_icons
        ),
    ]
}

async fn detail_options(ctx: Ctx) -> Result<Reply, ApiError> {
    let o = ctx
        .svc
        .detail_options(
            &ctx.caller,
            ctx.p.required("resourcetype")?,
            ctx.p.str("resourceid"),
        )
        .await?;
    Ok(Reply::Object("detailoptions", json!({ "details": o })))
}

/// `showicon=true` on a list: each item (by its `id`) with its icon.
pub async fn with_icons(
    ctx: &Ctx,
    ty: &str,
    mut items: Vec<serde_json::Value>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    if ctx.p.bool("showicon") != Some(true) {
        return Ok(items);
    }
    for item in &mut items {
        let Some(id) = item.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
            continue;
        };
        add_icon(ctx, item, ty, &id).await?;
    }
    Ok(items)
}

/// `showicon=true`: the resource's icon, when it has one, as CloudStack
/// nests it.
pub async fn add_icon(
    ctx: &Ctx,
    item: &mut serde_json::Value,
    ty: &str,
    uuid: &str,
) -> Result<(), ApiError> {
    if let (Some(img), Some(o)) = (ctx.svc.icon_image(ty, uuid).await?, item.as_object_mut()) {
        o.insert(
            "icon".into(),
            json!({"resourcetype": ty, "resourceid": uuid, "base64image": img}),
        );
    }
    Ok(())
}

async fn upload_icon(ctx: Ctx) -> Result<Reply, ApiError> {
    ctx.svc
        .upload_icons(
            &ctx.caller,
            ctx.p.required("resourcetype")?,
            &ctx.p.list("resourceids"),
            ctx.p.required("base64image")?,
        )
        .await?;
    Ok(Reply::Success(None))
}

async fn delete_icon(ctx: Ctx) -> Result<Reply, ApiError> {
    ctx.svc
        .delete_icons(
            &ctx.caller,
            ctx.p.required("resourcetype")?,
            &ctx.p.list("resourceids"),
        )
        .await?;
    Ok(Reply::Success(None))
}

async fn list_icons(ctx: Ctx) -> Result<Reply, ApiError> {
    let icons = ctx
        .svc
        .list_icons(
            &ctx.caller,
            ctx.p.required("resourcetype")?,
            &ctx.p.list("resourceids"),
        )
        .await?;
    let items: Vec<serde_json::Value> = icons
        .iter()
        .map(|i| {
            json!({"resourceid": i.resource_uuid, "resourcetype": i.resource_type, "base64image": i.image})
        })
        .collect();
    let n = items.len() as u64;
    Ok(Reply::List("icon", items, n))
}

async fn empty(_ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::List("item", Vec::new(), 0))
}

async fn cloudian(_ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(Reply::Object(
        "cloudian",
        json!({"enabled": false, "url": ""}),
    ))
}

async fn capabilities(ctx: Ctx) -> Result<Reply, ApiError> {
    let svc = &ctx.svc;
    let account = ctx.caller.account.id;
    let per_account = |name: &str| {
        svc.setting(name, &[("account", account)])
            .eq_ignore_ascii_case("true")
    };
    Ok(Reply::Object(
        "capability",
        json!({
            "cloudstackversion": CLOUDSTACK_VERSION,
            "securitygroupsenabled": false,
            "dynamicrolesenabled": true,
            "userpublictemplateenabled": false,
            "supportELB": "false",
            "projectinviterequired": false,
            "allowusercreateprojects": false,
            "customdiskofferingminsize": 1,
            "customdiskofferingmaxsize": 1024,
            "regionsecondaryenabled": false,
            "kvmsnapshotenabled": false,
            "snapshotshowchainsize": false,
            "allowuserviewdestroyedvm": true,
            "allowuserexpungerecovervm": per_account("allow.user.expunge.recover.vm"),
            "allowuserexpungerecovervolume": false,
            "allowuserviewalldomainaccounts": false,
            "allowuserforcestopvm": true,
            "kubernetesserviceenabled": false,
            "kubernetesclusterexperimentalfeaturesenabled": false,
            "customhypervisordisplayname": "Custom",
            "defaultuipagesize": 20,
            "instancesstatsretentiontime": svc.setting_i64("vm.stats.max.retention.time"),
            "instancesstatsuseronly": svc.setting_bool("vm.stats.user.vm.only"),
            "instancesdisksstatsretentionenabled": svc.setting_bool("vm.disk.stats.retention.enabled"),
            "instancesdisksstatsretentiontime": svc.setting_i64("vm.disk.stats.max.retention.time"),
            "sharedfsvmmincpucount": 0,
            "sharedfsvmminramsize": 0,
            "instanceleaseenabled": svc.setting_bool("instance.lease.enabled"),
            "dynamicscalingenabled": svc.setting_bool("enable.dynamic.scale.vm"),
            "additionalconfigenabled": true,
        }),
    ))
}

async fn hypervisors(ctx: Ctx) -> Result<Reply, ApiError> {
    let names = ctx
        .svc
        .infrastructure
        .hypervisors_in_use(ctx.p.str("zoneid"))
        .await?;
    let items: Vec<serde_json::Value> = names.iter().map(|n| json!({"name": n})).collect();
    let n = items.len() as u64;
    Ok(Reply::List("hypervisor", items, n))
}
