//! The CloudStack wire layer: request decoding, authentication, dispatch through
//! the command table, envelopes and errors.

pub mod commands;
pub mod params;
pub mod registry;
pub mod render;
pub mod signature;
pub mod static_ui;
pub mod validate;
pub mod views;

use crate::error::ApiError;
use crate::service::{Caller, Service};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use params::Params;
use registry::{Access, Command, Ctx};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub struct Api {
    pub svc: Arc<Service>,
    pub commands: HashMap<&'static str, &'static Command>,
}

impl Api {
    pub fn new(svc: Arc<Service>) -> Arc<Self> {
        let commands = commands::all().iter().map(|c| (c.name, c)).collect();
        Arc::new(Api { svc, commands })
    }
}

/// The API router, with a built web UI served at `/` when `ui` is given.
pub fn router_with_ui(api: Arc<Api>, ui: Option<&std::path::Path>) -> std::io::Result<Router> {
    let r = router(api);
    Ok(match ui {
        Some(dir) => r.merge(static_ui::router(dir)?),
        None => r,
    })
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/client/api", get(handle).post(handle))
        .route("/client/api/", get(handle).post(handle))
        .route("/client/console", get(console_access))
        .with_state(api)
}

/// CloudStack's older console URL, `/client/console?cmd=access&vm=<id>`,
/// authenticated as an API request (a signed request, or the session with
/// its `sessionkey`): redirects to a one-time console URL, as
/// `createConsoleEndpoint` would answer.
async fn console_access(
    State(api): State<Arc<Api>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = request_pairs(query.as_deref().unwrap_or(""), "");
    let params = Params::from_pairs(pairs.clone());
    let plain = |status: StatusCode, text: String| (status, text).into_response();
    if params.raw("cmd") != Some("access") {
        return plain(
            StatusCode::BAD_REQUEST,
            "Invalid value for parameter cmd: only access is served".into(),
        );
    }
    let Some(vm) = params.raw("vm").filter(|v| !v.is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "Missing parameter vm".into());
    };
    let session = session_key(&params, &headers);
    let caller = match authenticate(&api, &method, &pairs, &params, session).await {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::UNAUTHORIZED, e.text),
    };
    match api
        .svc
        .guest_access
        .create_console_endpoint(&caller, vm)
        .await
    {
        Ok(e) => (StatusCode::FOUND, [(header::LOCATION, e.url)]).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            plain(
                StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST),
                e.with_command("console").text,
            )
        }
    }
}

/// `/metrics` alone, for its own listener (see docs/metrics.md).
pub fn metrics_router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(api)
}

const JSON_TYPE: &str = "application/json; charset=UTF-8";

fn reply(status: u16, body: Value, extra: Vec<(header::HeaderName, String)>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE));
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

fn error_reply(key: &str, e: &ApiError) -> Response {
    let mut extra = Vec::new();
    // Header values must be visible ASCII.
    let desc: String = e
        .text
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect();
    extra.push((header::HeaderName::from_static("x-description"), desc));
    reply(e.code, json!({ key: e.body() }), extra)
}

fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A request's parameters: the query string, then a POST form body. The first
/// value of a repeated name wins, for the signature as for dispatch.
pub fn request_pairs(query: &str, body: &str) -> Vec<(String, String)> {
    let mut pairs = decode_pairs(query);
    pairs.extend(decode_pairs(body));
    let mut seen = std::collections::HashSet::new();
    pairs.retain(|(k, _)| seen.insert(k.clone()));
    pairs
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// Prometheus scrapes this; see docs/metrics.md.
/// Liveness: the process answers.
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Readiness: the store answers a read within two seconds.
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), api.svc.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store: {}\n", e.text()),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store: no answer within 2 s\n",
        )
            .into_response(),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    match crate::metrics::render(&api.svc).await {
        Ok(text) => {
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.text()).into_response(),
    }
}

async fn handle(
    State(api): State<Arc<Api>>,
    peer: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let body = if method == Method::POST {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        String::new()
    };
    let pairs = request_pairs(query.as_deref().unwrap_or(""), &body);
    let params = Params::from_pairs(pairs.clone());
    let command_name = params.raw("command").unwrap_or("").to_string();
    let cmd = api.commands.get(command_name.as_str()).copied();
    let key = cmd
        .map(|c| c.key())
        .unwrap_or_else(|| "errorresponse".into());

    if !params
        .raw("response")
        .map(|r| r.eq_ignore_ascii_case("json"))
        .unwrap_or(false)
    {
        return error_reply(
            &key,
            &ApiError::new(
                431,
                9999,
                "Only JSON responses are served: add response=json to the request",
            ),
        );
    }
    if command_name.is_empty() {
        return error_reply(&key, &ApiError::new(400, 9999, "Missing parameter command"));
    }

    if command_name == "login" {
        let source = peer
            .map(|p| p.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        return login(&api, &params, &key, source).await;
    }

    // Asked before anyone logs in: the UI's themes (none), and password
    // reset by e-mail (not offered: no mail server is configured).
    if command_name.eq_ignore_ascii_case("listGuiThemes") {
        return reply(200, json!({"listguithemesresponse": {}}), vec![]);
    }
    if command_name.eq_ignore_ascii_case("forgotPassword") {
        return error_reply(
            "forgotpasswordresponse",
            &ApiError::new(
                530,
                4250,
                "Password reset by e-mail is not available: no mail server is configured; ask an administrator to set a new password (updateUser)",
            ),
        );
    }
    let session = session_key(&params, &headers);
    // Logging out always succeeds, with or without a live session: the web
    // UI logs out before every login and treats a refusal as a reason to end
    // the session it is about to make.
    if command_name == "logout" {
        if let Some(k) = &session {
            if authenticate(&api, &method, &pairs, &params, session.clone())
                .await
                .is_ok()
            {
                let _ = api.svc.identity.logout(k).await;
            }
        }
        return reply(
            200,
            json!({"logoutresponse": {"description": "success"}}),
            vec![(
                header::SET_COOKIE,
                "sessionkey=; Path=/client; Max-Age=0; HttpOnly".into(),
            )],
        );
    }
    let caller = match authenticate(&api, &method, &pairs, &params, session.clone()).await {
        Ok(c) => c,
        Err(e) => return error_reply(&key, &e),
    };

    // An unknown command, or one the caller's role does not have, is
    // reported with CloudStack's text (the web UI matches on it).
    let source = peer
        .map(|p| p.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let Some(cmd) = cmd else {
        return error_reply(&key, &ApiError::not_available(&command_name, &source));
    };
    match authorize(&api, &caller, cmd).await {
        Ok(true) => {}
        Ok(false) => return error_reply(&key, &ApiError::not_available(cmd.name, &source)),
        Err(e) => return error_reply(&key, &e),
    }
    if let Err(e) = validate::check(cmd, &params) {
        return error_reply(&key, &e);
    }
    let started = std::time::Instant::now();
    let ctx = Ctx {
        svc: api.svc.clone(),
        caller,
        p: params,
        post: method == Method::POST,
    };
    let result = (cmd.handler)(ctx).await;
    let elapsed = started.elapsed();
    api.svc
        .metrics
        .observe(cmd.name, result.is_ok(), elapsed.as_secs_f64());
    tracing::debug!(
        command = cmd.name,
        elapsed_ms = elapsed.as_millis() as u64,
        "api"
    );
    match result {
        Ok(r) => reply(200, json!({ key: r.into_inner() }), vec![]),
        Err(e) => error_reply(&key, &e.with_command(cmd.name)),
    }
}

pub async fn authorize(api: &Api, caller: &Caller, cmd: &Command) -> Result<bool, ApiError> {
    authorize_svc(&api.svc, caller, cmd).await
}

/// Whether the caller's role type and role rules allow a command.
pub async fn authorize_svc(
    svc: &Service,
    caller: &Caller,
    cmd: &Command,
) -> Result<bool, ApiError> {
    let by_type = match cmd.access {
        Access::All => true,
        Access::Admins => caller.is_admin(),
        Access::RootAdmin => caller.is_root_admin(),
    };
    if !by_type {
        return Ok(false);
    }
    Ok(svc.identity.role_allows(caller, cmd.name).await?)
}

/// The session a request claims: the `sessionkey` parameter and the
/// `sessionkey` cookie must both be present and equal. A cookie alone would
/// let any page the user visits make state-changing requests (cross-site
/// request forgery); a parameter alone could come from a leaked URL.
fn session_key(params: &Params, headers: &HeaderMap) -> Option<String> {
    let param = params.str("sessionkey")?;
    let cookie = cookie(headers, "sessionkey")?;
    use subtle_eq::ct_eq;
    ct_eq(param.as_bytes(), cookie.as_bytes()).then(|| param.to_string())
}

mod subtle_eq {
    /// Compares without an early exit, so timing does not reveal a prefix.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

async fn authenticate(
    api: &Api,
    method: &Method,
    pairs: &[(String, String)],
    params: &Params,
    session: Option<String>,
) -> Result<Caller, ApiError> {
    // With enforce.post.requests.and.timestamps, a GET is refused however it
    // is signed: URLs end up in logs and proxies' caches.
    if api.svc.setting_bool("enforce.post.requests.and.timestamps") && method != Method::POST {
        return Err(ApiError::unauthorized());
    }
    if let Some(key) = params.str("apikey") {
        let Some(caller) = api.svc.identity.caller_by_api_key(key).await? else {
            return Err(ApiError::unauthorized());
        };
        let secret = caller.user.secret_key.clone().unwrap_or_default();
        signature::verify(pairs, &secret, chrono::Utc::now()).map_err(|e| {
            tracing::debug!(error = %e, "signature rejected");
            ApiError::unauthorized()
        })?;
        if api.svc.setting_bool("enforce.post.requests.and.timestamps") {
            let v3 = params.raw("signatureversion") == Some("3");
            let exp = params.str("expires").and_then(signature::parse_expires);
            let soon = chrono::Utc::now() + chrono::Duration::minutes(15);
            if !v3 || exp.map(|e| e > soon).unwrap_or(true) {
                return Err(ApiError::unauthorized());
            }
        }
        return Ok(caller);
    }
    if let Some(k) = session {
        if let Some(c) = api.svc.identity.caller_by_session(&k).await? {
            return Ok(c);
        }
    }
    Err(ApiError::unauthorized())
}

async fn login(api: &Api, params: &Params, key: &str, source: std::net::IpAddr) -> Response {
    let (Some(user), Some(pass)) = (params.str("username"), params.raw("password")) else {
        return error_reply(
            key,
            &ApiError {
                code: 401,
                cs_code: None,
                text: "unable to verify user credentials".into(),
            },
        );
    };
    let mut domain = params.str("domain").unwrap_or("/").to_string();
    if let Some(did) = params.str("domainid") {
        match api.svc.domain_path_by_uuid(did).await {
            Some(p) => domain = p,
            None => {
                return error_reply(
                    key,
                    &ApiError {
                        code: 401,
                        cs_code: None,
                        text: "unable to verify user credentials".into(),
                    },
                )
            }
        }
    }
    match api.svc.identity.login(user, pass, &domain, source).await {
        Ok(Some((c, s))) => {
            let body = json!({"loginresponse": {
                "username": c.user.username,
                "userid": c.user.uuid,
                "domainid": c.domain.uuid,
                "timeout": api.svc.setting_i64("session.timeout"),
                "account": c.account.name,
                "firstname": c.user.firstname,
                "lastname": c.user.lastname,
                "type": c.account.account_type.to_string(),
                "timezone": c.user.timezone.clone().unwrap_or_else(|| "UTC".into()),
                "timezoneoffset": "0.0",
                "registered": "false",
                "sessionkey": s.uuid,
                "is2faenabled": "false",
                "is2faverified": "true",
            }});
            reply(
                200,
                body,
                vec![
                    (
                        header::SET_COOKIE,
                        format!("sessionkey={}; Path=/client; HttpOnly", s.uuid),
                    ),
                    (
                        header::SET_COOKIE,
                        format!(
                            "JSESSIONID={}; Path=/client; HttpOnly",
                            crate::service::identity::random_key(16)
                        ),
                    ),
                ],
            )
        }
        Ok(None) => error_reply(
            key,
            &ApiError {
                code: 401,
                cs_code: None,
                text: "unable to verify user credentials".into(),
            },
        ),
        Err(e) => error_reply(key, &e.into()),
    }
}
