//! orrery-agent: the per-host daemon that runs instances through a hypervisor.

pub mod designer;
pub mod domxml;
