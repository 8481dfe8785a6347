//! Property tests ("a short fuzz run") for what n2d reads from `ip -j` (a link's kind, its
//! first IPv4 address, the default route's device), plus the regression corpus in
//! `tests/corpus/ip/`.

use n2d_net::ipjson::{default_route_dev, first_ipv4, link_kind};
use n2d_spec::link::parse_interface_name;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const LINK: &str = r#"[{"ifindex":4,"ifname":"n2d0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"4a:1b:2c:3d:4e:5f","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"linkinfo":{"info_kind":"bridge","info_data":{"forward_delay":1500,"stp_state":0}}}]"#;
const ADDR: &str = r#"[{"ifindex":4,"ifname":"n2d0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"10.9.0.1","prefixlen":16,"broadcast":"10.9.255.255","scope":"global","label":"n2d0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
const ROUTE: &str = r#"[{"dst":"default","gateway":"192.168.1.1","dev":"wlp2s0","protocol":"dhcp","prefsrc":"192.168.1.23","metric":600,"flags":[]}]"#;

/// What every reader's answer must be, whatever `out` was.
fn check(out: &[u8]) -> Result<(), TestCaseError> {
    let kind = link_kind(out);
    prop_assert!(
        kind == "unknown"
            || (kind.len() <= 32
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')),
        "{:?}",
        kind
    );
    if let Some((ip, prefix_len)) = first_ipv4(out) {
        prop_assert!(prefix_len <= 32);
        // The address is the one printed, not a guess.
        let local = serde_json::from_slice::<Value>(out)
            .ok()
            .and_then(|v| v[0]["addr_info"][0]["local"].as_str().map(str::to_string));
        prop_assert_eq!(local.and_then(|l| l.parse::<Ipv4Addr>().ok()), Some(ip));
    }
    if let Some(Ok(dev)) = default_route_dev(out) {
        prop_assert!(parse_interface_name(&dev).is_ok(), "{:?}", dev);
    }
    Ok(())
}

/// JSON values of the kinds and edge cases that matter to the readers.
fn value() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "bridge",
            "tun",
            "veth",
            "ether",
            "10.9.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.9.0.1/24",
            "-j",
            "eth0+",
            "a,b",
            "..",
            "",
            "way-too-long-interface-name",
            "eth0\n",
            "\u{1b}[2J",
        ])
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// Outputs shaped like iproute2's, with the fields the readers use replaced at random.
fn ip_output() -> impl Strategy<Value = Value> {
    let v = value();
    (v.clone(), v.clone(), v.clone(), v.clone(), v, 0u8..8).prop_map(|(a, b, c, d, e, shape)| match shape {
        0 => json!([{ "linkinfo": { "info_kind": a }, "link_type": b }]),
        1 => json!([{ "link_type": a, "linkinfo": b }]),
        2 => json!([{ "addr_info": [{ "local": a, "prefixlen": b }, { "local": c, "prefixlen": d }] }]),
        3 => json!([{ "addr_info": a }]),
        4 => json!([{ "dst": "default", "dev": a, "gateway": b }]),
        5 => json!([a, b]),
        6 => json!({ "dev": a, "addr_info": [{ "local": b, "prefixlen": c }] }),
        _ => json!([{ "dev": a, "addr_info": [{ "local": b, "prefixlen": c }], "linkinfo": { "info_kind": d }, "link_type": e }]),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ip_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes)?;
    }

    #[test]
    fn ip_outputs_with_odd_fields(out in ip_output()) {
        check(out.to_string().as_bytes())?;
    }

    #[test]
    fn ip_mutated_real_outputs(
        which in 0usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = [LINK, ADDR, ROUTE][which].as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        check(&bytes)?;
    }
}

#[test]
fn real_outputs_read_as_expected() {
    assert_eq!(link_kind(LINK.as_bytes()), "bridge");
    assert_eq!(first_ipv4(ADDR.as_bytes()), Some((Ipv4Addr::new(10, 9, 0, 1), 16)));
    assert_eq!(default_route_dev(ROUTE.as_bytes()), Some(Ok("wlp2s0".to_string())));
}

/// `WHAT-EXPECT-*.json`: WHAT is `link`, `addr` or `route`; EXPECT is `some` (a kind other
/// than "unknown", an address, a device), `none`, or `err` (a route device refused).
#[test]
fn ip_regression_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ip");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = std::fs::read(&path).unwrap();
        let mut parts = name.split('-');
        let (what, expect) = (parts.next().unwrap(), parts.next().unwrap());
        let got = match what {
            "link" => {
                if link_kind(&out) == "unknown" {
                    "none"
                } else {
                    "some"
                }
            }
            "addr" => {
                if first_ipv4(&out).is_some() {
                    "some"
                } else {
                    "none"
                }
            }
            "route" => match default_route_dev(&out) {
                Some(Ok(_)) => "some",
                Some(Err(_)) => "err",
                None => "none",
            },
            _ => panic!("{name}: unknown target"),
        };
        assert_eq!(got, expect, "{name}");
        check(&out).unwrap();
        n += 1;
    }
    assert!(n >= 8, "the ip corpus at {} is missing", dir.display());
}
