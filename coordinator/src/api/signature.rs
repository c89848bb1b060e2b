//! Request signature checks, pure. The primary form is the server's own canonical
//! string (names sorted as received, values encoded like Java's URLEncoder with
//! `+` as `%20`, the whole string lower-cased, HMAC-SHA1, base64). Clients that
//! deviate in documented ways (names sorted after lower-casing; `~`, `[` and `]`
//! left raw; `*` percent-encoded) are accepted too, so stock clients never fail on
//! a value containing one of those characters.

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    AsReceived,
    Lowercased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// java.net.URLEncoder, then `+` -> `%20`.
    Java,
    /// Python/Go clients: like Java but `~` kept raw.
    TildeRaw,
    /// libcloud: `~`, `[` and `]` kept raw.
    Brackets,
    /// Older Python framework: `*` percent-encoded.
    StarEncoded,
}

const VARIANTS: [(Sort, Enc); 8] = [
    (Sort::AsReceived, Enc::Java),
    (Sort::AsReceived, Enc::TildeRaw),
    (Sort::Lowercased, Enc::Brackets),
    (Sort::Lowercased, Enc::StarEncoded),
    (Sort::Lowercased, Enc::Java),
    (Sort::Lowercased, Enc::TildeRaw),
    (Sort::AsReceived, Enc::Brackets),
    (Sort::AsReceived, Enc::StarEncoded),
];

fn encode(value: &str, enc: Enc) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &b in value.as_bytes() {
        let raw = b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'_')
            || (b == b'*' && enc != Enc::StarEncoded)
            || (b == b'~' && matches!(enc, Enc::TildeRaw | Enc::Brackets))
            || (matches!(b, b'[' | b']') && enc == Enc::Brackets);
        if raw {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn canonical(params: &[(String, String)], sort: Sort, enc: Enc) -> String {
    let mut items: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .collect();
    match sort {
        Sort::AsReceived => items.sort_by(|a, b| a.0.cmp(&b.0)),
        Sort::Lowercased => items.sort_by_key(|a| a.0.to_lowercase()),
    }
    let joined: Vec<String> = items
        .iter()
        .map(|(k, v)| {
            let name = if enc == Enc::Brackets {
                encode(k, Enc::Brackets)
            } else {
                k.clone()
            };
            format!("{}={}", name, encode(v, enc))
        })
        .collect();
    joined.join("&").to_lowercase()
}

/// The server's canonical string for a request (parameters after decoding, first
/// value of each name only).
pub fn server_canonical(params: &[(String, String)]) -> String {
    canonical(params, Sort::AsReceived, Enc::Java)
}

pub fn sign(secret: &str, canonical: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key");
    mac.update(canonical.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn verify_one(secret: &str, canonical: &str, given: &[u8]) -> bool {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key");
    mac.update(canonical.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(given).is_ok()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature")]
    Missing,
    #[error("signature is not base64")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("signatureVersion 3 requires expires")]
    NoExpires,
    #[error("expires is not a valid date")]
    BadExpires,
    #[error("request expired")]
    Expired,
}

/// Checks a request's signature. `params` are all decoded parameters, first value
/// per name, in any order. `now` is passed in so the check stays pure.
pub fn verify(
    params: &[(String, String)],
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let sig = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("signature"))
        .map(|(_, v)| v.as_str())
        .ok_or(SignatureError::Missing)?;
    // A raw '+' in a query string arrives as a space after form decoding.
    let sig = sig.replace(' ', "+");
    let given = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| SignatureError::Malformed)?;
    let version = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("signatureversion"))
        .map(|(_, v)| v.as_str());
    if version == Some("3") {
        let exp = params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("expires"))
            .map(|(_, v)| v.as_str())
            .ok_or(SignatureError::NoExpires)?;
        let when = parse_expires(exp).ok_or(SignatureError::BadExpires)?;
        if when < now {
            return Err(SignatureError::Expired);
        }
    }
    for (sort, enc) in VARIANTS {
        if verify_one(secret, &canonical(params, sort, enc), &given) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The date forms CloudStack's `parseTZDateString` accepts for `expires`.
pub fn parse_expires(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    // A '+' in the offset may have been decoded to a space.
    let s = if s.len() > 19 && s.as_bytes()[19] == b' ' {
        format!("{}+{}", &s[..19], &s[20..])
    } else {
        s.to_string()
    };
    if let Ok(d) = DateTime::parse_from_rfc3339(&s) {
        return Some(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%SZ%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::<FixedOffset>::parse_from_str(&s, f) {
            return Some(d.with_timezone(&Utc));
        }
    }
    if let Some(stripped) = s.strip_suffix('Z') {
        if let Ok(n) = NaiveDateTime::parse_from_str(stripped, "%Y-%m-%dT%H:%M:%S") {
            return Some(Utc.from_utc_datetime(&n));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests signed by real clients (cs, CloudMonkey, Libcloud, the Go SDK,
    /// CloudStack's Java), generated by tests/vectors/make_vectors.py.
    #[test]
    fn client_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/vectors/signatures.json"
        );
        let text = std::fs::read_to_string(path).expect("vector file");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("vector json");
        assert!(vectors.len() >= 30, "only {} vectors", vectors.len());
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut clients = std::collections::BTreeSet::new();
        for v in &vectors {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let body = if s("method") == "POST" {
                s("body")
            } else {
                String::new()
            };
            let pairs = crate::api::request_pairs(&s("query"), &body);
            let got = verify(&pairs, &s("secret"), now);
            let valid = v["valid"].as_bool().expect("valid flag");
            assert_eq!(
                got.is_ok(),
                valid,
                "{}: {} -> {got:?}",
                s("client"),
                s("note")
            );
            clients.insert(s("client"));
        }
        for c in ["cs", "cmk", "libcloud", "cloudstack-go"] {
            assert!(clients.contains(c), "no vectors from {c}");
        }
    }

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn java_encoding() {
        assert_eq!(encode("a b*~/[]é", Enc::Java), "a%20b*%7E%2F%5B%5D%C3%A9");
        assert_eq!(encode("a~[]", Enc::Brackets), "a~[]");
        assert_eq!(encode("*", Enc::StarEncoded), "%2A");
    }

    #[test]
    fn canonical_sorts_case_sensitively_and_lowercases() {
        let p = pairs(&[
            ("command", "listZones"),
            ("apiKey", "KEY"),
            ("response", "json"),
        ]);
        assert_eq!(
            server_canonical(&p),
            "apikey=key&command=listzones&response=json"
        );
    }

    #[test]
    fn round_trip_and_tamper() {
        let now = Utc::now();
        let mut p = pairs(&[("command", "listZones"), ("apiKey", "K"), ("name", "a b~c")]);
        let s = sign("sec", &server_canonical(&p));
        p.push(("signature".into(), s.clone()));
        assert_eq!(verify(&p, "sec", now), Ok(()));
        assert_eq!(verify(&p, "other", now), Err(SignatureError::Mismatch));
        p[2].1 = "a b~d".into();
        assert_eq!(verify(&p, "sec", now), Err(SignatureError::Mismatch));
    }

    #[test]
    fn tilde_raw_variant_is_accepted() {
        let mut p = pairs(&[("command", "listZones"), ("apiKey", "K"), ("name", "x~y")]);
        let s = sign("sec", &canonical(&p, Sort::AsReceived, Enc::TildeRaw));
        p.push(("signature".into(), s));
        assert_eq!(verify(&p, "sec", Utc::now()), Ok(()));
    }

    #[test]
    fn version3_expiry() {
        let now = Utc::now();
        let mk = |exp: Option<&str>| {
            let mut p = pairs(&[
                ("command", "listZones"),
                ("apiKey", "K"),
                ("signatureVersion", "3"),
            ]);
            if let Some(e) = exp {
                p.push(("expires".into(), e.into()));
            }
            let s = sign("sec", &server_canonical(&p));
            p.push(("signature".into(), s));
            p
        };
        assert_eq!(
            verify(&mk(None), "sec", now),
            Err(SignatureError::NoExpires)
        );
        assert_eq!(
            verify(&mk(Some("2001-01-01T00:00:00+0000")), "sec", now),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(&mk(Some("2099-01-01T00:00:00+0000")), "sec", now),
            Ok(())
        );
        assert_eq!(
            verify(&mk(Some("2099-01-01T00:00:00Z")), "sec", now),
            Ok(())
        );
        assert_eq!(
            verify(&mk(Some("garbage")), "sec", now),
            Err(SignatureError::BadExpires)
        );
    }

    #[test]
    fn expires_forms() {
        let a = parse_expires("2024-01-01T12:00:00+0000").unwrap();
        assert_eq!(parse_expires("2024-01-01T12:00:00Z"), Some(a));
        assert_eq!(parse_expires("2024-01-01T12:00:00 0000"), Some(a));
        assert_eq!(parse_expires("2024-01-01T14:00:00+02:00"), Some(a));
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(pairs in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,40}"), 0..12)) {
            let _ = verify(&pairs, "s", Utc::now());
        }
    }
}
