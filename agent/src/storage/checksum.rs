//! Template checksums as CloudStack writes them: `{SHA-256}<hex>`,
//! `{SHA-512}<hex>`, `{MD5}<hex>`, or bare hex whose length names the
//! algorithm.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

use super::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Md5,
    Sha256,
    Sha512,
}

impl ChecksumAlgorithm {
    fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Md5 => 32,
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha512 => 128,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Md5 => "MD5",
            ChecksumAlgorithm::Sha256 => "SHA-256",
            ChecksumAlgorithm::Sha512 => "SHA-512",
        }
    }
}

/// An expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Lower-case hex.
    pub hex: String,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Checksum {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, StorageError> {
        let bad = || StorageError::InvalidChecksum(s.to_string());
        let trimmed = s.trim();
        let (algorithm, hex) = match trimmed.strip_prefix('{') {
            Some(rest) => {
                let (name, hex) = rest.split_once('}').ok_or_else(bad)?;
                let algorithm = match name.to_ascii_uppercase().as_str() {
                    "MD5" => ChecksumAlgorithm::Md5,
                    "SHA-256" | "SHA256" => ChecksumAlgorithm::Sha256,
                    "SHA-512" | "SHA512" => ChecksumAlgorithm::Sha512,
                    _ => return Err(bad()),
                };
                (algorithm, hex)
            }
            None => {
                let algorithm = match trimmed.len() {
                    32 => ChecksumAlgorithm::Md5,
                    64 => ChecksumAlgorithm::Sha256,
                    128 => ChecksumAlgorithm::Sha512,
                    _ => return Err(bad()),
                };
                (algorithm, trimmed)
            }
        };
        if hex.len() != algorithm.hex_len() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Hasher {
        match algorithm {
            ChecksumAlgorithm::Md5 => Hasher::Md5(Md5::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            ChecksumAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish_hex(self) -> String {
        let bytes = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Checksum {
    /// The digest of `data` with this checksum's algorithm.
    pub fn digest_of(&self, data: &[u8]) -> Checksum {
        let mut h = Hasher::new(self.algorithm);
        h.update(data);
        Checksum {
            algorithm: self.algorithm,
            hex: h.finish_hex(),
        }
    }

    /// The digest of a file's content with this checksum's algorithm.
    /// Blocking: reads the whole file.
    pub fn digest_of_file(&self, path: &Path) -> Result<Checksum, StorageError> {
        let mut file = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
        let mut h = Hasher::new(self.algorithm);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| StorageError::io(path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Checksum {
            algorithm: self.algorithm,
            hex: h.finish_hex(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_MD5: &str = "900150983cd24fb0d6963f7d28e17f72";
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_SHA512: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    #[test]
    fn parses_every_spelling() {
        let cases = [
            (
                format!("{{SHA-256}}{ABC_SHA256}"),
                ChecksumAlgorithm::Sha256,
            ),
            (
                format!("{{sha-512}}{}", ABC_SHA512.to_uppercase()),
                ChecksumAlgorithm::Sha512,
            ),
            (format!("{{MD5}}{ABC_MD5}"), ChecksumAlgorithm::Md5),
            (ABC_MD5.to_string(), ChecksumAlgorithm::Md5),
            (ABC_SHA256.to_string(), ChecksumAlgorithm::Sha256),
            (format!(" {ABC_SHA512}\n"), ChecksumAlgorithm::Sha512),
        ];
        for (text, algorithm) in cases {
            let c: Checksum = text.parse().unwrap();
            assert_eq!(c.algorithm, algorithm, "{text}");
            assert_eq!(c.digest_of(b"abc"), c, "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "{SHA-1}a9993e364706816aba3e25717850c26c9cd0d89d",
            "a9993e364706816aba3e25717850c26c9cd0d89d",
            &format!("{{MD5}}{ABC_SHA256}"),
            &format!("{{SHA-256{ABC_SHA256}"),
            &format!("{{SHA-256}}{}", ABC_SHA256.replace('a', "g")),
        ] {
            assert!(
                matches!(
                    bad.parse::<Checksum>(),
                    Err(StorageError::InvalidChecksum(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn file_digest_and_display() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let c: Checksum = ABC_SHA256.parse().unwrap();
        assert_eq!(c.digest_of_file(&p).unwrap(), c);
        assert_eq!(c.to_string(), format!("{{SHA-256}}{ABC_SHA256}"));
        assert!(c.digest_of_file(&dir.path().join("missing")).is_err());
    }
}
