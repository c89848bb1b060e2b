//! The console: `createConsoleEndpoint` answers a one-time URL for the
//! console proxy's noVNC page and its WebSocket.

use super::*;
use crate::api::registry::{f, opt, req};
use crate::api::render::Reply;
use crate::cmd;
use serde_json::json;

pub fn commands() -> Vec<Command> {
    vec![cmd!(
        "createConsoleEndpoint",
        "Creates a one-time console URL for a running instance (noVNC through the console proxy).",
        false,
        All,
        &[
            req("virtualmachineid", "uuid", "instance"),
            opt(
                "token",
                "string",
                "extra data for the console proxy (ignored)"
            )
        ],
        &[
            f("success", "boolean", "whether the endpoint was created"),
            f("url", "string", "the console page, with its one-time token"),
            f(
                "websocket",
                "map",
                "token, host, port, path of the WebSocket"
            )
        ],
        create_endpoint
    )]
}

async fn create_endpoint(ctx: Ctx) -> Result<Reply, ApiError> {
    let e = ctx
        .svc
        .guest_access
        .create_console_endpoint(&ctx.caller, ctx.p.required("virtualmachineid")?)
        .await?;
    Ok(Reply::Object(
        "consoleendpoint",
        json!({
            "success": true,
            "url": e.url,
            "websocket": {"token": e.token, "host": e.host, "port": e.port, "path": e.path},
        }),
    ))
}
