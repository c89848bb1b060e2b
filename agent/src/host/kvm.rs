//! A first look at `/dev/kvm`, the cheap part of telling whether KVM guests
//! can run here: libvirt lists `kvm` among the domain types as soon as the
//! device exists, even where the kernel refuses to create a VM (another
//! hypervisor holds the CPU's virtualisation extensions, nested
//! virtualisation is off).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `KVM_GET_API_VERSION`: `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: u64 = 0xAE00;
/// `KVM_CREATE_VM`: `_IO(KVMIO, 0x01)`.
const KVM_CREATE_VM: u64 = 0xAE01;
/// The only API version there has ever been since Linux 2.6.22.
const KVM_API_VERSION: i32 = 12;

/// What the device says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProbe {
    /// The kernel created (and the probe closed) a VM.
    Works,
    /// KVM cannot run guests here; why.
    Unusable(String),
    /// The device could not be asked (absent here, not accessible to the
    /// agent's user); only a guest can tell.
    Unknown(String),
}

/// Opens `device` (normally `/dev/kvm`), checks the API version and creates
/// and closes an empty VM.
pub fn probe_device(device: &Path) -> DeviceProbe {
    let file = match OpenOptions::new().read(true).write(true).open(device) {
        Ok(f) => f,
        Err(e) => return DeviceProbe::Unknown(format!("opening {}: {e}", device.display())),
    };
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor owned by `file`, which outlives the
    // call; KVM_GET_API_VERSION takes no argument and writes no memory.
    let version = unsafe { libc::ioctl(fd, KVM_GET_API_VERSION as _, 0) };
    if version < 0 {
        return DeviceProbe::Unusable(format!(
            "KVM_GET_API_VERSION on {}: {}",
            device.display(),
            io::Error::last_os_error()
        ));
    }
    if version != KVM_API_VERSION {
        return DeviceProbe::Unusable(format!(
            "{} speaks KVM API version {version}, not {KVM_API_VERSION}",
            device.display()
        ));
    }
    // SAFETY: as above; the argument 0 asks for the default machine type
    // and is passed by value.
    let vm = unsafe { libc::ioctl(fd, KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return DeviceProbe::Unusable(format!(
            "KVM_CREATE_VM on {}: {}",
            device.display(),
            io::Error::last_os_error()
        ));
    }
    // SAFETY: KVM_CREATE_VM returned a new descriptor that nothing else
    // owns; dropping the OwnedFd closes it, which tears the VM down.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    DeviceProbe::Works
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_inconclusive() {
        assert!(matches!(
            probe_device(Path::new("/nonexistent/kvm")),
            DeviceProbe::Unknown(m) if m.contains("/nonexistent/kvm")
        ));
    }

    #[test]
    fn a_device_that_is_not_kvm_is_unusable() {
        // /dev/null opens read-write but knows no KVM ioctl.
        assert!(matches!(
            probe_device(Path::new("/dev/null")),
            DeviceProbe::Unusable(m) if m.contains("KVM_GET_API_VERSION")
        ));
    }
}
