//! Instance naming rules of the specification: host names per RFC 1123 (at most
//! 63 characters, ASCII letters, digits and hyphens, starting with a letter and
//! ending with a letter or digit) and the internal name `i-<account>-<vm>-<suffix>`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the host name is empty")]
    Empty,
    #[error("the host name is longer than 63 characters")]
    TooLong,
    #[error("the host name may contain only ASCII letters a-z, A-Z, digits 0-9 and hyphens")]
    BadCharacter,
    #[error("the host name must start with a letter")]
    BadStart,
    #[error("the host name must end with a letter or a digit")]
    BadEnd,
}

pub fn validate_hostname(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err(NameError::Empty);
    };
    if bytes.len() > 63 {
        return Err(NameError::TooLong);
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    {
        return Err(NameError::BadCharacter);
    }
    if !first.is_ascii_alphabetic() {
        return Err(NameError::BadStart);
    }
    if !last.is_ascii_alphanumeric() {
        return Err(NameError::BadEnd);
    }
    Ok(())
}

/// Names an instance gets, per the specification's `vm.instancename.flag` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNames {
    pub name: String,
    pub display_name: String,
    pub internal_name: String,
}

/// `instance_name` is the global setting `instance.name` (the `<i.n>` of the table).
/// `uuid` is the instance's UUID, used for the generated host name.
pub fn instance_names(
    account_id: i64,
    vm_id: i64,
    uuid: &str,
    user_name: Option<&str>,
    user_display_name: Option<&str>,
    instance_name: &str,
    flag: bool,
) -> InstanceNames {
    let generated = format!("{instance_name}-{uuid}");
    let name = user_name.map(str::to_string).unwrap_or(generated);
    let display_name = user_display_name
        .map(str::to_string)
        .unwrap_or_else(|| name.clone());
    let suffix = match (user_name, flag) {
        (Some(n), true) => n,
        _ => instance_name,
    };
    InstanceNames {
        name,
        display_name,
        internal_name: format!("i-{account_id}-{vm_id}-{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_rules() {
        assert!(validate_hostname("web-1").is_ok());
        assert!(validate_hostname("a").is_ok());
        assert_eq!(validate_hostname(""), Err(NameError::Empty));
        assert_eq!(validate_hostname("1web"), Err(NameError::BadStart));
        assert_eq!(validate_hostname("web-"), Err(NameError::BadEnd));
        assert_eq!(validate_hostname("web_1"), Err(NameError::BadCharacter));
        assert_eq!(validate_hostname("wéb"), Err(NameError::BadCharacter));
        assert!(validate_hostname(&"a".repeat(63)).is_ok());
        assert_eq!(validate_hostname(&"a".repeat(64)), Err(NameError::TooLong));
    }

    // The four columns of the specification's table, in order.
    #[test]
    fn instancename_flag_table() {
        let u = "6f1c";
        let n = instance_names(2, 7, u, Some("web"), Some("Web"), "VM", true);
        assert_eq!((n.name.as_str(), n.display_name.as_str()), ("web", "Web"));
        assert_eq!(n.internal_name, "i-2-7-web");

        let n = instance_names(2, 7, u, None, None, "VM", true);
        assert_eq!(n.name, "VM-6f1c");
        assert_eq!(n.display_name, "VM-6f1c");
        assert_eq!(n.internal_name, "i-2-7-VM");

        let n = instance_names(2, 7, u, Some("web"), Some("Web"), "VM", false);
        assert_eq!(n.name, "web");
        assert_eq!(n.internal_name, "i-2-7-VM");

        let n = instance_names(2, 7, u, None, None, "VM", false);
        assert_eq!(n.name, "VM-6f1c");
        assert_eq!(n.internal_name, "i-2-7-VM");
    }

    #[test]
    fn display_name_defaults_to_name() {
        let n = instance_names(2, 7, "x", Some("db"), None, "VM", false);
        assert_eq!(n.display_name, "db");
    }
}
