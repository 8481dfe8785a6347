//! Finding disks by their virtio serial and reading the config disk.

use crate::error::{Error, Result};
use crate::sys::{poll, System};
use n2d_proto::{decode_config_disk, GuestConfig, CONFIG_DISK_SERIAL, MAX_PAYLOAD, PAYLOAD_OFFSET};
use std::time::Duration;

/// `/dev/vdX` of the block device whose `/sys/block/vdX/serial` is `serial`.
pub fn find_disk(sys: &dyn System, serial: &str) -> Option<String> {
    sys.read_dir("/sys/block")
        .ok()?
        .into_iter()
        .find(|dev| {
            sys.read_file(&format!("/sys/block/{dev}/serial"))
                .is_ok_and(|s| String::from_utf8_lossy(&s).trim() == serial)
        })
        .map(|dev| format!("/dev/{dev}"))
}

/// Like [`find_disk`], but waits up to `timeout` for the disk to be probed.
pub fn wait_for_disk(sys: &dyn System, serial: &str, timeout: Duration) -> Result<String> {
    poll(sys, timeout, Duration::from_millis(100), || find_disk(sys, serial))
        .ok_or_else(|| Error::DiskNotFound { serial: serial.into(), waited_s: timeout.as_secs() })
}

pub fn read_config(sys: &dyn System) -> Result<GuestConfig> {
    let device = wait_for_disk(sys, CONFIG_DISK_SERIAL, Duration::from_secs(5))?;
    let bytes = sys
        .read_head(&device, PAYLOAD_OFFSET + MAX_PAYLOAD)
        .map_err(|source| Error::ReadConfigDisk { device: device.clone(), source })?;
    decode_config_disk(&bytes).map_err(|source| Error::DecodeConfigDisk { device, source })
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
        }
    }

    #[test]
    fn finds_disks_by_serial_not_by_name() {
        let sys = FakeSystem::new();
        sys.add_disk("vda", "n2d-root", "");
        sys.add_disk("vdb", "n2d-data", "");
        sys.add_disk("vdc", "n2d-config\n", encode_config_disk(&sample_config()).unwrap());
        assert_eq!(find_disk(&sys, "n2d-data").as_deref(), Some("/dev/vdb"));
        assert_eq!(read_config(&sys).unwrap(), sample_config());
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
