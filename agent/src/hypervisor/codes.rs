//! libvirt's error numbers (`virErrorNumber`) that callers of
//! [`Hypervisor`](super::Hypervisor) may need to tell apart, carried in
//! [`HvError::Backend`].
//!
//! They are libvirt's ABI and never change; the fake uses the same numbers
//! so code tested against it sees what it will see against libvirt.

use super::HvError;

/// `VIR_ERR_INTERNAL_ERROR`: libvirt's catch-all, e.g. QEMU exiting while
/// it starts, or a network whose addresses a host interface already has.
pub const INTERNAL_ERROR: i32 = 1;
/// `VIR_ERR_INVALID_ARG`: e.g. a disk target the domain does not have.
pub const INVALID_ARG: i32 = 8;
/// `VIR_ERR_OPERATION_FAILED`
pub const OPERATION_FAILED: i32 = 9;
/// `VIR_ERR_XML_ERROR`
pub const XML_ERROR: i32 = 27;
/// `VIR_ERR_NO_DOMAIN`; mapped to [`HvError::NotFound`], never seen in
/// `Backend`.
pub const NO_DOMAIN: i32 = 42;
/// `VIR_ERR_NO_NETWORK`
pub const NO_NETWORK: i32 = 43;
/// `VIR_ERR_OPERATION_INVALID`: the request does not fit the object's
/// state, e.g. starting a running domain or stopping a stopped one.
pub const OPERATION_INVALID: i32 = 55;
/// `VIR_ERR_OPERATION_TIMEOUT`; mapped to [`HvError::Timeout`].
pub const OPERATION_TIMEOUT: i32 = 68;
/// `VIR_ERR_AGENT_UNRESPONSIVE`: the guest has no guest agent running (or
/// it does not answer), so nothing can be asked of the guest itself.
pub const AGENT_UNRESPONSIVE: i32 = 86;
/// `VIR_ERR_DEVICE_MISSING`: detaching a device the domain does not have.
pub const DEVICE_MISSING: i32 = 99;

impl HvError {
    pub fn backend(code: i32, message: impl Into<String>) -> HvError {
        HvError::Backend {
            code,
            message: message.into(),
        }
    }

    /// libvirt's error number, for [`HvError::Backend`].
    pub fn libvirt_code(&self) -> Option<i32> {
        match self {
            HvError::Backend { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the object was in the wrong state for the request (already
    /// running, not running, ...).
    pub fn is_operation_invalid(&self) -> bool {
        self.libvirt_code() == Some(OPERATION_INVALID)
    }

    /// Whether the guest's own agent was needed and is not there.
    pub fn is_guest_agent_missing(&self) -> bool {
        self.libvirt_code() == Some(AGENT_UNRESPONSIVE)
    }
}
