//! API benchmarks: `listVirtualMachines` latency over a large store, and how many
//! `deployVirtualMachine` requests the coordinator accepts per second.
//!
//! Every measured request goes through a real `orrery-coordinator serve` child
//! process over loopback HTTP, signed the way a CloudStack client signs it, so the
//! figures include request decoding, authentication, the handler, JSON encoding
//! and the socket. Only the bulk population of the list benchmark's store goes
//! straight to the library: creating 100,000 instances through the API would take
//! far longer than the measurement itself.
//!
//! ```text
//! cargo bench -p orrery-coordinator --bench api_bench -- [list|deploy|all]
//!     [--instances N] [--requests N] [--seconds S] [--concurrency C]
//!     [--hosts H] [--rebuild] [--no-start] [--postgres ADMIN_URL]
//! ```
//!
//! With `--postgres` (a superuser's URL, as `tests/lab/postgres.sh` prints)
//! every store the benchmark makes is a new database on that server instead
//! of SQLite, so the same figures can be compared between the two.

use anyhow::{anyhow, bail, Context, Result};
use orrery_benchkit::{
    free_port, load_average, machine, percentiles as stats, str_at, Api as Client,
    Percentiles as Stats,
};
use orrery_coordinator::api::signature;
use orrery_coordinator::api::views::{self, Lookup};
use orrery_coordinator::service::agent::Simulator;
use orrery_coordinator::service::vm::mac_for;
use orrery_coordinator::service::Service;
use orrery_coordinator::store::postgres::PgStore;
use orrery_coordinator::store::records::{
    Account, DiskOffering, Domain, Host, InstanceGroup, Network, Nic, OsType, ServiceOffering,
    Template, User, Vm, Volume, Zone,
};
use orrery_coordinator::store::sqlite::SqliteStore;
use orrery_coordinator::store::{Col, Cond, DynStore, Kind, Query, StoreExt, Tx};
use orrery_model::{naming, VmState};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Part of the cache directory's name: bump it whenever the way this program
/// populates the store changes, so that a stale cache is never measured.
const CACHE_VERSION: &str = "v1";
/// The sources that decide what a stored record looks like; the cache key
/// includes a hash of them, so a change to a record or the schema rebuilds the
/// cache instead of measuring (or failing on) records the server no longer
/// writes.
const SCHEMA_SOURCES: [&str; 3] = [
    include_str!("../src/store/records.rs"),
    include_str!("../src/store/sqlite.rs"),
    include_str!("../src/service/bootstrap.rs"),
];

/// FNV-1a over the schema sources: stable across builds and platforms, unlike
/// the standard library's hasher.
fn schema_fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for src in SCHEMA_SOURCES {
        for b in src.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{:08x}", h >> 32)
}

/// The largest page `listVirtualMachines` serves by default (`default.page.size`).
const PAGE_SIZE: usize = 500;
/// Instances written per transaction while populating.
const BATCH: usize = 5_000;
/// Milliseconds a simulated host takes to start an instance; the coordinator's
/// default, written to the benchmark's configuration file so that a host-wide
/// `/etc/orrery/coordinator.toml` cannot change the result.
const SIMULATOR_DELAY_MS: u64 = 200;
/// Targets the figures are judged against.
const LIST_P99_TARGET_MS: f64 = 100.0;
const DEPLOY_RATE_TARGET: f64 = 500.0;

// ---------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    List,
    Deploy,
    All,
}

#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    instances: usize,
    requests: usize,
    seconds: f64,
    concurrency: usize,
    hosts: usize,
    rebuild: bool,
    /// Deploy with startvm=false: separates the accept path from the start jobs.
    no_start: bool,
    /// Stores in new databases on this PostgreSQL server.
    postgres: Option<String>,
}

/// The PostgreSQL server stores go to (`--postgres`), set once at start.
static POSTGRES: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The store URL a data directory's coordinator uses (written by `init_data_dir`
/// beside it), or None for SQLite in the directory.
fn store_url(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.with_extension("store-url")).ok()
}

const USAGE: &str = "usage: cargo bench -p orrery-coordinator --bench api_bench -- \
[list|deploy|all] [--instances N] [--requests N] [--seconds S] [--concurrency C] \
[--hosts H] [--rebuild] [--no-start] [--postgres ADMIN_URL]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mode: Mode::All,
        instances: 100_000,
        requests: 200,
        seconds: 10.0,
        concurrency: 32,
        hosts: 50,
        rebuild: false,
        no_start: false,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "list" => a.mode = Mode::List,
            "deploy" => a.mode = Mode::Deploy,
            "all" => a.mode = Mode::All,
            "--instances" => a.instances = value("--instances")?.parse()?,
            "--requests" => a.requests = value("--requests")?.parse()?,
            "--seconds" => a.seconds = value("--seconds")?.parse()?,
            "--concurrency" => a.concurrency = value("--concurrency")?.parse()?,
            "--hosts" => a.hosts = value("--hosts")?.parse()?,
            "--rebuild" => a.rebuild = true,
            "--no-start" => a.no_start = true,
            "--postgres" => a.postgres = Some(value("--postgres")?),
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.instances == 0 || a.requests == 0 || a.concurrency == 0 || a.hosts == 0 {
        bail!("--instances, --requests, --concurrency and --hosts must be positive");
    }
    if a.seconds.is_nan() || a.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    Ok(a)
}

// Percentiles, the signed client and the machine facts come from
// orrery-benchkit, shared with the agent's benchmark.

// ---------------------------------------------------------------------------
// The coordinator as a child process

fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orrery-coordinator"))
}

/// `<target>/api-bench`: next to the profile directory the binary was built in,
/// so `cargo clean` removes it.
fn bench_root() -> Result<PathBuf> {
    let bin = coordinator_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?;
    Ok(target.join("api-bench"))
}

struct Keys {
    apikey: String,
    secretkey: String,
}

/// `orrery-coordinator init`, exactly as an operator runs it.
fn init_data_dir(data_dir: &Path) -> Result<Keys> {
    let mut cmd = Command::new(coordinator_bin());
    if let Some(admin) = POSTGRES.get().cloned().flatten() {
        let name = format!("orrery_bench_{}", uuid::Uuid::new_v4().simple());
        let made = Command::new("psql")
            .arg(&admin)
            .arg("-qc")
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .context("running psql")?;
        if !made.success() {
            bail!("could not create database {name} on {admin}");
        }
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        std::fs::write(data_dir.with_extension("store-url"), &url)?;
        cmd.arg("--store").arg(url);
    }
    let out = cmd
        .args(["init", "--data-dir"])
        .arg(data_dir)
        .env("ORRERY_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .context("running orrery-coordinator init")?;
    if !out.status.success() {
        bail!(
            "init failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("init output")?;
    Ok(Keys {
        apikey: str_at(&v, "/apikey")?.to_string(),
        secretkey: str_at(&v, "/secretkey")?.to_string(),
    })
}

fn write_config(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!("simulator_delay_ms = {SIMULATOR_DELAY_MS}\n"),
    )?;
    Ok(path)
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    async fn start(dir: &Path, simulated_hosts: Option<usize>) -> Result<Server> {
        let port = free_port()?;
        // The agent endpoint defaults to a fixed port on all interfaces; a
        // private loopback port keeps runs from colliding with anything else.
        let agent_port = free_port()?;
        let log = dir.join("coordinator.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(coordinator_bin());
        if let Some(url) = store_url(&dir.join("data")) {
            cmd.arg("--store").arg(url);
        }
        cmd.arg("serve")
            .arg("--config")
            .arg(write_config(dir)?)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--agent-listen")
            .arg(format!("127.0.0.1:{agent_port}"))
            // Quiet unless asked otherwise: ORRERY_LOG=orrery_coordinator=debug, say,
            // logs every statement to coordinator.log for counting.
            .env(
                "ORRERY_LOG",
                std::env::var("ORRERY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if let Some(n) = simulated_hosts {
            cmd.arg("--simulated-hosts").arg(n.to_string());
        }
        let child = cmd.spawn().context("starting orrery-coordinator serve")?;
        let mut server = Server { child, port, log };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Any HTTP answer means the API is up; startup over a large store takes a
    /// moment (recovery scans the instances), hence the generous limit.
    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::new();
        let url = format!(
            "http://127.0.0.1:{}/client/api?command=listZones&response=json",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                bail!("coordinator exited with {st}; see {}", self.log.display());
            }
            if http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("coordinator did not answer; see {}", self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the benchmarks deploy from: a tiny fixed offering and a registered
/// template, both created through the API as a user would.
struct Catalog {
    zone: String,
    offering: String,
    template: String,
}

async fn create_catalog(c: &Client, dir: &Path) -> Result<Catalog> {
    let zones = c.ok(&[("command", "listZones")]).await?;
    let zone = str_at(&zones, "/zone/0/id")?.to_string();
    let ostypes = c
        .ok(&[
            ("command", "listOsTypes"),
            ("description", "Other Linux (64-bit)"),
        ])
        .await?;
    let ostype = str_at(&ostypes, "/ostype/0/id")?.to_string();
    // 1 CPU at 100 MHz with 64 MB: a simulated host (32 x 2400 MHz, 256 GiB)
    // takes 768 of them, so capacity never limits a run.
    let so = c
        .ok(&[
            ("command", "createServiceOffering"),
            ("name", "bench-tiny"),
            ("displaytext", "Benchmark: 1 CPU, 100 MHz, 64 MB"),
            ("cpunumber", "1"),
            ("cpuspeed", "100"),
            ("memory", "64"),
        ])
        .await?;
    let offering = str_at(&so, "/serviceoffering/id")?.to_string();
    let image = dir.join("tiny.raw");
    std::fs::write(&image, vec![0u8; 1 << 20])?;
    let url = format!("file://{}", image.display());
    let reg = c
        .ok(&[
            ("command", "registerTemplate"),
            ("name", "bench-template"),
            ("displaytext", "Benchmark template"),
            ("url", &url),
            ("format", "RAW"),
            ("hypervisor", "Simulator"),
            ("ostypeid", &ostype),
            ("zoneid", &zone),
            ("ispublic", "true"),
        ])
        .await?;
    let template = str_at(&reg, "/template/0/id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = c
            .ok(&[
                ("command", "listTemplates"),
                ("templatefilter", "all"),
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
    Ok(Catalog {
        zone,
        offering,
        template,
    })
}

async fn open_store(data_dir: &Path) -> Result<DynStore> {
    let store: DynStore = match store_url(data_dir) {
        Some(url) => Arc::new(PgStore::open(&url).await?),
        None => Arc::new(SqliteStore::open(&data_dir.join("orrery.db")).await?),
    };
    store.migrate().await?;
    Ok(store)
}

// ---------------------------------------------------------------------------
// listVirtualMachines

struct ListData {
    dir: PathBuf,
    keys: Keys,
    built_in: Option<Duration>,
}

/// Removes list caches built by another version or for another schema: they can
/// never be used again and take a few hundred megabytes each.
fn remove_stale_caches(current: &Path) -> Result<()> {
    let Some(root) = current.parent() else {
        return Ok(());
    };
    let keep = format!("list-{CACHE_VERSION}-{}-", schema_fingerprint());
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("list-") && !name.starts_with(&keep) {
            println!("removing the stale cache {}", e.path().display());
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

/// The populated data directory for `instances`, from the cache when present.
async fn list_data(instances: usize, rebuild: bool) -> Result<ListData> {
    let engine = if POSTGRES.get().cloned().flatten().is_some() {
        "pg"
    } else {
        "sqlite"
    };
    let dir = bench_root()?.join(format!(
        "list-{CACHE_VERSION}-{}-{instances}-{engine}",
        schema_fingerprint()
    ));
    let marker = dir.join("bench.json");
    if !rebuild {
        if let Ok(text) = std::fs::read_to_string(&marker) {
            let v: Value = serde_json::from_str(&text)?;
            println!("using the cached store in {}", dir.display());
            return Ok(ListData {
                dir,
                keys: Keys {
                    apikey: str_at(&v, "/apikey")?.to_string(),
                    secretkey: str_at(&v, "/secretkey")?.to_string(),
                },
                built_in: None,
            });
        }
    }
    remove_stale_caches(&dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    println!(
        "building a store with {instances} instances in {}",
        dir.display()
    );
    let keys = init_data_dir(&dir.join("data"))?;
    let catalog = {
        let server = Server::start(&dir, Some(8)).await?;
        let c = Client::new(server.port, &keys.apikey, &keys.secretkey, 1)?;
        create_catalog(&c, &dir).await?
        // The server stops here: population writes the store directly.
    };
    populate(&dir.join("data"), &keys, &catalog, instances).await?;
    std::fs::write(
        &marker,
        serde_json::json!({
            "version": CACHE_VERSION,
            "instances": instances,
            "apikey": keys.apikey,
            "secretkey": keys.secretkey,
        })
        .to_string(),
    )?;
    let built_in = started.elapsed();
    println!("store built in {:.1} s", built_in.as_secs_f64());
    Ok(ListData {
        dir,
        keys,
        built_in: Some(built_in),
    })
}

/// Writes `n` instances as `deployVirtualMachine` followed by a completed start
/// leaves them (the instance, its ROOT volume, its NIC on the zone's guest
/// network), then as a coordinator restart leaves them with simulated hosts:
/// Stopped, their last host remembered. Storing them Running would only make the
/// next `serve` power every one of them off during recovery.
async fn populate(data_dir: &Path, keys: &Keys, catalog: &Catalog, n: usize) -> Result<()> {
    let store = open_store(data_dir).await?;
    let user: User = store
        .first(Query::new().eq(Col::ApiKey, keys.apikey.as_str()))
        .await?
        .context("admin user")?;
    let zone: Zone = store
        .load_uuid(&catalog.zone)
        .await?
        .context("zone missing")?;
    let network: Network = store
        .all::<Network>(Query::new().eq(Col::Zone, zone.id))
        .await?
        .into_iter()
        .find(|n| n.is_zone_default)
        .context("guest network missing")?;
    let hosts: Vec<Host> = store.all(Query::new().eq(Col::Zone, zone.id)).await?;
    let offering: ServiceOffering = store
        .load_uuid(&catalog.offering)
        .await?
        .context("offering missing")?;
    let template: Template = store
        .load_uuid(&catalog.template)
        .await?
        .context("template missing")?;
    let first_ip = u32::from(network.start_ip.parse::<Ipv4Addr>()?);
    let last_ip = u32::from(network.end_ip.parse::<Ipv4Addr>()?);
    if (last_ip - first_ip + 1) < n as u32 {
        bail!("the guest network has fewer than {n} addresses");
    }
    let now = chrono::Utc::now().timestamp();
    let mut done = 0;
    while done < n {
        let count = BATCH.min(n - done);
        let vm0 = store.allocate_ids(Kind::Vm, count as i64).await?;
        let vol0 = store.allocate_ids(Kind::Volume, count as i64).await?;
        let nic0 = store.allocate_ids(Kind::Nic, count as i64).await?;
        let mut tx = Tx::new();
        for i in 0..count {
            let seq = done + i;
            let vm_id = vm0 + i as i64;
            let uuid = uuid::Uuid::new_v4().to_string();
            let host = &hosts[seq % hosts.len()];
            // Spread over the last days, one a second, oldest first.
            let created = now - (n - seq) as i64;
            let names =
                naming::instance_names(user.account_id, vm_id, &uuid, None, None, "VM", false);
            tx.insert(&Vm {
                id: vm_id,
                uuid,
                version: 1,
                vnc_password: Some(orrery_coordinator::service::vm::vnc_password()),
                name: names.name,
                display_name: names.display_name,
                instance_name: names.internal_name,
                account_id: user.account_id,
                domain_id: user.domain_id,
                user_id: user.id,
                zone_id: zone.id,
                pod_id: Some(host.pod_id),
                cluster_id: Some(host.cluster_id),
                host_id: None,
                last_host_id: Some(host.id),
                template_id: Some(template.id),
                iso_id: None,
                service_offering_id: offering.id,
                disk_offering_id: None,
                os_type_id: template.os_type_id,
                cpu_number: offering.cpu_number.unwrap_or(1),
                cpu_speed: offering.cpu_speed.unwrap_or(100),
                memory: offering.memory.unwrap_or(64),
                state: VmState::Stopped,
                group_id: None,
                ha_enable: offering.offer_ha,
                dynamically_scalable: offering.dynamic_scaling && template.dynamically_scalable,
                delete_protection: false,
                display_vm: true,
                hypervisor: template.hypervisor.clone(),
                details: BTreeMap::new(),
                keypairs: vec![],
                ssh_public_keys: vec![],
                affinity_group_ids: vec![],
                userdata: None,
                userdata_id: None,
                userdata_details: Default::default(),
                extraconfig: None,
                password_enabled: template.password_enabled,
                job_id: None,
                created,
                last_updated: created,
                destroyed_at: None,
                removed: None,
                lease: Default::default(),
                migrating_to: None,
                gpu_count: 0,
                vgpu_type: None,
            });
            tx.insert(&Volume {
                id: vol0 + i as i64,
                uuid: uuid::Uuid::new_v4().to_string(),
                version: 1,
                name: format!("ROOT-{vm_id}"),
                vm_id: Some(vm_id),
                account_id: user.account_id,
                domain_id: user.domain_id,
                zone_id: zone.id,
                volume_type: "ROOT".into(),
                size: template.size,
                disk_offering_id: None,
                state: "Ready".into(),
                device_id: Some(0),
                pool_id: None,
                template_id: Some(template.id),
                created,
                attached: Some(created),
                removed: None,
                last_host_id: None,
                from_snapshot: None,
            });
            tx.insert(&Nic {
                id: nic0 + i as i64,
                uuid: uuid::Uuid::new_v4().to_string(),
                version: 1,
                vm_id,
                network_id: network.id,
                ip_address: Ipv4Addr::from(first_ip + seq as u32).to_string(),
                mac_address: mac_for(vm_id, 0),
                netmask: network.netmask.clone(),
                gateway: network.gateway.clone(),
                is_default: true,
                device_id: 0,
                created,
            });
        }
        store.commit(tx.ops).await?;
        done += count;
        print!("\r  {done}/{n} instances");
        std::io::stdout().flush()?;
    }
    println!();
    drop(store);
    if store_url(data_dir).is_some() {
        return Ok(());
    }
    // Fold the write-ahead log into the database file so that every run starts
    // from the same on-disk state, however the population ended.
    let conn = rusqlite::Connection::open(data_dir.join("orrery.db"))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

struct ListRun {
    label: String,
    stats: Stats,
    bytes_mean: usize,
    cpu: Option<CpuUse>,
}

/// `requests` list calls, one at a time on one keep-alive connection, pages in
/// a fixed shuffled order so that shallow and deep offsets are mixed.
async fn list_run(
    c: &Client,
    server_pid: u32,
    label: &str,
    extra: &[(&str, &str)],
    instances: usize,
    requests: usize,
) -> Result<ListRun> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let pages = instances.div_ceil(PAGE_SIZE);
    let mut order: Vec<usize> = (1..=pages).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    let pagesize = PAGE_SIZE.to_string();
    let mut samples = Vec::with_capacity(requests);
    let mut bytes = 0usize;
    let cpu = CpuMeter::start(server_pid);
    for i in 0..requests {
        let page = order[i % order.len()];
        let page_s = page.to_string();
        let mut params = vec![
            ("command", "listVirtualMachines"),
            ("page", page_s.as_str()),
            ("pagesize", pagesize.as_str()),
        ];
        params.extend_from_slice(extra);
        let a = c.call(&params).await?;
        samples.push(a.latency);
        // A wrong answer would make the timing meaningless: check the page.
        let want = PAGE_SIZE.min(instances - (page - 1) * PAGE_SIZE);
        let got = a
            .body
            .get("virtualmachine")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let count = a.body.get("count").and_then(Value::as_u64).unwrap_or(0);
        if a.status != 200 || got != want || count != instances as u64 {
            bail!(
                "page {page}: HTTP {}, {got} instances (want {want}), count {count}",
                a.status
            );
        }
        bytes += a.bytes;
    }
    Ok(ListRun {
        label: label.to_string(),
        stats: stats(&samples),
        bytes_mean: bytes / requests,
        cpu: cpu.finish(),
    })
}

/// Where the time of one page goes, measured in-process against the same store
/// with the library functions the handler calls, one part at a time.
struct Breakdown {
    find_ms: f64,
    find_all_ms: f64,
    count_ms: f64,
    nic_ms: f64,
    lookup_ms: f64,
    render_ms: f64,
    encode_ms: f64,
    verify_us: f64,
    pages: usize,
}

async fn list_breakdown(data_dir: &Path, keys: &Keys, instances: usize) -> Result<Breakdown> {
    let store = open_store(data_dir).await?;
    let svc = Service::new(
        store.clone(),
        Arc::new(Simulator::new(Duration::ZERO)),
        data_dir.to_path_buf(),
    )
    .await?;
    let caller = svc
        .identity
        .caller_by_api_key(&keys.apikey)
        .await?
        .context("admin caller")?;
    let pages = instances.div_ceil(PAGE_SIZE);
    // Evenly spread pages, first and last included.
    let sample: Vec<usize> = (0..20)
        .map(|i| 1 + i * (pages - 1) / 19)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (mut find, mut find_all, mut count, mut nic, mut lookup, mut render, mut encode) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &page in &sample {
        // The conditions listVirtualMachines builds for a root admin without
        // listall: the caller's own account, expunged instances left out.
        let mut q = Query::new()
            .eq(Col::Account, caller.account.id)
            .and(Cond::Ne(Col::State, "Expunged".into()));
        q.page = Some((((page - 1) * PAGE_SIZE) as u64, PAGE_SIZE as u64));
        let t = Instant::now();
        let (vms, _total) = store.list::<Vm>(&q).await?;
        find += t.elapsed().as_secs_f64();
        let t = Instant::now();
        store.count(Kind::Vm, &q).await?;
        count += t.elapsed().as_secs_f64();
        // With listall=true a root admin's scope adds no condition at all.
        let mut q_all = Query::new().and(Cond::Ne(Col::State, "Expunged".into()));
        q_all.page = q.page;
        let t = Instant::now();
        store.list::<Vm>(&q_all).await?;
        find_all += t.elapsed().as_secs_f64();
        // The page's NICs, loaded in one query as listVirtualMachines does.
        let ids: Vec<i64> = vms.iter().map(|v| v.id).collect();
        let t = Instant::now();
        let mut l = Lookup::new(&svc);
        l.prefetch_nics(&ids).await?;
        nic += t.elapsed().as_secs_f64();
        // The related records views::vm resolves for each instance, through the
        // same per-reply cache.
        let t = Instant::now();
        let mut l = Lookup::new(&svc);
        for v in &vms {
            related(&mut l, v).await?;
        }
        lookup += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut l = Lookup::new(&svc);
        l.prefetch_nics(&ids).await?;
        let mut items = Vec::with_capacity(vms.len());
        for v in &vms {
            items.push(views::vm(&mut l, &caller, v, None).await?);
        }
        render += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let body = serde_json::json!({"listvirtualmachinesresponse": {"count": instances, "virtualmachine": items}}).to_string();
        encode += t.elapsed().as_secs_f64();
        std::hint::black_box(body);
    }
    // Signature verification of a typical list request.
    let pairs: Vec<(String, String)> = [
        ("command", "listVirtualMachines"),
        ("page", "17"),
        ("pagesize", "500"),
        ("listall", "true"),
        ("apiKey", keys.apikey.as_str()),
        ("response", "json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = signature::sign(&keys.secretkey, &signature::server_canonical(&pairs));
    let mut signed = pairs;
    signed.push(("signature".into(), sig));
    let rounds = 10_000;
    let t = Instant::now();
    for _ in 0..rounds {
        signature::verify(&signed, &keys.secretkey, chrono::Utc::now())
            .map_err(|e| anyhow!("signature check failed: {e}"))?;
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let k = sample.len() as f64 / 1e3;
    Ok(Breakdown {
        find_ms: find / k,
        find_all_ms: find_all / k,
        count_ms: count / k,
        nic_ms: nic / k,
        lookup_ms: lookup / k,
        render_ms: render / k,
        encode_ms: encode / k,
        verify_us,
        pages: sample.len(),
    })
}

async fn related(l: &mut Lookup<'_>, v: &Vm) -> Result<()> {
    l.get::<Zone>(Some(v.zone_id)).await?;
    l.get::<Account>(Some(v.account_id)).await?;
    l.get::<Domain>(Some(v.domain_id)).await?;
    l.get::<Template>(v.template_id).await?;
    l.get::<Template>(v.iso_id).await?;
    l.get::<ServiceOffering>(Some(v.service_offering_id))
        .await?;
    l.get::<DiskOffering>(v.disk_offering_id).await?;
    l.get::<Host>(v.host_id).await?;
    l.get::<InstanceGroup>(v.group_id).await?;
    l.get::<OsType>(Some(v.os_type_id)).await?;
    l.get::<User>(Some(v.user_id)).await?;
    Ok(())
}

async fn bench_list(args: &Args) -> Result<()> {
    let data = list_data(args.instances, args.rebuild).await?;
    let runs = {
        let server = Server::start(&data.dir, None).await?;
        let c = Client::new(server.port, &data.keys.apikey, &data.keys.secretkey, 1)?;
        // Warm the connection, the server's caches and SQLite's page cache.
        for page in 1..=5 {
            c.ok(&[
                ("command", "listVirtualMachines"),
                ("page", &page.to_string()),
                ("pagesize", "500"),
            ])
            .await?;
        }
        vec![
            list_run(
                &c,
                server.child.id(),
                "page=N&pagesize=500",
                &[],
                args.instances,
                args.requests,
            )
            .await?,
            list_run(
                &c,
                server.child.id(),
                "listall=true&page=N&pagesize=500",
                &[("listall", "true")],
                args.instances,
                args.requests,
            )
            .await?,
        ]
    };
    let b = list_breakdown(&data.dir.join("data"), &data.keys, args.instances).await?;

    println!();
    println!(
        "listVirtualMachines, {} instances stored, pages of {PAGE_SIZE}, {} requests per run, one connection",
        args.instances, args.requests
    );
    if let Some(d) = data.built_in {
        println!("(store built in {:.1} s)", d.as_secs_f64());
    }
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10}  target p99 < {LIST_P99_TARGET_MS} ms",
        "request", "p50 ms", "p99 ms", "max ms", "mean ms", "reply KiB"
    );
    for r in &runs {
        let s = r.stats;
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}  {}",
            r.label,
            s.p50,
            s.p99,
            s.max,
            s.mean,
            r.bytes_mean as f64 / 1024.0,
            if s.p99 < LIST_P99_TARGET_MS {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    for r in &runs {
        println!("  CPU, {} (cores): {}", r.label, fmt_cpu(r.cpu));
    }
    println!();
    println!(
        "in-process breakdown of one page (mean over {} pages spread over the list, ms):",
        b.pages
    );
    println!(
        "  page query, rows + total (store.list)   {:>8.1}",
        b.find_ms
    );
    println!(
        "    of which the total (COUNT)            {:>8.1}",
        b.count_ms
    );
    println!(
        "  the same with listall=true              {:>8.1}",
        b.find_all_ms
    );
    println!(
        "  the page's NICs in one query            {:>8.1}",
        b.nic_ms
    );
    println!(
        "  500 x 11 cached related-record look-ups {:>8.1}",
        b.lookup_ms
    );
    println!(
        "  rendering 500 instances (incl. NICs)    {:>8.1}",
        b.render_ms
    );
    println!(
        "  JSON encoding of the reply              {:>8.1}",
        b.encode_ms
    );
    println!(
        "  signature check per request             {:>8.3}",
        b.verify_us / 1e3
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// deployVirtualMachine

#[derive(Default)]
struct Fired {
    accepted: Vec<Duration>,
    rejected: usize,
    first_error: Option<String>,
    jobs: Vec<String>,
}

async fn vm_count(c: &Client, state: &str) -> Result<u64> {
    let v = c
        .ok(&[
            ("command", "listVirtualMachines"),
            ("listall", "true"),
            ("state", state),
            ("pagesize", "1"),
        ])
        .await?;
    Ok(v.get("count").and_then(Value::as_u64).unwrap_or(0))
}

async fn bench_deploy(args: &Args) -> Result<()> {
    let dir = bench_root()?.join("deploy");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let keys = init_data_dir(&dir.join("data"))?;
    let server = Server::start(&dir, Some(args.hosts)).await?;
    let c = Client::new(server.port, &keys.apikey, &keys.secretkey, args.concurrency)?;
    let cat = create_catalog(&c, &dir).await?;
    let deploy_params = [
        ("command", "deployVirtualMachine"),
        ("zoneid", cat.zone.as_str()),
        ("serviceofferingid", cat.offering.as_str()),
        ("templateid", cat.template.as_str()),
        ("startvm", if args.no_start { "false" } else { "true" }),
    ];
    // The state a deploy job leaves its instance in when it succeeds.
    let done_state = if args.no_start { "Stopped" } else { "Running" };
    // One deploy first, so that the address pool is loaded and the first job
    // has run before the clock starts.
    let warm = c.ok(&deploy_params).await?;
    let warm_job = str_at(&warm, "/jobid")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = c
            .ok(&[("command", "queryAsyncJobResult"), ("jobid", &warm_job)])
            .await?;
        match j.get("jobstatus").and_then(Value::as_i64) {
            Some(1) => break,
            Some(2) => bail!("the warm-up deploy failed: {j}"),
            _ if Instant::now() > deadline => bail!("the warm-up deploy did not finish"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    let window = Duration::from_secs_f64(args.seconds);
    let cpu = CpuMeter::start(server.child.id());
    let start = Instant::now();
    let stop_at = start + window;
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let c = c.clone();
        let params: Vec<(String, String)> = deploy_params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        workers.push(tokio::spawn(async move {
            let params: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut f = Fired::default();
            while Instant::now() < stop_at {
                match c.call(&params).await {
                    Ok(a) if a.status == 200 => match a.body.get("jobid").and_then(Value::as_str) {
                        Some(j) => {
                            f.accepted.push(a.latency);
                            f.jobs.push(j.to_string());
                        }
                        None => {
                            f.rejected += 1;
                            f.first_error.get_or_insert(format!("no jobid: {}", a.body));
                        }
                    },
                    Ok(a) => {
                        f.rejected += 1;
                        f.first_error
                            .get_or_insert(format!("HTTP {}: {}", a.status, a.body));
                    }
                    Err(e) => {
                        f.rejected += 1;
                        f.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            f
        }));
    }
    let mut all = Fired::default();
    for w in workers {
        let f = w.await?;
        all.accepted.extend(f.accepted);
        all.jobs.extend(f.jobs);
        all.rejected += f.rejected;
        if all.first_error.is_none() {
            all.first_error = f.first_error;
        }
    }
    // Requests still in flight at the deadline finish a little later; the rate
    // is over the time until the last answer.
    let elapsed = start.elapsed();
    let cpu_use = cpu.finish();
    let done_at_end = vm_count(&c, done_state).await?;
    let error_at_end = vm_count(&c, "Error").await?;
    let accepted = all.accepted.len();
    // The warm-up instance is done too.
    let completed_at_end = (done_at_end + error_at_end).saturating_sub(1);

    // Let the queue drain, then read every job's outcome.
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs(300);
    loop {
        let done = vm_count(&c, done_state).await? + vm_count(&c, "Error").await?;
        if done > accepted as u64 || drain_start.elapsed() > drain_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_in = drain_start.elapsed();
    let (mut ok, mut failed, mut pending) = (0usize, 0usize, 0usize);
    let mut first_failure = None;
    for chunk in all.jobs.chunks(args.concurrency) {
        let answers = futures::future::join_all(chunk.iter().map(|j| async {
            c.ok(&[("command", "queryAsyncJobResult"), ("jobid", j)])
                .await
        }))
        .await;
        for a in answers {
            let a = a?;
            match a.get("jobstatus").and_then(Value::as_i64) {
                Some(1) => ok += 1,
                Some(2) => {
                    failed += 1;
                    first_failure.get_or_insert(a.get("jobresult").cloned().unwrap_or_default());
                }
                _ => pending += 1,
            }
        }
    }
    drop(server);
    let diag = deploy_diagnostics(&dir.join("data")).await?;

    let s = stats(&all.accepted);
    let rate = accepted as f64 / elapsed.as_secs_f64();
    println!();
    println!(
        "deployVirtualMachine (startvm={}), {} simulated hosts ({SIMULATOR_DELAY_MS} ms start delay), {} connections, {:.1} s window",
        !args.no_start,
        args.hosts,
        args.concurrency,
        elapsed.as_secs_f64()
    );
    println!(
        "  accepted (HTTP 200 with a jobid)   {accepted:>8}   {rate:>8.1}/s   target >= {DEPLOY_RATE_TARGET}/s: {}",
        if rate >= DEPLOY_RATE_TARGET { "met" } else { "MISSED" }
    );
    println!("  rejected                           {:>8}", all.rejected);
    if let Some(e) = &all.first_error {
        println!("    first rejection: {e}");
    }
    println!(
        "  accept latency ms                  p50 {:.1}   p99 {:.1}   max {:.1}   mean {:.1}",
        s.p50, s.p99, s.max, s.mean
    );
    println!(
        "  jobs completed by the end          {completed_at_end:>8}   ({:.0}% of accepted; {error_at_end} in Error)",
        100.0 * completed_at_end as f64 / accepted.max(1) as f64
    );
    println!(
        "  after draining ({:.1} s more)       succeeded {ok}, failed {failed}, pending {pending}",
        drained_in.as_secs_f64()
    );
    if let Some(f) = first_failure {
        println!("    first failure: {f}");
    }
    println!("  CPU during the window (cores)      {}", fmt_cpu(cpu_use));
    println!(
        "  in-process, on the final store: one small write transaction {:.2} ms; \
         placement snapshot with {} active instances {:.2} ms",
        diag.write_tx_ms, diag.active, diag.place_snapshot_ms
    );
    Ok(())
}

struct DeployDiag {
    write_tx_ms: f64,
    active: usize,
    place_snapshot_ms: f64,
}

/// Costs that bound deploy throughput, measured on the store a run leaves
/// behind: a minimal write transaction (every deploy takes several, all through
/// the store's single writer connection), and the snapshot placement builds for
/// every start under its lock (hosts and the capacity of every active instance
/// in the zone, from the in-memory capacity view).
async fn deploy_diagnostics(data_dir: &Path) -> Result<DeployDiag> {
    let store = open_store(data_dir).await?;
    let rounds = 200;
    let mut zone: Zone = store
        .all(Query::new())
        .await?
        .into_iter()
        .next()
        .context("a zone")?;
    let t = Instant::now();
    for _ in 0..rounds {
        // Rewriting the zone with its own fields changes nothing but the version.
        let mut tx = Tx::new();
        tx.update(&mut zone);
        store.commit(tx.ops).await?;
    }
    let write_tx_ms = t.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    let svc = Service::new(
        store.clone(),
        Arc::new(Simulator::new(Duration::ZERO)),
        data_dir.to_path_buf(),
    )
    .await?;
    let rounds = 50;
    let mut active = 0;
    let t = Instant::now();
    for _ in 0..rounds {
        active = svc.placement_snapshot(zone.id).await?.instances().len();
    }
    let place_snapshot_ms = t.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    Ok(DeployDiag {
        write_tx_ms,
        active,
        place_snapshot_ms,
    })
}

/// CPU use over a measurement, in cores: the server, this program, and
/// everything else on the machine. The figures only mean something when the
/// last one is near zero, so every result table shows it.
struct CpuMeter {
    server_stat: String,
    t0: Instant,
    server0: Option<f64>,
    own0: Option<f64>,
    busy0: Option<f64>,
}

#[derive(Clone, Copy)]
struct CpuUse {
    server: f64,
    own: f64,
    other: f64,
}

impl CpuMeter {
    fn start(server_pid: u32) -> Self {
        let server_stat = format!("/proc/{server_pid}/stat");
        CpuMeter {
            server0: cpu_seconds(&server_stat),
            own0: cpu_seconds("/proc/self/stat"),
            busy0: machine_busy_seconds(),
            t0: Instant::now(),
            server_stat,
        }
    }

    fn finish(&self) -> Option<CpuUse> {
        let secs = self.t0.elapsed().as_secs_f64();
        let server = (cpu_seconds(&self.server_stat)? - self.server0?) / secs;
        let own = (cpu_seconds("/proc/self/stat")? - self.own0?) / secs;
        let busy = (machine_busy_seconds()? - self.busy0?) / secs;
        Some(CpuUse {
            server,
            own,
            other: (busy - server - own).max(0.0),
        })
    }
}

fn fmt_cpu(c: Option<CpuUse>) -> String {
    c.map_or("n/a".into(), |c| {
        format!(
            "server {:.2}, client {:.2}, other processes {:.2}",
            c.server, c.own, c.other
        )
    })
}

/// Busy CPU seconds of the whole machine, from the first line of `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(busy / clock_ticks())
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------

/// The commit the measured coordinator was built from, marked when the
/// coordinator's sources had local changes.
fn source_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--", "src", "../shared"])
                .is_some_and(|s| !s.is_empty());
            format!("{head}{}", if dirty { " with local changes" } else { "" })
        }
        None => "unknown".into(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    POSTGRES
        .set(args.postgres.clone())
        .expect("set once, at start");
    println!(
        "orrery api_bench, {}, {}, load average {}, source {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine(),
        load_average(),
        source_version()
    );
    if matches!(args.mode, Mode::List | Mode::All) {
        bench_list(&args).await?;
    }
    if matches!(args.mode, Mode::Deploy | Mode::All) {
        println!();
        bench_deploy(&args).await?;
    }
    Ok(())
}
