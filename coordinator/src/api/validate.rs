//! Checks every parameter of a request against the command table before a
//! handler runs: presence, length, number formats, uuid lists and map entry
//! names. The table is the one `listApis` publishes, so what a client is told
//! is what is enforced.

use super::params::Params;
use super::registry::{Command, P};
use crate::error::ApiError;

/// The first problem with a request's parameters, as CloudStack words it.
pub fn check(cmd: &Command, params: &Params) -> Result<(), ApiError> {
    for p in cmd.params {
        check_param(cmd, p, params)?;
    }
    Ok(())
}

fn invalid_value(cmd: &Command, name: &str, value: &str) -> ApiError {
    // Long values are cut so an error does not echo a megabyte back.
    let shown: String = value.chars().take(64).collect();
    ApiError::param(format!(
        "Unable to execute API command {} due to invalid value. Invalid parameter {} value={} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
        cmd.name.to_lowercase(),
        name,
        shown
    ))
}

fn check_param(cmd: &Command, p: &P, params: &Params) -> Result<(), ApiError> {
    if p.ty == "map" {
        if let Some(raw) = params.malformed_map_key(p.name) {
            return Err(ApiError::param(format!(
                "Invalid value for parameter {}: {} is not of the form {}[N].key",
                p.name,
                raw.chars().take(64).collect::<String>(),
                p.name
            )));
        }
        if p.required && !params.has_map(p.name) {
            return Err(ApiError::missing(cmd.name, p.name));
        }
        return Ok(());
    }
    let raw = params.raw(p.name);
    if p.required && raw.is_none_or(str::is_empty) {
        return Err(ApiError::missing(cmd.name, p.name));
    }
    let Some(v) = raw else { return Ok(()) };
    match p.ty {
        // An empty number is not "absent": CloudStack fails to parse it, and
        // treating it as absent silently changes meaning (cpunumber='' would
        // make a custom offering).
        "integer" if v.trim().parse::<i32>().is_err() => {
            return Err(invalid_value(cmd, p.name, v));
        }
        "long" if v.trim().parse::<i64>().is_err() => {
            return Err(invalid_value(cmd, p.name, v));
        }
        "list" if p.name.ends_with("ids") => {
            // Lists of ids: every item must be a uuid, so a typo is an error
            // rather than a silently shorter answer.
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if uuid::Uuid::parse_str(item).is_err() {
                    return Err(invalid_value(cmd, p.name, item));
                }
            }
        }
        _ => {}
    }
    // Lists are not cut at a string's length: a list of ids grows with them.
    if p.ty == "string" && v.chars().count() > p.length as usize {
        return Err(ApiError::param(format!(
            "Value greater than max allowed length {} for param: {}",
            p.length, p.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::{opt, req, Access};
    use crate::api::render::Reply;

    async fn nothing(_: crate::api::registry::Ctx) -> Result<Reply, ApiError> {
        Ok(Reply::Success(None))
    }

    const PARAMS: &[P] = &[
        req("name", "string", "name"),
        opt("userdata", "string", "data").len(1000),
        opt("cpunumber", "integer", "CPUs"),
        opt("size", "long", "bytes"),
        opt("ids", "list", "ids"),
        opt("details", "map", "details"),
        req("rules", "map", "rules"),
    ];

    fn cmd() -> Command {
        Command {
            name: "testCommand",
            description: "",
            is_async: false,
            access: Access::All,
            params: PARAMS,
            response: &[],
            response_key: None,
            handler: |ctx| Box::pin(nothing(ctx)),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .chain([("command".to_string(), "testCommand".to_string())]),
        )
    }

    fn err(pairs: &[(&str, &str)]) -> ApiError {
        check(&cmd(), &params(pairs)).unwrap_err()
    }

    const OK: &[(&str, &str)] = &[("name", "x"), ("rules[0].rule", "listZones")];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = OK.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn a_well_formed_request_passes() {
        let id = "0b6e3a2e-7a0e-4f0e-9a43-1f6b8a1c2d3e";
        let ids = format!("{id}, {id}");
        let mut pairs = with(&[
            ("cpunumber", "2"),
            ("size", "-1"),
            ("details[0].memory", "1"),
        ]);
        pairs.push(("ids", &ids));
        check(&cmd(), &params(&pairs)).unwrap();
    }

    #[test]
    fn required_map_is_seen_when_present() {
        let e = err(&[("name", "x")]);
        assert!(e.text.contains("missing parameter rules"), "{}", e.text);
        check(&cmd(), &params(OK)).unwrap();
    }

    #[test]
    fn length_limit_names_the_parameter() {
        let long = "a".repeat(256);
        let mut pairs = OK.to_vec();
        pairs[0] = ("name", &long);
        let e = err(&pairs);
        assert_eq!(e.code, 431);
        assert!(
            e.text.contains("max allowed length 255 for param: name"),
            "{}",
            e.text
        );
        let exact = "a".repeat(255);
        pairs[0] = ("name", &exact);
        check(&cmd(), &params(&pairs)).unwrap();
        let ud = "b".repeat(1000);
        let mut pairs = OK.to_vec();
        pairs.push(("userdata", &ud));
        check(&cmd(), &params(&pairs)).unwrap();
    }

    #[test]
    fn empty_or_bad_numbers_are_refused() {
        for (k, v) in [
            ("cpunumber", ""),
            ("cpunumber", "x"),
            ("cpunumber", "9999999999"),
            ("size", "1.5"),
        ] {
            let e = err(&with(&[(k, v)]));
            assert_eq!(e.code, 431);
            assert!(
                e.text.contains(&format!("Invalid parameter {k} value=")),
                "{}",
                e.text
            );
        }
    }

    #[test]
    fn long_id_lists_are_not_cut_at_the_string_length() {
        let ids = vec!["0b6e3a2e-7a0e-4f0e-9a43-1f6b8a1c2d3e"; 50].join(",");
        let mut pairs = OK.to_vec();
        pairs.push(("ids", &ids));
        check(&cmd(), &params(&pairs)).unwrap();
    }

    #[test]
    fn id_lists_must_be_uuids() {
        let e = err(&with(&[(
            "ids",
            "0b6e3a2e-7a0e-4f0e-9a43-1f6b8a1c2d3e,garbage",
        )]));
        assert!(
            e.text.contains("Invalid parameter ids value=garbage"),
            "{}",
            e.text
        );
    }

    #[test]
    fn malformed_map_entries_are_refused() {
        for k in ["details[abc].x", "details[0]", "details[1][2].x"] {
            let e = err(&with(&[(k, "1")]));
            assert_eq!(e.code, 431);
            assert!(e.text.contains("parameter details"), "{}", e.text);
        }
    }
}
