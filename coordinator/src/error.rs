//! CloudStack error replies: the HTTP status equals `errorcode`, and `cserrorcode`
//! names the Java exception class CloudStack would have thrown.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct ApiError {
    pub code: u16,
    /// `None` for authentication failures, which carry no cserrorcode.
    pub cs_code: Option<u16>,
    pub text: String,
}

/// Placeholder for the command name in texts built below the API layer.
const CMD: &str = "\u{1}cmd\u{1}";

pub const AUTH_TEXT: &str = "unable to verify user credentials and/or request signature";

impl ApiError {
    pub fn new(code: u16, cs_code: u16, text: impl Into<String>) -> Self {
        ApiError {
            code,
            cs_code: Some(cs_code),
            text: text.into(),
        }
    }
    /// 431, InvalidParameterValueException.
    pub fn param(text: impl Into<String>) -> Self {
        Self::new(431, 4350, text)
    }
    /// 431 with CloudStack's plain ServerApiException code.
    pub fn param_plain(text: impl Into<String>) -> Self {
        Self::new(431, 9999, text)
    }
    pub fn unauthorized() -> Self {
        ApiError {
            code: 401,
            cs_code: None,
            text: AUTH_TEXT.into(),
        }
    }
    pub fn not_available(command: &str, address: &str) -> Self {
        ApiError {
            code: 401,
            cs_code: None,
            text: format!(
                "The given command '{command}' either does not exist, is not available for user, or not available from ip address '{address}'."
            ),
        }
    }
    pub fn missing(command: &str, param: &str) -> Self {
        Self::param_plain(format!(
            "Unable to execute API command {} due to missing parameter {}",
            command.to_lowercase(),
            param
        ))
    }
    /// The standard unknown-id error. Code below the API layer does not know the
    /// command name; the dispatcher fills it in (see `with_command`).
    pub fn unknown_id(param: &str, value: &str) -> Self {
        Self::param_plain(format!(
            "Unable to execute API command {CMD} due to invalid value. Invalid parameter {} value={} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
            param,
            value
        ))
    }
    pub fn with_command(mut self, command: &str) -> Self {
        if self.text.contains(CMD) {
            self.text = self.text.replace(CMD, &command.to_lowercase());
        }
        self
    }
    /// 531, PermissionDeniedException.
    pub fn denied(text: impl Into<String>) -> Self {
        Self::new(531, 4365, text)
    }
    /// 530, CloudRuntimeException.
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(530, 4250, text)
    }
    /// 533, InsufficientServerCapacityException.
    pub fn capacity(text: impl Into<String>) -> Self {
        Self::new(533, 4335, text)
    }
    /// 536, ResourceInUseException.
    pub fn in_use(text: impl Into<String>) -> Self {
        Self::new(536, 4375, text)
    }
    /// 534, ResourceUnavailableException.
    pub fn unavailable(text: impl Into<String>) -> Self {
        Self::new(534, 4380, text)
    }

    /// 431 for an operation the instance's state does not allow.
    pub fn state(text: impl Into<String>) -> Self {
        Self::new(431, 4350, text)
    }

    pub fn body(&self) -> Value {
        let mut o = json!({"uuidList": [], "errorcode": self.code, "errortext": self.text});
        if let Some(c) = self.cs_code {
            o["cserrorcode"] = json!(c);
        }
        o
    }
}

impl ApiError {
    /// CloudStack's code for a kind of service failure, with the text.
    pub fn from_kind(kind: crate::service::ErrorKind, text: String) -> Self {
        use crate::service::ErrorKind as K;
        match kind {
            K::Invalid | K::InvalidState => Self::param(text),
            K::Missing | K::NotFound => Self::param_plain(text),
            K::Denied => Self::denied(text),
            K::InUse => Self::in_use(text),
            K::Capacity => Self::capacity(text),
            K::Limit => Self::new(535, 4370, text),
            K::Unavailable => Self::unavailable(text),
            K::Conflict => Self::new(530, 4300, text),
            K::Internal | K::Refused => Self::internal(text),
        }
    }
}

impl From<crate::service::ServiceError> for ApiError {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as S;
        match e {
            S::Missing { command, param } => ApiError::missing(&command, &param),
            S::NotFound { param, value } => ApiError::unknown_id(&param, &value),
            other => ApiError::from_kind(other.kind(), other.text()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(format!("Internal error: {e}"))
    }
}

impl From<crate::service::agent::AgentError> for ApiError {
    fn from(e: crate::service::agent::AgentError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}
