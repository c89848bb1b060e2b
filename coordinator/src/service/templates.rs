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

/// Rejects sources that can never work before anything is recorded.
pub fn check_source(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
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

impl Service {
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
        let tmp = dest.with_extension("part");
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| e.to_string())?;
        let sum = t.checksum.as_deref().map(Checksum::parse).transpose()?;
        let mut hasher = sum.as_ref().map(Hasher::for_sum);
        let mut header = Vec::with_capacity(64);
        let mut total: i64 = 0;
        let mut feed = |chunk: &[u8], header: &mut Vec<u8>| {
            if let Some(h) = hasher.as_mut() {
                h.update(chunk);
            }
            if header.len() < 64 {
                header.extend_from_slice(&chunk[..chunk.len().min(64 - header.len())]);
            }
        };
        if t.url.starts_with("http://") || t.url.starts_with("https://") {
            let mut resp = reqwest::get(&t.url)
                .await
                .map_err(|e| format!("download failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("download failed: HTTP {}", resp.status()));
            }
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("download failed: {e}"))?
            {
                feed(&chunk, &mut header);
                total += chunk.len() as i64;
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        } else {
            use tokio::io::AsyncReadExt;
            let path = t.url.strip_prefix("file://").unwrap_or(&t.url);
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {path}: {e}"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                feed(&buf[..n], &mut header);
                total += n as i64;
                out.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
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
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(format!("checksum mismatch: expected {want}, got {got}"));
            }
        }
        if t.format == "QCOW2" && qcow2_virtual_size(&header).is_none() {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err("the file is not in QCOW2 format".into());
        }
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| e.to_string())?;
        let size = qcow2_virtual_size(&header).unwrap_or(total);
        Ok((rel, size, total))
    }

    async fn finish_template(&self, id: i64, r: Result<(String, i64, i64), String>) -> SResult<()> {
        let mut t: Template = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| ApiError::internal("template vanished"))?;
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
        assert!(check_source("relative/path").is_err());
        assert!(check_source("/nonexistent/file.qcow2").is_err());
        assert!(check_source("https://example.invalid/x.qcow2").is_ok());
    }
}
