//! What the benchmark programs share: a CloudStack client that signs its
//! calls as stock clients do, nearest-rank percentiles, and the facts about
//! the machine a result is only comparable under. Dev-only: nothing in the
//! product depends on it.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{command}: request failed: {source}")]
    Http {
        command: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{command}: reply is not JSON: {body}")]
    NotJson { command: String, body: String },
    #[error("{command} failed with HTTP {status}: {body}")]
    Api {
        command: String,
        status: u16,
        body: Value,
    },
    #[error("job {0} failed: {1}")]
    JobFailed(String, Value),
    #[error("job {0} still pending after {1:?}")]
    JobTimeout(String, Duration),
    #[error("{0} missing in {1}")]
    Missing(String, Value),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type KitResult<T> = Result<T, KitError>;

/// Nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn percentiles(samples: &[Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len();
    let rank = |q: f64| {
        // Nearest rank: the smallest value with at least q of the sample at
        // or below it.
        let i = ((q * n as f64).ceil() as usize).clamp(1, n);
        ms[i - 1]
    };
    Percentiles {
        min: ms[0],
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: ms[n - 1],
        mean: ms.iter().sum::<f64>() / n as f64,
    }
}

/// java.net.URLEncoder with `%20` for a space: how CloudStack's server
/// encodes values for its canonical string, and valid in a query string.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string and signature of a call: parameters sorted by name,
/// encoded, lower-cased, HMAC-SHA1 with the secret, base64.
pub fn signed_query(params: &[(String, String)], secret: &str) -> String {
    let mut pairs = params.to_vec();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(query.to_lowercase().as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("{query}&signature={}", encode(&sig))
}

/// A reply: the HTTP status, the object inside the `<command>response`
/// envelope, the size of the body, and the time from sending the request to
/// having read the whole body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: usize,
    pub latency: Duration,
}

/// A CloudStack API client signing its calls with an API key and secret.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    endpoint: String,
    key: String,
    secret: String,
}

fn command_of<'a>(params: &[(&str, &'a str)]) -> &'a str {
    params
        .iter()
        .find(|(k, _)| *k == "command")
        .map(|(_, v)| *v)
        .unwrap_or("?")
}

impl Api {
    /// A client of the coordinator on loopback `port`, keeping up to
    /// `connections` idle connections.
    pub fn new(port: u16, key: &str, secret: &str, connections: usize) -> KitResult<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| KitError::Http {
                command: "client".into(),
                source,
            })?;
        Ok(Api {
            http,
            endpoint: format!("http://127.0.0.1:{port}/client/api"),
            key: key.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The signed URL of a call.
    pub fn url(&self, params: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pairs.push(("apiKey".into(), self.key.clone()));
        pairs.push(("response".into(), "json".into()));
        format!("{}?{}", self.endpoint, signed_query(&pairs, &self.secret))
    }

    /// One call, whatever its status.
    pub async fn call(&self, params: &[(&str, &str)]) -> KitResult<Answer> {
        let command = command_of(params);
        let http = |source| KitError::Http {
            command: command.to_string(),
            source,
        };
        let sent = Instant::now();
        let resp = self.http.get(self.url(params)).send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(http)?;
        let latency = sent.elapsed();
        let outer: Value = serde_json::from_slice(&bytes).map_err(|_| KitError::NotJson {
            command: command.to_string(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })?;
        // `{"<command>response": {...}}`: one key, whatever the command.
        let body = outer
            .as_object()
            .and_then(|m| m.values().next().cloned())
            .unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            bytes: bytes.len(),
            latency,
        })
    }

    /// A call that must succeed; returns the inner object.
    pub async fn ok(&self, params: &[(&str, &str)]) -> KitResult<Value> {
        let a = self.call(params).await?;
        if a.status != 200 {
            return Err(KitError::Api {
                command: command_of(params).to_string(),
                status: a.status,
                body: a.body,
            });
        }
        Ok(a.body)
    }

    /// One look at a job: `None` while pending, its result when it
    /// succeeded, an error when it failed.
    pub async fn job_state(&self, jobid: &str) -> KitResult<Option<Value>> {
        let r = self
            .ok(&[("command", "queryAsyncJobResult"), ("jobid", jobid)])
            .await?;
        match r.get("jobstatus").and_then(Value::as_i64) {
            Some(0) => Ok(None),
            Some(1) => Ok(Some(r.get("jobresult").cloned().unwrap_or(Value::Null))),
            _ => Err(KitError::JobFailed(
                jobid.to_string(),
                r.get("jobresult").cloned().unwrap_or(r),
            )),
        }
    }

    /// Polls a job every `interval` until it ends or `limit` passes.
    pub async fn wait_job(
        &self,
        jobid: &str,
        interval: Duration,
        limit: Duration,
    ) -> KitResult<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = self.job_state(jobid).await? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(KitError::JobTimeout(jobid.to_string(), limit));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// A string inside a JSON reply, by JSON pointer.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> KitResult<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| KitError::Missing(pointer.to_string(), v.clone()))
}

/// A port free on loopback now.
pub fn free_port() -> KitResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The 1-minute load average: figures are only comparable between runs on an
/// otherwise idle machine, and this says whether it was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".into())
}

/// Cores and CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({model})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&s);
        assert_eq!(
            (p.min, p.p50, p.p90, p.p99, p.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert!((p.mean - 50.5).abs() < 1e-9);
        assert_eq!(percentiles(&[]), Percentiles::default());
    }

    #[test]
    fn signs_like_cloudstack_clients() {
        // A vector from tests/vectors/signatures.json, signed by PyPI's cs.
        let params: Vec<(String, String)> = [
            ("command", "listZones"),
            ("apiKey", "test-api-key"),
            ("response", "json"),
            ("signatureVersion", "3"),
            ("expires", "2099-01-01T12:10:00+0000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let q = signed_query(&params, "test-secret-key/+=");
        assert!(
            q.ends_with("&signature=hg8ZeGps%2F%2Fq5vYfxIRAJWyMLMPA%3D"),
            "{q}"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
