//! The boot sequence: stage 1 in the initramfs, stage 2 on the real root.

use crate::config::Source;
use crate::error::{self, Result};
use crate::identity::{self, Role};
use crate::log::info;
use crate::mounts::Medium;
use crate::supervisor::Supervisor;
use crate::sys::System;
use crate::{config, console, datadisk, docker, modules, mounts, net};

use n2d_proto::MODULE_LIST;

/// Stage 1: kernel filesystems, root-disk drivers, erofs + overlay root becomes `/`. Returns
/// what the machine booted from. n2d's own VMs load only [`modules::OWN_ROOT_MODULES`]; the
/// rest of the initramfs's list (other hypervisors' disks and NICs, CDs, loop) loads only when
/// their serial root disk does not appear.
pub fn stage1(sys: &dyn System) -> Result<Medium> {
    mounts::mount_kernel_filesystems(sys)?;
    sys.attach_console();
    info!("stage 1: /dev /proc /sys mounted");
    let dir = modules::modules_dir(sys);
    let (own, more) = modules::split_own_root(modules::read_list(sys, MODULE_LIST)?);
    let loaded = modules::load_names(sys, &own, &dir, true)?;
    info!("stage 1: {loaded} modules loaded");
    let root = mounts::find_root(sys, &mut || match modules::load_names(sys, &more, &dir, false) {
        Ok(n) => info!("stage 1: {n} more modules loaded (other hypervisors, CDs)"),
        Err(e) => info!("stage 1: more modules: {e}"),
    })?;
    mounts::switch_root(sys, &root.device)?;
    info!("switched to the new root");
    Ok(root.medium)
}

/// Stage 2: makes the real root a Docker host; returns the supervisor, services not yet started.
/// A template (see [`crate::identity`]) gets no network identity: its NICs stay down, without an
/// address, and dockerd serves its local socket only, until a clone of it takes its identity.
pub fn stage2(sys: &dyn System, medium: &Medium) -> Result<Supervisor> {
    mounts::mount_runtime_filesystems(sys)?;
    info!("runtime filesystems and cgroup2 mounted");
    let loaded = modules::load_listed(sys, MODULE_LIST, &modules::modules_dir(sys), false)?;
    info!("stage 2: {loaded} modules loaded");
    let (config, source) = config::find_config(sys, medium)?;
    let role = if config.template { "template" } else { "machine" };
    info!("config: {role}, hostname {}, tls {}", config.hostname, config.docker.tls.is_some());
    match identity::mix_seed(sys, &config) {
        Ok(()) if config.seed.is_some() => info!("seed: the host's mixed into the kernel's RNG"),
        Ok(()) => {}
        Err(e) => info!("seed: {}; the kernel's own entropy only", error::one_line(&e)),
    }
    let config = if config.template { identity::as_template(&config) } else { config };
    net::write_identity(sys, &config)?;
    let network = if config.template {
        net::bring_up_loopback(sys)?;
        info!("template: NICs left down, without an address, until a clone takes its identity");
        None
    } else {
        Some(net::configure(sys, &config)?)
    };
    if let Some(network) = network.as_ref().filter(|n| n.dhcp.as_ref().is_some_and(|d| d.lease.is_none())) {
        info!("{} has no address yet", network.ifname);
    }
    datadisk::mount_data(sys, medium)?;
    mounts::mount_host_folders(sys, &config);
    docker::write_config(sys, &config)?;
    info!("wrote {}", docker::DAEMON_JSON);
    let shells = match source {
        Source::Default => console::local_shells(sys),
        Source::Machine(_) => console::shell_service(sys).into_iter().collect(),
    };
    match shells.first() {
        Some(_) => info!("root shell on {}", shells.iter().map(tty_of).collect::<Vec<_>>().join(", ")),
        None => info!("no {}; no console shell", console::CONSOLE_TTY),
    }
    let mut supervisor = Supervisor::new(sys, shells);
    if *medium != Medium::Serial {
        let address = network.as_ref().and_then(|n| n.address(&config));
        supervisor.ready_notes = ready_notes(&config, &source, address);
    }
    supervisor.dhcp = network.and_then(|n| n.dhcp);
    if config.template {
        supervisor.role = Role::Template(Box::new(config));
    }
    Ok(supervisor)
}

fn tty_of(spec: &crate::sys::ServiceSpec) -> String {
    match &spec.io {
        crate::sys::ServiceIo::Terminal(tty) => tty.clone(),
        crate::sys::ServiceIo::LogFile(path) => path.clone(),
    }
}

/// What an export's console says once Docker answers: how to reach it.
pub fn ready_notes(
    config: &n2d_proto::GuestConfig,
    source: &Source,
    address: Option<std::net::Ipv4Addr>,
) -> Vec<String> {
    let host = address.map_or_else(|| "<this machine's address>".to_string(), |a| a.to_string());
    let port = config.docker.tcp_port;
    match source {
        Source::Default => vec![
            format!("n2d: Docker answers on this machine's local socket only ({}), from this console:", docker::DOCKER_SOCKET),
            "n2d:   this disk was made for no machine; for a TLS endpoint, make one with".into(),
            "n2d:   `n2d image export --for NAME` and boot that".into(),
        ],
        Source::Machine(_) if port == 0 => {
            vec![format!("n2d: Docker answers on this machine's local socket only ({})", docker::DOCKER_SOCKET)]
        }
        Source::Machine(_) if config.docker.tls.is_some() => vec![format!(
            "n2d: Docker: DOCKER_HOST=tcp://{host}:{port} DOCKER_TLS_VERIFY=1 (the client certificate of the n2d home that made this export)"
        )],
        Source::Machine(_) => vec![format!("n2d: Docker: DOCKER_HOST=tcp://{host}:{port} (no TLS)")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::sys::fake::FakeSystem;
    use n2d_proto::encode_config_disk;

    fn guest() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.add_file("/proc/sys/kernel/osrelease", "6.12.0-1-cloud-amd64\n");
        sys.add_file(MODULE_LIST, "virtio-net\n");
        sys.add_file(
            "/usr/lib/modules/6.12.0-1-cloud-amd64/modules.dep",
            "kernel/drivers/net/virtio_net.ko.xz:\n",
        );
        sys.add_disk("vda", "n2d-root", "");
        sys.add_disk("vdb", "n2d-config", encode_config_disk(&sample_config()).unwrap());
        sys.add_disk("vdc", "n2d-data", vec![0u8; 4096]);
        sys.add_file("/sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        sys.add_file("/dev/hvc0", "");
        sys
    }

    #[test]
    fn stage2_sets_up_a_docker_host_in_order() {
        let sys = guest();
        let mut supervisor = stage2(&sys, &Medium::Serial).unwrap();
        let calls = sys.calls();
        let pos = |needle: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} not in {calls:#?}"))
        };
        assert!(
            pos("load /usr/lib/modules/6.12.0-1-cloud-amd64/kernel/drivers/net/virtio_net.ko.xz")
                < pos("run ip")
        );
        assert!(pos("sethostname node-1") < pos("run ip link set eth0 up"));
        assert!(pos("run mkfs.ext4") < pos("mount /dev/vdc /var/lib/docker -t ext4"));
        assert!(pos("mount /dev/vdc") < pos("write /etc/docker/daemon.json"));
        assert_eq!(sys.file("/etc/docker/tls/server-key.pem").unwrap().1, 0o600);
        let daemon = sys.file_text("/etc/docker/daemon.json");
        assert!(daemon.contains("/etc/docker/tls/server-key.pem") && daemon.contains("zone=a"));

        // Nothing runs before the supervisor starts it; then containerd and the shell come up.
        assert!(!calls.iter().any(|c| c.starts_with("spawn")));
        supervisor.tick(&sys);
        assert_eq!(sys.calls()[calls.len()..], ["spawn containerd", "spawn console"]);
    }

    fn boot_with(config: &n2d_proto::GuestConfig) -> (FakeSystem, Supervisor) {
        let sys = guest();
        sys.add_file("/sys/class/net/eth1/address", "52:54:00:00:00:02\n");
        sys.add_disk("vdb", "n2d-config", encode_config_disk(config).unwrap());
        let supervisor = stage2(&sys, &Medium::Serial).unwrap();
        (sys, supervisor)
    }

    #[test]
    fn a_template_boots_without_network_identity_and_serves_its_local_socket_only() {
        let mut config = sample_config();
        config.template = true;
        config.uplink = Some(n2d_proto::GuestUplink { mac: "52:54:00:00:00:02".into() });
        // The host sends a template neither; should it, they are ignored.
        assert!(config.docker.tls.is_some() && config.docker.tcp_port != 0);
        let (sys, mut supervisor) = boot_with(&config);
        let calls = sys.calls();
        let ip: Vec<&String> =
            calls.iter().filter(|c| c.starts_with("run ip") || c.starts_with("dhcp")).collect();
        assert_eq!(ip, ["run ip link set lo up"], "a template's NICs stay down, without an address");
        assert!(!calls.iter().any(|c| c.starts_with("run iptables")));
        let daemon: serde_json::Value = serde_json::from_str(&sys.file_text(docker::DAEMON_JSON)).unwrap();
        assert_eq!(daemon["hosts"], serde_json::json!(["unix:///run/docker.sock"]));
        assert!(daemon.get("tlsverify").is_none(), "{daemon}");
        assert!(!calls.iter().any(|c| c.starts_with("write /etc/docker/tls/")), "a template wrote TLS files");
        assert!(supervisor.dhcp.is_none());
        // The supervisor keeps the template's config, for its MACs, but no key or port.
        let Role::Template(kept) = &supervisor.role else { panic!("{:?}", supervisor.role) };
        assert_eq!(kept.network.mac, "52:54:00:12:34:56");
        assert_eq!(kept.uplink.as_ref().unwrap().mac, "52:54:00:00:00:02");
        assert_eq!(kept.docker, n2d_proto::DockerConfig { tls: None, tcp_port: 0 });
        // Otherwise a normal boot: containerd and dockerd run.
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        supervisor.tick(&sys);
        assert!(sys.pid_of("containerd").is_some() && sys.pid_of("dockerd").is_some());
    }

    #[test]
    fn a_machine_boots_with_its_role_and_network() {
        let (sys, supervisor) = boot_with(&sample_config());
        assert_eq!(supervisor.role, Role::Machine);
        assert!(sys.calls().contains(&"run ip addr add 10.77.0.2/24 dev eth0".to_string()));
    }

    #[test]
    fn the_hosts_seed_is_mixed_in_right_after_the_config_is_read_and_only_when_there_is_one() {
        let (sys, _) = boot_with(&sample_config());
        assert!(!sys.calls().iter().any(|c| c.starts_with("mix-entropy")));

        for template in [false, true] {
            let mut config = sample_config();
            config.seed = Some(n2d_proto::Seed([3; 32]));
            config.template = template;
            let (sys, _) = boot_with(&config);
            let calls = sys.calls();
            let mixed = calls.iter().position(|c| c == "mix-entropy 32 bytes").expect("seed mixed");
            assert_eq!(calls.iter().filter(|c| c.starts_with("mix-entropy")).count(), 1);
            assert!(mixed < calls.iter().position(|c| c == "sethostname node-1").unwrap());
            assert!(calls[mixed - 1].starts_with("load "), "not right after the config: {calls:#?}");
        }
    }

    #[test]
    fn stage1_loads_modules_then_switches_root() {
        let sys = guest();
        stage1(&sys).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mount devtmpfs /dev -t devtmpfs mode=0755");
        // virtio_net is not one of n2d's own root modules: not loaded when the serial root is there.
        assert_eq!(calls[3], "mount /dev/vda /sysroot/lower -t erofs ro");
        assert_eq!(calls.last().unwrap(), "chdir /");
    }

    const INITRD_DEP: &str = "kernel/drivers/block/virtio_blk.ko:\n\
kernel/fs/erofs/erofs.ko:\n\
kernel/fs/overlayfs/overlay.ko:\n\
kernel/drivers/scsi/scsi_mod.ko:\n\
kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko\n";

    fn initramfs() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.add_file("/proc/sys/kernel/osrelease", "6.12\n");
        sys.add_file(MODULE_LIST, "virtio_blk\nerofs\noverlay\nvirtio_scsi\nsd_mod\n");
        sys.add_file("/usr/lib/modules/6.12/modules.dep", INITRD_DEP);
        sys
    }

    fn loads(sys: &FakeSystem) -> Vec<String> {
        let calls = sys.calls();
        let loads = calls.iter().filter_map(|c| c.strip_prefix("load /usr/lib/modules/6.12/kernel/"));
        loads.map(|c| c.rsplit('/').next().unwrap().to_string()).collect()
    }

    #[test]
    fn own_vms_load_three_modules_and_boot_from_the_serial_disk() {
        let sys = initramfs();
        sys.add_disk("vda", "n2d-root", "");
        assert_eq!(stage1(&sys).unwrap(), Medium::Serial);
        assert_eq!(loads(&sys), ["virtio_blk.ko", "erofs.ko", "overlay.ko"]);
    }

    #[test]
    fn an_export_loads_the_other_drivers_then_boots_from_its_partition() {
        let sys = initramfs();
        sys.add_plain_disk("sda", vec![0u8; 4096]);
        sys.add_partition("sda", 2, "n2d-root", 2048, "");
        assert_eq!(stage1(&sys).unwrap(), Medium::Disk { disk: "sda".into() });
        assert_eq!(
            loads(&sys),
            ["virtio_blk.ko", "erofs.ko", "overlay.ko", "scsi_mod.ko", "virtio_scsi.ko", "sd_mod.ko"]
        );
        assert!(sys.calls().contains(&"mount /dev/sda2 /sysroot/lower -t erofs ro".to_string()));
    }

    #[test]
    fn an_export_made_for_no_machine_leases_serves_locally_and_says_so() {
        let sys = FakeSystem::new();
        sys.add_file("/proc/sys/kernel/osrelease", "6.12\n");
        sys.add_plain_disk("vda", vec![0u8; 8192]);
        sys.add_partition("vda", 2, "n2d-root", 2048, "");
        sys.add_partition("vda", 3, "n2d-config", 4096, vec![0u8; 4096]);
        sys.add_partition("vda", 4, "n2d-data", 8192, vec![0u8; 4096]);
        sys.add_file("/sys/class/net/eth0/type", "1\n");
        sys.add_file("/sys/class/net/eth0/address", "52:54:00:ab:cd:ef\n");
        sys.add_dir("/sys/class/net/eth0/device");
        sys.add_file("/dev/ttyS0", "");
        sys.state.borrow_mut().dhcp_server = Some(Box::new(crate::dhcp::tests::server(3600)));
        let medium = Medium::Disk { disk: "vda".into() };
        let mut supervisor = stage2(&sys, &medium).unwrap();
        assert_eq!(sys.file_text("/etc/hostname"), "n2d-abcdef\n");
        let daemon: serde_json::Value = serde_json::from_str(&sys.file_text(docker::DAEMON_JSON)).unwrap();
        assert_eq!(daemon["hosts"], serde_json::json!(["unix:///run/docker.sock"]));
        assert!(sys.calls().iter().any(|c| c.starts_with("run mkfs.ext4") && c.ends_with("/dev/vda4")));
        assert!(supervisor.ready_notes[0].contains("local socket only"));
        assert!(supervisor.ready_notes.iter().any(|n| n.contains("n2d image export --for NAME")));
        assert!(supervisor.dhcp.as_ref().unwrap().lease.is_some());
        supervisor.tick(&sys);
        assert!(sys.calls().contains(&"spawn console-ttyS0".to_string()));
    }

    #[test]
    fn an_export_made_for_a_machine_names_its_tls_endpoint() {
        let config = sample_config();
        let notes =
            ready_notes(&config, &Source::Machine("/dev/vda3".into()), Some("10.0.0.9".parse().unwrap()));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("tcp://10.0.0.9:2376 DOCKER_TLS_VERIFY=1"), "{notes:?}");
    }
}
