//! A minimal QMP client: one command per connection, or a [`Session`] held open for commands that
//! must follow each other closely.

use crate::VmError;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
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
    human_text(HMP, &execute_with(socket, name, HMP, hmp_arguments(command_line))?)
}

const HMP: &str = "human-monitor-command";

fn hmp_arguments(command_line: &str) -> Value {
    json!({ "command-line": command_line })
}

/// The text of a `human-monitor-command` reply (public for the property tests).
#[doc(hidden)]
pub fn human_text(command: &str, ret: &Value) -> Result<String, VmError> {
    match ret.as_str() {
        Some(text) => Ok(clean(text).trim().to_string()),
        None => Err(protocol(command, "its reply is not text")),
    }
}

/// [`execute`] with `arguments` (`Value::Null`: none).
pub fn execute_with(socket: &Path, name: &str, command: &str, arguments: Value) -> Result<Value, VmError> {
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = connect(socket, name)?;
    let reply = converse(&mut reader, &mut writer, name, command, &arguments);
    let outcome = match &reply {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::debug!("{name}: QMP {command} {arguments}: {outcome} ({:.2}s)", started.elapsed().as_secs_f64());
    reply
}

/// A connection with its capabilities negotiated, for commands that must follow each other
/// closely (a port handed from one VM to another: the second VM's session is ready before the
/// first lets the port go).
pub struct Session {
    name: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Session {
    pub fn open(socket: &Path, name: &str) -> Result<Session, VmError> {
        let (mut reader, mut writer) = connect(socket, name)?;
        negotiate(&mut reader, &mut writer, name)?;
        Ok(Session { name: name.to_string(), reader, writer })
    }

    /// [`human`] over this session.
    pub fn human(&mut self, command_line: &str) -> Result<String, VmError> {
        let ret = run(&mut self.reader, &mut self.writer, &self.name, HMP, &hmp_arguments(command_line))?;
        human_text(HMP, &ret)
    }
}

/// A connection to the QMP socket, its replies read with a 10 s timeout.
fn connect(socket: &Path, name: &str) -> Result<(BufReader<UnixStream>, UnixStream), VmError> {
    let sock_err = |source| VmError::Socket { name: name.to_string(), what: "QMP", source };
    let stream = UnixStream::connect(socket).map_err(sock_err)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(sock_err)?;
    let writer = stream.try_clone().map_err(sock_err)?;
    Ok((BufReader::new(stream), writer))
}

/// [`execute_with`]'s exchange over any reader and writer (public for the property tests).
#[doc(hidden)]
pub fn converse(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    name: &str,
    command: &str,
    arguments: &Value,
) -> Result<Value, VmError> {
    negotiate(reader, writer, name)?;
    run(reader, writer, name, command, arguments)
}

/// QEMU's greeting read, then the capabilities negotiated: commands may follow.
fn negotiate(reader: &mut impl BufRead, writer: &mut impl Write, name: &str) -> Result<(), VmError> {
    read_reply(reader, name, "greeting", true)?;
    run(reader, writer, name, "qmp_capabilities", &Value::Null).map(drop)
}

/// One command (`arguments` `Value::Null`: none) and its `return` value.
fn run(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    name: &str,
    command: &str,
    arguments: &Value,
) -> Result<Value, VmError> {
    let mut message = json!({ "execute": command });
    if !arguments.is_null() {
        message["arguments"] = arguments.clone();
    }
    writeln!(writer, "{message}").map_err(|source| VmError::Socket {
        name: name.to_string(),
        what: "QMP",
        source,
    })?;
    read_reply(reader, name, command, false)
}

/// The longest line read: the replies n2d asks for are small, and a longer one is an error
/// rather than memory spent.
pub const MAX_LINE: u64 = 1024 * 1024;
/// Asynchronous events skipped while waiting for one reply, before giving up.
pub const MAX_EVENTS: usize = 1000;
/// The most of an error or monitor text kept (it is shown to the user).
const MAX_TEXT: usize = 2000;

fn protocol(command: &str, message: &str) -> VmError {
    VmError::Qmp { command: command.to_string(), message: message.to_string() }
}

/// Text from QEMU as it may reach a terminal: no control characters but newlines and tabs,
/// and at most [`MAX_TEXT`] characters.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).take(MAX_TEXT).collect()
}

/// Reads lines until a reply (the greeting when `greeting`), skipping asynchronous events.
/// Whatever else arrives is an error: a line that is not a JSON object or is over
/// [`MAX_LINE`], more than [`MAX_EVENTS`] events, or the end of the stream (but after `quit`).
#[doc(hidden)]
pub fn read_reply(
    reader: &mut impl BufRead,
    name: &str,
    command: &str,
    greeting: bool,
) -> Result<Value, VmError> {
    for _ in 0..=MAX_EVENTS {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|source| VmError::Socket { name: name.to_string(), what: "QMP", source })?;
        if n == 0 {
            // QEMU closes the socket when `quit` takes effect.
            if command == "quit" {
                return Ok(Value::Null);
            }
            return Err(protocol(command, "QEMU closed the connection before replying"));
        }
        if n as u64 == MAX_LINE && !line.ends_with(b"\n") {
            return Err(protocol(command, "QEMU sent a line longer than 1 MiB"));
        }
        let v: Value = serde_json::from_slice(&line)
            .map_err(|_| protocol(command, "QEMU sent a line that is not JSON"))?;
        let Some(object) = v.as_object() else {
            return Err(protocol(command, "QEMU sent JSON that is not an object"));
        };
        if greeting && object.contains_key("QMP") {
            return Ok(v);
        }
        if let (false, Some(ret)) = (greeting, object.get("return")) {
            return Ok(ret.clone());
        }
        if let Some(err) = object.get("error") {
            let desc = err.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(protocol(command, &clean(desc)));
        }
        // An event (or anything else QEMU may add): not the reply.
    }
    Err(protocol(command, "no reply among the events QEMU sent"))
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

    #[test]
    fn a_session_is_negotiated_before_its_first_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let server = fake_qmp(&path, move |command| {
            tx.send(()).unwrap();
            assert_eq!(command["arguments"]["command-line"], "hostfwd_remove uplink tcp:127.0.0.1:1");
            vec![r#"{"event": "X"}"#.into(), r#"{"return": ""}"#.into()]
        });
        let mut session = Session::open(&path, "h1").unwrap();
        assert!(rx.try_recv().is_err(), "a command went before it was asked for");
        assert_eq!(session.human("hostfwd_remove uplink tcp:127.0.0.1:1").unwrap(), "");
        server.join().unwrap();
    }
}
