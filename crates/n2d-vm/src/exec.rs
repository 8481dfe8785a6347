//! `n2d exec` on the host: one session of [`n2d_proto::exec`] over a machine's exec port
//! (`exec.sock`, QEMU's end of the guest's `org.n2d.exec` virtio-serial port).
//!
//! The port takes one session at a time: [`ExecPort::open`] holds `exec.lock` in the machine's
//! directory for the session's life, so a second `n2d exec` on the same machine waits its turn.

use crate::{VmError, VmHandle};
use n2d_proto::exec::{ExecStart, Frame, WindowSize, MAX_FRAME};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const EXEC_SOCKET: &str = "exec.sock";
const EXEC_LOCK: &str = "exec.lock";
/// How long the guest may take to take up a session: it looks for a host every 0.5 s, but a
/// busy emulated guest can be slow; an image from before `n2d exec` never answers.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a terminal session looks for a changed window size.
const RESIZE_POLL: Duration = Duration::from_millis(250);

/// A connected exec port, ours until dropped.
pub struct ExecPort {
    stream: UnixStream,
    _lock: Option<nix::fcntl::Flock<File>>,
}

impl ExecPort {
    /// Connects to `vm`'s exec port, waiting for another session on it to end first.
    pub fn open(vm: &VmHandle) -> Result<ExecPort, VmError> {
        let io = |path: std::path::PathBuf| move |source| VmError::Io { path, source };
        let lock_path = vm.dir.join(EXEC_LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(lock_path.clone()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| VmError::Io { path: lock_path, source: e.into() })?;
        let stream = UnixStream::connect(vm.dir.join(EXEC_SOCKET)).map_err(|source| VmError::Socket {
            name: vm.name.clone(),
            what: "exec",
            source,
        })?;
        Ok(ExecPort { stream, _lock: Some(lock) })
    }

    /// A port over any connected stream (a fake guest in tests).
    pub fn over(stream: UnixStream) -> ExecPort {
        ExecPort { stream, _lock: None }
    }
}

/// Where a session's input comes from and its output goes.
pub struct ExecIo<'a> {
    pub stdin: Box<dyn Read + Send>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the exec session with {name} broke off")]
    Broken {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} hung up before its command ended (did the machine stop?)")]
    HungUp { name: String },
    #[error("{name} does not answer on its exec port within {}s: its image may predate `n2d exec` (build a new one with `n2d image build --refresh` and recreate the machine), or the guest is hung (see `n2d logs {name}`)", START_TIMEOUT.as_secs())]
    NoAnswer { name: String },
}

/// Runs `argv` etc. (`start` without its session number, which is made here) over `port` and
/// returns the command's exit status. With `terminal`, the caller's own terminal (stdin and
/// stdout must be one) is put in raw mode for the session and its size follows the window.
pub fn run(
    name: &str,
    port: ExecPort,
    start: ExecStart,
    io: ExecIo<'_>,
    terminal: bool,
) -> Result<i32, ExecError> {
    run_within(name, port, start, io, terminal, START_TIMEOUT)
}

fn run_within(
    name: &str,
    port: ExecPort,
    mut start: ExecStart,
    io: ExecIo<'_>,
    terminal: bool,
    start_timeout: Duration,
) -> Result<i32, ExecError> {
    let broken = |source| ExecError::Broken { name: name.to_string(), source };
    start.session = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let session = start.session;
    let raw = terminal.then(RawTerminal::enter).flatten();
    if terminal {
        start.tty = Some(window_size().unwrap_or(WindowSize { rows: 24, cols: 80 }));
    }
    let writer = Arc::new(Mutex::new(port.stream.try_clone().map_err(broken)?));
    Frame::Start(start).write_to(&mut *writer.lock().expect("unpoisoned")).map_err(broken)?;
    spawn_stdin_pump(io.stdin, writer.clone());
    if raw.is_some() {
        spawn_resize_watch(writer.clone());
    }
    let mut reader = std::io::BufReader::with_capacity(2 * MAX_FRAME, &port.stream);
    let mut started = false;
    port.stream.set_read_timeout(Some(start_timeout)).map_err(broken)?;
    let status = loop {
        let frame = match Frame::read_from(&mut reader) {
            Err(e)
                if !started
                    && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Err(ExecError::NoAnswer { name: name.to_string() })
            }
            // The guest's end went away (QEMU ended, the machine stopped) mid-session.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(ExecError::HungUp { name: name.to_string() })
            }
            other => other.map_err(broken)?,
        };
        match frame {
            None => return Err(ExecError::HungUp { name: name.to_string() }),
            Some(Frame::Started { session: s }) => {
                if s == session && !started {
                    started = true;
                    port.stream.set_read_timeout(None).map_err(broken)?;
                }
            }
            // Anything before our Started is a previous session's tail.
            Some(_) if !started => {}
            Some(Frame::Stdout(data)) => {
                // A closed stdout (`| head`) ends the output, not the session.
                let _ = io.stdout.write_all(&data).and_then(|()| io.stdout.flush());
            }
            Some(Frame::Stderr(data)) => {
                let _ = io.stderr.write_all(&data).and_then(|()| io.stderr.flush());
            }
            Some(Frame::Exit(code)) => break code,
            Some(_) => {}
        }
    };
    drop(raw);
    let _ = port.stream.shutdown(std::net::Shutdown::Both);
    Ok(status)
}

fn spawn_stdin_pump(mut stdin: Box<dyn Read + Send>, writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let frame = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Frame::StdinEnd,
                Ok(n) => Frame::Stdin(buf[..n].to_vec()),
            };
            let end = frame == Frame::StdinEnd;
            if frame.write_to(&mut *writer.lock().expect("unpoisoned")).is_err() || end {
                return;
            }
        }
    });
}

fn spawn_resize_watch(writer: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let mut last = window_size();
        loop {
            std::thread::sleep(RESIZE_POLL);
            let now = window_size();
            if now != last {
                if let Some(size) = now {
                    if Frame::Resize(size).write_to(&mut *writer.lock().expect("unpoisoned")).is_err() {
                        return;
                    }
                }
                last = now;
            }
        }
    });
}

/// The caller's terminal size, from stdout.
fn window_size() -> Option<WindowSize> {
    let mut ws = nix::pty::Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which lives across the call.
    let rc = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(WindowSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// The caller's terminal in raw mode until dropped (keys go to the guest as typed; Ctrl-C
/// reaches the command, not n2d).
struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> ExecStart {
        ExecStart { session: 0, argv: vec!["true".into()], env: vec![], workdir: None, tty: None }
    }

    /// A guest that answers the session with `reply(session)`'s frames, after reading its start.
    fn guest(reply: impl FnOnce(u64) -> Vec<Frame> + Send + 'static) -> ExecPort {
        let (host, mut guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let Ok(Some(Frame::Start(s))) = Frame::read_from(&mut guest) else { return };
            for f in reply(s.session) {
                f.write_to(&mut guest).unwrap();
            }
            // Hold the line open until the host hangs up.
            let mut sink = Vec::new();
            let _ = guest.read_to_end(&mut sink);
        });
        ExecPort::over(host)
    }

    #[test]
    fn a_previous_sessions_tail_is_dropped_and_the_status_returned() {
        let port = guest(|session| {
            vec![
                Frame::Stdout(b"stale".to_vec()),
                Frame::Exit(9),
                Frame::Started { session: session.wrapping_add(1) },
                Frame::Stdout(b"old".to_vec()),
                Frame::Started { session },
                Frame::Stdout(b"new".to_vec()),
                Frame::Stderr(b"err".to_vec()),
                Frame::Exit(3),
            ]
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = ExecIo { stdin: Box::new(std::io::empty()), stdout: &mut out, stderr: &mut err };
        assert_eq!(run("m", port, start(), io, false).unwrap(), 3);
        assert_eq!((out.as_slice(), err.as_slice()), (&b"new"[..], &b"err"[..]));
    }

    #[test]
    fn a_guest_that_never_answers_is_named_with_the_likely_cause() {
        let port = guest(|_| vec![]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = ExecIo { stdin: Box::new(std::io::empty()), stdout: &mut out, stderr: &mut err };
        let e = run_within("m", port, start(), io, false, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ExecError::NoAnswer { .. }), "{e:?}");
        assert!(e.to_string().contains("n2d image build"), "{e}");
    }

    #[test]
    fn a_guest_that_hangs_up_midway_is_an_error_not_a_status() {
        let (host, mut g) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let Ok(Some(Frame::Start(s))) = Frame::read_from(&mut g) else { return };
            Frame::Started { session: s.session }.write_to(&mut g).unwrap();
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = ExecIo { stdin: Box::new(std::io::empty()), stdout: &mut out, stderr: &mut err };
        let e = run("m", ExecPort::over(host), start(), io, false).unwrap_err();
        assert!(matches!(e, ExecError::HungUp { .. }), "{e:?}");
    }
}
