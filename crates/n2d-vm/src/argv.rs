//! The QEMU command line, as a pure function of the VM's configuration.

use crate::{Accel, VmConfig};
use n2d_proto::{CONFIG_DISK_SERIAL, CONTROL_PORT_NAME, DATA_DISK_SERIAL, ROOT_DISK_SERIAL};

/// Files QEMU creates in the machine directory (it runs with that directory as its cwd, so the
/// socket paths stay short whatever the length of `$N2D_HOME`).
pub const SERIAL_LOG: &str = "serial.log";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const PID_FILE: &str = "qemu.pid";
/// The machine's data disk, in its directory; its path also identifies the machine's QEMU process.
pub const DATA_DISK_FILE: &str = "data.qcow2";
/// The machine's config disk (n2d-proto's format), in its directory.
pub const CONFIG_DISK_FILE: &str = "config.img";

pub const QEMU_BINARY: &str = "qemu-system-x86_64";
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Kernel command line: console on the first serial port (logged to `serial.log`); a panic
/// reboots at once, and `-no-reboot` turns that into QEMU exiting.
/// `no_timer_check`: on a busy host the kernel's boot-time check of the emulated 8254 timer
/// can fail and stall or panic the boot.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4 no_timer_check";

pub fn qemu_argv(vm: &VmConfig, accel: Accel) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // TCG runs one thread for all vCPUs: QEMU 7.2's multi-threaded TCG can let one vCPU run
    // stale code while another patches the kernel's text (seen as a guest panic on an int3
    // left by a static-branch patch). With several VMs on few host cores it costs nothing.
    let (accel_opt, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg,thread=single", "max"),
    };
    let drive = |id: &str, path: &std::path::Path, format: &str, extra: &str| {
        format!("file={},if=none,id={id},format={format}{extra}", path.display())
    };
    push(&["-name", &format!("n2d-{}", vm.name)]);
    push(&["-machine", "q35", "-accel", accel_opt, "-cpu", cpu]);
    push(&["-smp", &vm.cpus.to_string(), "-m", &format!("{}M", vm.memory_mib)]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    push(&["-kernel", &vm.kernel.display().to_string(), "-initrd", &vm.initrd.display().to_string()]);
    push(&["-append", KERNEL_CMDLINE]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={SERIAL_LOG},append=on"),
        "-serial",
        "chardev:serial0",
    ]);
    // The root filesystem is shared read-only by every VM of the image; n2d-init puts a tmpfs
    // overlay on it, so no per-VM copy (or copy-on-write layer) is needed.
    push(&["-drive", &drive("root", &vm.rootfs, "raw", ",readonly=on")]);
    push(&["-device", &format!("virtio-blk-pci,drive=root,serial={ROOT_DISK_SERIAL}")]);
    push(&["-drive", &drive("config", &vm.dir.join(CONFIG_DISK_FILE), "raw", ",readonly=on")]);
    push(&["-device", &format!("virtio-blk-pci,drive=config,serial={CONFIG_DISK_SERIAL}")]);
    push(&["-drive", &drive("data", &vm.dir.join(DATA_DISK_FILE), "qcow2", ",discard=unmap")]);
    push(&["-device", &format!("virtio-blk-pci,drive=data,serial={DATA_DISK_SERIAL}")]);
    push(&["-netdev", &format!("tap,id=net0,ifname={},script=no,downscript=no", vm.tap)]);
    push(&["-device", &format!("virtio-net-pci,netdev=net0,mac={}", vm.mac)]);
    // Entropy at boot: TLS and swarm's raft start immediately.
    push(&["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]);
    // Dynamic memory: the guest hands freed pages back to the host.
    push(&["-device", "virtio-balloon-pci,free-page-reporting=on"]);
    push(&["-device", "virtio-serial-pci"]);
    push(&["-chardev", &format!("socket,id=console,path={CONSOLE_SOCKET},server=on,wait=off")]);
    push(&["-device", "virtconsole,chardev=console"]);
    push(&["-chardev", &format!("socket,id=control,path={CONTROL_SOCKET},server=on,wait=off")]);
    push(&["-device", &format!("virtserialport,chardev=control,name={CONTROL_PORT_NAME}")]);
    push(&["-qmp", &format!("unix:{QMP_SOCKET},server=on,wait=off")]);
    push(&["-pidfile", PID_FILE, "-daemonize"]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vm() -> VmConfig {
        VmConfig {
            name: "h1".into(),
            dir: PathBuf::from("/state/machines/h1"),
            cpus: 2,
            memory_mib: 2048,
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            rootfs: "/img/rootfs.erofs".into(),
            tap: "n2dt1234".into(),
            mac: "52:54:00:aa:bb:cc".into(),
        }
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn tcg_and_kvm_pick_their_cpu_models() {
        let tcg = qemu_argv(&vm(), Accel::Tcg);
        assert_eq!(after(&tcg, "-accel"), ["tcg,thread=single"]);
        assert_eq!(after(&tcg, "-cpu"), ["max"]);
        let kvm = qemu_argv(&vm(), Accel::Kvm);
        assert_eq!(after(&kvm, "-accel"), ["kvm"]);
        assert_eq!(after(&kvm, "-cpu"), ["host"]);
    }

    #[test]
    fn resources_disks_and_nic_come_from_the_config() {
        let argv = qemu_argv(&vm(), Accel::Tcg);
        assert_eq!(after(&argv, "-smp"), ["2"]);
        assert_eq!(after(&argv, "-m"), ["2048M"]);
        assert_eq!(
            after(&argv, "-drive"),
            [
                "file=/img/rootfs.erofs,if=none,id=root,format=raw,readonly=on",
                "file=/state/machines/h1/config.img,if=none,id=config,format=raw,readonly=on",
                "file=/state/machines/h1/data.qcow2,if=none,id=data,format=qcow2,discard=unmap",
            ]
        );
        let devices = after(&argv, "-device");
        assert!(devices.contains(&"virtio-blk-pci,drive=root,serial=n2d-root"));
        assert!(devices.contains(&"virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc"));
        assert!(devices.contains(&"virtio-balloon-pci,free-page-reporting=on"));
        assert!(devices.contains(&"virtserialport,chardev=control,name=org.n2d.control"));
        assert_eq!(after(&argv, "-netdev"), ["tap,id=net0,ifname=n2dt1234,script=no,downscript=no"]);
    }

    #[test]
    fn vm_is_daemonized_headless_and_never_reboots() {
        let argv = qemu_argv(&vm(), Accel::Tcg);
        for flag in ["-daemonize", "-no-reboot", "-nodefaults"] {
            assert!(argv.iter().any(|a| a == flag), "{flag}");
        }
        assert_eq!(after(&argv, "-pidfile"), [PID_FILE]);
        assert_eq!(after(&argv, "-append"), [KERNEL_CMDLINE]);
        assert!(after(&argv, "-chardev")[0].contains("path=serial.log,append=on"));
    }
}
