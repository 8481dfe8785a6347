//! The checks: each a pure function of the facts a [`HostProbe`] gathers.

use super::probe::{HostProbe, ToolState};
use super::report::Check;
use super::Target;
use n2d_image::unshare::{check_unshare, UIDMAP_PACKAGE};
use n2d_image::BuildError;
use n2d_spec::machine::{DEFAULT_BRIDGE, USER_NETWORK};
use n2d_vm::accel::choose_accel;
use n2d_vm::QemuVersion;
use std::net::Ipv4Addr;

/// Below this much free space under `$N2D_HOME`, `create` cannot work (an image is ~0.3 GB, a
/// fresh data disk and the TCG translation cache's swap need room too).
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Below this, it works but images and data disks will soon fill the disk.
pub const LOW_FREE_BYTES: u64 = 5 << 30;
/// The QEMU release n2d is tested with.
pub const TESTED_QEMU: QemuVersion = QemuVersion::new(10, 0, 0);

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
            check_virtiofsd(probe, target.mounts),
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
        check_virtiofsd(probe, target.mounts),
        check_firewall(probe, &target.bridge),
    ]
}

/// virtiofsd serves host folders: a machine with `--mount` cannot start without it; for the
/// rest it is a warning (`n2d doctor`).
fn check_virtiofsd(probe: &dyn HostProbe, needed: bool) -> Check {
    const FIX: &str =
        "scripts/deps.sh (Debian 13: apt-get install virtiofsd; Debian 12: built from crates.io)";
    let missing = |what: String| {
        if needed {
            Check::fail("virtiofsd", format!("{what}: host folders (--mount) need it"), FIX)
        } else {
            Check::warn("virtiofsd", format!("{what}: machines work, but not host folders (--mount)"), FIX)
        }
    };
    match probe.virtiofsd() {
        ToolState::Works(version) => {
            Check::ok("virtiofsd", format!("{version}: host folders (--mount) work"))
        }
        ToolState::Missing => missing("no virtiofsd".into()),
        ToolState::Broken(why) => missing(format!("virtiofsd does not run ({why})")),
    }
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
                "FORWARD policy {policy}; n2d's chain {} is incomplete or not jumped to (changed by hand or by a firewall reload): new connections from other networks may reach the VMs on {}",
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
