//! PID 1's main loop: reaps every child (orphans included), restarts services with backoff,
//! announces Docker readiness, acts on the host's requests (a TLS reload, a clone's identity),
//! and stops everything in order on shutdown.

use crate::console;
use crate::control::Requests;
use crate::docker;
use crate::error::one_line;
use crate::identity::{self, Role};
use crate::log::{self, info};
use crate::modules;
use crate::sys::{Exit, ServiceIo, ServiceSpec, System};
use n2d_proto::{GuestConfig, LATE_MODULE_LIST};
use nix::mount::MntFlags;
use nix::sys::signal::Signal;
use std::sync::atomic::Ordering;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(100);
/// The round's period once everything runs and Docker answers: under emulation every wake-up of
/// an idle guest costs the host CPU, and nothing then needs a tenth of a second (a service that
/// exits waits a second before its restart anyway; `poweroff` may take a second more).
const IDLE_TICK: Duration = Duration::from_secs(1);
const PROBE_EVERY: Duration = Duration::from_millis(200);
const LOG_TAIL_LINES: usize = 15;
/// The late modules (swarm's, [`LATE_MODULE_LIST`]) load this long after Docker first answers,
/// so that the host's first request is not served next to them.
const LATE_MODULES_AFTER: Duration = Duration::from_secs(1);

/// Restart delays 1 s, 2 s, 4 s … capped at 30 s; back to 1 s once a run lasted 60 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    const RESET_AFTER: Duration = Duration::from_secs(60);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// Delay before restarting a service that ran for `ran`.
    pub fn delay_after(&mut self, ran: Duration) -> Duration {
        if ran >= Self::RESET_AFTER {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
pub enum Restart {
    Backoff(Backoff),
    /// Fixed pause, so a shell that cannot start does not spin.
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LateModules {
    Pending,
    DueAt(Duration),
    Loaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting { start_at: Duration },
    Running { pid: i32, since: Duration },
    Stopped,
}

/// Holds back the first start until `path` exists or `deadline` passes.
#[derive(Debug, Clone)]
struct Gate {
    path: String,
    deadline: Duration,
}

#[derive(Debug)]
struct Service {
    spec: ServiceSpec,
    restart: Restart,
    state: State,
    gate: Option<Gate>,
}

pub struct Supervisor {
    services: Vec<Service>,
    docker_ready: bool,
    next_probe: Duration,
    /// Whether the late modules wait for Docker, are due (from when it first answered), or loaded.
    late_modules: LateModules,
    /// How many times the ready marker was printed.
    pub ready_announcements: u32,
    /// Lines printed after the ready marker (how to reach Docker on an exported image).
    pub ready_notes: Vec<String>,
    /// The DHCP client of a NIC that leases its address: renewed from this loop.
    pub dhcp: Option<crate::dhcp::Session>,
    /// Whether this guest is a template waiting for a clone's identity.
    pub role: Role,
}

impl Supervisor {
    /// containerd, then dockerd once containerd's socket exists (≤ 30 s), then the console shells.
    pub fn new(sys: &dyn System, consoles: Vec<ServiceSpec>) -> Self {
        let now = sys.now();
        let waiting = State::Waiting { start_at: now };
        let mut services = vec![
            Service {
                spec: docker::containerd_service(),
                restart: Restart::Backoff(Backoff::new()),
                state: waiting,
                gate: None,
            },
            Service {
                spec: docker::dockerd_service(),
                restart: Restart::Backoff(Backoff::new()),
                state: waiting,
                gate: Some(Gate {
                    path: docker::CONTAINERD_SOCKET.into(),
                    deadline: now + Duration::from_secs(30),
                }),
            },
        ];
        for spec in consoles {
            services.push(Service {
                spec,
                restart: Restart::After(Duration::from_secs(1)),
                state: waiting,
                gate: None,
            });
        }
        Supervisor {
            services,
            docker_ready: false,
            next_probe: now,
            late_modules: LateModules::Pending,
            ready_announcements: 0,
            ready_notes: Vec::new(),
            dhcp: None,
            role: Role::Machine,
        }
    }

    /// Supervises until a shutdown is requested; acts on the other requests as they come (the
    /// control thread cuts the wait between rounds short: a clone's `identity` does not wait for
    /// an idle round's end).
    pub fn run(&mut self, sys: &dyn System, requests: &Requests) {
        while !requests.shutdown.load(Ordering::SeqCst) {
            if requests.take_identity.swap(false, Ordering::SeqCst) {
                self.take_identity(sys, requests.identity_unix_ms.load(Ordering::SeqCst));
            }
            if requests.set_clock.swap(false, Ordering::SeqCst) {
                set_clock(sys, requests.clock_unix_ms.load(Ordering::SeqCst));
            }
            if requests.reload_tls.swap(false, Ordering::SeqCst) {
                self.reload_tls(sys);
            }
            if requests.engine_down.swap(false, Ordering::SeqCst) {
                self.kill_and_hold(sys, "dockerd");
            }
            if requests.engine_up.swap(false, Ordering::SeqCst) {
                self.resume(sys, "dockerd");
            }
            self.tick(sys);
            sys.idle(self.period());
        }
    }

    /// The host's `identity <unix_ms>` to a clone just restored from a template: the steps of
    /// [`crate::identity`] in order, then dockerd restarted with the clone's engine ID, labels
    /// and TLS endpoint; the ready marker follows once it answers. Every outcome is one console
    /// line beginning `identity:`. A guest that is not a template (any more) refuses, and so
    /// does a template whose config disk does not hold a clone's config; both change nothing
    /// (the latter but the clock). A failure after that leaves the clone broken: no ready
    /// marker, and any further `identity` is refused.
    pub fn take_identity(&mut self, sys: &dyn System, unix_ms: u64) {
        let template = match &self.role {
            Role::Template(config) => config.clone(),
            Role::Machine => {
                info!("identity: refused: this guest did not boot as a template; nothing changed");
                return;
            }
            Role::Clone => {
                info!("identity: refused: this guest already took an identity; nothing changed");
                return;
            }
        };
        if let Err(source) = sys.set_wall_clock(Duration::from_millis(unix_ms)) {
            let e = crate::error::Error::SetWallClock { unix_ms, source };
            info!("identity: refused: {}; nothing changed", one_line(&e));
            return;
        }
        let clone = match identity::read_clone_config(sys, &template) {
            Ok(clone) => clone,
            Err(e) => {
                info!("identity: refused: {}; nothing changed but the clock", one_line(&e));
                return;
            }
        };
        self.role = Role::Clone;
        match self.become_clone(sys, &template, &clone) {
            Ok(()) => info!(
                "identity: taken: {}; dockerd restarts with TLS on port {}",
                clone.hostname, clone.docker.tcp_port
            ),
            Err(e) => info!("identity: failed: {}", one_line(&e)),
        }
    }

    /// Steps 3 to 6 of [`crate::identity`]. dockerd stays stopped when its new config cannot be
    /// written: a clone half made must not announce itself ready.
    fn become_clone(
        &mut self,
        sys: &dyn System,
        template: &GuestConfig,
        clone: &GuestConfig,
    ) -> crate::error::Result<()> {
        let network = identity::become_clone(sys, template, clone)?;
        self.dhcp = network.dhcp;
        let stopped = self.halt(sys, "dockerd", Duration::from_secs(20));
        docker::forget_engine_id(sys)?;
        docker::write_config(sys, clone)?;
        if stopped {
            self.resume(sys, "dockerd");
        }
        Ok(())
    }

    /// The host's `reload-tls`: dockerd's TLS files from the config disk it rewrote, then
    /// dockerd restarted (its containers stop with it; swarm tasks are started again). The
    /// ready marker follows once the engine answers, which is what the host waits for. When the
    /// new material cannot be read, nothing changes and the console says why.
    pub fn reload_tls(&mut self, sys: &dyn System) {
        match docker::reload_tls(sys) {
            Ok(()) => {
                info!("tls reload: new server certificate written; restarting dockerd");
                self.restart(sys, "dockerd", Duration::from_secs(20));
            }
            Err(e) => info!("tls reload: {}; nothing changed", crate::error::chain(&e)),
        }
    }

    /// Stops service `name` (SIGTERM, SIGKILL after `grace`) and starts it again at once. Other
    /// children that exit meanwhile are handled as in [`Supervisor::tick`].
    fn restart(&mut self, sys: &dyn System, name: &str, grace: Duration) {
        if self.halt(sys, name, grace) {
            self.resume(sys, name);
        }
    }

    /// Stops service `name` (SIGTERM, SIGKILL after `grace`); it stays stopped until
    /// [`Supervisor::resume`]. False when it is still running: then it is left to the
    /// supervision loop, which restarts it when it exits. Other children that exit meanwhile
    /// are handled as in [`Supervisor::tick`].
    fn halt(&mut self, sys: &dyn System, name: &str, grace: Duration) -> bool {
        let Some(i) = self.services.iter().position(|s| s.spec.name == name) else { return false };
        if let State::Running { pid, .. } = self.services[i].state {
            let _ = sys.kill(pid, Signal::SIGTERM);
            let mut gone = self.reap_until(sys, pid, grace);
            if !gone {
                info!("{name} did not stop within {}s; killing it", grace.as_secs());
                let _ = sys.kill(pid, Signal::SIGKILL);
                gone = self.reap_until(sys, pid, Duration::from_secs(1));
            }
            if !gone {
                return false;
            }
        }
        self.services[i].state = State::Stopped;
        if name == "dockerd" {
            self.docker_ready = false;
        }
        true
    }

    /// The host's `engine-down` (a fault): `name` SIGKILLed, as a crash would end it, and kept
    /// down (a stopped service is not restarted) until [`Self::resume`].
    pub fn kill_and_hold(&mut self, sys: &dyn System, name: &str) {
        let Some(i) = self.services.iter().position(|s| s.spec.name == name) else { return };
        if let State::Running { pid, .. } = self.services[i].state {
            let _ = sys.kill(pid, Signal::SIGKILL);
            self.reap_until(sys, pid, Duration::from_secs(1));
        }
        self.services[i].state = State::Stopped;
        if name == "dockerd" {
            self.docker_ready = false;
        }
    }

    /// Starts service `name` in the next round.
    pub fn resume(&mut self, sys: &dyn System, name: &str) {
        if let Some(service) = self.services.iter_mut().find(|s| s.spec.name == name) {
            service.state = State::Waiting { start_at: sys.now() };
        }
    }

    /// Reaps children for up to `limit` until `pid` exits; any other exit goes to `on_exit`.
    fn reap_until(&mut self, sys: &dyn System, pid: i32, limit: Duration) -> bool {
        let deadline = sys.now() + limit;
        loop {
            while let Some((p, exit)) = sys.reap() {
                if p == pid {
                    return true;
                }
                self.on_exit(sys, p, exit);
            }
            if sys.now() >= deadline {
                return false;
            }
            sys.sleep(TICK);
        }
    }

    /// [`TICK`] while anything is pending (a service waiting to start, Docker not answering yet,
    /// the late modules not loaded), else [`IDLE_TICK`].
    pub fn period(&self) -> Duration {
        let settled = self.docker_ready
            && self.late_modules == LateModules::Loaded
            && self.services.iter().all(|s| matches!(s.state, State::Running { .. }));
        if settled {
            IDLE_TICK
        } else {
            TICK
        }
    }

    /// One round: reap, start what is due, probe dockerd.
    pub fn tick(&mut self, sys: &dyn System) {
        while let Some((pid, exit)) = sys.reap() {
            self.on_exit(sys, pid, exit);
        }
        let now = sys.now();
        for i in 0..self.services.len() {
            if let State::Waiting { start_at } = self.services[i].state {
                if now >= start_at && self.gate_open(sys, i, now) {
                    self.start(sys, i, now);
                }
            }
        }
        self.probe(sys, now);
        self.load_late_modules(sys, now);
        if let Some(session) = &mut self.dhcp {
            session.tick(sys, now);
        }
    }

    fn load_late_modules(&mut self, sys: &dyn System, now: Duration) {
        match self.late_modules {
            LateModules::Pending if self.docker_ready => {
                self.late_modules = LateModules::DueAt(now + LATE_MODULES_AFTER);
            }
            LateModules::DueAt(at) if now >= at => {
                self.late_modules = LateModules::Loaded;
                match modules::load_listed(sys, LATE_MODULE_LIST, &modules::modules_dir(sys), false) {
                    Ok(loaded) => info!("{loaded} late modules loaded"),
                    Err(e) => info!("late modules: {e}"),
                }
            }
            _ => {}
        }
    }

    fn gate_open(&mut self, sys: &dyn System, i: usize, now: Duration) -> bool {
        let service = &mut self.services[i];
        let Some(gate) = &service.gate else { return true };
        if sys.exists(&gate.path) {
            service.gate = None;
            true
        } else if now >= gate.deadline {
            info!("{} did not appear in time; starting {} anyway", gate.path, service.spec.name);
            service.gate = None;
            true
        } else {
            false
        }
    }

    fn start(&mut self, sys: &dyn System, i: usize, now: Duration) {
        let service = &mut self.services[i];
        match sys.spawn(&service.spec) {
            Ok(pid) => {
                // The console shell respawns whenever someone logs out: not worth a line.
                if matches!(service.spec.io, ServiceIo::LogFile(_)) {
                    info!("started {} (pid {pid})", service.spec.name);
                }
                service.state = State::Running { pid, since: now };
                if service.spec.name == "dockerd" {
                    self.docker_ready = false;
                }
            }
            Err(e) => {
                let delay = Self::delay(&mut service.restart, Duration::ZERO);
                info!("cannot start {}: {e}; retrying in {}s", service.spec.name, delay.as_secs_f32());
                service.state = State::Waiting { start_at: now + delay };
            }
        }
    }

    fn delay(restart: &mut Restart, ran: Duration) -> Duration {
        match restart {
            Restart::Backoff(backoff) => backoff.delay_after(ran),
            Restart::After(delay) => *delay,
        }
    }

    fn on_exit(&mut self, sys: &dyn System, pid: i32, exit: Exit) {
        let now = sys.now();
        let Some(service) =
            self.services.iter_mut().find(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
        else {
            // An exec session's command (its waiter takes the status), or an orphan we
            // adopted: reaping it is all there is to do.
            let status = match exit {
                Exit::Code(code) => code,
                Exit::Signal(signal) => 128 + signal,
            };
            crate::exec::EXITS.record(pid, status);
            return;
        };
        let State::Running { since, .. } = service.state else { unreachable!() };
        let delay = Self::delay(&mut service.restart, now.saturating_sub(since));
        service.state = State::Waiting { start_at: now + delay };
        if service.spec.name == "dockerd" {
            self.docker_ready = false;
        }
        if let ServiceIo::LogFile(path) = &service.spec.io {
            info!(
                "{} exited ({exit}); restarting in {}s; last lines of {path}:",
                service.spec.name,
                delay.as_secs()
            );
            for line in log_tail(sys, path, LOG_TAIL_LINES) {
                log::raw(&format!("  | {line}"));
            }
        }
    }

    fn probe(&mut self, sys: &dyn System, now: Duration) {
        let dockerd_running = self
            .services
            .iter()
            .any(|s| s.spec.name == "dockerd" && matches!(s.state, State::Running { .. }));
        if !dockerd_running || self.docker_ready || now < self.next_probe {
            return;
        }
        self.next_probe = now + PROBE_EVERY;
        if docker::engine_answers(sys) {
            self.docker_ready = true;
            self.ready_announcements += 1;
            info!("docker engine answers on {}", docker::DOCKER_SOCKET);
            console::announce(sys, n2d_proto::READY_MARKER);
            for note in &self.ready_notes {
                console::announce(sys, note);
            }
        }
    }

    /// dockerd (≤ 20 s), containerd (≤ 10 s), then every other process; sync, unmount,
    /// power off.
    pub fn shutdown(&mut self, sys: &dyn System, unmount: &[&str]) {
        info!("shutting down");
        self.stop(sys, "dockerd", Duration::from_secs(20));
        self.stop(sys, "containerd", Duration::from_secs(10));
        for service in &mut self.services {
            service.state = State::Stopped;
        }
        let _ = sys.kill(-1, Signal::SIGTERM);
        reap_for(sys, Duration::from_secs(2), |_| false);
        let _ = sys.kill(-1, Signal::SIGKILL);
        reap_for(sys, Duration::from_millis(300), |_| false);
        sys.sync();
        for target in unmount {
            if let Err(e) = sys.umount(target, MntFlags::empty()) {
                info!("unmounting {target}: {e}; detaching it");
                let _ = sys.umount(target, MntFlags::MNT_DETACH);
            }
        }
        sys.sync();
        info!("powering off");
        sys.power_off();
    }

    fn stop(&mut self, sys: &dyn System, name: &str, grace: Duration) {
        let Some(service) = self.services.iter_mut().find(|s| s.spec.name == name) else { return };
        let State::Running { pid, .. } = service.state else { return };
        service.state = State::Stopped;
        let _ = sys.kill(pid, Signal::SIGTERM);
        if !reap_for(sys, grace, |p| p == pid) {
            info!("{name} did not stop within {}s; killing it", grace.as_secs());
            let _ = sys.kill(pid, Signal::SIGKILL);
            reap_for(sys, Duration::from_secs(1), |p| p == pid);
        }
    }
}

/// Reaps children for up to `limit`; returns early (true) once `done(pid)` holds for one.
fn reap_for(sys: &dyn System, limit: Duration, done: impl Fn(i32) -> bool) -> bool {
    let deadline = sys.now() + limit;
    loop {
        while let Some((pid, _)) = sys.reap() {
            if done(pid) {
                return true;
            }
        }
        if sys.now() >= deadline {
            return false;
        }
        sys.sleep(TICK);
    }
}

fn log_tail(sys: &dyn System, path: &str, lines: usize) -> Vec<String> {
    let text = sys.read_file(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| l.to_string()).collect()
}

/// The host's `clock <unix_ms>` to a machine resumed from its saved state: the wall clock
/// stood still while it was saved. One console line either way.
pub fn set_clock(sys: &dyn System, unix_ms: u64) {
    match sys.set_wall_clock(Duration::from_millis(unix_ms)) {
        Ok(()) => info!("clock: set to {unix_ms} ms after the epoch"),
        Err(e) => info!("clock: cannot set it to {unix_ms} ms after the epoch: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn shell() -> ServiceSpec {
        ServiceSpec {
            name: "console",
            program: "/bin/bash".into(),
            args: vec![],
            env: vec![],
            io: ServiceIo::Terminal("/dev/hvc0".into()),
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_long_run() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.delay_after(secs(2)).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay_after(secs(59)), secs(30));
        assert_eq!(b.delay_after(secs(60)), secs(1));
        assert_eq!(b.delay_after(secs(1)), secs(2));
    }

    #[test]
    fn dockerd_waits_for_containerd_socket() {
        let sys = FakeSystem::new();
        let mut sup = Supervisor::new(&sys, vec![shell()]);
        sup.tick(&sys);
        assert_eq!(sys.calls(), ["spawn containerd", "spawn console"]);
        sys.sleep(secs(1));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_none());
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_some());
    }

    #[test]
    fn dockerd_starts_anyway_after_30s_without_containerd_socket() {
        let sys = FakeSystem::new();
        let mut sup = Supervisor::new(&sys, vec![]);
        sup.tick(&sys);
        sys.sleep(secs(29));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_none());
        sys.sleep(secs(1));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_some());
    }

    #[test]
    fn crashed_daemon_restarts_after_backoff_and_orphans_are_reaped() {
        let sys = FakeSystem::new();
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        sys.add_file(docker::DOCKERD_LOG, "a\nb\nfailed to start daemon\n");
        let mut sup = Supervisor::new(&sys, vec![]);
        sup.tick(&sys);
        // An adopted orphan exits: reaped, nothing restarted.
        sys.state.borrow_mut().exits.push_back((4242, Exit::Code(0)));
        sys.exit("dockerd", Exit::Code(1));
        sup.tick(&sys);
        assert!(sys.state.borrow().exits.is_empty());
        assert!(sys.pid_of("dockerd").is_none());
        sys.sleep(Duration::from_millis(900));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_none(), "restarted before the 1 s backoff");
        sys.sleep(Duration::from_millis(100));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_some());
        // Second quick crash: 2 s.
        sys.exit("dockerd", Exit::Signal(9));
        sup.tick(&sys);
        sys.sleep(Duration::from_millis(1500));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_none());
        sys.sleep(Duration::from_millis(500));
        sup.tick(&sys);
        assert!(sys.pid_of("dockerd").is_some());
        assert_eq!(sys.calls().iter().filter(|c| *c == "spawn dockerd").count(), 3);
    }

    #[test]
    fn ready_marker_announced_once_per_dockerd_life() {
        let sys = FakeSystem::new();
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        let mut sup = Supervisor::new(&sys, vec![]);
        sup.tick(&sys);
        sys.state.borrow_mut().docker_response = Some(b"HTTP/1.1 200 OK\r\n\r\nOK".to_vec());
        for _ in 0..5 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 1);
        sys.exit("dockerd", Exit::Code(2));
        for _ in 0..20 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 2);
    }

    #[test]
    fn late_modules_load_once_a_moment_after_docker_first_answers() {
        let sys = FakeSystem::new();
        sys.add_file("/proc/sys/kernel/osrelease", "6.12.0\n");
        sys.add_file(LATE_MODULE_LIST, "ip_vs\n");
        sys.add_file("/usr/lib/modules/6.12.0/modules.dep", "kernel/net/ip_vs.ko:\n");
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        let mut sup = Supervisor::new(&sys, vec![]);
        let loads = |sys: &FakeSystem| sys.calls().iter().filter(|c| c.starts_with("load ")).count();
        for _ in 0..5 {
            sup.tick(&sys);
            sys.sleep(TICK);
        }
        assert_eq!(loads(&sys), 0, "loaded before Docker answered");
        sys.state.borrow_mut().docker_response = Some(b"HTTP/1.1 200 OK\r\n\r\nOK".to_vec());
        for _ in 0..3 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 1);
        assert_eq!(loads(&sys), 0, "loaded next to the host's first request");
        assert_eq!(sup.period(), TICK, "idle while the late modules are due");
        for _ in 0..12 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(loads(&sys), 1);
        assert_eq!(sup.period(), IDLE_TICK, "everything runs: the rounds slow down");
        // A dockerd restart announces readiness again, but loads nothing twice.
        sys.exit("dockerd", Exit::Code(2));
        for _ in 0..40 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 2);
        assert_eq!(loads(&sys), 1);
        sys.exit("dockerd", Exit::Code(2));
        sup.tick(&sys);
        assert_eq!(sup.period(), TICK, "a service waits for its restart: quick rounds again");
    }

    fn tls_config(cert: &str) -> n2d_proto::GuestConfig {
        let mut config = crate::config::tests::sample_config();
        config.docker.tls = Some(n2d_proto::TlsMaterial {
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            cert_pem: format!("-----BEGIN CERTIFICATE-----\n{cert}\n-----END CERTIFICATE-----\n"),
            key_pem: format!("-----BEGIN PRIVATE KEY-----\nKEY-{cert}\n-----END PRIVATE KEY-----\n"),
        });
        config
    }

    /// A machine whose dockerd runs and answers, booted with certificate `OLD`.
    fn running_guest() -> (FakeSystem, Supervisor) {
        let sys = FakeSystem::new();
        sys.add_disk("vdb", "n2d-config\n", n2d_proto::encode_config_disk(&tls_config("OLD")).unwrap());
        docker::write_config(&sys, &tls_config("OLD")).unwrap();
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        sys.state.borrow_mut().docker_response = Some(b"HTTP/1.1 200 OK\r\n\r\nOK".to_vec());
        let mut sup = Supervisor::new(&sys, vec![]);
        for _ in 0..3 {
            sup.tick(&sys);
            sys.sleep(TICK);
        }
        assert_eq!(sup.ready_announcements, 1);
        (sys, sup)
    }

    const CERT: &str = "/etc/docker/tls/server-cert.pem";
    const KEY: &str = "/etc/docker/tls/server-key.pem";

    #[test]
    fn engine_down_kills_dockerd_and_keeps_it_down_until_engine_up() {
        let (sys, mut sup) = running_guest();
        let old = sys.pid_of("dockerd").unwrap();
        sup.kill_and_hold(&sys, "dockerd");
        assert!(sys.calls().iter().any(|c| c == "kill dockerd SIGKILL"), "{:?}", sys.calls());
        for _ in 0..50 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sys.pid_of("dockerd"), None, "restarted while held down");
        sup.resume(&sys, "dockerd");
        sup.tick(&sys);
        let new = sys.pid_of("dockerd").expect("dockerd started again");
        assert_ne!(new, old);
    }

    #[test]
    fn reload_tls_rereads_the_config_disk_past_the_cache_and_restarts_dockerd() {
        let (sys, mut sup) = running_guest();
        let old_dockerd = sys.pid_of("dockerd").unwrap();
        let containerd = sys.pid_of("containerd").unwrap();
        // The host rewrote the config disk in place with a new certificate.
        sys.add_disk("vdb", "n2d-config\n", n2d_proto::encode_config_disk(&tls_config("NEW")).unwrap());
        let before = sys.calls().len();
        sup.reload_tls(&sys);
        assert_eq!(
            sys.calls()[before..],
            [
                "read uncached /dev/vdb",
                "write /etc/docker/tls/ca.pem",
                "write /etc/docker/tls/server-cert.pem",
                "write /etc/docker/tls/server-key.pem",
                "kill dockerd SIGTERM",
            ]
        );
        assert!(sys.file_text(CERT).contains("NEW"));
        assert_eq!(sys.file(KEY).unwrap().1, 0o600);
        // dockerd starts again at once, not after a crash's backoff, and is announced again.
        sup.tick(&sys);
        let new_dockerd = sys.pid_of("dockerd").expect("dockerd started again");
        assert_ne!(new_dockerd, old_dockerd);
        assert_eq!(sys.pid_of("containerd"), Some(containerd), "containerd is left alone");
        for _ in 0..3 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 2, "the host waits for this marker");
    }

    #[test]
    fn reload_tls_kills_a_dockerd_that_does_not_stop_and_handles_other_exits_meanwhile() {
        let (sys, mut sup) = running_guest();
        sys.add_disk("vdb", "n2d-config\n", n2d_proto::encode_config_disk(&tls_config("NEW")).unwrap());
        sys.state.borrow_mut().stubborn.insert("dockerd".into());
        sys.exit("containerd", Exit::Code(1));
        let t0 = sys.now();
        sup.reload_tls(&sys);
        assert!(sys.now() - t0 >= secs(20), "dockerd had its grace period");
        assert!(sys.calls().contains(&"kill dockerd SIGKILL".to_string()));
        // containerd's exit during the wait was not lost: it is restarted after its backoff.
        sys.sleep(secs(1));
        sup.tick(&sys);
        assert!(sys.pid_of("containerd").is_some(), "containerd's exit was lost");
        assert!(sys.pid_of("dockerd").is_some());
    }

    #[test]
    fn a_config_disk_without_good_tls_material_changes_nothing() {
        let mut no_tls = tls_config("NEW");
        no_tls.docker.tls = None;
        let mut bad_key = tls_config("NEW");
        bad_key.docker.tls.as_mut().unwrap().key_pem = "not a key".into();
        let mut bad_cert = tls_config("NEW");
        bad_cert.docker.tls.as_mut().unwrap().cert_pem = String::new();
        let mut bad_ca = tls_config("NEW");
        bad_ca.docker.tls.as_mut().unwrap().ca_pem = "-----BEGIN PRIVATE KEY-----".into();
        let disks: Vec<Option<Vec<u8>>> = vec![
            Some(n2d_proto::encode_config_disk(&no_tls).unwrap()),
            Some(n2d_proto::encode_config_disk(&bad_key).unwrap()),
            Some(n2d_proto::encode_config_disk(&bad_cert).unwrap()),
            Some(n2d_proto::encode_config_disk(&bad_ca).unwrap()),
            Some(vec![0u8; 4096]),
            Some(b"N2DCONF1\xff\xff\xff\xff".to_vec()),
            None,
        ];
        for (i, disk) in disks.into_iter().enumerate() {
            let (sys, mut sup) = running_guest();
            match disk {
                Some(bytes) => sys.add_disk("vdb", "n2d-config\n", bytes),
                None => {
                    sys.state.borrow_mut().files.remove("/sys/block/vdb/serial");
                }
            }
            let dockerd = sys.pid_of("dockerd");
            let before = sys.calls().len();
            sup.reload_tls(&sys);
            let after = sys.calls()[before..].to_vec();
            assert!(
                after.iter().all(|c| !c.starts_with("write") && !c.starts_with("kill")),
                "case {i}: {after:?}"
            );
            assert!(sys.file_text(CERT).contains("OLD"), "case {i}");
            sup.tick(&sys);
            assert_eq!(sys.pid_of("dockerd"), dockerd, "case {i}: dockerd was restarted");
        }
    }

    const TEMPLATE_NIC: &str = "52:54:00:00:00:01";
    const TEMPLATE_UPLINK: &str = "52:54:00:00:00:02";
    const CLONE_UPLINK: &str = "52:54:00:12:34:57";
    const HOST_MS: u64 = 1_767_225_600_123;

    /// A template's config as the guest keeps it: no TLS, no TCP port, its own MACs.
    fn template_config() -> GuestConfig {
        let mut config = tls_config("TEMPLATE");
        config.template = true;
        config.hostname = "template".into();
        config.docker = n2d_proto::DockerConfig { tls: None, tcp_port: 0 };
        config.labels.clear();
        config.network.mac = TEMPLATE_NIC.into();
        config.uplink = Some(n2d_proto::GuestUplink { mac: TEMPLATE_UPLINK.into() });
        config
    }

    /// node-1 (sample_config's MAC, address and labels), certificate `CLONE`, a seed, an uplink.
    fn clone_config() -> GuestConfig {
        let mut config = tls_config("CLONE");
        config.seed = Some(n2d_proto::Seed([9; 32]));
        config.uplink = Some(n2d_proto::GuestUplink { mac: CLONE_UPLINK.into() });
        config
    }

    /// A clone just restored from its template: NICs down with the template's MACs, dockerd
    /// answering on its local socket, the config disk already the clone's (`disk`).
    fn restored_clone(disk: Vec<u8>) -> (FakeSystem, Supervisor) {
        let sys = FakeSystem::new();
        sys.add_file("/sys/class/net/lo/address", "00:00:00:00:00:00\n");
        sys.add_file("/sys/class/net/eth0/address", format!("{TEMPLATE_NIC}\n"));
        sys.add_file("/sys/class/net/eth1/address", format!("{TEMPLATE_UPLINK}\n"));
        docker::write_config(&sys, &template_config()).unwrap();
        sys.add_file(docker::ENGINE_ID, "TEMPLATE-ENGINE\n");
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        sys.state.borrow_mut().docker_response = Some(b"HTTP/1.1 200 OK\r\n\r\nOK".to_vec());
        let mut sup = Supervisor::new(&sys, vec![]);
        sup.role = Role::Template(Box::new(template_config()));
        for _ in 0..3 {
            sup.tick(&sys);
            sys.sleep(TICK);
        }
        assert_eq!(sup.ready_announcements, 1);
        sys.add_disk("vdb", "n2d-config\n", disk);
        (sys, sup)
    }

    fn encoded(config: &GuestConfig) -> Vec<u8> {
        n2d_proto::encode_config_disk(config).unwrap()
    }

    #[test]
    fn identity_sets_the_clock_reads_checks_reseeds_renames_renumbers_and_restarts_dockerd_in_order() {
        let (sys, mut sup) = restored_clone(encoded(&clone_config()));
        let template_dockerd = sys.pid_of("dockerd").unwrap();
        let before = sys.calls().len();
        sup.take_identity(&sys, HOST_MS);
        let calls = sys.calls()[before..].to_vec();
        let (guard, rest): (Vec<String>, Vec<String>) =
            calls.iter().cloned().partition(|c| c.starts_with("run iptables"));
        assert_eq!(
            rest,
            [
                // a. the clock, b. the clone's config past the cache, c. its seed
                "set wall clock 1767225600123 ms",
                "read uncached /dev/vdb",
                "mix-entropy 32 bytes",
                // d. names, then each NIC found by the template's MAC and given the clone's
                "sethostname node-1",
                "write /etc/hostname",
                "write /etc/hosts",
                "write /etc/resolv.conf",
                "run ip link set dev eth0 down",
                "run ip link set dev eth0 address 52:54:00:12:34:56",
                "run ip link set dev eth1 down",
                "run ip link set dev eth1 address 52:54:00:12:34:57",
                "run ip link set lo up",
                "run ip link set eth0 up",
                "run ip addr add 10.77.0.2/24 dev eth0",
                "run ip link set eth1 up",
                "run ip addr add 100.64.77.15/24 dev eth1",
                "run ip route add default via 100.64.77.2",
                // e. machine-id
                "write /etc/machine-id",
                // f. dockerd stopped, a new engine ID, the clone's TLS files and daemon.json
                "kill dockerd SIGTERM",
                "remove /var/lib/docker/engine-id",
                "write /etc/containerd/config.toml",
                "write /etc/docker/tls/ca.pem",
                "write /etc/docker/tls/server-cert.pem",
                "write /etc/docker/tls/server-key.pem",
                "write /etc/docker/daemon.json",
            ]
        );
        // The uplink's guard is in place before the uplink is up, as at boot.
        assert_eq!(guard.len(), 8);
        let at = |needle: &str| calls.iter().position(|c| c == needle).unwrap();
        assert!(at("run ip addr add 10.77.0.2/24 dev eth0") < at(&guard[0]));
        assert!(at(&guard[7]) < at("run ip link set eth1 up"));

        assert_eq!(sys.file_text("/sys/class/net/eth0/address"), "52:54:00:12:34:56\n");
        assert_eq!(sys.file_text("/etc/hostname"), "node-1\n");
        assert!(sys.file_text("/etc/hosts").contains("10.77.0.2\tnode-1\n"));
        assert_eq!(sys.file_text("/etc/resolv.conf"), "nameserver 10.77.0.1\nnameserver 1.1.1.1\n");
        assert_eq!(sys.file_text(identity::MACHINE_ID), "000102030405460788090a0b0c0d0e0f\n");
        assert!(sys.file(docker::ENGINE_ID).is_none(), "the template's engine ID survived");
        let daemon: serde_json::Value = serde_json::from_str(&sys.file_text(docker::DAEMON_JSON)).unwrap();
        assert_eq!(daemon["hosts"], serde_json::json!(["unix:///run/docker.sock", "tcp://0.0.0.0:2376"]));
        assert_eq!(daemon["tlsverify"], serde_json::json!(true));
        assert_eq!(daemon["labels"], serde_json::json!(["role=worker", "zone=a"]));
        assert!(sys.file_text(CERT).contains("CLONE"));
        assert_eq!(sys.file(KEY).unwrap().1, 0o600);
        assert_eq!(sup.role, Role::Clone);

        // dockerd starts again at once, and the host gets its marker again once it answers.
        sup.tick(&sys);
        let clone_dockerd = sys.pid_of("dockerd").expect("dockerd started again");
        assert_ne!(clone_dockerd, template_dockerd);
        for _ in 0..3 {
            sys.sleep(TICK);
            sup.tick(&sys);
        }
        assert_eq!(sup.ready_announcements, 2);
    }

    #[test]
    fn a_config_disk_that_is_not_a_clones_changes_nothing_but_the_clock() {
        let mut template = clone_config();
        template.template = true;
        let mut no_tls = clone_config();
        no_tls.docker.tls = None;
        let mut bad_key = clone_config();
        bad_key.docker.tls.as_mut().unwrap().key_pem = "not a key".into();
        let mut no_port = clone_config();
        no_port.docker.tcp_port = 0;
        let mut no_seed = clone_config();
        no_seed.seed = None;
        let mut no_mac = clone_config();
        no_mac.network.mac = String::new();
        let mut no_uplink = clone_config();
        no_uplink.uplink = None;
        // Each config disk, and what the refusal says.
        let cases = [
            (encoded(&template), "/dev/vdb is a template's, not a clone's"),
            (encoded(&no_tls), "/dev/vdb holds no TLS material"),
            (encoded(&bad_key), "/dev/vdb holds no PEM private key"),
            (encoded(&no_port), "/dev/vdb opens no TCP port for Docker"),
            (encoded(&no_seed), "/dev/vdb carries no seed"),
            (encoded(&no_mac), "/dev/vdb names no MAC"),
            (encoded(&no_uplink), "/dev/vdb names no uplink NIC; the template has one"),
            (vec![0u8; 4096], "decoding the config disk /dev/vdb"),
            (b"N2DCONF1\xff\xff\xff\xff".to_vec(), "decoding the config disk /dev/vdb"),
        ];
        for (i, (disk, expected)) in cases.into_iter().enumerate() {
            let (sys, mut sup) = restored_clone(disk);
            let err = identity::read_clone_config(&sys, &template_config()).unwrap_err();
            assert!(err.to_string().contains(expected), "case {i}: {err}");
            let dockerd = sys.pid_of("dockerd");
            let before = sys.calls().len();
            sup.take_identity(&sys, HOST_MS);
            assert_eq!(
                sys.calls()[before..],
                ["set wall clock 1767225600123 ms", "read uncached /dev/vdb"],
                "case {i}"
            );
            assert_eq!(sup.role, Role::Template(Box::new(template_config())), "case {i}");
            assert_eq!(sys.file_text("/sys/class/net/eth0/address"), format!("{TEMPLATE_NIC}\n"));
            sup.tick(&sys);
            assert_eq!(sys.pid_of("dockerd"), dockerd, "case {i}: dockerd was restarted");

            // Still a template: the host may put the clone's config on the disk and ask again.
            if i == 0 {
                sys.add_disk("vdb", "n2d-config\n", encoded(&clone_config()));
                sup.take_identity(&sys, HOST_MS);
                assert_eq!(sup.role, Role::Clone);
                assert!(sys.calls().contains(&"remove /var/lib/docker/engine-id".to_string()));
            }
        }

        // An uplink the template does not have: its clone cannot have one either.
        let (sys, _) = restored_clone(encoded(&clone_config()));
        let mut template = template_config();
        template.uplink = None;
        let err = identity::read_clone_config(&sys, &template).unwrap_err();
        assert!(matches!(err, crate::error::Error::UnexpectedUplink { .. }), "{err}");
        assert!(err.to_string().contains("names an uplink NIC; the template has none"));
    }

    #[test]
    fn identity_is_taken_once_and_only_by_a_template() {
        let (sys, mut sup) = restored_clone(encoded(&clone_config()));
        sup.take_identity(&sys, HOST_MS);
        sup.tick(&sys);
        let dockerd = sys.pid_of("dockerd");
        let before = sys.calls().len();
        sup.take_identity(&sys, HOST_MS + 1);
        assert_eq!(sys.calls()[before..], [] as [&str; 0], "a second identity changed something");
        sup.tick(&sys);
        assert_eq!(sys.pid_of("dockerd"), dockerd);

        // A machine booted with its own config: not even the clock is touched.
        let (sys, mut sup) = running_guest();
        sys.add_disk("vdb", "n2d-config\n", encoded(&clone_config()));
        let before = sys.calls().len();
        sup.take_identity(&sys, HOST_MS);
        assert_eq!(sys.calls()[before..], [] as [&str; 0]);
        assert_eq!(sup.role, Role::Machine);
    }

    #[test]
    fn a_clone_whose_nic_is_missing_fails_before_touching_dockerd_and_takes_no_second_identity() {
        let (sys, mut sup) = restored_clone(encoded(&clone_config()));
        sys.state.borrow_mut().files.remove("/sys/class/net/eth1/address");
        let dockerd = sys.pid_of("dockerd");
        let before = sys.calls().len();
        sup.take_identity(&sys, HOST_MS);
        let calls = sys.calls()[before..].to_vec();
        assert!(calls.contains(&"mix-entropy 32 bytes".to_string()));
        assert!(!calls.iter().any(|c| c.starts_with("run ip link set dev")), "{calls:?}");
        assert!(!calls.iter().any(|c| c.starts_with("kill") || c.contains("daemon.json")), "{calls:?}");
        assert_eq!(sup.role, Role::Clone);
        sup.tick(&sys);
        assert_eq!(sys.pid_of("dockerd"), dockerd);
        assert_eq!(sup.ready_announcements, 1, "a broken clone announced itself ready");
        let before = sys.calls().len();
        sup.take_identity(&sys, HOST_MS);
        assert_eq!(sys.calls().len(), before);
    }

    #[test]
    fn shutdown_stops_dockerd_then_containerd_then_everything_and_powers_off() {
        let sys = FakeSystem::new();
        sys.add_file(docker::CONTAINERD_SOCKET, "");
        let mut sup = Supervisor::new(&sys, vec![shell()]);
        sup.tick(&sys);
        sys.state.borrow_mut().stubborn.insert("dockerd".into());
        let before = sys.calls().len();
        let t0 = sys.now();
        sup.shutdown(&sys, &["/var/lib/docker"]);
        assert_eq!(
            sys.calls()[before..],
            [
                "kill dockerd SIGTERM",
                "kill dockerd SIGKILL",
                "kill containerd SIGTERM",
                "kill all SIGTERM",
                "kill all SIGKILL",
                "sync",
                "umount /var/lib/docker",
                "sync",
                "power_off",
            ]
        );
        // dockerd got its full 20 s grace period before SIGKILL.
        assert!(sys.now() - t0 >= secs(22));
    }

    #[test]
    fn a_resumed_machine_sets_its_wall_clock_and_nothing_else() {
        let (sys, _sup) = running_guest();
        let before = sys.calls().len();
        set_clock(&sys, 1_767_225_600_999);
        assert_eq!(sys.calls()[before..], ["set wall clock 1767225600999 ms"]);
    }
}
