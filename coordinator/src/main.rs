//! `orrery-coordinator`: `init` creates a data directory, `serve` runs the API.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orrery_coordinator::agents::{self, Hub, Router};
use orrery_coordinator::api;
use orrery_coordinator::service::agent::Simulator;
use orrery_coordinator::service::inventory::InfraFilter;
use orrery_coordinator::service::Service;
use orrery_coordinator::store::records::{Cluster, Pod, Zone};
use orrery_coordinator::store::{postgres::PgStore, sqlite::SqliteStore, DynStore};
use orrery_coordinator::{ca, config};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "orrery-coordinator",
    version,
    about = "Orrery coordinator: CloudStack-compatible API, placement, jobs"
)]
struct Cli {
    /// Configuration file (default /etc/orrery/coordinator.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the records are kept: a PostgreSQL URL
    /// (`postgres://user:password@host/database`); without it, `orrery.db`
    /// (SQLite) in the data directory.
    #[arg(long, global = true)]
    store: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the store, the CA and the root admin; print the admin's keys as JSON.
    Init {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The root admin's password, read from this file (its first line);
        /// without it a random one is made and printed once.
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
        /// Succeed without touching anything when the store already exists
        /// (a service's first start runs `init` every time).
        #[arg(long)]
        if_missing: bool,
        /// Also write the admin's keys and password (JSON, mode 0600) here,
        /// and print only where they are.
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Serve the API.
    Serve {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// API listen address (default 127.0.0.1:8080).
        #[arg(long)]
        api_listen: Option<String>,
        /// Agent listen address (default 0.0.0.0:8250).
        #[arg(long)]
        agent_listen: Option<String>,
        /// Register this many simulated hosts.
        #[arg(long)]
        simulated_hosts: Option<usize>,
        /// Metrics listen address (default 127.0.0.1:9595).
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Serve a built web UI (CloudStack's, from its `ui/` sources) at `/`.
        #[arg(long)]
        ui_dir: Option<PathBuf>,
        /// Console proxy listen address (default 127.0.0.1:8082).
        #[arg(long)]
        console_listen: Option<String>,
        /// The console proxy's URL as browsers reach it (default http:// and
        /// the bound listen address).
        #[arg(long)]
        console_url: Option<String>,
    },
    /// Copy the store (and the statistics store) while it is served, with
    /// SQLite's online backup; the CA files are copied beside them.
    Backup {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A directory to create for the copy.
        #[arg(long)]
        to: PathBuf,
    },
    /// Enrolment tokens for new hosts.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a one-time token an agent enrols with (`orrery-agent enroll`).
    Create {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Zone id or name (default: the only zone, created when none exists).
        #[arg(long)]
        zone: Option<String>,
        /// Pod id or name.
        #[arg(long)]
        pod: Option<String>,
        /// Cluster id or name.
        #[arg(long)]
        cluster: Option<String>,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 86400)]
        ttl: i64,
        /// How many tokens to create, printed one per line (enrolling a fleet
        /// at once costs one start of this command, not one per host).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

async fn open_store(dir: &Path, url: Option<&str>) -> Result<DynStore> {
    let store: DynStore = match url {
        Some(url) => Arc::new(
            PgStore::open(url)
                .await
                .context("connecting to the PostgreSQL store")?,
        ),
        None => Arc::new(
            SqliteStore::open(&dir.join("orrery.db"))
                .await
                .context("opening the store")?,
        ),
    };
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

/// Whether `init` has run for this data directory: its store file, or with
/// PostgreSQL its CA (the records are in the database).
fn initialised(dir: &Path, url: Option<&str>) -> bool {
    match url {
        Some(_) => dir.join("ca.pem").exists(),
        None => dir.join("orrery.db").exists(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORRERY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let file = config::load(cli.config.as_deref())?;
    let store_url = cli.store.clone().or(file.store.clone());
    if let Some(u) = &store_url {
        if !orrery_coordinator::store::postgres::is_url(u) {
            bail!("--store must be a postgres:// URL (without it the store is orrery.db in the data directory)");
        }
    }
    let store_url = store_url.as_deref();
    match cli.cmd {
        Cmd::Init {
            data_dir,
            admin_password_file,
            if_missing,
            keys_file,
        } => {
            let admin_password = match &admin_password_file {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let line = text.lines().next().unwrap_or("").to_string();
                    if line.is_empty() {
                        bail!("{} holds no password on its first line", p.display());
                    }
                    Some(line)
                }
                None => None,
            };
            let dir = data_dir
                .or(file.data_dir)
                .context("--data-dir is required")?;
            let exists = dir.join("orrery.db").exists() || dir.join("ca.pem").exists();
            if exists && if_missing {
                println!("{} is initialised; nothing to do", dir.display());
                return Ok(());
            }
            if exists {
                bail!(
                    "{} is already initialised; refusing to touch it",
                    dir.display()
                );
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let store = open_store(&dir, store_url).await?;
            if store_url.is_some() && store.is_initialised().await? {
                bail!("the PostgreSQL store is already initialised; refusing to touch it");
            }
            let svc = Service::new(store, Arc::new(Simulator::new(Duration::ZERO)), dir.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e.text()))?;
            let out = svc
                .initialise(admin_password)
                .await
                .map_err(|e| anyhow::anyhow!(e.text()))?;
            ca::create(&dir)?;
            let mut printed = serde_json::json!({"apikey": out.api_key, "secretkey": out.secret_key, "userid": out.admin_user_uuid, "username": "admin"});
            if let Some(p) = out.generated_password {
                printed["password"] = serde_json::Value::String(p);
            }
            match keys_file {
                Some(path) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    writeln!(f, "{printed}")?;
                    println!(
                        "initialised {}; the root admin's keys and password are in {}",
                        dir.display(),
                        path.display()
                    );
                }
                None => println!("{printed}"),
            }
            Ok(())
        }
        Cmd::Backup { data_dir, to } => {
            let dir = data_dir
                .or(file.data_dir)
                .context("--data-dir is required")?;
            if store_url.is_some() {
                bail!("the store is in PostgreSQL: back it up with pg_dump; this command copies SQLite stores");
            }
            if !dir.join("orrery.db").exists() {
                bail!("{} holds no store", dir.display());
            }
            std::fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
            for db in ["orrery.db", "stats.db"] {
                if dir.join(db).exists() {
                    orrery_coordinator::store::sqlite::backup(&dir.join(db), &to.join(db))
                        .with_context(|| format!("copying {db}"))?;
                }
            }
            for f in ["ca.pem", "ca.key"] {
                if dir.join(f).exists() {
                    std::fs::copy(dir.join(f), to.join(f))
                        .with_context(|| format!("copying {f}"))?;
                }
            }
            println!("backed up {} to {}", dir.display(), to.display());
            Ok(())
        }
        Cmd::Serve {
            data_dir,
            api_listen,
            agent_listen,
            simulated_hosts,
            metrics_listen,
            ui_dir,
            console_listen,
            console_url,
        } => {
            let mut limits = file.listener_limits();
            let dir = data_dir
                .or(file.data_dir)
                .context("--data-dir is required")?;
            if !initialised(&dir, store_url) {
                bail!(
                    "{} is not initialised; run `orrery-coordinator init --data-dir {}` first",
                    dir.display(),
                    dir.display()
                );
            }
            let listen = api_listen
                .or(file.api_listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into());
            let agent_listen = agent_listen
                .or(file.agent_listen)
                .unwrap_or_else(|| "0.0.0.0:8250".into());
            let store = open_store(&dir, store_url).await?;
            let delay = Duration::from_millis(file.simulator_delay_ms.unwrap_or(200));
            let hub = Arc::new(Hub::new());
            let router = Router {
                hub: hub.clone(),
                sim: Arc::new(Simulator::new(delay)),
                stop_timeout: Duration::from_secs(120),
            };
            let svc = Service::new(store, Arc::new(router), dir.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e.text()))?;
            hub.attach(&svc);
            if let Some(n) = simulated_hosts.or(file.simulated_hosts) {
                svc.ensure_simulated_hosts(n, file.simulated_gpus.unwrap_or(0))
                    .await
                    .map_err(|e| anyhow::anyhow!(e.text()))?;
            }
            // With a shared store only the leader settles what a stopped
            // coordinator left behind: the others' jobs may be running.
            // Leadership is known within a few of the lease's tries.
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while !svc.leads() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let failed = if svc.leads() {
                svc.recover_after_restart()
                    .await
                    .map_err(|e| anyhow::anyhow!(e.text()))?
            } else {
                tracing::info!("another coordinator leads: it settles interrupted work");
                0
            };
            if failed > 0 {
                tracing::warn!(
                    jobs = failed,
                    "failed jobs interrupted by the previous shutdown"
                );
            }
            svc.start_scheduler();
            svc.statistics.start_tasks();
            svc.follow_shared_store();
            let agent_addr = agents::server::serve(svc.clone(), hub.clone(), &agent_listen).await?;
            tracing::info!(listen = %agent_addr, "agent endpoint listening");
            // Commands for hosts whose agents reach another coordinator
            // only are carried there (see agents::Hub::forward).
            let peer_address = file.peer_address.clone().unwrap_or_else(|| {
                if agent_addr.ip().is_unspecified() {
                    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                    format!("{}:{}", name.trim(), agent_addr.port())
                } else {
                    agent_addr.to_string()
                }
            });
            svc.advertise_agent_endpoint(&peer_address)
                .await
                .context("advertising the agent endpoint to the other coordinators")?;
            spawn_expunger(svc.clone());
            spawn_liveness(svc.clone());
            spawn_ha(svc.clone());
            spawn_orphan_settler(svc.clone());
            let api = api::Api::new(svc.clone());
            let ui_dir = ui_dir.or_else(|| file.ui_dir.clone());
            let app = api::router_with_ui(api.clone(), ui_dir.as_deref())
                .with_context(|| format!("serving the web UI from {ui_dir:?}"))?;
            if let Some(d) = &ui_dir {
                tracing::info!(dir = %d.display(), "web UI at /");
            }
            let fd_limit = orrery_coordinator::listener::raise_fd_limit()
                .context("raising the open-file limit")?;
            limits.max_connections =
                orrery_coordinator::listener::cap_for(fd_limit, limits.max_connections);
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(%listen, fd_limit, max_connections = limits.max_connections, "API listening at /client/api");
            let metrics_listen = metrics_listen
                .or_else(|| file.metrics_listen.clone())
                .unwrap_or_else(|| "127.0.0.1:9595".into());
            let metrics_listener = tokio::net::TcpListener::bind(&metrics_listen)
                .await
                .with_context(|| format!("binding {metrics_listen} for metrics"))?;
            tracing::info!(listen = %metrics_listen, "metrics at /metrics");
            let console_listen = console_listen
                .or_else(|| file.console_listen.clone())
                .unwrap_or_else(|| "127.0.0.1:8082".into());
            let console_listener = tokio::net::TcpListener::bind(&console_listen)
                .await
                .with_context(|| format!("binding {console_listen} for the console proxy"))?;
            let console_addr = console_listener.local_addr()?;
            let console_url = console_url
                .or_else(|| file.console_url.clone())
                .unwrap_or_else(|| format!("http://{console_addr}"));
            svc.guest_access.set_console_base_url(&console_url);
            tracing::info!(listen = %console_addr, url = %console_url, "console proxy at /console/");
            let novnc = file
                .novnc_dir
                .clone()
                .unwrap_or_else(|| orrery_coordinator::console::DEFAULT_NOVNC_DIR.into());
            let console_svc = svc.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    orrery_coordinator::console::serve(console_svc, console_listener, novnc).await
                {
                    tracing::error!(error = %e, "console proxy stopped");
                }
            });
            let metrics_app = api::metrics_router(api);
            tokio::spawn(orrery_coordinator::listener::serve(
                metrics_listener,
                metrics_app,
                orrery_coordinator::listener::Limits {
                    max_connections: 64,
                    ..limits
                },
                std::future::pending(),
            ));
            // SIGTERM or SIGINT: stop taking requests, then save the open
            // statistics so a restart continues where this one stopped.
            let shutdown = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("installing a SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            orrery_coordinator::listener::serve(listener, app, limits, shutdown).await?;
            // Let running jobs record their outcome before the process ends.
            let left = svc.tasks.drain(Duration::from_secs(30)).await;
            if left > 0 {
                tracing::warn!(
                    jobs = left,
                    "jobs still running at shutdown; the next start settles them"
                );
            }
            if let Err(e) = svc.statistics.hub.save_tails().await {
                tracing::warn!(error = %e, "saving statistics at shutdown failed");
            }
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    data_dir,
                    zone,
                    pod,
                    cluster,
                    ttl,
                    count,
                },
        } => {
            let dir = data_dir
                .or(file.data_dir)
                .context("--data-dir is required")?;
            if !initialised(&dir, store_url) {
                bail!("{} is not initialised", dir.display());
            }
            if ttl < 1 {
                bail!("--ttl must be at least 1 second");
            }
            if count < 1 {
                bail!("--count must be at least 1");
            }
            let store = open_store(&dir, store_url).await?;
            let svc = Service::new(store, Arc::new(Simulator::new(Duration::ZERO)), dir.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e.text()))?;
            let (z, p, c) = match (zone, pod, cluster) {
                (None, None, None) => svc
                    .infrastructure
                    .default_cluster("KVM")
                    .await
                    .map_err(|e| anyhow::anyhow!(e.text()))?,
                (z, p, c) => {
                    let all = InfraFilter::default();
                    let zones = svc
                        .infrastructure
                        .list_zones(&all)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?;
                    let zone: Zone = pick(zones.0, z.as_deref(), "zone")?;
                    let pod: Pod = pick(
                        list(
                            svc.infrastructure
                                .list_pods(&InfraFilter {
                                    zone: Some(zone.uuid.clone()),
                                    ..all.clone()
                                })
                                .await,
                        )?,
                        p.as_deref(),
                        "pod",
                    )?;
                    let cluster: Cluster = pick(
                        list(
                            svc.infrastructure
                                .list_clusters(&InfraFilter {
                                    pod: Some(pod.uuid.clone()),
                                    ..all.clone()
                                })
                                .await,
                        )?,
                        c.as_deref(),
                        "cluster",
                    )?;
                    (zone, pod, cluster)
                }
            };
            // Written as they are made: tokens already printed stay valid
            // if a later one fails.
            let mut out = std::io::stdout().lock();
            for _ in 0..count {
                let token = svc
                    .infrastructure
                    .create_enroll_token(&z, &p, &c, ttl)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.text()))?;
                writeln!(out, "{token}").context("writing the token")?;
            }
            Ok(())
        }
    }
}

fn list<E>(r: Result<(Vec<E>, u64), orrery_coordinator::service::ServiceError>) -> Result<Vec<E>> {
    r.map(|(v, _)| v).map_err(|e| anyhow::anyhow!(e))
}

/// A zone, pod or cluster by id or name; when not named, the only one there is.
fn pick<E: Named + orrery_coordinator::service::Record>(
    all: Vec<E>,
    wanted: Option<&str>,
    what: &str,
) -> Result<E> {
    let all: Vec<E> = all.into_iter().filter(|e| e.live()).collect();
    let found: Vec<&E> = match wanted {
        Some(w) => all
            .iter()
            .filter(|e| e.uuid() == w || e.name().eq_ignore_ascii_case(w))
            .collect(),
        None => all.iter().collect(),
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no {what} {}", wanted.unwrap_or("exists")),
        _ => bail!("several {what}s match; name one with --{what}"),
    }
}

trait Named: Clone {
    fn name(&self) -> &str;
    fn live(&self) -> bool;
}
impl Named for Zone {
    fn name(&self) -> &str {
        &self.name
    }
    fn live(&self) -> bool {
        self.removed.is_none()
    }
}
impl Named for Pod {
    fn name(&self) -> &str {
        &self.name
    }
    fn live(&self) -> bool {
        self.removed.is_none()
    }
}
impl Named for Cluster {
    fn name(&self) -> &str {
        &self.name
    }
    fn live(&self) -> bool {
        self.removed.is_none()
    }
}

/// Looks for lost hosts (both heartbeats silent past the lease) and
/// recovers their instances.
fn spawn_ha(svc: Arc<Service>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(orrery_coordinator::service::fencing::CHECK_EVERY).await;
            if !svc.leads() {
                continue;
            }
            if let Err(e) = svc.check_ha().await {
                tracing::error!(error = %e, "HA pass failed");
            }
        }
    });
}

/// With several coordinators: settles the jobs of one that died, every few
/// seconds on the leader (at once after taking over).
fn spawn_orphan_settler(svc: Arc<Service>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match svc.settle_orphaned_jobs().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "settled the jobs of a coordinator that stopped"),
                Err(e) => tracing::error!(error = %e, "settling orphaned jobs failed"),
            }
        }
    });
}

/// Marks hosts whose agents went quiet Disconnected.
fn spawn_liveness(svc: Arc<Service>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if !svc.leads() {
                continue;
            }
            if let Err(e) = svc.check_liveness().await {
                tracing::error!(error = %e, "liveness pass failed");
            }
        }
    });
}

/// Expunges destroyed instances (and volumes destroyed on their own) older
/// than `expunge.delay`, every `expunge.interval`.
fn spawn_expunger(svc: Arc<Service>) {
    tokio::spawn(async move {
        loop {
            let every = svc.setting_i64("expunge.interval").max(1) as u64;
            tokio::time::sleep(Duration::from_secs(every)).await;
            if !svc.leads() {
                continue;
            }
            if let Err(e) = svc.expunge_due().await {
                tracing::error!(error = %e, "expunger pass failed");
            }
            if let Err(e) = svc.expunge_destroyed_volumes().await {
                tracing::error!(error = %e, "volume expunger pass failed");
            }
        }
    });
}
