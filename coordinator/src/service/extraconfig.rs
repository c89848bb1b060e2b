//! `extraconfig`: extra libvirt domain XML merged into an instance's
//! definition, as CloudStack takes it for KVM: URL-encoded in the request
//! (decoded once more here), accepted only while the owner's account has
//! `enable.additional.vm.configuration` on, and only made of top-level
//! elements named in `allow.additional.vm.configuration.list.kvm`.
//! Whether the XML is well formed is the host's check (its typed model).

use super::*;

/// Pure: the names of the top-level elements of an XML fragment, or what
/// is wrong with it. Comments and processing instructions are skipped;
/// text between elements must be blank.
pub fn top_level_elements(xml: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        if depth == 0 && !rest[..i].trim().is_empty() {
            return Err("text outside elements".into());
        }
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("an unterminated comment")?;
            rest = &r[end + 3..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<?") {
            let end = r
                .find("?>")
                .ok_or("an unterminated processing instruction")?;
            rest = &r[end + 2..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("an unterminated CDATA section")?;
            rest = &r[end + 3..];
            continue;
        }
        if rest.starts_with("<!") {
            return Err("a document type declaration".into());
        }
        let end = rest.find('>').ok_or("an unterminated tag")?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(closing) = tag.strip_prefix('/') {
            let _ = closing;
            depth = depth
                .checked_sub(1)
                .ok_or("a closing tag without its opening")?;
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if name.is_empty() {
            return Err("a tag without a name".into());
        }
        if depth == 0 {
            names.push(name);
        }
        if !tag.ends_with('/') {
            depth += 1;
        }
    }
    if depth != 0 || !rest.trim().is_empty() {
        return Err("unclosed elements or trailing text".into());
    }
    if names.is_empty() {
        return Err("no elements".into());
    }
    Ok(names)
}

/// Pure: the decoded extraconfig if every element is allowed, else the
/// refusal naming the parameter and the element.
pub fn check(raw: &str, enabled: bool, allowed: &[String]) -> Result<String, String> {
    if !enabled {
        return Err(
            "Invalid value for parameter extraconfig: additional instance configuration is not enabled for this account (enable.additional.vm.configuration)".into(),
        );
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "Invalid value for parameter extraconfig: not UTF-8 once URL-decoded")?
        .into_owned();
    let names = top_level_elements(&decoded)
        .map_err(|e| format!("Invalid value for parameter extraconfig: {e}"))?;
    for n in names {
        if !allowed.iter().any(|a| a == &n) {
            return Err(format!(
                "Invalid value for parameter extraconfig: element {n} is not in allow.additional.vm.configuration.list.kvm"
            ));
        }
    }
    Ok(decoded)
}

impl Service {
    /// Checks (and decodes) an instance's extraconfig for its owner.
    pub(crate) fn check_extraconfig(&self, owner_account: i64, raw: &str) -> SResult<String> {
        let enabled = self
            .setting(
                "enable.additional.vm.configuration",
                &[("account", owner_account)],
            )
            .eq_ignore_ascii_case("true");
        let allowed =
            super::details::names(&self.setting("allow.additional.vm.configuration.list.kvm", &[]));
        check(raw, enabled, &allowed).map_err(ServiceError::invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["memoryBacking".into(), "cputune".into()]
    }

    #[test]
    fn only_listed_top_level_elements_pass() {
        let xml =
            "<memoryBacking><hugepages/></memoryBacking>\n<cputune><shares>10</shares></cputune>";
        assert_eq!(check(xml, true, &allowed()).unwrap(), xml);
        // URL-encoded once more, as clients send it.
        let enc = "%3CmemoryBacking%3E%3Chugepages%2F%3E%3C%2FmemoryBacking%3E";
        assert_eq!(
            check(enc, true, &allowed()).unwrap(),
            "<memoryBacking><hugepages/></memoryBacking>"
        );
        let err = check("<devices><hostdev/></devices>", true, &allowed()).unwrap_err();
        assert!(
            err.contains("parameter extraconfig") && err.contains("devices"),
            "{err}"
        );
        assert!(check(xml, false, &allowed())
            .unwrap_err()
            .contains("not enabled"));
    }

    #[test]
    fn nesting_comments_and_malformed_fragments() {
        assert_eq!(
            top_level_elements("<!-- c --><a x='1'><b><a/></b></a><c/>").unwrap(),
            vec!["a", "c"]
        );
        for bad in [
            "text",
            "<a>",
            "</a>",
            "<a></a>junk",
            "<!DOCTYPE x>",
            "",
            "<a><!-- x",
        ] {
            assert!(top_level_elements(bad).is_err(), "{bad}");
        }
    }
}
