//! Template and ISO registration into the secondary-storage directory: copied
//! from a local path or downloaded over http(s), checksum-verified, sized.

use super::*;
use sha2::Digest;
use std::fmt;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Md5(String),
    Sha1(String),
    Sha256(String),
    Sha512(String),
}

impl Checksum {
    /// `{MD5}hex`, `{SHA-256}hex`, ... or bare hex (MD5 by length 32, SHA-256 by 64).
    pub fn parse(s: &str) -> Result<Checksum, String> {
        let s = s.trim();
        let (algo, hex) = match s.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((a, h)) => (
                a.to_ascii_uppercase().replace('-', ""),
                h.to_ascii_lowercase(),
            ),
            None => (String::new(), s.to_ascii_lowercase()),
        };
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("Invalid value for parameter checksum: it must be hexadecimal".into());
        }
        let c = match (algo.as_str(), hex.len()) {
            ("MD5", 32) | ("", 32) => Checksum::Md5(hex),
            ("SHA1", 40) | ("", 40) => Checksum::Sha1(hex),
            ("SHA256", 64) | ("", 64) => Checksum::Sha256(hex),
            ("SHA512", 128) | ("", 128) => Checksum::Sha512(hex),
            _ => {
                return Err(format!(
                    "Invalid value for parameter checksum: unknown algorithm or length in {s}"
                ))
            }
        };
        Ok(c)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Md5(h) => write!(f, "{{MD5}}{h}"),
            Checksum::Sha1(h) => write!(f, "{{SHA-1}}{h}"),
            Checksum::Sha256(h) => write!(f, "{{SHA-256}}{h}"),
            Checksum::Sha512(h) => write!(f, "{{SHA-512}}{h}"),
        }
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_sum(c: &Checksum) -> Self {
        match c {
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
            Checksum::Sha1(_) => Hasher::Sha1(sha1::Sha1::new()),
            Checksum::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Checksum::Sha512(_) => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a template may come from, decided before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An http(s) URL; its addresses are checked again when it is fetched.
    Http(String),
    /// A file on the coordinator; root admins only (the operator's own files).
    Local(std::path::PathBuf),
}

/// Checks a template URL for a caller: anything but http(s) is for root
/// admins only, since the coordinator would read its own files for the
/// caller (secrets, other tenants' templates, and whether a path exists).
pub fn check_source(url: &str, root_admin: bool) -> Result<Source, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("Invalid value for parameter url: {e}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("Invalid value for parameter url: it names no host".into());
        }
        return Ok(Source::Http(url.to_string()));
    }
    if !root_admin {
        return Err(
            "Invalid value for parameter url: only http and https URLs may be registered".into(),
        );
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if !path.starts_with('/') {
        return Err(format!(
            "Invalid value for parameter url: {url} is neither an http(s) URL nor an absolute path"
        ));
    }
    if !std::path::Path::new(path).is_file() {
        return Err(format!(
            "Invalid value for parameter url: {path} does not exist or is not a file"
        ));
    }
    Ok(Source::Local(path.into()))
}

/// Addresses a download must not reach unless an operator allows them: this
/// machine (loopback, or any address of its own, which includes the
/// coordinator's listeners), link-local (cloud metadata services), private
/// and shared ranges, multicast and unspecified addresses.
pub fn is_internal(ip: std::net::IpAddr, local: impl Fn(std::net::IpAddr) -> bool) -> bool {
    use std::net::IpAddr;
    let special = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                // 100.64.0.0/10, carrier-grade NAT.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4), local);
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fe80::/10 link-local, fc00::/7 unique local.
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xfe00) == 0xfc00
        }
    };
    special || local(ip)
}

/// Whether an address belongs to this machine: binding to it succeeds only
/// for addresses of a local interface.
pub fn is_local_address(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// `secstorage.allowed.internal.sites`: comma-separated CIDRs or addresses.
pub fn parse_allowed(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{s} is not an address or CIDR"))
        })
        .collect()
}

/// Refuses an address a template download must not reach.
pub fn check_address(
    ip: std::net::IpAddr,
    allowed: &[ipnet::IpNet],
    local: impl Fn(std::net::IpAddr) -> bool,
) -> Result<(), String> {
    if is_internal(ip, local) && !allowed.iter().any(|n| n.contains(&ip)) {
        return Err(format!(
            "Invalid value for parameter url: it points at the internal address {ip}; a root admin may allow it in secstorage.allowed.internal.sites"
        ));
    }
    Ok(())
}

/// The virtual size stored in a qcow2 header, if the data is qcow2.
pub fn qcow2_virtual_size(header: &[u8]) -> Option<i64> {
    if header.len() >= 32 && &header[0..4] == b"QFI\xfb" {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[24..32]);
        return Some(u64::from_be_bytes(b) as i64);
    }
    None
}

/// How a downloaded template is packed, from its URL's file name as
/// CloudStack's secondary storage decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Zip,
}

impl Compression {
    pub fn of_url(url: &str) -> Compression {
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        if path.ends_with(".gz") {
            Compression::Gzip
        } else if path.ends_with(".bz2") {
            Compression::Bzip2
        } else if path.ends_with(".zip") {
            Compression::Zip
        } else {
            Compression::None
        }
    }
}

/// Copies `src` to `dest`, unpacking it; returns the first 64 bytes of the
/// result (for the format check) and its size.
pub fn unpack(
    c: Compression,
    src: &std::path::Path,
    dest: &std::path::Path,
) -> Result<(Vec<u8>, i64), String> {
    use std::io::{Read, Write};
    let file = std::fs::File::open(src).map_err(|e| e.to_string())?;
    let mut reader: Box<dyn Read> = match c {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        Compression::Zip => {
            let mut archive =
                zip::ZipArchive::new(file).map_err(|e| format!("not a zip archive: {e}"))?;
            // A template archive holds one image; take its first file.
            let index = (0..archive.len())
                .find(|&i| archive.by_index(i).is_ok_and(|f| f.is_file()))
                .ok_or("the zip archive holds no file")?;
            let mut out = std::fs::File::create(dest).map_err(|e| e.to_string())?;
            let mut entry = archive.by_index(index).map_err(|e| e.to_string())?;
            return copy_counting(&mut entry, &mut out).and_then(|r| {
                out.flush().map_err(|e| e.to_string())?;
                Ok(r)
            });
        }
    };
    let mut out = std::fs::File::create(dest).map_err(|e| e.to_string())?;
    let r = copy_counting(&mut reader, &mut out)?;
    out.flush().map_err(|e| e.to_string())?;
    Ok(r)
}

fn copy_counting(
    r: &mut dyn std::io::Read,
    w: &mut dyn std::io::Write,
) -> Result<(Vec<u8>, i64), String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut header = Vec::with_capacity(64);
    let mut total: i64 = 0;
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("cannot unpack the download: {e}"))?;
        if n == 0 {
            break;
        }
        if header.len() < 64 {
            header.extend_from_slice(&buf[..n.min(64 - header.len())]);
        }
        total += n as i64;
        w.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok((header, total))
}

/// GETs a URL whose every hop (redirects included) resolves only to allowed
/// addresses, connecting to exactly the addresses that were checked so a
/// name cannot resolve differently between the check and the connection.
async fn http_get(url: &str, allowed: &[ipnet::IpNet]) -> Result<reqwest::Response, String> {
    let mut url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let host = url.host_str().ok_or("the URL names no host")?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::SocketAddr> = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![(ip, port).into()],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("download failed: cannot resolve {host}: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("download failed: {host} has no address"));
        }
        for a in &addrs {
            check_address(a.ip(), allowed, is_local_address)?;
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(30))
            .resolve_to_addrs(bare, &addrs)
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("download failed: {e}"))?;
        if resp.status().is_redirection() {
            let next = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or("download failed: a redirect without a location")?;
            url = url
                .join(next)
                .map_err(|e| format!("download failed: bad redirect: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("download failed: redirected away from http(s)".into());
            }
            continue;
        }
        if !resp.status().is_success() {
            return Err(format!("download failed: HTTP {}", resp.status()));
        }
        return Ok(resp);
    }
    Err("download failed: too many redirects".into())
}

impl super::offerings::Catalog {
    /// Checks a template URL when it is registered, so a refused source is a
    /// 431 on the request rather than a failed download later. Names that do
    /// not resolve now are left to the download, which checks again.
    pub async fn check_template_url(&self, caller: &Caller, url: &str) -> SResult<()> {
        let Source::Http(url) =
            check_source(url, caller.is_root_admin()).map_err(ServiceError::invalid)?
        else {
            return Ok(());
        };
        let allowed = parse_allowed(&self.setting("secstorage.allowed.internal.sites", &[]))
            .map_err(ServiceError::internal)?;
        let parsed = reqwest::Url::parse(&url).map_err(|e| ServiceError::invalid(e.to_string()))?;
        let host = parsed.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<std::net::IpAddr> = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::net::lookup_host((bare, port)).await {
                Ok(a) => a.map(|a| a.ip()).collect(),
                Err(_) => vec![],
            },
        };
        for ip in addrs {
            check_address(ip, &allowed, is_local_address).map_err(ServiceError::invalid)?;
        }
        Ok(())
    }

    pub fn spawn_template_download(self: &Arc<Self>, template_id: i64) {
        let svc = self.clone();
        tokio::spawn(async move {
            let result = svc.fetch_template(template_id).await;
            if let Err(e) = svc.finish_template(template_id, result).await {
                tracing::error!(template = template_id, error = %e, "template bookkeeping failed");
            }
        });
    }

    async fn fetch_template(&self, id: i64) -> Result<(String, i64, i64), String> {
        let t: Template = self
            .store
            .load(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("template vanished")?;
        let rel = format!("template/{}/{}.{}", t.id, t.uuid, t.format.to_lowercase());
        let dest = self.data_dir.join("secondary").join(&rel);
        tokio::fs::create_dir_all(dest.parent().expect("has parent"))
            .await
            .map_err(|e| e.to_string())?;
        let download = dest.with_extension("download");
        let result = self.fetch_into(&t, &download, &dest).await;
        let _ = tokio::fs::remove_file(&download).await;
        result.map(|(size, total)| (rel, size, total))
    }

    /// Downloads (or copies) a template's source into `download`, verifies its
    /// checksum, decompresses it when the URL names a compressed file, and
    /// moves the image to `dest`. Returns (virtual size, physical size).
    async fn fetch_into(
        &self,
        t: &Template,
        download: &std::path::Path,
        dest: &std::path::Path,
    ) -> Result<(i64, i64), String> {
        let mut out = tokio::fs::File::create(download)
            .await
            .map_err(|e| e.to_string())?;
        let sum = t.checksum.as_deref().map(Checksum::parse).transpose()?;
        let mut hasher = sum.as_ref().map(Hasher::for_sum);
        let mut feed = |chunk: &[u8]| {
            if let Some(h) = hasher.as_mut() {
                h.update(chunk);
            }
        };
        match check_source(&t.url, t.local_source)? {
            Source::Http(url) => {
                let allowed =
                    parse_allowed(&self.setting("secstorage.allowed.internal.sites", &[]))?;
                let mut resp = http_get(&url, &allowed).await?;
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| format!("download failed: {e}"))?
                {
                    feed(&chunk);
                    out.write_all(&chunk).await.map_err(|e| e.to_string())?;
                }
            }
            Source::Local(path) => {
                use tokio::io::AsyncReadExt;
                let mut f = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    feed(&buf[..n]);
                    out.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                }
            }
        }
        out.flush().await.map_err(|e| e.to_string())?;
        drop(out);
        if let (Some(want), Some(h)) = (sum, hasher) {
            let got = h.hex();
            let want_hex = match &want {
                Checksum::Md5(x)
                | Checksum::Sha1(x)
                | Checksum::Sha256(x)
                | Checksum::Sha512(x) => x.clone(),
            };
            if got != want_hex {
                return Err(format!("checksum mismatch: expected {want}, got {got}"));
            }
        }
        // Secondary storage keeps images as they are used: compressed
        // downloads (most published images) are unpacked first.
        let compression = Compression::of_url(&t.url);
        let tmp = dest.with_extension("part");
        let (src, to) = (download.to_path_buf(), tmp.clone());
        let (header, total) = tokio::task::spawn_blocking(move || unpack(compression, &src, &to))
            .await
            .map_err(|e| e.to_string())??;
        if t.format == "QCOW2" && qcow2_virtual_size(&header).is_none() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err("the file is not in QCOW2 format".into());
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| e.to_string())?;
        Ok((qcow2_virtual_size(&header).unwrap_or(total), total))
    }

    async fn finish_template(&self, id: i64, r: Result<(String, i64, i64), String>) -> SResult<()> {
        let mut t: Template = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| ServiceError::internal("template vanished"))?;
        match r {
            Ok((path, size, physical)) => {
                t.path = Some(path);
                t.size = size;
                t.physical_size = physical;
                t.is_ready = true;
                t.status = "Download Complete".into();
            }
            Err(e) => {
                t.status = format!("Failed: {e}");
            }
        }
        let mut tx = Tx::new();
        tx.update(&mut t);
        self.store.commit(tx.ops).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_forms() {
        assert!(matches!(
            Checksum::parse("{MD5}d41d8cd98f00b204e9800998ecf8427e"),
            Ok(Checksum::Md5(_))
        ));
        assert!(matches!(
            Checksum::parse("d41d8cd98f00b204e9800998ecf8427e"),
            Ok(Checksum::Md5(_))
        ));
        assert!(matches!(
            Checksum::parse(&format!("{{SHA-256}}{}", "a".repeat(64))),
            Ok(Checksum::Sha256(_))
        ));
        assert!(Checksum::parse("xyz").is_err());
        assert!(Checksum::parse("{MD5}abcd").is_err());
    }

    #[test]
    fn qcow2_header() {
        let mut h = vec![0u8; 32];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        assert_eq!(qcow2_virtual_size(&h), Some(1 << 30));
        assert_eq!(qcow2_virtual_size(&[0u8; 32]), None);
    }

    #[test]
    fn sources() {
        assert!(check_source("relative/path", true).is_err());
        assert!(check_source("/nonexistent/file.qcow2", true).is_err());
        assert!(check_source("https://example.invalid/x.qcow2", false).is_ok());
        assert_eq!(
            check_source("/etc/hostname", true).unwrap(),
            Source::Local("/etc/hostname".into())
        );
    }

    #[test]
    fn users_get_only_http() {
        for url in [
            "/etc/shadow",
            "file:///etc/shadow",
            "/nonexistent",
            "ftp://example.org/x",
            "FILE:///etc/passwd",
        ] {
            let e = check_source(url, false).unwrap_err();
            // The same answer whether or not the file exists: no oracle.
            assert_eq!(
                e,
                "Invalid value for parameter url: only http and https URLs may be registered"
            );
        }
        assert!(check_source("http://", false).is_err());
    }

    #[test]
    fn internal_addresses() {
        let none = |_| false;
        for ip in [
            "127.0.0.1",
            "127.3.4.5",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert!(is_internal(ip, none), "{ip}");
            assert!(check_address(ip, &[], none).is_err(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert!(!is_internal(ip, none), "{ip}");
        }
        // An address of this machine's own (a listener) is internal too.
        let public: std::net::IpAddr = "93.184.216.34".parse().unwrap();
        assert!(is_internal(public, |ip| ip == public));
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn compressed_downloads_are_unpacked() {
        use std::io::Write;
        assert_eq!(
            Compression::of_url("http://x/a.qcow2.gz?x=1"),
            Compression::Gzip
        );
        assert_eq!(
            Compression::of_url("http://x/a.qcow2.BZ2"),
            Compression::Bzip2
        );
        assert_eq!(Compression::of_url("http://x/a.zip"), Compression::Zip);
        assert_eq!(Compression::of_url("http://x/a.qcow2"), Compression::None);
        let dir = std::env::temp_dir().join(format!("orrery-unpack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut image = b"QFI\xfb".to_vec();
        image.extend(std::iter::repeat_n(7u8, 200_000));
        let gz = dir.join("a.gz");
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        e.write_all(&image).unwrap();
        e.finish().unwrap();
        let bz = dir.join("a.bz2");
        let mut e = bzip2::write::BzEncoder::new(
            std::fs::File::create(&bz).unwrap(),
            bzip2::Compression::default(),
        );
        e.write_all(&image).unwrap();
        e.finish().unwrap();
        let zp = dir.join("a.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zp).unwrap());
        z.start_file("disk.qcow2", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(&image).unwrap();
        z.finish().unwrap();
        for (c, src) in [
            (Compression::Gzip, &gz),
            (Compression::Bzip2, &bz),
            (Compression::Zip, &zp),
        ] {
            let out = dir.join("out");
            let (header, total) = unpack(c, src, &out).unwrap();
            assert_eq!(&header[..4], b"QFI\xfb", "{c:?}");
            assert_eq!(total, image.len() as i64, "{c:?}");
            assert_eq!(std::fs::read(&out).unwrap(), image, "{c:?}");
        }
        // Corrupt input is an error, not a panic.
        std::fs::write(&gz, b"not gzip").unwrap();
        assert!(unpack(Compression::Gzip, &gz, &dir.join("out")).is_err());
        assert!(unpack(Compression::Zip, &gz, &dir.join("out")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allowed_internal_sites() {
        let allowed = parse_allowed(" 10.0.0.0/8, 127.0.0.1 ,").unwrap();
        assert_eq!(allowed.len(), 2);
        let none = |_| false;
        assert!(check_address("10.9.9.9".parse().unwrap(), &allowed, none).is_ok());
        assert!(check_address("127.0.0.1".parse().unwrap(), &allowed, none).is_ok());
        assert!(check_address("127.0.0.2".parse().unwrap(), &allowed, none).is_err());
        assert!(parse_allowed("10.0.0.0/33").is_err());
        assert!(parse_allowed("nonsense").is_err());
    }
}
