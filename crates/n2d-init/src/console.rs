//! The consoles: the root shell on /dev/hvc0 (virtconsole) that n2d attaches a terminal to, the
//! shells of an export made for no machine, and lines a person must see on the VM's screen.

use crate::log;
use crate::sys::{base_env, ServiceIo, ServiceSpec, System};

pub const CONSOLE_TTY: &str = "/dev/hvc0";
/// The VM's screen (the first virtual terminal), where the kernel's `console=tty0` writes.
pub const SCREEN: &str = "/dev/tty0";

fn shell(name: &'static str, tty: &str) -> ServiceSpec {
    let mut env = base_env();
    env.push(("TERM".into(), "linux".into()));
    ServiceSpec {
        name,
        program: "/bin/bash".into(),
        args: vec!["-l".into()],
        env,
        io: ServiceIo::Terminal(tty.into()),
    }
}

/// The shell service, or `None` when the VM has no virtconsole.
pub fn shell_service(sys: &dyn System) -> Option<ServiceSpec> {
    sys.exists(CONSOLE_TTY).then(|| shell("console", CONSOLE_TTY))
}

/// The shells of an export made for no machine, whose Docker answers only on the local socket:
/// on the virtconsole if any, else on the screen (tty1) and the first serial port, which are
/// that machine's local consoles.
pub fn local_shells(sys: &dyn System) -> Vec<ServiceSpec> {
    if let Some(console) = shell_service(sys) {
        return vec![console];
    }
    [("console-tty1", "/dev/tty1"), ("console-ttyS0", "/dev/ttyS0")]
        .into_iter()
        .filter(|(_, tty)| sys.exists(tty))
        .map(|(name, tty)| shell(name, tty))
        .collect()
}

/// The `console=` devices of the kernel command line, in order.
pub fn kernel_consoles(cmdline: &str) -> Vec<&str> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("console="))
        .map(|c| c.split(',').next().unwrap_or(c))
        .collect()
}

/// PID 1's console is the last `console=`; when tty0 is named before it, the screen gets the
/// announcements too (a Hyper-V user looks at the VM's screen, not its serial port).
pub fn mirror_to_screen(cmdline: &str) -> bool {
    let consoles = kernel_consoles(cmdline);
    consoles.last().is_some_and(|last| *last != "tty0") && consoles.contains(&"tty0")
}

/// Prints `line` whole on the console (like the ready marker) and, where it is not the console,
/// on the screen.
pub fn announce(sys: &dyn System, line: &str) {
    log::raw(line);
    let cmdline = sys.read_file("/proc/cmdline").unwrap_or_default();
    if mirror_to_screen(&String::from_utf8_lossy(&cmdline)) {
        let _ = sys.write_tty(SCREEN, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn announcements_reach_the_screen_only_when_it_is_a_console_besides_the_serial_port() {
        let export = "console=tty0 console=ttyS0,115200 panic=10 loglevel=4 no_timer_check";
        assert_eq!(kernel_consoles(export), ["tty0", "ttyS0"]);
        assert!(mirror_to_screen(export));
        assert!(!mirror_to_screen("console=ttyS0 panic=-1 loglevel=4 no_timer_check"));
        assert!(!mirror_to_screen("console=ttyS0 console=tty0"));
        assert!(!mirror_to_screen(""));

        let sys = FakeSystem::new();
        sys.add_file("/proc/cmdline", export);
        sys.add_file(SCREEN, "");
        announce(&sys, "N2D-ADDRESS 10.0.0.5");
        assert_eq!(sys.calls(), ["tty /dev/tty0 N2D-ADDRESS 10.0.0.5"]);
    }

    #[test]
    fn local_shells_prefer_the_virtconsole_else_screen_and_serial() {
        let sys = FakeSystem::new();
        assert!(local_shells(&sys).is_empty());
        sys.add_file("/dev/tty1", "");
        sys.add_file("/dev/ttyS0", "");
        let names: Vec<_> = local_shells(&sys).iter().map(|s| s.name).collect();
        assert_eq!(names, ["console-tty1", "console-ttyS0"]);
        sys.add_file(CONSOLE_TTY, "");
        let names: Vec<_> = local_shells(&sys).iter().map(|s| s.name).collect();
        assert_eq!(names, ["console"]);
    }
}
