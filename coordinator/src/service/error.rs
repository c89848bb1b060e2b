//! The service layer's errors. They say what went wrong in the service's own
//! terms; `api/` alone turns them into CloudStack's error codes and texts.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What kind of failure, for callers that decide by kind (the wire layer's
/// codes, a job's stored outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A value the request gave is wrong.
    Invalid,
    /// A required value is missing.
    Missing,
    /// An id that names nothing the caller may see.
    NotFound,
    /// The caller may not do this.
    Denied,
    /// The resource's state does not allow the operation.
    InvalidState,
    /// The resource is in use.
    InUse,
    /// No host can take it.
    Capacity,
    /// A pool or limit is exhausted (addresses, for instance).
    Limit,
    /// A host or dependency is not available now.
    Unavailable,
    /// Changed concurrently; a retry may work.
    Conflict,
    /// Refused as things stand (a per-resource maximum reached, a rule of
    /// the feature), where CloudStack answers with its generic runtime
    /// error rather than a parameter or resource-limit error.
    Refused,
    /// A fault of ours.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("missing parameter {param}")]
    Missing { command: String, param: String },
    #[error("Invalid parameter {param} value={value}: no such resource")]
    NotFound { param: String, value: String },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Capacity(String),
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("{message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl ServiceError {
    /// A wrong value; the text names the parameter.
    pub fn invalid(text: impl Into<String>) -> Self {
        ServiceError::Invalid(text.into())
    }
    pub fn missing(command: &str, param: &str) -> Self {
        ServiceError::Missing {
            command: command.to_string(),
            param: param.to_string(),
        }
    }
    /// An id that resolves to nothing the caller may see: unknown ids and
    /// other tenants' ids look the same.
    pub fn not_found(param: &str, value: &str) -> Self {
        ServiceError::NotFound {
            param: param.to_string(),
            value: value.to_string(),
        }
    }
    pub fn denied(text: impl Into<String>) -> Self {
        ServiceError::Denied(text.into())
    }
    pub fn state(text: impl Into<String>) -> Self {
        ServiceError::InvalidState(text.into())
    }
    pub fn in_use(text: impl Into<String>) -> Self {
        ServiceError::InUse(text.into())
    }
    pub fn capacity(text: impl Into<String>) -> Self {
        ServiceError::Capacity(text.into())
    }
    pub fn limit(text: impl Into<String>) -> Self {
        ServiceError::Limit(text.into())
    }
    pub fn unavailable(text: impl Into<String>) -> Self {
        ServiceError::Unavailable(text.into())
    }
    pub fn conflict(text: impl Into<String>) -> Self {
        ServiceError::Conflict(text.into())
    }
    pub fn refused(text: impl Into<String>) -> Self {
        ServiceError::Refused(text.into())
    }
    pub fn internal(text: impl Into<String>) -> Self {
        ServiceError::Internal {
            message: text.into(),
            source: None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Invalid(_) => ErrorKind::Invalid,
            ServiceError::Missing { .. } => ErrorKind::Missing,
            ServiceError::NotFound { .. } => ErrorKind::NotFound,
            ServiceError::Denied(_) => ErrorKind::Denied,
            ServiceError::InvalidState(_) => ErrorKind::InvalidState,
            ServiceError::InUse(_) => ErrorKind::InUse,
            ServiceError::Capacity(_) => ErrorKind::Capacity,
            ServiceError::Limit(_) => ErrorKind::Limit,
            ServiceError::Unavailable(_) => ErrorKind::Unavailable,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Refused(_) => ErrorKind::Refused,
            ServiceError::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// The message, for logs and stored job outcomes.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl ServiceError {
    /// Whether this is the store refusing a second record of `kind` with the
    /// same unique key (another coordinator took it first).
    pub fn is_duplicate(&self, kind: crate::store::Kind) -> bool {
        match self {
            ServiceError::Internal {
                source: Some(s), ..
            } => matches!(
                s.downcast_ref::<crate::store::StoreError>(),
                Some(crate::store::StoreError::Duplicate(k, _)) if *k == kind
            ),
            _ => false,
        }
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::Internal {
            message: format!("Internal error: {e}"),
            source: Some(Arc::new(e)),
        }
    }
}

impl From<super::agent::AgentError> for ServiceError {
    fn from(e: super::agent::AgentError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<crate::store::stats::StatsStoreError> for ServiceError {
    fn from(e: crate::store::stats::StatsStoreError) -> Self {
        ServiceError::Internal {
            message: format!("Statistics store error: {e}"),
            source: Some(Arc::new(e)),
        }
    }
}

/// A job's failure as stored with the job: the kind and the text, so the
/// wire layer can give it CloudStack's code when the job is queried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub error: ErrorKind,
    pub errortext: String,
}

impl From<&ServiceError> for JobFailure {
    fn from(e: &ServiceError) -> Self {
        JobFailure {
            error: e.kind(),
            errortext: e.text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, StoreError};

    #[test]
    fn a_duplicate_from_the_store_is_recognised_by_kind() {
        let e = ServiceError::from(StoreError::Duplicate(Kind::Nic, "1/10.0.0.5".into()));
        assert!(e.is_duplicate(Kind::Nic));
        assert!(!e.is_duplicate(Kind::Vm));
        assert!(!ServiceError::internal("duplicate").is_duplicate(Kind::Nic));
        assert!(!ServiceError::from(StoreError::Conflict(Kind::Nic, 1)).is_duplicate(Kind::Nic));
    }
}
