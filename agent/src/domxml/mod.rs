//! Typed model of the libvirt domain XML subset that Orrery writes, plus the
//! parts of what libvirt hands back that are worth reading.
//!
//! This module renders and parses; it makes no policy decisions. Every value
//! written is a value someone put into the model, and every element the
//! parser does not model (libvirt adds many: `<resource>`, `<seclabel>`,
//! device `<alias>`/`<address>`, controllers, …) is skipped without error.
//! Values of modelled attributes are checked, though: an unknown disk bus
//! is an error rather than a silently different device.
//!
//! [`Domain::to_xml`] is deterministic: the same model always produces the
//! same bytes, which keeps golden tests and change detection meaningful.

mod moves;
mod parse;
mod render;
mod tree;

pub use moves::{move_disk_files, DiskFileMove, MovedDisks};

use thiserror::Error;

/// Namespace of Orrery's element under `<metadata>`.
pub const ORRERY_NS: &str = "https://orrery.dev/xmlns/domain/1";
/// Prefix used when rendering [`ORRERY_NS`]; readers resolve the namespace,
/// so a different prefix written back by libvirt is still recognised.
pub const ORRERY_NS_PREFIX: &str = "orrery";

/// Everything that can go wrong turning XML into a [`Domain`] or accepting an
/// [`XmlFragment`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomXmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("root element is <{found}>, expected <domain>")]
    NotADomain { found: String },
    #[error("missing element {path}")]
    MissingElement { path: String },
    #[error("missing attribute {path}")]
    MissingAttribute { path: String },
    #[error("invalid value {value:?} at {path}: expected {expected}")]
    InvalidValue {
        path: String,
        value: String,
        expected: String,
    },
    #[error("invalid XML fragment: {0}")]
    InvalidFragment(String),
    #[error("no disk of the domain uses the file {0}")]
    NoDiskWithFile(String),
}

/// Implemented by the enums whose variants are spelled as fixed strings in
/// the XML.
pub trait XmlValue: Sized + Copy + 'static {
    /// All variants, in declaration order.
    const ALL: &'static [Self];
    /// The spelling used in the XML.
    fn as_str(self) -> &'static str;
    /// The variant spelled `s`, if any (exact, case-sensitive, as libvirt).
    fn from_xml_value(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

macro_rules! xml_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl XmlValue for $name {
            const ALL: &'static [Self] = &[ $( $name::$variant ),+ ];
            fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

xml_enum! {
    /// `<domain type=…>`: which accelerator QEMU runs the guest with.
    pub enum DomainType {
        Kvm => "kvm",
        /// Pure emulation (TCG).
        Qemu => "qemu",
    }
}

xml_enum! {
    pub enum VcpuPlacement {
        Static => "static",
        Auto => "auto",
    }
}

xml_enum! {
    pub enum CpuMode {
        HostPassthrough => "host-passthrough",
        HostModel => "host-model",
        Custom => "custom",
    }
}

xml_enum! {
    pub enum LoaderType {
        Rom => "rom",
        Pflash => "pflash",
    }
}

xml_enum! {
    pub enum SmbiosMode {
        Emulate => "emulate",
        Host => "host",
        Sysinfo => "sysinfo",
    }
}

xml_enum! {
    /// `<os><boot dev=…/>` entries (the legacy alternative to per-device
    /// boot order; libvirt refuses a domain that uses both).
    pub enum BootDevice {
        Hd => "hd",
        Cdrom => "cdrom",
        Network => "network",
        Fd => "fd",
    }
}

xml_enum! {
    pub enum ClockOffset {
        Utc => "utc",
        Localtime => "localtime",
        Variable => "variable",
    }
}

xml_enum! {
    pub enum LifecycleAction {
        Destroy => "destroy",
        Restart => "restart",
        Preserve => "preserve",
        RenameRestart => "rename-restart",
        CoredumpDestroy => "coredump-destroy",
        CoredumpRestart => "coredump-restart",
    }
}

xml_enum! {
    pub enum DiskType {
        File => "file",
        Block => "block",
    }
}

xml_enum! {
    pub enum DiskDevice {
        Disk => "disk",
        Cdrom => "cdrom",
    }
}

xml_enum! {
    pub enum DiskFormat {
        Raw => "raw",
        Qcow2 => "qcow2",
    }
}

xml_enum! {
    pub enum DiskCache {
        Default => "default",
        None => "none",
        Writethrough => "writethrough",
        Writeback => "writeback",
        Directsync => "directsync",
        Unsafe => "unsafe",
    }
}

xml_enum! {
    pub enum DiskDiscard {
        Unmap => "unmap",
        Ignore => "ignore",
    }
}

xml_enum! {
    pub enum DiskBus {
        Virtio => "virtio",
        Sata => "sata",
        Ide => "ide",
        Scsi => "scsi",
        Usb => "usb",
    }
}

xml_enum! {
    pub enum NicModel {
        Virtio => "virtio",
        E1000 => "e1000",
        E1000e => "e1000e",
        Rtl8139 => "rtl8139",
    }
}

xml_enum! {
    pub enum ChannelSourceMode {
        Bind => "bind",
        Connect => "connect",
    }
}

xml_enum! {
    pub enum VideoModel {
        Vga => "vga",
        Cirrus => "cirrus",
        Virtio => "virtio",
        Qxl => "qxl",
        Bochs => "bochs",
        Ramfb => "ramfb",
        None => "none",
    }
}

xml_enum! {
    pub enum InputType {
        Tablet => "tablet",
        Mouse => "mouse",
        Keyboard => "keyboard",
    }
}

xml_enum! {
    pub enum InputBus {
        Usb => "usb",
        Ps2 => "ps2",
        Virtio => "virtio",
    }
}

xml_enum! {
    pub enum TpmModel {
        TpmCrb => "tpm-crb",
        TpmTis => "tpm-tis",
    }
}

xml_enum! {
    pub enum TpmVersion {
        V1_2 => "1.2",
        V2_0 => "2.0",
    }
}

xml_enum! {
    pub enum MdevModel {
        VfioPci => "vfio-pci",
        VfioCcw => "vfio-ccw",
        VfioAp => "vfio-ap",
    }
}

xml_enum! {
    pub enum MemBalloonModel {
        Virtio => "virtio",
        None => "none",
    }
}

xml_enum! {
    pub enum RngModel {
        Virtio => "virtio",
    }
}

/// A libvirt domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub domain_type: DomainType,
    pub name: String,
    pub uuid: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Orrery's own element under `<metadata>`; other tools' metadata is not
    /// modelled.
    pub metadata: Option<OrreryMetadata>,
    /// `<maxMemory>`: room for memory devices plugged in while the domain
    /// runs; without it, no memory can be added live.
    pub max_memory: Option<MaxMemory>,
    /// `<memory>`: on a running domain libvirt counts hot-plugged memory
    /// devices in.
    pub memory_kib: u64,
    pub current_memory_kib: Option<u64>,
    pub vcpu: Vcpu,
    pub sysinfo: Option<SysInfo>,
    pub os: Os,
    pub features: Features,
    pub cpu: Option<Cpu>,
    pub clock: Option<ClockOffset>,
    pub on_poweroff: Option<LifecycleAction>,
    pub on_reboot: Option<LifecycleAction>,
    pub on_crash: Option<LifecycleAction>,
    pub devices: Devices,
}

/// Identifies a domain as one of Orrery's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrreryMetadata {
    pub instance_uuid: String,
    /// The instance's name as the coordinator knows it.
    pub instance_name: String,
}

/// The most memory a domain can reach by hot-plugging memory devices, and
/// how many devices it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxMemory {
    pub slots: u32,
    pub kib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    pub count: u32,
    pub placement: Option<VcpuPlacement>,
    /// Number of vCPUs online when fewer than `count`: at boot in a
    /// definition, now in a running domain's XML. libvirt leaves it out once
    /// all are online.
    pub current: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    pub mode: CpuMode,
    /// `<model>` text; meaningful with [`CpuMode::Custom`].
    pub model: Option<String>,
    pub topology: Option<CpuTopology>,
    /// Guest NUMA cells, rendered as `<numa>` inside `<cpu>`; empty, no
    /// `<numa>` element.
    pub numa: Vec<NumaCell>,
}

/// One guest NUMA node: which vCPUs and how much of the start memory it
/// holds. Memory devices name the node they are plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaCell {
    pub id: u32,
    /// vCPU ids in libvirt's list syntax, e.g. `0-3` or `0,2`.
    pub cpus: String,
    pub memory_kib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

/// `<sysinfo type='smbios'>`, of which only the `<system>` block is modelled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysInfo {
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub family: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os {
    /// `<type>` text, `hvm` for full virtualisation.
    pub os_type: String,
    pub arch: Option<String>,
    pub machine: Option<String>,
    pub loader: Option<Loader>,
    pub nvram: Option<Nvram>,
    pub smbios_mode: Option<SmbiosMode>,
    pub boot: Vec<BootDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    pub path: String,
    pub readonly: Option<bool>,
    pub loader_type: Option<LoaderType>,
    pub secure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvram {
    /// Per-domain variable store.
    pub path: String,
    /// Image the store is created from when it does not exist yet.
    pub template: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    pub acpi: bool,
    pub apic: bool,
    pub smm: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    pub emulator: Option<String>,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub serials: Vec<CharDevice>,
    pub consoles: Vec<CharDevice>,
    pub channels: Vec<Channel>,
    pub inputs: Vec<Input>,
    pub tpms: Vec<Tpm>,
    pub graphics: Vec<Graphics>,
    pub videos: Vec<Video>,
    pub hostdevs: Vec<Hostdev>,
    pub memballoon: Option<MemBalloon>,
    pub rngs: Vec<Rng>,
    /// `<memory model='dimm'>` devices; on a running domain these include
    /// the ones plugged in since it started.
    pub memories: Vec<MemoryDevice>,
    /// Opaque elements (extraconfig): device elements are appended at the
    /// end of `<devices>`, any others at the end of `<domain>`.
    ///
    /// Write-only as far as the model is concerned: when libvirt's XML is
    /// parsed, an element that came from here is read as a typed device if
    /// it is one that the model knows, and skipped otherwise.
    pub extra: Vec<XmlFragment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub disk_type: DiskType,
    pub device: DiskDevice,
    pub driver: Option<DiskDriver>,
    /// `<source file=…>` or `<source dev=…>` depending on `disk_type`;
    /// `None` is an empty drive (a CD-ROM without media).
    pub source: Option<String>,
    pub target_dev: String,
    pub target_bus: DiskBus,
    pub serial: Option<String>,
    pub readonly: bool,
    pub boot_order: Option<u32>,
    pub iotune: Option<IoTune>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDriver {
    pub name: Option<String>,
    pub format: Option<DiskFormat>,
    pub cache: Option<DiskCache>,
    pub discard: Option<DiskDiscard>,
}

/// Per-disk I/O throttling; limits are per second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoTune {
    pub total_bytes_sec: Option<u64>,
    pub read_bytes_sec: Option<u64>,
    pub write_bytes_sec: Option<u64>,
    pub total_iops_sec: Option<u64>,
    pub read_iops_sec: Option<u64>,
    pub write_iops_sec: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSource {
    /// A libvirt virtual network, by name.
    Network(String),
    /// An existing host bridge, by name.
    Bridge(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub source: InterfaceSource,
    pub mac: Option<String>,
    pub model: Option<NicModel>,
    pub target_dev: Option<String>,
    pub bandwidth: Option<Bandwidth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub inbound: Option<BandwidthLimit>,
    pub outbound: Option<BandwidthLimit>,
}

/// Rates in KiB/s, burst in KiB, as libvirt defines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthLimit {
    pub average: u64,
    pub peak: Option<u64>,
    pub burst: Option<u64>,
}

/// A `<serial>` or `<console>` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharDevice {
    pub source: CharSource,
    /// `<target type=…>`, e.g. `isa-serial` for a serial port or `serial`
    /// for a console.
    pub target_type: Option<String>,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharSource {
    File {
        path: String,
        append: Option<bool>,
    },
    /// libvirt fills in the allocated `/dev/pts/N` path on running domains.
    Pty {
        path: Option<String>,
    },
}

/// A unix-socket `<channel>` with a virtio-serial target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub source_mode: Option<ChannelSourceMode>,
    /// Left out, libvirt picks a socket path itself.
    pub source_path: Option<String>,
    pub target_name: String,
}

/// VNC graphics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graphics {
    pub port: Option<i32>,
    pub autoport: bool,
    /// Listen address, rendered both as the `listen` attribute and as a
    /// `<listen type='address'>` child, as libvirt itself does.
    pub listen: Option<String>,
    pub passwd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    pub model: VideoModel,
    pub vram_kib: Option<u32>,
    pub heads: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub input_type: InputType,
    pub bus: Option<InputBus>,
}

/// A TPM with the swtpm emulator backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm {
    pub model: TpmModel,
    pub version: Option<TpmVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl std::fmt::Display for PciAddress {
    /// The conventional `DDDD:BB:SS.F` spelling used by lspci and sysfs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// A `<hostdev mode='subsystem'>` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostdev {
    Pci { address: PciAddress, managed: bool },
    Mdev { uuid: String, model: MdevModel },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBalloon {
    pub model: MemBalloonModel,
    /// Seconds between guest memory statistics updates; without it the
    /// balloon driver reports no statistics.
    pub stats_period: Option<u32>,
}

/// A random number generator with the `random` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    pub model: RngModel,
    /// Host entropy source, e.g. `/dev/urandom`.
    pub source: Option<String>,
}

/// A memory module (`<memory model='dimm'>`), the unit in which memory is
/// added to a running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryDevice {
    pub size_kib: u64,
    /// Guest NUMA node the module belongs to; libvirt picks one when absent.
    pub node: Option<u32>,
}

/// One or more XML elements kept as text, checked to be well-formed when
/// created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlFragment(String);

impl XmlFragment {
    /// Accepts a sequence of one or more well-formed elements, with only
    /// whitespace between them.
    pub fn new(xml: impl Into<String>) -> Result<Self, DomXmlError> {
        let xml = xml.into();
        let elements = tree::parse_elements(&xml).map_err(|e| match e {
            DomXmlError::Malformed(m) => DomXmlError::InvalidFragment(m),
            other => other,
        })?;
        if elements.is_empty() {
            return Err(DomXmlError::InvalidFragment(
                "fragment contains no element".to_string(),
            ));
        }
        Ok(XmlFragment(xml))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn elements(&self) -> Vec<tree::Element> {
        tree::parse_elements(&self.0).expect("fragment was validated when created")
    }
}

impl TryFrom<String> for XmlFragment {
    type Error = DomXmlError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        XmlFragment::new(value)
    }
}

impl TryFrom<&str> for XmlFragment {
    type Error = DomXmlError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        XmlFragment::new(value)
    }
}

impl Domain {
    /// Renders the domain as an indented XML document (no declaration),
    /// ending with a newline.
    pub fn to_xml(&self) -> String {
        tree::render(&render::domain(self))
    }

    /// Parses a domain document, such as one returned by
    /// `virDomainGetXMLDesc`. Elements and attributes outside the model are
    /// ignored.
    pub fn from_xml(xml: &str) -> Result<Domain, DomXmlError> {
        parse::domain(&single_root(xml)?)
    }
}

fn single_root(xml: &str) -> Result<tree::Element, DomXmlError> {
    let mut roots = tree::parse_elements(xml)?;
    match roots.len() {
        0 => Err(DomXmlError::Malformed(
            "document has no element".to_string(),
        )),
        1 => Ok(roots.remove(0)),
        _ => Err(DomXmlError::Malformed(
            "document has more than one root element".to_string(),
        )),
    }
}

/// Reads only Orrery's metadata from a domain document.
///
/// This is how a host's domains are told apart: it succeeds on any
/// well-formed domain, including ones Orrery did not define and whose
/// devices the model could not represent, returning `None` for those.
pub fn orrery_metadata(xml: &str) -> Result<Option<OrreryMetadata>, DomXmlError> {
    let root = single_root(xml)?;
    if root.ns.is_some() || root.local != "domain" {
        return Err(DomXmlError::NotADomain { found: root.qname });
    }
    parse::metadata(&root)
}

/// Reads libvirt's status file of a running domain (`<domstatus pid=...>`
/// around the live definition): QEMU's pid and Orrery's metadata, or `None`
/// for a domain that is not an Orrery instance or has no pid.
pub fn running_status(xml: &str) -> Result<Option<(u32, OrreryMetadata)>, DomXmlError> {
    let root = single_root(xml)?;
    if root.ns.is_some() || root.local != "domstatus" {
        return Err(DomXmlError::NotADomain { found: root.qname });
    }
    let Some(pid) = root.get_attr("pid").and_then(|p| p.parse::<u32>().ok()) else {
        return Ok(None);
    };
    let Some(domain) = root.first_child("domain") else {
        return Ok(None);
    };
    Ok(parse::metadata(domain)?.map(|m| (pid, m)))
}

/// A network interface of a running domain: the host-side device libvirt
/// created for it (`<target dev>`) and the guest's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDevice {
    pub device: String,
    pub mac: String,
}

/// Reads only the interfaces that name both a host-side device and a MAC,
/// in document order, so traffic counted per device can be attributed to
/// the guest's MAC.
///
/// Like [`orrery_metadata`] it accepts any well-formed domain, whatever
/// interface types it uses; inactive definitions have no devices.
pub fn nic_devices(xml: &str) -> Result<Vec<NicDevice>, DomXmlError> {
    let root = single_root(xml)?;
    if root.ns.is_some() || root.local != "domain" {
        return Err(DomXmlError::NotADomain { found: root.qname });
    }
    let Some(devices) = root.first_child("devices") else {
        return Ok(Vec::new());
    };
    Ok(devices
        .children_named("interface")
        .filter_map(|i| {
            let device = i.first_child("target")?.get_attr("dev")?;
            let mac = i.first_child("mac")?.get_attr("address")?;
            Some(NicDevice {
                device: device.to_string(),
                mac: mac.to_string(),
            })
        })
        .collect())
}

impl Disk {
    /// One `<disk>` element on its own, for hot-plugging a device.
    pub fn to_xml(&self) -> String {
        tree::render(&render::disk(self))
    }
}

impl MemoryDevice {
    /// One `<memory>` element on its own, for hot-plugging a module.
    pub fn to_xml(&self) -> String {
        tree::render(&render::memory_device(self))
    }

    /// Reads one `<memory>` element on its own, as given to or returned
    /// by a device hot-plug.
    pub fn from_xml(xml: &str) -> Result<MemoryDevice, DomXmlError> {
        let root = single_root(xml)?;
        if root.ns.is_some() || root.local != "memory" {
            return Err(DomXmlError::InvalidValue {
                path: "/".to_string(),
                value: root.qname,
                expected: "a <memory> element".to_string(),
            });
        }
        parse::memory_device(&root, "memory")
    }
}

/// libvirt's `<domainsnapshot>` for an internal snapshot with memory of the
/// disks that can keep one (the others, a read-only CD-ROM, are named with
/// `snapshot='no'` so they do not make the snapshot fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalSnapshot {
    pub name: String,
    /// (disk target, kept) in the domain's order.
    pub disks: Vec<(String, bool)>,
}

impl InternalSnapshot {
    /// The snapshot of every writable qcow2 disk of `dom`.
    pub fn of(name: &str, dom: &Domain) -> InternalSnapshot {
        InternalSnapshot {
            name: name.to_string(),
            disks: dom
                .devices
                .disks
                .iter()
                .map(|d| {
                    let qcow2 = d
                        .driver
                        .as_ref()
                        .and_then(|dr| dr.format)
                        .is_some_and(|f| f == DiskFormat::Qcow2);
                    (
                        d.target_dev.clone(),
                        qcow2 && !d.readonly && d.source.is_some(),
                    )
                })
                .collect(),
        }
    }

    pub fn to_xml(&self) -> String {
        let mut disks = tree::Element::new("disks");
        for (target, kept) in &self.disks {
            disks.push(
                tree::Element::new("disk")
                    .attr("name", target.as_str())
                    .attr("snapshot", if *kept { "internal" } else { "no" }),
            );
        }
        tree::render(
            &tree::Element::new("domainsnapshot")
                .child(tree::Element::new("name").text(self.name.as_str()))
                .child(tree::Element::new("memory").attr("snapshot", "internal"))
                .child(disks),
        )
    }
}
