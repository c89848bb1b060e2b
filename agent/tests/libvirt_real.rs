//! The libvirt backend against the host's real libvirt (`qemu:///system`)
//! and the lab's guest image (tests/lab/build-guest.sh): a designed domain
//! on an overlay disk boots under software emulation, gets its address
//! from a DHCP reservation, and goes through start, reboot, graceful and
//! forced stops, device hot-plug and undefinition.
//!
//! Skipped, with a message, when libvirt is unreachable; with
//! `ORRERY_REQUIRE_LIBVIRT=1` that is a failure instead. The domain type is
//! forced to `qemu` because nested KVM does not boot guests on the lab
//! machines; set `ORRERY_TEST_DOMAIN_TYPE` to another type, or to nothing
//! to let the designer choose from the host's capabilities.
//!
//! Everything created is named after the test process and removed by a
//! guard, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orrery_agent::designer::{
    design, BootMode, DesignConfig, InstanceSpec, NicSpec, VolumeFormat, VolumeKind, VolumeSpec,
};
use orrery_agent::hypervisor::libvirt::LibvirtHypervisor;
use orrery_agent::hypervisor::{DhcpHost, DomainInfo, HvError, Hypervisor, NetworkDef, Power};
use orrery_agent::storage::{ImageFormat, Primary, QemuImg};

/// `ORRERY_TEST_LIBVIRT_URI` points the tests at another libvirt (a lab
/// host's own daemon).
fn uri() -> String {
    std::env::var("ORRERY_TEST_LIBVIRT_URI").unwrap_or_else(|_| "qemu:///system".to_string())
}
const MIB: u64 = 1 << 20;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn required() -> bool {
    std::env::var("ORRERY_REQUIRE_LIBVIRT").as_deref() == Ok("1")
}

/// Skips the test (returns `None`) or, when libvirt is required, fails it.
fn unavailable<T>(why: String) -> Option<T> {
    if required() {
        panic!("ORRERY_REQUIRE_LIBVIRT=1 but {why}");
    }
    eprintln!("skipping: {why}");
    None
}

async fn connect() -> Option<LibvirtHypervisor> {
    let uri = uri();
    match LibvirtHypervisor::connect(&uri).await {
        Ok(hv) => Some(hv),
        Err(e) => unavailable(format!("{uri} is not reachable: {e}")),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The lab guest image and its SHA-256, built when missing.
fn guest_image() -> Option<(PathBuf, String)> {
    // Tests run in parallel: on a fresh checkout two of them would build
    // the image at once into the same temporary file.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = repo_root().join("tests/lab");
    let image = lab.join("out/guest.qcow2");
    let sums = lab.join("out/guest.sha256");
    if !image.exists() || !sums.exists() {
        eprintln!("building {}", image.display());
        let status = Command::new(lab.join("build-guest.sh"))
            .arg(&image)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return unavailable(format!("could not build the guest image: {status:?}"));
        }
    }
    let text = std::fs::read_to_string(&sums).expect("guest.sha256 readable");
    let sha = text
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    Some((image, sha))
}

fn virsh(args: &[&str]) -> Option<String> {
    let out = Command::new("virsh")
        .args(["-q", "-c", &uri()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes what a test made, whatever happened to the test.
#[derive(Default)]
struct Cleanup {
    domains: Vec<String>,
    networks: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.domains {
            let _ = virsh(&["destroy", d]);
            let _ = virsh(&["undefine", "--nvram", d]);
        }
        for n in &self.networks {
            let _ = virsh(&["net-destroy", n]);
            let _ = virsh(&["net-undefine", n]);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A directory QEMU (running as libvirt-qemu) can traverse.
fn work_dir(cleanup: &mut Cleanup, tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(format!("/var/tmp/orrery-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    cleanup.dirs.push(dir.clone());
    dir
}

/// Per-process values that keep concurrent runs apart; `slot` separates
/// tests within one run.
fn unique(slot: u32) -> (u32, String) {
    let pid = std::process::id();
    // A /24 in 10.231.0.0/16 that other runs are unlikely to hold.
    let octet = (pid * 2 + slot) % 250 + 1;
    (octet, format!("{:x}{slot}", pid % 0xfffff))
}

fn network(slot: u32) -> NetworkDef {
    let (octet, tag) = unique(slot);
    NetworkDef {
        name: format!("orrery-test-{tag}"),
        bridge: format!("obr-t{tag}"),
        gateway: format!("10.231.{octet}.1"),
        netmask: "255.255.255.0".to_string(),
        dhcp_start: format!("10.231.{octet}.100"),
        dhcp_end: format!("10.231.{octet}.200"),
    }
}

/// A MAC unique to this process and test (`tag`), in QEMU's range.
fn test_mac(tag: u8, pid: u32) -> String {
    format!(
        "52:54:{tag:02x}:{:02x}:{:02x}:{:02x}",
        (pid >> 16) & 0xff,
        (pid >> 8) & 0xff,
        pid & 0xff
    )
}

/// The lab image cached in a fresh pool as template `template_id`, and a
/// 64 MiB root overlay on it for `instance`.
async fn root_on_template(
    dir: &Path,
    image: &Path,
    sha: &str,
    template_id: &str,
    instance: &str,
) -> (Primary, PathBuf, PathBuf) {
    let pool = Primary::new(dir.join("primary"));
    pool.init().await.unwrap();
    let template = pool
        .ensure_template(template_id, ImageFormat::Qcow2, Some(sha), |mut f| {
            let image = image.to_path_buf();
            async move {
                let mut src = tokio::fs::File::open(&image).await?;
                tokio::io::copy(&mut src, &mut f).await?;
                Ok::<_, std::io::Error>(f)
            }
        })
        .await
        .unwrap();
    let root = pool
        .create_root(instance, &template, ImageFormat::Qcow2, 64 * MIB)
        .await
        .unwrap();
    (pool, template, root)
}

fn uuid(kind: u16, slot: u32) -> String {
    format!(
        "{:08x}-{kind:04x}-4000-8000-{:012x}",
        std::process::id(),
        u64::from(slot)
    )
}

fn markers(log: &Path, name: &str) -> Vec<String> {
    // The serial console may interleave kernel messages mid-line, so
    // markers are found anywhere in a line.
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let mut found = Vec::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find(name) {
        let tail = &rest[i + name.len()..];
        let end = tail.find(|c: char| c.is_whitespace()).unwrap_or(tail.len());
        found.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    found
}

async fn wait_for_markers(log: &Path, name: &str, count: usize, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let found = markers(log, name);
        if found.len() >= count {
            return found;
        }
        if start.elapsed() > timeout {
            let text = std::fs::read(log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            panic!(
                "{count} x {name} not seen within {timeout:?} in {}; last lines:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_power(hv: &LibvirtHypervisor, name: &str, want: Power, timeout: Duration) {
    let start = Instant::now();
    while hv.power(name).await.unwrap() != want {
        assert!(
            start.elapsed() < timeout,
            "{name} not {want:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn forced_domain_type() -> Option<String> {
    match std::env::var("ORRERY_TEST_DOMAIN_TYPE") {
        Ok(t) if t.is_empty() => None,
        Ok(t) => Some(t),
        Err(_) => Some("qemu".to_string()),
    }
}

fn spec(name: &str, uuid: &str, root: &Path, mac: &str, network: &str) -> InstanceSpec {
    InstanceSpec {
        uuid: uuid.to_string(),
        internal_name: name.to_string(),
        display_name: "lifecycle test".to_string(),
        host_name: name.to_string(),
        vcpus: 1,
        cpu_speed_mhz: 1000,
        memory_mib: 256,
        max_vcpus: None,
        max_memory_mib: None,
        os_type: "Other Linux (64-bit)".to_string(),
        boot_mode: BootMode::Bios,
        tpm: false,
        volumes: vec![VolumeSpec {
            id: uuid.to_string(),
            kind: VolumeKind::Root,
            path: root.display().to_string(),
            format: VolumeFormat::Qcow2,
            device_id: 0,
            read_bytes_sec: None,
            write_bytes_sec: None,
            read_iops_sec: None,
            write_iops_sec: None,
        }],
        cdrom: None,
        config_drive: None,
        nics: vec![NicSpec {
            mac: mac.to_string(),
            network: network.to_string(),
            is_default: true,
            ip: None,
        }],
        vnc_password: "orrery".to_string(),
        gpu: None,
        details: Default::default(),
        extraconfig: Vec::new(),
        caller_is_admin: false,
        smbios_manufacturer: "Orrery".to_string(),
        smbios_product: "CloudStack KVM Hypervisor".to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_info_describes_the_host() {
    let Some(hv) = connect().await else { return };
    let info = hv.host_info().await.unwrap();
    eprintln!("{info:#?}");
    assert!(!info.hostname.is_empty());
    assert!(info.cpus > 0);
    assert!(info.memory_bytes > 256 * MIB);
    assert!(info.libvirt_version.split('.').count() == 3);
    let facts = &info.design;
    assert_eq!(facts.arch, "x86_64");
    assert!(facts.domain_types.iter().any(|t| t == "qemu"), "{facts:?}");
    assert!(facts
        .machine_types
        .iter()
        .any(|m| m == "pc" || m.starts_with("pc-i440fx-")));
    assert!(facts
        .emulator
        .as_deref()
        .is_some_and(|e| Path::new(e).exists()));
    for fw in &facts.firmware {
        assert!(Path::new(&fw.loader).exists(), "{fw:?}");
        if let Some(t) = &fw.nvram_template {
            assert!(Path::new(t).exists(), "{fw:?}");
        }
    }
    // The lab installs OVMF and swtpm.
    if Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
        assert!(facts.firmware.iter().any(|f| !f.secure_boot));
        assert!(facts.firmware.iter().any(|f| f.secure_boot));
    }
    if Path::new("/usr/bin/swtpm").exists() {
        assert!(facts.tpm_supported);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_mapped_by_code() {
    let Some(hv) = connect().await else { return };
    let missing = format!("orrery-test-missing-{}", std::process::id());
    for result in [
        hv.power(&missing).await.map(drop),
        hv.start(&missing).await,
        hv.destroy(&missing).await,
        hv.undefine(&missing).await,
        hv.domain_xml(&missing).await.map(drop),
        hv.block_resize(&missing, "vda", MIB).await,
    ] {
        assert!(
            matches!(&result, Err(HvError::NotFound(n)) if *n == missing),
            "{result:?}"
        );
    }
    let err = hv
        .define("<domain type='qemu'><name>x</name>")
        .await
        .unwrap_err();
    assert!(matches!(err, HvError::Invalid(_)), "{err:?}");
    let err = hv
        .set_dhcp_host(
            &missing,
            &DhcpHost {
                mac: "52:54:00:00:00:01".to_string(),
                ip: "10.0.0.1".to_string(),
                name: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.libvirt_code(),
        Some(orrery_agent::hypervisor::codes::NO_NETWORK),
        "{err:?}"
    );
}

fn dumped_hosts(network: &str) -> Vec<String> {
    let xml = virsh(&["net-dumpxml", network]).expect("net-dumpxml");
    xml.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("<host "))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_and_reservations() {
    let Some(hv) = connect().await else { return };
    let mut cleanup = Cleanup::default();
    let net = network(1);
    cleanup.networks.push(net.name.clone());

    hv.ensure_network(&net).await.unwrap();
    // Idempotent, and a stopped network is started again.
    hv.ensure_network(&net).await.unwrap();
    virsh(&["net-destroy", &net.name]).unwrap();
    hv.ensure_network(&net).await.unwrap();
    let info = virsh(&["net-info", &net.name]).unwrap();
    assert!(info.contains("Active:         yes"), "{info}");
    assert!(info.contains("Autostart:      yes"), "{info}");

    let mut other = net.clone();
    other.dhcp_end = other.dhcp_end.replace(".200", ".201");
    let err = hv.ensure_network(&other).await.unwrap_err();
    assert!(
        matches!(&err, HvError::Invalid(m) if m.contains("DHCP ranges")),
        "{err:?}"
    );

    let prefix = net.gateway.trim_end_matches(".1");
    let host = |mac: &str, last: u8, name: &str| DhcpHost {
        mac: mac.to_string(),
        ip: format!("{prefix}.{last}"),
        name: name.to_string(),
    };
    hv.set_dhcp_host(&net.name, &host("52:54:00:aa:00:01", 10, "one"))
        .await
        .unwrap();
    hv.set_dhcp_host(&net.name, &host("52:54:00:aa:00:02", 11, "two"))
        .await
        .unwrap();
    // Same MAC: modified in place (upper case is the same MAC).
    hv.set_dhcp_host(&net.name, &host("52:54:00:AA:00:01", 12, "uno"))
        .await
        .unwrap();
    // Setting it again changes nothing.
    hv.set_dhcp_host(&net.name, &host("52:54:00:aa:00:01", 12, "uno"))
        .await
        .unwrap();
    // A new MAC taking "two"'s address replaces that stale entry.
    hv.set_dhcp_host(&net.name, &host("52:54:00:aa:00:03", 11, "three"))
        .await
        .unwrap();
    assert_eq!(
        dumped_hosts(&net.name),
        vec![
            format!("<host mac='52:54:00:aa:00:01' name='uno' ip='{prefix}.12'/>"),
            format!("<host mac='52:54:00:aa:00:03' name='three' ip='{prefix}.11'/>"),
        ]
    );
    // The persistent definition has them too.
    let inactive = virsh(&["net-dumpxml", "--inactive", &net.name]).unwrap();
    assert!(inactive.contains("name='three'"), "{inactive}");

    hv.remove_dhcp_host(&net.name, "52:54:00:AA:00:01")
        .await
        .unwrap();
    hv.remove_dhcp_host(&net.name, "52:54:00:aa:00:01")
        .await
        .unwrap();
    assert_eq!(
        dumped_hosts(&net.name),
        vec![format!(
            "<host mac='52:54:00:aa:00:03' name='three' ip='{prefix}.11'/>"
        )]
    );

    // Reservations on a stopped network go to its definition.
    virsh(&["net-destroy", &net.name]).unwrap();
    hv.set_dhcp_host(&net.name, &host("52:54:00:aa:00:04", 13, "four"))
        .await
        .unwrap();
    let inactive = virsh(&["net-dumpxml", "--inactive", &net.name]).unwrap();
    assert!(inactive.contains("name='four'"), "{inactive}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_lifecycle() {
    let Some(hv) = connect().await else { return };
    let Some((image, sha)) = guest_image() else {
        return;
    };
    let t_total = Instant::now();
    let mut cleanup = Cleanup::default();
    let dir = work_dir(&mut cleanup, "lifecycle");
    let (_, tag) = unique(0);
    let name = format!("orrery-test-{tag}");
    cleanup.domains.push(name.clone());
    let net = network(0);
    cleanup.networks.push(net.name.clone());
    let instance = uuid(0, 0);
    let pid = std::process::id();
    let mac = test_mac(0, pid);
    let guest_name = format!("guest-{tag}");
    let prefix = net.gateway.strip_suffix(".1").unwrap().to_string();
    let guest_ip = format!("{prefix}.10");

    // Disks: the image as a cached template, the root disk an overlay on it.
    let (pool, template, root) = root_on_template(&dir, &image, &sha, &uuid(1, 0), &instance).await;
    let info = QemuImg::new()
        .info(&root, Some(ImageFormat::Qcow2))
        .await
        .unwrap();
    assert_eq!(info.virtual_size, 64 * MIB);
    assert_eq!(info.backing.as_deref(), Some(template.as_path()));

    // Network, with a reservation first made for another address and then
    // corrected on the live network.
    hv.ensure_network(&net).await.unwrap();
    let mut reservation = DhcpHost {
        mac: mac.clone(),
        ip: format!("{prefix}.20"),
        name: guest_name.clone(),
    };
    hv.set_dhcp_host(&net.name, &reservation).await.unwrap();
    reservation.ip = guest_ip.clone();
    hv.set_dhcp_host(&net.name, &reservation).await.unwrap();

    // Design from what the host offers, and define.
    let facts = hv.host_info().await.unwrap().design;
    let console_dir = dir.join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    let config = DesignConfig {
        console_log_dir: console_dir.display().to_string(),
        vnc_listen: "127.0.0.1".to_string(),
        forced_domain_type: forced_domain_type(),
        nvram_dir: dir.join("nvram").display().to_string(),
    };
    let domain = design(
        &spec(&name, &instance, &root, &mac, &net.name),
        &facts,
        &config,
    )
    .unwrap();
    hv.define(&domain.to_xml()).await.unwrap();
    let log = console_dir.join(format!("{name}.log"));

    let listed: Vec<DomainInfo> = hv.domains().await.unwrap();
    assert!(
        listed.contains(&DomainInfo {
            name: name.clone(),
            instance_uuid: Some(instance.clone()),
            power: Power::Off,
        }),
        "{listed:?}"
    );

    // Boot.
    let t = Instant::now();
    hv.start(&name).await.unwrap();
    assert_eq!(hv.power(&name).await.unwrap(), Power::On);
    assert!(hv.start(&name).await.unwrap_err().is_operation_invalid());
    assert!(hv.undefine(&name).await.unwrap_err().is_operation_invalid());
    wait_for_markers(&log, "ORRERY-GUEST-BOOTED", 1, BOOT_TIMEOUT).await;
    let t_booted = t.elapsed();
    let ips = wait_for_markers(&log, "ORRERY-GUEST-IP=", 1, BOOT_TIMEOUT).await;
    let t_ip = t.elapsed();
    assert_eq!(ips, vec![guest_ip.clone()]);
    assert_eq!(
        markers(&log, "ORRERY-GUEST-HOSTNAME="),
        vec![guest_name.clone()]
    );
    eprintln!("boot: marker after {t_booted:?}, address after {t_ip:?}");

    // Hot-plug a data disk, grow it, unplug it.
    let data = pool.create_data(&uuid(2, 0), 32 * MIB).await.unwrap();
    let disk_xml = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
        data.display()
    );
    hv.attach_device(&name, &disk_xml).await.unwrap();
    assert!(hv.domain_xml(&name).await.unwrap().contains("dev='vdb'"));
    hv.block_resize(&name, "vdb", 48 * MIB).await.unwrap();
    let info = QemuImg::new()
        .info(&data, Some(ImageFormat::Qcow2))
        .await
        .unwrap();
    assert_eq!(info.virtual_size, 48 * MIB);
    hv.detach_device(&name, &disk_xml).await.unwrap();
    let inactive = virsh(&["dumpxml", "--inactive", &name]).unwrap();
    assert!(!inactive.contains("dev='vdb'"), "{inactive}");

    // Reboot: the guest comes up a second time.
    let t = Instant::now();
    hv.reboot(&name).await.unwrap();
    wait_for_markers(&log, "ORRERY-GUEST-IP=", 2, BOOT_TIMEOUT).await;
    assert_eq!(markers(&log, "ORRERY-GUEST-BOOTED").len(), 2);
    assert_eq!(hv.power(&name).await.unwrap(), Power::On);
    eprintln!("reboot: back after {:?}", t.elapsed());

    // Graceful shutdown: the guest sees the power button and powers off.
    let t = Instant::now();
    let presses = markers(&log, "ORRERY-GUEST-POWERBUTTON").len();
    hv.shutdown(&name, Duration::from_secs(60)).await.unwrap();
    let t_stop = t.elapsed();
    assert_eq!(hv.power(&name).await.unwrap(), Power::Off);
    assert!(markers(&log, "ORRERY-GUEST-POWERBUTTON").len() > presses);
    assert!(t_stop < Duration::from_secs(60), "{t_stop:?}");
    eprintln!("shutdown: off after {t_stop:?}");
    assert!(hv
        .shutdown(&name, Duration::from_secs(1))
        .await
        .unwrap_err()
        .is_operation_invalid());

    // A guest still booting ignores the button: the timeout ends in a
    // hard stop.
    hv.start(&name).await.unwrap();
    let t = Instant::now();
    hv.shutdown(&name, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(hv.power(&name).await.unwrap(), Power::Off);
    eprintln!("forced shutdown: off after {:?}", t.elapsed());

    // Hard stop.
    hv.start(&name).await.unwrap();
    wait_for_power(&hv, &name, Power::On, Duration::from_secs(5)).await;
    hv.destroy(&name).await.unwrap();
    assert_eq!(hv.power(&name).await.unwrap(), Power::Off);
    assert!(hv.destroy(&name).await.unwrap_err().is_operation_invalid());

    // Gone.
    hv.undefine(&name).await.unwrap();
    assert!(matches!(hv.power(&name).await, Err(HvError::NotFound(_))));
    assert!(!hv.domains().await.unwrap().iter().any(|d| d.name == name));

    hv.remove_dhcp_host(&net.name, &mac).await.unwrap();
    assert!(pool.delete(&instance).await.unwrap());
    assert!(pool.delete(&uuid(2, 0)).await.unwrap());
    eprintln!("lifecycle: {:?} in all", t_total.elapsed());
}

/// The last `cpus=` and `memkb=` figures the guest reported, once it has.
fn guest_hardware(log: &Path) -> Option<(u32, u64)> {
    let cpus = markers(log, "ORRERY-GUEST-HARDWARE cpus=");
    let memory = markers(log, " memkb=");
    Some((cpus.last()?.parse().ok()?, memory.last()?.parse().ok()?))
}

async fn wait_for_hardware(log: &Path, what: &str, done: impl Fn(u32, u64) -> bool) -> (u32, u64) {
    let start = Instant::now();
    loop {
        if let Some((cpus, kib)) = guest_hardware(log) {
            if done(cpus, kib) {
                return (cpus, kib);
            }
        }
        if start.elapsed() >= BOOT_TIMEOUT {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = text
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "the guest never reported {what}; it reported {:?}; its console ends:\n{tail}",
                guest_hardware(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A guest designed scalable (1 of 2 vCPUs, 192 of 576 MiB; less no
/// longer holds the lab guest's initramfs next to the memory map of the
/// hot-pluggable range) is given its
/// second vCPU and a 128 MiB memory module while it runs, and brings both
/// online; the persistent definition keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalable_guest_grows_while_it_runs() {
    use orrery_agent::designer::HOTPLUG_NUMA_NODE;
    use orrery_agent::domxml::{Domain, MemoryDevice};

    let Some(hv) = connect().await else { return };
    let Some((image, sha)) = guest_image() else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let dir = work_dir(&mut cleanup, "scale");
    let (_, tag) = unique(4);
    let name = format!("orrery-test-{tag}");
    cleanup.domains.push(name.clone());
    let instance = uuid(0, 4);
    let (_, _, root) = root_on_template(&dir, &image, &sha, &uuid(1, 4), &instance).await;

    let facts = hv.host_info().await.unwrap().design;
    let console_dir = dir.join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    let config = DesignConfig {
        console_log_dir: console_dir.display().to_string(),
        vnc_listen: "127.0.0.1".to_string(),
        forced_domain_type: forced_domain_type(),
        nvram_dir: dir.join("nvram").display().to_string(),
    };
    let mut s = spec(&name, &instance, &root, "", "");
    // No network: growing is all this guest does.
    s.nics.clear();
    s.vcpus = 1;
    s.max_vcpus = Some(2);
    s.memory_mib = 192;
    s.max_memory_mib = Some(576);
    let domain = design(&s, &facts, &config).unwrap();
    // libvirt's schema validation at define accepts the design as is.
    hv.define(&domain.to_xml()).await.unwrap();
    let log = console_dir.join(format!("{name}.log"));
    let t = Instant::now();
    hv.start(&name).await.unwrap();
    let (cpus, start_kib) = wait_for_hardware(&log, "its hardware", |_, _| true).await;
    assert_eq!(cpus, 1);
    eprintln!(
        "scalable guest up after {:?}: 1 vCPU, MemTotal {start_kib} kB",
        t.elapsed()
    );

    let live = Domain::from_xml(&hv.domain_xml(&name).await.unwrap()).unwrap();
    assert_eq!((live.vcpu.count, live.vcpu.current), (2, Some(1)));
    assert_eq!(live.max_memory.map(|m| m.kib), Some(576 * 1024));

    // More vCPUs than the domain was defined with is libvirt's error too.
    assert_eq!(
        hv.set_vcpus(&name, 3).await.unwrap_err().libvirt_code(),
        Some(orrery_agent::hypervisor::codes::INVALID_ARG)
    );

    let t = Instant::now();
    hv.set_vcpus(&name, 2).await.unwrap();
    let module = MemoryDevice {
        size_kib: 128 * 1024,
        node: Some(HOTPLUG_NUMA_NODE),
    };
    hv.attach_device(&name, &module.to_xml()).await.unwrap();
    eprintln!("vCPU and memory module plugged in {:?}", t.elapsed());

    let xml = hv.domain_xml(&name).await.unwrap();
    let live = Domain::from_xml(&xml).unwrap();
    // All vCPUs online: libvirt writes the count without `current`.
    assert_eq!((live.vcpu.count, live.vcpu.current), (2, None), "{xml}");
    assert!(xml.contains("<vcpu placement='static'>2</vcpu>"), "{xml}");
    assert_eq!(live.devices.memories, vec![module]);
    assert_eq!(live.memory_kib, 320 * 1024);
    assert_eq!(live.current_memory_kib, Some(320 * 1024));

    // The guest onlines both (the lab guest's init does what udev would).
    let t = Instant::now();
    let (_, grown_kib) = wait_for_hardware(&log, "2 vCPUs and 128 MiB more", |cpus, kib| {
        cpus == 2 && kib >= start_kib + 120 * 1024
    })
    .await;
    eprintln!(
        "guest sees 2 vCPUs and MemTotal {grown_kib} kB (+{} kB) after {:?}",
        grown_kib - start_kib,
        t.elapsed()
    );

    // The persistent definition has them too.
    let inactive = Domain::from_xml(&virsh(&["dumpxml", "--inactive", &name]).unwrap()).unwrap();
    assert_eq!((inactive.vcpu.count, inactive.vcpu.current), (2, None));
    assert_eq!(inactive.devices.memories.len(), 1);

    // What libvirt and QEMU refuse: a module past maxMemory, and one that
    // is not a multiple of 2 MiB.
    let too_big = MemoryDevice {
        size_kib: 512 * 1024,
        node: Some(HOTPLUG_NUMA_NODE),
    };
    let err = hv
        .attach_device(&name, &too_big.to_xml())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maxMemory"), "{err}");
    let odd = MemoryDevice {
        size_kib: 1024,
        node: Some(HOTPLUG_NUMA_NODE),
    };
    let err = hv.attach_device(&name, &odd.to_xml()).await.unwrap_err();
    assert!(err.to_string().contains("multiple of 0x200000"), "{err}");
    let live = Domain::from_xml(&hv.domain_xml(&name).await.unwrap()).unwrap();
    assert_eq!(live.devices.memories.len(), 1);

    hv.destroy(&name).await.unwrap();
    hv.undefine(&name).await.unwrap();
}

/// A booted guest's counters through the bulk statistics call, and the
/// sampler's rates over two passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_statistics() {
    use orrery_agent::stats::{self, Sampler, StatsSettings};

    let Some(hv) = connect().await else { return };
    let Some((image, sha)) = guest_image() else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let dir = work_dir(&mut cleanup, "stats");
    let (_, tag) = unique(2);
    let name = format!("orrery-test-{tag}");
    cleanup.domains.push(name.clone());
    let net = network(2);
    cleanup.networks.push(net.name.clone());
    let instance = uuid(0, 2);
    let pid = std::process::id();
    let mac = test_mac(1, pid);
    let prefix = net.gateway.strip_suffix(".1").unwrap().to_string();

    let (_pool, _template, root) =
        root_on_template(&dir, &image, &sha, &uuid(1, 2), &instance).await;
    hv.ensure_network(&net).await.unwrap();
    hv.set_dhcp_host(
        &net.name,
        &DhcpHost {
            mac: mac.clone(),
            ip: format!("{prefix}.10"),
            name: format!("guest-{tag}"),
        },
    )
    .await
    .unwrap();
    let facts = hv.host_info().await.unwrap().design;
    let console_dir = dir.join("console");
    std::fs::create_dir_all(&console_dir).unwrap();
    let config = DesignConfig {
        console_log_dir: console_dir.display().to_string(),
        vnc_listen: "127.0.0.1".to_string(),
        forced_domain_type: forced_domain_type(),
        nvram_dir: dir.join("nvram").display().to_string(),
    };
    let domain = design(
        &spec(&name, &instance, &root, &mac, &net.name),
        &facts,
        &config,
    )
    .unwrap();
    hv.define(&domain.to_xml()).await.unwrap();
    let log = console_dir.join(format!("{name}.log"));

    // Defined but off: not among the active domains.
    let off = hv.domain_counters(true).await.unwrap();
    assert!(!off.iter().any(|c| c.name == name), "{off:?}");

    hv.start(&name).await.unwrap();
    // Booted and through DHCP: the disk was read and the NIC carried
    // traffic.
    wait_for_markers(&log, "ORRERY-GUEST-IP=", 1, BOOT_TIMEOUT).await;

    let all = hv.domain_counters(true).await.unwrap();
    let ours = all
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} not in {all:#?}"));
    eprintln!("{ours:#?}");
    assert_eq!(ours.instance_uuid.as_deref(), Some(instance.as_str()));
    assert!(ours.run_id.is_some());
    assert!(ours.cpu_time_ns.is_some_and(|t| t > 0), "{ours:?}");
    assert!(ours.vcpus.is_some_and(|v| v >= 1), "{ours:?}");
    assert!(ours.memory.current_kib > 0, "{ours:?}");
    assert_eq!(ours.memory.maximum_kib, 256 * 1024);
    let root_path = root.display().to_string();
    let disk = ours
        .disks
        .iter()
        .find(|d| d.path.as_deref() == Some(root_path.as_str()))
        .unwrap_or_else(|| panic!("no disk at {root_path} in {ours:?}"));
    assert_eq!(disk.target, "vda");
    assert!(disk.read_bytes > 0 && disk.read_ops > 0, "{disk:?}");
    assert_eq!(disk.capacity_bytes, 64 * MIB);
    // The overlay file: more than nothing, far less than the disk.
    assert!(
        disk.allocation_bytes > 0 && disk.allocation_bytes < 64 * MIB,
        "{disk:?}"
    );
    let nic = ours
        .nics
        .iter()
        .find(|n| n.mac.as_deref() == Some(mac.as_str()))
        .unwrap_or_else(|| panic!("no NIC with {mac} in {ours:?}"));
    assert!(!nic.device.is_empty());
    assert!(nic.rx_bytes + nic.tx_bytes > 0, "{nic:?}");
    assert!(nic.rx_packets + nic.tx_packets > 0, "{nic:?}");
    // Without disks asked for, none come back.
    let lean = hv.domain_counters(false).await.unwrap();
    assert!(lean
        .iter()
        .find(|c| c.name == name)
        .is_some_and(|c| c.disks.is_empty()));

    // Two passes through the sampler: a rate on the second, within bounds.
    let settings = StatsSettings {
        vm_interval: Some(Duration::from_secs(2)),
        disk_interval: Some(Duration::from_secs(2)),
        user_vm_only: true,
    };
    let mut sampler = Sampler::new();
    let first = stats::collect(&hv, &mut sampler, &settings, true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = stats::collect(&hv, &mut sampler, &settings, true)
        .await
        .unwrap();
    let pick = |r: &orrery_proto::v1::StatsReport| {
        r.instances
            .iter()
            .find(|i| i.name == name)
            .cloned()
            .expect("our instance")
    };
    let (a, b) = (pick(&first), pick(&second));
    eprintln!(
        "cpu: {} -> {} ns, {}%",
        a.cpu_time_ns, b.cpu_time_ns, b.cpu_percent
    );
    assert_eq!(a.cpu_percent, -1.0);
    assert!(b.cpu_time_ns >= a.cpu_time_ns);
    assert!((0.0..=100.0).contains(&b.cpu_percent), "{b:?}");
    assert!(second.instances.iter().all(|i| !i.instance_uuid.is_empty()));
    assert!(b
        .disks
        .iter()
        .any(|d| d.volume_uuid == instance && d.read_bytes > 0));
    assert!(b.nics.iter().any(|n| n.mac == mac));

    hv.destroy(&name).await.unwrap();
    let gone = hv.domain_counters(false).await.unwrap();
    assert!(!gone.iter().any(|c| c.name == name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_whose_range_is_taken_names_the_network_in_the_way() {
    let Some(hv) = connect().await else { return };
    let mut cleanup = Cleanup::default();
    let ours = network(3);
    let (_, tag) = unique(3);
    // Another coordinator's guest network with the same range: an Orrery
    // name, another uuid.
    let mut theirs = ours.clone();
    theirs.name = format!("{}c", ours.name);
    theirs.bridge = format!("obr-c{tag}");
    cleanup.networks.push(ours.name.clone());
    cleanup.networks.push(theirs.name.clone());
    hv.ensure_network(&theirs).await.unwrap();

    let err = hv.ensure_network(&ours).await.unwrap_err();
    let m = err.to_string();
    eprintln!("{m}");
    assert!(m.contains(&format!("guest network {} (", ours.name)), "{m}");
    assert!(
        m.contains(&format!(
            "It belongs to {}, an Orrery guest network but not this one",
            theirs.name
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "virsh net-destroy {0} && virsh net-undefine {0}",
            theirs.name
        )),
        "{m}"
    );

    // A network of the host's own on that range.
    virsh(&["net-destroy", &theirs.name]).unwrap();
    virsh(&["net-undefine", &theirs.name]).unwrap();
    let foreign = format!("lab-clash-{tag}");
    let xml_path = std::env::temp_dir().join(format!("{foreign}.xml"));
    std::fs::write(
        &xml_path,
        format!(
            "<network><name>{foreign}</name><bridge name='obr-f{tag}'/>\
             <ip address='{}' netmask='255.255.255.0'/></network>",
            ours.gateway
        ),
    )
    .unwrap();
    cleanup.networks.push(foreign.clone());
    let created = virsh(&["net-create", &xml_path.display().to_string()]);
    let _ = std::fs::remove_file(&xml_path);
    created.expect("net-create");
    let m = hv.ensure_network(&ours).await.unwrap_err().to_string();
    eprintln!("{m}");
    assert!(
        m.contains(&format!(
            "interface obr-f{tag} already carries addresses in {}",
            ours.gateway.trim_end_matches(".1").to_string() + ".0/24"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("bridge obr-f{tag} of libvirt network {foreign}")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "virsh net-destroy {foreign} && virsh net-undefine {foreign}"
        )),
        "{m}"
    );

    // Once it is gone, ours starts.
    virsh(&["net-destroy", &foreign]).unwrap();
    hv.ensure_network(&ours).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kvm_probe_leaves_nothing_behind() {
    let Some(hv) = connect().await else { return };
    let info = hv.host_info().await.unwrap();
    if uri().starts_with("qemu") {
        assert!(info.emulator_user.is_some(), "{info:?}");
    }
    if !info.design.domain_types.iter().any(|t| t == "kvm") {
        eprintln!("skipping: the host does not offer kvm");
        return;
    }
    let started = Instant::now();
    let result = hv.probe_kvm().await;
    eprintln!("KVM probe: {result:?} in {:?}", started.elapsed());
    if let Err(e) = &result {
        assert!(!e.to_string().trim().is_empty());
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let probe = format!("orrery-kvm-probe-{}", std::process::id());
    assert!(!hv.domains().await.unwrap().iter().any(|d| d.name == probe));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_storage_below_a_private_directory_is_refused_at_start() {
    use orrery_agent::config::{AgentConfig, FileConfig};
    use orrery_agent::ops::Ops;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    let Some(hv) = connect().await else { return };
    if !uri().starts_with("qemu") {
        eprintln!("skipping: no QEMU behind {}", uri());
        return;
    }
    let mut cleanup = Cleanup::default();
    let base = work_dir(&mut cleanup, "private");
    let private = base.join("agent");
    let file = FileConfig {
        domain_type: Some("qemu".to_string()),
        ..FileConfig::default()
    };
    let cfg = AgentConfig::merge(
        file,
        Some(private.clone()),
        Some(uri()),
        Some(private.join("primary")),
        Some(private.join("local")),
    );
    let ops = Ops::new(Arc::new(hv), cfg);
    ops.init_storage().await.unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = ops.check_storage_reachable().await.unwrap_err().to_string();
    eprintln!("{err}");
    assert!(
        err.contains(&format!("directory {} is mode 0700", private.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod o+x {}", private.display())),
        "{err}"
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    ops.check_storage_reachable().await.unwrap();
}

/// Templates for `Ops::start`: the lab image, whatever is asked for.
struct LabImage(PathBuf);

#[async_trait::async_trait]
impl orrery_agent::ops::TemplateSource for LabImage {
    async fn fetch(
        &self,
        _uuid: &str,
        mut file: tokio::fs::File,
    ) -> Result<tokio::fs::File, orrery_agent::storage::FetchError> {
        let mut src = tokio::fs::File::open(&self.0).await?;
        tokio::io::copy(&mut src, &mut file).await?;
        Ok(file)
    }
}

/// A guest whose root volume lives in local storage boots from it (an
/// overlay there of the template cached in primary storage), and the
/// definition a destination gets when that volume moves (its disk pointed
/// at a complete copy elsewhere, without a backing file) is one libvirt
/// accepts and boots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_on_local_storage_boots_and_its_moved_definition_is_accepted() {
    use orrery_agent::config::{AgentConfig, FileConfig};
    use orrery_agent::ops::{destination_xml, Ops, VolumeFileMove, LOCAL_POOL};
    use orrery_proto::v1 as pb;
    use std::sync::Arc;
    let Some(hv) = connect().await else { return };
    let Some((image, sha)) = guest_image() else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let dir = work_dir(&mut cleanup, "local");
    let (_, tag) = unique(7);
    let name = format!("orrery-test-{tag}");
    cleanup.domains.push(name.clone());
    let file = FileConfig {
        domain_type: forced_domain_type(),
        ..FileConfig::default()
    };
    let cfg = AgentConfig::merge(
        file,
        Some(dir.join("state")),
        Some(uri()),
        Some(dir.join("primary")),
        Some(dir.join("local")),
    );
    let ops = Ops::new(Arc::new(hv), cfg);
    ops.init_storage().await.unwrap();
    ops.check_storage_reachable().await.unwrap();

    let instance = uuid(0, 7);
    let volume = uuid(2, 7);
    let spec = pb::InstanceSpec {
        uuid: instance.clone(),
        name: name.clone(),
        display_name: "local storage test".into(),
        host_name: name.clone(),
        vcpus: 1,
        memory_mib: 256,
        os_type: "Other Linux (64-bit)".into(),
        vnc_password: "orrery".into(),
        template: Some(pb::TemplateRef {
            uuid: uuid(1, 7),
            format: "qcow2".into(),
            checksum: sha,
            size_bytes: 0,
        }),
        volumes: vec![pb::VolumeSpec {
            uuid: volume.clone(),
            kind: "ROOT".into(),
            device_id: 0,
            size_bytes: 64 * MIB,
            format: "qcow2".into(),
            pool: LOCAL_POOL.into(),
            from_snapshot: String::new(),
        }],
        ..Default::default()
    };
    ops.start(&spec, &LabImage(image)).await.unwrap();
    let root = ops.local.volume_path(&volume).unwrap();
    let info = QemuImg::new().info(&root, None).await.unwrap();
    let template = ops
        .primary
        .template_cache(&uuid(1, 7), ImageFormat::Qcow2)
        .unwrap();
    assert_eq!(info.backing.as_deref(), Some(template.as_path()));
    assert!(!ops.primary.volume_path(&volume).unwrap().exists());
    let log = ops.cfg.console_dir().join(format!("{name}.log"));
    wait_for_markers(&log, "ORRERY-GUEST-BOOTED", 1, BOOT_TIMEOUT).await;

    // The definition as the destination would get it, the root in another
    // directory.
    let source = ops.hv.migratable_xml(&name).await.unwrap();
    assert!(source.contains("passwd="), "the VNC password goes along");
    let moved_to = dir.join("elsewhere").join(format!("{volume}.qcow2"));
    let moved = destination_xml(
        &source,
        &[VolumeFileMove {
            uuid: volume.clone(),
            from: root.clone(),
            to: moved_to.clone(),
        }],
    )
    .unwrap();
    assert_eq!(moved.targets, vec!["vda"]);

    // What a copy of the storage leaves there: the whole disk, no backing
    // file. The original goes, so the guest can only boot from the copy.
    ops.hv.destroy(&name).await.unwrap();
    std::fs::create_dir_all(moved_to.parent().unwrap()).unwrap();
    QemuImg::new()
        .convert(&root, ImageFormat::Qcow2, &moved_to, ImageFormat::Qcow2)
        .await
        .unwrap();
    assert!(ops.local.delete(&volume).await.unwrap());
    ops.hv.define(&moved.xml).await.unwrap();
    std::fs::remove_file(&log).unwrap();
    ops.hv.start(&name).await.unwrap();
    wait_for_markers(&log, "ORRERY-GUEST-BOOTED", 1, BOOT_TIMEOUT).await;
    let live =
        orrery_agent::domxml::Domain::from_xml(&ops.hv.domain_xml(&name).await.unwrap()).unwrap();
    assert_eq!(
        live.devices.disks[0].source.as_deref(),
        Some(moved_to.display().to_string().as_str())
    );
    assert_eq!(live.devices.graphics[0].passwd, None, "not in a plain dump");
    let secure = ops.hv.migratable_xml(&name).await.unwrap();
    assert!(secure.contains("passwd=\"orrery\"") || secure.contains("passwd='orrery'"));
}
