//! Reply envelopes and the shared pieces of JSON rendering.

use serde_json::{json, Map, Value};

pub enum Reply {
    /// `{"<cmd>response": {"<key>": {...}}}`
    Object(&'static str, Value),
    /// `{"<cmd>response": {"count": N, "<key>": [...]}}`; both left out when N is 0.
    List(&'static str, Vec<Value>, u64),
    /// `{"<cmd>response": {"success": true}}`
    Success(Option<String>),
    /// `{"<cmd>response": {"jobid": ..., "id": ...}}`
    Async { job: String, id: Option<String> },
    /// The inner object as given.
    Inner(Value),
}

impl Reply {
    pub fn into_inner(self) -> Value {
        match self {
            Reply::Object(k, v) => json!({ k: v }),
            Reply::List(k, items, count) => {
                let mut m = Map::new();
                if count > 0 {
                    m.insert("count".into(), json!(count));
                    if !items.is_empty() {
                        m.insert(k.into(), Value::Array(items));
                    }
                }
                Value::Object(m)
            }
            Reply::Success(text) => {
                let mut m = Map::new();
                m.insert("success".into(), json!(true));
                if let Some(t) = text {
                    m.insert("displaytext".into(), json!(t));
                }
                Value::Object(m)
            }
            Reply::Async { job, id } => {
                let mut m = Map::new();
                if let Some(id) = id {
                    m.insert("id".into(), json!(id));
                }
                m.insert("jobid".into(), json!(job));
                Value::Object(m)
            }
            Reply::Inner(v) => v,
        }
    }
}

/// CloudStack's date format: `2024-01-01T12:00:00+0000`.
pub fn date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+0000")
        .to_string()
}

/// Builds a JSON object, leaving out null fields as CloudStack's serializer does.
pub struct Obj(Map<String, Value>);

impl Obj {
    pub fn new() -> Self {
        Obj(Map::new())
    }
    pub fn s(mut self, k: &str, v: impl Into<String>) -> Self {
        self.0.insert(k.into(), Value::String(v.into()));
        self
    }
    pub fn os<S: Into<String>>(mut self, k: &str, v: Option<S>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), Value::String(v.into()));
        }
        self
    }
    pub fn v(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.0.insert(k.into(), v.into());
        self
    }
    pub fn ov<V: Into<Value>>(mut self, k: &str, v: Option<V>) -> Self {
        if let Some(v) = v {
            self.0.insert(k.into(), v.into());
        }
        self
    }
    /// Applies `f` with the value when there is one.
    pub fn when_some<T>(self, v: Option<T>, f: impl FnOnce(Self, T) -> Self) -> Self {
        match v {
            Some(x) => f(self, x),
            None => self,
        }
    }

    pub fn when(self, cond: bool, f: impl FnOnce(Self) -> Self) -> Self {
        if cond {
            f(self)
        } else {
            self
        }
    }
    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

impl Default for Obj {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_list_has_no_keys() {
        assert_eq!(Reply::List("x", vec![], 0).into_inner(), json!({}));
        assert_eq!(
            Reply::List("x", vec![], 5).into_inner(),
            json!({"count": 5})
        );
        assert_eq!(
            Reply::List("x", vec![json!(1)], 5).into_inner(),
            json!({"count": 5, "x": [1]})
        );
    }

    #[test]
    fn date_format() {
        assert_eq!(date(1704110400), "2024-01-01T12:00:00+0000");
    }
}
