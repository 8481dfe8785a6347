//! Finding the boot's block devices: by virtio serial (n2d's own VMs), by GPT partition name
//! (an exported disk), or as an ISO 9660 filesystem (an exported ISO, on a CD or as a disk).

use crate::error::{Error, Result};
use crate::sys::{poll, System};
use std::time::Duration;

/// `/dev/vdX` of the block device whose `/sys/block/vdX/serial` is `serial`.
pub fn find_by_serial(sys: &dyn System, serial: &str) -> Option<String> {
    sys.read_dir("/sys/block")
        .ok()?
        .into_iter()
        .find(|dev| {
            sys.read_file(&format!("/sys/block/{dev}/serial"))
                .is_ok_and(|s| String::from_utf8_lossy(&s).trim() == serial)
        })
        .map(|dev| format!("/dev/{dev}"))
}

/// Like [`find_by_serial`], but waits up to `timeout` for the disk to be probed.
pub fn wait_for_serial(sys: &dyn System, serial: &str, timeout: Duration) -> Result<String> {
    poll(sys, timeout, Duration::from_millis(100), || find_by_serial(sys, serial))
        .ok_or_else(|| Error::DiskNotFound { serial: serial.into(), waited_s: timeout.as_secs() })
}

/// One entry of `/sys/class/block`, from its `uevent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name: `vda`, `vda2`, `sr0`, `nvme0n1p3`.
    pub name: String,
    pub partition: bool,
    /// The GPT partition name (`PARTNAME=`), if any.
    pub partname: Option<String>,
    pub partn: Option<u32>,
}

impl BlockDev {
    pub fn device(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

pub fn parse_uevent(name: &str, text: &str) -> BlockDev {
    let mut dev = BlockDev { name: name.to_string(), partition: false, partname: None, partn: None };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DEVTYPE", v)) => dev.partition = v == "partition",
            Some(("PARTNAME", v)) => dev.partname = Some(v.to_string()),
            Some(("PARTN", v)) => dev.partn = v.trim().parse().ok(),
            _ => {}
        }
    }
    dev
}

/// Every block device the kernel knows, sorted by name; loop, RAM and zram devices left out
/// (they hold nothing the boot looks for, and a loop device may be the root itself).
pub fn block_devices(sys: &dyn System) -> Vec<BlockDev> {
    let names = sys.read_dir("/sys/class/block").unwrap_or_default();
    names
        .into_iter()
        .filter(|n| !["loop", "ram", "zram", "dm-", "md"].iter().any(|p| n.starts_with(p)))
        .filter_map(|n| {
            let text = sys.read_file(&format!("/sys/class/block/{n}/uevent")).ok()?;
            Some(parse_uevent(&n, &String::from_utf8_lossy(&text)))
        })
        .collect()
}

/// A GPT partition found by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `/dev/vda2`
    pub device: String,
    /// The whole disk's kernel name: `vda`.
    pub disk: String,
    pub partn: u32,
}

/// The partition named `label` (the first one, by device name), with its disk.
pub fn find_partition(sys: &dyn System, label: &str) -> Option<Partition> {
    let part =
        block_devices(sys).into_iter().find(|d| d.partition && d.partname.as_deref() == Some(label))?;
    let disk = parent_disk(sys, &part.name)?;
    Some(Partition { device: part.device(), disk, partn: part.partn? })
}

/// The disk `part` is a partition of: the `/sys/block/DISK` that has a `PART/partition` entry.
pub fn parent_disk(sys: &dyn System, part: &str) -> Option<String> {
    sys.read_dir("/sys/block").ok()?.into_iter().find(|disk| {
        part.starts_with(disk.as_str()) && sys.exists(&format!("/sys/block/{disk}/{part}/partition"))
    })
}

/// A sysfs number (sizes and offsets are in 512-byte sectors whatever the device's block size).
pub fn sysfs_u64(sys: &dyn System, path: &str) -> Option<u64> {
    String::from_utf8_lossy(&sys.read_file(path).ok()?).trim().parse().ok()
}

/// The ISO 9660 primary volume descriptor's identifier, at byte 1 of sector 16 (2048-byte).
pub const ISO9660_MAGIC_OFFSET: usize = 32769;
pub const ISO9660_MAGIC: &[u8; 5] = b"CD001";

pub fn has_iso9660(head: &[u8]) -> bool {
    head.get(ISO9660_MAGIC_OFFSET..ISO9660_MAGIC_OFFSET + ISO9660_MAGIC.len()) == Some(&ISO9660_MAGIC[..])
}

/// Whole disks holding an ISO 9660 filesystem at byte 0: CDs first (`sr*`), then disks (a hybrid
/// ISO attached as a disk), each by name.
pub fn iso_candidates(sys: &dyn System) -> Vec<String> {
    let mut disks: Vec<BlockDev> = block_devices(sys).into_iter().filter(|d| !d.partition).collect();
    disks.sort_by_key(|d| (!d.name.starts_with("sr"), d.name.clone()));
    disks
        .into_iter()
        .map(|d| d.device())
        .filter(|dev| sys.read_head(dev, ISO9660_MAGIC_OFFSET + 5).is_ok_and(|h| has_iso9660(&h)))
        .collect()
}

/// Whether `head` (a disk's first sectors) is all zeros: a blank disk a hypervisor added.
pub fn is_blank(head: &[u8]) -> bool {
    !head.is_empty() && head.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    pub fn iso_image() -> Vec<u8> {
        let mut iso = vec![0u8; 40 * 1024];
        iso[ISO9660_MAGIC_OFFSET - 1] = 1;
        iso[ISO9660_MAGIC_OFFSET..ISO9660_MAGIC_OFFSET + 5].copy_from_slice(ISO9660_MAGIC);
        iso
    }

    #[test]
    fn finds_disks_by_serial_not_by_name() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-root", "");
        sys.add_disk("vdb", "n2d-data\n", "");
        assert_eq!(find_by_serial(&sys, "n2d-data").as_deref(), Some("/dev/vdb"));
        assert_eq!(find_by_serial(&sys, "n2d-config"), None);
    }

    #[test]
    fn partitions_are_found_by_gpt_name_with_their_disk() {
        let sys = FakeSystem::new();
        sys.add_plain_disk("sda", vec![0u8; 4096]);
        sys.add_partition("sda", 1, "EFI system partition", 2048, vec![0u8; 1024]);
        sys.add_plain_disk("nvme0n1", vec![0u8; 4096]);
        sys.add_partition("nvme0n1", 1, "ESP", 2048, vec![0u8; 1024]);
        sys.add_partition("nvme0n1", 2, "n2d-root", 4096, vec![0u8; 1024]);
        sys.add_partition("nvme0n1", 4, "n2d-data", 8192, vec![0u8; 1024]);
        let root = find_partition(&sys, "n2d-root").unwrap();
        assert_eq!(root, Partition { device: "/dev/nvme0n1p2".into(), disk: "nvme0n1".into(), partn: 2 });
        assert_eq!(find_partition(&sys, "n2d-data").unwrap().partn, 4);
        assert_eq!(find_partition(&sys, "n2d-config"), None);
        assert_eq!(sysfs_u64(&sys, "/sys/block/nvme0n1/nvme0n1p4/start"), Some(8192));
    }

    #[test]
    fn uevent_parsing() {
        let dev = parse_uevent(
            "vda3",
            "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=n2d-data\n",
        );
        assert_eq!(
            dev,
            BlockDev {
                name: "vda3".into(),
                partition: true,
                partname: Some("n2d-data".into()),
                partn: Some(3)
            }
        );
        assert!(!parse_uevent("sr0", "MAJOR=11\nDEVNAME=sr0\nDEVTYPE=disk\n").partition);
    }

    #[test]
    fn iso9660_is_recognised_at_byte_32769_on_cds_first() {
        assert!(has_iso9660(&iso_image()));
        assert!(!has_iso9660(&iso_image()[..ISO9660_MAGIC_OFFSET + 4]));
        assert!(!has_iso9660(&vec![0u8; 40 * 1024]));
        let sys = FakeSystem::new();
        sys.add_plain_disk("vda", iso_image());
        sys.add_plain_disk("vdb", vec![0u8; 40 * 1024]);
        sys.add_plain_disk("sr0", iso_image());
        sys.add_plain_disk("loop0", iso_image());
        assert_eq!(iso_candidates(&sys), ["/dev/sr0", "/dev/vda"]);
    }

    #[test]
    fn blank_means_all_zeros() {
        assert!(is_blank(&[0u8; 4096]));
        assert!(!is_blank(&[]));
        let mut head = [0u8; 4096];
        head[510] = 0x55;
        assert!(!is_blank(&head));
    }
}
