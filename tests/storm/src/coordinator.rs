//! The coordinator under test: a real `orrery-coordinator` process with a
//! data directory of its own, on fixed loopback ports so that a restart
//! comes back where the agents dial.

use anyhow::{bail, Context, Result};
use orrery_benchkit::{free_port, Api};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hosts as `listHosts` shows them.
#[derive(Debug, Default)]
pub struct HostsSeen {
    /// Up, with a ping recorded since the moment asked about.
    pub up: usize,
    pub states: BTreeMap<String, usize>,
}

pub struct Coordinator {
    bin: PathBuf,
    data_dir: PathBuf,
    config: PathBuf,
    pub log: PathBuf,
    pub api_port: u16,
    pub agent_port: u16,
    pub metrics_port: u16,
    child: Option<Child>,
    api: Api,
}

impl Coordinator {
    /// `init` in `base/data`. A configuration file of its own keeps a
    /// host-wide `/etc/orrery/coordinator.toml` (simulated hosts, other
    /// ports) out of the measurement.
    pub fn init(bin: &Path, base: &Path) -> Result<Self> {
        let data_dir = base.join("data");
        let config = base.join("coordinator.toml");
        std::fs::write(&config, "# orrery-storm: defaults only\n")
            .with_context(|| format!("writing {}", config.display()))?;
        let out = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("init")
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} init", bin.display()))?;
        if !out.status.success() {
            bail!(
                "`init` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let keys: Value = serde_json::from_slice(&out.stdout).context("`init` printed no JSON")?;
        let key = |k: &str| {
            keys.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("`init` printed no {k}"))
        };
        let (apikey, secret) = (key("apikey")?, key("secretkey")?);
        let api_port = free_port()?;
        let agent_port = free_port()?;
        let metrics_port = free_port()?;
        Ok(Coordinator {
            bin: bin.to_path_buf(),
            data_dir,
            config,
            log: base.join("coordinator.log"),
            api_port,
            agent_port,
            metrics_port,
            child: None,
            api: Api::new(api_port, &apikey, &secret, 4)?,
        })
    }

    /// `token create --count n`, before the server runs.
    pub fn tokens(&self, n: usize) -> Result<Vec<String>> {
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(["token", "create", "--count", &n.to_string(), "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .context("running `token create`")?;
        if !out.status.success() {
            bail!(
                "`token create` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tokens: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if tokens.len() != n {
            bail!("`token create --count {n}` printed {} tokens", tokens.len());
        }
        Ok(tokens)
    }

    pub fn agent_addr(&self) -> String {
        format!("127.0.0.1:{}", self.agent_port)
    }

    /// Starts `serve`; returns at once (the agents find out when it listens).
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the coordinator is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--agent-listen")
            .arg(self.agent_addr())
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            // Any free port: storms run beside other coordinators.
            .arg("--console-listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                bail!(
                    "the coordinator exited ({status}); see {}",
                    self.log.display()
                );
            }
        }
        Ok(())
    }

    /// Waits until the API answers a signed call.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_alive()?;
            if self.api.ok(&[("command", "listZones")]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the coordinator did not answer within {limit:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process with `signal` and waits for it to end (SIGKILL
    /// after 30 s when a SIGTERM is not enough).
    pub async fn stop(&mut self, signal: libc::c_int) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            bail!("process id {} out of range", child.id());
        };
        // SAFETY: kill only sends a signal to our own child, which has not
        // been reaped yet (so the id cannot belong to another process).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling the coordinator");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What `listHosts` says of `hosts`: how many are Up with a ping at or
    /// after `since_unix` (its dates have whole seconds), and how many are in
    /// each state. The ping matters: a coordinator keeps the state it had
    /// stored when it stopped, so right after a restart every host still
    /// reads Up until liveness catches up.
    pub async fn hosts_up(&self, hosts: &HashSet<String>, since_unix: i64) -> Result<HostsSeen> {
        let r = self
            .api
            .ok(&[("command", "listHosts"), ("pagesize", "-1")])
            .await?;
        let mut seen = HostsSeen::default();
        for h in r
            .get("host")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or_default();
            if !hosts.contains(field("id")) {
                continue;
            }
            let pinged =
                chrono::DateTime::parse_from_str(field("lastpinged"), "%Y-%m-%dT%H:%M:%S%z")
                    .map_or(i64::MIN, |d| d.timestamp());
            let fresh = pinged >= since_unix;
            let state = match (field("state"), fresh) {
                ("Up", true) => {
                    seen.up += 1;
                    "Up".to_string()
                }
                ("Up", false) => "Up (ping from before the restart)".to_string(),
                (s, _) => s.to_string(),
            };
            *seen.states.entry(state).or_default() += 1;
        }
        Ok(seen)
    }

    /// `orrery_agents_connected` from `/metrics`: sessions the coordinator holds.
    pub async fn agents_connected(&self) -> Result<u64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url).await?.error_for_status()?.text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix("orrery_agents_connected "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .context("orrery_agents_connected missing in /metrics")
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
