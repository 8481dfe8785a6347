//! The persistent data disk mounted on /var/lib/docker (images, containers, swarm state).

use crate::console;
use crate::disks::{self, block_devices, find_by_serial, find_partition, wait_for_serial};
use crate::error::{Error, Result};
use crate::gpt;
use crate::log::info;
use crate::mounts::Medium;
use crate::sys::System;
use n2d_proto::{CONFIG_DISK_SERIAL, DATA_DISK_SERIAL, ROOT_DISK_SERIAL};
use nix::mount::MsFlags;
use std::time::Duration;

pub const DOCKER_ROOT: &str = "/var/lib/docker";

/// ext4 superblock starts at byte 1024; its magic (0xEF53, little-endian) is at offset 56.
const EXT4_MAGIC_OFFSET: usize = 1080;

pub fn has_ext4(head: &[u8]) -> bool {
    head.get(EXT4_MAGIC_OFFSET..EXT4_MAGIC_OFFSET + 2) == Some(&[0x53, 0xEF][..])
}

/// ext4's volume label: 16 bytes at offset 120 of the superblock.
const EXT4_LABEL_OFFSET: usize = 1024 + 120;

pub fn ext4_label(head: &[u8]) -> Option<&[u8]> {
    let label = head.get(EXT4_LABEL_OFFSET..EXT4_LABEL_OFFSET + 16)?;
    Some(&label[..label.iter().position(|&b| b == 0).unwrap_or(16)])
}

/// Where Docker's data goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A block device, formatted (ext4, label `n2d-data`) when it holds no ext4 yet.
    Device(String),
    /// A partition just grown: its ext4, if any, is grown too once mounted.
    Grown(String),
    /// Memory: an export without a data partition or a blank disk (an ISO).
    Tmpfs,
}

/// The data disk: n2d's own VMs' serial disk (waited for); for an export, a serial disk, the
/// partition `n2d-data` (grown to the end of its disk when that was enlarged), a blank whole
/// disk the hypervisor added (or one formatted by an earlier boot), else memory.
pub fn choose(sys: &dyn System, medium: &Medium) -> Result<Data> {
    if *medium == Medium::Serial {
        return Ok(Data::Device(wait_for_serial(sys, DATA_DISK_SERIAL, Duration::from_secs(5))?));
    }
    if let Some(device) = find_by_serial(sys, DATA_DISK_SERIAL) {
        return Ok(Data::Device(device));
    }
    if let Some(part) = find_partition(sys, DATA_DISK_SERIAL) {
        match gpt::grow_partition(sys, &part) {
            Ok(Some(sectors)) => {
                info!("grew {} to the end of its disk (+{} MiB)", part.device, sectors / 2048);
                return Ok(Data::Grown(part.device));
            }
            Ok(None) => {}
            Err(e) => info!("{}: not grown: {e}", part.device),
        }
        return Ok(Data::Device(part.device));
    }
    let boot_disk = match medium {
        Medium::Disk { disk } => Some(format!("/dev/{disk}")),
        Medium::Iso { device, .. } => Some(device.clone()),
        Medium::Serial => None,
    };
    let spare =
        block_devices(sys).into_iter().filter(|d| !d.partition && !d.name.starts_with("sr")).find(|d| {
            let device = d.device();
            let ours = [ROOT_DISK_SERIAL, CONFIG_DISK_SERIAL]
                .iter()
                .any(|s| find_by_serial(sys, s) == Some(device.clone()));
            let partitioned =
                sys.read_dir(&format!("/sys/block/{}", d.name)).unwrap_or_default().iter().any(|p| {
                    p.starts_with(&d.name) && sys.exists(&format!("/sys/block/{}/{p}/partition", d.name))
                });
            if ours || partitioned || boot_disk.as_deref() == Some(device.as_str()) {
                return false;
            }
            let head = sys.read_head(&device, 4096).unwrap_or_default();
            head.len() == 4096
                && (disks::is_blank(&head)
                    || (has_ext4(&head) && ext4_label(&head) == Some(DATA_DISK_SERIAL.as_bytes())))
        });
    Ok(match spare {
        Some(d) => Data::Device(d.device()),
        None => Data::Tmpfs,
    })
}

/// Mounts Docker's data on [`DOCKER_ROOT`]; returns what was mounted.
pub fn mount_data(sys: &dyn System, medium: &Medium) -> Result<String> {
    match choose(sys, medium)? {
        // n2d's own data disk is a fresh qcow2; anything else may hold old bytes past its head.
        Data::Device(device) => mount_device(sys, device, false, *medium == Medium::Serial),
        Data::Grown(device) => mount_device(sys, device, true, false),
        Data::Tmpfs => {
            let mount_err =
                |source| Error::MountDataDisk { device: "tmpfs".into(), target: DOCKER_ROOT.into(), source };
            sys.mkdir_all(DOCKER_ROOT, 0o710).map_err(mount_err)?;
            sys.mount(Some("tmpfs"), DOCKER_ROOT, Some("tmpfs"), MsFlags::MS_NOATIME, Some("mode=0710"))
                .map_err(mount_err)?;
            console::announce(
                sys,
                "n2d: no data disk: Docker's data is kept in memory (tmpfs) and lost at power-off; \
                 attach a blank disk to keep it",
            );
            Ok("tmpfs".into())
        }
    }
}

fn mount_device(sys: &dyn System, device: String, grown: bool, prezeroed: bool) -> Result<String> {
    let head = sys
        .read_head(&device, 4096)
        .map_err(|source| Error::ReadDataDisk { device: device.clone(), source })?;
    if !has_ext4(&head) {
        info!("formatting data disk {device} (ext4)");
        // A new data disk reads as zeros (a fresh qcow2): nothing to discard, and no inode
        // tables to zero, now or in the background (ext4lazyinit would compete with dockerd).
        let extended = if prezeroed { "nodiscard,assume_storage_prezeroed=1" } else { "nodiscard" };
        let args = ["-q", "-F", "-L", "n2d-data", "-E", extended, &device];
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
    if grown && has_ext4(&head) {
        // Online: the filesystem is mounted, no fsck needed first.
        match sys.run("resize2fs", &[&device]) {
            Ok(exit) if exit.success() => info!("grew the filesystem on {device}"),
            Ok(exit) => info!("resize2fs {device}: {exit}; the filesystem keeps its size"),
            Err(e) => info!("resize2fs {device}: {e}; the filesystem keeps its size"),
        }
    }
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
        mount_data(&sys, &Medium::Serial).unwrap();
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
        mount_data(&sys, &Medium::Serial).unwrap();
        assert!(!sys.calls().iter().any(|c| c.contains("mkfs")), "{:?}", sys.calls());
        // Byte order matters: 0xEF53 stored big-endian is not ext4.
        let mut swapped = ext4_image();
        swapped.swap(1080, 1081);
        assert!(!has_ext4(&swapped));
        assert!(!has_ext4(&[0u8; 100]));
    }

    fn export() -> FakeSystem {
        let sys = FakeSystem::new();
        sys.add_plain_disk("vda", vec![0u8; 8192]);
        sys.add_partition("vda", 2, "n2d-root", 2048, "");
        sys
    }

    #[test]
    fn an_export_uses_its_data_partition_before_any_other_disk() {
        let sys = export();
        sys.add_partition("vda", 4, "n2d-data", 4096, vec![0u8; 4096]);
        sys.add_plain_disk("vdb", vec![0u8; 8192]);
        let medium = Medium::Disk { disk: "vda".into() };
        assert_eq!(choose(&sys, &medium).unwrap(), Data::Device("/dev/vda4".into()));
        // A serial data disk comes first, as on n2d's own VMs, but is not waited for.
        sys.add_disk("vdc", "n2d-data", vec![0u8; 8192]);
        assert_eq!(choose(&sys, &medium).unwrap(), Data::Device("/dev/vdc".into()));
        assert_eq!(sys.now(), Duration::ZERO);
    }

    #[test]
    fn an_iso_takes_a_blank_disk_or_one_it_formatted_never_a_disk_with_data() {
        let sys = FakeSystem::new();
        let iso = Medium::Iso { device: "/dev/vda".into(), config: None };
        sys.add_plain_disk("vda", vec![0u8; 8192]);
        sys.add_plain_disk("sr0", vec![0u8; 8192]);
        let mut foreign = vec![0u8; 8192];
        foreign[0] = 0xeb;
        sys.add_plain_disk("vdb", foreign);
        let mut other_ext4 = ext4_image();
        other_ext4[1144..1148].copy_from_slice(b"home");
        sys.add_plain_disk("vdc", other_ext4);
        // Nothing usable: memory, said on the console.
        assert_eq!(choose(&sys, &iso).unwrap(), Data::Tmpfs);
        assert_eq!(mount_data(&sys, &iso).unwrap(), "tmpfs");
        assert!(sys.calls().contains(&"mount tmpfs /var/lib/docker -t tmpfs mode=0710".to_string()));

        let mut ours = ext4_image();
        ours[1144..1152].copy_from_slice(b"n2d-data");
        sys.add_plain_disk("vdd", ours);
        assert_eq!(choose(&sys, &iso).unwrap(), Data::Device("/dev/vdd".into()));
        sys.add_plain_disk("sdz", vec![0u8; 8192]);
        assert_eq!(choose(&sys, &iso).unwrap(), Data::Device("/dev/sdz".into()));
    }

    #[test]
    fn a_blank_partitioned_disk_is_not_taken() {
        let sys = export();
        let medium = Medium::Disk { disk: "vda".into() };
        sys.add_plain_disk("vdb", vec![0u8; 8192]);
        sys.add_partition("vdb", 1, "somebody", 2048, vec![0u8; 4096]);
        assert_eq!(choose(&sys, &medium).unwrap(), Data::Tmpfs);
    }

    #[test]
    fn failed_mkfs_stops_boot_before_mounting() {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-data", vec![0u8; 8192]);
        sys.state.borrow_mut().run_exits.insert("mkfs.ext4".into(), Exit::Code(1));
        let err = mount_data(&sys, &Medium::Serial).unwrap_err();
        assert!(matches!(err, Error::FormatDataDisk { .. }), "{err}");
        assert!(!sys.calls().iter().any(|c| c.starts_with("mount")));
    }
}
