//! The machine's configuration: the config disk (n2d's own VMs), an exported disk's config
//! partition or ISO's config file, or, for an export made for no machine, a default one.

use crate::disks::{find_by_serial, find_partition, wait_for_serial};
use crate::error::{Error, Result};
use crate::log::info;
use crate::mounts::Medium;
use crate::net;
use crate::sys::System;
use n2d_proto::{
    decode_config_disk, Addressing, DockerConfig, GuestConfig, GuestNetwork, CONFIG_DISK_SERIAL, MAX_PAYLOAD,
    PAYLOAD_OFFSET,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the config came from: stage 2 says how to reach Docker accordingly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A config disk, partition or ISO file made for this machine.
    Machine(String),
    /// None found: the default config (DHCP, Docker on its local socket only).
    Default,
}

fn read_device(sys: &dyn System, device: &str) -> Result<Vec<u8>> {
    sys.read_head(device, PAYLOAD_OFFSET + MAX_PAYLOAD)
        .map_err(|source| Error::ReadConfigDisk { device: device.into(), source })
}

/// n2d's own VMs: the config disk by serial, waited for; anything wrong with it is fatal.
pub fn read_config(sys: &dyn System) -> Result<GuestConfig> {
    let device = wait_for_serial(sys, CONFIG_DISK_SERIAL, Duration::from_secs(5))?;
    let bytes = read_device(sys, &device)?;
    decode_config_disk(&bytes).map_err(|source| Error::DecodeConfigDisk { device, source })
}

/// The config disk read again while the machine runs (the host's `reload-tls`): found by
/// serial, read past the kernel's cache of it, since the host rewrote it after boot.
pub fn reread_config(sys: &dyn System) -> Result<(GuestConfig, String)> {
    let device = find_by_serial(sys, CONFIG_DISK_SERIAL)
        .ok_or_else(|| Error::DiskNotFound { serial: CONFIG_DISK_SERIAL.into(), waited_s: 0 })?;
    let bytes = sys
        .read_head_uncached(&device, PAYLOAD_OFFSET + MAX_PAYLOAD)
        .map_err(|source| Error::ReadConfigDisk { device: device.clone(), source })?;
    let config = decode_config_disk(&bytes)
        .map_err(|source| Error::DecodeConfigDisk { device: device.clone(), source })?;
    Ok((config, device))
}

/// An export's config: serial `n2d-config` → partition `n2d-config` → the ISO's config file →
/// the default config. A config area of zeros is "made for no machine"; a damaged one is
/// reported and the default config used (it opens nothing to the network).
pub fn find_config(sys: &dyn System, medium: &Medium) -> Result<(GuestConfig, Source)> {
    if *medium == Medium::Serial {
        return Ok((read_config(sys)?, Source::Machine(CONFIG_DISK_SERIAL.into())));
    }
    let found = if let Some(device) = find_by_serial(sys, CONFIG_DISK_SERIAL) {
        Some((read_device(sys, &device)?, device))
    } else if let Some(part) = find_partition(sys, CONFIG_DISK_SERIAL) {
        Some((read_device(sys, &part.device)?, part.device))
    } else if let Medium::Iso { device, config: Some(bytes) } = medium {
        Some((bytes.clone(), format!("{device}:{}", n2d_proto::ISO_CONFIG_PATH)))
    } else {
        None
    };
    if let Some((bytes, from)) = found {
        if bytes.iter().take(PAYLOAD_OFFSET).all(|&b| b == 0) {
            info!("config: {from} is blank (an export made for no machine)");
        } else {
            match decode_config_disk(&bytes) {
                Ok(config) => return Ok((config, Source::Machine(from))),
                Err(e) => info!("config: {from} cannot be read ({e}); using the default config"),
            }
        }
    } else {
        info!("config: none found (no {CONFIG_DISK_SERIAL} disk, partition or ISO file)");
    }
    Ok((default_config(sys), Source::Default))
}

/// The config of an export made for no machine: `n2d-` and the first NIC's last three MAC
/// bytes as the hostname, DHCP on that NIC, Docker on its local socket only (`tcp_port` 0).
pub fn default_config(sys: &dyn System) -> GuestConfig {
    let suffix = net::wait_first_ethernet(sys)
        .and_then(|ifname| net::mac_of(sys, &ifname))
        .map(|mac| mac.split(':').skip(3).collect::<String>())
        .unwrap_or_else(|| "local".into());
    GuestConfig {
        hostname: format!("n2d-{suffix}"),
        network: GuestNetwork { mac: String::new(), addressing: Addressing::Dhcp, dns: vec![] },
        docker: DockerConfig { tls: None, tcp_port: 0 },
        labels: BTreeMap::new(),
        uplink: None,
        template: false,
        seed: None,
        mounts: Vec::new(),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;
    use n2d_proto::{encode_config_disk, Addressing, DockerConfig, GuestNetwork, TlsMaterial};
    use std::collections::BTreeMap;

    pub fn sample_config() -> GuestConfig {
        GuestConfig {
            hostname: "node-1".into(),
            network: GuestNetwork {
                mac: "52:54:00:12:34:56".into(),
                addressing: Addressing::Static {
                    address: "10.77.0.2".parse().unwrap(),
                    prefix_len: 24,
                    gateway: Some("10.77.0.1".parse().unwrap()),
                },
                dns: vec!["10.77.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            },
            docker: DockerConfig {
                tls: Some(TlsMaterial {
                    ca_pem: "CA-PEM".into(),
                    cert_pem: "CERT-PEM".into(),
                    key_pem: "SECRET-KEY-PEM".into(),
                }),
                tcp_port: 2376,
            },
            labels: BTreeMap::from([("role".into(), "worker".into()), ("zone".into(), "a".into())]),
            uplink: None,
            template: false,
            seed: None,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn own_vms_read_the_config_disk_by_serial() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-root", "");
        sys.add_disk("vdc", "n2d-config\n", encode_config_disk(&sample_config()).unwrap());
        // A config partition is not looked at.
        sys.add_plain_disk("sda", vec![0u8; 4096]);
        sys.add_partition("sda", 3, "n2d-config", 2048, vec![0u8; 4096]);
        let (config, source) = find_config(&sys, &Medium::Serial).unwrap();
        assert_eq!(config, sample_config());
        assert_eq!(source, Source::Machine("n2d-config".into()));
    }

    fn export_disk(config: &[u8]) -> FakeSystem {
        let sys = FakeSystem::new();
        sys.add_plain_disk("vda", vec![0u8; 8192]);
        sys.add_partition("vda", 2, "n2d-root", 2048, "");
        let mut area = config.to_vec();
        area.resize(1024 * 1024, 0);
        sys.add_partition("vda", 3, "n2d-config", 4096, area);
        sys.add_file("/sys/class/net/lo/address", "00:00:00:00:00:00\n");
        sys.add_file("/sys/class/net/lo/type", "772\n");
        sys.add_file("/sys/class/net/eth0/address", "52:54:00:ab:cd:ef\n");
        sys.add_file("/sys/class/net/eth0/type", "1\n");
        sys.add_dir("/sys/class/net/eth0/device");
        sys
    }

    #[test]
    fn an_export_made_for_a_machine_reads_its_config_partition() {
        let sys = export_disk(&encode_config_disk(&sample_config()).unwrap());
        let medium = Medium::Disk { disk: "vda".into() };
        let (config, source) = find_config(&sys, &medium).unwrap();
        assert_eq!(config, sample_config());
        assert_eq!(source, Source::Machine("/dev/vda3".into()));
        assert_eq!(sys.now(), Duration::ZERO, "an export waits for no serial config disk");
    }

    #[test]
    fn a_blank_or_damaged_config_partition_means_the_default_config() {
        for area in [vec![], b"N2DCONF1\xff\xff\xff\xff garbage".to_vec()] {
            let sys = export_disk(&area);
            let (config, source) = find_config(&sys, &Medium::Disk { disk: "vda".into() }).unwrap();
            assert_eq!(source, Source::Default);
            assert_eq!(config.hostname, "n2d-abcdef");
            assert_eq!(config.network.addressing, Addressing::Dhcp);
            assert_eq!(config.network.mac, "");
            assert_eq!(config.docker, DockerConfig { tls: None, tcp_port: 0 });
        }
    }

    #[test]
    fn an_iso_carries_its_config_as_a_file_or_has_none() {
        let sys = export_disk(&[]);
        let bytes = encode_config_disk(&sample_config()).unwrap();
        let iso = Medium::Iso { device: "/dev/sr0".into(), config: Some(bytes) };
        // The partition of a disk attached beside the ISO is found first (contract order); here
        // it is blank, so look at an ISO alone.
        let alone = FakeSystem::new();
        let (config, source) = find_config(&alone, &iso).unwrap();
        assert_eq!(config, sample_config());
        assert_eq!(source, Source::Machine("/dev/sr0:n2d/config".into()));
        let (_, source) =
            find_config(&sys, &Medium::Iso { device: "/dev/sr0".into(), config: None }).unwrap();
        assert_eq!(source, Source::Default);
    }

    #[test]
    fn missing_config_disk_times_out_and_garbage_is_rejected() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-root", "");
        let err = read_config(&sys).unwrap_err();
        assert!(matches!(err, Error::DiskNotFound { .. }), "{err}");
        assert!(sys.now() >= Duration::from_secs(5));

        sys.add_disk("vdb", "n2d-config", vec![0u8; 4096]);
        let err = read_config(&sys).unwrap_err();
        assert!(matches!(err, Error::DecodeConfigDisk { ref device, .. } if device == "/dev/vdb"));
    }
}
