//! The persistent data disk mounted on /var/lib/docker (images, containers, swarm state).

use crate::config::wait_for_disk;
use crate::error::{Error, Result};
use crate::log::info;
use crate::sys::System;
use n2d_proto::DATA_DISK_SERIAL;
use nix::mount::MsFlags;
use std::time::Duration;

pub const DOCKER_ROOT: &str = "/var/lib/docker";

/// ext4 superblock starts at byte 1024; its magic (0xEF53, little-endian) is at offset 56.
const EXT4_MAGIC_OFFSET: usize = 1080;

pub fn has_ext4(head: &[u8]) -> bool {
    head.get(EXT4_MAGIC_OFFSET..EXT4_MAGIC_OFFSET + 2) == Some(&[0x53, 0xEF][..])
}

pub fn mount_data_disk(sys: &dyn System) -> Result<String> {
    let device = wait_for_disk(sys, DATA_DISK_SERIAL, Duration::from_secs(5))?;
    let head = sys
        .read_head(&device, 4096)
        .map_err(|source| Error::ReadDataDisk { device: device.clone(), source })?;
    if !has_ext4(&head) {
        info!("formatting data disk {device} (ext4)");
        // A new data disk reads as zeros (a fresh qcow2): nothing to discard, and no inode
        // tables to zero, now or in the background (ext4lazyinit would compete with dockerd).
        let args = ["-q", "-F", "-L", "n2d-data", "-E", "nodiscard,assume_storage_prezeroed=1", &device];
        let command = format!("mkfs.ext4 {}", args.join(" "));
        let failed = |e| Error::FormatDataDisk { device: device.clone(), source: Box::new(e) };
        match sys.run("mkfs.ext4", &args) {
            Ok(exit) if exit.success() => {}
            Ok(exit) => return Err(failed(Error::CommandFailed { command, exit })),
            Err(source) => return Err(failed(Error::RunCommand { command, source })),
        }
    }
    let mount_err =
        |source| Error::MountDataDisk { device: device.clone(), target: DOCKER_ROOT.into(), source };
    sys.mkdir_all(DOCKER_ROOT, 0o710).map_err(mount_err)?;
    sys.mount(Some(&device), DOCKER_ROOT, Some("ext4"), MsFlags::MS_NOATIME, None).map_err(mount_err)?;
    info!("mounted data disk {device} on {DOCKER_ROOT}");
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;
    use crate::sys::Exit;

    fn ext4_image() -> Vec<u8> {
        let mut disk = vec![0u8; 8192];
        disk[1080] = 0x53;
        disk[1081] = 0xEF;
        disk
    }

    #[test]
    fn blank_disk_is_formatted_then_mounted() {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-data", vec![0u8; 8192]);
        mount_data_disk(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "run mkfs.ext4 -q -F -L n2d-data -E nodiscard,assume_storage_prezeroed=1 /dev/vdb",
                "mount /dev/vdb /var/lib/docker -t ext4",
            ]
        );
    }

    #[test]
    fn existing_ext4_is_never_reformatted() {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-data", ext4_image());
        mount_data_disk(&sys).unwrap();
        assert!(!sys.calls().iter().any(|c| c.contains("mkfs")), "{:?}", sys.calls());
        // Byte order matters: 0xEF53 stored big-endian is not ext4.
        let mut swapped = ext4_image();
        swapped.swap(1080, 1081);
        assert!(!has_ext4(&swapped));
        assert!(!has_ext4(&[0u8; 100]));
    }

    #[test]
    fn failed_mkfs_stops_boot_before_mounting() {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-data", vec![0u8; 8192]);
        sys.state.borrow_mut().run_exits.insert("mkfs.ext4".into(), Exit::Code(1));
        let err = mount_data_disk(&sys).unwrap_err();
        assert!(matches!(err, Error::FormatDataDisk { .. }), "{err}");
        assert!(!sys.calls().iter().any(|c| c.starts_with("mount")));
    }
}
