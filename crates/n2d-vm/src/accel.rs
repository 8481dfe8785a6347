//! Choosing between KVM and TCG.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// The accelerator a record names by its [`Display`](std::fmt::Display) form (`kvm`);
    /// anything else is TCG, which every host has.
    pub fn from_recorded(name: &str) -> Accel {
        if name == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Why KVM is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKvm {
    /// `N2D_NO_KVM` is set.
    Disabled,
    /// The CPU has no vmx/svm flag (or it is hidden from this VM).
    NoCpuFlag,
    /// /dev/kvm is missing.
    NoDevice,
    /// /dev/kvm exists but this user may not open it (not in the `kvm` group).
    NoAccess,
    /// Everything looked right, but QEMU could not start with KVM.
    StartFailed,
}

impl NoKvm {
    /// What the user can do about it.
    pub fn fix(self) -> &'static str {
        match self {
            NoKvm::Disabled => "unset N2D_NO_KVM",
            NoKvm::NoCpuFlag => "enable VT-x/AMD-V in the firmware, or nested virtualization for this VM (nothing to do if there is none)",
            NoKvm::NoDevice | NoKvm::StartFailed => {
                "load kvm_intel or kvm_amd (modprobe) and run n2d as root or in the kvm group"
            }
            NoKvm::NoAccess => {
                "ask an administrator to add you to the kvm group (usermod -aG kvm $USER), then log in again"
            }
        }
    }
}

impl std::fmt::Display for NoKvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoKvm::Disabled => "N2D_NO_KVM is set",
            NoKvm::NoCpuFlag => "the CPU has no vmx/svm flag",
            NoKvm::NoDevice => "/dev/kvm is missing",
            NoKvm::NoAccess => "this user may not open /dev/kvm",
            NoKvm::StartFailed => "QEMU could not start with KVM on this host",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    /// Why KVM is not used, when it is not.
    pub why_not_kvm: Option<NoKvm>,
}

/// How /dev/kvm stands for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmDevice {
    Missing,
    /// It exists, but opening it read-write is refused (the `kvm` group).
    NoAccess,
    Usable,
}

impl KvmDevice {
    pub fn probe() -> KvmDevice {
        match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
            Ok(_) => KvmDevice::Usable,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => KvmDevice::NoAccess,
            Err(_) => KvmDevice::Missing,
        }
    }
}

/// KVM needs both the CPU flag (vmx/svm) and a usable /dev/kvm. Some hosts expose /dev/kvm
/// without the flag (paravirtual KVM, on which stock kernels do not boot): those get TCG.
/// `no_kvm` (`$N2D_NO_KVM`) refuses KVM whatever the host offers.
pub fn choose_accel(cpuinfo: &str, device: KvmDevice, no_kvm: bool) -> AccelChoice {
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let why_not = if no_kvm {
        Some(NoKvm::Disabled)
    } else if !has_flag {
        Some(NoKvm::NoCpuFlag)
    } else if device == KvmDevice::Missing {
        Some(NoKvm::NoDevice)
    } else if device == KvmDevice::NoAccess {
        Some(NoKvm::NoAccess)
    } else {
        None
    };
    AccelChoice { accel: if why_not.is_some() { Accel::Tcg } else { Accel::Kvm }, why_not_kvm: why_not }
}

/// [`choose_accel`] for this host.
pub fn detect_accel(no_kvm: bool) -> AccelChoice {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    choose_accel(&cpuinfo, KvmDevice::probe(), no_kvm)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_recorded_accelerator_reads_back_as_written() {
        for accel in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(Accel::from_recorded(&accel.to_string()), accel);
        }
        assert_eq!(Accel::from_recorded("hvf"), Accel::Tcg);
    }

    use super::*;

    #[test]
    fn kvm_needs_flag_and_device() {
        let vmx = "processor: 0\nflags\t\t: fpu vme vmx sse\n";
        let none = "processor: 0\nflags\t\t: fpu vme sse\n";
        assert_eq!(choose_accel(vmx, KvmDevice::Usable, false).accel, Accel::Kvm);
        let no_flag = choose_accel(none, KvmDevice::Usable, false);
        assert_eq!(no_flag.accel, Accel::Tcg);
        assert_eq!(no_flag.why_not_kvm, Some(NoKvm::NoCpuFlag));
        assert!(NoKvm::NoCpuFlag.to_string().contains("vmx/svm"));
        assert_eq!(choose_accel(vmx, KvmDevice::Missing, false).why_not_kvm, Some(NoKvm::NoDevice));
        let no_access = choose_accel(vmx, KvmDevice::NoAccess, false);
        assert_eq!((no_access.accel, no_access.why_not_kvm), (Accel::Tcg, Some(NoKvm::NoAccess)));
        assert!(NoKvm::NoAccess.fix().contains("kvm group"));
        let disabled = choose_accel(vmx, KvmDevice::Usable, true);
        assert_eq!((disabled.accel, disabled.why_not_kvm), (Accel::Tcg, Some(NoKvm::Disabled)));
    }
}
