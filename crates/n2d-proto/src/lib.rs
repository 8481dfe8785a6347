//! What the host and the guest exchange.
//!
//! * The **config disk**: a small raw block device n2d attaches to every VM (virtio serial
//!   [`CONFIG_DISK_SERIAL`]). Sector 0 holds a fixed header (`MAGIC`, then the JSON length as a
//!   little-endian u32); the JSON [`GuestConfig`] follows from byte 512. No filesystem is needed,
//!   so the guest reads it with a plain `read()` and nothing has to be mounted.
//! * The **control channel**: a virtio-serial port named [`CONTROL_PORT_NAME`] that carries
//!   one-line [`ControlRequest`]s from the host (e.g. a graceful power-off).
//! * The **exec port**: a second virtio-serial port, [`EXEC_PORT_NAME`], carrying [`exec`]
//!   sessions (a command's stdin, output and exit status).
//! * The **ready marker**: the line [`READY_MARKER`] that n2d-init prints on the serial console
//!   once dockerd answers on its local socket; the host waits for it in the serial log instead of
//!   polling the Docker API (polling competes with the emulated guest for the host's CPUs).

#![forbid(unsafe_code)]

pub mod exec;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// First bytes of a config disk.
pub const MAGIC: &[u8; 8] = b"N2DCONF1";
/// Where the JSON document starts on the config disk.
pub const PAYLOAD_OFFSET: usize = 512;
/// Largest JSON document accepted (certificates included), so a damaged header cannot make the
/// guest allocate gigabytes.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// virtio-blk serial numbers by which the guest finds its disks (`/sys/block/vdX/serial`) in
/// n2d's own VMs, and the GPT partition names by which it finds them on an exported disk.
pub const ROOT_DISK_SERIAL: &str = "n2d-root";
pub const CONFIG_DISK_SERIAL: &str = "n2d-config";
pub const DATA_DISK_SERIAL: &str = "n2d-data";

/// Where an ISO export keeps the root filesystem and, made for one machine, its config disk's
/// bytes (both as files on the ISO 9660 filesystem).
pub const ISO_ROOTFS_PATH: &str = "n2d/rootfs.erofs";
pub const ISO_CONFIG_PATH: &str = "n2d/config";

/// Name of the virtio-serial port that carries [`ControlRequest`]s.
pub const CONTROL_PORT_NAME: &str = "org.n2d.control";

/// Name of the virtio-serial port that carries exec sessions ([`exec`]): a port of its own, so
/// a long `n2d exec` never holds up a power-off on the control port.
pub const EXEC_PORT_NAME: &str = "org.n2d.exec";

/// The image's lists of kernel modules for n2d-init, one name a line, written by the image
/// builder: loaded at boot (from the initramfs, then on the root), and once Docker answers.
pub const MODULE_LIST: &str = "/etc/n2d/modules";
pub const LATE_MODULE_LIST: &str = "/etc/n2d/modules-late";

/// Printed by n2d-init on the console when the Docker engine answers inside the guest.
pub const READY_MARKER: &str = "N2D-READY docker";

/// Printed by n2d-init, followed by a space and the address, once its NIC has an address
/// (static, or leased by DHCP: the line is printed again when a renewal changes it), e.g.
/// `N2D-ADDRESS 192.168.1.40`.
pub const ADDRESS_MARKER: &str = "N2D-ADDRESS";

/// Everything a guest needs to become a Docker host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub hostname: String,
    pub network: GuestNetwork,
    pub docker: DockerConfig,
    /// Node labels (also written as engine labels in daemon.json).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// User-mode networking's second NIC: outbound traffic and the host's forwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<GuestUplink>,
    /// A warm template's boot: no network identity (links down, no address), dockerd on its
    /// unix socket only, nothing that one clone could share with another (no TLS key, no seed,
    /// no machine-id worth keeping). The guest then waits, and the host saves it running; each
    /// clone restored from it gets [`ControlRequest::TakeIdentity`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub template: bool,
    /// 32 bytes of the host's randomness, hex: mixed into the kernel's RNG and a reseed forced
    /// (at boot, and when a clone takes its identity), so no clone's random state can be
    /// derived from its template's or a sibling's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
    /// Host folders shared into the guest (virtio-fs), mounted before dockerd starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<GuestMount>,
}

/// One host folder as the guest mounts it: the virtio-fs device's tag, where, and whether
/// read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestMount {
    pub tag: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// The virtio-fs tag of a machine's `index`th host folder (`n2d-mount-0`...).
pub fn mount_tag(index: usize) -> String {
    format!("n2d-mount-{index}")
}

/// 32 bytes of entropy from the host, carried as 64 hex digits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Seed(pub [u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl From<Seed> for String {
    fn from(seed: Seed) -> String {
        seed.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for Seed {
    type Error = String;

    fn try_from(hex: String) -> Result<Seed, String> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err("a seed is 64 hex digits".into());
        }
        let mut seed = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            seed[i] = u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex");
        }
        Ok(Seed(seed))
    }
}

/// The NIC on QEMU's user-mode network stack (slirp): the default route goes through it, and
/// the host's forwards on 127.0.0.1 arrive on it. Its addresses are the same on every VM
/// ([`uplink`]); `network` stays the NIC that other VMs reach (swarm traffic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestUplink {
    pub mac: String,
}

/// The user-mode network's addresses, which the host's QEMU (`-netdev user,net=...`) and the
/// guest share. Not 10.0.2.0/24 (QEMU's default): Docker's default pool for overlay networks is
/// 10.0.0.0/8 in /24s, and a stack's third overlay would take 10.0.2.0/24. Carrier-grade NAT
/// space is used by neither Docker nor a typical LAN.
pub mod uplink {
    use std::net::Ipv4Addr;
    pub const NETWORK: Ipv4Addr = Ipv4Addr::new(100, 64, 77, 0);
    pub const PREFIX_LEN: u8 = 24;
    /// The host, as slirp shows it to the guest.
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(100, 64, 77, 2);
    /// slirp's DNS proxy, which asks the host's own resolvers (loopback ones included).
    pub const DNS: Ipv4Addr = Ipv4Addr::new(100, 64, 77, 3);
    pub const GUEST: Ipv4Addr = Ipv4Addr::new(100, 64, 77, 15);
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    /// MAC address of the NIC to configure, lower-case `aa:bb:cc:dd:ee:ff`; empty: the first
    /// Ethernet NIC (an exported disk, whose hypervisor picks the MAC).
    #[serde(default)]
    pub mac: String,
    pub addressing: Addressing,
    /// Name servers; with DHCP, empty means the ones the lease names.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

/// How the guest's NIC gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "mode")]
pub enum Addressing {
    /// Fixed: n2d's own VMs (the address n2d allocated), or an export given `--ip`.
    Static { address: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr> },
    /// Leased from a DHCP server on the NIC's network (an export given `--dhcp`, or an exported
    /// disk booted without any config); the guest prints the leased address on its console.
    Dhcp,
}

impl GuestNetwork {
    /// The static address, if the NIC has one.
    pub fn static_address(&self) -> Option<Ipv4Addr> {
        match self.addressing {
            Addressing::Static { address, .. } => Some(address),
            Addressing::Dhcp => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// TLS material for the engine's TCP endpoint; `None` means plain TCP (`--insecure-tcp`).
    pub tls: Option<TlsMaterial>,
    /// TCP port the engine listens on (2376 with TLS, 2375 without); 0: no TCP endpoint, the
    /// local socket only (the guest's default config, on an export made for no machine).
    pub tcp_port: u16,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

// Never print key material, even in debug logs.
impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigDiskError {
    #[error("config disk is too short ({0} bytes)")]
    TooShort(usize),
    #[error("config disk has no n2d header (wrong disk attached?)")]
    BadMagic,
    #[error("config disk announces {0} bytes of configuration, more than the {MAX_PAYLOAD} allowed")]
    TooLarge(usize),
    #[error("config disk configuration is not valid JSON")]
    Json(#[source] serde_json::Error),
}

/// Serialises `config` into a config-disk image, padded to whole 512-byte sectors. A config the
/// guest would refuse (over [`MAX_PAYLOAD`]) is refused here, before any VM boots.
pub fn encode_config_disk(config: &GuestConfig) -> Result<Vec<u8>, ConfigDiskError> {
    let json = serde_json::to_vec(config).expect("GuestConfig always serialises");
    if json.len() > MAX_PAYLOAD {
        return Err(ConfigDiskError::TooLarge(json.len()));
    }
    let mut disk = Vec::with_capacity(PAYLOAD_OFFSET + json.len() + 512);
    disk.extend_from_slice(MAGIC);
    disk.extend_from_slice(&(json.len() as u32).to_le_bytes());
    disk.resize(PAYLOAD_OFFSET, 0);
    disk.extend_from_slice(&json);
    let padded = disk.len().div_ceil(512) * 512;
    disk.resize(padded, 0);
    Ok(disk)
}

/// Parses a config-disk image (or its first bytes, at least header + payload).
pub fn decode_config_disk(disk: &[u8]) -> Result<GuestConfig, ConfigDiskError> {
    if disk.len() < PAYLOAD_OFFSET {
        return Err(ConfigDiskError::TooShort(disk.len()));
    }
    if &disk[..MAGIC.len()] != MAGIC {
        return Err(ConfigDiskError::BadMagic);
    }
    let len = u32::from_le_bytes(disk[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(ConfigDiskError::TooLarge(len));
    }
    let end = PAYLOAD_OFFSET + len;
    if disk.len() < end {
        return Err(ConfigDiskError::TooShort(disk.len()));
    }
    serde_json::from_slice(&disk[PAYLOAD_OFFSET..end]).map_err(ConfigDiskError::Json)
}

/// One line sent by the host on the control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Stop dockerd and containerd cleanly, sync, unmount, power off.
    PowerOff,
    /// Read the config disk again (the host rewrote it with a new server certificate), write
    /// dockerd's TLS files from it and restart dockerd; the guest prints [`READY_MARKER`] again
    /// once the engine answers. Nothing else of the config is applied.
    ReloadTls,
    /// Sent to a clone just restored from a warm template (`identity <unix_ms>`): set the wall
    /// clock to `unix_ms`, read the clone's own config disk past the cache, and take its
    /// identity before anything answers: MACs, addresses, routes and DNS, hostname, a fresh
    /// machine-id, the seed mixed into the RNG and a reseed, engine labels, the TLS material,
    /// a new Docker engine ID, dockerd restarted with its TCP endpoint. Then [`READY_MARKER`].
    TakeIdentity { unix_ms: u64 },
    /// Sent to a machine resumed from its own saved state (`clock <unix_ms>`): set the wall
    /// clock, which stood still while it was saved.
    SetClock { unix_ms: u64 },
    /// `engine-down` (`n2d fault kill-engine --no-restart`): SIGKILL dockerd and keep it down
    /// until [`ControlRequest::EngineUp`].
    EngineDown,
    /// `engine-up`: start the dockerd kept down again.
    EngineUp,
}

impl ControlRequest {
    pub fn as_line(self) -> String {
        match self {
            ControlRequest::PowerOff => "poweroff\n".into(),
            ControlRequest::ReloadTls => "reload-tls\n".into(),
            ControlRequest::TakeIdentity { unix_ms } => format!("identity {unix_ms}\n"),
            ControlRequest::SetClock { unix_ms } => format!("clock {unix_ms}\n"),
            ControlRequest::EngineDown => "engine-down\n".into(),
            ControlRequest::EngineUp => "engine-up\n".into(),
        }
    }

    /// The request a line names, in exactly [`ControlRequest::as_line`]'s form (numbers
    /// without signs or leading zeros), surrounding whitespace aside.
    pub fn parse(line: &str) -> Option<Self> {
        match line.trim() {
            "poweroff" => Some(ControlRequest::PowerOff),
            "reload-tls" => Some(ControlRequest::ReloadTls),
            "engine-down" => Some(ControlRequest::EngineDown),
            "engine-up" => Some(ControlRequest::EngineUp),
            other => {
                let (word, ms) = other.split_once(' ')?;
                let canonical = ms.bytes().all(|b| b.is_ascii_digit()) && (ms == "0" || !ms.starts_with('0'));
                let unix_ms: u64 = canonical.then(|| ms.parse().ok()).flatten()?;
                match word {
                    "identity" => Some(ControlRequest::TakeIdentity { unix_ms }),
                    "clock" => Some(ControlRequest::SetClock { unix_ms }),
                    _ => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestConfig {
        GuestConfig {
            hostname: "h1".into(),
            network: GuestNetwork {
                mac: "52:54:00:12:34:56".into(),
                addressing: Addressing::Static {
                    address: Ipv4Addr::new(10, 77, 0, 2),
                    prefix_len: 24,
                    gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
                },
                dns: vec![],
            },
            docker: DockerConfig {
                tls: Some(TlsMaterial {
                    ca_pem: "CA".into(),
                    cert_pem: "CERT".into(),
                    key_pem: "SECRET-KEY".into(),
                }),
                tcp_port: 2376,
            },
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            uplink: None,
            template: false,
            seed: None,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn config_disk_round_trips_and_is_sector_aligned() {
        let disk = encode_config_disk(&sample()).unwrap();
        assert_eq!(disk.len() % 512, 0);
        assert_eq!(decode_config_disk(&disk).unwrap(), sample());
    }

    #[test]
    fn config_disk_rejects_wrong_magic_short_and_oversized_input() {
        let mut disk = encode_config_disk(&sample()).unwrap();
        assert!(matches!(decode_config_disk(&disk[..100]), Err(ConfigDiskError::TooShort(100))));
        disk[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(matches!(decode_config_disk(&disk), Err(ConfigDiskError::TooLarge(_))));
        disk[0] = b'X';
        assert!(matches!(decode_config_disk(&disk), Err(ConfigDiskError::BadMagic)));
    }

    #[test]
    fn config_disk_rejects_truncated_payload_and_garbage_json() {
        let disk = encode_config_disk(&sample()).unwrap();
        let len = u32::from_le_bytes(disk[8..12].try_into().unwrap()) as usize;
        assert!(matches!(
            decode_config_disk(&disk[..PAYLOAD_OFFSET + len - 1]),
            Err(ConfigDiskError::TooShort(_))
        ));
        let mut bad = disk.clone();
        bad[PAYLOAD_OFFSET] = b'!';
        assert!(matches!(decode_config_disk(&bad), Err(ConfigDiskError::Json(_))));
    }

    #[test]
    fn a_config_over_the_limit_is_refused_when_encoded() {
        let mut c = sample();
        c.labels.insert("big".into(), "x".repeat(MAX_PAYLOAD));
        assert!(matches!(encode_config_disk(&c), Err(ConfigDiskError::TooLarge(_))));
    }

    #[test]
    fn debug_output_never_contains_the_private_key() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("SECRET-KEY"), "{text}");
    }

    #[test]
    fn control_requests_round_trip() {
        for req in [
            ControlRequest::PowerOff,
            ControlRequest::ReloadTls,
            ControlRequest::TakeIdentity { unix_ms: 0 },
            ControlRequest::TakeIdentity { unix_ms: 1_796_000_000_123 },
            ControlRequest::TakeIdentity { unix_ms: u64::MAX },
            ControlRequest::SetClock { unix_ms: 1_796_000_000_123 },
            ControlRequest::EngineDown,
            ControlRequest::EngineUp,
        ] {
            assert_eq!(ControlRequest::parse(&req.as_line()), Some(req));
        }
        assert_eq!(ControlRequest::parse("reboot now"), None);
        for near in [
            "reload-tls now",
            "reload",
            "reload_tls",
            "RELOAD-TLS",
            "reload-tls\0",
            "identity",
            "identity ",
            "identity 01",
            "identity +1",
            "identity -1",
            "identity 1 2",
            "identity  1",
            "identity 18446744073709551616",
            "clock",
            "clock 01",
            "clock x",
            "time 12",
        ] {
            assert_eq!(ControlRequest::parse(near), None, "{near:?}");
        }
    }

    #[test]
    fn a_seed_is_64_hex_digits_and_never_printed() {
        let mut config = sample();
        config.seed = Some(Seed([0xab; 32]));
        let disk = encode_config_disk(&config).unwrap();
        assert_eq!(decode_config_disk(&disk).unwrap(), config);
        assert!(!format!("{config:?}").contains("abab"));
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert!(Seed::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
