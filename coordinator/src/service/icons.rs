//! Resource icons: the small images CloudStack's web UI shows beside a
//! resource. Anyone who may change a resource may set or remove its icon;
//! anyone who may see it sees the icon.

use super::*;
use base64::Engine;

/// The largest image accepted, decoded.
pub const MAX_ICON_BYTES: usize = 256 * 1024;

/// The resource types icons can be set on, as CloudStack names them.
pub const TYPES: &[&str] = &[
    "VirtualMachine",
    "Template",
    "ISO",
    "Volume",
    "Zone",
    "Account",
    "Domain",
];

/// Pure: the canonical type name, or an error naming the parameter.
pub fn resource_type(raw: &str) -> SResult<&'static str> {
    let t = raw.trim();
    if t.eq_ignore_ascii_case("UserVm") {
        return Ok("VirtualMachine");
    }
    TYPES
        .iter()
        .find(|x| x.eq_ignore_ascii_case(t))
        .copied()
        .ok_or_else(|| {
            ServiceError::invalid(format!(
                "Invalid value for parameter resourcetype: {t}; icons can be set on {}",
                TYPES.join(", ")
            ))
        })
}

/// Pure: checks that `b64` is an image (PNG, JPEG, GIF, WebP or SVG) of at
/// most [`MAX_ICON_BYTES`]; returns it normalised.
pub fn check_image(b64: &str) -> Result<String, String> {
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| "not base64-encoded".to_string())?;
    if bytes.is_empty() || bytes.len() > MAX_ICON_BYTES {
        return Err(format!(
            "an image of 1 to {MAX_ICON_BYTES} bytes is required"
        ));
    }
    let head = &bytes[..bytes.len().min(256)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let image = head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(b"\xff\xd8\xff")
        || head.starts_with(b"GIF87a")
        || head.starts_with(b"GIF89a")
        || (head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP")
        || text.trim_start().starts_with("<svg")
        || (text.trim_start().starts_with("<?xml") && text.contains("<svg"));
    if !image {
        return Err("not a PNG, JPEG, GIF, WebP or SVG image".into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

impl Context {
    /// The owner (account, domain) of a resource the caller may change.
    async fn icon_target(&self, caller: &Caller, ty: &str, uuid: &str) -> SResult<(i64, i64)> {
        let p = "resourceids";
        Ok(match ty {
            "VirtualMachine" => {
                let v: Vm = self.owned(caller, p, uuid).await?;
                (v.account_id, v.domain_id)
            }
            "Template" | "ISO" => {
                let t: Template = self.owned(caller, p, uuid).await?;
                (t.account_id, t.domain_id)
            }
            "Volume" => {
                let v: Volume = self.owned(caller, p, uuid).await?;
                (v.account_id, v.domain_id)
            }
            "Zone" => {
                let _: Zone = self.by_uuid(p, uuid).await?;
                if !caller.is_root_admin() {
                    return Err(ServiceError::not_found(p, uuid));
                }
                (caller.account.id, caller.domain.id)
            }
            "Account" => {
                let a: Account = self.by_uuid(p, uuid).await?;
                let path = self.domain_path(a.domain_id).await?;
                let own = a.id == caller.account.id;
                if a.removed.is_some()
                    || !(own || (caller.is_admin() && caller.can_access(a.id, &path)))
                {
                    return Err(ServiceError::not_found(p, uuid));
                }
                (a.id, a.domain_id)
            }
            _ => {
                let d: Domain = self.by_uuid(p, uuid).await?;
                let path = self.domain_path(d.id).await?;
                if !caller.is_admin() || !caller.can_access(-1, &path) {
                    return Err(ServiceError::not_found(p, uuid));
                }
                (caller.account.id, d.id)
            }
        })
    }

    async fn icon_of(&self, ty: &str, uuid: &str) -> SResult<Option<ResourceIcon>> {
        Ok(self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{ty}/{uuid}")))
            .await?)
    }

    /// Sets the icon of each resource (all checked before any is written).
    pub async fn upload_icons(
        &self,
        caller: &Caller,
        ty: &str,
        uuids: &[String],
        image: &str,
    ) -> SResult<()> {
        let ty = resource_type(ty)?;
        let image = check_image(image).map_err(|e| {
            ServiceError::invalid(format!("Invalid value for parameter base64image: {e}"))
        })?;
        if uuids.is_empty() {
            return Err(ServiceError::invalid(
                "Invalid value for parameter resourceids: at least one resource is required",
            ));
        }
        let mut tx = Tx::new();
        for u in uuids {
            let (account_id, domain_id) = self.icon_target(caller, ty, u).await?;
            match self.icon_of(ty, u).await? {
                Some(mut i) => {
                    i.image = image.clone();
                    tx.update(&mut i);
                }
                None => {
                    tx.insert(&ResourceIcon {
                        id: self.store.new_id::<ResourceIcon>().await?,
                        uuid: new_uuid(),
                        version: 1,
                        resource_type: ty.to_string(),
                        resource_uuid: u.clone(),
                        image: image.clone(),
                        account_id,
                        domain_id,
                        created: now(),
                    });
                }
            }
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    pub async fn delete_icons(&self, caller: &Caller, ty: &str, uuids: &[String]) -> SResult<()> {
        let ty = resource_type(ty)?;
        let mut tx = Tx::new();
        for u in uuids {
            self.icon_target(caller, ty, u).await?;
            if let Some(i) = self.icon_of(ty, u).await? {
                tx.delete::<ResourceIcon>(i.id);
            }
        }
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// The icons of the named resources the caller may see (others are
    /// left out, as if they had none).
    pub async fn list_icons(
        &self,
        caller: &Caller,
        ty: &str,
        uuids: &[String],
    ) -> SResult<Vec<ResourceIcon>> {
        let ty = resource_type(ty)?;
        let mut out = Vec::new();
        for u in uuids {
            if self.icon_target(caller, ty, u).await.is_err() && ty != "Zone" {
                continue;
            }
            if let Some(i) = self.icon_of(ty, u).await? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// The record id of a resource's icon, for removing it with the
    /// resource.
    pub(crate) async fn icon_id(&self, ty: &str, uuid: &str) -> SResult<Option<i64>> {
        Ok(self.icon_of(ty, uuid).await?.map(|i| i.id))
    }

    /// A resource's icon image, for `showicon=true` on lists.
    pub async fn icon_image(&self, ty: &str, uuid: &str) -> SResult<Option<String>> {
        Ok(self.icon_of(ty, uuid).await?.map(|i| i.image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_are_icons() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
        assert_eq!(check_image(&png).unwrap(), png);
        let svg = base64::engine::general_purpose::STANDARD.encode("<svg xmlns='x'/>");
        assert!(check_image(&svg).is_ok());
        let text = base64::engine::general_purpose::STANDARD.encode("hello");
        assert!(check_image(&text).unwrap_err().contains("image"));
        assert!(check_image("!!").unwrap_err().contains("base64"));
        let big = base64::engine::general_purpose::STANDARD
            .encode([b"\x89PNG\r\n\x1a\n".as_slice(), &vec![0u8; MAX_ICON_BYTES]].concat());
        assert!(check_image(&big).is_err());
        assert_eq!(resource_type("uservm").unwrap(), "VirtualMachine");
        assert!(resource_type("Network").is_err());
    }
}
