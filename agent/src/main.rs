//! `orrery-agent`: enrol a host, run the daemon, or inspect the host.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use orrery_agent::config::{self, AgentConfig};
use orrery_agent::hypervisor::libvirt::LibvirtHypervisor;
use orrery_agent::hypervisor::Hypervisor;
use orrery_agent::ops::Ops;
use orrery_agent::state::StateDir;
use orrery_agent::{enroll, link, pki};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "orrery-agent", version, about = "Orrery host agent")]
struct Cli {
    /// Configuration file (default /etc/orrery/agent.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// State directory (default /var/lib/orrery/agent).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// libvirt connection URI (default qemu:///system).
    #[arg(long, global = true)]
    libvirt_uri: Option<String>,
    /// Primary storage directory (default /var/lib/orrery/primary); QEMU
    /// must be able to reach it.
    #[arg(long, global = true)]
    primary_dir: Option<PathBuf>,
    /// Host-local storage directory (default /var/lib/orrery/local), for
    /// volumes kept on this host's own disks; QEMU must be able to reach it.
    #[arg(long, global = true)]
    local_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrol this host with a coordinator using a one-time token.
    Enroll {
        /// The coordinator's agent endpoint, HOST:PORT.
        #[arg(long)]
        coordinator: String,
        #[arg(long)]
        token: String,
        /// Re-enrol even though this state directory is enrolled already.
        #[arg(long)]
        force: bool,
    },
    /// Run the agent.
    Run,
    /// Inspect this host.
    Debug {
        #[command(subcommand)]
        what: Debug,
    },
}

#[derive(Subcommand)]
enum Debug {
    /// Host facts as reported to the coordinator.
    Facts,
    /// Every domain the hypervisor has.
    Domains,
    /// Render the domain XML for an instance spec (JSON) on this host.
    RenderXml { spec: PathBuf },
    /// Volumes in primary and local storage.
    Volumes,
    /// Open a session to the coordinator and report whether it was accepted.
    PingCoordinator,
    /// GPUs found in sysfs (needs no libvirt).
    Gpus,
}

async fn ops(cfg: &AgentConfig) -> Result<Arc<Ops>> {
    let hv = LibvirtHypervisor::connect(&cfg.libvirt_uri)
        .await
        .with_context(|| format!("connecting to libvirt at {}", cfg.libvirt_uri))?;
    let hv: Arc<dyn Hypervisor> = Arc::new(hv);
    Ok(Arc::new(Ops::new(hv, cfg.clone())))
}

/// glibc gives every thread that allocates its own malloc arena, and memory
/// freed in one is rarely returned; libvirt calls run on many blocking threads,
/// so the agent's footprint grew with the number of domains. Two arenas keep it
/// flat.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only adjusts allocator tuning; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(agent_main())
}

async fn agent_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORRERY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    orrery_tls::install_crypto();
    let cli = Cli::parse();
    let file = config::load(cli.config.as_deref())?;
    let mut cfg = AgentConfig::merge(
        file,
        cli.state_dir,
        cli.libvirt_uri,
        cli.primary_dir,
        cli.local_dir,
    );
    if cfg.keep_legacy_primary(|p| p.is_dir()) {
        tracing::info!(
            dir = %cfg.primary_dir.display(),
            "primary storage stays where an earlier version put it; set primary_dir to choose"
        );
    }
    let state = StateDir::new(&cfg.state_dir);
    match cli.cmd {
        Cmd::Enroll {
            coordinator,
            token,
            force,
        } => {
            if state.is_enrolled() && !force {
                anyhow::bail!(
                    "{} is already enrolled; pass --force to enrol again",
                    cfg.state_dir.display()
                );
            }
            let hostname = orrery_agent::host::hostname().unwrap_or_else(|_| "host".into());
            let address = cfg.address.clone().or_else(|| {
                orrery_agent::host::primary_ip(std::path::Path::new("/")).map(|a| a.to_string())
            });
            let addresses = orrery_agent::host::peer_addresses(
                address.as_deref(),
                &orrery_agent::host::interface_addresses(),
                orrery_agent::host::MAX_CERT_ADDRESSES,
            );
            let id = enroll::enroll(&coordinator, &token, &hostname, &addresses, &state).await?;
            // libvirtd is usually not running yet on a host being enrolled, so
            // QEMU's user comes from its configuration.
            let tls = pki::install(&cfg, pki::emulator_owner(None))
                .context("enrolled, but writing libvirt's and QEMU's TLS files failed")?;
            println!(
                "{}",
                serde_json::json!({"hostid": id.host_id, "coordinator": id.coordinator, "statedir": cfg.state_dir, "libvirttls": tls})
            );
            Ok(())
        }
        Cmd::Run => {
            let creds = state.credentials()?;
            let coordinator = cfg
                .coordinator
                .clone()
                .unwrap_or(creds.identity.coordinator.clone());
            // The storage heartbeat runs first, before anything that may take
            // seconds (storage checks, the KVM probe), and whether or not the
            // coordinator answers: peers judge this host by it, and a quick
            // agent restart must not look like a lost host.
            let ha = orrery_agent::ha::Ha::new(
                &creds.identity.host_id,
                &cfg.primary_dir,
                &cfg.libvirt_run_dir(),
            );
            ha.start().context("starting the storage heartbeat")?;
            let ops = ops(&cfg).await?;
            ops.init_storage().await?;
            ops.check_storage_reachable().await?;
            // Probes KVM now rather than on the first start; a failure to
            // read the facts is retried when the session sends them.
            if let Err(e) = ops.host_info().await {
                tracing::warn!(error = %e, "reading host facts");
            }
            // Before the session: the hello reports whether TLS migration works.
            pki::refresh(&ops).await;
            // Guests that were running keep their metadata service.
            ops.meta.restore();
            tracing::info!(host = %creds.identity.host_id, %coordinator, "agent starting");
            let state = Arc::new(state);
            // Several coordinators (comma-separated): a session with each,
            // so whichever one an API call reached can command this host.
            let mut links = tokio::task::JoinSet::new();
            for c in coordinator
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                links.spawn(link::run(
                    ops.clone(),
                    state.clone(),
                    c.to_string(),
                    ha.clone(),
                ));
            }
            tokio::select! {
                _ = links.join_next() => {}
                _ = shutdown_signal() => tracing::info!("stopping; domains keep running"),
            }
            Ok(())
        }
        Cmd::Debug { what } => debug(&cfg, &state, what).await,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn debug(cfg: &AgentConfig, state: &StateDir, what: Debug) -> Result<()> {
    match what {
        Debug::Gpus => {
            println!(
                "{}",
                serde_json::to_string_pretty(&orrery_agent::host::gpu::discover(&cfg.sysfs_root))?
            );
        }
        Debug::Facts => {
            let ops = ops(cfg).await?;
            let f = ops.facts().await?;
            let accel = ops.accelerator().await?;
            println!(
                "{}",
                serde_json::json!({
                    "hostname": f.hostname, "arch": f.arch, "cpus": f.cpus, "cpumhz": f.cpu_mhz,
                    "cpumodel": f.cpu_model, "memorybytes": f.memory_bytes,
                    "libvirtversion": f.libvirt_version, "domaintypes": f.domain_types,
                    "machinetypes": f.machine_types, "tpm": f.tpm, "emulator": f.emulator,
                    "firmware": f.firmware.iter().map(|x| serde_json::json!({"path": x.path, "secureboot": x.secure_boot})).collect::<Vec<_>>(),
                    "gpus": orrery_agent::host::gpu::discover(&cfg.sysfs_root),
                    "ipaddress": f.ip_address, "storagebytes": f.storage_bytes,
                    "storagefreebytes": f.storage_free_bytes,
                    "localdir": f.local_dir, "localbytes": f.local_bytes,
                    "localfreebytes": f.local_free_bytes,
                    "kvmusable": accel.kvm_usable, "kvmprobe": accel.kvm_probe,
                })
            );
        }
        Debug::Domains => {
            for d in ops(cfg).await?.domains().await? {
                println!(
                    "{}",
                    serde_json::json!({"name": d.name, "instanceuuid": d.instance_uuid, "power": format!("{:?}", d.power)})
                );
            }
        }
        Debug::RenderXml { spec } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let spec: orrery_agent::designer::InstanceSpec =
                serde_json::from_str(&text).context("parsing the instance spec")?;
            print!("{}", ops(cfg).await?.render(&spec).await?);
        }
        Debug::Volumes => {
            for (pool, dir) in [("", &cfg.primary_dir), ("local", &cfg.local_dir)] {
                let p = orrery_agent::storage::Primary::new(dir.clone());
                for v in p.list().await? {
                    println!(
                        "{}",
                        serde_json::json!({"pool": pool, "uuid": v.uuid, "path": v.path, "allocatedbytes": v.allocated_bytes})
                    );
                }
            }
        }
        Debug::PingCoordinator => {
            let creds = state.credentials()?;
            let coordinator = cfg
                .coordinator
                .clone()
                .unwrap_or(creds.identity.coordinator.clone());
            let started = std::time::Instant::now();
            let ch = link::channel(state, &coordinator).await?;
            // An authenticated call that changes nothing: the coordinator checks
            // the certificate against the host record before it looks for the
            // (nonexistent) template, so "not found" means "accepted".
            let r = orrery_proto::v1::agent_link_client::AgentLinkClient::new(ch)
                .fetch_template(orrery_proto::v1::TemplateRequest {
                    uuid: String::new(),
                    snapshot: false,
                })
                .await;
            match r {
                Err(s) if s.code() == tonic::Code::NotFound => println!(
                    "{}",
                    serde_json::json!({"coordinator": coordinator, "hostid": creds.identity.host_id, "accepted": true, "millis": started.elapsed().as_millis() as u64})
                ),
                Err(s) => anyhow::bail!(
                    "the coordinator refused this host: {} ({:?})",
                    s.message(),
                    s.code()
                ),
                Ok(_) => anyhow::bail!("unexpected answer to the probe"),
            }
        }
    }
    Ok(())
}
