//! Request parameters as CloudStack's dispatcher sees them: names lower-cased,
//! the first value of a repeated name wins, map parameters (`details[0].key=v`)
//! merged across indexes, booleans parsed like Java's `Boolean.valueOf`.

use crate::error::ApiError;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Lower-cased name -> value, for plain parameters.
    plain: BTreeMap<String, String>,
    /// Lower-cased map name -> index -> (field, value) in arrival order; the field
    /// name keeps its case, as CloudStack keeps it.
    maps: BTreeMap<String, BTreeMap<i64, Vec<(String, String)>>>,
    /// The command, lower-cased, for error texts.
    pub command: String,
    /// Names that look like map entries (`name[...`) but are not of the form
    /// `name[N].field`: (lower-cased map name, raw name). The dispatcher
    /// refuses them for the command's map parameters instead of dropping them.
    malformed: Vec<(String, String)>,
}

impl Params {
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut p = Params::default();
        for (k, v) in pairs {
            let lk = k.to_lowercase();
            if let Some((name, idx, field)) = split_map_key(&k) {
                let e = p
                    .maps
                    .entry(name.to_lowercase())
                    .or_default()
                    .entry(idx)
                    .or_default();
                if !e.iter().any(|(f, _)| f.eq_ignore_ascii_case(field)) {
                    e.push((field.to_string(), v.clone()));
                }
            } else if let Some(open) = k.find('[') {
                p.malformed.push((k[..open].to_lowercase(), k.clone()));
            }
            p.plain.entry(lk).or_insert(v);
        }
        if let Some(c) = p.plain.get("command") {
            p.command = c.to_lowercase();
        }
        p
    }

    pub fn raw(&self, name: &str) -> Option<&str> {
        self.plain.get(name).map(String::as_str)
    }

    /// A present, non-empty value. CloudStack treats an empty value as absent.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// A present, non-empty value, owned (for typed requests).
    pub fn string(&self, name: &str) -> Option<String> {
        self.str(name).map(str::to_string)
    }

    pub fn has(&self, name: &str) -> bool {
        self.str(name).is_some()
    }

    /// Whether a map parameter has at least one well-formed entry.
    pub fn has_map(&self, name: &str) -> bool {
        self.maps.get(name).is_some_and(|m| !m.is_empty())
    }

    /// The first raw name that looks like an entry of map `name` but is not
    /// of the form `name[N].field`.
    pub fn malformed_map_key(&self, name: &str) -> Option<&str> {
        self.malformed
            .iter()
            .find(|(m, _)| m == name)
            .map(|(_, raw)| raw.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.str(name)
            .ok_or_else(|| ApiError::missing(&self.command, name))
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v.eq_ignore_ascii_case("true"))
    }

    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        self.bool(name).unwrap_or(default)
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::param(format!(
                    "Unable to execute API command {} due to invalid value {} for parameter {}: it must be an integer",
                    self.command, v, name
                ))
            }),
        }
    }

    /// An integer within `[min, max]`.
    pub fn i64_range(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let v = self.i64(name)?;
        if let Some(x) = v {
            if x < min || x > max {
                return Err(ApiError::param(format!(
                    "Invalid value {x} for parameter {name}: it must be between {min} and {max}"
                )));
            }
        }
        Ok(v)
    }

    /// Comma-separated list, empty items dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.str(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A map parameter with all indexes merged into one key->value map (clients
    /// differ: one key per index, or every key at index 0).
    pub fn map_merged(&self, name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(m) = self.maps.get(name) {
            for entries in m.values() {
                for (k, v) in entries {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    /// A map parameter as a list of entries, one per index (for `key`/`value` pairs).
    pub fn map_entries(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.maps
            .get(name)
            .map(|m| {
                m.values()
                    .map(|e| {
                        e.iter()
                            .map(|(k, v)| (k.to_lowercase(), v.clone()))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.plain.insert(name.to_lowercase(), value.to_string());
    }
}

/// `name[3].field` -> (name, 3, field). Exactly one `[`, an integer index and a
/// field are required, as CloudStack's unpacker demands; anything else is plain.
fn split_map_key(k: &str) -> Option<(&str, i64, &str)> {
    let open = k.find('[')?;
    if k[open + 1..].contains('[') {
        return None;
    }
    let close = open + k[open..].find(']')?;
    let idx: i64 = k[open + 1..close].parse().ok()?;
    let rest = &k[close + 1..];
    let field = rest.strip_prefix('.')?;
    if field.is_empty() || open == 0 {
        return None;
    }
    Some((&k[..open], idx, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn names_are_case_insensitive_and_first_wins() {
        let x = p(&[
            ("command", "listZones"),
            ("ListAll", "TRUE"),
            ("listall", "false"),
        ]);
        assert_eq!(x.bool("listall"), Some(true));
        assert_eq!(x.command, "listzones");
    }

    #[test]
    fn booleans_like_java() {
        let x = p(&[("a", "True"), ("b", "False"), ("c", "yes"), ("d", "")]);
        assert_eq!(x.bool("a"), Some(true));
        assert_eq!(x.bool("b"), Some(false));
        assert_eq!(x.bool("c"), Some(false));
        assert_eq!(x.bool("d"), None);
    }

    #[test]
    fn maps_merge_across_indexes() {
        let x = p(&[
            ("details[0].cpuNumber", "2"),
            ("details[0].memory", "512"),
            ("DETAILS[1].cpuSpeed", "1000"),
            ("details[x].bad", "1"),
            ("details[1][2].bad", "1"),
        ]);
        let m = x.map_merged("details");
        assert_eq!(m.len(), 3);
        assert_eq!(m["cpuNumber"], "2");
        assert_eq!(m["cpuSpeed"], "1000");
        assert_eq!(x.map_entries("details").len(), 2);
    }

    #[test]
    fn missing_parameter_text() {
        let x = p(&[("command", "deployVirtualMachine")]);
        let e = x.required("zoneid").unwrap_err();
        assert_eq!(e.code, 431);
        assert_eq!(
            e.text,
            "Unable to execute API command deployvirtualmachine due to missing parameter zoneid"
        );
    }

    #[test]
    fn integers_are_checked() {
        let x = p(&[("command", "x"), ("n", "12"), ("m", "1x")]);
        assert_eq!(x.i64("n").unwrap(), Some(12));
        let e = x.i64("m").unwrap_err();
        assert_eq!(e.code, 431);
        assert!(e.text.contains("parameter m"));
        assert!(x.i64_range("n", 1, 10).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(pairs in proptest::collection::vec(("\\PC{0,20}", "\\PC{0,20}"), 0..20)) {
            let x = Params::from_pairs(pairs.clone());
            for (k, _) in &pairs {
                let _ = x.i64(&k.to_lowercase());
                let _ = x.map_merged(&k.to_lowercase());
                let _ = x.list(&k.to_lowercase());
            }
        }
    }
}
