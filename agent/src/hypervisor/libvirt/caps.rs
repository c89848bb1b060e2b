//! Reads libvirt's capabilities (`virConnectGetCapabilities`) and domain
//! capabilities (`virConnectGetDomainCapabilities`) into the designer's
//! [`HostFacts`].
//!
//! Only what the designer decides on is read; everything else in these
//! large documents is skipped.

use serde::Deserialize;

use crate::designer::{Firmware, HostFacts};
use crate::host::FirmwareDescriptor;

#[derive(Debug, Deserialize)]
struct CapabilitiesXml {
    host: CapsHostXml,
    #[serde(default, rename = "guest")]
    guests: Vec<CapsGuestXml>,
}

#[derive(Debug, Deserialize)]
struct CapsHostXml {
    cpu: CapsCpuXml,
    #[serde(default, rename = "secmodel")]
    secmodels: Vec<SecModelXml>,
}

#[derive(Debug, Deserialize)]
struct SecModelXml {
    #[serde(default)]
    model: String,
    #[serde(default, rename = "baselabel")]
    baselabels: Vec<BaseLabelXml>,
}

#[derive(Debug, Deserialize)]
struct BaseLabelXml {
    #[serde(rename = "@type", default)]
    domain_type: Option<String>,
    #[serde(rename = "$text", default)]
    label: String,
}

#[derive(Debug, Deserialize)]
struct CapsCpuXml {
    arch: String,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CapsGuestXml {
    os_type: String,
    arch: CapsArchXml,
}

#[derive(Debug, Deserialize)]
struct CapsArchXml {
    #[serde(rename = "@name")]
    name: String,
    #[serde(default)]
    emulator: Option<String>,
    #[serde(default, rename = "machine")]
    machines: Vec<MachineXml>,
    #[serde(default, rename = "domain")]
    domains: Vec<CapsDomainXml>,
}

#[derive(Debug, Deserialize)]
struct MachineXml {
    #[serde(rename = "$text")]
    name: String,
}

/// A `<domain type=…>` under a guest architecture; older libvirt lists a
/// separate emulator and machine types for KVM here.
#[derive(Debug, Deserialize)]
struct CapsDomainXml {
    #[serde(rename = "@type")]
    domain_type: String,
    #[serde(default, rename = "machine")]
    machines: Vec<MachineXml>,
}

/// What the host capabilities say about running guests of the host's own
/// architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    pub arch: String,
    pub cpu_model: Option<String>,
    pub domain_types: Vec<String>,
    pub machine_types: Vec<String>,
    pub emulator: Option<String>,
    /// uid and gid QEMU runs as: the DAC security model's base label.
    pub emulator_user: Option<(u32, u32)>,
}

/// A DAC label as libvirt prints it, `+UID:+GID`.
fn parse_dac_label(label: &str) -> Option<(u32, u32)> {
    let (u, g) = label.trim().split_once(':')?;
    let id = |s: &str| s.strip_prefix('+').unwrap_or(s).parse::<u32>().ok();
    Some((id(u)?, id(g)?))
}

pub(crate) fn parse_capabilities(xml: &str) -> Result<Capabilities, String> {
    let caps: CapabilitiesXml =
        quick_xml::de::from_str(xml).map_err(|e| format!("unreadable capabilities XML: {e}"))?;
    // One label per domain type; they agree unless qemu.conf is unusual,
    // and kvm's is the one that matters where both run.
    let emulator_user = caps
        .host
        .secmodels
        .iter()
        .filter(|m| m.model == "dac")
        .flat_map(|m| &m.baselabels)
        .min_by_key(|l| l.domain_type.as_deref() != Some("kvm"))
        .and_then(|l| parse_dac_label(&l.label));
    let arch = caps.host.cpu.arch;
    let mut out = Capabilities {
        arch: arch.clone(),
        cpu_model: caps.host.cpu.model.filter(|m| !m.is_empty()),
        emulator_user,
        ..Capabilities::default()
    };
    for guest in caps
        .guests
        .iter()
        .filter(|g| g.os_type == "hvm" && g.arch.name == arch)
    {
        if out.emulator.is_none() {
            out.emulator = guest.arch.emulator.clone();
        }
        let machines = guest
            .arch
            .machines
            .iter()
            .chain(guest.arch.domains.iter().flat_map(|d| &d.machines));
        for m in machines {
            push_unique(&mut out.machine_types, m.name.trim());
        }
        for d in &guest.arch.domains {
            push_unique(&mut out.domain_types, &d.domain_type);
        }
    }
    Ok(out)
}

fn push_unique(list: &mut Vec<String>, value: &str) {
    if !value.is_empty() && !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
}

#[derive(Debug, Deserialize)]
struct DomainCapsXml {
    #[serde(default)]
    os: Option<DcOsXml>,
    #[serde(default)]
    devices: Option<DcDevicesXml>,
}

#[derive(Debug, Deserialize)]
struct DcOsXml {
    #[serde(rename = "@supported", default)]
    supported: Option<String>,
    #[serde(default)]
    loader: Option<DcLoaderXml>,
}

#[derive(Debug, Deserialize)]
struct DcLoaderXml {
    #[serde(rename = "@supported", default)]
    supported: Option<String>,
    #[serde(default, rename = "value")]
    values: Vec<String>,
    #[serde(default, rename = "enum")]
    enums: Vec<DcEnumXml>,
}

#[derive(Debug, Deserialize)]
struct DcEnumXml {
    #[serde(rename = "@name")]
    name: String,
    #[serde(default, rename = "value")]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DcDevicesXml {
    #[serde(default)]
    tpm: Option<DcTpmXml>,
}

#[derive(Debug, Deserialize)]
struct DcTpmXml {
    #[serde(rename = "@supported", default)]
    supported: Option<String>,
    #[serde(default, rename = "enum")]
    enums: Vec<DcEnumXml>,
}

fn enum_values<'a>(enums: &'a [DcEnumXml], name: &str) -> &'a [String] {
    enums
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.values.as_slice())
        .unwrap_or(&[])
}

/// What the domain capabilities say about firmware and TPM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DomainCapabilities {
    /// UEFI code images libvirt accepts, in libvirt's order of preference.
    pub loaders: Vec<String>,
    /// Whether a loader may be marked `secure='yes'` (needs SMM, i.e. q35).
    pub secure_boot: bool,
    /// TPM devices with the swtpm emulator backend. libvirt only offers the
    /// `emulator` backend when it finds swtpm on the host.
    pub tpm_emulator: bool,
}

pub(crate) fn parse_domain_capabilities(xml: &str) -> Result<DomainCapabilities, String> {
    let caps: DomainCapsXml = quick_xml::de::from_str(xml)
        .map_err(|e| format!("unreadable domain capabilities XML: {e}"))?;
    let yes = |s: &Option<String>| s.as_deref() == Some("yes");
    let mut out = DomainCapabilities::default();
    if let Some(os) = caps.os.filter(|os| yes(&os.supported)) {
        if let Some(loader) = os.loader.filter(|l| yes(&l.supported)) {
            out.secure_boot = enum_values(&loader.enums, "secure")
                .iter()
                .any(|v| v == "yes");
            out.loaders = loader.values.iter().map(|v| v.trim().to_string()).collect();
        }
    }
    if let Some(tpm) = caps.devices.and_then(|d| d.tpm) {
        out.tpm_emulator = yes(&tpm.supported)
            && enum_values(&tpm.enums, "backendModel")
                .iter()
                .any(|v| v == "emulator");
    }
    Ok(out)
}

/// Pairs each loader libvirt offers with whether it enforces Secure Boot
/// and the variable store template that goes with it.
///
/// The domain capabilities list only paths; QEMU's firmware descriptors
/// (the JSON files libvirt itself reads) say what each image is. A loader
/// without a descriptor is judged by Debian's and Fedora's file names
/// (`*.secboot.fd`, `*.ms.fd`), with `OVMF_VARS*` next to it as template
/// when `exists` finds one.
pub(crate) fn firmware(
    domcaps: &DomainCapabilities,
    descriptors: &[FirmwareDescriptor],
    arch: &str,
    exists: impl Fn(&str) -> bool,
) -> Vec<Firmware> {
    domcaps
        .loaders
        .iter()
        .filter_map(|loader| {
            let described = descriptors
                .iter()
                .find(|d| d.executable == *loader && d.supports_arch(arch));
            let fw = match described {
                Some(d) => Firmware {
                    loader: loader.clone(),
                    nvram_template: d.nvram_template.clone(),
                    secure_boot: d.has_feature("secure-boot"),
                },
                None => {
                    let file = loader.rsplit('/').next().unwrap_or(loader);
                    let secure = [".secboot.", ".ms.", ".snakeoil."]
                        .iter()
                        .any(|s| file.contains(s));
                    let template = loader.replacen("OVMF_CODE", "OVMF_VARS", 1);
                    Firmware {
                        loader: loader.clone(),
                        nvram_template: (template != *loader && exists(&template))
                            .then_some(template),
                        secure_boot: secure,
                    }
                }
            };
            (!fw.secure_boot || domcaps.secure_boot).then_some(fw)
        })
        .collect()
}

pub(crate) fn host_facts(
    caps: &Capabilities,
    domcaps: &DomainCapabilities,
    descriptors: &[FirmwareDescriptor],
) -> HostFacts {
    HostFacts {
        domain_types: caps.domain_types.clone(),
        arch: caps.arch.clone(),
        machine_types: caps.machine_types.clone(),
        emulator: caps.emulator.clone(),
        firmware: firmware(domcaps, descriptors, &caps.arch, |p| {
            std::path::Path::new(p).is_file()
        }),
        tpm_supported: domcaps.tpm_emulator,
        cpu_model: caps.cpu_model.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from `virsh capabilities` on Debian 12 (libvirt 9.0, QEMU 7.2).
    const CAPS: &str = r#"<capabilities>
  <host>
    <uuid>4c4c4544-0000-1010-8000-b4c04f303032</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>EPYC-Rome</model>
      <vendor>AMD</vendor>
      <microcode version='137367679'/>
      <topology sockets='1' dies='1' cores='1' threads='2'/>
      <feature name='ht'/>
      <feature name='cmp_legacy'/>
      <pages unit='KiB' size='4'/>
      <pages unit='KiB' size='2048'/>
    </cpu>
    <power_management/>
    <iommu support='no'/>
    <migration_features>
      <live/>
      <uri_transports>
        <uri_transport>tcp</uri_transport>
      </uri_transports>
    </migration_features>
    <secmodel>
      <model>none</model>
      <doi>0</doi>
    </secmodel>
    <secmodel>
      <model>dac</model>
      <doi>0</doi>
      <baselabel type='kvm'>+64055:+107</baselabel>
    </secmodel>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/qemu-system-i386</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
    <features>
      <pae/>
    </features>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine maxCpus='288'>pc-q35-5.2</machine>
      <machine maxCpus='1'>isapc</machine>
      <machine maxCpus='288'>pc-q35-7.2</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
    <features>
      <acpi default='on' toggle='yes'/>
      <apic default='on' toggle='no'/>
      <cpuselection/>
      <deviceboot/>
      <disksnapshot default='on' toggle='no'/>
    </features>
  </guest>
</capabilities>
"#;

    // Trimmed from `virsh domcapabilities --arch x86_64 --machine q35`.
    const DOMCAPS: &str = r#"<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>kvm</domain>
  <machine>pc-q35-7.2</machine>
  <arch>x86_64</arch>
  <vcpu max='288'/>
  <iothreads supported='yes'/>
  <os supported='yes'>
    <enum name='firmware'>
      <value>efi</value>
    </enum>
    <loader supported='yes'>
      <value>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</value>
      <value>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</value>
      <value>/usr/share/OVMF/OVMF_CODE_4M.fd</value>
      <enum name='type'>
        <value>rom</value>
        <value>pflash</value>
      </enum>
      <enum name='readonly'>
        <value>yes</value>
        <value>no</value>
      </enum>
      <enum name='secure'>
        <value>yes</value>
        <value>no</value>
      </enum>
    </loader>
  </os>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='unknown'>qemu64</model>
    </mode>
  </cpu>
  <devices>
    <disk supported='yes'>
      <enum name='diskDevice'>
        <value>disk</value>
      </enum>
    </disk>
    <tpm supported='yes'>
      <enum name='model'>
        <value>tpm-tis</value>
        <value>tpm-crb</value>
      </enum>
      <enum name='backendModel'>
        <value>passthrough</value>
        <value>emulator</value>
      </enum>
    </tpm>
  </devices>
  <features>
    <gic supported='no'/>
  </features>
</domainCapabilities>
"#;

    fn descriptor(code: &str, vars: &str, features: &[&str]) -> FirmwareDescriptor {
        FirmwareDescriptor {
            executable: code.to_string(),
            nvram_template: Some(vars.to_string()),
            features: features.iter().map(|s| s.to_string()).collect(),
            architectures: vec!["x86_64".to_string()],
        }
    }

    #[test]
    fn capabilities_of_the_host_architecture() {
        let caps = parse_capabilities(CAPS).unwrap();
        assert_eq!(
            caps,
            Capabilities {
                arch: "x86_64".to_string(),
                cpu_model: Some("EPYC-Rome".to_string()),
                domain_types: vec!["qemu".to_string(), "kvm".to_string()],
                machine_types: [
                    "pc-i440fx-7.2",
                    "pc",
                    "pc-q35-5.2",
                    "isapc",
                    "pc-q35-7.2",
                    "q35"
                ]
                .map(String::from)
                .to_vec(),
                emulator: Some("/usr/bin/qemu-system-x86_64".to_string()),
                emulator_user: Some((64055, 107)),
            }
        );
    }

    #[test]
    fn emulator_user_from_the_dac_label() {
        let both = CAPS.replace(
            "<baselabel type='kvm'>+64055:+107</baselabel>",
            "<baselabel type='qemu'>+1:+2</baselabel><baselabel type='kvm'>+0:+0</baselabel>",
        );
        assert_eq!(
            parse_capabilities(&both).unwrap().emulator_user,
            Some((0, 0))
        );
        let without = CAPS.replace("<model>dac</model>", "<model>selinux</model>");
        assert_eq!(parse_capabilities(&without).unwrap().emulator_user, None);
        assert_eq!(parse_dac_label("+64055:+64055"), Some((64055, 64055)));
        assert_eq!(parse_dac_label("107:108"), Some((107, 108)));
        assert_eq!(parse_dac_label("libvirt-qemu:kvm"), None);
    }

    #[test]
    fn capabilities_without_kvm() {
        let xml = CAPS.replace("<domain type='kvm'/>", "");
        assert_eq!(parse_capabilities(&xml).unwrap().domain_types, vec!["qemu"]);
    }

    #[test]
    fn domain_capabilities_firmware_and_tpm() {
        let dc = parse_domain_capabilities(DOMCAPS).unwrap();
        assert_eq!(dc.loaders.len(), 3);
        assert!(dc.secure_boot);
        assert!(dc.tpm_emulator);

        let no_swtpm = DOMCAPS.replace("<value>emulator</value>", "");
        assert!(!parse_domain_capabilities(&no_swtpm).unwrap().tpm_emulator);
        let no_efi = DOMCAPS.replace("<loader supported='yes'>", "<loader supported='no'>");
        assert!(parse_domain_capabilities(&no_efi)
            .unwrap()
            .loaders
            .is_empty());
    }

    #[test]
    fn firmware_from_descriptors() {
        let dc = parse_domain_capabilities(DOMCAPS).unwrap();
        let descriptors = vec![
            descriptor(
                "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
                &["enrolled-keys", "requires-smm", "secure-boot"],
            ),
            descriptor(
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
                &["requires-smm", "secure-boot"],
            ),
            descriptor(
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
                &["acpi-s3"],
            ),
        ];
        let fw = firmware(&dc, &descriptors, "x86_64", |_| false);
        assert_eq!(
            fw,
            vec![
                Firmware {
                    loader: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd".to_string(),
                    nvram_template: Some("/usr/share/OVMF/OVMF_VARS_4M.ms.fd".to_string()),
                    secure_boot: true,
                },
                Firmware {
                    loader: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".to_string(),
                    nvram_template: Some("/usr/share/OVMF/OVMF_VARS_4M.fd".to_string()),
                    secure_boot: true,
                },
                Firmware {
                    loader: "/usr/share/OVMF/OVMF_CODE_4M.fd".to_string(),
                    nvram_template: Some("/usr/share/OVMF/OVMF_VARS_4M.fd".to_string()),
                    secure_boot: false,
                },
            ]
        );
        // A descriptor for another architecture does not apply.
        let mut arm = descriptors[2].clone();
        arm.architectures = vec!["aarch64".to_string()];
        let fw = firmware(&dc, &[arm], "x86_64", |_| false);
        assert_eq!(fw[2].nvram_template, None);
    }

    #[test]
    fn firmware_by_file_name_without_descriptors() {
        let dc = parse_domain_capabilities(DOMCAPS).unwrap();
        let fw = firmware(&dc, &[], "x86_64", |p| {
            p == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
        });
        assert_eq!(
            fw.iter().map(|f| f.secure_boot).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        assert_eq!(
            fw[0].nvram_template.as_deref(),
            Some("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        assert_eq!(fw[1].nvram_template, None);

        // On a machine type without SMM libvirt offers no secure loaders.
        let mut pc = dc.clone();
        pc.secure_boot = false;
        let fw = firmware(&pc, &[], "x86_64", |_| false);
        assert_eq!(fw.len(), 1);
        assert!(!fw[0].secure_boot);
    }

    #[test]
    fn facts_feed_the_designer() {
        let caps = parse_capabilities(CAPS).unwrap();
        let dc = parse_domain_capabilities(DOMCAPS).unwrap();
        let facts = host_facts(&caps, &dc, &[]);
        assert!(facts.tpm_supported);
        assert_eq!(facts.arch, "x86_64");
        assert_eq!(facts.firmware.len(), 3);
    }
}
