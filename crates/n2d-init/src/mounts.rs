//! Stage 1: kernel filesystems and the switch from the initramfs to erofs + overlay.
//! Stage 2: the mounts a Docker host needs on the real root.

use crate::config::wait_for_disk;
use crate::error::{Error, Result};
use crate::log::info;
use crate::sys::System;
use n2d_proto::ROOT_DISK_SERIAL;
use nix::mount::MsFlags;
use std::time::Duration;

const LOWER: &str = "/sysroot/lower";
const RW: &str = "/sysroot/rw";
const NEW_ROOT: &str = "/sysroot/root";

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
pub fn switch_root(sys: &dyn System) -> Result<()> {
    let device = wait_for_disk(sys, ROOT_DISK_SERIAL, Duration::from_secs(10))?;
    let root_err = |step: &str| {
        let step = step.to_string();
        move |source| Error::MountRoot { step, source }
    };
    for dir in [LOWER, RW, NEW_ROOT] {
        sys.mkdir_all(dir, 0o755).map_err(root_err(dir))?;
    }
    sys.mount(Some(&device), LOWER, Some("erofs"), MsFlags::MS_RDONLY, None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn switch_root_mounts_overlay_then_moves_it_onto_slash() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-root", "");
        switch_root(&sys).unwrap();
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

    #[test]
    fn missing_root_disk_is_reported_after_waiting() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-data", "");
        let err = switch_root(&sys).unwrap_err();
        assert!(matches!(err, Error::DiskNotFound { ref serial, .. } if serial == "n2d-root"));
        assert!(sys.now() >= Duration::from_secs(10));
        assert!(sys.calls().is_empty());
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
