//! What `ip -j` (iproute2's JSON output) tells n2d: a link's kind, a link's first IPv4 address,
//! the default route's device. The output is read as data that may be anything (another
//! iproute2 version, a field missing or of another type, not JSON at all): each reader gives
//! `None` (or "unknown") rather than panic or guess, and checks the values it returns, since
//! they go on to `ip`, iptables and the host-wide state.

use n2d_spec::link::{parse_interface_name, LinkNameError};
use serde_json::Value;
use std::net::Ipv4Addr;

/// Longest link kind kept (iproute2's are short words: `bridge`, `tun`, `veth`, `ether`).
const MAX_KIND: usize = 32;

fn first(out: &[u8]) -> Option<Value> {
    let json: Value = serde_json::from_slice(out).ok()?;
    json.get(0).cloned()
}

/// The kind of the link `ip -j -d link show dev DEV` printed: `linkinfo.info_kind`, else
/// `link_type`; "unknown" when neither is there or it is not a short lowercase word.
pub fn link_kind(out: &[u8]) -> String {
    let link = first(out);
    let field = |l: &Value| {
        let kind = l.get("linkinfo").and_then(|i| i.get("info_kind")).and_then(Value::as_str);
        kind.or(l.get("link_type").and_then(Value::as_str)).map(str::to_string)
    };
    let word = |k: &String| {
        (1..=MAX_KIND).contains(&k.len())
            && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    };
    link.as_ref().and_then(field).filter(word).unwrap_or_else(|| "unknown".to_string())
}

/// How many links `ip -j link show master BRIDGE` listed (0 for anything but a JSON array).
pub fn count_links(out: &[u8]) -> usize {
    serde_json::from_slice::<Value>(out).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0)
}

/// The first IPv4 address and prefix length (0 to 32) that `ip -j -4 addr show dev DEV` printed.
pub fn first_ipv4(out: &[u8]) -> Option<(Ipv4Addr, u8)> {
    let link = first(out)?;
    let addr = link.get("addr_info")?.get(0)?;
    let ip = addr.get("local")?.as_str()?.parse().ok()?;
    let prefix_len = u8::try_from(addr.get("prefixlen")?.as_u64()?).ok().filter(|&p| p <= 32)?;
    Some((ip, prefix_len))
}

/// The device of the first route `ip -j -4 route show default` printed: `None` without one,
/// an error when its name is not a valid interface name.
pub fn default_route_dev(out: &[u8]) -> Option<Result<String, LinkNameError>> {
    let route = first(out)?;
    let dev = route.get("dev")?.as_str()?;
    Some(parse_interface_name(dev).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_iproute2_prints() {
        let link =
            br#"[{"ifindex":3,"ifname":"n2d0","link_type":"ether","linkinfo":{"info_kind":"bridge"}}]"#;
        assert_eq!(link_kind(link), "bridge");
        assert_eq!(link_kind(br#"[{"ifname":"eth0","link_type":"ether"}]"#), "ether");
        let addr =
            br#"[{"ifname":"n2d0","addr_info":[{"family":"inet","local":"10.9.0.1","prefixlen":16}]}]"#;
        assert_eq!(first_ipv4(addr), Some((Ipv4Addr::new(10, 9, 0, 1), 16)));
        let route = br#"[{"dst":"default","gateway":"192.168.1.1","dev":"wlan0","flags":[]}]"#;
        assert_eq!(default_route_dev(route), Some(Ok("wlan0".to_string())));
        assert_eq!(default_route_dev(b"[]"), None);
    }

    #[test]
    fn odd_values_are_refused() {
        // A prefix length that `as u8` wrapped: 300 read as /44, 256 as /0.
        let addr = |p: &str| format!(r#"[{{"addr_info":[{{"local":"10.9.0.1","prefixlen":{p}}}]}}]"#);
        assert_eq!(first_ipv4(addr("300").as_bytes()), None);
        assert_eq!(first_ipv4(addr("256").as_bytes()), None);
        assert_eq!(first_ipv4(addr("33").as_bytes()), None);
        assert_eq!(first_ipv4(addr("-1").as_bytes()), None);
        assert_eq!(first_ipv4(addr("24.5").as_bytes()), None);
        assert_eq!(link_kind(br#"[{"link_type":"\u001b[2Jether"}]"#), "unknown");
        assert_eq!(link_kind(b"not json"), "unknown");
        assert!(matches!(default_route_dev(br#"[{"dev":"-j"}]"#), Some(Err(_))));
        assert!(matches!(default_route_dev(br#"[{"dev":"eth0+"}]"#), Some(Err(_))));
    }
}
