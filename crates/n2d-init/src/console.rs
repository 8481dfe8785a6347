//! The root shell on /dev/hvc0 (virtconsole) that the host attaches a terminal to.

use crate::sys::{base_env, ServiceIo, ServiceSpec, System};

pub const CONSOLE_TTY: &str = "/dev/hvc0";

/// The shell service, or `None` when the VM has no virtconsole.
pub fn shell_service(sys: &dyn System) -> Option<ServiceSpec> {
    if !sys.exists(CONSOLE_TTY) {
        return None;
    }
    let mut env = base_env();
    env.push(("TERM".into(), "linux".into()));
    Some(ServiceSpec {
        name: "console",
        program: "/bin/bash".into(),
        args: vec!["-l".into()],
        env,
        io: ServiceIo::Terminal(CONSOLE_TTY.into()),
    })
}
