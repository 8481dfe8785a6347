//! `n2d doctor`: whether this host has what `create` needs, one line per check with its fix.
//!
//! [`HostProbe`] gathers raw facts (tool output, /proc files, free space); [`run_checks`] is a
//! pure function of those facts, so every finding is unit-tested against a fake host.
//! `create` and `swarm create` run the same checks first ([`preflight`]) and stop on a failure.

use crate::context::Ctx;
use n2d_exec::{Cmd, ExecError, Runner};
use n2d_image::unshare::{check_unshare, BuildUser, UIDMAP_PACKAGE};
use n2d_image::BuildError;
use n2d_spec::machine::{DEFAULT_BRIDGE, USER_NETWORK};
use n2d_vm::accel::{choose_accel, KvmDevice};
use n2d_vm::QemuVersion;
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Below this much free space under `$N2D_HOME`, `create` cannot work (an image is ~0.3 GB, a
/// fresh data disk and the TCG translation cache's swap need room too).
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Below this, it works but images and data disks will soon fill the disk.
pub const LOW_FREE_BYTES: u64 = 5 << 30;
/// The QEMU release n2d is tested with.
pub const TESTED_QEMU: QemuVersion = QemuVersion::new(10, 0, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// `create` works, but worse (slower, no internet in the VMs, no docker CLI...).
    Warn,
    /// `create` cannot work until this is fixed.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked, how it stands, what was seen, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, finding: impl Into<String>) -> Check {
        Check { name, status: Status::Ok, finding: finding.into(), fix: None }
    }
    fn warn(name: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warn, finding: finding.into(), fix: Some(fix.into()) }
    }
    fn fail(name: &'static str, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, finding: finding.into(), fix: Some(fix.into()) }
    }
}

/// `ok   qemu       QEMU 10.0.2 (qemu-system-x86_64)` or `FAIL disk ... — fix: ...`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {:<10} {}", self.status.to_string(), self.name, self.finding)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

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

/// The raw facts of a host. The real one is [`SystemProbe`]; tests use a fake.
pub trait HostProbe {
    /// The QEMU binary n2d runs (`$N2D_QEMU` or qemu-system-x86_64).
    fn qemu_binary(&self) -> String;
    /// What `QEMU --version` printed; `None` when it cannot run.
    fn qemu_version_output(&self) -> Option<String>;
    /// Whether `program` is on PATH (or in /usr/sbin, /sbin).
    fn installed(&self, program: &str) -> bool;
    fn cpuinfo(&self) -> String;
    /// Whether KVM is refused by the settings (`$N2D_NO_KVM`).
    fn no_kvm(&self) -> bool {
        false
    }
    /// Whether /dev/kvm exists and opens read-write.
    fn dev_kvm(&self) -> KvmDevice;
    fn euid(&self) -> u32;
    /// /proc/self/status (capability masks).
    fn proc_status(&self) -> String;
    fn iptables(&self) -> ToolState;
    fn docker(&self) -> ToolState;
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

/// What `create` is about to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bridge: String,
    /// An image ID (prefix) given with `--image`; none: the newest image, built if none is.
    pub image: Option<String>,
}

impl Default for Target {
    fn default() -> Self {
        Target { bridge: DEFAULT_BRIDGE.to_string(), image: None }
    }
}

/// Every check, in the order `n2d doctor` prints them.
pub fn run_checks(probe: &dyn HostProbe, target: &Target) -> Vec<Check> {
    if target.bridge == USER_NETWORK {
        return vec![
            check_qemu(probe),
            check_kvm(probe),
            Check::ok(
                "privileges",
                format!("uid {}: user-mode networking needs no privileges", probe.euid()),
            ),
            check_switch(probe),
            check_disk(probe),
            check_image(probe, target.image.as_deref()),
            check_docker(probe),
        ];
    }
    vec![
        check_qemu(probe),
        check_kvm(probe),
        check_privileges(probe),
        check_iptables(probe),
        check_bridge(probe, &target.bridge),
        check_disk(probe),
        check_image(probe, target.image.as_deref()),
        check_docker(probe),
        check_firewall(probe, &target.bridge),
    ]
}

const QEMU_FIX: &str = "install QEMU: scripts/deps.sh, or apt-get install qemu-system-x86";

fn check_qemu(probe: &dyn HostProbe) -> Check {
    let binary = probe.qemu_binary();
    let Some(output) = probe.qemu_version_output() else {
        return Check::fail("qemu", format!("{binary} is not installed"), QEMU_FIX);
    };
    if !probe.installed("qemu-img") {
        return Check::fail(
            "qemu",
            "qemu-img is not installed (it makes the VMs' data disks)",
            "apt-get install qemu-utils (or scripts/deps.sh)",
        );
    }
    match QemuVersion::parse(&output) {
        None => Check::warn(
            "qemu",
            format!("{binary} runs but its version is unknown ({:?})", output.lines().next().unwrap_or("")),
            "check that it is QEMU: scripts/deps.sh installs QEMU 10",
        ),
        Some(v) if v < TESTED_QEMU => Check::warn(
            "qemu",
            format!("QEMU {v} ({binary}) is older than {TESTED_QEMU}, the release n2d is tested with"),
            "scripts/deps.sh installs QEMU 10 (from bookworm-backports on Debian 12)",
        ),
        Some(v) => Check::ok("qemu", format!("QEMU {v} ({binary}), qemu-img")),
    }
}

fn check_kvm(probe: &dyn HostProbe) -> Check {
    let choice = choose_accel(&probe.cpuinfo(), probe.dev_kvm(), probe.no_kvm());
    let Some(why) = choice.why_not_kvm else {
        return Check::ok("kvm", "KVM usable: VMs run at native speed");
    };
    Check::warn(
        "kvm",
        format!("KVM not usable ({why}): VMs run under TCG emulation, several times slower"),
        why.fix(),
    )
}

fn check_privileges(probe: &dyn HostProbe) -> Check {
    let euid = probe.euid();
    if euid == 0 {
        return Check::ok("privileges", "running as root");
    }
    if n2d_net::net_admin_inherited(&probe.proc_status()) {
        return Check::ok(
            "privileges",
            format!("uid {euid} with CAP_NET_ADMIN in the ambient set (bridges and taps)"),
        );
    }
    Check::fail(
        "privileges",
        format!("running as uid {euid} without CAP_NET_ADMIN: cannot create bridges and taps"),
        "use user-mode networking (--network user, the default when not root), or run n2d as root",
    )
}

/// User-mode networking's switch (the machines' shared segment).
fn check_switch(probe: &dyn HostProbe) -> Check {
    use n2d_net::user::{SWITCH_PACKAGE, SWITCH_PROGRAM};
    if probe.installed(SWITCH_PROGRAM) {
        Check::ok(
            "network",
            "user mode: vde_switch joins the VMs, QEMU's own stack forwards 127.0.0.1 to them",
        )
    } else {
        Check::fail(
            "network",
            format!("{SWITCH_PROGRAM} is not installed: user-mode networking joins the VMs with it"),
            format!("apt-get install {SWITCH_PACKAGE} (as root: ask an administrator), or run n2d as root for bridge networking"),
        )
    }
}

fn check_iptables(probe: &dyn HostProbe) -> Check {
    match probe.iptables() {
        ToolState::Works(version) => {
            Check::ok("iptables", format!("{version}: VMs on n2d0 reach the internet through NAT"))
        }
        ToolState::Missing => Check::warn(
            "iptables",
            "iptables is not installed: VMs on n2d0 will have no internet access (no docker pull)",
            "apt-get install iptables",
        ),
        ToolState::Broken(why) => Check::warn(
            "iptables",
            format!("iptables does not work here ({why}): VMs on n2d0 will have no internet access"),
            "run n2d as root, and check that the kernel has nf_tables (modprobe nf_tables)",
        ),
    }
}

/// The network address of `ip`/`prefix_len`.
fn network(ip: Ipv4Addr, prefix_len: u8) -> u32 {
    let mask = if prefix_len == 0 { 0 } else { u32::MAX << (32 - prefix_len.min(32)) };
    u32::from(ip) & mask
}

/// Whether two subnets share an address.
fn overlaps(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let len = a_len.min(b_len);
    network(a, len) == network(b, len)
}

fn check_bridge(probe: &dyn HostProbe, bridge: &str) -> Check {
    if !probe.installed("ip") {
        return Check::fail(
            "bridge",
            "`ip` is not installed: n2d makes bridges and taps with it",
            "apt-get install iproute2",
        );
    }
    if let Some(problem) = probe.run_dir_problem() {
        return Check::fail(
            "bridge",
            problem,
            "chmod go-w it (it must be yours or root's), or set N2D_RUN_DIR to a directory of your own",
        );
    }
    if let Some(kind) = probe.link_kind(bridge).filter(|k| k != "bridge") {
        return Check::fail(
            "bridge",
            format!("{bridge} is a {kind} link, not a bridge"),
            "pass a Linux bridge with --network (ip link add br0 type bridge), or leave it out to use n2d0",
        );
    }
    let recorded = probe.recorded_subnet(bridge);
    let (gateway, prefix_len, state) = match probe.link_ipv4(bridge) {
        Some(Some((gw, len))) => (gw, len, "is up"),
        Some(None) => match recorded {
            Some((gw, len)) => (gw, len, "exists"),
            None => {
                return Check::fail(
                    "bridge",
                    format!("bridge {bridge} has no IPv4 address: n2d hands out addresses from its subnet"),
                    format!("give it one, e.g. ip addr add 10.78.0.1/24 dev {bridge}"),
                )
            }
        },
        None if bridge == DEFAULT_BRIDGE => {
            let (gw, len) = recorded.unwrap_or((n2d_net::DEFAULT_GATEWAY, n2d_net::DEFAULT_PREFIX_LEN));
            (gw, len, "will be created")
        }
        None => {
            return Check::fail(
                "bridge",
                format!("bridge {bridge} does not exist"),
                format!("create it (ip link add {bridge} type bridge; ip addr add 10.78.0.1/24 dev {bridge}; ip link set {bridge} up), or leave out --network to use n2d0"),
            )
        }
    };
    let subnet = format!("{}/{prefix_len}", Ipv4Addr::from(network(gateway, prefix_len)));
    // The default route overlaps everything and clashes with nothing.
    let clash = probe
        .routes()
        .into_iter()
        .find(|r| r.prefix_len > 0 && r.dev != bridge && overlaps(r.dst, r.prefix_len, gateway, prefix_len));
    if let Some(r) = clash {
        return Check::fail(
            "bridge",
            format!(
                "{bridge}'s subnet {subnet} overlaps the host route {}/{} on {}: the VMs would clash with that network",
                r.dst, r.prefix_len, r.dev
            ),
            "free that subnet, or make a bridge on an unused one and pass it with --network (ip link add n2d1 type bridge; ip addr add 10.78.0.1/24 dev n2d1; ip link set n2d1 up)",
        );
    }
    Check::ok(
        "bridge",
        format!("{bridge} {state} with {gateway}/{prefix_len}, no host route clashes with {subnet}"),
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn check_disk(probe: &dyn HostProbe) -> Check {
    let (dir, free) = match probe.free_space() {
        Ok(found) => found,
        Err(why) => {
            return Check::warn(
                "disk",
                format!("cannot tell the free space for $N2D_HOME ({why})"),
                "check that $N2D_HOME points somewhere writable",
            )
        }
    };
    let dir = dir.display();
    if free < MIN_FREE_BYTES {
        Check::fail(
            "disk",
            format!(
                "only {} free under {dir}: an image and a data disk need at least {}",
                gib(free),
                gib(MIN_FREE_BYTES)
            ),
            "free space there, or point N2D_HOME at a larger filesystem",
        )
    } else if free < LOW_FREE_BYTES {
        Check::warn(
            "disk",
            format!("{} free under {dir}: data disks grow as containers write", gib(free)),
            "free space there, or point N2D_HOME at a larger filesystem",
        )
    } else {
        Check::ok("disk", format!("{} free under {dir}", gib(free)))
    }
}

fn check_image(probe: &dyn HostProbe, wanted: Option<&str>) -> Check {
    let images = probe.images();
    if let Some(id) = wanted {
        return match images.iter().filter(|i| i.starts_with(id)).count() {
            1 => Check::ok("image", format!("image {id} is built")),
            0 => Check::fail(
                "image",
                format!("no image {id} is built"),
                "`n2d image ls` lists the built images; leave out --image to use the newest",
            ),
            _ => Check::fail(
                "image",
                format!("image ID prefix {id} matches several images"),
                "give more characters of the ID (see `n2d image ls`)",
            ),
        };
    }
    if let Some(newest) = images.first() {
        return Check::ok(
            "image",
            format!(
                "image {} is built ({} in all)",
                n2d_spec::machine::truncate_chars(newest, 12),
                images.len()
            ),
        );
    }
    let missing: Vec<&(&str, &str)> =
        n2d_image::build::TOOLS.iter().filter(|(program, _)| !probe.installed(program)).collect();
    if !missing.is_empty() {
        let tools: Vec<String> =
            missing.iter().map(|(program, package)| format!("{program} ({package})")).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        return Check::fail(
            "image",
            format!("no image is built and building one needs {}", tools.join(", ")),
            format!("apt-get install {} (or scripts/deps.sh)", packages.join(" ")),
        );
    }
    if let Err(why) = probe.guest_init() {
        return Check::fail(
            "image",
            format!("no image is built and the guest init cannot be used: {why}"),
            n2d_image::init::INIT_FIX,
        );
    }
    if probe.euid() == 0 {
        return Check::ok(
            "image",
            "no image yet: create builds one first (the build tools and n2d-init are there)",
        );
    }
    // An ordinary user builds in mmdebstrap's unshare mode.
    let user = probe.build_user();
    let as_root = "or run `n2d image build` as root once";
    match check_unshare(&user, &|program| probe.installed(program)) {
        Ok(()) => Check::ok(
            "image",
            format!(
                "no image yet: create builds one first (the build tools, n2d-init, uidmap and subordinate ids for {} are there)",
                user.display_name()
            ),
        ),
        Err(BuildError::UidmapMissing { program }) => Check::fail(
            "image",
            format!("no image is built and building one as an ordinary user needs {program}, which is not installed"),
            format!("ask an administrator to install {UIDMAP_PACKAGE} (apt-get install {UIDMAP_PACKAGE}), {as_root}"),
        ),
        Err(BuildError::NoSubordinateIds { user, file }) => Check::fail(
            "image",
            format!(
                "no image is built and building one as an ordinary user needs subordinate ids: {file} gives {user} no range of at least {}",
                n2d_image::unshare::MIN_SUBORDINATE_IDS
            ),
            format!("ask an administrator for ranges (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}, with ranges no other user has), {as_root}"),
        ),
        Err(other) => Check::fail("image", format!("no image is built and building one fails: {other}"), as_root),
    }
}

fn check_docker(probe: &dyn HostProbe) -> Check {
    match probe.docker() {
        ToolState::Works(version) => Check::ok("docker", format!("docker CLI: {version}")),
        ToolState::Missing => Check::warn(
            "docker",
            "no docker CLI: the VMs work, but you need it to use their endpoints",
            "apt-get install docker.io (or Docker's docker-ce-cli)",
        ),
        ToolState::Broken(why) => Check::warn(
            "docker",
            format!("the docker CLI does not run ({why})"),
            "reinstall it: apt-get install docker.io",
        ),
    }
}

/// What n2d's forward chain of one bridge does, read back from `iptables -S`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct N2dChain {
    pub bridge: String,
    /// FORWARD jumps to it.
    pub jumped: bool,
    /// It ends with n2d's DROP rules (made by this n2d, not flushed since).
    pub complete: bool,
    /// The interface its VMs' outbound traffic may leave by.
    pub uplink: Option<String>,
    /// Addresses that accept new connections from other networks (`--expose`).
    pub exposed: Vec<String>,
}

/// The FORWARD policy and n2d's forward chains, from `iptables -S` of the filter table.
pub fn parse_forward_rules(rules: &str) -> (Option<String>, Vec<N2dChain>) {
    let mut policy = None;
    let mut chains: Vec<N2dChain> = Vec::new();
    let mut jumps = Vec::new();
    for line in rules.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["-P", "FORWARD", p] => policy = Some(p.to_string()),
            ["-N", chain] => {
                if let Some(bridge) = chain.strip_prefix("N2D-FWD-") {
                    chains.push(N2dChain { bridge: bridge.into(), ..Default::default() });
                }
            }
            ["-A", "FORWARD", "-j", chain] => jumps.push(chain.to_string()),
            ["-A", chain, rule @ ..] => {
                let Some(c) =
                    chain.strip_prefix("N2D-FWD-").and_then(|b| chains.iter_mut().find(|c| c.bridge == b))
                else {
                    continue;
                };
                let b = c.bridge.clone();
                // Anything after the final DROP means the chain was changed by hand.
                c.complete = matches!(rule, ["-i", i, "-j", "DROP"] if *i == b);
                match rule {
                    ["-d", ip, "-o", o, "-j", "ACCEPT"] if *o == b => {
                        c.exposed.push(ip.strip_suffix("/32").unwrap_or(ip).to_string())
                    }
                    ["-s", _, "-i", i, "-o", up, "-j", "ACCEPT"] if *i == b && *up != b => {
                        c.uplink = Some(up.to_string())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for c in &mut chains {
        c.jumped = jumps.iter().any(|j| *j == format!("N2D-FWD-{}", c.bridge));
    }
    (policy, chains)
}

/// The FORWARD policy and what n2d adds to it: its chains, whether they are whole, and which
/// machines accept connections from other networks.
fn check_firewall(probe: &dyn HostProbe, bridge: &str) -> Check {
    let rules = match probe.filter_rules() {
        Ok(rules) => rules,
        Err(why) => {
            return Check::warn(
                "firewall",
                format!("cannot read the firewall rules ({why}): n2d cannot keep other networks from its VMs without iptables"),
                "apt-get install iptables, and run n2d as root",
            )
        }
    };
    let (policy, chains) = parse_forward_rules(&rules);
    let policy = policy.unwrap_or_else(|| "unknown".into());
    let broken: Vec<&N2dChain> = chains.iter().filter(|c| !c.jumped || !c.complete).collect();
    if !broken.is_empty() {
        let names: Vec<String> = broken.iter().map(|c| format!("N2D-FWD-{}", c.bridge)).collect();
        let bridges: Vec<&str> = broken.iter().map(|c| c.bridge.as_str()).collect();
        return Check::warn(
            "firewall",
            format!(
                "FORWARD policy {policy}; n2d's chain {} is incomplete or not jumped to (changed by hand, a firewall reload, or made by an older n2d): new connections from other networks may reach the VMs on {}",
                names.join(", "),
                bridges.join(", ")
            ),
            format!("start or create a machine on {} (n2d fills its chain again)", bridges.join(", ")),
        );
    }
    let mut said: Vec<String> = chains
        .iter()
        .map(|c| {
            let out =
                c.uplink.as_ref().map_or("no uplink".to_string(), |up| format!("outbound through {up}"));
            let exposed = if c.exposed.is_empty() {
                String::new()
            } else {
                format!(", open to other networks (--expose): {}", c.exposed.join(" "))
            };
            format!(
                "N2D-FWD-{} ({out}, replies, new connections from other networks dropped{exposed})",
                c.bridge
            )
        })
        .collect();
    if !chains.iter().any(|c| c.bridge == bridge) {
        said.push(if bridge == DEFAULT_BRIDGE {
            format!("{bridge} gets N2D-FWD-{bridge} with its first machine, appended to FORWARD")
        } else {
            format!("none for {bridge}: n2d adds no rules to a bridge it did not create, so its machines are as reachable as that bridge's network")
        });
    }
    Check::ok("firewall", format!("FORWARD policy {policy}; n2d's chains: {}", said.join("; ")))
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

/// The real host.
pub struct SystemProbe<'a> {
    pub ctx: &'a Ctx,
}

impl SystemProbe<'_> {
    /// The first line of a tool's output, or why it did not run.
    fn tool(&self, cmd: Cmd) -> ToolState {
        match self.ctx.runner.run(&cmd) {
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
        self.ctx.hypervisor.binary().to_string()
    }
    fn qemu_version_output(&self) -> Option<String> {
        let cmd = Cmd::new(self.ctx.hypervisor.binary(), n2d_vm::argv::QEMU_PACKAGE).arg("--version");
        self.ctx.runner.run(&cmd).ok().map(|out| String::from_utf8_lossy(&out).into_owned())
    }
    fn installed(&self, program: &str) -> bool {
        self.ctx.search_path.is_installed_or_in_sbin(program)
    }
    fn cpuinfo(&self) -> String {
        std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
    }
    fn dev_kvm(&self) -> KvmDevice {
        KvmDevice::probe()
    }
    fn no_kvm(&self) -> bool {
        self.ctx.hypervisor.config.no_kvm
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
    fn routes(&self) -> Vec<Route> {
        parse_proc_net_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
    }
    fn link_ipv4(&self, dev: &str) -> Option<Option<(Ipv4Addr, u8)>> {
        self.link_kind(dev)?;
        Some(n2d_net::Links::new(&self.ctx.runner).ipv4_of(dev).ok().flatten())
    }
    fn link_kind(&self, dev: &str) -> Option<String> {
        n2d_net::Links::new(&self.ctx.runner).kind_of(dev)
    }
    fn recorded_subnet(&self, bridge: &str) -> Option<(Ipv4Addr, u8)> {
        let state = self.ctx.net.snapshot().ok()?;
        state.bridges.get(bridge).map(|b| (b.gateway, b.prefix_len))
    }
    fn free_space(&self) -> Result<(PathBuf, u64), String> {
        let root = self.ctx.home.root();
        let dir = root.ancestors().find(|p| p.exists()).ok_or("no part of it exists")?;
        let stat = rustix::fs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
        Ok((dir.to_path_buf(), stat.f_bavail.saturating_mul(stat.f_frsize)))
    }
    fn images(&self) -> Vec<String> {
        n2d_image::list_images(&self.ctx.home).into_iter().map(|i| i.manifest.id).collect()
    }
    fn guest_init(&self) -> Result<String, String> {
        let init = crate::guest_init::guest_init(None).map_err(|e| format!("{e:#}"))?;
        n2d_image::check_static_x86_64(&init.bytes)
            .map_err(|problem| format!("{}: {problem}", init.source))?;
        Ok(init.source)
    }
    fn build_user(&self) -> BuildUser {
        BuildUser::of_this_process()
    }
    fn filter_rules(&self) -> Result<String, String> {
        let cmd = Cmd::new("iptables", "iptables").args(["-w", "5", "-t", "filter", "-S"]);
        let out = self.ctx.runner.run(&cmd).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
    fn run_dir_problem(&self) -> Option<String> {
        let dir = self.ctx.net.dir();
        if !dir.exists() && !dir.is_symlink() {
            return None;
        }
        n2d_net::host::check_run_dir(dir).err().map(|e| e.to_string())
    }
}

/// `create` cannot work here: the failing checks, one line each.
#[derive(Debug, thiserror::Error)]
#[error("this host is not ready for n2d machines (`n2d doctor` shows every check):\n{}", .0.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
pub struct NotReady(pub Vec<Check>);

/// Runs the checks before a create: fails with the failing lines, prints the warnings (but
/// not the KVM one: starting a VM says that itself).
pub fn preflight(ctx: &Ctx, target: &Target) -> Result<(), NotReady> {
    let checks = run_checks(&SystemProbe { ctx }, target);
    let failed: Vec<Check> = checks.iter().filter(|c| c.status == Status::Fail).cloned().collect();
    if !failed.is_empty() {
        return Err(NotReady(failed));
    }
    for c in checks.iter().filter(|c| c.status == Status::Warn && c.name != "kvm") {
        crate::progress::say(format!(
            "warning: {}{}",
            c.finding,
            c.fix.as_ref().map(|f| format!(" (fix: {f})")).unwrap_or_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host where everything is there; each test breaks one thing.
    struct FakeHost {
        qemu: Option<&'static str>,
        missing: Vec<&'static str>,
        cpuinfo: &'static str,
        dev_kvm: KvmDevice,
        euid: u32,
        status: &'static str,
        iptables: ToolState,
        docker: ToolState,
        routes: Vec<Route>,
        links: Vec<(&'static str, Option<(Ipv4Addr, u8)>)>,
        /// Links other than bridges, by kind.
        kinds: Vec<(&'static str, &'static str)>,
        recorded: Option<(Ipv4Addr, u8)>,
        free: Result<u64, String>,
        images: Vec<String>,
        init: Result<String, String>,
        user: BuildUser,
        filter: Result<String, String>,
        run_dir: Option<String>,
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

    fn route(dev: &str, dst: [u8; 4], prefix_len: u8) -> Route {
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

    fn checks(host: &FakeHost) -> Vec<Check> {
        run_checks(host, &Target::default())
    }

    /// The one check named `name`, after asserting that every other one is ok.
    fn only(host: &FakeHost, name: &str) -> Check {
        let all = checks(host);
        for c in all.iter().filter(|c| c.name != name) {
            assert_eq!(c.status, Status::Ok, "{c}");
        }
        all.into_iter().find(|c| c.name == name).expect("check present")
    }

    fn assert_finding(c: &Check, status: Status, finding: &str, fix: &str) {
        assert_eq!(c.status, status, "{c}");
        assert!(c.finding.contains(finding), "{c}");
        assert!(c.fix.as_deref().unwrap_or_default().contains(fix), "{c}");
    }

    #[test]
    fn all_ok_on_a_complete_host() {
        let all = checks(&FakeHost::default());
        let names: Vec<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["qemu", "kvm", "privileges", "iptables", "bridge", "disk", "image", "docker", "firewall"]
        );
        for c in &all {
            assert_eq!(c.status, Status::Ok, "{c}");
            assert_eq!(c.fix, None);
        }
        assert_eq!(all[0].to_string(), "ok   qemu       QEMU 10.0.2 (qemu-system-x86_64), qemu-img");
        assert!(all[4].finding.contains("n2d0 will be created with 10.77.0.1/24"), "{}", all[4]);
    }

    #[test]
    fn qemu_missing_fails() {
        let c = only(&FakeHost { qemu: None, ..Default::default() }, "qemu");
        assert_finding(
            &c,
            Status::Fail,
            "qemu-system-x86_64 is not installed",
            "apt-get install qemu-system-x86",
        );
        assert!(c.to_string().starts_with("FAIL qemu "), "{c}");
        assert!(c.to_string().contains(" — fix: install QEMU: scripts/deps.sh"), "{c}");
    }

    #[test]
    fn qemu_img_missing_fails() {
        let c = only(&FakeHost { missing: vec!["qemu-img"], ..Default::default() }, "qemu");
        assert_finding(&c, Status::Fail, "qemu-img is not installed", "apt-get install qemu-utils");
    }

    #[test]
    fn old_qemu_warns() {
        let host = FakeHost {
            qemu: Some("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"),
            ..Default::default()
        };
        assert_finding(&only(&host, "qemu"), Status::Warn, "QEMU 7.2.19", "scripts/deps.sh");
    }

    #[test]
    fn unparsable_qemu_version_warns() {
        let host = FakeHost { qemu: Some("something else\n"), ..Default::default() };
        assert_finding(&only(&host, "qemu"), Status::Warn, "version is unknown", "QEMU 10");
    }

    #[test]
    fn no_vmx_flag_warns_with_the_reason() {
        let host = FakeHost { cpuinfo: "flags\t\t: fpu vme sse\n", ..Default::default() };
        let c = only(&host, "kvm");
        assert_finding(&c, Status::Warn, "no vmx/svm flag", "VT-x/AMD-V");
        assert!(c.finding.contains("TCG"), "{c}");
    }

    #[test]
    fn unusable_dev_kvm_warns_with_the_reason() {
        let host = FakeHost { dev_kvm: KvmDevice::Missing, ..Default::default() };
        assert_finding(&only(&host, "kvm"), Status::Warn, "/dev/kvm is missing", "modprobe");
        // An ordinary user outside the kvm group is told to ask for it.
        let host = FakeHost { dev_kvm: KvmDevice::NoAccess, ..Default::default() };
        assert_finding(&only(&host, "kvm"), Status::Warn, "may not open /dev/kvm", "usermod -aG kvm");
    }

    #[test]
    fn user_mode_needs_the_switch_but_no_privileges_or_iptables() {
        let target = Target { bridge: USER_NETWORK.into(), image: None };
        let host = FakeHost { euid: 1000, iptables: ToolState::Missing, ..Default::default() };
        let checks = run_checks(&host, &target);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
        assert!(checks.iter().all(|c| c.name != "bridge" && c.name != "iptables"), "{checks:?}");
        let host = FakeHost { euid: 1000, missing: vec!["vde_switch"], ..Default::default() };
        let check = run_checks(&host, &target).into_iter().find(|c| c.name == "network").unwrap();
        assert_finding(&check, Status::Fail, "vde_switch is not installed", "apt-get install vde2");
    }

    #[test]
    fn not_root_without_net_admin_fails() {
        // Image built, so only the privilege check cares.
        let host = FakeHost { euid: 1000, ..Default::default() };
        assert_finding(
            &only(&host, "privileges"),
            Status::Fail,
            "uid 1000 without CAP_NET_ADMIN",
            "run n2d as root",
        );
    }

    #[test]
    fn not_root_with_ambient_net_admin_is_enough() {
        let host = FakeHost {
            euid: 1000,
            status: "CapEff:\t0000000000001000\nCapAmb:\t0000000000001000\n",
            ..Default::default()
        };
        let c = only(&host, "privileges");
        assert_eq!(c.status, Status::Ok, "{c}");
        assert!(c.finding.contains("CAP_NET_ADMIN"), "{c}");
    }

    #[test]
    fn iptables_missing_warns() {
        let host = FakeHost { iptables: ToolState::Missing, ..Default::default() };
        assert_finding(
            &only(&host, "iptables"),
            Status::Warn,
            "no internet access",
            "apt-get install iptables",
        );
    }

    #[test]
    fn iptables_broken_warns() {
        let host = FakeHost {
            iptables: ToolState::Broken("Permission denied (you must be root)".into()),
            ..Default::default()
        };
        assert_finding(&only(&host, "iptables"), Status::Warn, "Permission denied", "nf_tables");
    }

    #[test]
    fn a_run_dir_others_could_change_fails_the_bridge_check() {
        let host = FakeHost {
            run_dir: Some("refusing /run/n2d: writable by others (mode 1777)".into()),
            ..FakeHost::default()
        };
        assert_finding(&only(&host, "bridge"), Status::Fail, "writable by others", "chmod go-w");
        // User-mode machines keep no host-wide state: the run directory does not matter to them.
        let user = run_checks(&host, &Target { bridge: USER_NETWORK.into(), image: None });
        assert!(user.iter().all(|c| !c.finding.contains("writable by others")), "{user:?}");
    }

    #[test]
    fn subnet_clash_with_a_host_route_fails() {
        let mut host = FakeHost::default();
        host.routes.push(route("tun0", [10, 0, 0, 0], 8));
        let c = only(&host, "bridge");
        assert_finding(
            &c,
            Status::Fail,
            "10.77.0.0/24 overlaps the host route 10.0.0.0/8 on tun0",
            "--network",
        );
    }

    #[test]
    fn clash_uses_the_recorded_subnet() {
        let mut host = FakeHost { recorded: Some((Ipv4Addr::new(192, 168, 1, 1), 24)), ..Default::default() };
        host.routes.retain(|r| r.dev != "n2d0");
        assert_finding(
            &only(&host, "bridge"),
            Status::Fail,
            "192.168.1.0/24 overlaps the host route 192.168.1.0/24 on eth0",
            "--network",
        );
    }

    #[test]
    fn the_bridges_own_route_is_no_clash() {
        let mut host = FakeHost::default();
        host.links.push(("n2d0", Some((Ipv4Addr::new(10, 77, 0, 1), 24))));
        let c = only(&host, "bridge");
        assert!(c.finding.contains("n2d0 is up with 10.77.0.1/24"), "{c}");
    }

    #[test]
    fn a_network_that_is_not_a_bridge_fails() {
        let host = FakeHost::default();
        for dev in ["eth0", "lo"] {
            let c = run_checks(&host, &Target { bridge: dev.into(), image: None });
            let c = c.iter().find(|c| c.name == "bridge").unwrap();
            assert_finding(c, Status::Fail, "link, not a bridge", "--network");
        }
    }

    #[test]
    fn ip_missing_fails() {
        let host = FakeHost { missing: vec!["ip"], ..Default::default() };
        assert_finding(
            &only(&host, "bridge"),
            Status::Fail,
            "`ip` is not installed",
            "apt-get install iproute2",
        );
    }

    #[test]
    fn a_named_bridge_must_exist_and_have_an_address() {
        let mut host = FakeHost::default();
        let target = |b: &str| Target { bridge: b.into(), image: None };
        let c = run_checks(&host, &target("br7")).remove(4);
        assert_finding(&c, Status::Fail, "bridge br7 does not exist", "ip link add br7 type bridge");
        host.links.push(("br7", None));
        let c = run_checks(&host, &target("br7")).remove(4);
        assert_finding(&c, Status::Fail, "br7 has no IPv4 address", "ip addr add 10.78.0.1/24 dev br7");
        host.links[1].1 = Some((Ipv4Addr::new(10, 78, 0, 1), 24));
        assert_eq!(run_checks(&host, &target("br7"))[4].status, Status::Ok);
    }

    #[test]
    fn too_little_disk_fails_and_little_warns() {
        let host = FakeHost { free: Ok(512 << 20), ..Default::default() };
        assert_finding(
            &only(&host, "disk"),
            Status::Fail,
            "only 0.5 GiB free under /root/.local/share",
            "N2D_HOME",
        );
        let host = FakeHost { free: Ok(3 << 30), ..Default::default() };
        assert_finding(&only(&host, "disk"), Status::Warn, "3.0 GiB free", "N2D_HOME");
        let host = FakeHost { free: Err("Permission denied".into()), ..Default::default() };
        assert_finding(&only(&host, "disk"), Status::Warn, "Permission denied", "N2D_HOME");
    }

    #[test]
    fn no_image_is_fine_when_one_can_be_built() {
        let host = FakeHost { images: vec![], ..Default::default() };
        let c = only(&host, "image");
        assert_eq!(c.status, Status::Ok, "{c}");
        assert!(c.finding.contains("create builds one first"), "{c}");
    }

    #[test]
    fn no_image_and_no_build_tools_fails() {
        let host =
            FakeHost { images: vec![], missing: vec!["mmdebstrap", "mkfs.erofs"], ..Default::default() };
        assert_finding(
            &only(&host, "image"),
            Status::Fail,
            "needs mmdebstrap (mmdebstrap), mkfs.erofs (erofs-utils)",
            "apt-get install mmdebstrap erofs-utils",
        );
    }

    #[test]
    fn no_image_and_an_unusable_init_override_fails() {
        let host = FakeHost {
            images: vec![],
            init: Err("/tmp/n2d-init: it is dynamically linked".into()),
            ..Default::default()
        };
        assert_finding(&only(&host, "image"), Status::Fail, "dynamically linked", "N2D_INIT");
    }

    /// An ordinary user on bridge networking (ambient CAP_NET_ADMIN), with no image yet.
    fn user_without_image() -> FakeHost {
        FakeHost { images: vec![], euid: 1000, status: "CapAmb:\t0000000000001000\n", ..Default::default() }
    }

    #[test]
    fn no_image_and_not_root_builds_with_uidmap_and_subordinate_ids() {
        let c = only(&user_without_image(), "image");
        assert_eq!(c.status, Status::Ok, "{c}");
        assert!(c.finding.contains("uidmap and subordinate ids for ann"), "{c}");
    }

    #[test]
    fn no_image_and_not_root_without_uidmap_fails() {
        let host = FakeHost { missing: vec!["newuidmap"], ..user_without_image() };
        assert_finding(
            &only(&host, "image"),
            Status::Fail,
            "as an ordinary user needs newuidmap, which is not installed",
            "ask an administrator to install uidmap (apt-get install uidmap)",
        );
    }

    #[test]
    fn no_image_and_not_root_without_subordinate_ids_fails() {
        let mut host = user_without_image();
        host.user.subgid = "bob:100000:65536\n".into();
        let c = only(&host, "image");
        assert_finding(
            &c,
            Status::Fail,
            "/etc/subgid gives ann no range of at least 65536",
            "ask an administrator",
        );
        assert!(c
            .fix
            .unwrap()
            .contains("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ann"));
    }

    #[test]
    fn an_image_built_needs_no_build_checks() {
        let host =
            FakeHost { missing: vec!["newuidmap"], user: BuildUser::default(), ..user_without_image() };
        let host = FakeHost { images: vec!["0123456789abcdef0123".into()], ..host };
        assert_eq!(only(&host, "image").status, Status::Ok);
    }

    #[test]
    fn a_named_image_must_be_built() {
        let host = FakeHost::default();
        let target = |id: &str| Target { bridge: DEFAULT_BRIDGE.into(), image: Some(id.into()) };
        assert_eq!(run_checks(&host, &target("0123"))[6].status, Status::Ok);
        assert_finding(&run_checks(&host, &target("dead"))[6], Status::Fail, "no image dead", "n2d image ls");
    }

    #[test]
    fn docker_cli_missing_warns() {
        let host = FakeHost { docker: ToolState::Missing, ..Default::default() };
        assert_finding(&only(&host, "docker"), Status::Warn, "no docker CLI", "apt-get install docker.io");
    }

    #[test]
    fn proc_net_route_is_parsed() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    n2d0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_net_route(text),
            vec![
                route("eth0", [0, 0, 0, 0], 0),
                route("eth0", [192, 0, 2, 0], 24),
                route("n2d0", [10, 77, 0, 0], 24)
            ]
        );
    }

    #[test]
    fn not_ready_lists_the_failing_lines() {
        let host = FakeHost { qemu: None, free: Ok(1), ..Default::default() };
        let failed: Vec<Check> = checks(&host).into_iter().filter(|c| c.status == Status::Fail).collect();
        let msg = NotReady(failed).to_string();
        assert!(msg.contains("\n  FAIL qemu "), "{msg}");
        assert!(msg.contains("\n  FAIL disk "), "{msg}");
    }

    /// `iptables -S` of a host where n2d installed the chain of n2d0 (uplink eth0), exposing
    /// `exposed`, with the FORWARD policy `policy`.
    fn filter_with_n2d(policy: &str, exposed: &[Ipv4Addr]) -> String {
        let (forward, _) = n2d_net::nat::rules("n2d0", "10.77.0.0/24", Some("eth0"), exposed);
        let mut text = format!(
            "-P INPUT ACCEPT\n-P FORWARD {policy}\n-P OUTPUT ACCEPT\n-N DOCKER-USER\n-N N2D-FWD-n2d0\n"
        );
        text.push_str("-A FORWARD -j DOCKER-USER\n-A FORWARD -j N2D-FWD-n2d0\n");
        for rule in forward {
            text.push_str(&format!("-A N2D-FWD-n2d0 {}\n", rule.join(" ")));
        }
        text
    }

    #[test]
    fn firewall_reports_the_policy_and_n2ds_chains() {
        let c = only(&FakeHost::default(), "firewall");
        assert!(c.finding.contains("FORWARD policy ACCEPT"), "{c}");
        assert!(c.finding.contains("n2d0 gets N2D-FWD-n2d0 with its first machine"), "{c}");

        let host = FakeHost {
            filter: Ok(filter_with_n2d("DROP", &[Ipv4Addr::new(10, 77, 0, 5)])),
            ..Default::default()
        };
        let c = only(&host, "firewall");
        assert!(c.finding.contains("FORWARD policy DROP"), "{c}");
        assert!(c.finding.contains("N2D-FWD-n2d0 (outbound through eth0, replies, new connections from other networks dropped, open to other networks (--expose): 10.77.0.5)"), "{c}");

        // A bridge n2d did not create gets no rules, and doctor says so.
        let host = FakeHost { filter: Ok(filter_with_n2d("ACCEPT", &[])), ..Default::default() };
        let mut host = host;
        host.links.push(("br7", Some((Ipv4Addr::new(10, 78, 0, 1), 24))));
        let c = run_checks(&host, &Target { bridge: "br7".into(), image: None }).pop().unwrap();
        assert_eq!(c.status, Status::Ok, "{c}");
        assert!(c.finding.contains("none for br7: n2d adds no rules to a bridge it did not create"), "{c}");
    }

    #[test]
    fn an_incomplete_or_unjumped_n2d_chain_warns() {
        let whole = filter_with_n2d("ACCEPT", &[]);
        // Hostile or stale: the drops gone (an older n2d, a flush by hand), a rule after them,
        // the FORWARD jump gone.
        let no_drops: String =
            whole.lines().filter(|l| !l.ends_with("-j DROP")).map(|l| format!("{l}\n")).collect();
        let after = format!("{whole}-A N2D-FWD-n2d0 -j ACCEPT\n");
        let unjumped = whole.replace("-A FORWARD -j N2D-FWD-n2d0\n", "");
        for filter in [no_drops, after, unjumped] {
            let host = FakeHost { filter: Ok(filter.clone()), ..Default::default() };
            assert_finding(
                &only(&host, "firewall"),
                Status::Warn,
                "N2D-FWD-n2d0 is incomplete",
                "start or create a machine on n2d0",
            );
        }
        let host = FakeHost { filter: Err("iptables: Permission denied".into()), ..Default::default() };
        assert_finding(
            &only(&host, "firewall"),
            Status::Warn,
            "Permission denied",
            "apt-get install iptables",
        );
    }
}
