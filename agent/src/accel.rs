//! Which domain types this host really offers. libvirt lists `kvm` wherever
//! `/dev/kvm` exists, yet on some hosts (nested virtualisation that lacks
//! what QEMU asks of it) every KVM guest aborts as it starts, so every
//! deployment would fail with QEMU's internal error. The agent therefore
//! tries KVM once at start ([`crate::hypervisor::Hypervisor::probe_kvm`])
//! and, when that fails, leaves `kvm` out of the types the designer chooses
//! from, so guests run under software emulation instead.
//!
//! Pure: the probe's outcome comes in as a value.

/// The outcome of the decision, also reported in the host's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accelerator {
    /// The domain types the designer may choose from.
    pub domain_types: Vec<String>,
    /// Whether a KVM guest started; None when no probe ran.
    pub kvm_usable: Option<bool>,
    /// What the probe found ("ok" or why KVM failed), or why none ran.
    pub kvm_probe: String,
    /// For the log, when the host cannot do what its capabilities claim.
    pub warning: Option<String>,
}

const KVM: &str = "kvm";
const QEMU: &str = "qemu";

/// Whether KVM must be tried: the host offers it and the configuration
/// does not choose a type (a forced type is the operator's decision, and a
/// forced `qemu` is how to skip the probe).
pub fn needs_probe(offered: &[String], forced: Option<&str>) -> bool {
    forced.is_none() && offered.iter().any(|t| t == KVM)
}

/// The effective domain types from what the host offers, the configured
/// type and the probe's outcome (None when [`needs_probe`] said no probe
/// was needed).
pub fn decide(
    offered: &[String],
    forced: Option<&str>,
    probe: Option<Result<(), String>>,
) -> Accelerator {
    let unchanged = |kvm_usable, kvm_probe: String| Accelerator {
        domain_types: offered.to_vec(),
        kvm_usable,
        kvm_probe,
        warning: None,
    };
    if let Some(forced) = forced {
        return unchanged(
            None,
            format!("not probed: domain_type is set to {forced:?}"),
        );
    }
    if !offered.iter().any(|t| t == KVM) {
        return unchanged(None, "not probed: the host does not offer kvm".to_string());
    }
    let reason = match probe {
        None => return unchanged(None, "not probed".to_string()),
        Some(Ok(())) => return unchanged(Some(true), "ok".to_string()),
        Some(Err(reason)) => reason,
    };
    if offered.iter().any(|t| t == QEMU) {
        Accelerator {
            domain_types: offered.iter().filter(|t| *t != KVM).cloned().collect(),
            kvm_usable: Some(false),
            warning: Some(format!(
                "the host offers KVM but a KVM guest did not start ({reason}); guests will \
                 run under software emulation (qemu). Set domain_type = \"qemu\" in the \
                 agent's config to skip this check, or \"kvm\" to use KVM regardless"
            )),
            kvm_probe: reason,
        }
    } else {
        Accelerator {
            domain_types: offered.to_vec(),
            kvm_usable: Some(false),
            warning: Some(format!(
                "the host offers KVM but a KVM guest did not start ({reason}), and there is \
                 no software emulation (qemu) to fall back to: guests will fail to start"
            )),
            kvm_probe: reason,
        }
    }
}

/// A hypervisor's message on one line: QEMU's errors arrive as several.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn probes_only_when_kvm_is_offered_and_nothing_is_forced() {
        assert!(needs_probe(&types(&["qemu", "kvm"]), None));
        assert!(!needs_probe(&types(&["qemu", "kvm"]), Some("qemu")));
        assert!(!needs_probe(&types(&["qemu", "kvm"]), Some("kvm")));
        assert!(!needs_probe(&types(&["qemu"]), None));
        assert!(!needs_probe(&types(&["test"]), None));
    }

    #[test]
    fn a_working_kvm_changes_nothing() {
        let a = decide(&types(&["qemu", "kvm"]), None, Some(Ok(())));
        assert_eq!(a.domain_types, types(&["qemu", "kvm"]));
        assert_eq!(a.kvm_usable, Some(true));
        assert_eq!(a.kvm_probe, "ok");
        assert_eq!(a.warning, None);
    }

    #[test]
    fn a_failing_kvm_falls_back_to_emulation_with_a_warning() {
        let a = decide(
            &types(&["qemu", "kvm"]),
            None,
            Some(Err("failed to set MSR 0x10a".to_string())),
        );
        assert_eq!(a.domain_types, types(&["qemu"]));
        assert_eq!(a.kvm_usable, Some(false));
        assert_eq!(a.kvm_probe, "failed to set MSR 0x10a");
        let w = a.warning.unwrap();
        assert!(w.contains("failed to set MSR 0x10a"), "{w}");
        assert!(w.contains("software emulation"), "{w}");
    }

    #[test]
    fn without_emulation_kvm_stays_and_the_warning_says_starts_will_fail() {
        let a = decide(&types(&["kvm"]), None, Some(Err("no".to_string())));
        assert_eq!(a.domain_types, types(&["kvm"]));
        assert_eq!(a.kvm_usable, Some(false));
        assert!(a.warning.unwrap().contains("will fail"));
    }

    #[test]
    fn a_forced_type_is_left_alone() {
        for forced in ["kvm", "qemu"] {
            // Even a failed probe (which the agent does not run when a type
            // is forced) does not override the operator.
            let a = decide(
                &types(&["qemu", "kvm"]),
                Some(forced),
                Some(Err("x".to_string())),
            );
            assert_eq!(a.domain_types, types(&["qemu", "kvm"]));
            assert_eq!(a.kvm_usable, None);
            assert!(a.kvm_probe.contains(forced), "{}", a.kvm_probe);
            assert_eq!(a.warning, None);
        }
    }

    #[test]
    fn hosts_without_kvm_are_not_probed() {
        let a = decide(&types(&["qemu"]), None, None);
        assert_eq!(a.domain_types, types(&["qemu"]));
        assert_eq!(a.kvm_usable, None);
        assert!(a.kvm_probe.contains("does not offer kvm"));
    }

    #[test]
    fn messages_fold_to_one_line() {
        assert_eq!(
            one_line("internal error: qemu closed:\n a: x\n\tb: y\n"),
            "internal error: qemu closed: a: x b: y"
        );
    }
}
