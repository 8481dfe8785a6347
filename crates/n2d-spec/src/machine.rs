//! A machine: what the user asked for (`MachineSpec`) and how its inputs are validated.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_MEMORY: ByteSize = ByteSize(2 * 1024 * 1024 * 1024);
pub const DEFAULT_DISK: ByteSize = ByteSize(20 * 1024 * 1024 * 1024);
pub const DEFAULT_BRIDGE: &str = "n2d0";
/// The network name (`--network user`) of user-mode networking: no bridge, no root. The
/// machines of a home on it share one user-space switch in the home, and the host reaches
/// them through forwards on 127.0.0.1 (see n2d-net's `user` module).
pub const USER_NETWORK: &str = "user";

pub const MIN_MEMORY: ByteSize = ByteSize(512 * 1024 * 1024);
pub const MAX_MEMORY: ByteSize = ByteSize(1024 * 1024 * 1024 * 1024);
pub const MIN_DISK: ByteSize = ByteSize(1024 * 1024 * 1024);
pub const MAX_DISK: ByteSize = ByteSize(64 * 1024 * 1024 * 1024 * 1024);
pub const MAX_CPUS: u32 = 64;
/// Longest label (`KEY=VALUE`, in bytes).
pub const MAX_LABEL_LEN: usize = 4096;
/// Most label bytes (keys and values) one machine may carry. With JSON's escaping and quoting this
/// stays far below the guest's config-disk limit (`n2d_proto::MAX_PAYLOAD`, 1 MiB, shared with the
/// TLS material), so a spec that passes never fails at boot for its labels.
pub const MAX_LABELS_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineSpecError {
    #[error("invalid machine name {name:?}: {reason} (use 1-63 lowercase letters, digits and '-', starting with a letter or digit)")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid size {input:?}: {reason} (use a number with a unit, e.g. 512M, 2G, 20G)")]
    InvalidSize { input: String, reason: String },
    #[error("{what} {value} is out of range: use {min} to {max}")]
    OutOfRange { what: &'static str, value: String, min: String, max: String },
    #[error("invalid label {input:?}: {reason}")]
    InvalidLabel { input: String, reason: &'static str },
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
    #[error("the labels of {what} take {bytes} bytes; at most {max} are allowed (the guest's config disk must hold them): use fewer or shorter labels")]
    LabelsTooLarge { what: String, bytes: usize, max: usize },
    #[error("invalid bridge name {name:?}: use 1-15 characters of letters, digits, '-', '_' or '.', not starting with '-'")]
    InvalidBridge { name: String },
    #[error("host port {port} is published twice: each host port forwards to one guest port")]
    PublishedTwice { port: u16 },
    #[error("published ports are forwards on 127.0.0.1 for user-mode networking (--network user); on a bridge, reach the machine's ports at its own address")]
    PublishNeedsUserNetwork,
    #[error("--expose opens a bridge machine's address to other networks; a user-mode machine is reached only through forwards on the host's 127.0.0.1: use --publish instead")]
    ExposeNeedsBridge,
}

/// A machine name, which is also the guest's hostname and the swarm node name: a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MachineName(String);

impl MachineName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MachineName {
    type Err = MachineSpecError;
    fn from_str(name: &str) -> Result<Self, MachineSpecError> {
        let invalid = |reason| Err(MachineSpecError::InvalidName { name: name.to_string(), reason });
        if name.is_empty() {
            return invalid("it is empty");
        }
        if name.len() > 63 {
            return invalid("it is longer than 63 characters");
        }
        if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
            return invalid(if c.is_ascii_uppercase() {
                "it has uppercase letters"
            } else if c.is_whitespace() {
                "it has spaces"
            } else {
                "it has characters other than a-z, 0-9 and '-'"
            });
        }
        if name.starts_with('-') || name.ends_with('-') {
            return invalid("it starts or ends with '-'");
        }
        Ok(MachineName(name.to_string()))
    }
}

impl TryFrom<String> for MachineName {
    type Error = MachineSpecError;
    fn try_from(s: String) -> Result<Self, MachineSpecError> {
        s.parse()
    }
}

impl From<MachineName> for String {
    fn from(n: MachineName) -> String {
        n.0
    }
}

impl fmt::Display for MachineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A size in bytes, parsed from `512M`, `2G`, `1.5G`, `20GiB`, `4096B`... A bare number is
/// refused (`--memory 4` would be 4 bytes): the message suggests `4G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn mib(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = MachineSpecError;
    fn from_str(input: &str) -> Result<Self, MachineSpecError> {
        let invalid = |reason: &str| MachineSpecError::InvalidSize {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(invalid("it does not start with a number"));
        }
        let value: f64 = number.parse().map_err(|_| invalid("the number does not parse"))?;
        let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" => {
                return Err(invalid(&format!(
                    "it has no unit: did you mean {number}G? (K, M, G or T; B for bytes)"
                )))
            }
            "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => return Err(invalid("unknown unit")),
        };
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(invalid("it is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        if self.0 >= 1 << 20 {
            return write!(f, "{}M", self.0 >> 20);
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses a `KEY=VALUE` label. The one label parser: `create --label`, `swarm create --label`
/// (via `LabelRule`), `swarm add-host --label` and cluster files all use it.
pub fn parse_label(input: &str) -> Result<(String, String), MachineSpecError> {
    split_label(input).map_err(|reason| MachineSpecError::InvalidLabel { input: input.to_string(), reason })
}

/// The rules of [`parse_label`], with the reason a label is refused: the key is non-empty and
/// holds no whitespace, `=` or control characters; the value (possibly empty) holds no control
/// characters (a newline would forge another line wherever labels are listed).
pub fn split_label(input: &str) -> Result<(String, String), &'static str> {
    if input.len() > MAX_LABEL_LEN {
        return Err("a label may be at most 4096 bytes (KEY=VALUE): shorten it");
    }
    let Some((key, value)) = input.split_once('=') else {
        return Err("expected KEY=VALUE (e.g. zone=a)");
    };
    if key.is_empty() {
        return Err("the key is empty: expected KEY=VALUE");
    }
    if key.chars().any(char::is_whitespace) {
        return Err("label keys may not contain whitespace");
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        return Err("labels may not contain control characters (newlines, tabs...)");
    }
    Ok((key.to_string(), value.to_string()))
}

/// Refuses labels whose keys and values add up to more than [`MAX_LABELS_BYTES`].
pub fn check_labels_size<'a>(
    what: &str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), MachineSpecError> {
    let bytes = labels.into_iter().map(|(k, v)| k.len() + v.len() + 1).sum();
    if bytes > MAX_LABELS_BYTES {
        return Err(MachineSpecError::LabelsTooLarge {
            what: what.to_string(),
            bytes,
            max: MAX_LABELS_BYTES,
        });
    }
    Ok(())
}

/// At most `max` characters of `s`, cut on a character boundary (ids and names from records
/// may hold any UTF-8).
pub fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// Checks a Linux interface name (bridges are at most 15 bytes).
pub fn validate_bridge_name(name: &str) -> Result<(), MachineSpecError> {
    match crate::link::parse_bridge_name(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(MachineSpecError::InvalidBridge { name: name.to_string() }),
    }
}

/// What the user asked for when creating one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub name: MachineName,
    pub cpus: u32,
    pub memory: ByteSize,
    pub disk: ByteSize,
    /// The bridge ("virtual switch") the machine's NIC is attached to, or [`USER_NETWORK`].
    pub bridge: String,
    /// The addresses it may take there (`--ip`, `--ip-range`); none: any free one, which only
    /// a bridge n2d created allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<crate::address::IpRange>,
    /// Image ID the machine boots from.
    pub image: String,
    /// Plain TCP on 2375 instead of TLS on 2376 (explicit user request only).
    #[serde(default)]
    pub insecure_tcp: bool,
    /// Docker engine labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ports forwarded from the host's 127.0.0.1 (user-mode networking: `--publish`,
    /// `n2d port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::ports::PortForward>,
    /// New connections from other networks (the LAN, other bridges) may reach the machine's
    /// address (`--expose`); otherwise n2d's firewall chain drops them. Only on a bridge n2d
    /// made: n2d adds no rules to a bridge it did not create.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expose: bool,
    /// Host folders shared into the guest (`--mount`), host paths absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::HostMount>,
}

impl MachineSpec {
    /// Range checks for the numbers a user typed.
    pub fn validate(&self) -> Result<(), MachineSpecError> {
        check_range("--cpus", self.cpus as u64, 1, MAX_CPUS as u64, |v| v.to_string())?;
        check_range("--memory", self.memory.0, MIN_MEMORY.0, MAX_MEMORY.0, |v| ByteSize(v).to_string())?;
        check_range("--disk", self.disk.0, MIN_DISK.0, MAX_DISK.0, |v| ByteSize(v).to_string())?;
        check_labels_size(self.name.as_str(), &self.labels)?;
        crate::ports::check_distinct(&self.publish)
            .map_err(|port| MachineSpecError::PublishedTwice { port })?;
        crate::mount::check_mounts(&self.mounts)?;
        if !self.publish.is_empty() && !self.user_network() {
            return Err(MachineSpecError::PublishNeedsUserNetwork);
        }
        if self.expose && self.user_network() {
            return Err(MachineSpecError::ExposeNeedsBridge);
        }
        validate_bridge_name(&self.bridge)
    }

    /// On user-mode networking ([`USER_NETWORK`]) rather than a bridge.
    pub fn user_network(&self) -> bool {
        self.bridge == USER_NETWORK
    }

    pub fn docker_port(&self) -> u16 {
        if self.insecure_tcp {
            2375
        } else {
            2376
        }
    }
}

fn check_range(
    what: &'static str,
    value: u64,
    min: u64,
    max: u64,
    show: impl Fn(u64) -> String,
) -> Result<(), MachineSpecError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(MachineSpecError::OutOfRange { what, value: show(value), min: show(min), max: show(max) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec() -> MachineSpec {
        MachineSpec {
            name: "h1".parse().unwrap(),
            cpus: 2,
            memory: DEFAULT_MEMORY,
            disk: DEFAULT_DISK,
            bridge: DEFAULT_BRIDGE.into(),
            addresses: None,
            image: "abc".into(),
            insecure_tcp: false,
            labels: BTreeMap::new(),
            publish: Vec::new(),
            expose: false,
            mounts: Vec::new(),
        }
    }

    #[test]
    fn names_follow_hostname_rules() {
        for ok in ["h1", "n2d-mngr-0", "a", &"x".repeat(63)] {
            assert!(ok.parse::<MachineName>().is_ok(), "{ok}");
        }
        let cases = [
            ("", "it is empty"),
            ("Web", "uppercase"),
            ("my host", "spaces"),
            ("a_b", "characters other than"),
            ("-a", "starts or ends"),
        ];
        for (bad, why) in cases {
            let err = bad.parse::<MachineName>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!("y".repeat(64).parse::<MachineName>().unwrap_err().to_string().contains("longer than 63"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("2G".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert_eq!("1536M".parse::<ByteSize>().unwrap(), ByteSize(1536 << 20));
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap(), ByteSize(1536 << 20));
        assert_eq!("4096B".parse::<ByteSize>().unwrap(), ByteSize(4096));
        let bare = "4".parse::<ByteSize>().unwrap_err().to_string();
        assert!(bare.contains("did you mean 4G?"), "{bare}");
        for bad in ["", "G", "2X", "two", "1.2.3G", "99999999999999999999T"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(2 << 30).to_string(), "2G");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536M");
    }

    #[test]
    fn absurd_numbers_are_rejected_with_the_allowed_range() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.memory = ByteSize(1 << 20);
        assert_eq!(s.validate().unwrap_err().to_string(), "--memory 1M is out of range: use 512M to 1T");
        let mut s = spec();
        s.cpus = 0;
        assert!(s.validate().unwrap_err().to_string().contains("--cpus 0"));
        let mut s = spec();
        s.disk = ByteSize(100 << 40);
        assert!(s.validate().unwrap_err().to_string().contains("--disk"));
        let mut s = spec();
        s.bridge = "a-very-long-bridge-name".into();
        assert!(matches!(s.validate(), Err(MachineSpecError::InvalidBridge { .. })));
    }

    /// Labels every parser refuses: `create --label`, `swarm create --label` and cluster files
    /// (the swarm tests run the same table through `LabelRule` and the cluster file).
    pub(crate) const BAD_LABELS: &[&str] =
        &["", "zone", "=a", "a b=v", " a=v", "a\nb=v", "a=b\nc", "a\tb=v", "a=\u{7}", "a\rb=v"];
    pub(crate) const GOOD_LABELS: &[(&str, &str, &str)] = &[
        ("zone=a", "zone", "a"),
        ("ssd=", "ssd", ""),
        ("a=b=c", "a", "b=c"),
        ("k=with space", "k", "with space"),
    ];

    #[test]
    fn label_table() {
        for (input, key, value) in GOOD_LABELS {
            assert_eq!(parse_label(input).unwrap(), (key.to_string(), value.to_string()), "{input:?}");
        }
        for bad in BAD_LABELS {
            let err = parse_label(bad).unwrap_err();
            assert!(matches!(err, MachineSpecError::InvalidLabel { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn truncation_is_on_character_boundaries() {
        assert_eq!(truncate_chars("0123456789abcdef", 12), "0123456789ab");
        assert_eq!(truncate_chars("abc", 12), "abc");
        assert_eq!(truncate_chars(&"é".repeat(20), 12), "é".repeat(12));
        assert_eq!(truncate_chars("aé", 1), "a");
    }

    #[test]
    fn bridge_names_are_never_dot_or_dot_dot() {
        for bad in [".", "..", "a/b", ""] {
            assert!(validate_bridge_name(bad).is_err(), "{bad}");
        }
        validate_bridge_name("br.1").unwrap();
    }

    #[test]
    fn spec_json_round_trips_and_rejects_bad_names() {
        let json = serde_json::to_string(&spec()).unwrap();
        assert_eq!(serde_json::from_str::<MachineSpec>(&json).unwrap(), spec());
        let bad = json.replace("\"h1\"", "\"H1\"");
        assert!(serde_json::from_str::<MachineSpec>(&bad).is_err());
    }

    #[test]
    fn expose_is_for_bridge_machines_and_off_by_default() {
        let mut s = spec();
        s.expose = true;
        s.validate().unwrap();
        s.bridge = USER_NETWORK.into();
        assert_eq!(s.validate(), Err(MachineSpecError::ExposeNeedsBridge));
        // Records written before --expose read as not exposed, and a closed spec writes no key.
        let old = serde_json::to_value(spec()).unwrap();
        assert!(old.get("expose").is_none(), "{old}");
        assert!(!serde_json::from_value::<MachineSpec>(old).unwrap().expose);
    }
}
