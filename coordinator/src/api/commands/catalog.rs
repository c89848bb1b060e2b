//! Service and disk offerings, OS types, templates and ISOs.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::{date, Obj, Reply};
use crate::cmd;
use crate::service::catalog::{
    NewTemplate, OsFilter, TemplateFilter, TemplateUpdate, TemplateView,
};
use crate::service::offerings::{
    NewDiskOffering, NewServiceOffering, OfferingFilter, OfferingUpdate,
};
use serde_json::{json, Value};

const SO_FIELDS: &[Field] = &[
    f("id", "string", "offering ID"),
    f("name", "string", "name"),
    f("displaytext", "string", "description"),
    f("cpunumber", "integer", "CPUs"),
    f("cpuspeed", "integer", "MHz"),
    f("memory", "integer", "MB"),
    f("iscustomized", "boolean", "custom size"),
    f("offerha", "boolean", "HA"),
    f("leaseduration", "integer", "lease days of instances"),
    f("leaseexpiryaction", "string", "lease expiry action"),
    f("hosttags", "string", "host tags"),
];
const DO_FIELDS: &[Field] = &[
    f("id", "string", "offering ID"),
    f("name", "string", "name"),
    f("disksize", "long", "GB"),
    f("iscustomized", "boolean", "custom size"),
];
const OS_FIELDS: &[Field] = &[
    f("id", "string", "ID"),
    f("description", "string", "name"),
    f("oscategoryid", "string", "category"),
];
const T_FIELDS: &[Field] = &[
    f("id", "string", "template ID"),
    f("name", "string", "name"),
    f("displaytext", "string", "description"),
    f("format", "string", "QCOW2, RAW or ISO"),
    f("isready", "boolean", "ready for use"),
    f("status", "string", "download status"),
    f("size", "long", "virtual size in bytes"),
    f("ostypeid", "string", "OS type"),
];
const SUCCESS: &[Field] = &[f("success", "boolean", "true on success")];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createServiceOffering",
            "Creates a service offering: fixed, or custom within limits.",
            false,
            Admins,
            &[
                req("name", "string", "name"),
                opt("displaytext", "string", "description"),
                opt("cpunumber", "integer", "CPUs; leave out for custom"),
                opt("cpuspeed", "integer", "MHz"),
                opt("memory", "integer", "MB; leave out for custom"),
                opt("customized", "boolean", "custom size"),
                opt("mincpunumber", "integer", "custom minimum CPUs"),
                opt("maxcpunumber", "integer", "custom maximum CPUs"),
                opt("minmemory", "integer", "custom minimum MB"),
                opt("maxmemory", "integer", "custom maximum MB"),
                opt("offerha", "boolean", "HA"),
                opt("limitcpuuse", "boolean", "cap CPU use"),
                opt("hosttags", "string", "host tags"),
                opt("tags", "string", "storage tags"),
                opt("dynamicscalingenabled", "boolean", "dynamic scaling"),
                opt(
                    "isvolatile",
                    "boolean",
                    "reset the root disk from the template on every reboot"
                ),
                opt("storagetype", "string", "shared or local"),
                opt("rootdisksize", "long", "root disk GB"),
                opt(
                    "gpucount",
                    "integer",
                    "whole GPUs (PCI passthrough) per instance, 1-16"
                ),
                opt(
                    "gpudisplay",
                    "boolean",
                    "the GPU is the instance's display (no emulated video)"
                ),
                opt(
                    "serviceofferingdetails",
                    "map",
                    "vgpuType: a vGPU (mediated device) type instead of whole GPUs"
                ),
                opt("issystem", "boolean", "system offering"),
                opt(
                    "leaseduration",
                    "integer",
                    "days of the lease instances get (1-36500, -1 none)"
                ),
                opt(
                    "leaseexpiryaction",
                    "string",
                    "STOP or DESTROY when the lease expires"
                ),
                opt(
                    "domainid",
                    "list",
                    "domains the offering is for; left out, it is global (root admins only)"
                )
            ],
            SO_FIELDS,
            create_so
        ),
        cmd!(
            "listServiceOfferings",
            "Lists service offerings.",
            false,
            All,
            &[
                opt("id", "uuid", "offering"),
                opt("name", "string", "name"),
                opt("issystem", "boolean", "system offerings"),
                opt("domainid", "uuid", "only offerings of this domain"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            SO_FIELDS,
            list_so
        ),
        cmd!(
            "updateServiceOffering",
            "Updates a service offering's name, description and host tags.",
            false,
            Admins,
            &[
                req("id", "uuid", "offering"),
                opt("name", "string", "name"),
                opt("displaytext", "string", "description"),
                opt("hosttags", "string", "host tags")
            ],
            SO_FIELDS,
            update_so
        ),
        cmd!(
            "deleteServiceOffering",
            "Deletes a service offering; instances using it keep it.",
            false,
            Admins,
            &[req("id", "uuid", "offering")],
            SUCCESS,
            delete_so
        ),
        cmd!(
            "createDiskOffering",
            "Creates a disk offering.",
            false,
            Admins,
            &[
                req("name", "string", "name"),
                opt("displaytext", "string", "description"),
                opt("disksize", "long", "GB"),
                opt("customized", "boolean", "custom size"),
                opt("tags", "string", "storage tags"),
                opt(
                    "domainid",
                    "list",
                    "domains the offering is for; left out, it is global (root admins only)"
                )
            ],
            DO_FIELDS,
            create_do
        ),
        cmd!(
            "updateDiskOffering",
            "Updates a disk offering's name and description.",
            false,
            Admins,
            &[
                req("id", "uuid", "offering"),
                opt("name", "string", "name"),
                opt("displaytext", "string", "description")
            ],
            DO_FIELDS,
            update_do
        ),
        cmd!(
            "deleteDiskOffering",
            "Deletes a disk offering; volumes made from it keep their size.",
            false,
            Admins,
            &[req("id", "uuid", "offering")],
            SUCCESS,
            delete_do
        ),
        cmd!(
            "listDiskOfferings",
            "Lists disk offerings.",
            false,
            All,
            &[
                opt("id", "uuid", "offering"),
                opt("name", "string", "name"),
                opt("domainid", "uuid", "only offerings of this domain"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            DO_FIELDS,
            list_do
        ),
        cmd!(
            "listOsTypes",
            "Lists OS types.",
            false,
            All,
            &[
                opt("id", "uuid", "OS type"),
                opt("oscategoryid", "uuid", "category"),
                opt("description", "string", "name"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            OS_FIELDS,
            list_os_types
        ),
        cmd!(
            "listOsCategories",
            "Lists OS categories.",
            false,
            All,
            &[
                opt("id", "uuid", "category"),
                opt("name", "string", "name"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            OS_FIELDS,
            list_os_categories
        ),
        cmd!(
            "registerTemplate",
            "Registers a template from a local path or an http(s) URL into secondary storage.",
            false,
            All,
            &[
                req("name", "string", "name"),
                req("displaytext", "string", "description"),
                req(
                    "url",
                    "string",
                    "http(s) URL; root admins may also give a file:// URL or an absolute path"
                )
                .len(2048),
                req("format", "string", "QCOW2, RAW, VHD, OVA"),
                req("hypervisor", "string", "KVM, Simulator, VMware"),
                opt("ostypeid", "uuid", "OS type"),
                opt("zoneid", "uuid", "zone; -1 or left out for all"),
                opt("checksum", "string", "{MD5}, {SHA-256} or bare hex"),
                opt("ispublic", "boolean", "public"),
                opt("isfeatured", "boolean", "featured"),
                opt("passwordenabled", "boolean", "password reset"),
                opt(
                    "isdynamicallyscalable",
                    "boolean",
                    "tools installed for scaling"
                ),
                opt("account", "string", "owner"),
                opt("domainid", "uuid", "owner's domain")
            ],
            T_FIELDS,
            register_template
        ),
        cmd!(
            "registerIso",
            "Registers an ISO.",
            false,
            All,
            &[
                req("name", "string", "name"),
                req("displaytext", "string", "description"),
                req(
                    "url",
                    "string",
                    "http(s) URL; root admins may also give a file:// URL or an absolute path"
                )
                .len(2048),
                opt("ostypeid", "uuid", "OS type"),
                opt("zoneid", "uuid", "zone"),
                opt("checksum", "string", "checksum"),
                opt("ispublic", "boolean", "public"),
                opt("bootable", "boolean", "bootable")
            ],
            T_FIELDS,
            register_iso
        ),
        cmd!(
            "listTemplates",
            "Lists templates.",
            false,
            All,
            &[
                req(
                    "templatefilter",
                    "string",
                    "featured, self, selfexecutable, sharedexecutable, executable, community, all"
                ),
                opt("id", "uuid", "template"),
                opt("ids", "list", "templates"),
                opt("showicon", "boolean", "include each template's icon"),
                opt("name", "string", "name"),
                opt("zoneid", "uuid", "zone"),
                opt("hypervisor", "string", "hypervisor"),
                opt("isready", "boolean", "ready only"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            T_FIELDS,
            list_templates
        ),
        cmd!(
            "listIsos",
            "Lists ISOs.",
            false,
            All,
            &[
                opt("isofilter", "string", "filter"),
                opt("id", "uuid", "ISO"),
                opt("name", "string", "name"),
                opt("zoneid", "uuid", "zone"),
                opt("isready", "boolean", "ready only"),
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            T_FIELDS,
            list_isos
        ),
        cmd!(
            "updateTemplate",
            "Updates a template.",
            false,
            All,
            &[
                req("id", "uuid", "template"),
                opt("name", "string", "name"),
                opt("displaytext", "string", "description"),
                opt("ostypeid", "uuid", "OS type"),
                opt("passwordenabled", "boolean", "password reset"),
                opt(
                    "isdynamicallyscalable",
                    "boolean",
                    "tools installed for dynamic scaling"
                ),
                opt("bootable", "boolean", "bootable")
            ],
            T_FIELDS,
            update_template
        ),
        cmd!(
            "deleteTemplate",
            "Deletes a template.",
            true,
            All,
            &[req("id", "uuid", "template"), opt("zoneid", "uuid", "zone")],
            SUCCESS,
            delete_template
        ),
    ]
}

fn domain_fields(x: Obj, domains: &[Domain]) -> Obj {
    if domains.is_empty() {
        return x;
    }
    let ids: Vec<&str> = domains.iter().map(|d| d.uuid.as_str()).collect();
    let names: Vec<&str> = domains.iter().map(|d| d.name.as_str()).collect();
    x.s("domainid", ids.join(",")).s("domain", names.join(","))
}

fn so_json(o: &ServiceOffering, domains: &[Domain]) -> Value {
    let x = Obj::new()
        .s("id", &o.uuid)
        .s("name", &o.name)
        .s("displaytext", &o.display_text)
        .ov("cpunumber", o.cpu_number)
        .ov("cpuspeed", o.cpu_speed)
        .ov("memory", o.memory)
        .v("iscustomized", o.customized)
        .v("offerha", o.offer_ha)
        .v("limitcpuuse", o.limit_cpu_use)
        .os("hosttags", o.host_tags.clone())
        .os("storagetags", o.storage_tags.clone())
        .v("dynamicscalingenabled", o.dynamic_scaling)
        .v("isvolatile", o.volatile)
        .when(o.gpu_count > 0 || o.vgpu_type.is_some(), |x| {
            x.v("gpucount", o.gpu_count.max(1))
                .v("gpudisplay", o.gpu_display)
                .os("vgpuprofilename", o.vgpu_type.clone())
                .v(
                    "serviceofferingdetails",
                    match &o.vgpu_type {
                        Some(t) => json!({"vgpuType": t}),
                        None => json!({"pciDevice": "passthrough"}),
                    },
                )
        })
        .s("storagetype", &o.storage_type)
        .s("provisioningtype", "thin")
        .v("iscustomizediops", false)
        .v("diskofferingstrictness", false)
        .v("encryptroot", false)
        .v("issystem", o.is_system)
        .ov("leaseduration", o.lease_duration)
        .os("leaseexpiryaction", o.lease_expiry_action.clone())
        .s("state", &o.state)
        .s("created", date(o.created))
        .when(o.customized, |x| {
            x.ov("mincpunumber", o.min_cpu)
                .ov("maxcpunumber", o.max_cpu)
                .ov("minmemory", o.min_memory)
                .ov("maxmemory", o.max_memory)
        })
        .ov("rootdisksize", o.root_disk_size);
    domain_fields(x, domains).build()
}

async fn so_reply(ctx: &Ctx, o: &ServiceOffering) -> Result<Value, ApiError> {
    Ok(so_json(o, &ctx.svc.catalog.offering_domains(o).await?))
}

/// `domainid`: one uuid or a comma-separated list; absent for a global record.
fn domain_list(ctx: &Ctx) -> Vec<String> {
    ctx.p.list("domainid")
}

fn decode_new_so(ctx: &Ctx) -> Result<NewServiceOffering, ApiError> {
    let storage = ctx.p.str("storagetype").unwrap_or("shared").to_lowercase();
    if storage != "shared" && storage != "local" {
        return Err(ApiError::param(
            "Invalid value for parameter storagetype: use shared or local",
        ));
    }
    let (lease_duration, lease_expiry_action) = offering_lease(ctx)?;
    Ok(NewServiceOffering {
        name: ctx.p.required("name")?.to_string(),
        display_text: ctx.p.string("displaytext"),
        cpu_number: ctx.p.i64_range("cpunumber", 1, 1024)?,
        cpu_speed: ctx.p.i64_range("cpuspeed", 1, 1_000_000)?,
        memory: ctx.p.i64_range("memory", 32, 16 * 1024 * 1024)?,
        customized: ctx.p.bool("customized"),
        min_cpu: ctx.p.i64_range("mincpunumber", 1, 1024)?,
        max_cpu: ctx.p.i64_range("maxcpunumber", 1, 1024)?,
        min_memory: ctx.p.i64_range("minmemory", 32, 16 * 1024 * 1024)?,
        max_memory: ctx.p.i64_range("maxmemory", 32, 16 * 1024 * 1024)?,
        offer_ha: ctx.p.bool_or("offerha", false),
        limit_cpu_use: ctx.p.bool_or("limitcpuuse", false),
        host_tags: ctx.p.string("hosttags"),
        storage_tags: ctx.p.string("tags"),
        dynamic_scaling: ctx.p.bool_or("dynamicscalingenabled", true),
        volatile: ctx.p.bool_or("isvolatile", false),
        gpu_count: ctx.p.i64_range("gpucount", 1, 16)?.unwrap_or(0),
        gpu_display: ctx.p.bool_or("gpudisplay", false),
        vgpu_type: ctx
            .p
            .map_merged("serviceofferingdetails")
            .get("vgpuType")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("passthrough")),
        storage_type: storage,
        root_disk_size: ctx.p.i64_range("rootdisksize", 1, 1 << 20)?,
        is_system: ctx.p.bool_or("issystem", false),
        lease_duration,
        lease_expiry_action,
        domains: domain_list(ctx),
    })
}

async fn create_so(ctx: Ctx) -> Result<Reply, ApiError> {
    let req = decode_new_so(&ctx)?;
    let o = ctx
        .svc
        .catalog
        .create_service_offering(&ctx.caller, req)
        .await?;
    Ok(Reply::Object("serviceoffering", so_reply(&ctx, &o).await?))
}

fn decode_filter(ctx: &Ctx) -> Result<OfferingFilter, ApiError> {
    Ok(OfferingFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        domain: ctx.p.string("domainid"),
        page: paging(ctx)?,
    })
}

async fn list_so(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = decode_filter(&ctx)?;
    let (os, total) = ctx
        .svc
        .catalog
        .list_offerings::<ServiceOffering>(&ctx.caller, &f)
        .await?;
    let mut items = Vec::with_capacity(os.len());
    for o in &os {
        items.push(so_reply(&ctx, o).await?);
    }
    Ok(Reply::List("serviceoffering", items, total))
}

fn decode_update(ctx: &Ctx) -> OfferingUpdate {
    OfferingUpdate {
        name: ctx.p.string("name"),
        display_text: ctx.p.string("displaytext"),
        host_tags: ctx.p.raw("hosttags").map(|_| ctx.p.string("hosttags")),
    }
}

async fn update_so(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    let o = ctx
        .svc
        .catalog
        .update_offering::<ServiceOffering>(&ctx.caller, id, decode_update(&ctx))
        .await?;
    Ok(Reply::Object("serviceoffering", so_reply(&ctx, &o).await?))
}

async fn delete_so(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    ctx.svc
        .catalog
        .delete_offering::<ServiceOffering>(&ctx.caller, id)
        .await?;
    Ok(Reply::Success(None))
}

fn do_json(o: &DiskOffering, domains: &[Domain]) -> Value {
    let x = Obj::new()
        .s("id", &o.uuid)
        .s("name", &o.name)
        .s("displaytext", &o.display_text)
        .v("disksize", o.disk_size_gb)
        .v("iscustomized", o.customized)
        .s("storagetype", &o.storage_type)
        .s("provisioningtype", "thin")
        .v("iscustomizediops", false)
        .v("disksizestrictness", false)
        .v("encrypt", false)
        .os("tags", o.tags.clone())
        .s("state", &o.state)
        .s("created", date(o.created));
    domain_fields(x, domains).build()
}

async fn do_reply(ctx: &Ctx, o: &DiskOffering) -> Result<Value, ApiError> {
    Ok(do_json(o, &ctx.svc.catalog.offering_domains(o).await?))
}

async fn create_do(ctx: Ctx) -> Result<Reply, ApiError> {
    let req = NewDiskOffering {
        name: ctx.p.required("name")?.to_string(),
        display_text: ctx.p.string("displaytext"),
        disk_size_gb: ctx.p.i64_range("disksize", 1, 1 << 20)?,
        customized: ctx.p.bool("customized"),
        tags: ctx.p.string("tags"),
        domains: domain_list(&ctx),
    };
    let o = ctx
        .svc
        .catalog
        .create_disk_offering(&ctx.caller, req)
        .await?;
    Ok(Reply::Object("diskoffering", do_reply(&ctx, &o).await?))
}

async fn update_do(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    let o = ctx
        .svc
        .catalog
        .update_offering::<DiskOffering>(&ctx.caller, id, decode_update(&ctx))
        .await?;
    Ok(Reply::Object("diskoffering", do_reply(&ctx, &o).await?))
}

async fn delete_do(ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.p.required("id")?;
    ctx.svc
        .catalog
        .delete_offering::<DiskOffering>(&ctx.caller, id)
        .await?;
    Ok(Reply::Success(None))
}

async fn list_do(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = decode_filter(&ctx)?;
    let (os, total) = ctx
        .svc
        .catalog
        .list_offerings::<DiskOffering>(&ctx.caller, &f)
        .await?;
    let mut items = Vec::with_capacity(os.len());
    for o in &os {
        items.push(do_reply(&ctx, o).await?);
    }
    Ok(Reply::List("diskoffering", items, total))
}

fn os_filter(ctx: &Ctx, name_param: &str) -> Result<OsFilter, ApiError> {
    Ok(OsFilter {
        id: ctx.p.string("id"),
        name: ctx.p.str(name_param).map(str::to_string),
        keyword: ctx.p.string("keyword"),
        category: ctx.p.string("oscategoryid"),
        page: paging(ctx)?,
    })
}

async fn list_os_types(ctx: Ctx) -> Result<Reply, ApiError> {
    let (ts, total) = ctx
        .svc
        .catalog
        .list_os_types(&os_filter(&ctx, "description")?)
        .await?;
    let mut items = Vec::new();
    for t in &ts {
        let c: Option<OsCategory> = ctx.svc.load_cached(t.category_id).await?;
        items.push(
            Obj::new()
                .s("id", &t.uuid)
                .s("description", &t.description)
                .s("name", &t.description)
                .os("oscategoryid", c.as_ref().map(|c| c.uuid.clone()))
                .os("oscategoryname", c.map(|c| c.name))
                .v("isuserdefined", t.is_user_defined)
                .build(),
        );
    }
    Ok(Reply::List("ostype", items, total))
}

async fn list_os_categories(ctx: Ctx) -> Result<Reply, ApiError> {
    let (cs, total) = ctx
        .svc
        .catalog
        .list_os_categories(&os_filter(&ctx, "name")?)
        .await?;
    Ok(Reply::List(
        "oscategory",
        cs.iter()
            .map(|c| json!({"id": c.uuid, "name": c.name}))
            .collect(),
        total,
    ))
}

pub(crate) async fn template_json(ctx: &Ctx, t: &Template) -> Result<Value, ApiError> {
    Ok(crate::api::views::template(&ctx.svc, t).await?)
}

async fn register(ctx: Ctx, iso: bool) -> Result<Reply, ApiError> {
    let name = ctx.p.required("name")?.to_string();
    let url = ctx.p.required("url")?.to_string();
    let format = if iso {
        "ISO".to_string()
    } else {
        let f = ctx.p.required("format")?.to_uppercase();
        if !["QCOW2", "RAW", "VHD", "OVA", "VMDK"].contains(&f.as_str()) {
            return Err(ApiError::param(format!(
                "Invalid value for parameter format: {f}; use QCOW2, RAW, VHD, OVA or VMDK"
            )));
        }
        f
    };
    let hypervisor = if iso {
        "None".to_string()
    } else {
        let h = ctx.p.required("hypervisor")?;
        ["KVM", "Simulator", "VMware", "XenServer", "None"]
            .iter()
            .find(|x| x.eq_ignore_ascii_case(h))
            .map(|x| x.to_string())
            .ok_or_else(|| {
                ApiError::param(format!("Invalid value for parameter hypervisor: {h}"))
            })?
    };
    let checksum = ctx
        .p
        .str("checksum")
        .map(crate::service::templates::Checksum::parse)
        .transpose()
        .map_err(ApiError::param)?;
    let t = ctx
        .svc
        .catalog
        .register_template(
            &ctx.caller,
            NewTemplate {
                name,
                display_text: ctx.p.required("displaytext")?.to_string(),
                url,
                format,
                iso,
                hypervisor,
                checksum,
                os_type: ctx.p.string("ostypeid"),
                zone: ctx.p.string("zoneid"),
                account: ctx.p.string("account"),
                domain: ctx.p.string("domainid"),
                public: ctx.p.bool_or("ispublic", false),
                featured: ctx.p.bool_or("isfeatured", false),
                password_enabled: ctx.p.bool_or("passwordenabled", false),
                dynamically_scalable: ctx.p.bool_or("isdynamicallyscalable", false),
                bootable: ctx.p.bool_or("bootable", true),
            },
        )
        .await?;
    Ok(Reply::List(
        if iso { "iso" } else { "template" },
        vec![template_json(&ctx, &t).await?],
        1,
    ))
}

async fn register_template(ctx: Ctx) -> Result<Reply, ApiError> {
    register(ctx, false).await
}
async fn register_iso(ctx: Ctx) -> Result<Reply, ApiError> {
    register(ctx, true).await
}

async fn list_t(ctx: Ctx, iso: bool) -> Result<Reply, ApiError> {
    let view: TemplateView = if iso {
        ctx.p.str("isofilter").unwrap_or("executable")
    } else {
        ctx.p.required("templatefilter")?
    }
    .parse()?;
    let f = TemplateFilter {
        iso,
        view,
        id: ctx.p.string("id"),
        ids: ctx.p.list("ids"),
        name: ctx.p.string("name"),
        keyword: ctx.p.string("keyword"),
        zone: ctx.p.string("zoneid"),
        hypervisor: ctx.p.string("hypervisor"),
        ready_only: ctx.p.bool("isready") == Some(true),
        page: paging(&ctx)?,
    };
    let (slice, total) = ctx.svc.catalog.list_templates(&ctx.caller, &f).await?;
    let mut items = Vec::new();
    for t in &slice {
        let mut item = template_json(&ctx, t).await?;
        if ctx.p.bool("showicon") == Some(true) {
            let ty = if t.is_iso { "ISO" } else { "Template" };
            super::ui::add_icon(&ctx, &mut item, ty, &t.uuid).await?;
        }
        items.push(item);
    }
    Ok(Reply::List(
        if iso { "iso" } else { "template" },
        items,
        total,
    ))
}

async fn list_templates(ctx: Ctx) -> Result<Reply, ApiError> {
    list_t(ctx, false).await
}
async fn list_isos(ctx: Ctx) -> Result<Reply, ApiError> {
    list_t(ctx, true).await
}

async fn update_template(ctx: Ctx) -> Result<Reply, ApiError> {
    let u = TemplateUpdate {
        name: ctx.p.string("name"),
        display_text: ctx.p.string("displaytext"),
        os_type: ctx.p.string("ostypeid"),
        password_enabled: ctx.p.bool("passwordenabled"),
        dynamically_scalable: ctx.p.bool("isdynamicallyscalable"),
        bootable: ctx.p.bool("bootable"),
    };
    let t = ctx
        .svc
        .catalog
        .update_template(&ctx.caller, ctx.p.required("id")?, u)
        .await?;
    Ok(Reply::Object("template", template_json(&ctx, &t).await?))
}

async fn delete_template(ctx: Ctx) -> Result<Reply, ApiError> {
    let job = ctx
        .svc
        .delete_template(
            &ctx.caller,
            ctx.p.required("id")?,
            ctx.p.bool_or("forced", false),
        )
        .await?;
    Ok(Reply::Async { job, id: None })
}

/// An offering's lease: both parameters, or -1 / nothing for none.
fn offering_lease(ctx: &Ctx) -> Result<(Option<i64>, Option<String>), ApiError> {
    let req = orrery_schedule::lease::validate_lease_params(
        ctx.p.i64("leaseduration")?,
        ctx.p.str("leaseexpiryaction"),
    )
    .map_err(|e| crate::service::leases::lease_error(&e))?;
    Ok(match (req.duration, req.action) {
        (Some(orrery_schedule::lease::LeaseDuration::Days(d)), Some(a)) => {
            (Some(i64::from(d)), Some(a.as_str().to_string()))
        }
        _ => (None, None),
    })
}
