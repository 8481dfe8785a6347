//! The boot sequence: stage 1 in the initramfs, stage 2 on the real root.

use crate::error::Result;
use crate::log::info;
use crate::supervisor::Supervisor;
use crate::sys::System;
use crate::{config, console, datadisk, docker, modules, mounts, net};

use n2d_proto::MODULE_LIST;

/// Stage 1: kernel filesystems, root-disk drivers, erofs + overlay root becomes `/`.
pub fn stage1(sys: &dyn System) -> Result<()> {
    mounts::mount_kernel_filesystems(sys)?;
    sys.attach_console();
    info!("stage 1: /dev /proc /sys mounted");
    let loaded = modules::load_listed(sys, MODULE_LIST, &modules::modules_dir(sys), true)?;
    info!("stage 1: {loaded} modules loaded");
    mounts::switch_root(sys)?;
    info!("switched to the new root");
    Ok(())
}

/// Stage 2: makes the real root a Docker host; returns the supervisor, services not yet started.
pub fn stage2(sys: &dyn System) -> Result<Supervisor> {
    mounts::mount_runtime_filesystems(sys)?;
    info!("runtime filesystems and cgroup2 mounted");
    let loaded = modules::load_listed(sys, MODULE_LIST, &modules::modules_dir(sys), false)?;
    info!("stage 2: {loaded} modules loaded");
    let config = config::read_config(sys)?;
    info!("config: hostname {}, tls {}", config.hostname, config.docker.tls.is_some());
    net::write_identity(sys, &config)?;
    net::configure(sys, &config)?;
    datadisk::mount_data_disk(sys)?;
    docker::write_config(sys, &config)?;
    info!("wrote {}", docker::DAEMON_JSON);
    let shell = console::shell_service(sys);
    match shell {
        Some(_) => info!("root shell on {}", console::CONSOLE_TTY),
        None => info!("no {}; no console shell", console::CONSOLE_TTY),
    }
    Ok(Supervisor::new(sys, shell))
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
        let mut supervisor = stage2(&sys).unwrap();
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

    #[test]
    fn stage1_loads_modules_then_switches_root() {
        let sys = guest();
        stage1(&sys).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], "mount devtmpfs /dev -t devtmpfs mode=0755");
        assert!(calls[3].starts_with("load ") && calls[3].ends_with("virtio_net.ko.xz (compressed)"));
        assert_eq!(calls[4], "mount /dev/vda /sysroot/lower -t erofs ro");
        assert_eq!(calls.last().unwrap(), "chdir /");
    }
}
