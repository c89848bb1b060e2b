//! SSH key pairs: an account's named public keys, created here (the private
//! key returned once) or registered, and the keys an instance is given.

use super::*;
use base64::Engine;
use orrery_model::VmState;

/// The key types accepted, as OpenSSH names them.
pub const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

/// The most bytes of a public key line (an RSA key of 16384 bits is about
/// 2.8 KB); beyond it the input is not a key.
pub const MAX_PUBLIC_KEY: usize = 5120;

/// A public key as parsed from OpenSSH's one-line format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: String,
    pub blob: Vec<u8>,
    pub comment: Option<String>,
}

impl PublicKey {
    /// `type base64` (the comment is dropped: it is not part of the key).
    pub fn openssh(&self) -> String {
        format!(
            "{} {}",
            self.key_type,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }

    /// CloudStack's fingerprint: MD5 of the key's blob as colon-separated
    /// lower-case hex (what `ssh-keygen -l -E md5` prints after `MD5:`).
    pub fn fingerprint(&self) -> String {
        use md5::Digest;
        let d = md5::Md5::digest(&self.blob);
        d.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Reads SSH wire-format strings (u32 length, bytes) from a key blob.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Result<&'a [u8], String> {
        if self.0.len() < 4 {
            return Err("the key data ends early".into());
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err("the key data ends early".into());
        }
        let (s, rest) = rest.split_at(n);
        self.0 = rest;
        Ok(s)
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("the key data has bytes past its end".into())
        }
    }
}

/// Pure: parses and checks one public key line, so that what is stored is a
/// key a guest's `authorized_keys` accepts: its type is one of
/// [`KEY_TYPES`], its data is base64 whose own type matches, and its parts
/// have the sizes the type requires.
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    if line.len() > MAX_PUBLIC_KEY {
        return Err(format!("longer than {MAX_PUBLIC_KEY} characters"));
    }
    let mut parts = line.split_whitespace();
    let key_type = parts.next().ok_or("empty")?.to_string();
    if !KEY_TYPES.contains(&key_type.as_str()) {
        return Err(format!(
            "key type {key_type} is not one of {}",
            KEY_TYPES.join(", ")
        ));
    }
    let data = parts.next().ok_or("no key data after the key type")?;
    let comment = {
        let rest: Vec<&str> = parts.collect();
        (!rest.is_empty()).then(|| rest.join(" "))
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "the key data is not base64".to_string())?;
    let mut w = Wire(&blob);
    let inner = w.string()?;
    if inner != key_type.as_bytes() {
        return Err(format!(
            "the key data is of type {}, not {key_type}",
            String::from_utf8_lossy(inner)
        ));
    }
    match key_type.as_str() {
        "ssh-rsa" => {
            let e = w.string()?;
            let n = w.string()?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if e.is_empty() || e.len() > 8 {
                return Err("the RSA exponent is malformed".into());
            }
            if !(1024..=16384).contains(&bits) {
                return Err(format!(
                    "an RSA key of {bits} bits; 1024 to 16384 are accepted"
                ));
            }
        }
        "ssh-ed25519" => {
            if w.string()?.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
        }
        t => {
            let curve = t.trim_start_matches("ecdsa-sha2-");
            if w.string()? != curve.as_bytes() {
                return Err(format!("the ECDSA key is not on curve {curve}"));
            }
            let coord = match curve {
                "nistp256" => 32,
                "nistp384" => 48,
                _ => 66,
            };
            let q = w.string()?;
            if q.len() != 1 + 2 * coord || q[0] != 4 {
                return Err(format!(
                    "the ECDSA point is not an uncompressed {curve} point"
                ));
            }
        }
    }
    w.end()?;
    Ok(PublicKey {
        key_type,
        blob,
        comment,
    })
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An mpint: big-endian, with a zero byte in front when the top bit is set.
fn put_mpint(out: &mut Vec<u8>, be: &[u8]) {
    let trimmed: &[u8] = {
        let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        &be[start..]
    };
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v = Vec::with_capacity(trimmed.len() + 1);
        v.push(0);
        v.extend_from_slice(trimmed);
        put_string(out, &v);
    } else {
        put_string(out, trimmed);
    }
}

/// A new 2048-bit RSA key pair, as CloudStack makes them: the private key in
/// PKCS#1 PEM (what `ssh -i` and CloudStack's clients take) and the public
/// key in OpenSSH's format.
pub fn generate_rsa() -> Result<(String, PublicKey), String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|e| e.to_string())?
        .to_string();
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-rsa");
    put_mpint(&mut blob, &key.e().to_bytes_be());
    put_mpint(&mut blob, &key.n().to_bytes_be());
    Ok((
        pem,
        PublicKey {
            key_type: "ssh-rsa".into(),
            blob,
            comment: None,
        },
    ))
}

/// Filters of listSSHKeyPairs.
#[derive(Debug, Clone, Default)]
pub struct KeyPairFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub fingerprint: Option<String>,
    pub keyword: Option<String>,
    pub page: Option<(u64, u64)>,
}

fn check_name(name: &str) -> SResult<&str> {
    let n = name.trim();
    if n.is_empty() || n.len() > 255 {
        return Err(ServiceError::invalid(
            "Invalid value for parameter name: 1 to 255 characters",
        ));
    }
    Ok(n)
}

impl super::access::GuestAccess {
    async fn keypair_named(&self, owner: &Account, name: &str) -> SResult<Option<SshKeyPair>> {
        Ok(self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", owner.id, name)))
            .await?)
    }

    async fn insert_keypair(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
        key: &PublicKey,
        event: &str,
    ) -> SResult<SshKeyPair> {
        let name = check_name(name)?;
        if self.keypair_named(owner, name).await?.is_some() {
            return Err(ServiceError::invalid(format!(
                "A key pair with name '{name}' already exists for account {}",
                owner.name
            )));
        }
        let fingerprint = key.fingerprint();
        let same: Option<SshKeyPair> = self
            .store
            .first(
                Query::new()
                    .eq(Col::Account, owner.id)
                    .eq(Col::Fingerprint, fingerprint.clone())
                    .and(Cond::Ne(Col::State, "Removed".into())),
            )
            .await?;
        if let Some(other) = same {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter publickey: the account already has this key, as key pair {}",
                other.name
            )));
        }
        let k = SshKeyPair {
            id: self.store.new_id::<SshKeyPair>().await?,
            uuid: new_uuid(),
            version: 1,
            name: name.to_string(),
            public_key: key.openssh(),
            fingerprint,
            account_id: owner.id,
            domain_id: owner.domain_id,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&k);
        self.event(
            &mut tx,
            caller,
            event,
            format!("SSH key pair {} ({})", k.name, k.fingerprint),
            k.account_id,
            k.domain_id,
            Some((&k.uuid, "SSHKeyPair", &k.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(k)
    }

    /// Makes a new key pair for `owner`; returns it with its private key,
    /// which is not kept.
    pub async fn create_ssh_keypair(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
    ) -> SResult<(SshKeyPair, String)> {
        check_name(name)?;
        // Key generation takes a noticeable fraction of a second: off the
        // async workers.
        let (private, public) = tokio::task::spawn_blocking(generate_rsa)
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .map_err(ServiceError::internal)?;
        let k = self
            .insert_keypair(caller, owner, name, &public, "REGISTER.SSH.KEYPAIR")
            .await?;
        Ok((k, private))
    }

    pub async fn register_ssh_keypair(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
        public_key: &str,
    ) -> SResult<SshKeyPair> {
        let key = parse_public_key(public_key.trim()).map_err(|e| {
            ServiceError::invalid(format!("Invalid value for parameter publickey: {e}"))
        })?;
        self.insert_keypair(caller, owner, name, &key, "REGISTER.SSH.KEYPAIR")
            .await
    }

    pub async fn delete_ssh_keypair(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
    ) -> SResult<()> {
        let mut k = self.keypair_named(owner, name).await?.ok_or_else(|| {
            ServiceError::invalid(format!(
                "A key pair with name '{name}' does not exist for account {}",
                owner.name
            ))
        })?;
        k.removed = Some(now());
        let mut tx = Tx::new();
        tx.update(&mut k);
        self.event(
            &mut tx,
            caller,
            "DELETE.SSH.KEYPAIR",
            format!("SSH key pair {} deleted", k.name),
            k.account_id,
            k.domain_id,
            Some((&k.uuid, "SSHKeyPair", &k.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// The named pairs of `owner` (each must exist), in the order given
    /// without repeats.
    pub async fn ssh_keypairs_for(
        &self,
        owner: &Account,
        names: &[String],
    ) -> SResult<Vec<SshKeyPair>> {
        let mut out: Vec<SshKeyPair> = Vec::new();
        for n in names {
            let n = n.trim();
            if n.is_empty() || out.iter().any(|k| k.name == n) {
                continue;
            }
            let k = self.keypair_named(owner, n).await?.ok_or_else(|| {
                ServiceError::invalid(format!(
                    "Invalid value for parameter keypairs: a key pair with name '{n}' was not found for account {}",
                    owner.name
                ))
            })?;
            out.push(k);
        }
        Ok(out)
    }

    /// The key pairs in `scope` that the caller may see.
    pub async fn list_ssh_keypairs(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &KeyPairFilter,
    ) -> SResult<(Vec<SshKeyPair>, u64)> {
        // Key pair names are compared exactly, as CloudStack does.
        let mut q = self
            .named_list_query::<SshKeyPair>(
                caller,
                scope,
                f.id.as_deref(),
                f.name.as_deref().map(|n| (n, false)),
                f.keyword.as_deref(),
            )
            .await?;
        if let Some(fp) = &f.fingerprint {
            q = q.and(Cond::EqNoCase(Col::Fingerprint, fp.clone()));
        }
        q.page = f.page;
        Ok(self.store.list::<SshKeyPair>(&q).await?)
    }

    /// Gives a stopped instance new key pairs of its owner; the guest takes
    /// them at its next start.
    pub async fn reset_ssh_keys(
        &self,
        caller: &Caller,
        vm_uuid: &str,
        names: &[String],
    ) -> SResult<Vm> {
        let vm: Vm = self.owned(caller, "id", vm_uuid).await?;
        if names.iter().all(|n| n.trim().is_empty()) {
            return Err(ServiceError::invalid(
                "Invalid value for parameter keypairs: at least one key pair name is required",
            ));
        }
        if vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; its SSH keys can be reset only while it is Stopped",
                vm.uuid,
                vm.state.as_str()
            )));
        }
        let owner: Account = self
            .load_cached(vm.account_id)
            .await?
            .ok_or_else(|| ServiceError::internal("the instance's account vanished"))?;
        let pairs = self.ssh_keypairs_for(&owner, names).await?;
        let mut vm = vm;
        vm.keypairs = pairs.iter().map(|k| k.name.clone()).collect();
        vm.ssh_public_keys = pairs.iter().map(|k| k.public_key.clone()).collect();
        let mut tx = Tx::new();
        tx.update(&mut vm);
        self.event(
            &mut tx,
            caller,
            "VM.RESETSSHKEY",
            format!(
                "SSH keys of instance {} reset to {}",
                vm.instance_name,
                vm.keypairs.join(",")
            ),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with ssh-keygen; fingerprints from `ssh-keygen -l -E md5 -f`.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIinMqu9rMFOkvOAsqOZ+owuN4xkc0/AG0m7Blr0t9gm test@host";

    #[test]
    fn generated_keys_parse_back_and_fingerprint_consistently() {
        let (pem, public) = generate_rsa().unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
        let line = public.openssh();
        let parsed = parse_public_key(&line).unwrap();
        assert_eq!(parsed.blob, public.blob);
        assert_eq!(parsed.fingerprint(), public.fingerprint());
        assert_eq!(parsed.fingerprint().len(), 47);
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        let ed = parse_public_key(ED25519).unwrap();
        assert_eq!(ed.comment.as_deref(), Some("test@host"));
        assert_eq!(
            ed.fingerprint(),
            "b3:2c:b6:c2:47:ec:09:ed:a2:f7:c0:b5:05:61:94:45"
        );
        assert_eq!(ed.openssh(), ED25519.rsplit_once(' ').unwrap().0);
        for (bad, why) in [
            ("", "empty"),
            ("ssh-dss AAAA", "not one of"),
            ("ssh-ed25519", "no key data"),
            ("ssh-ed25519 !!!", "not base64"),
            ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIIinMqu9rMFOkvOAsqOZ+owuN4xkc0/AG0m7Blr0t9gm", "of type ssh-ed25519"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEIinMqu9rMFOkvOAsqOZ+ow=", "32 bytes"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIinMqu9rMFOkvOAsqOZ+owuN4xkc0/AG0m7Blr0t9gmAA==", "past its end"),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIinMqu9", "ends early"),
        ] {
            let e = parse_public_key(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(parse_public_key(&"x".repeat(MAX_PUBLIC_KEY + 1)).is_err());
    }

    #[test]
    fn mpints_carry_a_sign_byte_when_needed() {
        let mut out = Vec::new();
        put_mpint(&mut out, &[0x00, 0x80, 0x01]);
        assert_eq!(out, vec![0, 0, 0, 3, 0, 0x80, 0x01]);
        out.clear();
        put_mpint(&mut out, &[0x01, 0x00, 0x01]);
        assert_eq!(out, vec![0, 0, 0, 3, 1, 0, 1]);
    }
}
