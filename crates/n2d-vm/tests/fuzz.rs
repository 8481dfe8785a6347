//! Property tests ("a short fuzz run") for what the host reads from a VM: the guest's console
//! (the ready marker and the lines that tell why a boot failed) and QEMU's QMP replies, plus
//! the regression corpus in `tests/corpus/console/` and `tests/corpus/qmp/`.

use n2d_proto::READY_MARKER;
use n2d_vm::boot_failure::ConsoleWatch;
use n2d_vm::qmp::{converse, human_text, MAX_LINE};
use n2d_vm::{classify_boot_failure, BootFailure, VmError};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::io::Cursor;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus at {}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Console

/// Console text as guests print it, with what the parsers look for and what trips them up:
/// multi-byte characters, bytes that are not UTF-8, escape sequences, the marker's pieces.
fn console_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        4 => "\\PC{0,40}".prop_map(String::into_bytes),
        4 => prop::sample::select(vec![
            "\n",
            "\r\n",
            "é€😀",
            "\u{1b}[2J\u{1b}]52;c;aGk=\u{7}",
            "N2D-READY",
            " docker",
            "N2D-READY docke",
            "Kernel panic - not syncing: ",
            "Oops",
            "int3: 0000 [#1]",
            "No working init found",
            "[    1.0] FATAL: ",
            "VFS: Unable to mount root",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        // Past the kept tail, cut anywhere in a character.
        1 => (0usize..100_000).prop_map(|n| "€".repeat(n / 3).into_bytes()),
    ]
}

fn check_console(chunks: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut watch = ConsoleWatch::default();
    let mut all = Vec::new();
    for chunk in chunks {
        watch.feed(chunk);
        all.extend_from_slice(chunk);
        prop_assert!(watch.tail_len() <= ConsoleWatch::MAX_TAIL);
    }
    let marker = READY_MARKER.as_bytes();
    prop_assert_eq!(watch.ready(), all.windows(marker.len()).any(|w| w == marker));
    // The failure is read from the tail: a named line is a line the guest printed.
    // (The tail may begin inside a line, or inside a character.)
    if let BootFailure::Deterministic(line) = watch.failure() {
        prop_assert!(String::from_utf8_lossy(&all).contains(line.trim_start_matches('\u{fffd}')), "{}", line);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn console_arbitrary_output_in_arbitrary_reads(pieces in prop::collection::vec(console_piece(), 0..24)) {
        check_console(&pieces)?;
        // The same bytes read in other sizes (one byte at a time, then all at once).
        let all: Vec<u8> = pieces.concat();
        if all.len() < 4096 {
            check_console(&all.iter().map(|b| vec![*b]).collect::<Vec<_>>())?;
        }
        check_console(&[all])?;
    }

    #[test]
    fn console_marker_after_any_amount_of_output(
        before in prop::collection::vec(console_piece(), 0..12),
        split in 0usize..=16,
        after in console_piece(),
    ) {
        let marker = READY_MARKER.as_bytes();
        let mut chunks = before;
        chunks.push(marker[..split].to_vec());
        chunks.push(marker[split..].to_vec());
        chunks.push(after);
        let mut watch = ConsoleWatch::default();
        for chunk in &chunks {
            watch.feed(chunk);
        }
        prop_assert!(watch.ready());
    }

    #[test]
    fn boot_failures_name_a_line_of_the_console(text in "\\PC{0,300}|(.{0,20}(FATAL: |int3|Kernel panic|No working init found|\n)){0,8}") {
        match classify_boot_failure(&text) {
            BootFailure::Deterministic(line) => prop_assert!(text.lines().any(|l| l.trim() == line)),
            BootFailure::EmulationRace => prop_assert!(text.contains("int3")),
            BootFailure::Unknown => {}
        }
    }
}

/// The wait for the marker reads a console of any size and content; a guest that printed
/// 100 KB of multi-byte characters and stopped made the old wait panic (it cut its text
/// buffer inside a character).
#[test]
fn console_wait_survives_any_output() {
    use n2d_vm::{Hypervisor, Qemu, VmHandle};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(n2d_vm::argv::SERIAL_LOG), "€".repeat(35_000)).unwrap();
    let vm = VmHandle::new("t", dir.path());
    // No QEMU runs for it: the wait reads the log, then reports the guest gone.
    let err = Qemu::default().wait_ready(&vm, 0, std::time::Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, VmError::ExitedDuringBoot { failure: BootFailure::Unknown, .. }), "{err}");
}

/// `ready-*`: the marker is there; `race-*`, `deterministic-*`, `unknown-*`: no marker, and the
/// boot failure named so.
#[test]
fn console_regression_corpus() {
    let files = corpus("console");
    for (name, bytes) in &files {
        let mut watch = ConsoleWatch::default();
        for chunk in bytes.chunks(4093) {
            watch.feed(chunk);
        }
        let expect = name.split('-').next().unwrap();
        let ok = match expect {
            "ready" => watch.ready(),
            "race" => !watch.ready() && watch.failure() == BootFailure::EmulationRace,
            "deterministic" => !watch.ready() && matches!(watch.failure(), BootFailure::Deterministic(_)),
            "unknown" => !watch.ready() && watch.failure() == BootFailure::Unknown,
            _ => panic!("{name}: unknown expectation"),
        };
        assert!(ok, "{name}: expected {expect}, got ready={} {:?}", watch.ready(), watch.failure());
        check_console(std::slice::from_ref(bytes)).unwrap();
    }
    assert!(files.len() >= 6, "the console corpus is missing");
}

// ---------------------------------------------------------------------------------------------
// QMP

const GREETING: &str =
    r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#;

/// Runs `query-status` against a QMP server that sends `input`; also checks what the client
/// wrote: one JSON object a line, the negotiation then the command.
fn run_qmp(input: &[u8]) -> Result<Result<Value, VmError>, TestCaseError> {
    let mut written = Vec::new();
    let result = converse(&mut Cursor::new(input), &mut written, "m", "query-status", &Value::Null);
    let sent: Vec<Value> = String::from_utf8(written)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the client writes JSON lines"))
        .collect();
    prop_assert!(sent.len() <= 2);
    for (value, command) in sent.iter().zip(["qmp_capabilities", "query-status"]) {
        prop_assert_eq!(value, &json!({ "execute": command }));
    }
    if let Err(e) = &result {
        let shown = e.to_string();
        prop_assert!(
            shown.len() < 4096 && !shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{}",
            shown
        );
    }
    Ok(result)
}

/// Lines a QMP socket may carry, good and bad.
fn qmp_line() -> impl Strategy<Value = String> {
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(json!({"status": "running", "running": true})),
    ];
    prop_oneof![
        Just(GREETING.to_string()),
        json_value.clone().prop_map(|v| json!({ "return": v }).to_string()),
        (".{0,30}", any::<bool>()).prop_map(|(desc, string)| {
            let desc = if string { Value::from(desc) } else { Value::from(desc.len()) };
            json!({"error": {"class": "GenericError", "desc": desc}}).to_string()
        }),
        "[A-Z_]{1,12}".prop_map(|e| json!({"event": e, "timestamp": {"seconds": 1}}).to_string()),
        json_value.prop_map(|v| v.to_string()),
        "\\PC{0,40}",
        Just("[".repeat(200)),
        Just("{\"return\": \"\u{1b}[2J\u{7}bell\"}".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn qmp_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = run_qmp(&bytes)?;
        let mut framed = format!("{GREETING}\n{{\"return\": {{}}}}\n").into_bytes();
        framed.extend_from_slice(&bytes);
        let _ = run_qmp(&framed)?;
    }

    /// Any sequence of lines: a reply is only ever a `return` the server sent, and QEMU going
    /// away, garbage or an error is an error, never an empty success.
    #[test]
    fn qmp_line_sequences(lines in prop::collection::vec(qmp_line(), 0..8), crlf in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut input: Vec<u8> = lines.iter().flat_map(|l| format!("{l}{end}").into_bytes()).collect();
        if cut.index(4) == 0 {
            input.truncate(cut.index(input.len() + 1));
        }
        if let Ok(v) = run_qmp(&input)? {
            let returned = input.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice::<Value>(l).ok());
            prop_assert!(returned.filter_map(|l| l.get("return").cloned()).any(|r| r == v));
        }
    }

    /// A well-behaved QEMU, events anywhere: the command's own reply comes back.
    #[test]
    fn qmp_events_are_skipped(events in prop::collection::vec(0usize..3, 3), status in "[a-z]{1,10}") {
        let event = r#"{"event": "RTC_CHANGE", "data": {"offset": 1}}"#;
        let ev = |n: usize| format!("{event}\n").repeat(n);
        let input = format!(
            "{}{GREETING}\n{}{{\"return\": {{}}}}\n{}{{\"return\": {{\"status\": \"{status}\"}}}}\n",
            ev(events[0]), ev(events[1]), ev(events[2])
        );
        prop_assert_eq!(run_qmp(input.as_bytes())?.unwrap(), json!({ "status": status }));
    }

    #[test]
    fn qmp_monitor_text_is_text(v in prop_oneof![".{0,60}".prop_map(Value::from), Just(Value::Null), any::<u32>().prop_map(Value::from), "[\\x00-\\x9f]{0,60}".prop_map(Value::from)]) {
        match human_text("human-monitor-command", &v) {
            Ok(text) => {
                prop_assert!(v.is_string());
                prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{:?}", text);
            }
            Err(e) => prop_assert!(!v.is_string(), "{}", e),
        }
    }
}

#[test]
fn qmp_long_lines_are_refused_without_reading_them_all() {
    let mut input = format!("{GREETING}\n{{\"return\": {{}}}}\n{{\"return\": \"").into_bytes();
    input.resize(input.len() + MAX_LINE as usize + 10, b'x');
    let err =
        converse(&mut Cursor::new(input), &mut Vec::new(), "m", "query-status", &Value::Null).unwrap_err();
    assert!(err.to_string().contains("longer than 1 MiB"), "{err}");
    // Endless events: given up on, not waited for.
    let mut input = format!("{GREETING}\n{{\"return\": {{}}}}\n");
    input.push_str(&"{\"event\": \"X\"}\n".repeat(n2d_vm::qmp::MAX_EVENTS + 1));
    input.push_str("{\"return\": {}}\n");
    let err =
        converse(&mut Cursor::new(input), &mut Vec::new(), "m", "query-status", &Value::Null).unwrap_err();
    assert!(err.to_string().contains("no reply"), "{err}");
}

/// `ok-*`: a transcript that answers `query-status`; `err-*`: one that must be an error.
#[test]
fn qmp_regression_corpus() {
    let files = corpus("qmp");
    for (name, bytes) in &files {
        let result = run_qmp(bytes).unwrap();
        match (name.split('-').next().unwrap(), &result) {
            ("ok", Ok(_)) | ("err", Err(_)) => {}
            _ => panic!("{name}: got {result:?}"),
        }
    }
    // `quit` is the one command whose answer may be the socket closing.
    let quit = format!("{GREETING}\n{{\"return\": {{}}}}\n");
    let ret = converse(&mut Cursor::new(quit), &mut Vec::new(), "m", "quit", &Value::Null).unwrap();
    assert_eq!(ret, Value::Null);
    assert!(files.len() >= 6, "the QMP corpus is missing");
}
