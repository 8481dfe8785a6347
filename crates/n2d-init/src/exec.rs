//! `n2d exec` in the guest: runs the host's commands, one session at a time, over the exec port
//! (frames of [`n2d_proto::exec`]).
//!
//! Threads: the port reader turns frames and the host's hang-ups into [`Event`]s; a session
//! adds one pump per output (stdout and stderr, or the terminal) and a waiter for the exit.
//! PID 1's supervisor reaps every child, the session's command included, so the waiter does not
//! `waitpid`: the supervisor hands the exit over through [`EXITS`].

use crate::log::info;
use n2d_proto::exec::{ExecStart, Frame, WindowSize, MAX_FRAME};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The guest's base environment for a command (the host's `--env` pairs come on top).
const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
];

/// How often the reader looks for a host while none is connected (a virtio-serial port reads
/// as ended then, with no way to sleep until one connects): at rest, and for a while after a
/// session, when another often follows (`n2d cp` runs two).
const IDLE_POLL: Duration = Duration::from_millis(500);
const BUSY_POLL: Duration = Duration::from_millis(50);
const BUSY_FOR: Duration = Duration::from_secs(10);
/// How long an ended read waits before it counts as the host's hang-up. The guest learns of the
/// host's connects and disconnects on virtio-serial's control queue, handled later than the data
/// queue: a busy guest can read the next session's first frames before it learns that the last
/// session's host went, and would then take that late news for the new host's hang-up.
const HANGUP_GRACE: Duration = Duration::from_secs(1);

/// Exits of session commands, handed from the supervisor's reaping to the session's waiter.
pub struct Exits {
    waiting: Mutex<BTreeMap<i32, Option<i32>>>,
    changed: Condvar,
}

pub static EXITS: Exits = Exits { waiting: Mutex::new(BTreeMap::new()), changed: Condvar::new() };

impl Exits {
    /// Called by the supervisor for a reaped pid none of its services had; returns whether it
    /// was a session's command.
    pub fn record(&self, pid: i32, status: i32) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get_mut(&pid) {
            Some(slot) => {
                *slot = Some(status);
                self.changed.notify_all();
                true
            }
            None => false,
        }
    }

    fn wait(&self, pid: i32) -> i32 {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(Some(status)) = waiting.get(&pid) {
                let status = *status;
                waiting.remove(&pid);
                return status;
            }
            waiting = self.changed.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
    }
}

enum Event {
    Frame(Frame),
    /// The host went away (or sent something unreadable): any session ends.
    Hangup,
    OutputDone,
    Exited(i32),
}

/// Serves the exec port at `port` from background threads; `supervisor` (PID 1's loop) is
/// woken when a command's output ends, so its exit is reaped at once.
pub fn serve(port: String, supervisor: std::thread::Thread) {
    let spawned = std::thread::Builder::new().name("exec".into()).spawn(move || {
        let file = loop {
            match File::options().read(true).write(true).open(&port) {
                Ok(f) => break f,
                Err(e) => {
                    info!("exec port {port}: {e}; retrying");
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        };
        let Ok(reader) = file.try_clone() else {
            info!("exec port {port}: cannot duplicate its descriptor; no exec");
            return;
        };
        let (events, rx) = channel();
        let busy_until = Arc::new(Mutex::new(Instant::now()));
        spawn_reader(reader, events.clone(), busy_until.clone());
        let out = Arc::new(Mutex::new(file));
        let mut wake = || supervisor.unpark();
        sessions(&rx, &events, &out, &mut wake, &busy_until);
    });
    if let Err(e) = spawned {
        info!("cannot start the exec server: {e}");
    }
}

fn spawn_reader(mut port: File, events: Sender<Event>, busy_until: Arc<Mutex<Instant>>) {
    std::thread::spawn(move || {
        let mut connected = false;
        loop {
            match Frame::read_from(&mut port) {
                Ok(Some(frame)) => {
                    connected = true;
                    if events.send(Event::Frame(frame)).is_err() {
                        return;
                    }
                }
                // An ended read may be old news (see HANGUP_GRACE); an unreadable frame is not.
                ended @ (Ok(None) | Err(_)) => {
                    if connected && (ended.is_err() || host_gone(&port)) {
                        connected = false;
                        *busy_until.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + BUSY_FOR;
                        if events.send(Event::Hangup).is_err() {
                            return;
                        }
                    }
                    let busy = Instant::now() < *busy_until.lock().unwrap_or_else(|e| e.into_inner());
                    std::thread::sleep(if busy { BUSY_POLL } else { IDLE_POLL });
                }
            }
        }
    });
}

/// Whether the host is still away [`HANGUP_GRACE`] after a read of `port` ended: the port
/// polls as hung up while no host is connected.
fn host_gone(port: &File) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    std::thread::sleep(HANGUP_GRACE);
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(port), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_none_or(|r| r.contains(PollFlags::POLLHUP)),
        Err(_) => true,
    }
}

/// Waits for a [`Frame::Start`] and runs its session; frames outside a session are dropped.
fn sessions<W: Write + Send + 'static>(
    rx: &Receiver<Event>,
    events: &Sender<Event>,
    out: &Arc<Mutex<W>>,
    wake: &mut dyn FnMut(),
    busy_until: &Mutex<Instant>,
) {
    while let Ok(event) = rx.recv() {
        let Event::Frame(Frame::Start(mut start)) = event else { continue };
        // A session ended by a newer host's start runs that one next.
        while let Some(next) = run_session(start, rx, events, out, wake) {
            start = next;
        }
        *busy_until.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + BUSY_FOR;
    }
}

fn send(out: &Mutex<impl Write>, frame: &Frame) -> bool {
    frame.write_to(&mut *out.lock().unwrap_or_else(|e| e.into_inner())).is_ok()
}

/// The command's input and outputs: pipes, or one pseudo-terminal.
struct Child {
    pid: i32,
    stdin: Option<File>,
    outputs: Vec<(File, bool)>,
    terminal: Option<File>,
}

/// Runs one session. Returns the start of a newer session that came in meanwhile: the host holds
/// the machine's exec lock for a session's life, so a new start means this session's host is gone
/// even where its hang-up was not seen; its command is then killed as a hang-up would.
fn run_session<W: Write + Send + 'static>(
    start: ExecStart,
    rx: &Receiver<Event>,
    events: &Sender<Event>,
    out: &Arc<Mutex<W>>,
    wake: &mut dyn FnMut(),
) -> Option<ExecStart> {
    if !send(out, &Frame::Started { session: start.session }) {
        return None;
    }
    let mut child = match spawn(&start) {
        Ok(child) => child,
        Err((code, message)) => {
            send(out, &Frame::Stderr(format!("n2d exec: {message}\n").into_bytes()));
            send(out, &Frame::Exit(code));
            return None;
        }
    };
    let pumps = child.outputs.len();
    for (file, is_stderr) in child.outputs.drain(..) {
        let (out, events) = (out.clone(), events.clone());
        std::thread::spawn(move || pump(file, is_stderr, &out, &events));
    }
    let pid = child.pid;
    let exited = events.clone();
    std::thread::spawn(move || {
        let _ = exited.send(Event::Exited(EXITS.wait(pid)));
    });
    let (mut outputs_left, mut status, mut newer) = (pumps, None, None);
    while outputs_left > 0 || status.is_none() {
        let Ok(event) = rx.recv() else { return None };
        match event {
            Event::Frame(Frame::Stdin(data)) => {
                let input = child.terminal.as_mut().or(child.stdin.as_mut());
                // A command that closed its input is not an error of the session.
                if let Some(Err(_)) = input.map(|f| f.write_all(&data)) {
                    child.stdin = None;
                }
            }
            Event::Frame(Frame::StdinEnd) => child.stdin = None,
            Event::Frame(Frame::Resize(size)) => {
                if let Some(terminal) = &child.terminal {
                    set_window_size(terminal, size);
                }
            }
            Event::Frame(Frame::Start(next)) if next.session != start.session => {
                info!("exec: a new session started; the last one's host is gone");
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                newer = Some(next);
            }
            Event::Frame(_) => {}
            Event::Hangup => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Event::OutputDone => {
                outputs_left -= 1;
                if outputs_left == 0 {
                    wake();
                }
            }
            Event::Exited(code) => {
                status = Some(code);
                // Output still held by the command's own children (a daemon it started) does
                // not keep the session open; the terminal closes with the command's session.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGHUP);
            }
        }
    }
    if newer.is_none() {
        send(out, &Frame::Exit(status.unwrap_or(-1)));
    }
    newer
}

fn pump(mut file: File, is_stderr: bool, out: &Mutex<impl Write>, events: &Sender<Event>) {
    let mut buf = vec![0u8; MAX_FRAME];
    // A terminal's reads end in EIO once its last holder closed it.
    while let Ok(n @ 1..) = file.read(&mut buf) {
        let data = buf[..n].to_vec();
        let frame = if is_stderr { Frame::Stderr(data) } else { Frame::Stdout(data) };
        if !send(out, &frame) {
            break;
        }
    }
    let _ = events.send(Event::OutputDone);
}

fn set_window_size(terminal: &File, size: WindowSize) {
    let ws = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which lives across the call.
    unsafe { nix::libc::ioctl(terminal.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
}

/// Starts the command in a session of its own (so a hang-up kills all it started), registered
/// in [`EXITS`] before the supervisor can reap it. Errors: the status and message to report.
fn spawn(start: &ExecStart) -> Result<Child, (i32, String)> {
    let Some(program) = start.argv.first() else {
        return Err((126, "no command given".into()));
    };
    let mut command = Command::new(program);
    command.args(&start.argv[1..]).env_clear().envs(BASE_ENV);
    for pair in &start.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    command.current_dir(start.workdir.as_deref().unwrap_or("/"));
    let terminal = match start.tty {
        Some(size) => {
            let ws = nix::pty::Winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
            let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| (126, format!("no terminal: {e}")))?;
            let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            let io = (slave(&pty.slave), slave(&pty.slave), slave(&pty.slave));
            let (Ok(i), Ok(o), Ok(e)) = io else { return Err((126, "no terminal".into())) };
            command.stdin(i).stdout(o).stderr(e);
            // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated after fork.
            unsafe {
                command.pre_exec(|| {
                    nix::unistd::setsid()?;
                    if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            Some(File::from(pty.master))
        }
        None => {
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
            }
            None
        }
    };
    let mut waiting = EXITS.waiting.lock().unwrap_or_else(|e| e.into_inner());
    let mut spawned = command.spawn().map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        (code, format!("{program}: {e}"))
    })?;
    let pid = spawned.id() as i32;
    waiting.insert(pid, None);
    drop(waiting);
    let (stdin, outputs) = match &terminal {
        Some(t) => {
            let reader = t.try_clone().map_err(|e| (126, format!("terminal: {e}")))?;
            (None, vec![(reader, false)])
        }
        None => {
            let stdin = spawned.stdin.take().map(|p| File::from(OwnedFd::from(p)));
            let stdout = spawned.stdout.take().map(|p| (File::from(OwnedFd::from(p)), false));
            let stderr = spawned.stderr.take().map(|p| (File::from(OwnedFd::from(p)), true));
            (stdin, stdout.into_iter().chain(stderr).collect())
        }
    };
    info!("exec: started {program} (pid {pid})");
    Ok(Child { pid, stdin, outputs, terminal })
}

#[cfg(test)]
mod tests {
    //! Real commands of the build host through a session, a pipe pair standing in for the port,
    //! and a reaper thread standing in for the supervisor.
    use super::*;
    use n2d_proto::exec::ExecStart;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Recorder(Arc<Mutex<Vec<Frame>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut input = buf;
            while let Some(frame) = Frame::read_from(&mut input)? {
                self.0.lock().unwrap().push(frame);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs one session of `start` with `input` frames after it; returns what the guest sent.
    fn session(start: ExecStart, input: Vec<Frame>) -> Vec<Frame> {
        session_with(start, input.into_iter().map(Event::Frame).collect())
    }

    fn session_with(start: ExecStart, input: Vec<Event>) -> Vec<Frame> {
        let (frames, newer) = session_and_newer(start, input);
        assert_eq!(newer, None);
        frames
    }

    /// What the guest sent, and the newer session's start the session returned.
    fn session_and_newer(start: ExecStart, input: Vec<Event>) -> (Vec<Frame>, Option<ExecStart>) {
        reap_sessions();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::new(Mutex::new(Recorder(sent.clone())));
        let (events, rx) = channel();
        for event in input {
            events.send(event).unwrap();
        }
        let newer = run_session(start, &rx, &events, &out, &mut || {});
        let frames = sent.lock().unwrap().clone();
        (frames, newer)
    }

    fn reap_sessions() {
        static REAPING: AtomicBool = AtomicBool::new(false);
        if !REAPING.swap(true, Ordering::SeqCst) {
            // Reaps only the pids a session registered, as the supervisor would hand over.
            std::thread::spawn(|| loop {
                let pids: Vec<i32> = EXITS.waiting.lock().unwrap().keys().copied().collect();
                for pid in pids {
                    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
                    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(_, c)) => drop(EXITS.record(pid, c)),
                        Ok(WaitStatus::Signaled(_, s, _)) => drop(EXITS.record(pid, 128 + s as i32)),
                        _ => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            });
        }
    }

    fn start(argv: &[&str]) -> ExecStart {
        ExecStart {
            session: 42,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            workdir: None,
            tty: None,
        }
    }

    fn joined(frames: &[Frame], stderr: bool) -> String {
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|f| match f {
                Frame::Stdout(d) if !stderr => d.clone(),
                Frame::Stderr(d) if stderr => d.clone(),
                _ => vec![],
            })
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn stdin_reaches_the_command_and_its_outputs_and_status_come_back() {
        let frames = session(
            start(&["sh", "-c", "cat; echo oops >&2; exit 3"]),
            vec![Frame::Stdin(b"hello ".to_vec()), Frame::Stdin(b"world".to_vec()), Frame::StdinEnd],
        );
        assert_eq!(frames.first(), Some(&Frame::Started { session: 42 }));
        assert_eq!(frames.last(), Some(&Frame::Exit(3)));
        assert_eq!(joined(&frames, false), "hello world");
        assert_eq!(joined(&frames, true), "oops\n");
    }

    #[test]
    fn environment_and_workdir_are_the_ones_asked_for() {
        let mut s = start(&["sh", "-c", "echo $A:$PATH:$(pwd)"]);
        s.env = vec!["A=1=2".into()];
        s.workdir = Some("/tmp".into());
        let frames = session(s, vec![Frame::StdinEnd]);
        assert_eq!(joined(&frames, false), format!("1=2:{}:/tmp\n", BASE_ENV[0].1));
    }

    #[test]
    fn a_missing_program_is_127_with_a_message_and_a_signal_is_128_plus_it() {
        let frames = session(start(&["/no/such/program"]), vec![]);
        assert_eq!(frames.last(), Some(&Frame::Exit(127)));
        assert!(joined(&frames, true).contains("/no/such/program"), "{frames:?}");
        let frames = session(start(&["sh", "-c", "kill -TERM $$"]), vec![Frame::StdinEnd]);
        assert_eq!(frames.last(), Some(&Frame::Exit(128 + 15)));
    }

    #[test]
    fn a_hangup_kills_the_command() {
        let frames = session_with(start(&["sleep", "600"]), vec![Event::Hangup]);
        assert_eq!(frames.last(), Some(&Frame::Exit(128 + 9)));
    }

    #[test]
    fn a_newer_session_ends_the_one_running_and_runs_next() {
        let mut newer = start(&["true"]);
        newer.session = 43;
        let began = Instant::now();
        let (frames, next) =
            session_and_newer(start(&["sleep", "600"]), vec![Event::Frame(Frame::Start(newer.clone()))]);
        assert_eq!(next, Some(newer));
        assert!(began.elapsed() < Duration::from_secs(60), "the old command was not killed");
        // Its exit goes to no one: the newer host takes frames only after its own Started.
        assert_eq!(frames, vec![Frame::Started { session: 42 }]);
    }

    #[test]
    fn a_terminal_session_sees_a_terminal_of_the_asked_size() {
        let mut s = start(&["sh", "-c", "stty size; test -t 0 && echo tty"]);
        s.tty = Some(WindowSize { rows: 33, cols: 101 });
        let frames = session(s, vec![]);
        assert_eq!(frames.last(), Some(&Frame::Exit(0)));
        let text = joined(&frames, false);
        assert!(text.contains("33 101") && text.contains("tty"), "{text:?}");
        assert_eq!(joined(&frames, true), "");
    }
}
