//! The QEMU command line, as a pure function of the VM's configuration.

use crate::{Accel, Memory, Nic, PortForward, QemuVersion, VmHandle, VmLaunch};
use n2d_proto::{CONFIG_DISK_SERIAL, CONTROL_PORT_NAME, DATA_DISK_SERIAL, EXEC_PORT_NAME, ROOT_DISK_SERIAL};

/// Files QEMU creates in the machine directory (it runs with that directory as its cwd, so the
/// socket paths stay short whatever the length of `$N2D_HOME`).
pub const SERIAL_LOG: &str = "serial.log";
pub const QMP_SOCKET: &str = "qmp.sock";
pub const CONSOLE_SOCKET: &str = "console.sock";
pub const CONTROL_SOCKET: &str = "control.sock";
/// Bumped whenever the devices of a VM change: a saved state (a warm template, a suspended
/// machine) loads only into the devices it was saved from, so [`crate::Hypervisor::build`]
/// names it. 2: the exec port.
pub const DEVICE_LAYOUT: u32 = 2;
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
/// can fail and stall or panic the boot. `tsc=reliable`: the guest's clock is QEMU's TSC (the
/// guest picks it under TCG too); without this the kernel checks it against the emulated HPET
/// twice a second, forever, which an idle machine pays for under emulation (idle CPU 6-17 %
/// lower, BENCHMARKS.md "Calm under load").
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4 no_timer_check tsc=reliable";

/// How TCG maps vCPUs to host threads: `single` runs all of a VM's vCPUs round-robin on one host
/// thread, `multi` (MTTCG) gives each vCPU its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcgThread {
    Single,
    Multi,
}

impl TcgThread {
    pub fn as_str(self) -> &'static str {
        match self {
            TcgThread::Single => "single",
            TcgThread::Multi => "multi",
        }
    }
}

impl std::fmt::Display for TcgThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TCG's translation cache per VM, in MiB (QEMU's own default is 1 GiB). Measured side by side
/// (BENCHMARKS.md, "What was cut"): 128 MiB kept an idle node's QEMU RSS ~85 MB lower (566 vs
/// 649 MB) at no measurable cost in boot time; 64 MiB saved ~155 MB but made boots 1.14x slower
/// (the cache flushes), and 256 MiB saved nothing.
pub const TCG_TB_SIZE_MIB: u32 = 128;

/// Overrides [`TCG_TB_SIZE_MIB`] (a number of MiB, 16 to [`MAX_TCG_TB_SIZE_MIB`]), e.g. to
/// measure another size.
pub const TCG_TB_SIZE_ENV: &str = "N2D_TCG_TB_SIZE";
/// The largest translation cache accepted: QEMU's own limit for an x86-64 host (2 GiB).
pub const MAX_TCG_TB_SIZE_MIB: u32 = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{TCG_TB_SIZE_ENV}={value:?} is not valid: use a size in MiB from 16 to {MAX_TCG_TB_SIZE_MIB} (default {TCG_TB_SIZE_MIB})"
)]
pub struct InvalidTbSize {
    pub value: String,
}

/// `$N2D_TCG_TB_SIZE`'s value: MiB, 16 to [`MAX_TCG_TB_SIZE_MIB`].
pub fn parse_tb_size(value: &str) -> Result<u32, InvalidTbSize> {
    match value.trim().parse::<u32>() {
        Ok(mib) if (16..=MAX_TCG_TB_SIZE_MIB).contains(&mib) => Ok(mib),
        _ => Err(InvalidTbSize { value: value.to_string() }),
    }
}

/// A value inside one of QEMU's option lists (`key=value,key=value`): QEMU reads `,,` as a
/// literal comma, so doubling every comma keeps a value (a path under a home named `a,b`, or a
/// MAC read from a record) from ending early and adding options of its own
/// (`mac=…,romfile=/x`). Every value n2d puts in an option list goes through this.
pub fn opt_value(value: &str) -> String {
    value.replace(',', ",,")
}

/// How TCG runs a VM: its threading and the size of its translation cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcg {
    pub thread: TcgThread,
    pub tb_size_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TCG_THREAD_ENV}={value:?} is not valid: use single or multi")]
pub struct InvalidTcgThread {
    pub value: String,
}

impl std::str::FromStr for TcgThread {
    type Err = InvalidTcgThread;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "single" => Ok(TcgThread::Single),
            "multi" => Ok(TcgThread::Multi),
            _ => Err(InvalidTcgThread { value: s.to_string() }),
        }
    }
}

/// Forces the TCG threading mode whatever the QEMU version (`single` or `multi`).
pub const TCG_THREAD_ENV: &str = "N2D_TCG_THREAD";

/// The first QEMU release whose multi-threaded TCG n2d uses by default: none yet.
///
/// QEMU 7.2's multi-threaded TCG can let one vCPU run stale code while another patches the
/// kernel's text (a guest panic ~1.5 s into boot, on an int3 left by a static-branch patch in
/// `sched_clock_cpu`), and it was slower with several VMs on two host cores.
/// QEMU 10.0.2, side by side on a 2-core host (BENCHMARKS.md, "TCG threading under QEMU 10"):
/// no kernel panic under multi-threaded TCG, but one boot in 23 hung (an RCU stall ~2 s
/// into boot: vCPU 1 never woke again), and no clear gain: one VM took 1.04x single's median
/// time, the default swarm 0.95x, both within the noise of that shared host. So every version
/// keeps `thread=single` for now (`N2D_TCG_THREAD=multi` to try the other).
pub const MTTCG_DEFAULT_SINCE: Option<QemuVersion> = None;

/// TCG threading for a QEMU version: `forced` (from `$N2D_TCG_THREAD`) if given, else
/// [`MTTCG_DEFAULT_SINCE`]'s gate. An unknown version gets `thread=single`.
pub fn tcg_thread(version: Option<QemuVersion>, forced: Option<TcgThread>) -> TcgThread {
    tcg_thread_gated(version, forced, MTTCG_DEFAULT_SINCE)
}

/// The gate itself: `thread=multi` from `mttcg_since` on (`None`: never), `single` below it and
/// for an unknown version.
pub fn tcg_thread_gated(
    version: Option<QemuVersion>,
    forced: Option<TcgThread>,
    mttcg_since: Option<QemuVersion>,
) -> TcgThread {
    if let Some(forced) = forced {
        return forced;
    }
    match (version, mttcg_since) {
        (Some(v), Some(since)) if v >= since => TcgThread::Multi,
        _ => TcgThread::Single,
    }
}

/// vCPUs a machine gets when the user does not choose: 1 under single-threaded TCG, where every
/// vCPU of a VM takes turns on one host thread, so a second adds only the guest's SMP overhead
/// (IPIs, TLB shootdowns, two Go schedulers' worth of spinning): measured side by side, one vCPU
/// reached the Docker API in 0.75x the time of two (BENCHMARKS.md, "What was cut"). With KVM
/// or multi-threaded TCG each vCPU is a host thread of its own: 2.
pub fn default_cpus(accel: Accel, tcg: TcgThread) -> u32 {
    match (accel, tcg) {
        (Accel::Tcg, TcgThread::Single) => 1,
        _ => 2,
    }
}

/// The id of the user-mode NIC's netdev, which `hostfwd_add` names.
pub const UPLINK_NETDEV: &str = "uplink";

/// QEMU's user-mode network (slirp) on `n2d_proto::uplink`'s addresses, with the host's
/// forwards on 127.0.0.1 only (never on the host's other addresses).
pub fn user_netdev(forwards: &[PortForward]) -> String {
    use n2d_proto::uplink::{DNS, GATEWAY, GUEST, NETWORK, PREFIX_LEN};
    let mut opt = format!(
        "user,id={UPLINK_NETDEV},ipv6=off,net={NETWORK}/{PREFIX_LEN},host={GATEWAY},dns={DNS},dhcpstart={GUEST}"
    );
    for f in forwards {
        opt.push_str(&format!(",hostfwd={}", hostfwd_rule(*f)));
    }
    opt
}

/// `tcp:127.0.0.1:HOST-GUESTADDR:GUEST`, as `-netdev user,hostfwd=` and `hostfwd_add` take it.
pub fn hostfwd_rule(f: PortForward) -> String {
    format!("tcp:127.0.0.1:{}-{}:{}", f.host, n2d_proto::uplink::GUEST, f.guest)
}

/// How QEMU begins: booting the kernel, or waiting for a saved state (`-incoming defer`, loaded
/// over QMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    Boot,
    Incoming,
}

pub fn qemu_argv(vm: &VmHandle, launch: &VmLaunch, accel: Accel, tcg: Tcg, begin: Begin) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // TCG's threading comes from `tcg_thread` (QEMU version, or N2D_TCG_THREAD).
    let tcg_opt = format!("tcg,thread={},tb-size={}", tcg.thread, tcg.tb_size_mib);
    let (accel_opt, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => (tcg_opt.as_str(), "max"),
    };
    let drive = |id: &str, path: &std::path::Path, format: &str, extra: &str| {
        format!("file={},if=none,id={id},format={format}{extra}", opt_value(&path.display().to_string()))
    };
    push(&["-name", &opt_value(&format!("n2d-{}", vm.name))]);
    // Every VM's RAM is a backend named `ram`, whatever holds it: a saved state names its RAM
    // by that name, so a clone (its RAM the template's file) can be suspended and resumed on
    // QEMU's own memory, and the other way round.
    let size = format!("{}M", launch.memory_mib);
    let backend = match &launch.memory {
        // virtiofsd maps the guest's RAM: it must be shared memory.
        Memory::Private if !launch.mounts.is_empty() => {
            format!("memory-backend-memfd,id=ram,size={size},share=on")
        }
        Memory::Private => format!("memory-backend-ram,id=ram,size={size}"),
        Memory::TemplateFile(file) | Memory::CloneOf(file) => {
            let sharing = match launch.memory {
                Memory::CloneOf(_) => "share=off,readonly=on,rom=off",
                _ => "share=on",
            };
            let path = opt_value(&file.display().to_string());
            format!("memory-backend-file,id=ram,size={size},mem-path={path},{sharing}")
        }
    };
    push(&["-machine", "q35,memory-backend=ram", "-object", &backend]);
    push(&["-accel", accel_opt, "-cpu", cpu]);
    push(&["-smp", &launch.cpus.to_string(), "-m", &size]);
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    push(&["-kernel", &launch.kernel.display().to_string(), "-initrd", &launch.initrd.display().to_string()]);
    push(&["-append", KERNEL_CMDLINE]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={SERIAL_LOG},append=on"),
        "-serial",
        "chardev:serial0",
    ]);
    // The root filesystem is shared read-only by every VM of the image; n2d-init puts a tmpfs
    // overlay on it, so no per-VM copy (or copy-on-write layer) is needed.
    push(&["-drive", &drive("root", &launch.rootfs, "raw", ",readonly=on")]);
    push(&["-device", &format!("virtio-blk-pci,drive=root,serial={ROOT_DISK_SERIAL}")]);
    push(&["-drive", &drive("config", &vm.dir.join(CONFIG_DISK_FILE), "raw", ",readonly=on")]);
    push(&["-device", &format!("virtio-blk-pci,drive=config,serial={CONFIG_DISK_SERIAL}")]);
    push(&["-drive", &drive("data", &vm.dir.join(DATA_DISK_FILE), "qcow2", ",discard=unmap")]);
    push(&["-device", &format!("virtio-blk-pci,drive=data,serial={DATA_DISK_SERIAL}")]);
    match &launch.nic {
        Nic::Tap { tap, mac } => {
            let (tap, mac) = (opt_value(tap), opt_value(mac));
            push(&["-netdev", &format!("tap,id=net0,ifname={tap},script=no,downscript=no")]);
            push(&["-device", &format!("virtio-net-pci,netdev=net0,mac={mac}")]);
        }
        Nic::User { switch, mac, uplink_mac, forwards } => {
            // First, so that the guest sees it as eth0.
            let (mac, uplink_mac) = (opt_value(mac), opt_value(uplink_mac));
            push(&["-netdev", &format!("vde,id=net0,sock={}", opt_value(&switch.display().to_string()))]);
            push(&["-device", &format!("virtio-net-pci,netdev=net0,mac={mac}")]);
            push(&["-netdev", &user_netdev(forwards)]);
            push(&["-device", &format!("virtio-net-pci,netdev={UPLINK_NETDEV},mac={uplink_mac}")]);
        }
        Nic::Unplugged { mac, uplink_mac } => {
            // The same ids and order as a clone's cards: a saved state names devices by place.
            push(&["-netdev", "hubport,id=net0,hubid=0"]);
            push(&["-device", &format!("virtio-net-pci,netdev=net0,mac={}", opt_value(mac))]);
            if let Some(uplink_mac) = uplink_mac {
                push(&["-netdev", &format!("hubport,id={UPLINK_NETDEV},hubid=1")]);
                push(&[
                    "-device",
                    &format!("virtio-net-pci,netdev={UPLINK_NETDEV},mac={}", opt_value(uplink_mac)),
                ]);
            }
        }
    }
    // A VM generation ID: QEMU gives each start a new one, and a clone's guest kernel, told of
    // the change on restore, reseeds its RNG at once.
    push(&["-device", "vmgenid,guid=auto"]);
    // Entropy at boot: TLS and swarm's raft start immediately.
    push(&["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]);
    // Dynamic memory: the guest hands freed pages back to the host.
    push(&["-device", "virtio-balloon-pci,free-page-reporting=on"]);
    push(&["-device", "virtio-serial-pci"]);
    push(&["-chardev", &format!("socket,id=console,path={CONSOLE_SOCKET},server=on,wait=off")]);
    push(&["-device", "virtconsole,chardev=console"]);
    push(&["-chardev", &format!("socket,id=control,path={CONTROL_SOCKET},server=on,wait=off")]);
    push(&["-device", &format!("virtserialport,chardev=control,name={CONTROL_PORT_NAME}")]);
    push(&["-chardev", &format!("socket,id=exec,path={},server=on,wait=off", crate::exec::EXEC_SOCKET)]);
    push(&["-device", &format!("virtserialport,chardev=exec,name={EXEC_PORT_NAME}")]);
    // Host folders: virtio-fs, each served by its virtiofsd (`crate::virtiofs`) on a socket
    // in the machine's directory.
    for (i, m) in launch.mounts.iter().enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=vfs{i},path={}", crate::virtiofs::socket(i)),
            "-device",
            &format!("vhost-user-fs-pci,chardev=vfs{i},tag={}", m.tag),
        ]);
    }
    push(&["-qmp", &format!("unix:{QMP_SOCKET},server=on,wait=off")]);
    push(&["-pidfile", PID_FILE, "-daemonize"]);
    if begin == Begin::Incoming {
        push(&["-incoming", "defer"]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn argv(accel: Accel, thread: TcgThread) -> Vec<String> {
        let vm = VmHandle::new("h1", PathBuf::from("/state/machines/h1"));
        qemu_argv(&vm, &launch(), accel, Tcg { thread, tb_size_mib: TCG_TB_SIZE_MIB }, Begin::Boot)
    }

    fn launch() -> VmLaunch {
        VmLaunch {
            cpus: 2,
            memory_mib: 2048,
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            rootfs: "/img/rootfs.erofs".into(),
            nic: Nic::Tap { tap: "n2dt1234".into(), mac: "52:54:00:aa:bb:cc".into() },
            memory: Memory::Private,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn a_template_keeps_its_ram_in_a_shared_file_and_reaches_no_network() {
        let vm = VmHandle::new("t", "/home/images/abc/templates/.make/t");
        let mut launch = launch();
        launch.memory = Memory::TemplateFile("/home/images/abc/templates/m2048/ram".into());
        launch.nic =
            Nic::Unplugged { mac: "52:54:00:00:00:01".into(), uplink_mac: Some("52:54:01:00:00:01".into()) };
        let tcg = Tcg { thread: TcgThread::Single, tb_size_mib: 128 };
        let argv = qemu_argv(&vm, &launch, Accel::Tcg, tcg, Begin::Boot);
        assert_eq!(after(&argv, "-machine"), ["q35,memory-backend=ram"]);
        assert_eq!(
            after(&argv, "-object")[0],
            "memory-backend-file,id=ram,size=2048M,mem-path=/home/images/abc/templates/m2048/ram,share=on"
        );
        assert_eq!(after(&argv, "-m"), ["2048M"]);
        assert_eq!(after(&argv, "-netdev"), ["hubport,id=net0,hubid=0", "hubport,id=uplink,hubid=1"]);
        assert!(!argv.contains(&"-incoming".to_string()));
        assert!(after(&argv, "-device").contains(&"vmgenid,guid=auto"));
    }

    #[test]
    fn a_clone_maps_the_templates_ram_copy_on_write_and_waits_for_its_state() {
        let vm = VmHandle::new("c", "/home/machines/c");
        let mut launch = launch();
        launch.memory = Memory::CloneOf("/home/images/a,b/ram".into());
        let tcg = Tcg { thread: TcgThread::Single, tb_size_mib: 128 };
        let argv = qemu_argv(&vm, &launch, Accel::Tcg, tcg, Begin::Incoming);
        let backend = after(&argv, "-object")[0];
        assert_eq!(
            qemu_opts(backend),
            [
                "memory-backend-file",
                "id=ram",
                "size=2048M",
                "mem-path=/home/images/a,b/ram",
                "share=off",
                "readonly=on",
                "rom=off"
            ]
        );
        assert_eq!(argv[argv.len() - 2..], ["-incoming", "defer"]);
        // The card and its netdev have the ids a template's had: the state finds them.
        assert_eq!(after(&argv, "-netdev"), ["tap,id=net0,ifname=n2dt1234,script=no,downscript=no"]);
        // A cold boot: QEMU's own memory, no file, under the same name.
        let cold = qemu_argv(&vm, &self::launch(), Accel::Tcg, tcg, Begin::Boot);
        assert_eq!(after(&cold, "-machine"), ["q35,memory-backend=ram"]);
        assert_eq!(after(&cold, "-object")[0], "memory-backend-ram,id=ram,size=2048M");
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn translation_cache_sizes_below_16_mib_or_not_numbers_are_refused() {
        assert_eq!(parse_tb_size(" 128 "), Ok(128));
        assert_eq!(parse_tb_size("16"), Ok(16));
        assert_eq!(parse_tb_size("2048"), Ok(2048));
        for bad in ["8", "0", "-1", "64M", "", "2049", "4294967295", "99999999999", "1e300", "NaN"] {
            let e = parse_tb_size(bad).unwrap_err().to_string();
            assert!(e.contains("N2D_TCG_TB_SIZE") && e.contains("from 16 to 2048"), "{e}");
        }
    }

    #[test]
    fn one_vcpu_by_default_only_where_vcpus_share_a_host_thread() {
        assert_eq!(default_cpus(Accel::Tcg, TcgThread::Single), 1);
        assert_eq!(default_cpus(Accel::Tcg, TcgThread::Multi), 2);
        assert_eq!(default_cpus(Accel::Kvm, TcgThread::Single), 2);
    }

    #[test]
    fn tcg_and_kvm_pick_their_cpu_models() {
        let tcg = argv(Accel::Tcg, TcgThread::Single);
        assert_eq!(after(&tcg, "-accel"), ["tcg,thread=single,tb-size=128"]);
        assert_eq!(after(&tcg, "-cpu"), ["max"]);
        let mttcg = argv(Accel::Tcg, TcgThread::Multi);
        assert_eq!(after(&mttcg, "-accel"), ["tcg,thread=multi,tb-size=128"]);
        let kvm = argv(Accel::Kvm, TcgThread::Multi);
        assert_eq!(after(&kvm, "-accel"), ["kvm"]);
        assert_eq!(after(&kvm, "-cpu"), ["host"]);
    }

    #[test]
    fn qemu_7_2_and_unknown_versions_keep_single_threaded_tcg() {
        assert_eq!(tcg_thread(Some(QemuVersion::new(7, 2, 19)), None), TcgThread::Single);
        assert_eq!(tcg_thread(None, None), TcgThread::Single);
    }

    #[test]
    fn qemu_10_gets_the_measured_choice() {
        // Measured on 10.0.2: multi-threaded TCG was no faster, and hung a boot (BENCHMARKS.md).
        for v in [QemuVersion::new(10, 0, 0), QemuVersion::new(10, 0, 2), QemuVersion::new(11, 1, 0)] {
            assert_eq!(tcg_thread(Some(v), None), TcgThread::Single, "{v}");
        }
    }

    #[test]
    fn the_gate_splits_versions_at_its_threshold() {
        let since = Some(QemuVersion::new(10, 0, 0));
        assert_eq!(tcg_thread_gated(Some(QemuVersion::new(7, 2, 19)), None, since), TcgThread::Single);
        assert_eq!(tcg_thread_gated(Some(QemuVersion::new(9, 2, 4)), None, since), TcgThread::Single);
        assert_eq!(tcg_thread_gated(Some(QemuVersion::new(10, 0, 0)), None, since), TcgThread::Multi);
        assert_eq!(tcg_thread_gated(Some(QemuVersion::new(10, 0, 2)), None, since), TcgThread::Multi);
        assert_eq!(tcg_thread_gated(None, None, since), TcgThread::Single);
        assert_eq!(tcg_thread_gated(Some(QemuVersion::new(10, 0, 2)), None, None), TcgThread::Single);
    }

    #[test]
    fn the_override_wins_both_ways() {
        for v in [None, Some(QemuVersion::new(7, 2, 19)), Some(QemuVersion::new(10, 0, 2))] {
            assert_eq!(tcg_thread(v, Some(TcgThread::Multi)), TcgThread::Multi);
            assert_eq!(tcg_thread(v, Some(TcgThread::Single)), TcgThread::Single);
        }
        assert_eq!(" Multi".parse::<TcgThread>(), Ok(TcgThread::Multi));
        assert_eq!("single".parse::<TcgThread>(), Ok(TcgThread::Single));
        let err = "mttcg".parse::<TcgThread>().unwrap_err().to_string();
        assert!(err.contains("N2D_TCG_THREAD") && err.contains("single or multi"), "{err}");
    }

    #[test]
    fn resources_disks_and_nic_come_from_the_config() {
        let argv = argv(Accel::Tcg, TcgThread::Single);
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
        assert!(devices.contains(&"virtserialport,chardev=exec,name=org.n2d.exec"));
        assert_eq!(after(&argv, "-netdev"), ["tap,id=net0,ifname=n2dt1234,script=no,downscript=no"]);
    }

    #[test]
    fn user_mode_has_the_switch_first_and_forwards_only_on_loopback() {
        let vm = VmHandle::new("h1", "/state/machines/h1");
        let mut launch = launch();
        launch.nic = Nic::User {
            switch: "/home/u/n2d/network/switch".into(),
            mac: "52:54:00:aa:bb:cc".into(),
            uplink_mac: "52:54:01:aa:bb:cc".into(),
            forwards: vec![PortForward { host: 12376, guest: 2376 }, PortForward { host: 8080, guest: 80 }],
        };
        let argv = qemu_argv(
            &vm,
            &launch,
            Accel::Tcg,
            Tcg { thread: TcgThread::Single, tb_size_mib: 128 },
            Begin::Boot,
        );
        assert_eq!(
            after(&argv, "-netdev"),
            [
                "vde,id=net0,sock=/home/u/n2d/network/switch",
                "user,id=uplink,ipv6=off,net=100.64.77.0/24,host=100.64.77.2,dns=100.64.77.3,dhcpstart=100.64.77.15,\
                 hostfwd=tcp:127.0.0.1:12376-100.64.77.15:2376,hostfwd=tcp:127.0.0.1:8080-100.64.77.15:80",
            ]
        );
        let nics: Vec<_> =
            after(&argv, "-device").into_iter().filter(|d| d.starts_with("virtio-net")).collect();
        assert_eq!(
            nics,
            [
                "virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc",
                "virtio-net-pci,netdev=uplink,mac=52:54:01:aa:bb:cc"
            ]
        );
    }

    /// Splits one of QEMU's option lists as QEMU does: `,` ends an option, `,,` is a comma.
    fn qemu_opts(list: &str) -> Vec<String> {
        let mut opts = vec![String::new()];
        let mut chars = list.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ',' if chars.peek() == Some(&',') => {
                    chars.next();
                    opts.last_mut().unwrap().push(',');
                }
                ',' => opts.push(String::new()),
                c => opts.last_mut().unwrap().push(c),
            }
        }
        opts
    }

    /// The keys of every option list after `flag`s, in order.
    fn option_keys(argv: &[String], flag: &str) -> Vec<Vec<String>> {
        let key = |opt: &String| opt.split_once('=').map_or(opt.clone(), |(k, _)| k.to_string());
        after(argv, flag).into_iter().map(|list| qemu_opts(list).iter().map(key).collect()).collect()
    }

    #[test]
    fn values_with_commas_never_add_qemu_options() {
        let hostile_mac = "52:54:00:00:00:01,romfile=/x";
        let tcg = Tcg { thread: TcgThread::Single, tb_size_mib: 128 };
        let plain_vm = VmHandle::new("h1", PathBuf::from("/state/machines/h1"));
        let vm = VmHandle::new("h1", PathBuf::from("/state,readonly=off/machines/h1"));
        let tap = |tap: &str, mac: &str| Nic::Tap { tap: tap.into(), mac: mac.into() };
        let user = |switch: &str, mac: &str, uplink: &str| Nic::User {
            switch: switch.into(),
            mac: mac.into(),
            uplink_mac: uplink.into(),
            forwards: vec![],
        };
        let cases = [
            (tap("n2dt1234", "52:54:00:aa:bb:cc"), tap("n2dt0,script=/tmp/x", hostile_mac)),
            (
                user("/home/u/switch", "52:54:00:aa:bb:cc", "52:54:01:aa:bb:cc"),
                user("/home/a,sock=/x/switch", hostile_mac, "52:54:01:00:00:01,romfile=/y"),
            ),
        ];
        for (plain, hostile) in cases {
            let mut plain_launch = launch();
            plain_launch.nic = plain;
            let mut hostile_launch = launch();
            hostile_launch.nic = hostile;
            hostile_launch.rootfs = "/img,x=y/rootfs.erofs".into();
            let plain_argv = qemu_argv(&plain_vm, &plain_launch, Accel::Tcg, tcg, Begin::Boot);
            let argv = qemu_argv(&vm, &hostile_launch, Accel::Tcg, tcg, Begin::Boot);
            assert_eq!(plain_argv.len(), argv.len());
            for flag in ["-drive", "-device", "-netdev", "-name"] {
                // The same options as with plain values: a value never starts one of its own.
                assert_eq!(option_keys(&argv, flag), option_keys(&plain_argv, flag), "{flag}: {argv:?}");
            }
            let nic = after(&argv, "-device").into_iter().find(|d| d.contains("netdev=net0")).unwrap();
            assert_eq!(qemu_opts(nic), ["virtio-net-pci", "netdev=net0", &format!("mac={hostile_mac}")]);
            // The path is QEMU's file= whole.
            assert_eq!(
                qemu_opts(after(&argv, "-drive")[1])[0],
                "file=/state,readonly=off/machines/h1/config.img"
            );
        }
        let argv = qemu_argv(&vm, &launch(), Accel::Tcg, tcg, Begin::Boot);
        assert_eq!(
            after(&argv, "-drive")[2],
            "file=/state,,readonly=off/machines/h1/data.qcow2,if=none,id=data,format=qcow2,discard=unmap"
        );
        // What identifies the machine's QEMU is what the command line holds.
        let marker = crate::identity::data_disk_marker(&vm.dir.join(DATA_DISK_FILE));
        assert!(after(&argv, "-drive")[2].starts_with(&marker), "{marker}");
        assert_eq!(opt_value("a,b,,c"), "a,,b,,,,c");
        assert_eq!(opt_value("plain"), "plain");
    }

    #[test]
    fn vm_is_daemonized_headless_and_never_reboots() {
        let argv = argv(Accel::Tcg, TcgThread::Single);
        for flag in ["-daemonize", "-no-reboot", "-nodefaults"] {
            assert!(argv.iter().any(|a| a == flag), "{flag}");
        }
        assert_eq!(after(&argv, "-pidfile"), [PID_FILE]);
        assert_eq!(after(&argv, "-append"), [KERNEL_CMDLINE]);
        assert!(after(&argv, "-chardev")[0].contains("path=serial.log,append=on"));
    }
}
