//! Host agent benchmarks on a real libvirt host: how long an instance takes
//! to start through Orrery compared with an operator starting the same domain
//! by hand, and how much memory the agent keeps resident while it looks after
//! many running domains.
//!
//! The program runs the release builds of `orrery-coordinator serve` and
//! `orrery-agent run` as child processes, enrols the agent with a one-time
//! token, registers the lab guest image (tests/lab/out/guest.qcow2) and drives
//! everything through the signed CloudStack API, as a client would. It needs
//! root and a running libvirtd (tests/lab/start-libvirt.sh). Guests run under
//! software emulation (`domain_type = "qemu"`) so that they boot on hosts
//! without working KVM.
//!
//! ```text
//! cargo build --release -p orrery-coordinator -p orrery-agent
//! cargo bench -p orrery-agent --bench host_bench -- [start|rss|all]
//!     [--iterations N] [--domains N] [--memory MB] [--idle S]
//! ```
//!
//! Everything the run creates lives in a fresh directory under /var/tmp and
//! in libvirt objects whose names carry a tag unique to the run; all of it is
//! removed at the end, also when the run fails or is interrupted.

use anyhow::{anyhow, bail, Context, Result};
use orrery_benchkit::{free_port, percentiles, str_at, Api};
use serde_json::Value;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use virt::connect::Connect;
use virt::domain::DomainState;

const USAGE: &str = "usage: cargo bench -p orrery-agent --bench host_bench -- \
[start|rss|all] [--iterations N] [--domains N] [--memory MB] [--idle S]";

const LIBVIRT_URI: &str = "qemu:///system";
/// How often job results and domain states are polled while a start is
/// timed: the resolution of the start figures.
const POLL: Duration = Duration::from_millis(20);
/// Upper bound for any single wait, so a broken host fails the run instead
/// of hanging it.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// Targets the figures are judged against.
const START_RATIO_TARGET: f64 = 1.2;
const RSS_TARGET_MIB: f64 = 30.0;
/// Marker the lab guest prints on its serial console once its init runs.
const BOOTED_MARKER: &str = "ORRERY-GUEST-BOOTED";
/// Console text of a guest that cannot boot with the memory it was given:
/// the boot loader cannot place the initramfs, or the kernel runs out.
const NO_MEMORY: [&str; 3] = [
    "Booting kernel failed",
    "Out of memory",
    "deadlocked on memory",
];
/// Guests deployed at once for the memory figure: booting many emulated
/// guests together on a small host starves their early timer checks.
const BOOT_WAVE: usize = 5;
/// Power cycles allowed per guest that panicked for another reason.
const MAX_RESTARTS: u32 = 2;

// ---------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Start,
    Rss,
    All,
}

#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    iterations: usize,
    domains: usize,
    memory_mb: u32,
    idle: Duration,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mode: Mode::All,
        iterations: 10,
        domains: 20,
        memory_mb: 96,
        idle: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "start" => a.mode = Mode::Start,
            "rss" => a.mode = Mode::Rss,
            "all" => a.mode = Mode::All,
            "--iterations" => a.iterations = value("--iterations")?.parse()?,
            "--domains" => a.domains = value("--domains")?.parse()?,
            "--memory" => a.memory_mb = value("--memory")?.parse()?,
            "--idle" => a.idle = Duration::from_secs_f64(value("--idle")?.parse()?),
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.iterations == 0 || a.domains == 0 || a.memory_mb == 0 {
        bail!("--iterations, --domains and --memory must be positive");
    }
    // The coordinator's network for the run is a /24 with 240 addresses.
    if a.domains > 200 {
        bail!("--domains is limited to 200");
    }
    Ok(a)
}

// ---------------------------------------------------------------------------
// Statistics

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// Signed API client

// ---------------------------------------------------------------------------
// Host helpers

fn virsh(args: &[&str]) -> Result<String> {
    let out = Command::new("virsh")
        .args(["-c", LIBVIRT_URI])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running virsh")?;
    if !out.status.success() {
        bail!(
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_tool(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The domain's state the way `virsh domstate` reads it
/// (`virDomainGetState`), over a connection that stays open: starting virsh
/// costs tens of milliseconds per call, which would swamp a 20 ms poll.
fn is_running(conn: &Connect, name: &str) -> bool {
    conn.lookup_domain_by_name(name)
        .ok()
        .and_then(|d| d.state().ok())
        .is_some_and(|(s, _)| s.known() == Some(DomainState::Running))
}

async fn running(conn: &Connect, name: &str) -> Result<bool> {
    let (conn, name) = (conn.clone(), name.to_string());
    Ok(tokio::task::spawn_blocking(move || is_running(&conn, &name)).await?)
}

fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:"),
        threads: field("Threads:"),
    })
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// IPv4 routes of the host as (network, mask), from /proc/net/route.
fn host_routes() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Addresses are printed as little-endian hex words.
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            (mask != 0).then_some((dest, mask))
        })
        .collect()
}

/// A /24 for the run's guest network that no route of the host covers, so
/// libvirt can start it next to whatever networks already exist.
fn free_subnet() -> Result<[u8; 3]> {
    let routes = host_routes();
    let first = (std::process::id() % 250) as u8;
    for i in 0..250u32 {
        let third = ((u32::from(first) + i) % 250) as u8;
        let net = u32::from_be_bytes([10, 251, third, 0]);
        let mask = 0xffff_ff00u32;
        let clash = routes.iter().any(|&(d, m)| {
            let common = m & mask;
            d & common == net & common
        });
        if !clash {
            return Ok([10, 251, third]);
        }
    }
    bail!("no free /24 in 10.251.0.0/16 for the guest network")
}

/// Newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

// ---------------------------------------------------------------------------
// Binaries and inputs

struct Bins {
    coordinator: PathBuf,
    agent: PathBuf,
    guest: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate sits in the workspace")
        .to_path_buf()
}

fn find_bins() -> Result<Bins> {
    let root = repo_root();
    // The bench runs as <target>/release/deps/host_bench-<hash>; the
    // release binaries sit two levels up.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?;
    let bins = Bins {
        coordinator: dir.join("orrery-coordinator"),
        agent: dir.join("orrery-agent"),
        guest: root.join("tests/lab/out/guest.qcow2"),
    };
    for (bin, pkg) in [
        (&bins.coordinator, "orrery-coordinator"),
        (&bins.agent, "orrery-agent"),
    ] {
        if !bin.is_file() {
            bail!(
                "{} is missing: build the release binaries first with\n    \
                 cargo build --release -p orrery-coordinator -p orrery-agent",
                bin.display()
            );
        }
        // A binary older than its sources measures old code.
        let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
        let sources = [
            root.join(pkg.trim_start_matches("orrery-")).join("src"),
            root.join("shared"),
        ]
        .iter()
        .filter_map(|d| newest_mtime(d))
        .max();
        if let (Some(b), Some(s)) = (built, sources) {
            if s > b {
                eprintln!(
                    "warning: {} is older than its sources; rebuild with \
                     `cargo build --release -p orrery-coordinator -p orrery-agent`",
                    bin.display()
                );
            }
        }
    }
    if !bins.guest.is_file() {
        bail!(
            "{} is missing: build it with tests/lab/build-guest.sh \
             (after tests/lab/install-deps.sh)",
            bins.guest.display()
        );
    }
    Ok(bins)
}

// ---------------------------------------------------------------------------
// The lab: coordinator, agent and everything they create, torn down on drop

/// What must be undone however the run ends. Dropping it stops the
/// processes, removes the run's domains and network and deletes the
/// directory.
struct Guard {
    dir: PathBuf,
    /// Suffix of every domain name of the run (`instance.name`).
    tag: String,
    children: Vec<(&'static str, Child)>,
    networks: Vec<String>,
    /// Logs worth showing when the run fails.
    logs: Vec<PathBuf>,
    failed: bool,
}

impl Guard {
    fn spawn(&mut self, what: &'static str, bin: &Path, args: &[&str], log: &Path) -> Result<u32> {
        let file = OpenOptions::new().create(true).append(true).open(log)?;
        self.logs.push(log.to_path_buf());
        let child = Command::new(bin)
            .args(args)
            .env(
                "ORRERY_LOG",
                std::env::var("ORRERY_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Plain text logs, readable when shown after a failure.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Its own process group: Ctrl-C reaches only this program, which
            // then stops the children itself, in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        self.children.push((what, child));
        Ok(pid)
    }

    fn child_exited(&mut self, what: &str) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|(w, _)| *w == what)
            .and_then(|(_, c)| c.try_wait().ok().flatten())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.failed {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                eprintln!("--- last lines of {} ---", log.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        // The agent first, so it does not report the domains going away.
        for (_, mut child) in self.children.drain(..).rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let suffix = format!("-{}", self.tag);
        let mut domains = 0;
        if let Ok(names) = virsh(&["list", "--all", "--name"]) {
            for name in names
                .lines()
                .map(str::trim)
                .filter(|n| n.ends_with(&suffix))
            {
                let _ = virsh(&["destroy", name]);
                if virsh(&["undefine", name, "--nvram"]).is_ok() {
                    domains += 1;
                }
            }
        }
        for net in &self.networks {
            let _ = virsh(&["net-destroy", net]);
            let _ = virsh(&["net-undefine", net]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!(
            "cleaned up: {domains} domain(s), network(s) {:?}, {}",
            self.networks,
            self.dir.display()
        );
    }
}

struct Lab {
    guard: Guard,
    api: Api,
    conn: Connect,
    agent_pid: u32,
    state_dir: PathBuf,
    primary_dir: PathBuf,
    zone: String,
    network: String,
    offering: String,
    template: String,
    deployed: usize,
}

impl Lab {
    async fn up(bins: &Bins, memory_mb: u32) -> Result<Lab> {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(LIBVIRT_URI)).map_err(|e| {
            anyhow!(
                "cannot connect to {LIBVIRT_URI} ({e}); the benchmark needs root and a \
                 running libvirtd (tests/lab/start-libvirt.sh)"
            )
        })?;
        let tag = format!("hb{:x}{:04x}", std::process::id(), rand::random::<u16>());
        let dir = PathBuf::from(format!("/var/tmp/orrery-host-bench-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut guard = Guard {
            dir: dir.clone(),
            tag: tag.clone(),
            children: Vec::new(),
            networks: Vec::new(),
            logs: Vec::new(),
            failed: true,
        };
        // QEMU runs as libvirt's unprivileged user and must reach the disk
        // images in the agent's primary storage below this directory.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        println!("run tag {tag}, working directory {}", dir.display());

        // Both configuration files are explicit, so a host-wide
        // /etc/orrery/*.toml cannot change the result.
        let data = dir.join("coordinator");
        let coord_cfg = dir.join("coordinator.toml");
        std::fs::write(&coord_cfg, "")?;
        let out = Command::new(&bins.coordinator)
            .arg("--config")
            .arg(&coord_cfg)
            .args(["init", "--data-dir"])
            .arg(&data)
            .env("ORRERY_LOG", "warn")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let keys: Value = serde_json::from_slice(&out.stdout).context("init output")?;
        let port = free_port()?;
        let agent_port = free_port()?;
        let data_s = data.display().to_string();
        guard.spawn(
            "coordinator",
            &bins.coordinator,
            &[
                "--config",
                &coord_cfg.display().to_string(),
                "serve",
                "--data-dir",
                &data_s,
                "--api-listen",
                &format!("127.0.0.1:{port}"),
                "--agent-listen",
                &format!("127.0.0.1:{agent_port}"),
            ],
            &dir.join("coordinator.log"),
        )?;
        let api = Api::new(
            port,
            str_at(&keys, "/apikey")?,
            str_at(&keys, "/secretkey")?,
            4,
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.ok(&[("command", "listZones")]).await.is_err() {
            if let Some(st) = guard.child_exited("coordinator") {
                bail!("the coordinator exited with {st}");
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not answer within a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Domain names end in instance.name: a unique value keeps them apart
        // from every other domain on this libvirt and lets the clean-up find
        // exactly this run's.
        api.ok(&[
            ("command", "updateConfiguration"),
            ("name", "instance.name"),
            ("value", &tag),
        ])
        .await?;

        let out = Command::new(&bins.coordinator)
            .arg("--config")
            .arg(&coord_cfg)
            .args(["token", "create", "--data-dir"])
            .arg(&data)
            .env("ORRERY_LOG", "warn")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        let token = String::from_utf8(out.stdout)?.trim().to_string();
        let state_dir = dir.join("agent-state");
        let primary_dir = dir.join("primary");
        let agent_cfg = dir.join("agent.toml");
        // KVM may be missing or unusable; software emulation boots anywhere.
        std::fs::write(&agent_cfg, "domain_type = \"qemu\"\n")?;
        let agent_common = [
            "--config".to_string(),
            agent_cfg.display().to_string(),
            "--state-dir".to_string(),
            state_dir.display().to_string(),
            "--primary-dir".to_string(),
            primary_dir.display().to_string(),
        ];
        let out = Command::new(&bins.agent)
            .args(&agent_common)
            .args(["enroll", "--coordinator"])
            .arg(format!("127.0.0.1:{agent_port}"))
            .args(["--token", &token])
            .env("ORRERY_LOG", "warn")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("enroll: {}", String::from_utf8_lossy(&out.stderr));
        }
        let enrolled: Value = serde_json::from_slice(&out.stdout).context("enroll output")?;
        let host_id = str_at(&enrolled, "/hostid")?.to_string();
        let mut args: Vec<&str> = agent_common.iter().map(String::as_str).collect();
        args.push("run");
        let agent_pid = guard.spawn("agent", &bins.agent, &args, &dir.join("agent.log"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = api
                .ok(&[("command", "listHosts"), ("id", &host_id)])
                .await?;
            if h.pointer("/host/0/state").and_then(Value::as_str) == Some("Up") {
                break;
            }
            if let Some(st) = guard.child_exited("agent") {
                bail!("the agent exited with {st}");
            }
            if Instant::now() > deadline {
                bail!("host {host_id} did not come up: {h}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let zones = api.ok(&[("command", "listZones")]).await?;
        let zone = str_at(&zones, "/zone/0/id")?.to_string();

        // A network of the run's own in a free subnet: the zone's default
        // guest network (10.16.0.0/12) may already be up on this host for
        // another coordinator, and libvirt refuses a second one there.
        let offerings = api.ok(&[("command", "listNetworkOfferings")]).await?;
        let shared = offerings
            .get("networkoffering")
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter().find(|o| {
                    o.get("guestiptype").and_then(Value::as_str) == Some("Shared")
                        && o.get("state").and_then(Value::as_str) == Some("Enabled")
                })
            })
            .context("no enabled Shared network offering")?;
        let [a, b, c] = free_subnet()?;
        let net = api
            .ok(&[
                ("command", "createNetwork"),
                ("zoneid", &zone),
                ("networkofferingid", str_at(shared, "/id")?),
                ("name", &format!("bench-{tag}")),
                ("displaytext", "host benchmark"),
                ("gateway", &format!("{a}.{b}.{c}.1")),
                ("netmask", "255.255.255.0"),
                ("startip", &format!("{a}.{b}.{c}.10")),
                ("endip", &format!("{a}.{b}.{c}.250")),
            ])
            .await?;
        let network = str_at(&net, "/network/id")?.to_string();
        // The agent's name for it (orrery_agent::ops::network_names).
        let short: String = network
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        guard.networks.push(format!("orrery-{short}"));

        let ostypes = api
            .ok(&[
                ("command", "listOsTypes"),
                ("description", "Other Linux (64-bit)"),
            ])
            .await?;
        let ostype = str_at(&ostypes, "/ostype/0/id")?.to_string();
        // 100 MHz so that CPU capacity (cores x MHz) admits dozens of them on
        // a small host; the figure is only a scheduling weight.
        let so = api
            .ok(&[
                ("command", "createServiceOffering"),
                ("name", &format!("bench-{memory_mb}")),
                (
                    "displaytext",
                    &format!("host benchmark: 1 vCPU, {memory_mb} MB"),
                ),
                ("cpunumber", "1"),
                ("cpuspeed", "100"),
                ("memory", &memory_mb.to_string()),
            ])
            .await?;
        let offering = str_at(&so, "/serviceoffering/id")?.to_string();
        let url = format!("file://{}", bins.guest.display());
        let reg = api
            .ok(&[
                ("command", "registerTemplate"),
                ("name", "bench-guest"),
                ("displaytext", "lab guest"),
                ("url", &url),
                ("format", "QCOW2"),
                ("hypervisor", "KVM"),
                ("ostypeid", &ostype),
                ("zoneid", &zone),
            ])
            .await?;
        let template = str_at(&reg, "/template/0/id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let t = api
                .ok(&[
                    ("command", "listTemplates"),
                    ("templatefilter", "self"),
                    ("id", &template),
                ])
                .await?;
            if t.pointer("/template/0/isready") == Some(&Value::Bool(true)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("template {template} did not become ready: {t}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Lab {
            guard,
            api,
            conn,
            agent_pid,
            state_dir,
            primary_dir,
            zone,
            network,
            offering,
            template,
            deployed: 0,
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        for what in ["coordinator", "agent"] {
            if let Some(st) = self.guard.child_exited(what) {
                bail!("the {what} exited with {st}");
            }
        }
        Ok(())
    }

    /// Sends `deployVirtualMachine`; returns the job id.
    async fn deploy(&mut self, start: bool) -> Result<String> {
        self.deployed += 1;
        let name = format!("bench-{}", self.deployed);
        let r = self
            .api
            .ok(&[
                ("command", "deployVirtualMachine"),
                ("zoneid", &self.zone),
                ("serviceofferingid", &self.offering),
                ("templateid", &self.template),
                ("networkids", &self.network),
                ("name", &name),
                ("startvm", if start { "true" } else { "false" }),
            ])
            .await?;
        Ok(str_at(&r, "/jobid")?.to_string())
    }

    fn agent_mem(&self) -> Result<Mem> {
        proc_status(self.agent_pid)
    }

    fn host_domains(&self) -> usize {
        self.conn.list_all_domains(0).map(|l| l.len()).unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// Start latency

/// The instance's own definition turned into an operator's copy of it.
struct Baseline {
    name: String,
    template: PathBuf,
    overlay: PathBuf,
    xml_path: PathBuf,
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

/// The same domain under another identity: name, UUID (also in the SMBIOS
/// data), root disk, MAC address and console log changed, and without the
/// Orrery metadata, which would make the agent report it as the instance.
fn baseline_xml(
    xml: &str,
    name: &str,
    primary: &Path,
    consoles: &Path,
    overlay: &Path,
    console_log: &Path,
) -> Result<String> {
    let old_name = between(xml, "<name>", "</name>").context("no <name>")?;
    let old_uuid = between(xml, "<uuid>", "</uuid>").context("no <uuid>")?;
    let old_mac = between(xml, "<mac address='", "'").context("no <mac>")?;
    let root = format!("{}/", primary.display());
    let old_disk = xml
        .match_indices("<source file='")
        .filter_map(|(i, m)| {
            let rest = &xml[i + m.len()..];
            Some(&rest[..rest.find('\'')?])
        })
        .find(|p| p.starts_with(&root) && !p[root.len()..].contains('/'))
        .context("no root disk in the primary pool")?;
    let logs = format!("{}/", consoles.display());
    let old_log = {
        let i = xml.find(&logs).context("no console log")?;
        let rest = &xml[i..];
        &rest[..rest.find('\'').context("unterminated console log path")?]
    };
    let mut out = xml.to_string();
    if let (Some(a), Some(b)) = (out.find("<metadata>"), out.find("</metadata>")) {
        out.replace_range(a..b + "</metadata>".len(), "");
    }
    let mac_bytes: [u8; 3] = rand::random();
    let mac = format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        mac_bytes[0], mac_bytes[1], mac_bytes[2]
    );
    Ok(out
        .replace(
            &format!("<name>{old_name}</name>"),
            &format!("<name>{name}</name>"),
        )
        .replace(old_uuid, &random_uuid())
        .replace(old_disk, &overlay.display().to_string())
        .replace(old_log, &console_log.display().to_string())
        .replace(old_mac, &mac))
}

struct OrrerySample {
    job: Duration,
    running: Duration,
    total: Duration,
}

struct BaselineSample {
    qemu_img: Duration,
    define: Duration,
    start: Duration,
    total: Duration,
}

/// `startVirtualMachine` until the job is complete and libvirt says the
/// domain runs, both polled every [`POLL`].
async fn orrery_start(lab: &Lab, vm: &str, instance: &str) -> Result<OrrerySample> {
    let t0 = Instant::now();
    let r = lab
        .api
        .ok(&[("command", "startVirtualMachine"), ("id", vm)])
        .await?;
    let jobid = str_at(&r, "/jobid")?.to_string();
    let job = async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            if lab.api.job_state(&jobid).await?.is_some() {
                return Ok::<_, anyhow::Error>(t0.elapsed());
            }
            if t0.elapsed() > WAIT_LIMIT {
                bail!("start job {jobid} still pending");
            }
        }
    };
    let up = async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            if running(&lab.conn, instance).await? {
                return Ok::<_, anyhow::Error>(t0.elapsed());
            }
            if t0.elapsed() > WAIT_LIMIT {
                bail!("{instance} never ran");
            }
        }
    };
    let (job, running) = tokio::try_join!(job, up)?;
    Ok(OrrerySample {
        job,
        running,
        total: job.max(running),
    })
}

async fn orrery_stop(lab: &Lab, vm: &str, instance: &str) -> Result<()> {
    run_job(
        &lab.api,
        &[
            ("command", "stopVirtualMachine"),
            ("id", vm),
            ("forced", "true"),
        ],
    )
    .await?;
    if running(&lab.conn, instance).await? {
        bail!("{instance} still runs after a forced stop");
    }
    Ok(())
}

/// What an operator types: an overlay on the cached template, define, start.
async fn baseline_start(lab: &Lab, b: &Baseline) -> Result<BaselineSample> {
    let (template, overlay, xml) = (
        b.template.display().to_string(),
        b.overlay.display().to_string(),
        b.xml_path.display().to_string(),
    );
    let t0 = Instant::now();
    run_tool(
        "qemu-img",
        &[
            "create", "-f", "qcow2", "-b", &template, "-F", "qcow2", &overlay,
        ],
    )?;
    let t1 = Instant::now();
    virsh(&["define", &xml])?;
    let t2 = Instant::now();
    virsh(&["start", &b.name])?;
    let t3 = Instant::now();
    while !running(&lab.conn, &b.name).await? {
        if t0.elapsed() > WAIT_LIMIT {
            bail!("{} never ran", b.name);
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(BaselineSample {
        qemu_img: t1 - t0,
        define: t2 - t1,
        start: t3 - t2,
        total: t0.elapsed(),
    })
}

fn baseline_remove(b: &Baseline) -> Result<()> {
    virsh(&["destroy", &b.name])?;
    virsh(&["undefine", &b.name])?;
    std::fs::remove_file(&b.overlay)?;
    Ok(())
}

struct StartReport {
    iterations: usize,
    orrery: Vec<OrrerySample>,
    baseline: Vec<BaselineSample>,
}

async fn bench_start(lab: &mut Lab, iterations: usize) -> Result<StartReport> {
    println!("\n== start latency: Orrery vs. by hand, {iterations} iterations ==");
    let jobid = lab.deploy(false).await?;
    let vm = lab
        .api
        .wait_job(&jobid, Duration::from_millis(100), WAIT_LIMIT)
        .await?;
    let id = str_at(&vm, "/virtualmachine/id")?.to_string();
    let instance = str_at(&vm, "/virtualmachine/instancename")?.to_string();
    println!("instance {instance} ({id}) deployed stopped");

    // Warm-up: the first start fetches the template into the agent's cache
    // and creates the root volume; later starts reuse both.
    let t = Instant::now();
    let first = orrery_start(lab, &id, &instance).await?;
    orrery_stop(lab, &id, &instance).await?;
    println!(
        "warm-up start (template transfer, volume creation): {:.0} ms (cycle {:.1} s)",
        ms(first.total),
        t.elapsed().as_secs_f64()
    );

    let primary = lab.primary_dir.clone();
    let template = primary
        .join("templates")
        .join(format!("{}.qcow2", lab.template));
    if !template.is_file() {
        bail!("the agent has no cached template at {}", template.display());
    }
    let xml = virsh(&["dumpxml", "--inactive", &instance])?;
    let by_hand = lab.guard.dir.join("by-hand");
    std::fs::create_dir_all(&by_hand)?;
    std::fs::set_permissions(&by_hand, std::fs::Permissions::from_mode(0o755))?;
    let b = Baseline {
        name: format!("byhand-{}", lab.guard.tag),
        template,
        overlay: by_hand.join("root.qcow2"),
        xml_path: by_hand.join("domain.xml"),
    };
    std::fs::write(
        &b.xml_path,
        baseline_xml(
            &xml,
            &b.name,
            &primary,
            &lab.state_dir.join("consoles"),
            &b.overlay,
            &by_hand.join("console.log"),
        )?,
    )?;
    // The same warm-up for the manual path: libvirt and the page cache have
    // seen this domain shape once before anything is timed.
    baseline_start(lab, &b).await?;
    baseline_remove(&b)?;

    let mut report = StartReport {
        iterations,
        orrery: Vec::new(),
        baseline: Vec::new(),
    };
    println!(
        "{:>4} {:>12} {:>12} {:>12} | {:>10} {:>10} {:>10} {:>10}",
        "#", "job done", "running", "orrery", "qemu-img", "define", "start", "by hand"
    );
    for i in 0..iterations {
        lab.check_alive()?;
        let o = orrery_start(lab, &id, &instance).await?;
        orrery_stop(lab, &id, &instance).await?;
        let h = baseline_start(lab, &b).await?;
        baseline_remove(&b)?;
        println!(
            "{:>4} {:>9.1} ms {:>9.1} ms {:>9.1} ms | {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms",
            i + 1,
            ms(o.job),
            ms(o.running),
            ms(o.total),
            ms(h.qemu_img),
            ms(h.define),
            ms(h.start),
            ms(h.total)
        );
        report.orrery.push(o);
        report.baseline.push(h);
    }
    // Leave no domain behind for the memory figure.
    run_job(
        &lab.api,
        &[
            ("command", "destroyVirtualMachine"),
            ("id", &id),
            ("expunge", "true"),
        ],
    )
    .await?;
    Ok(report)
}

fn print_start(r: &StartReport) {
    let row = |label: &str, samples: Vec<Duration>| {
        let s = percentiles(&samples);
        println!("  {label:<34} {:>9.1} {:>9.1} {:>9.1}", s.p50, s.p90, s.min);
        s
    };
    println!(
        "\nstart latency, {} iterations (ms)     median       p90       min",
        r.iterations
    );
    row(
        "Orrery: job complete",
        r.orrery.iter().map(|s| s.job).collect(),
    );
    row(
        "Orrery: domain running",
        r.orrery.iter().map(|s| s.running).collect(),
    );
    let o = row(
        "Orrery: both (the figure)",
        r.orrery.iter().map(|s| s.total).collect(),
    );
    row(
        "by hand: qemu-img create",
        r.baseline.iter().map(|s| s.qemu_img).collect(),
    );
    row(
        "by hand: virsh define",
        r.baseline.iter().map(|s| s.define).collect(),
    );
    row(
        "by hand: virsh start",
        r.baseline.iter().map(|s| s.start).collect(),
    );
    let b = row(
        "by hand: total (the baseline)",
        r.baseline.iter().map(|s| s.total).collect(),
    );
    // Both points are polled, so this is also bounded by the poll interval.
    let mut lag: Vec<f64> = r.orrery.iter().map(|s| ms(s.job) - ms(s.running)).collect();
    lag.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  the job completed {:.1} ms (median) after the domain was seen running",
        lag[(lag.len() - 1) / 2]
    );
    let ratio = o.p50 / b.p50;
    println!(
        "  ratio Orrery/by hand (medians): {ratio:.2} (target <= {START_RATIO_TARGET}): {}",
        if ratio <= START_RATIO_TARGET {
            "met"
        } else {
            "MISSED"
        }
    );
}

// ---------------------------------------------------------------------------
// Resident memory

/// Lets the agent idle, sampling its memory once a second; returns the last
/// sample and the smallest and largest RSS seen.
async fn idle_memory(lab: &mut Lab, idle: Duration) -> Result<(Mem, u64, u64)> {
    println!("agent idles for {:.0} s", idle.as_secs_f64());
    let end = Instant::now() + idle;
    let (mut lo, mut hi) = (u64::MAX, 0);
    loop {
        lab.check_alive()?;
        let m = lab.agent_mem()?;
        lo = lo.min(m.rss_kb);
        hi = hi.max(m.rss_kb);
        if Instant::now() >= end {
            return Ok((m, lo, hi));
        }
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
    }
}

struct RssFigure {
    domains: usize,
    host_domains: usize,
    mem: Mem,
    lo: u64,
    hi: u64,
}

fn print_rss(label: &str, f: &RssFigure) {
    println!(
        "  {label:<12} VmRSS {} kB ({:.1} MiB; idle range {}-{} kB), VmHWM {} kB ({:.1} MiB), \
         RssAnon {} kB, RssFile {} kB, {} threads; {} domain(s) on the host",
        f.mem.rss_kb,
        mib(f.mem.rss_kb),
        f.lo,
        f.hi,
        f.mem.hwm_kb,
        mib(f.mem.hwm_kb),
        f.mem.anon_kb,
        f.mem.file_kb,
        f.mem.threads,
        f.host_domains
    );
}

async fn rss_idle_empty(lab: &mut Lab, idle: Duration) -> Result<RssFigure> {
    println!("\n== agent memory with no domains of its own ==");
    let (mem, lo, hi) = idle_memory(lab, idle).await?;
    Ok(RssFigure {
        domains: 0,
        host_domains: lab.host_domains(),
        mem,
        lo,
        hi,
    })
}

/// One instance of the memory figure and how far its console has been read.
struct Guest {
    id: String,
    name: String,
    /// Console bytes from before the current boot (the log is appended to).
    console_from: usize,
    restarts: u32,
}

enum Boot {
    Pending,
    Booted,
    /// The guest cannot boot with the offering's memory.
    NoMemory(String),
    /// Any other panic: with many emulated guests on few cores, early timer
    /// checks can fail ("IO-APIC + timer doesn't work"), which says nothing
    /// about the agent.
    Panicked(String),
}

fn tail(text: &str, chars: usize) -> String {
    let skip = text.chars().count().saturating_sub(chars);
    text.chars().skip(skip).collect()
}

impl Lab {
    fn console_bytes(&self, instance: &str) -> Vec<u8> {
        std::fs::read(
            self.state_dir
                .join("consoles")
                .join(format!("{instance}.log")),
        )
        .unwrap_or_default()
    }

    fn boot_state(&self, g: &Guest) -> Boot {
        let bytes = self.console_bytes(&g.name);
        let text = String::from_utf8_lossy(bytes.get(g.console_from..).unwrap_or_default());
        if text.contains(BOOTED_MARKER) {
            Boot::Booted
        } else if NO_MEMORY.iter().any(|m| text.contains(m)) {
            Boot::NoMemory(tail(&text, 1500))
        } else if text.contains("Kernel panic") {
            Boot::Panicked(tail(&text, 600))
        } else {
            Boot::Pending
        }
    }

    /// Deploys `n` running instances and waits until every guest printed
    /// its boot marker.
    async fn deploy_booted(&mut self, n: usize, memory_mb: u32) -> Result<Vec<Guest>> {
        let mut guests: Vec<Guest> = Vec::new();
        while guests.len() < n {
            let wave = BOOT_WAVE.min(n - guests.len());
            let mut jobs = Vec::new();
            for _ in 0..wave {
                jobs.push(self.deploy(true).await?);
            }
            let first = guests.len();
            for j in &jobs {
                let vm = self
                    .api
                    .wait_job(j, Duration::from_millis(200), WAIT_LIMIT)
                    .await?;
                guests.push(Guest {
                    id: str_at(&vm, "/virtualmachine/id")?.to_string(),
                    name: str_at(&vm, "/virtualmachine/instancename")?.to_string(),
                    console_from: 0,
                    restarts: 0,
                });
            }
            let deadline = Instant::now() + WAIT_LIMIT;
            loop {
                self.check_alive()?;
                let mut pending = 0;
                for g in &mut guests[first..] {
                    match self.boot_state(g) {
                        Boot::Booted => {}
                        Boot::Pending => pending += 1,
                        Boot::NoMemory(console) => bail!(
                            "{} cannot boot with {memory_mb} MB; raise --memory. \
                             Its console ends with:\n{console}",
                            g.name
                        ),
                        Boot::Panicked(console) if g.restarts < MAX_RESTARTS => {
                            println!(
                                "{} panicked while booting; powering it off and on again. \
                                 Its console ends with:\n{console}",
                                g.name
                            );
                            run_job(
                                &self.api,
                                &[
                                    ("command", "stopVirtualMachine"),
                                    ("id", &g.id),
                                    ("forced", "true"),
                                ],
                            )
                            .await?;
                            g.console_from = self.console_bytes(&g.name).len();
                            g.restarts += 1;
                            run_job(
                                &self.api,
                                &[("command", "startVirtualMachine"), ("id", &g.id)],
                            )
                            .await?;
                            pending += 1;
                        }
                        Boot::Panicked(console) => bail!(
                            "{} panicked on {} boots; its console ends with:\n{console}",
                            g.name,
                            MAX_RESTARTS + 1
                        ),
                    }
                }
                if pending == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{pending} guest(s) did not boot within {WAIT_LIMIT:?} \
                         (no {BOOTED_MARKER} on their consoles)"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            println!("{} of {n} guests booted", guests.len());
        }
        Ok(guests)
    }
}

async fn rss_with_domains(
    lab: &mut Lab,
    n: usize,
    memory_mb: u32,
    idle: Duration,
) -> Result<RssFigure> {
    println!("\n== agent memory with {n} running domains ==");
    let t = Instant::now();
    let guests = lab.deploy_booted(n, memory_mb).await?;
    let vms = lab
        .api
        .ok(&[("command", "listVirtualMachines"), ("listall", "true")])
        .await?;
    let running = vms
        .get("virtualmachine")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter(|v| {
                    let id = v.get("id").and_then(Value::as_str);
                    guests.iter().any(|g| Some(g.id.as_str()) == id)
                        && v.get("state").and_then(Value::as_str) == Some("Running")
                })
                .count()
        })
        .unwrap_or(0);
    if running != n {
        bail!("only {running} of {n} instances are Running: {vms}");
    }
    let restarts: u32 = guests.iter().map(|g| g.restarts).sum();
    println!(
        "{n} instances Running and booted after {:.1} s ({restarts} power cycle(s) after a panic)",
        t.elapsed().as_secs_f64()
    );
    let (mem, lo, hi) = idle_memory(lab, idle).await?;
    Ok(RssFigure {
        domains: n,
        host_domains: lab.host_domains(),
        mem,
        lo,
        hi,
    })
}

// ---------------------------------------------------------------------------

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores ({model}), {:.1} GiB memory",
        mib(mem) / 1024.0
    )
}

/// The host's 1-minute load average: other work on the machine shows up in
/// every figure here, so the report says how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn run(args: &Args, lab: &mut Lab) -> Result<()> {
    let load_before = load_average();
    let mut empty = None;
    if args.mode != Mode::Start {
        empty = Some(rss_idle_empty(lab, args.idle).await?);
    }
    let mut start = None;
    if args.mode != Mode::Rss {
        start = Some(bench_start(lab, args.iterations).await?);
    }
    let mut full = None;
    if args.mode != Mode::Start {
        full = Some(rss_with_domains(lab, args.domains, args.memory_mb, args.idle).await?);
    }

    println!("\n== results ==");
    println!("machine: {}", machine());
    println!(
        "load average (1 min): {load_before} at the start, {} at the end",
        load_average()
    );
    if let (Ok(lv), Ok(hv)) = (lab.conn.lib_version(), lab.conn.hyp_version()) {
        let v = |x: u32| format!("{}.{}.{}", x / 1_000_000, (x / 1000) % 1000, x % 1000);
        println!(
            "libvirt {}, QEMU {}, domain type qemu (software emulation)",
            v(lv),
            v(hv)
        );
    }
    if let Some(r) = &start {
        print_start(r);
    }
    if let (Some(e), Some(f)) = (&empty, &full) {
        println!(
            "\nagent memory after {:.0} s idle, {} MB guests:",
            args.idle.as_secs_f64(),
            args.memory_mb
        );
        print_rss(&format!("{} domains:", e.domains), e);
        print_rss(&format!("{} domains:", f.domains), f);
        // /proc's "kB" are KiB, so the target is read as 30 MiB.
        println!(
            "  VmRSS with {} domains: {:.1} MiB (target < {RSS_TARGET_MIB} MiB = {} kB): {}",
            f.domains,
            mib(f.mem.rss_kb),
            (RSS_TARGET_MIB * 1024.0) as u64,
            if mib(f.mem.rss_kb) < RSS_TARGET_MIB {
                "met"
            } else {
                "MISSED"
            }
        );
        println!("  (VmHWM is the peak over the agent's whole run, set-up included)");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so that either still cleans up.
async fn interrupted() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let bins = find_bins()?;
    let started = Instant::now();
    let mut lab = tokio::select! {
        r = Lab::up(&bins, args.memory_mb) => r?,
        r = interrupted() => {
            r?;
            bail!("interrupted");
        }
    };
    let result = tokio::select! {
        r = run(&args, &mut lab) => r,
        r = interrupted() => r.and(Err(anyhow!("interrupted"))),
    };
    lab.guard.failed = result.is_err();
    drop(lab);
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    result
}

/// An asynchronous command, waited for; returns the job's result.
async fn run_job(api: &Api, params: &[(&str, &str)]) -> Result<Value> {
    let r = api.ok(params).await?;
    let jobid = str_at(&r, "/jobid")?.to_string();
    Ok(api
        .wait_job(&jobid, Duration::from_millis(100), WAIT_LIMIT)
        .await?)
}
