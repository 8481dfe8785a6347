//! The real host: tools run through the orchestrator's runner, /proc, /dev/kvm, statvfs.

use super::probe::{parse_proc_net_route, HostProbe, Route, ToolState};
use crate::Orchestrator;
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_image::unshare::BuildUser;
use n2d_image::GuestInit;
use n2d_net::host::HostNet;
use n2d_store::Home;
use n2d_vm::accel::KvmDevice;
use n2d_vm::Qemu;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How the caller finds the guest init an image build would use (the CLI's: built into n2d, or
/// `$N2D_INIT`); `Err` says why it cannot be had. Asked only when no image is built yet.
pub type GuestInitSource<'a> = &'a dyn Fn() -> Result<GuestInit, String>;

/// The real host, as the orchestrator's runner, home and host-wide network state see it.
pub struct SystemProbe<'a> {
    pub runner: &'a dyn Runner,
    /// The QEMU binary n2d runs.
    pub qemu_binary: &'a str,
    /// KVM refused by the settings (`$N2D_NO_KVM`).
    pub no_kvm: bool,
    /// Where tools are looked for (`PATH`).
    pub search_path: &'a n2d_exec::SearchPath,
    pub home: &'a Home,
    pub net: &'a HostNet,
    pub guest_init: GuestInitSource<'a>,
}

impl<R: Runner, C> Orchestrator<R, Qemu, C> {
    /// This host, probed with this orchestrator's runner, QEMU, home and network state.
    pub fn system_probe<'a>(&'a self, guest_init: GuestInitSource<'a>) -> SystemProbe<'a> {
        SystemProbe {
            runner: &self.runner,
            qemu_binary: self.hypervisor.binary(),
            no_kvm: self.hypervisor.config.no_kvm,
            search_path: &self.search_path,
            home: &self.home,
            net: &self.net,
            guest_init,
        }
    }
}

impl SystemProbe<'_> {
    /// The first line of a tool's output, or why it did not run.
    fn tool(&self, cmd: Cmd) -> ToolState {
        match self.runner.run(&cmd) {
            Ok(out) => ToolState::Works(
                String::from_utf8_lossy(&out).lines().next().unwrap_or("").trim().to_string(),
            ),
            Err(ExecError::NotInstalled { .. }) => ToolState::Missing,
            Err(e) => ToolState::Broken(e.to_string()),
        }
    }
}

impl HostProbe for SystemProbe<'_> {
    fn qemu_binary(&self) -> String {
        self.qemu_binary.to_string()
    }
    fn qemu_version_output(&self) -> Option<String> {
        let cmd = Cmd::new(self.qemu_binary, n2d_vm::argv::QEMU_PACKAGE).arg("--version");
        self.runner.run(&cmd).ok().map(|out| String::from_utf8_lossy(&out).into_owned())
    }
    fn installed(&self, program: &str) -> bool {
        self.search_path.is_installed_or_in_sbin(program)
    }
    fn cpuinfo(&self) -> String {
        std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
    }
    fn dev_kvm(&self) -> KvmDevice {
        KvmDevice::probe()
    }
    fn no_kvm(&self) -> bool {
        self.no_kvm
    }
    fn euid(&self) -> u32 {
        rustix::process::geteuid().as_raw()
    }
    fn proc_status(&self) -> String {
        std::fs::read_to_string("/proc/self/status").unwrap_or_default()
    }
    fn iptables(&self) -> ToolState {
        match self.tool(Cmd::new("iptables", "iptables").arg("--version")) {
            // Installed is not enough: the nat table must answer (kernel support, privileges).
            ToolState::Works(version) => {
                match self.tool(Cmd::new("iptables", "iptables").args([
                    "-w",
                    "5",
                    "-t",
                    "nat",
                    "-S",
                    "POSTROUTING",
                ])) {
                    ToolState::Works(_) => ToolState::Works(version),
                    other => other,
                }
            }
            other => other,
        }
    }
    fn docker(&self) -> ToolState {
        self.tool(Cmd::new("docker", "docker.io").arg("--version"))
    }
    fn virtiofsd(&self) -> ToolState {
        match n2d_vm::virtiofs::find_virtiofsd(self.search_path) {
            Some(path) => self.tool(Cmd::new(&path.display().to_string(), "virtiofsd").arg("--version")),
            None => ToolState::Missing,
        }
    }
    fn routes(&self) -> Vec<Route> {
        parse_proc_net_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
    }
    fn link_ipv4(&self, dev: &str) -> Option<Option<(Ipv4Addr, u8)>> {
        self.link_kind(dev)?;
        Some(n2d_net::Links::new(self.runner).ipv4_of(dev).ok().flatten())
    }
    fn link_kind(&self, dev: &str) -> Option<String> {
        n2d_net::Links::new(self.runner).kind_of(dev)
    }
    fn recorded_subnet(&self, bridge: &str) -> Option<(Ipv4Addr, u8)> {
        let state = self.net.snapshot().ok()?;
        state.bridges.get(bridge).map(|b| (b.gateway, b.prefix_len))
    }
    fn free_space(&self) -> Result<(PathBuf, u64), String> {
        let root = self.home.root();
        let dir = root.ancestors().find(|p| p.exists()).ok_or("no part of it exists")?;
        let stat = rustix::fs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
        Ok((dir.to_path_buf(), stat.f_bavail.saturating_mul(stat.f_frsize)))
    }
    fn images(&self) -> Vec<String> {
        n2d_image::list_images(self.home).into_iter().map(|i| i.manifest.id).collect()
    }
    fn guest_init(&self) -> Result<String, String> {
        let init = (self.guest_init)()?;
        n2d_image::check_static_x86_64(&init.bytes)
            .map_err(|problem| format!("{}: {problem}", init.source))?;
        Ok(init.source)
    }
    fn build_user(&self) -> BuildUser {
        BuildUser::of_this_process()
    }
    fn filter_rules(&self) -> Result<String, String> {
        let cmd = Cmd::new("iptables", "iptables").args(["-w", "5", "-t", "filter", "-S"]);
        let out = self.runner.run(&cmd).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    fn run_dir_problem(&self) -> Option<String> {
        let dir = self.net.dir();
        if !dir.exists() && !dir.is_symlink() {
            return None;
        }
        n2d_net::host::check_run_dir(dir).err().map(|e| e.to_string())
    }
}
