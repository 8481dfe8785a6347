//! Property tests ("a short fuzz run") for every record the store reads back: machine records,
//! adopted hosts, swarm records and intent journals. Arbitrary and mutated JSON never panics,
//! and a hostile value in any field is refused; plus the regression corpus in `tests/corpus/`,
//! replayed through a home as n2d reads it.

use n2d_spec::link::{is_n2d_tap_name, parse_n2d_mac};
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::SwarmName;
use n2d_store::SwarmRecord;
use n2d_store::{check_swarm_record, AdoptedHost, Home, Intent, MachineRecord, Operation, StoreError};
use proptest::prelude::*;
use std::path::Path;

const MACHINE: &str = include_str!("corpus/machine_ok_bridge.json");
const USER_MACHINE: &str = include_str!("corpus/machine_ok_user.json");
const ADOPTED: &str = include_str!("corpus/adopted_ok.json");
const SWARM: &str = include_str!("corpus/swarm_ok.json");
const INTENTS: [&str; 2] =
    [include_str!("corpus/intent_ok_create.json"), include_str!("corpus/intent_ok_image-build.json")];

/// What every accepted machine record satisfies, whatever bytes it came from: nothing in it can
/// reach `ip`, QEMU or a path as anything but the value n2d made.
fn check_machine(r: &MachineRecord) -> Result<(), TestCaseError> {
    prop_assert!(r.validate().is_ok());
    prop_assert!(parse_n2d_mac(&r.mac).is_ok(), "{}", r.mac);
    if r.user_mode() {
        prop_assert!(r.tap.is_empty() && r.spec.bridge == "user");
    } else {
        prop_assert!(is_n2d_tap_name(&r.tap), "{}", r.tap);
    }
    for value in [&r.mac, &r.tap, &r.spec.bridge, &r.spec.image] {
        prop_assert!(!value.contains([',', '/', '=', ' ', '\n', '+']), "{value:?}");
    }
    prop_assert!(!r.spec.image.is_empty());
    prop_assert!(r.ip != r.gateway && !r.ip.is_loopback() && !r.ip.is_broadcast());
    // It writes and reads back as itself.
    let again = MachineRecord::from_json(&serde_json::to_vec(r).unwrap()).unwrap().unwrap();
    prop_assert_eq!(&again, r);
    Ok(())
}

fn check_adopted(h: &AdoptedHost) -> Result<(), TestCaseError> {
    let rest = h.docker_host.strip_prefix("tcp://");
    prop_assert!(rest.is_some(), "{}", h.docker_host);
    let (host, port) = rest.unwrap().rsplit_once(':').unwrap();
    prop_assert!(port.parse::<u16>().is_ok_and(|p| p != 0));
    prop_assert!(!host.is_empty() && !host.starts_with('-'));
    prop_assert!(!host.contains([',', ' ', '\n', '@', '/', '=']), "{host:?}");
    Ok(())
}

fn check_intent(i: &Intent) -> Result<(), TestCaseError> {
    if let Operation::ImageBuild { staging } = &i.op {
        let rest = staging.strip_prefix(".build-");
        prop_assert!(rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '.'])), "{staging:?}");
    }
    Ok(())
}

/// Applies byte edits (replace, insert, remove) to `base`.
fn mutate(base: &str, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for (at, byte, op) in edits {
        let i = at.index(bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = *byte,
            1 => bytes.insert(i, *byte),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
}

/// Values an attacker would put in a field: option syntax, paths, other interfaces, numbers.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:,=./ +!$\\-]{0,24}",
        "52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}[,;= ][a-z=/]{0,12}",
        "n2dt[0-9a-f]{0,10}[,:/ +]{0,2}[a-z=]{0,6}",
        "(eth0|lo|n2d0|docker0|-h|--all|\\.\\.|/etc/passwd|br\\+|user)",
        "tcp://[a-z0-9.\\-,@=/ ]{0,20}:[0-9]{0,6}[,a-z=]{0,8}",
        "\\PC{0,16}",
    ]
}

const STRING_FIELDS: [&str; 7] = ["/mac", "/tap", "/spec/bridge", "/spec/image", "/swarm", "/ip", "/gateway"];

fn set(json: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    json.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.into(), value);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn machine_record_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Ok(r)) = MachineRecord::from_json(&bytes) {
            check_machine(&r)?;
        }
    }

    #[test]
    fn machine_record_mutated(edits in edits(), user in any::<bool>()) {
        let bytes = mutate(if user { USER_MACHINE } else { MACHINE }, &edits);
        if let Ok(Ok(r)) = MachineRecord::from_json(&bytes) {
            check_machine(&r)?;
        }
    }

    #[test]
    fn machine_record_hostile_fields(
        field in 0..STRING_FIELDS.len(),
        value in hostile_text(),
        user in any::<bool>(),
        number in prop_oneof![Just(None), any::<i64>().prop_map(Some)],
    ) {
        let mut json: serde_json::Value =
            serde_json::from_str(if user { USER_MACHINE } else { MACHINE }).unwrap();
        set(&mut json, STRING_FIELDS[field], serde_json::Value::String(value.clone()));
        if let Some(n) = number {
            let numeric = ["/prefix_len", "/api_port", "/spec/cpus", "/spec/memory"];
            set(&mut json, numeric[(n.unsigned_abs() % 4) as usize], n.into());
        }
        match MachineRecord::from_json(json.to_string().as_bytes()) {
            Ok(Ok(r)) => check_machine(&r)?,
            Ok(Err(e)) => prop_assert!(e.to_string().starts_with("its "), "{e}"),
            Err(_) => {}
        }
    }

    #[test]
    fn adopted_host_arbitrary_and_mutated(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        edits in edits(),
        value in hostile_text(),
    ) {
        for input in [bytes, mutate(ADOPTED, &edits),
                      serde_json::json!({"name": "h1", "docker_host": value}).to_string().into_bytes()] {
            if let Ok(Ok(h)) = AdoptedHost::from_json(&input) {
                check_adopted(&h)?;
            }
        }
    }

    #[test]
    fn swarm_record_arbitrary_and_mutated(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        edits in edits(),
        value in hostile_text(),
    ) {
        let hostile = serde_json::json!({"prefix": "s", "managers": [value.clone()],
            "external_hosts": [{"name": value.clone(), "docker_host": value}]}).to_string().into_bytes();
        for input in [bytes, mutate(SWARM, &edits), hostile] {
            if let Ok(r) = serde_json::from_slice::<SwarmRecord>(&input) {
                // Every name is a valid one (so every path made from it stays in the home).
                for node in r.managers.iter().chain(&r.workers) {
                    prop_assert!(node.as_str().parse::<MachineName>().is_ok());
                }
                prop_assert!(r.prefix.as_str().parse::<SwarmName>().is_ok());
                if check_swarm_record(&r).is_ok() {
                    for h in &r.external_hosts {
                        prop_assert!(!h.name.contains(['\n', ',', '/', ' ']) && !h.name.starts_with('-'));
                        prop_assert!(h.docker_host.starts_with("tcp://") || h.docker_host.starts_with("unix:///"));
                    }
                }
            }
        }
    }

    #[test]
    fn intent_journal_arbitrary_and_mutated(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        edits in edits(),
        which in 0..2usize,
        staging in hostile_text(),
    ) {
        let hostile = serde_json::json!({"op": "image-build", "staging": staging, "pid": 1, "done": []}).to_string();
        for input in [bytes, mutate(INTENTS[which], &edits), hostile.into_bytes()] {
            if let Ok(i) = serde_json::from_slice::<Intent>(&input) {
                check_intent(&i)?;
                prop_assert!(!i.op.target().contains('/'), "{:?}", i.op);
            }
        }
    }
}

/// Puts a corpus file where n2d reads that kind of record and reads it as n2d does: `Ok(true)`
/// when accepted, else the error's whole text.
fn replay(home: &Home, kind: &str, bytes: &[u8]) -> Result<bool, String> {
    let chain = |e: &StoreError| {
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(e);
        while let Some(c) = cur {
            s += &format!(": {c}");
            cur = c.source();
        }
        s
    };
    let write = |path: &Path| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    let h1: MachineName = "h1".parse().unwrap();
    match kind {
        "machine" => {
            write(&home.machine_dir(&h1).join("machine.json"));
            home.load_machine(&h1).map(|_| true).map_err(|e| chain(&e))
        }
        "adopted" => {
            write(&home.hosts_dir().join("h1.json"));
            home.load_adopted(&h1).map(|h| h.is_some()).map_err(|e| chain(&e))
        }
        "swarm" => {
            let s: SwarmName = "s".parse().unwrap();
            write(&home.swarm_file(&s));
            home.load_swarm(&s).map(|r| r.is_some()).map_err(|e| chain(&e))
        }
        "intent" => {
            write(&home.intents_dir().join("x-1-0.json"));
            let found = home.intents();
            assert_eq!(found.len(), 1);
            found.into_iter().next().unwrap().intent.map(|_| true).map_err(|e| chain(&e))
        }
        other => panic!("unknown corpus kind {other:?}"),
    }
}

#[test]
fn regression_corpus_is_read_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    let mut hostile = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".json").unwrap();
        let mut parts = stem.splitn(3, '_');
        let (kind, expect) = (parts.next().unwrap(), parts.next().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let home_dir = tempfile::tempdir().unwrap();
        let home = Home::at(home_dir.path());
        let t = std::time::Instant::now();
        let result = replay(&home, kind, &bytes);
        assert!(t.elapsed().as_secs() < 2, "{name} took {:?}", t.elapsed());
        match (expect, &result) {
            ("ok", Ok(true)) => {}
            (_, Err(e)) if expect != "ok" && e.contains(expect) => hostile += 1,
            _ => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        n += 1;
    }
    assert!(
        n >= 30 && hostile >= 25,
        "corpus at {} is missing ({n} files, {hostile} hostile)",
        dir.display()
    );
}
