//! The raw facts of a host that the checks judge: [`HostProbe`] (the real one is
//! [`super::SystemProbe`], tests use a fake).

use n2d_image::unshare::BuildUser;
use n2d_vm::accel::KvmDevice;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How an optional tool answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolState {
    Missing,
    /// Installed but failed; the reason.
    Broken(String),
    /// Works; the first line it printed (its version).
    Works(String),
}

/// A route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
}

/// The raw facts of a host. The real one is [`super::SystemProbe`]; tests use a fake.
pub trait HostProbe {
    /// The QEMU binary n2d runs (`$N2D_QEMU` or qemu-system-x86_64).
    fn qemu_binary(&self) -> String;
    /// What `QEMU --version` printed; `None` when it cannot run.
    fn qemu_version_output(&self) -> Option<String>;
    /// Whether `program` is on PATH (or in /usr/sbin, /sbin).
    fn installed(&self, program: &str) -> bool;
    fn cpuinfo(&self) -> String;
    /// Whether /dev/kvm exists and opens read-write.
    fn dev_kvm(&self) -> KvmDevice;
    /// Whether KVM is refused by the settings (`$N2D_NO_KVM`).
    fn no_kvm(&self) -> bool;
    fn euid(&self) -> u32;
    /// /proc/self/status (capability masks).
    fn proc_status(&self) -> String;
    fn iptables(&self) -> ToolState;
    fn docker(&self) -> ToolState;
    /// virtiofsd, for host folders (`--mount`).
    fn virtiofsd(&self) -> ToolState;
    /// The host's IPv4 routes.
    fn routes(&self) -> Vec<Route>;
    /// `None` when no link of that name exists, else its first IPv4 address.
    fn link_ipv4(&self, dev: &str) -> Option<Option<(Ipv4Addr, u8)>>;
    /// What kind of link `dev` is (`bridge`, `ether`, `loopback`...), `None` when absent.
    fn link_kind(&self, dev: &str) -> Option<String>;
    /// The subnet n2d recorded host-wide for a bridge (it recreates n2d0 with it).
    fn recorded_subnet(&self, bridge: &str) -> Option<(Ipv4Addr, u8)>;
    /// The nearest existing directory of `$N2D_HOME` and the bytes free there.
    fn free_space(&self) -> Result<(PathBuf, u64), String>;
    /// IDs of the built images, newest first.
    fn images(&self) -> Vec<String>;
    /// The guest init an image build would use (built into n2d, or `$N2D_INIT`): `Err` says
    /// why it cannot be a VM's PID 1.
    fn guest_init(&self) -> Result<String, String>;
    /// The user's name and subordinate id ranges (/etc/subuid, /etc/subgid): an ordinary user
    /// builds images in mmdebstrap's unshare mode on them.
    fn build_user(&self) -> BuildUser;
    /// The filter table as `iptables -S` prints it, or why it cannot be read.
    fn filter_rules(&self) -> Result<String, String>;
    /// Why `$N2D_RUN_DIR` (the host-wide bridge state) is unsafe to use; `None` when it is safe
    /// or not made yet.
    fn run_dir_problem(&self) -> Option<String>;
}

/// Routes from /proc/net/route (main table): hex addresses in the kernel's byte order.
pub fn parse_proc_net_route(text: &str) -> Vec<Route> {
    let addr = |hex: &str| u32::from_str_radix(hex, 16).ok().map(|v| Ipv4Addr::from(v.to_le_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dev, dst, mask) = (f.first()?, addr(f.get(1)?)?, addr(f.get(7)?)?);
            Some(Route { dev: dev.to_string(), dst, prefix_len: u32::from(mask).count_ones() as u8 })
        })
        .collect()
}
