//! A running VM's state saved to a file and restored into a new QEMU, over QMP: the ground for
//! warm starts and suspend/resume (issue 20). Saving stops the guest and migrates its device
//! state and RAM to a file; restoring needs a QEMU started with the same devices and
//! `-incoming defer`, then migrates the file in. The file is named by QMP's structured
//! `channels` argument, not a `file:` URI, so no path is ever parsed as URI options.

use crate::qmp;
use crate::VmError;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a migration's progress is asked for.
const POLL: Duration = Duration::from_millis(20);

/// Where a migration stands, from `query-migrate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// Not started, or under way (`setup`, `active`, `device`...): ask again.
    Running(String),
    Completed,
    /// Failed or cancelled, with QEMU's reason when it gave one.
    Failed(String),
}

/// Reads `query-migrate`'s reply. No `status` at all means no migration has begun yet.
pub fn migration(ret: &Value) -> Migration {
    match ret.get("status").and_then(Value::as_str) {
        Some("completed") => Migration::Completed,
        Some(status @ ("failed" | "cancelled")) => {
            let why = ret.get("error-desc").and_then(Value::as_str).unwrap_or(status);
            Migration::Failed(why.chars().filter(|c| !c.is_control()).take(500).collect())
        }
        Some(other) => Migration::Running(other.to_string()),
        None => Migration::Running("none".to_string()),
    }
}

/// The `channels` argument naming `file` as a migration's one main channel.
pub fn file_channel(file: &Path) -> Value {
    json!([{
        "channel-type": "main",
        "addr": { "transport": "file", "filename": file.to_string_lossy(), "offset": 0 }
    }])
}

/// Stops the guest and writes its state and RAM to `file`, waiting up to `limit`. The VM is
/// left paused: the caller quits it, or `cont`s it to keep it running.
pub fn save(socket: &Path, name: &str, file: &Path, limit: Duration) -> Result<(), VmError> {
    skip_shared_ram(socket, name)?;
    qmp::execute(socket, name, "stop")?;
    qmp::execute_with(socket, name, "migrate", json!({ "channels": file_channel(file) }))?;
    wait(socket, name, "migrate", limit)
}

/// Loads `file` into a QEMU started with `-incoming defer` and the saved VM's devices, waiting
/// up to `limit`, then lets the guest run.
pub fn restore(socket: &Path, name: &str, file: &Path, limit: Duration) -> Result<(), VmError> {
    skip_shared_ram(socket, name)?;
    qmp::execute_with(socket, name, "migrate-incoming", json!({ "channels": file_channel(file) }))?;
    wait(socket, name, "migrate-incoming", limit)?;
    qmp::execute(socket, name, "cont")?;
    Ok(())
}

/// `x-ignore-shared`, on both sides of a migration (it changes the stream's format): RAM that is
/// a shared file (a warm template's) stays out of the state, since the file already holds it.
/// A VM on QEMU's own memory is saved whole either way.
fn skip_shared_ram(socket: &Path, name: &str) -> Result<(), VmError> {
    let capability = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] });
    qmp::execute_with(socket, name, "migrate-set-capabilities", capability)?;
    Ok(())
}

/// Polls `query-migrate` until the migration completes, fails or `limit` passes.
fn wait(socket: &Path, name: &str, command: &str, limit: Duration) -> Result<(), VmError> {
    let since = Instant::now();
    loop {
        match migration(&qmp::execute(socket, name, "query-migrate")?) {
            Migration::Completed => return Ok(()),
            Migration::Failed(why) => {
                return Err(VmError::Qmp { command: command.to_string(), message: why });
            }
            Migration::Running(status) if since.elapsed() >= limit => {
                return Err(VmError::Qmp {
                    command: command.to_string(),
                    message: format!("still {status} after {limit:?}"),
                });
            }
            Migration::Running(_) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// A QMP server at `path` for any number of connections (one command each): records each
    /// command and answers `query-migrate` with the next of `statuses` (the last one repeats).
    fn fake_qmp(path: &Path, statuses: Vec<Value>) -> Arc<Mutex<Vec<Value>>> {
        let listener = UnixListener::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter().peekable();
            for stream in listener.incoming() {
                let Ok(s) = stream else { return };
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                writeln!(w, r#"{{"QMP": {{"version": {{}}}}}}"#).unwrap();
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                line.clear();
                r.read_line(&mut line).unwrap();
                let command: Value = serde_json::from_str(&line).unwrap();
                let reply = if command["execute"] == "query-migrate" {
                    let status = if statuses.len() > 1 { statuses.next() } else { statuses.peek().cloned() };
                    json!({ "return": status.unwrap_or(json!({})) })
                } else {
                    json!({ "return": {} })
                };
                log.lock().unwrap().push(command);
                writeln!(w, "{reply}").unwrap();
            }
        });
        seen
    }

    fn executed(seen: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
        seen.lock().unwrap().iter().map(|c| c["execute"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn statuses_are_read_and_a_failure_keeps_qemus_reason() {
        assert_eq!(migration(&json!({})), Migration::Running("none".into()));
        assert_eq!(migration(&json!({"status": "active"})), Migration::Running("active".into()));
        assert_eq!(migration(&json!({"status": "completed"})), Migration::Completed);
        let failed = json!({"status": "failed", "error-desc": "No space left\u{1b}[2J on device"});
        assert_eq!(migration(&failed), Migration::Failed("No space left[2J on device".into()));
        assert_eq!(migration(&json!({"status": "cancelled"})), Migration::Failed("cancelled".into()));
    }

    #[test]
    fn a_path_with_commas_is_a_filename_not_uri_options() {
        let channel = file_channel(Path::new("/h/a,offset=9/state"));
        assert_eq!(channel[0]["addr"]["filename"], "/h/a,offset=9/state");
        assert_eq!(channel[0]["addr"]["offset"], 0);
        assert_eq!(channel[0]["channel-type"], "main");
    }

    #[test]
    fn save_stops_the_guest_migrates_to_the_file_and_waits_for_completion() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let seen = fake_qmp(
            &sock,
            vec![json!({"status": "setup"}), json!({"status": "active"}), json!({"status": "completed"})],
        );
        save(&sock, "h1", &dir.path().join("state"), Duration::from_secs(10)).unwrap();
        assert_eq!(
            executed(&seen),
            [
                "migrate-set-capabilities",
                "stop",
                "migrate",
                "query-migrate",
                "query-migrate",
                "query-migrate"
            ]
        );
        let capability = seen.lock().unwrap()[0]["arguments"]["capabilities"][0].clone();
        assert_eq!(capability, json!({"capability": "x-ignore-shared", "state": true}));
        let migrate = seen.lock().unwrap()[2].clone();
        assert_eq!(migrate["arguments"]["channels"][0]["addr"]["transport"], "file");
    }

    #[test]
    fn a_failed_or_endless_migration_is_an_error_naming_why() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        fake_qmp(&sock, vec![json!({"status": "failed", "error-desc": "disk full"})]);
        let err = save(&sock, "h1", &dir.path().join("state"), Duration::from_secs(10)).unwrap_err();
        assert_eq!(err.to_string(), "QMP command migrate failed: disk full");

        let sock = dir.path().join("qmp2.sock");
        fake_qmp(&sock, vec![json!({"status": "active"})]);
        let err = save(&sock, "h1", &dir.path().join("state"), Duration::from_millis(250)).unwrap_err();
        assert!(err.to_string().contains("still active after"), "{err}");
    }

    #[test]
    fn restore_loads_the_file_then_lets_the_guest_run() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let seen = fake_qmp(&sock, vec![json!({"status": "active"}), json!({"status": "completed"})]);
        restore(&sock, "h1", &dir.path().join("state"), Duration::from_secs(10)).unwrap();
        assert_eq!(
            executed(&seen),
            ["migrate-set-capabilities", "migrate-incoming", "query-migrate", "query-migrate", "cont"]
        );
    }
}
