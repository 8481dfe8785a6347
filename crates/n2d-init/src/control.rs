//! The host's requests: its control port (virtio-serial) and SIGTERM/SIGINT/SIGPWR. Each
//! raises a flag in [`REQUESTS`] that the supervisor loop acts on.

use crate::log::info;
use crate::sys::System;
use n2d_proto::{ControlRequest, CONTROL_PORT_NAME};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What was asked of the guest; the supervisor loop polls these.
pub struct Requests {
    /// A power-off (never cleared).
    pub shutdown: AtomicBool,
    /// `reload-tls`; the loop clears it.
    pub reload_tls: AtomicBool,
    /// `identity`; the loop clears it and reads [`Requests::identity_unix_ms`], stored first.
    pub take_identity: AtomicBool,
    /// The host's wall clock of the last `identity`, in ms since the epoch.
    pub identity_unix_ms: AtomicU64,
    /// `clock` (a machine resumed from its saved state); the loop clears it and sets the wall
    /// clock to [`Requests::clock_unix_ms`], stored first.
    pub set_clock: AtomicBool,
    pub clock_unix_ms: AtomicU64,
    /// `engine-down` / `engine-up` (a fault): dockerd killed and kept down, or started again.
    pub engine_down: AtomicBool,
    pub engine_up: AtomicBool,
}

impl Requests {
    pub const fn new() -> Self {
        Requests {
            shutdown: AtomicBool::new(false),
            reload_tls: AtomicBool::new(false),
            take_identity: AtomicBool::new(false),
            identity_unix_ms: AtomicU64::new(0),
            set_clock: AtomicBool::new(false),
            engine_down: AtomicBool::new(false),
            engine_up: AtomicBool::new(false),
            clock_unix_ms: AtomicU64::new(0),
        }
    }
}

impl Default for Requests {
    fn default() -> Self {
        Self::new()
    }
}

pub static REQUESTS: Requests = Requests::new();

extern "C" fn on_signal(_: nix::libc::c_int) {
    REQUESTS.shutdown.store(true, Ordering::SeqCst);
}

/// Routes SIGTERM, SIGINT and SIGPWR to a shutdown request; Ctrl-Alt-Del becomes SIGINT.
pub fn install_signal_handlers() {
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { sigaction(signal, &action) } {
            info!("cannot handle {signal}: {e}");
        }
    }
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// `/dev/vportNpM` of the virtio-serial port named [`CONTROL_PORT_NAME`].
pub fn find_control_port(sys: &dyn System) -> Option<String> {
    find_port(sys, CONTROL_PORT_NAME)
}

/// `/dev/vportNpM` of the virtio-serial port called `name`.
pub fn find_port(sys: &dyn System, name: &str) -> Option<String> {
    sys.read_dir("/sys/class/virtio-ports")
        .ok()?
        .into_iter()
        .find(|port| {
            sys.read_file(&format!("/sys/class/virtio-ports/{port}/name"))
                .is_ok_and(|n| String::from_utf8_lossy(&n).trim() == name)
        })
        .map(|port| format!("/dev/{port}"))
}

/// Acts on one line from the host by raising the flag in `requests` that the supervisor loop
/// acts on; returns whether it asked for a shutdown.
pub fn handle_line(line: &str, requests: &Requests) -> bool {
    match ControlRequest::parse(line) {
        Some(ControlRequest::PowerOff) => {
            info!("power-off requested by the host");
            requests.shutdown.store(true, Ordering::SeqCst);
            true
        }
        Some(ControlRequest::ReloadTls) => {
            info!("TLS reload requested by the host");
            requests.reload_tls.store(true, Ordering::SeqCst);
            false
        }
        Some(ControlRequest::TakeIdentity { unix_ms }) => {
            info!("identity requested by the host (its clock: {unix_ms} ms)");
            requests.identity_unix_ms.store(unix_ms, Ordering::SeqCst);
            requests.take_identity.store(true, Ordering::SeqCst);
            false
        }
        Some(ControlRequest::SetClock { unix_ms }) => {
            info!("clock set requested by the host ({unix_ms} ms): resumed");
            requests.clock_unix_ms.store(unix_ms, Ordering::SeqCst);
            requests.set_clock.store(true, Ordering::SeqCst);
            false
        }
        Some(ControlRequest::EngineDown) => {
            info!("engine-down requested by the host: dockerd is killed and kept down");
            requests.engine_down.store(true, Ordering::SeqCst);
            false
        }
        Some(ControlRequest::EngineUp) => {
            info!("engine-up requested by the host");
            requests.engine_up.store(true, Ordering::SeqCst);
            false
        }
        None => {
            if !line.trim().is_empty() {
                info!("ignoring unknown control request ({} bytes)", line.len());
            }
            false
        }
    }
}

/// The longest request line the guest reads; requests are a word, so anything longer is noise
/// (or hostile) and is skipped without ever being held in memory whole.
pub const MAX_REQUEST_LINE: usize = 1024;

/// Calls `f` with each line of `input` (without its newline); a line longer than
/// [`MAX_REQUEST_LINE`] is skipped whole and reported.
pub fn for_each_bounded_line(mut input: impl BufRead, mut f: impl FnMut(&str)) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut input).take(MAX_REQUEST_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            f(&String::from_utf8_lossy(&line[..n - 1]));
            continue;
        }
        if n <= MAX_REQUEST_LINE {
            // The last line, without a newline.
            f(&String::from_utf8_lossy(&line));
            return Ok(());
        }
        info!("ignoring a control request longer than {MAX_REQUEST_LINE} bytes");
        loop {
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    input.consume(i + 1);
                    break;
                }
                None => {
                    let len = buf.len();
                    input.consume(len);
                }
            }
        }
    }
}

/// Reads requests from the control port in a background thread; wakes `supervisor` (the
/// thread of the supervisor loop, idle between its rounds) after each.
pub fn listen(port: String, supervisor: std::thread::Thread) {
    let spawned = std::thread::Builder::new().name("control".into()).spawn(move || loop {
        let file = match std::fs::File::open(&port) {
            Ok(f) => f,
            Err(e) => {
                info!("control port {port}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        let _ = for_each_bounded_line(BufReader::new(file), |line| {
            handle_line(line, &REQUESTS);
            supervisor.unpark();
        });
        // EOF: the host side is not connected (yet); look again shortly.
        std::thread::sleep(Duration::from_secs(1));
    });
    if let Err(e) = spawned {
        info!("cannot start control listener: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn oversized_lines_are_skipped_and_the_next_request_still_works() {
        let long = "x".repeat(MAX_REQUEST_LINE * 50);
        let edge = "y".repeat(MAX_REQUEST_LINE);
        let input = format!("{long}\npoweroff\n{edge}\n\u{fffd}bad\nlast");
        let mut seen = Vec::new();
        for_each_bounded_line(std::io::Cursor::new(input.into_bytes()), |l| seen.push(l.to_string()))
            .unwrap();
        assert_eq!(seen, ["poweroff".to_string(), edge, "\u{fffd}bad".into(), "last".into()]);
        // Invalid UTF-8 is read lossily, not a reason to stop listening.
        let mut seen = Vec::new();
        for_each_bounded_line(&b"\xff\xfe\npoweroff\n"[..], |l| seen.push(l.to_string())).unwrap();
        assert_eq!(seen[1], "poweroff");
    }

    #[test]
    fn control_port_found_by_name_and_poweroff_sets_flag() {
        let sys = FakeSystem::new();
        sys.add_file("/sys/class/virtio-ports/vport1p0/name", "org.qemu.guest_agent.0\n");
        sys.add_file("/sys/class/virtio-ports/vport1p1/name", "org.n2d.control\n");
        assert_eq!(find_control_port(&sys).as_deref(), Some("/dev/vport1p1"));

        let requests = Requests::new();
        assert!(!handle_line("reboot", &requests));
        assert!(!handle_line("reload-tls please", &requests));
        assert!(!requests.shutdown.load(Ordering::SeqCst) && !requests.reload_tls.load(Ordering::SeqCst));
        assert!(!handle_line("reload-tls\r", &requests));
        assert!(requests.reload_tls.load(Ordering::SeqCst) && !requests.shutdown.load(Ordering::SeqCst));
        assert!(handle_line("poweroff\r", &requests));
        assert!(requests.shutdown.load(Ordering::SeqCst));
        assert!(!requests.take_identity.load(Ordering::SeqCst));
    }

    #[test]
    fn identity_stores_the_hosts_clock_and_raises_its_flag_alone() {
        let requests = Requests::new();
        for noise in ["identity", "identity -5", "identity 017", "identity 12x", "identity 1 2"] {
            assert!(!handle_line(noise, &requests));
            assert!(!requests.take_identity.load(Ordering::SeqCst), "{noise:?} raised the flag");
        }
        assert!(!handle_line("identity 1767225600123\r", &requests));
        assert!(requests.take_identity.load(Ordering::SeqCst));
        assert_eq!(requests.identity_unix_ms.load(Ordering::SeqCst), 1_767_225_600_123);
        assert!(!requests.shutdown.load(Ordering::SeqCst) && !requests.reload_tls.load(Ordering::SeqCst));
    }

    #[test]
    fn clock_stores_the_hosts_clock_and_raises_its_flag_alone() {
        let requests = Requests::new();
        assert!(!handle_line("clock 017", &requests));
        assert!(!requests.set_clock.load(Ordering::SeqCst));
        assert!(!handle_line("clock 1767225600999\n", &requests));
        assert!(requests.set_clock.load(Ordering::SeqCst));
        assert_eq!(requests.clock_unix_ms.load(Ordering::SeqCst), 1_767_225_600_999);
        assert!(!requests.take_identity.load(Ordering::SeqCst) && !requests.shutdown.load(Ordering::SeqCst));
    }
}
