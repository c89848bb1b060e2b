//! SSH key pairs: create, register, list, delete, and resetting an
//! instance's.

use super::*;
use crate::api::registry::{f, opt, req, Field, PAGING};
use crate::api::render::Reply;
use crate::cmd;
use crate::service::sshkeys::KeyPairFilter;

const KEYPAIR_FIELDS: &[Field] = &[
    f("id", "string", "key pair ID"),
    f("name", "string", "name, unique in the account"),
    f(
        "fingerprint",
        "string",
        "MD5 of the public key, colon-separated hex",
    ),
    f(
        "privatekey",
        "string",
        "the private key (createSSHKeyPair only, once)",
    ),
    f("account", "string", "owner account"),
    f("domainid", "string", "owner domain ID"),
    f("domain", "string", "owner domain"),
];

const OWNER: [crate::api::registry::P; 2] = [
    opt("account", "string", "owner account, with domainid"),
    opt("domainid", "uuid", "owner domain"),
];

pub fn commands() -> Vec<Command> {
    vec![
        cmd!(
            "createSSHKeyPair",
            "Creates an SSH key pair; the private key is returned this once.",
            false,
            All,
            &[
                req("name", "string", "name, unique in the account"),
                OWNER[0],
                OWNER[1]
            ],
            KEYPAIR_FIELDS,
            create
        ),
        cmd!(
            "registerSSHKeyPair",
            "Registers a public key (RSA, ECDSA or Ed25519, OpenSSH format) as a key pair.",
            false,
            All,
            &[
                req("name", "string", "name, unique in the account"),
                req("publickey", "string", "the public key, OpenSSH format").len(5120),
                OWNER[0],
                OWNER[1]
            ],
            KEYPAIR_FIELDS,
            register
        ),
        cmd!(
            "listSSHKeyPairs",
            "Lists SSH key pairs.",
            false,
            All,
            &[
                opt("id", "uuid", "key pair"),
                opt("name", "string", "name"),
                opt("fingerprint", "string", "fingerprint"),
                opt("listall", "boolean", "all visible"),
                opt("isrecursive", "boolean", "include subdomains"),
                OWNER[0],
                OWNER[1],
                PAGING[0],
                PAGING[1],
                PAGING[2]
            ],
            KEYPAIR_FIELDS,
            list
        ),
        cmd!(
            "deleteSSHKeyPair",
            "Deletes an SSH key pair; instances keep the keys they were given.",
            false,
            All,
            &[req("name", "string", "name"), OWNER[0], OWNER[1]],
            &[f("success", "boolean", "true")],
            delete
        ),
        Command {
            response_key: Some("resetSSHKeyforvirtualmachineresponse"),
            ..cmd!(
                "resetSSHKeyForVirtualMachine",
                "Gives a stopped instance new SSH key pairs of its owner, for its next start.",
                true,
                All,
                &[
                    req("id", "uuid", "instance"),
                    opt("keypair", "string", "key pair name"),
                    opt("keypairs", "list", "key pair names"),
                    OWNER[0],
                    OWNER[1]
                ],
                super::vm::VM_FIELDS,
                reset
            )
        },
    ]
}

async fn one(ctx: &Ctx, k: &SshKeyPair, private: Option<String>) -> Result<Reply, ApiError> {
    let mut v = crate::api::views::ssh_keypair(&ctx.svc, k).await?;
    if let (Some(p), Some(o)) = (private, v.as_object_mut()) {
        o.insert("privatekey".into(), serde_json::Value::String(p));
    }
    Ok(Reply::Object("keypair", v))
}

async fn create(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let (k, private) = ctx
        .svc
        .guest_access
        .create_ssh_keypair(&ctx.caller, &owner, ctx.p.required("name")?)
        .await?;
    one(&ctx, &k, Some(private)).await
}

async fn register(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    let k = ctx
        .svc
        .guest_access
        .register_ssh_keypair(
            &ctx.caller,
            &owner,
            ctx.p.required("name")?,
            ctx.p.required("publickey")?,
        )
        .await?;
    one(&ctx, &k, None).await
}

async fn list(ctx: Ctx) -> Result<Reply, ApiError> {
    let f = KeyPairFilter {
        id: ctx.p.string("id"),
        name: ctx.p.string("name"),
        fingerprint: ctx.p.string("fingerprint"),
        keyword: ctx.p.string("keyword"),
        page: paging(&ctx)?,
    };
    let (pairs, total) = ctx
        .svc
        .guest_access
        .list_ssh_keypairs(&ctx.caller, &scope_of(&ctx), &f)
        .await?;
    let mut items = Vec::new();
    for k in &pairs {
        items.push(crate::api::views::ssh_keypair(&ctx.svc, k).await?);
    }
    Ok(Reply::List("sshkeypair", items, total))
}

async fn delete(ctx: Ctx) -> Result<Reply, ApiError> {
    let owner = owner(&ctx).await?;
    ctx.svc
        .guest_access
        .delete_ssh_keypair(&ctx.caller, &owner, ctx.p.required("name")?)
        .await?;
    Ok(Reply::Success(None))
}

async fn reset(ctx: Ctx) -> Result<Reply, ApiError> {
    let mut names = ctx.p.list("keypairs");
    if let Some(k) = ctx.p.str("keypair") {
        if !names.iter().any(|x| x == k) {
            names.push(k.to_string());
        }
    }
    let vm = ctx
        .svc
        .guest_access
        .reset_ssh_keys(&ctx.caller, ctx.p.required("id")?, &names)
        .await?;
    let job = ctx
        .svc
        .done_job_with(
            &ctx.caller,
            "resetSSHKeyForVirtualMachine",
            "VirtualMachine",
            &vm.uuid,
            crate::service::jobs::JobOutput::Vm { id: vm.id },
        )
        .await?;
    Ok(Reply::Async {
        job,
        id: Some(vm.uuid),
    })
}
