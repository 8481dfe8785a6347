//! A minimal QMP client: one command per connection, which is all n2d needs.

use crate::VmError;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Connects, negotiates capabilities, runs `command`, returns its `return` value.
pub fn execute(socket: &Path, name: &str, command: &str) -> Result<Value, VmError> {
    execute_with(socket, name, command, Value::Null)
}

/// A monitor (HMP) command line through QMP's `human-monitor-command`: its text output, which
/// is empty when the command succeeded (HMP reports failures as text, not as QMP errors).
pub fn human(socket: &Path, name: &str, command_line: &str) -> Result<String, VmError> {
    let ret = execute_with(socket, name, "human-monitor-command", json!({ "command-line": command_line }))?;
    Ok(ret.as_str().unwrap_or_default().trim().to_string())
}

/// [`execute`] with `arguments` (`Value::Null`: none).
pub fn execute_with(socket: &Path, name: &str, command: &str, arguments: Value) -> Result<Value, VmError> {
    let sock_err = |source| VmError::Socket { name: name.to_string(), what: "QMP", source };
    let stream = UnixStream::connect(socket).map_err(sock_err)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(sock_err)?;
    let mut writer = stream.try_clone().map_err(sock_err)?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader, name, "greeting", true)?;
    for cmd in ["qmp_capabilities", command] {
        let mut message = json!({ "execute": cmd });
        if cmd == command && !arguments.is_null() {
            message["arguments"] = arguments.clone();
        }
        writeln!(writer, "{message}").map_err(sock_err)?;
        let reply = read_reply(&mut reader, name, cmd, false)?;
        if cmd == command {
            return Ok(reply);
        }
    }
    unreachable!("the loop returns on the last command")
}

/// Reads lines until a reply (skipping asynchronous events).
fn read_reply(
    reader: &mut impl BufRead,
    name: &str,
    command: &str,
    greeting: bool,
) -> Result<Value, VmError> {
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|source| VmError::Socket {
            name: name.to_string(),
            what: "QMP",
            source,
        })?;
        if n == 0 {
            // QEMU closes the socket when `quit` takes effect.
            return Ok(Value::Null);
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if greeting && v.get("QMP").is_some() {
            return Ok(v);
        }
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = v.get("error") {
            return Err(VmError::Qmp {
                command: command.to_string(),
                message: err.get("desc").and_then(Value::as_str).unwrap_or("unknown error").to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-connection QMP server at `path`: greets, checks the capabilities negotiation (no
    /// arguments), then hands the client's command to `answer` and writes the lines it returns.
    fn fake_qmp(
        path: &Path,
        answer: impl FnOnce(Value) -> Vec<String> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities") && !line.contains("arguments"), "{line}");
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            for reply in answer(serde_json::from_str(&line).unwrap()) {
                writeln!(w, "{reply}").unwrap();
            }
        })
    }

    #[test]
    fn talks_qmp_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = fake_qmp(&path, |command| {
            assert_eq!(command["execute"], "query-status");
            vec![
                r#"{"event": "RESUME"}"#.into(),
                r#"{"return": {"status": "running", "running": true}}"#.into(),
            ]
        });
        let ret = execute(&path, "h1", "query-status").unwrap();
        assert_eq!(ret["status"], "running");
        server.join().unwrap();
    }

    #[test]
    fn a_monitor_command_carries_its_line_and_returns_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server = fake_qmp(&path, |command| {
            assert_eq!(command["execute"], "human-monitor-command");
            assert_eq!(
                command["arguments"]["command-line"],
                "hostfwd_add uplink tcp:127.0.0.1:1-100.64.77.15:2"
            );
            vec![r#"{"return": "Could not set up host forwarding rule\r\n"}"#.into()]
        });
        let out = human(&path, "h1", "hostfwd_add uplink tcp:127.0.0.1:1-100.64.77.15:2").unwrap();
        assert_eq!(out, "Could not set up host forwarding rule");
        server.join().unwrap();
    }
}
