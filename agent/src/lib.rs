//! orrery-agent: the per-host daemon that runs instances through a hypervisor.

pub mod accel;
pub mod backup;
pub mod config;
pub mod configdrive;
pub mod designer;
pub mod domxml;
pub mod enroll;
pub mod gpuassign;
pub mod ha;
pub mod host;
pub mod hypervisor;
pub mod link;
pub mod metadata;
pub mod ops;
pub mod pki;
pub mod state;
pub mod stats;
pub mod storage;
pub mod vmsnap;
