//! Stage 1: kernel filesystems and the switch from the initramfs to erofs + overlay.
//! Stage 2: the mounts a Docker host needs on the real root.

use crate::disks::{find_by_serial, find_partition, iso_candidates};
use crate::error::{Error, Result};
use crate::log::info;
use crate::sys::{poll, System};
use n2d_proto::{ISO_CONFIG_PATH, ISO_ROOTFS_PATH, MAX_PAYLOAD, PAYLOAD_OFFSET, ROOT_DISK_SERIAL};
use nix::mount::{MntFlags, MsFlags};
use std::collections::BTreeSet;
use std::time::Duration;

const LOWER: &str = "/sysroot/lower";
const RW: &str = "/sysroot/rw";
const NEW_ROOT: &str = "/sysroot/root";
/// Where stage 1 mounts an exported ISO's filesystem (it stays mounted, hidden, under the root).
const ISO_MOUNT: &str = "/sysroot/iso";

/// How long n2d's own root disk (virtio serial `n2d-root`, there from the first probe of
/// virtio_blk) is waited for before the boot looks for an exported disk or ISO.
pub const SERIAL_GRACE: Duration = Duration::from_secs(1);
/// How long, then, for a partition `n2d-root` or an ISO (SCSI and ATA scans are asynchronous).
pub const EXPORT_WAIT: Duration = Duration::from_secs(20);

/// What the machine booted from, which tells stage 2 where its config and data are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// n2d's own VM: every disk by virtio serial.
    Serial,
    /// An exported disk (`disk`, e.g. `vda`): partitions by GPT name.
    Disk { disk: String },
    /// An exported ISO (`device`, a CD or a disk), with its config file's bytes if it has one.
    Iso { device: String, config: Option<Vec<u8>> },
}

/// The root filesystem's block device and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub device: String,
    pub medium: Medium,
}

/// Finds the root: the serial disk `n2d-root` (n2d's own VMs, within [`SERIAL_GRACE`]); else,
/// once `load_more` has loaded the drivers of other hypervisors and CDs, a partition named
/// `n2d-root` or an ISO 9660 filesystem holding [`ISO_ROOTFS_PATH`] (attached to a loop device).
pub fn find_root(sys: &dyn System, load_more: &mut dyn FnMut()) -> Result<Root> {
    let serial = || find_by_serial(sys, ROOT_DISK_SERIAL);
    if let Some(device) = poll(sys, SERIAL_GRACE, Duration::from_millis(20), serial) {
        return Ok(Root { device, medium: Medium::Serial });
    }
    info!("no disk with serial {ROOT_DISK_SERIAL}: looking for an exported disk or ISO");
    load_more();
    let mut rejected = BTreeSet::new();
    poll(sys, EXPORT_WAIT, Duration::from_millis(100), || probe_export(sys, &mut rejected))
        .ok_or(Error::RootNotFound { waited_s: (SERIAL_GRACE + EXPORT_WAIT).as_secs() })
}

fn probe_export(sys: &dyn System, rejected: &mut BTreeSet<String>) -> Option<Root> {
    if let Some(device) = find_by_serial(sys, ROOT_DISK_SERIAL) {
        return Some(Root { device, medium: Medium::Serial });
    }
    if let Some(part) = find_partition(sys, ROOT_DISK_SERIAL) {
        info!("root: partition {ROOT_DISK_SERIAL} ({}) of {}", part.device, part.disk);
        return Some(Root { device: part.device, medium: Medium::Disk { disk: part.disk } });
    }
    for device in iso_candidates(sys) {
        if rejected.contains(&device) {
            continue;
        }
        match mount_iso(sys, &device) {
            Ok(Some(root)) => return Some(root),
            Ok(None) => info!("{device}: an ISO 9660 filesystem without {ISO_ROOTFS_PATH}; not ours"),
            Err(e) => info!("{device}: cannot use its ISO 9660 filesystem: {e}"),
        }
        rejected.insert(device);
    }
    None
}

/// Mounts `device`'s ISO 9660 filesystem; with the root file on it, attaches that to a loop
/// device and reads the config file, else unmounts it again.
fn mount_iso(sys: &dyn System, device: &str) -> std::io::Result<Option<Root>> {
    sys.mkdir_all(ISO_MOUNT, 0o755)?;
    sys.mount(Some(device), ISO_MOUNT, Some("iso9660"), MsFlags::MS_RDONLY, None)?;
    let rootfs = format!("{ISO_MOUNT}/{ISO_ROOTFS_PATH}");
    if !sys.exists(&rootfs) {
        let _ = sys.umount(ISO_MOUNT, MntFlags::empty());
        return Ok(None);
    }
    let loop_dev = sys.loop_attach(&rootfs)?;
    let config = sys.read_head(&format!("{ISO_MOUNT}/{ISO_CONFIG_PATH}"), PAYLOAD_OFFSET + MAX_PAYLOAD).ok();
    info!("root: {ISO_ROOTFS_PATH} on the ISO {device} ({loop_dev}); config file: {}", config.is_some());
    Ok(Some(Root { device: loop_dev, medium: Medium::Iso { device: device.into(), config } }))
}

struct Fs {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

fn mount_fs(sys: &dyn System, fs: &Fs) -> Result<()> {
    let err = |source| Error::Mount { fstype: fs.fstype.into(), target: fs.target.into(), source };
    sys.mkdir_all(fs.target, 0o755).map_err(err)?;
    sys.mount(Some(fs.fstype), fs.target, Some(fs.fstype), fs.flags, fs.data).map_err(err)
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// devtmpfs, proc and sysfs in the initramfs.
pub fn mount_kernel_filesystems(sys: &dyn System) -> Result<()> {
    let kernel_fs = [
        Fs { fstype: "devtmpfs", target: "/dev", flags: MsFlags::MS_NOSUID, data: Some("mode=0755") },
        Fs { fstype: "proc", target: "/proc", flags: NOSUID_NODEV_NOEXEC, data: None },
        Fs { fstype: "sysfs", target: "/sys", flags: NOSUID_NODEV_NOEXEC, data: None },
    ];
    for fs in &kernel_fs {
        match mount_fs(sys, fs) {
            // CONFIG_DEVTMPFS_MOUNT may have mounted /dev already.
            Err(Error::Mount { source, .. }) if source.raw_os_error() == Some(nix::libc::EBUSY) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Mounts the root disk (erofs) under a tmpfs-backed overlay and makes that overlay `/`,
/// the way busybox switch_root does: runc cannot pivot_root out of an initramfs.
pub fn switch_root(sys: &dyn System, device: &str) -> Result<()> {
    let root_err = |step: &str| {
        let step = step.to_string();
        move |source| Error::MountRoot { step, source }
    };
    for dir in [LOWER, RW, NEW_ROOT] {
        sys.mkdir_all(dir, 0o755).map_err(root_err(dir))?;
    }
    sys.mount(Some(device), LOWER, Some("erofs"), MsFlags::MS_RDONLY, None)
        .map_err(root_err(&format!("erofs {device} on {LOWER}")))?;
    sys.mount(Some("tmpfs"), RW, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
        .map_err(root_err("tmpfs for the writable layer"))?;
    for dir in [format!("{RW}/upper"), format!("{RW}/work")] {
        sys.mkdir_all(&dir, 0o755).map_err(root_err(&dir))?;
    }
    let layers = format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work");
    sys.mount(Some("overlay"), NEW_ROOT, Some("overlay"), MsFlags::empty(), Some(&layers))
        .map_err(root_err("overlay"))?;
    info!("mounted root {device} (erofs + overlay)");

    let step = |step: &'static str| move |source| Error::SwitchRoot { step, source };
    for fs in ["/dev", "/proc", "/sys"] {
        let target = format!("{NEW_ROOT}{fs}");
        sys.mkdir_all(&target, 0o755).map_err(step("creating mount points"))?;
        sys.mount(Some(fs), &target, None::<&str>, MsFlags::MS_MOVE, None)
            .map_err(step("moving kernel filesystems"))?;
    }
    sys.chdir(NEW_ROOT).map_err(step("chdir to new root"))?;
    sys.mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None)
        .map_err(step("moving new root onto /"))?;
    sys.chroot(".").map_err(step("chroot"))?;
    sys.chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// devpts, shm, /run, /tmp, cgroup2 (with every controller delegated), /dev/fd links.
pub fn mount_runtime_filesystems(sys: &dyn System) -> Result<()> {
    let runtime_fs = [
        Fs {
            fstype: "devpts",
            target: "/dev/pts",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
            data: Some("gid=5,mode=620,ptmxmode=666"),
        },
        Fs { fstype: "tmpfs", target: "/dev/shm", flags: NOSUID_NODEV, data: Some("mode=1777") },
        Fs { fstype: "tmpfs", target: "/run", flags: NOSUID_NODEV, data: Some("mode=755") },
        Fs { fstype: "tmpfs", target: "/tmp", flags: NOSUID_NODEV, data: Some("mode=1777") },
        Fs { fstype: "cgroup2", target: "/sys/fs/cgroup", flags: NOSUID_NODEV_NOEXEC, data: None },
    ];
    for fs in &runtime_fs {
        mount_fs(sys, fs)?;
    }
    enable_cgroup_controllers(sys);
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if !sys.exists(link) {
            let _ = sys.symlink(target, link);
        }
    }
    Ok(())
}

fn enable_cgroup_controllers(sys: &dyn System) {
    let Ok(available) = sys.read_file("/sys/fs/cgroup/cgroup.controllers") else { return };
    for controller in String::from_utf8_lossy(&available).split_whitespace() {
        let request = format!("+{controller}");
        if let Err(e) = sys.write_knob("/sys/fs/cgroup/cgroup.subtree_control", request.as_bytes()) {
            info!("cgroup controller {controller} not enabled: {e}");
        }
    }
}

/// Mounts the host folders of `config` (virtio-fs, built into the image's kernel) at their
/// paths, before dockerd starts so that containers see them. One that fails is said on the
/// console and skipped: the machine is still a Docker host.
pub fn mount_host_folders(sys: &dyn System, config: &n2d_proto::GuestConfig) {
    for m in &config.mounts {
        // Read-only twice over: here, and by the host's virtiofsd (`--readonly`).
        let flags = if m.read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        let mounted = sys
            .mkdir_all(&m.path, 0o755)
            .and_then(|()| sys.mount(Some(&m.tag), &m.path, Some("virtiofs"), flags, None));
        match mounted {
            Ok(()) => info!(
                "host folder {} mounted at {}{}",
                m.tag,
                m.path,
                if m.read_only { " (read-only)" } else { "" }
            ),
            Err(e) => info!("host folder {} NOT mounted at {}: {e}", m.tag, m.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn host_folders_are_mounted_at_their_paths_read_only_when_asked() {
        let sys = FakeSystem::new();
        let mut config = crate::config::tests::sample_config();
        mount_host_folders(&sys, &config);
        assert!(!sys.calls().iter().any(|c| c.starts_with("mount")), "no folders, no mounts");
        config.mounts = vec![
            n2d_proto::GuestMount {
                tag: "n2d-mount-0".into(),
                path: "/home/me/src".into(),
                read_only: false,
            },
            n2d_proto::GuestMount { tag: "n2d-mount-1".into(), path: "/data".into(), read_only: true },
        ];
        mount_host_folders(&sys, &config);
        let mounts: Vec<String> = sys.calls().into_iter().filter(|c| c.starts_with("mount")).collect();
        assert_eq!(
            mounts,
            ["mount n2d-mount-0 /home/me/src -t virtiofs", "mount n2d-mount-1 /data -t virtiofs ro",]
        );
    }

    #[test]
    fn switch_root_mounts_overlay_then_moves_it_onto_slash() {
        let sys = FakeSystem::new();
        switch_root(&sys, "/dev/vda").unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mount /dev/vda /sysroot/lower -t erofs ro",
                "mount tmpfs /sysroot/rw -t tmpfs mode=0755",
                "mount overlay /sysroot/root -t overlay \
                 lowerdir=/sysroot/lower,upperdir=/sysroot/rw/upper,workdir=/sysroot/rw/work",
                "mount /dev /sysroot/root/dev move",
                "mount /proc /sysroot/root/proc move",
                "mount /sys /sysroot/root/sys move",
                "chdir /sysroot/root",
                "mount . / move",
                "chroot .",
                "chdir /",
            ]
        );
    }

    fn no_more(loaded: &mut u32) -> impl FnMut() + '_ {
        move || *loaded += 1
    }

    #[test]
    fn the_serial_root_is_taken_at_once_without_loading_more_drivers() {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-root", "");
        // An exported disk attached too: n2d's own disk wins.
        sys.add_plain_disk("vda", vec![0u8; 4096]);
        sys.add_partition("vda", 2, "n2d-root", 2048, "");
        let mut loaded = 0;
        let root = find_root(&sys, &mut no_more(&mut loaded)).unwrap();
        assert_eq!(root, Root { device: "/dev/vdb".into(), medium: Medium::Serial });
        assert_eq!(loaded, 0);
        assert_eq!(sys.now(), Duration::ZERO);
    }

    #[test]
    fn an_exported_disk_is_found_by_partition_name_after_the_grace() {
        let sys = FakeSystem::new();
        sys.add_plain_disk("sda", vec![0u8; 40 * 1024]);
        sys.add_partition("sda", 1, "ESP", 2048, "");
        sys.add_partition("sda", 2, "n2d-root", 4096, "");
        let mut loaded = 0;
        let root = find_root(&sys, &mut no_more(&mut loaded)).unwrap();
        assert_eq!(root, Root { device: "/dev/sda2".into(), medium: Medium::Disk { disk: "sda".into() } });
        assert_eq!(loaded, 1);
        assert!(sys.now() >= SERIAL_GRACE && sys.now() < SERIAL_GRACE + Duration::from_millis(200));
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
    }

    #[test]
    fn an_iso_is_mounted_and_its_root_file_loop_attached_with_the_config() {
        let sys = FakeSystem::new();
        let mut iso = vec![0u8; 40 * 1024];
        iso[32769..32774].copy_from_slice(b"CD001");
        sys.add_plain_disk("sr0", &iso);
        sys.add_plain_disk("vda", &iso);
        // What the ISO's filesystem shows once mounted.
        sys.add_file("/sysroot/iso/n2d/rootfs.erofs", "EROFS");
        sys.add_file("/sysroot/iso/n2d/config", "N2DCONF1");
        let mut loaded = 0;
        let root = find_root(&sys, &mut no_more(&mut loaded)).unwrap();
        assert_eq!(
            root,
            Root {
                device: "/dev/loop0".into(),
                medium: Medium::Iso { device: "/dev/sr0".into(), config: Some(b"N2DCONF1".to_vec()) }
            }
        );
        assert_eq!(loaded, 1);
        assert_eq!(
            sys.calls(),
            ["mount /dev/sr0 /sysroot/iso -t iso9660 ro", "loop /dev/loop0 /sysroot/iso/n2d/rootfs.erofs"]
        );
        assert_eq!(sys.file_text("/dev/loop0"), "EROFS");
    }

    #[test]
    fn a_foreign_iso_is_unmounted_and_skipped_and_no_root_is_reported_after_waiting() {
        let sys = FakeSystem::new();
        let mut iso = vec![0u8; 40 * 1024];
        iso[32769..32774].copy_from_slice(b"CD001");
        sys.add_plain_disk("sr0", &iso);
        sys.add_disk("vdb", "n2d-data", "");
        let err = find_root(&sys, &mut || {}).unwrap_err();
        assert!(matches!(err, Error::RootNotFound { waited_s: 21 }), "{err}");
        assert!(sys.now() >= SERIAL_GRACE + EXPORT_WAIT);
        // Mounted and unmounted once, not every 100 ms.
        assert_eq!(sys.calls(), ["mount /dev/sr0 /sysroot/iso -t iso9660 ro", "umount /sysroot/iso"]);
    }

    #[test]
    fn runtime_mounts_delegate_each_cgroup_controller() {
        let sys = FakeSystem::new();
        sys.add_file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
        sys.add_file("/dev/stdin", "");
        mount_runtime_filesystems(&sys).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"mount cgroup2 /sys/fs/cgroup -t cgroup2".to_string()));
        let knobs: Vec<_> = calls.iter().filter(|c| c.starts_with("knob")).collect();
        assert_eq!(knobs.len(), 5);
        assert!(knobs[4].ends_with("+pids"));
        assert!(calls.contains(&"symlink /dev/fd -> /proc/self/fd".to_string()));
        assert!(!calls.iter().any(|c| c.starts_with("symlink /dev/stdin")));
    }
}
