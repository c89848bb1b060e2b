//! User data: checked as CloudStack checks it (base64, the GET and POST
//! limits, `vm.userdata.max.length`), the user data library (registered
//! content with variables), templates' links with their override policies,
//! and what an instance ends up with.

use super::*;
use base64::Engine;
use orrery_model::VmState;
use std::collections::BTreeMap;

/// Longest base64 user data a GET request may carry (CloudStack: twice
/// 2 KiB), and a POST (512 × 2 KiB).
pub const MAX_GET: usize = 4096;
pub const MAX_POST: usize = 1_048_576;

/// The override policies of a template's linked user data.
pub const POLICIES: &[&str] = &["ALLOWOVERRIDE", "APPEND", "DENYOVERRIDE"];

/// Metadata every instance has; a registered user data must not declare
/// them as its own variables (their values come from the instance).
pub const PREDEFINED: &[&str] = &[
    "availability_zone",
    "availability-zone",
    "cloud_identifier",
    "cloud-identifier",
    "instance_id",
    "instance-id",
    "local_hostname",
    "local-hostname",
    "local_ipv4",
    "local-ipv4",
    "public_hostname",
    "public-hostname",
    "public_ipv4",
    "public-ipv4",
    "service_offering",
    "service-offering",
    "vm_id",
    "vm-id",
];

fn b64() -> base64::engine::GeneralPurpose {
    // Accepts unpadded input as CloudStack's decoder does.
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// Pure: checks user data as given in a request and returns it as padded
/// base64. URL-encoded input is decoded once more (CloudStack clients send
/// it both ways); then it must be base64, shorter than the limit of the
/// request's method, within `max_len` (`vm.userdata.max.length`), and not
/// empty once decoded.
pub fn validate(raw: &str, post: bool, max_len: usize) -> Result<String, String> {
    let mut text = raw.trim().to_string();
    if text.contains('%') {
        text = percent_encoding::percent_decode_str(&text)
            .decode_utf8()
            .map_err(|_| "URL decoding failed".to_string())?
            .into_owned();
    }
    let (limit, method) = if post {
        (MAX_POST, "POST")
    } else {
        (MAX_GET, "GET")
    };
    if text.len() >= limit {
        return Err(format!("too long for an HTTP {method} request"));
    }
    if text.len() > max_len {
        return Err(format!(
            "longer than vm.userdata.max.length ({max_len} characters)"
        ));
    }
    let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = b64()
        .decode(cleaned.as_bytes())
        .map_err(|_| "not base64-encoded".to_string())?;
    if decoded.is_empty() {
        return Err("empty once decoded".into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(decoded))
}

/// Pure: a registered user data's variable names, comma-separated.
pub fn parse_params(raw: Option<&str>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for p in raw.unwrap_or("").split(',').map(str::trim) {
        if p.is_empty() {
            continue;
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "variable name {p} may use letters, digits, _ and - only"
            ));
        }
        if PREDEFINED.contains(&p) {
            return Err(format!(
                "{p} is instance metadata, not a variable to declare"
            ));
        }
        if !out.iter().any(|x| x == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

/// The MIME type cloud-init gives a part by its first line.
fn part_type(text: &str) -> &'static str {
    let first = text.lines().next().unwrap_or("").trim();
    if first.starts_with("#cloud-config") {
        "text/cloud-config"
    } else if first.starts_with("#cloud-boothook") {
        "text/cloud-boothook"
    } else if first.starts_with("#include") {
        "text/x-include-url"
    } else if first.starts_with("#part-handler") {
        "text/part-handler"
    } else if first.starts_with("#!") {
        "text/x-shellscript"
    } else {
        "text/plain"
    }
}

/// The parts of user data: those of a multipart message, else the whole
/// as one part of the type its first line says.
fn parts(text: &str) -> Vec<(String, String)> {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("content-type: multipart/") {
        if let Some(boundary) = text
            .lines()
            .next()
            .and_then(|l| l.split("boundary=").nth(1))
            .map(|b| b.trim().trim_matches('"').to_string())
        {
            let sep = format!("--{boundary}");
            let mut out = Vec::new();
            for chunk in text.split(&sep).skip(1) {
                if chunk.starts_with("--") {
                    break;
                }
                let chunk = chunk.trim_start_matches(['\r', '\n']);
                let (head, body) = chunk
                    .split_once("\n\n")
                    .or_else(|| chunk.split_once("\r\n\r\n"))
                    .unwrap_or(("", chunk));
                let ty = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-type:")
                            .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
                    })
                    .unwrap_or_else(|| part_type(body).to_string());
                out.push((ty, body.trim_end_matches(['\r', '\n']).to_string()));
            }
            return out;
        }
    }
    vec![(part_type(text).to_string(), text.to_string())]
}

/// Pure: `extra` appended to `base` (both base64) as cloud-init reads it: a
/// multipart/mixed message with the base's parts first, then the extra's.
pub fn append(base: &str, extra: &str) -> Result<String, String> {
    let dec = |s: &str| {
        b64()
            .decode(s.as_bytes())
            .map_err(|_| "not base64-encoded".to_string())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let all: Vec<(String, String)> = parts(&dec(base)?)
        .into_iter()
        .chain(parts(&dec(extra)?))
        .collect();
    let boundary = "//orrery-userdata//";
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n");
    for (i, (ty, body)) in all.iter().enumerate() {
        out.push_str(&format!(
            "\n--{boundary}\nContent-Type: {ty}; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\nContent-Disposition: attachment; filename=\"part-{i}\"\n\n{body}\n"
        ));
    }
    out.push_str(&format!("\n--{boundary}--\n"));
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// What a request says about an instance's user data.
#[derive(Debug, Clone, Default)]
pub struct UserDataRequest {
    /// `userdata`, as sent.
    pub userdata: Option<String>,
    /// `userdataid`.
    pub userdata_id: Option<String>,
    /// `userdatadetails`: values of the registered user data's variables.
    pub details: BTreeMap<String, String>,
    /// The request came as a POST.
    pub post: bool,
}

impl UserDataRequest {
    pub fn is_empty(&self) -> bool {
        self.userdata.is_none() && self.userdata_id.is_none() && self.details.is_empty()
    }
}

/// What an instance ends up with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub userdata: Option<String>,
    pub userdata_id: Option<i64>,
    pub details: BTreeMap<String, String>,
}

/// Filters of listUserData.
#[derive(Debug, Clone, Default)]
pub struct UserDataFilter {
    pub id: Option<String>,
    pub name: Option<String>,
    pub keyword: Option<String>,
    pub page: Option<(u64, u64)>,
}

impl super::access::GuestAccess {
    fn userdata_max(&self) -> usize {
        self.setting_i64("vm.userdata.max.length")
            .clamp(1, MAX_POST as i64) as usize
    }

    /// Checks `userdata` of a request (431 naming the parameter).
    pub fn check_userdata(&self, raw: &str, post: bool) -> SResult<String> {
        validate(raw, post, self.userdata_max()).map_err(|e| {
            ServiceError::invalid(format!("Invalid value for parameter userdata: {e}"))
        })
    }

    pub async fn register_userdata(
        &self,
        caller: &Caller,
        owner: &Account,
        name: &str,
        userdata: &str,
        params: Option<&str>,
        post: bool,
    ) -> SResult<UserData> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ServiceError::invalid(
                "Invalid value for parameter name: 1 to 255 characters",
            ));
        }
        let content = self.check_userdata(userdata, post)?;
        let params = parse_params(params).map_err(|e| {
            ServiceError::invalid(format!("Invalid value for parameter params: {e}"))
        })?;
        let dup: Option<UserData> = self
            .store
            .first(Query::new().eq(Col::Ukey, format!("{}/{}", owner.id, name)))
            .await?;
        if dup.is_some() {
            return Err(ServiceError::invalid(format!(
                "A user data with name {name} already exists for account {}",
                owner.name
            )));
        }
        let u = UserData {
            id: self.store.new_id::<UserData>().await?,
            uuid: new_uuid(),
            version: 1,
            name: name.to_string(),
            userdata: content,
            params,
            account_id: owner.id,
            domain_id: owner.domain_id,
            created: now(),
            removed: None,
        };
        let mut tx = Tx::new();
        tx.insert(&u);
        self.event(
            &mut tx,
            caller,
            "REGISTER.USER.DATA",
            format!("User data {} registered", u.name),
            u.account_id,
            u.domain_id,
            Some((&u.uuid, "UserData", &u.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(u)
    }

    pub async fn list_userdata(
        &self,
        caller: &Caller,
        scope: &scope::ListScope,
        f: &UserDataFilter,
    ) -> SResult<(Vec<UserData>, u64)> {
        let mut q = self
            .named_list_query::<UserData>(
                caller,
                scope,
                f.id.as_deref(),
                f.name.as_deref().map(|n| (n, false)),
                f.keyword.as_deref(),
            )
            .await?;
        q.page = f.page;
        Ok(self.store.list::<UserData>(&q).await?)
    }

    /// Deletes a registered user data that no instance or template uses.
    pub async fn delete_userdata(&self, caller: &Caller, uuid: &str) -> SResult<()> {
        let mut u: UserData = self.owned(caller, "id", uuid).await?;
        let vms: Vec<Vm> = self
            .store
            .all(Query::new().eq(Col::Account, u.account_id))
            .await?;
        if let Some(vm) = vms
            .iter()
            .find(|v| v.removed.is_none() && v.userdata_id == Some(u.id))
        {
            return Err(ServiceError::in_use(format!(
                "User data {} is in use by instance {}",
                u.name, vm.uuid
            )));
        }
        let templates: Vec<Template> = self.store.all(Query::new()).await?;
        if let Some(t) = templates
            .iter()
            .find(|t| t.removed.is_none() && t.userdata_id == Some(u.id))
        {
            return Err(ServiceError::in_use(format!(
                "User data {} is linked to template {}",
                u.name, t.uuid
            )));
        }
        u.removed = Some(now());
        let mut tx = Tx::new();
        tx.update(&mut u);
        self.event(
            &mut tx,
            caller,
            "DELETE.USER.DATA",
            format!("User data {} deleted", u.name),
            u.account_id,
            u.domain_id,
            Some((&u.uuid, "UserData", &u.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Links a registered user data to a template (or unlinks with `None`).
    /// Only the template's owner (or an admin over it) may.
    pub async fn link_userdata(
        &self,
        caller: &Caller,
        template_uuid: &str,
        param: &str,
        userdata_uuid: Option<&str>,
        policy: Option<&str>,
    ) -> SResult<Template> {
        let mut t: Template = self.owned(caller, param, template_uuid).await?;
        match userdata_uuid {
            Some(id) => {
                let u: UserData = self.owned(caller, "userdataid", id).await?;
                let policy = match policy {
                    None => "ALLOWOVERRIDE".to_string(),
                    Some(p) => POLICIES
                        .iter()
                        .find(|x| x.eq_ignore_ascii_case(p.trim()))
                        .map(|x| x.to_string())
                        .ok_or_else(|| {
                            ServiceError::invalid(format!(
                                "Invalid value for parameter userdatapolicy: {p}; valid values are {}",
                                POLICIES.join(", ")
                            ))
                        })?,
                };
                t.userdata_id = Some(u.id);
                t.userdata_policy = Some(policy);
            }
            None => {
                t.userdata_id = None;
                t.userdata_policy = None;
            }
        }
        let mut tx = Tx::new();
        tx.update(&mut t);
        self.store.commit(tx.ops).await?;
        Ok(t)
    }

    /// What an instance of `owner` from `template` gets from `req` under the
    /// template's link and policy. `current` is what it has now (updates and
    /// resets keep what the request leaves out).
    pub async fn resolve_userdata(
        &self,
        caller: &Caller,
        owner: &Account,
        template: Option<&Template>,
        req: &UserDataRequest,
    ) -> SResult<Resolved> {
        if req.userdata.is_some() && req.userdata_id.is_some() {
            return Err(ServiceError::invalid(
                "Invalid value for parameter userdata: userdata and userdataid are mutually exclusive",
            ));
        }
        let own_text = match &req.userdata {
            Some(u) => Some(self.check_userdata(u, req.post)?),
            None => None,
        };
        let own_reg: Option<UserData> = match &req.userdata_id {
            Some(id) => {
                let u: UserData = self.owned(caller, "userdataid", id).await?;
                if u.account_id != owner.id {
                    return Err(ServiceError::invalid(format!(
                        "Invalid value for parameter userdataid: user data {id} belongs to another account than the instance"
                    )));
                }
                Some(u)
            }
            None => None,
        };
        let linked: Option<(UserData, String)> = match template.and_then(|t| t.userdata_id) {
            Some(id) => self.store.load::<UserData>(id).await?.map(|u| {
                let policy = template
                    .and_then(|t| t.userdata_policy.clone())
                    .unwrap_or_else(|| "ALLOWOVERRIDE".into());
                (u, policy)
            }),
            None => None,
        };
        let given = own_text.is_some() || own_reg.is_some();
        // The registered user data whose variables the details fill.
        let (mut userdata, mut userdata_id, vars) = match (&linked, given) {
            (Some((_, p)), true) if p == "DENYOVERRIDE" => {
                return Err(ServiceError::invalid(
                    "Invalid value for parameter userdata: the template's user data policy is DENYOVERRIDE; it cannot be overridden or appended to",
                ))
            }
            (Some((u, _)), false) => (Some(u.userdata.clone()), Some(u.id), u.params.clone()),
            _ => (None, None, Vec::new()),
        };
        if given {
            let (text, id, params) = match (&own_text, &own_reg) {
                (Some(t), _) => (t.clone(), None, Vec::new()),
                (None, Some(u)) => (u.userdata.clone(), Some(u.id), u.params.clone()),
                (None, None) => unreachable!("given"),
            };
            match &linked {
                Some((base, p)) if p == "APPEND" => {
                    userdata = Some(append(&base.userdata, &text).map_err(ServiceError::invalid)?);
                    userdata_id = id.or(Some(base.id));
                    let mut all = base.params.clone();
                    all.extend(params);
                    return self.finish(userdata, userdata_id, all, &req.details);
                }
                _ => {
                    userdata = Some(text);
                    userdata_id = id;
                    return self.finish(userdata, userdata_id, params, &req.details);
                }
            }
        }
        self.finish(userdata, userdata_id, vars, &req.details)
    }

    /// Checks the details against the variables: each one declared must be
    /// given, and none other.
    fn finish(
        &self,
        userdata: Option<String>,
        userdata_id: Option<i64>,
        vars: Vec<String>,
        details: &BTreeMap<String, String>,
    ) -> SResult<Resolved> {
        if let Some(extra) = details.keys().find(|k| !vars.contains(k)) {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter userdatadetails: {extra} is not a variable of the user data (its variables: {})",
                if vars.is_empty() { "none".to_string() } else { vars.join(", ") }
            )));
        }
        if let Some(missing) = vars.iter().find(|v| !details.contains_key(*v)) {
            return Err(ServiceError::invalid(format!(
                "Invalid value for parameter userdatadetails: a value for variable {missing} is required"
            )));
        }
        Ok(Resolved {
            userdata,
            userdata_id,
            details: details.clone(),
        })
    }

    /// Replaces a stopped instance's user data.
    pub async fn reset_userdata(
        &self,
        caller: &Caller,
        vm_uuid: &str,
        req: &UserDataRequest,
    ) -> SResult<Vm> {
        let mut vm: Vm = self.owned(caller, "id", vm_uuid).await?;
        if vm.state != VmState::Stopped {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; its user data can be reset only while it is Stopped",
                vm.uuid,
                vm.state.as_str()
            )));
        }
        let owner: Account = self
            .load_cached(vm.account_id)
            .await?
            .ok_or_else(|| ServiceError::internal("the instance's account vanished"))?;
        let template: Option<Template> = match vm.template_id {
            Some(id) => self.load_cached(id).await?,
            None => None,
        };
        let r = self
            .resolve_userdata(caller, &owner, template.as_ref(), req)
            .await?;
        vm.userdata = r.userdata;
        vm.userdata_id = r.userdata_id;
        vm.userdata_details = r.details;
        let mut tx = Tx::new();
        tx.update(&mut vm);
        self.event(
            &mut tx,
            caller,
            "VM.RESETUSERDATA",
            format!("User data of instance {} reset", vm.instance_name),
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

    fn enc(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn dec(s: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
    }

    #[test]
    fn user_data_is_checked_as_cloudstack_checks_it() {
        assert_eq!(validate("aGk", false, 32768).unwrap(), "aGk=");
        assert_eq!(validate("aGk%3D", false, 32768).unwrap(), "aGk=");
        assert!(validate("not base64!", false, 32768)
            .unwrap_err()
            .contains("base64"));
        assert!(validate("", false, 32768).unwrap_err().contains("empty"));
        let big = enc(&"x".repeat(3100));
        assert!(big.len() >= MAX_GET);
        assert!(validate(&big, false, 32768).unwrap_err().contains("GET"));
        assert!(validate(&big, true, 32768).is_ok());
        assert!(validate(&big, true, 4000)
            .unwrap_err()
            .contains("vm.userdata.max.length"));
    }

    #[test]
    fn params_refuse_predefined_and_odd_names() {
        assert_eq!(
            parse_params(Some("a, b,a,,c-d")).unwrap(),
            ["a", "b", "c-d"]
        );
        assert!(parse_params(Some("instance_id"))
            .unwrap_err()
            .contains("metadata"));
        assert!(parse_params(Some("a b")).is_err());
        assert!(parse_params(None).unwrap().is_empty());
    }

    #[test]
    fn appending_makes_one_multipart_message_in_order() {
        let base = enc("#cloud-config\npackage_upgrade: true\n");
        let extra = enc("#!/bin/sh\necho hi\n");
        let out = dec(&append(&base, &extra).unwrap());
        assert!(out.starts_with("Content-Type: multipart/mixed"), "{out}");
        let cfg = out.find("text/cloud-config").unwrap();
        let sh = out.find("text/x-shellscript").unwrap();
        assert!(cfg < sh, "{out}");
        assert!(out.contains("package_upgrade: true") && out.contains("echo hi"));
        // Appending to a multipart message keeps its parts.
        let again = dec(&append(&enc(&out), &enc("#cloud-config\nhostname: x\n")).unwrap());
        assert_eq!(again.matches("Content-Type: text/").count(), 3, "{again}");
        assert!(again.ends_with("--//orrery-userdata//--\n"));
    }
}
