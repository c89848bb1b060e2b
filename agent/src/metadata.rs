//! The metadata service: CloudStack's virtual-router HTTP API for guests
//! (`/latest/meta-data/...`, `/latest/user-data`), served by the agent on
//! each guest network's DHCP server address, where cloud-init's CloudStack
//! data source looks for it.
//!
//! A request is answered from the instance whose NIC holds the source
//! address on that network, and only when the host's neighbour table says
//! that address is at the NIC's MAC: a guest that takes another guest's
//! address gets nothing of that guest (its packets carry its own MAC).
//! Answers are pure functions of the table ([`answer`]); the listeners and
//! the neighbour lookup are the only I/O.

use bytes::Bytes;
use http_body_util::Full;
use orrery_proto::v1 as pb;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One NIC of an instance as the service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The guest network's DHCP server address (the listener's address).
    pub gateway: Ipv4Addr,
    pub ip: Ipv4Addr,
    /// Lower-case, colon-separated.
    pub mac: String,
    pub network_uuid: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub nics: Vec<Nic>,
    pub metadata: pb::GuestMetadata,
}

/// What a request gets back: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    fn ok(body: impl Into<Vec<u8>>) -> Self {
        Answer {
            status: 200,
            body: body.into(),
        }
    }
    fn not_found() -> Self {
        Answer {
            status: 404,
            body: b"Not Found\n".to_vec(),
        }
    }
}

/// The answer for `path` from an instance's metadata. Both CloudStack
/// spellings work: `/latest/meta-data/<file>` and the older
/// `/latest/<file>`; a directory lists its entries one per line.
pub fn answer(meta: &pb::GuestMetadata, path: &str) -> Answer {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let listing = || {
        let mut s = meta
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        s.push('\n');
        Answer::ok(s)
    };
    let file = |name: &str| match meta.entries.iter().find(|e| e.name == name) {
        Some(e) => Answer::ok(e.value.clone()),
        None => Answer::not_found(),
    };
    match parts.as_slice() {
        [] => Answer::ok("latest\n"),
        ["latest"] => Answer::ok("meta-data/\nuser-data\n"),
        ["latest", "user-data"] => {
            if meta.user_data.is_empty() {
                Answer::not_found()
            } else {
                Answer::ok(meta.user_data.clone())
            }
        }
        ["latest", "meta-data"] => listing(),
        ["latest", "meta-data", name] => file(name),
        ["latest", name] => file(name),
        _ => Answer::not_found(),
    }
}

/// Reads `/proc/net/arp`-format text: the MAC the host has for `ip`, if
/// the entry is complete.
pub fn neighbour_mac(arp_table: &str, ip: Ipv4Addr) -> Option<String> {
    arp_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP, HW type, Flags, HW address, Mask, Device; flag 0x2 = complete.
        if f.len() < 6 || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        (flags & 0x2 != 0).then(|| f[3].to_ascii_lowercase())
    })
}

/// Every instance's metadata on this host, and the listeners serving it.
pub struct MetadataService {
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    listeners: Mutex<HashSet<Ipv4Addr>>,
    port: u16,
    dir: PathBuf,
    /// The neighbour table, read per request (a test replaces it).
    neighbours: Box<dyn Fn() -> String + Send + Sync>,
}

impl MetadataService {
    /// `port` 0: nothing is served (entries are still kept). `dir` keeps
    /// each instance's last metadata across agent restarts.
    pub fn new(port: u16, dir: PathBuf) -> Arc<Self> {
        Self::with_neighbours(
            port,
            dir,
            Box::new(|| std::fs::read_to_string("/proc/net/arp").unwrap_or_default()),
        )
    }

    pub fn with_neighbours(
        port: u16,
        dir: PathBuf,
        neighbours: Box<dyn Fn() -> String + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(MetadataService {
            entries: RwLock::new(HashMap::new()),
            listeners: Mutex::new(HashSet::new()),
            port,
            dir,
            neighbours,
        })
    }

    /// The NICs of a spec, as the service keys them.
    pub fn nics_of(spec: &pb::InstanceSpec) -> Vec<Nic> {
        spec.nics
            .iter()
            .filter_map(|n| {
                let net = n.network.as_ref()?;
                Some(Nic {
                    gateway: net.gateway.parse().ok()?,
                    ip: n.ip.parse().ok()?,
                    mac: n.mac.to_ascii_lowercase(),
                    network_uuid: net.uuid.clone(),
                })
            })
            .collect()
    }

    /// Records an instance's metadata (start, an arriving migration, an
    /// update) and makes sure its networks are served.
    pub fn register(self: &Arc<Self>, name: &str, nics: Vec<Nic>, metadata: pb::GuestMetadata) {
        let entry = Entry { nics, metadata };
        self.persist(name, &entry);
        let gateways: Vec<Ipv4Addr> = entry.nics.iter().map(|n| n.gateway).collect();
        self.entries
            .write()
            .insert(name.to_string(), Arc::new(entry));
        for g in gateways {
            self.serve(g);
        }
    }

    /// New metadata for an instance already here; false when it is not.
    pub fn update(self: &Arc<Self>, name: &str, metadata: pb::GuestMetadata) -> bool {
        let nics = match self.entries.read().get(name) {
            Some(e) => e.nics.clone(),
            None => return false,
        };
        self.register(name, nics, metadata);
        true
    }

    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.read().get(name).cloned()
    }

    pub fn remove(&self, name: &str) {
        self.entries.write().remove(name);
        let _ = std::fs::remove_file(self.file(name));
    }

    /// Loads what earlier runs recorded and serves it again.
    pub fn restore(self: &Arc<Self>) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for f in rd.flatten() {
            let path = f.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pb"))
                .map(str::to_string)
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(stored) = pb::InstanceSpec::decode(bytes.as_slice()) else {
                tracing::warn!(file = %path.display(), "unreadable metadata record skipped");
                continue;
            };
            let nics = Self::nics_of(&stored);
            let metadata = stored.metadata.unwrap_or_default();
            self.register(&name, nics, metadata);
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pb"))
    }

    /// Written as an InstanceSpec holding only the NICs and metadata, so
    /// one protocol type carries both.
    fn persist(&self, name: &str, e: &Entry) {
        let spec = pb::InstanceSpec {
            name: name.to_string(),
            nics: e
                .nics
                .iter()
                .map(|n| pb::NicSpec {
                    mac: n.mac.clone(),
                    ip: n.ip.to_string(),
                    is_default: false,
                    network: Some(pb::GuestNetwork {
                        gateway: n.gateway.to_string(),
                        uuid: n.network_uuid.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            metadata: Some(e.metadata.clone()),
            ..Default::default()
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(format!(".{name}.pb.tmp"));
            std::fs::write(&tmp, spec.encode_to_vec())?;
            std::fs::rename(&tmp, self.file(name))
        };
        if let Err(e) = write() {
            tracing::warn!(instance = name, error = %e, "metadata record not saved");
        }
    }

    /// The instance a request from `peer` to `local` comes from, if the
    /// neighbour table agrees that `peer` is at that instance's MAC.
    pub fn lookup(&self, local: Ipv4Addr, peer: Ipv4Addr) -> Option<Arc<Entry>> {
        let entry = self
            .entries
            .read()
            .values()
            .find(|e| e.nics.iter().any(|n| n.gateway == local && n.ip == peer))
            .cloned()?;
        let nic = entry
            .nics
            .iter()
            .find(|n| n.gateway == local && n.ip == peer)?;
        let seen = neighbour_mac(&(self.neighbours)(), peer);
        if seen.as_deref() != Some(nic.mac.as_str()) {
            // Someone else holds the address (or the host has no complete
            // neighbour entry for it): refuse and say so.
            tracing::warn!(%peer, expected = %nic.mac, seen = ?seen, "metadata request from an address not at its instance's MAC refused");
            return None;
        }
        Some(entry)
    }

    /// Starts the listener for a guest network's address unless one runs.
    /// The address exists once libvirt has the network's bridge up; until
    /// then binding is retried.
    fn serve(self: &Arc<Self>, gateway: Ipv4Addr) {
        if self.port == 0 || !self.listeners.lock().insert(gateway) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let addr = SocketAddr::from((gateway, me.port));
            let mut tries = 0u32;
            let listener = loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        // Said once, then quietly retried: the bridge may
                        // come up later.
                        if tries == 0 {
                            tracing::warn!(%addr, error = %e, "metadata service cannot listen yet; retrying");
                        }
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            tracing::info!(%addr, "metadata service listening");
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "metadata accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let me = Arc::clone(&me);
                tokio::spawn(async move {
                    me.connection(stream, gateway, peer).await;
                });
            }
        });
    }

    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        gateway: Ipv4Addr,
        peer: SocketAddr,
    ) {
        let peer_ip = match peer.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return,
            },
        };
        let me = Arc::clone(&self);
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let me = Arc::clone(&me);
            async move {
                let a = if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD
                {
                    Answer {
                        status: 405,
                        body: b"Method Not Allowed\n".to_vec(),
                    }
                } else {
                    match me.lookup(gateway, peer_ip) {
                        Some(e) => answer(&e.metadata, req.uri().path()),
                        // Nothing about anyone: the same answer whether or
                        // not the address belongs to an instance.
                        None => Answer::not_found(),
                    }
                };
                let resp = hyper::Response::builder()
                    .status(a.status)
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from(a.body)))
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let io = hyper_util::rt::TokioIo::new(stream);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(16 * 1024)
            .serve_connection(io, svc);
        // A guest cannot hold a connection forever.
        let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> pb::GuestMetadata {
        pb::GuestMetadata {
            entries: [
                ("instance-id", "i-2-7-VM"),
                ("local-ipv4", "10.1.1.5"),
                ("public-keys", "ssh-rsa AAA a"),
            ]
            .iter()
            .map(|(n, v)| pb::MetadataEntry {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
            user_data: b"#!/bin/sh\necho hi\n".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn both_spellings_and_listings_answer() {
        let m = meta();
        assert_eq!(
            answer(&m, "/latest/meta-data/instance-id").body,
            b"i-2-7-VM"
        );
        assert_eq!(answer(&m, "/latest/instance-id").body, b"i-2-7-VM");
        assert_eq!(
            answer(&m, "/latest/meta-data/").body,
            b"instance-id\nlocal-ipv4\npublic-keys\n"
        );
        assert_eq!(
            answer(&m, "/latest/meta-data").body,
            answer(&m, "/latest/meta-data/").body
        );
        assert_eq!(
            answer(&m, "/latest/user-data").body,
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(answer(&m, "/latest/meta-data/nothing").status, 404);
        assert_eq!(answer(&m, "/latest/meta-data/../../etc").status, 404);
        assert_eq!(
            answer(&m, "/latest/meta-data/instance-id?x=1").body,
            b"i-2-7-VM"
        );
        let mut empty = m.clone();
        empty.user_data.clear();
        assert_eq!(answer(&empty, "/latest/user-data").status, 404);
    }

    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
10.1.1.5         0x1         0x2         52:54:00:AA:00:01     *        orrbr-1
10.1.1.6         0x1         0x0         00:00:00:00:00:00     *        orrbr-1
";

    #[test]
    fn neighbour_table_is_read_for_complete_entries_only() {
        assert_eq!(
            neighbour_mac(ARP, "10.1.1.5".parse().unwrap()).as_deref(),
            Some("52:54:00:aa:00:01")
        );
        assert_eq!(neighbour_mac(ARP, "10.1.1.6".parse().unwrap()), None);
        assert_eq!(neighbour_mac(ARP, "10.1.1.7".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn an_address_answers_only_from_its_own_mac() {
        let dir = tempfile::tempdir().unwrap();
        let svc = MetadataService::with_neighbours(0, dir.path().into(), Box::new(|| ARP.into()));
        let gw: Ipv4Addr = "10.1.1.1".parse().unwrap();
        svc.register(
            "i-2-7-VM",
            vec![Nic {
                gateway: gw,
                ip: "10.1.1.5".parse().unwrap(),
                mac: "52:54:00:aa:00:01".into(),
                network_uuid: "n1".into(),
            }],
            meta(),
        );
        // Another instance whose address is, per the table, at a MAC that
        // is not its own: someone else took it.
        svc.register(
            "i-2-8-VM",
            vec![Nic {
                gateway: gw,
                ip: "10.1.1.6".parse().unwrap(),
                mac: "52:54:00:aa:00:02".into(),
                network_uuid: "n1".into(),
            }],
            meta(),
        );
        assert!(svc.lookup(gw, "10.1.1.5".parse().unwrap()).is_some());
        assert!(svc.lookup(gw, "10.1.1.6".parse().unwrap()).is_none());
        assert!(svc
            .lookup("10.9.9.1".parse().unwrap(), "10.1.1.5".parse().unwrap())
            .is_none());

        // Kept across a restart, and updates replace the data.
        let mut m2 = meta();
        m2.user_data = b"new".to_vec();
        assert!(svc.update("i-2-7-VM", m2));
        assert!(!svc.update("i-9-9-VM", meta()));
        let again = MetadataService::with_neighbours(0, dir.path().into(), Box::new(|| ARP.into()));
        again.restore();
        let e = again.lookup(gw, "10.1.1.5".parse().unwrap()).unwrap();
        assert_eq!(e.metadata.user_data, b"new");
        again.remove("i-2-7-VM");
        assert!(again.get("i-2-7-VM").is_none());
        assert!(!dir.path().join("i-2-7-VM.pb").exists());
    }
}
