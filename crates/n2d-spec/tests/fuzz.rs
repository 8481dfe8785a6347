//! Property tests ("a short fuzz run") for every parser the host trusts: cluster files, sizes,
//! labels and names, plus the regression corpus in `tests/corpus/`.

use n2d_spec::machine::{parse_label, ByteSize, MachineName};
use n2d_spec::swarm::{LabelRule, SwarmName, SwarmSpec};
use proptest::prelude::*;

const VALID: &str = include_str!("corpus/ok-full.yaml");

/// What a parsed cluster file must satisfy: it prints and re-parses to itself.
fn check_spec(spec: &SwarmSpec) -> Result<(), TestCaseError> {
    let again = SwarmSpec::from_yaml(&spec.to_yaml());
    prop_assert_eq!(again.as_ref(), Ok(spec), "{}", spec.to_yaml());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cluster_file_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(spec) = SwarmSpec::from_yaml_bytes(&bytes) {
            check_spec(&spec)?;
        }
    }

    #[test]
    fn cluster_file_arbitrary_yaml_like_text(text in "[a-z0-9:\\-\\[\\]{}&*!|>'\" ,@=\n#]{0,200}") {
        if let Ok(spec) = SwarmSpec::from_yaml(&text) {
            check_spec(&spec)?;
        }
    }

    #[test]
    fn cluster_file_mutated(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if let Ok(spec) = SwarmSpec::from_yaml_bytes(&bytes) {
            check_spec(&spec)?;
            // Validation never panics either, nor does planning a valid spec.
            if spec.validate().is_ok() {
                let _ = spec.plan();
            }
        }
    }

    #[test]
    fn byte_size(s in "\\PC{0,24}|[0-9.]{0,24} ?[kKmMgGtTbBiI]{0,3}") {
        if let Ok(size) = s.parse::<ByteSize>() {
            // Its display is a valid size again, never larger than the value.
            let shown: ByteSize = size.to_string().parse().unwrap();
            prop_assert!(shown <= size);
            prop_assert_eq!(shown.to_string().parse::<ByteSize>().unwrap(), shown);
        }
    }

    #[test]
    fn labels(s in "\\PC{0,40}|.{0,40}|[a-z=@ \t\n]{0,20}") {
        if let Ok((k, v)) = parse_label(&s) {
            prop_assert_eq!(parse_label(&format!("{k}={v}")).unwrap(), (k, v));
        }
        if let Ok(rule) = LabelRule::parse(&s) {
            prop_assert_eq!(rule.to_string().parse::<LabelRule>().unwrap(), rule);
        }
    }

    #[test]
    fn names(s in "\\PC{0,70}|[a-z0-9\\-./]{0,70}") {
        if let Ok(n) = s.parse::<MachineName>() {
            prop_assert_eq!(n.to_string().parse::<MachineName>().unwrap(), n.clone());
            prop_assert!(!n.as_str().contains(['/', '.']) && n.as_str().len() <= 63);
        }
        if let Ok(n) = s.parse::<SwarmName>() {
            prop_assert_eq!(n.to_string().parse::<SwarmName>().unwrap(), n.clone());
            // Every node name of a valid swarm name is a valid machine name.
            let node = format!("{n}-wrkr-0");
            prop_assert!(node.parse::<MachineName>().is_ok(), "{}", node);
        }
    }
}

#[test]
fn regression_corpus_gives_clear_errors_fast() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let t = std::time::Instant::now();
        let result = SwarmSpec::from_yaml_bytes(&bytes).and_then(|s| s.validate().map(|()| s));
        assert!(t.elapsed().as_secs() < 2, "{name} took {:?}", t.elapsed());
        let expect = name.split('.').next().unwrap().split_once('-').unwrap().0;
        match (expect, &result) {
            ("ok", Ok(_)) => {}
            (_, Err(e)) if e.to_string().contains(expect) => {}
            _ => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        n += 1;
    }
    assert!(n >= 6, "corpus at {} is missing", dir.display());
}
