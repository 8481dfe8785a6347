//! A fake host for the checks' tests: everything is there; each test breaks one thing.

use super::probe::{HostProbe, Route, ToolState};
use n2d_image::unshare::BuildUser;
use n2d_vm::accel::KvmDevice;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A host where everything is there; each test breaks one thing.
pub struct FakeHost {
    pub qemu: Option<&'static str>,
    pub missing: Vec<&'static str>,
    pub cpuinfo: &'static str,
    pub dev_kvm: KvmDevice,
    pub euid: u32,
    pub status: &'static str,
    pub iptables: ToolState,
    pub docker: ToolState,
    pub virtiofsd: ToolState,
    pub routes: Vec<Route>,
    pub links: Vec<(&'static str, Option<(Ipv4Addr, u8)>)>,
    /// Links other than bridges, by kind.
    pub kinds: Vec<(&'static str, &'static str)>,
    pub recorded: Option<(Ipv4Addr, u8)>,
    pub free: Result<u64, String>,
    pub images: Vec<String>,
    pub init: Result<String, String>,
    pub user: BuildUser,
    pub filter: Result<String, String>,
    pub run_dir: Option<String>,
}

/// A fresh host's filter table (no Docker, no firewall).
const EMPTY_FILTER: &str = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            qemu: Some("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"),
            missing: vec![],
            cpuinfo: "processor\t: 0\nflags\t\t: fpu vme vmx sse\n",
            dev_kvm: KvmDevice::Usable,
            euid: 0,
            status: "CapEff:\t000001ffffffffff\nCapAmb:\t0000000000000000\n",
            iptables: ToolState::Works("iptables v1.8.9 (nf_tables)".into()),
            docker: ToolState::Works("Docker version 28.2.2, build e6534b4".into()),
            virtiofsd: ToolState::Works("virtiofsd 1.14.0".into()),
            routes: vec![
                route("eth0", [0, 0, 0, 0], 0),
                route("eth0", [192, 168, 1, 0], 24),
                route("n2d0", [10, 77, 0, 0], 24),
            ],
            links: vec![("eth0", Some((Ipv4Addr::new(192, 168, 1, 5), 24)))],
            kinds: vec![("eth0", "ether"), ("lo", "loopback")],
            recorded: None,
            free: Ok(80 << 30),
            images: vec!["0123456789abcdef0123".into()],
            init: Ok("built into n2d".into()),
            user: BuildUser {
                uid: 1000,
                name: Some("ann".into()),
                subuid: "ann:100000:65536\n".into(),
                subgid: "ann:100000:65536\n".into(),
            },
            filter: Ok(EMPTY_FILTER.into()),
            run_dir: None,
        }
    }
}

pub fn route(dev: &str, dst: [u8; 4], prefix_len: u8) -> Route {
    Route { dev: dev.into(), dst: Ipv4Addr::from(dst), prefix_len }
}

impl HostProbe for FakeHost {
    fn qemu_binary(&self) -> String {
        "qemu-system-x86_64".into()
    }
    fn qemu_version_output(&self) -> Option<String> {
        self.qemu.map(str::to_string)
    }
    fn installed(&self, program: &str) -> bool {
        !self.missing.contains(&program)
    }
    fn cpuinfo(&self) -> String {
        self.cpuinfo.into()
    }
    fn dev_kvm(&self) -> KvmDevice {
        self.dev_kvm
    }
    fn no_kvm(&self) -> bool {
        false
    }
    fn euid(&self) -> u32 {
        self.euid
    }
    fn proc_status(&self) -> String {
        self.status.into()
    }
    fn iptables(&self) -> ToolState {
        self.iptables.clone()
    }
    fn docker(&self) -> ToolState {
        self.docker.clone()
    }
    fn virtiofsd(&self) -> ToolState {
        self.virtiofsd.clone()
    }
    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }
    fn link_ipv4(&self, dev: &str) -> Option<Option<(Ipv4Addr, u8)>> {
        self.links.iter().find(|(d, _)| *d == dev).map(|(_, a)| *a)
    }
    fn link_kind(&self, dev: &str) -> Option<String> {
        let kind = self.kinds.iter().find(|(d, _)| *d == dev).map(|(_, k)| k.to_string());
        kind.or_else(|| self.link_ipv4(dev).map(|_| "bridge".to_string()))
    }
    fn recorded_subnet(&self, _bridge: &str) -> Option<(Ipv4Addr, u8)> {
        self.recorded
    }
    fn free_space(&self) -> Result<(PathBuf, u64), String> {
        self.free.clone().map(|b| (PathBuf::from("/root/.local/share"), b))
    }
    fn images(&self) -> Vec<String> {
        self.images.clone()
    }
    fn guest_init(&self) -> Result<String, String> {
        self.init.clone()
    }
    fn build_user(&self) -> BuildUser {
        self.user.clone()
    }
    fn filter_rules(&self) -> Result<String, String> {
        self.filter.clone()
    }
    fn run_dir_problem(&self) -> Option<String> {
        self.run_dir.clone()
    }
}
