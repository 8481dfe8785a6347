//! Property tests ("a short fuzz run") for what the guest trusts: the config-disk decoder and the
//! control-port request parser, plus the regression corpus in `tests/corpus/`.

use n2d_proto::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

fn tls() -> impl Strategy<Value = Option<TlsMaterial>> {
    proptest::option::of(
        (".{0,40}", ".{0,40}", ".{0,40}").prop_map(|(ca_pem, cert_pem, key_pem)| TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
        }),
    )
}

fn config() -> impl Strategy<Value = GuestConfig> {
    let ip = any::<u32>().prop_map(Ipv4Addr::from);
    (
        ".{0,63}",
        (
            "[0-9a-f:]{0,17}",
            ip.clone(),
            any::<u8>(),
            proptest::option::of(ip.clone()),
            prop::collection::vec(ip, 0..4),
        ),
        (tls(), any::<u16>()),
        prop::collection::btree_map(".{1,20}", ".{0,40}", 0..8),
    )
        .prop_map(|(hostname, (mac, address, prefix_len, gateway, dns), (tls, tcp_port), labels)| {
            // Half the configs have a user-mode uplink.
            let uplink = (tcp_port % 2 == 0).then(|| GuestUplink { mac: mac.clone() });
            // A quarter ask for DHCP.
            let addressing = if tcp_port % 4 == 1 {
                Addressing::Dhcp
            } else {
                Addressing::Static { address, prefix_len, gateway }
            };
            GuestConfig {
                hostname,
                network: GuestNetwork { mac, addressing, dns },
                docker: DockerConfig { tls, tcp_port },
                labels,
                uplink,
                template: false,
                seed: None,
                mounts: Vec::new(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_disk_round_trips(c in config()) {
        let disk = encode_config_disk(&c).unwrap();
        prop_assert_eq!(disk.len() % 512, 0);
        prop_assert_eq!(decode_config_disk(&disk).unwrap(), c);
    }

    #[test]
    fn config_disk_decoder_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_config_disk(&bytes);
        let mut disk = MAGIC.to_vec();
        disk.extend_from_slice(&bytes);
        let _ = decode_config_disk(&disk);
    }

    #[test]
    fn corrupt_config_disks_give_an_error_or_a_valid_config(
        c in config(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut disk = encode_config_disk(&c).unwrap();
        for (at, byte) in edits {
            let i = at.index(disk.len());
            disk[i] = byte;
        }
        if truncate {
            disk.truncate(cut.index(disk.len()));
        }
        // Whatever decodes is a config that encodes and decodes to itself.
        if let Ok(decoded) = decode_config_disk(&disk) {
            let again = encode_config_disk(&decoded).unwrap();
            prop_assert_eq!(decode_config_disk(&again).unwrap(), decoded);
        }
    }

    #[test]
    fn control_request_parser_never_panics(line in any::<String>()) {
        if let Some(req) = ControlRequest::parse(&line) {
            prop_assert_eq!(ControlRequest::parse(&req.as_line()), Some(req));
            let canonical = req.as_line();
            prop_assert_eq!(line.trim(), canonical.trim());
        }
    }
}

/// The worst case n2d-spec allows (MAX_LABELS_BYTES of labels that JSON must escape, next to
/// large TLS material) still fits the guest's limit, so it can never fail only at boot.
#[test]
fn the_label_caps_fit_the_guest_limit() {
    use n2d_spec::machine::{check_labels_size, MAX_LABELS_BYTES};
    let mut labels = BTreeMap::new();
    let mut bytes = 0;
    // Shortest labels give the most JSON overhead; quotes double in JSON.
    for i in 0.. {
        let (k, v) = (format!("{i:x}\""), "\"".to_string());
        if bytes + k.len() + v.len() + 1 > MAX_LABELS_BYTES {
            break;
        }
        bytes += k.len() + v.len() + 1;
        labels.insert(k, v);
    }
    check_labels_size("n", &labels).unwrap();
    assert!(labels.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() > MAX_LABELS_BYTES - 16);
    let pem = "x".repeat(16 * 1024);
    let c = GuestConfig {
        hostname: "a".repeat(63),
        network: GuestNetwork {
            mac: "52:54:00:12:34:56".into(),
            addressing: Addressing::Static { address: Ipv4Addr::LOCALHOST, prefix_len: 24, gateway: None },
            dns: vec![Ipv4Addr::LOCALHOST; 8],
        },
        docker: DockerConfig {
            tls: Some(TlsMaterial { ca_pem: pem.clone(), cert_pem: pem.clone(), key_pem: pem }),
            tcp_port: 2376,
        },
        labels,
        uplink: None,
        template: false,
        seed: None,
        mounts: Vec::new(),
    };
    let disk = encode_config_disk(&c).expect("the label caps must fit the config disk");
    assert_eq!(decode_config_disk(&disk).unwrap(), c);
}

#[test]
fn regression_corpus_gives_errors_not_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let result = decode_config_disk(&bytes);
        assert_eq!(result.is_ok(), name.starts_with("ok-"), "{name}: {result:?}");
        let _ = ControlRequest::parse(&String::from_utf8_lossy(&bytes));
        n += 1;
    }
    assert!(n >= 4, "corpus at {} is missing", dir.display());
}
