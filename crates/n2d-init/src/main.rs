//! n2d-init: PID 1 of an n2d guest. Mounts the root disk, configures the node from the config
//! disk, runs containerd and dockerd, and powers off cleanly when asked.

mod boot;
mod config;
mod console;
mod control;
mod datadisk;
mod dhcp;
mod disks;
mod docker;
mod error;
mod exec;
#[cfg(test)]
mod fuzz_tests;
mod gpt;
mod identity;
mod iproute;
mod log;
mod modules;
mod mounts;
mod net;
mod supervisor;
mod sys;

use crate::log::info;
use crate::sys::linux::RealSystem;
use crate::sys::System;
use std::time::Duration;

fn main() {
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!("n2d-init must run as PID 1 (it mounts and powers off the machine)");
        std::process::exit(2);
    }
    // A PID 1 that exits panics the kernel; power off instead, having said why.
    std::panic::set_hook(Box::new(|panic| {
        info!("FATAL: {panic}");
        RealSystem.power_off();
    }));
    control::install_signal_handlers();
    let sys = RealSystem;
    let booted = boot::stage1(&sys).and_then(|medium| boot::stage2(&sys, &medium));
    match booted {
        Ok(mut supervisor) => {
            match control::find_control_port(&sys) {
                Some(port) => control::listen(port, std::thread::current()),
                None => info!("no control port; power-off only by signal"),
            }
            if let Some(port) = control::find_port(&sys, n2d_proto::EXEC_PORT_NAME) {
                exec::serve(port, std::thread::current());
            }
            supervisor.run(&sys, &control::REQUESTS);
            supervisor.shutdown(&sys, &[datadisk::DOCKER_ROOT]);
        }
        Err(e) => {
            info!("FATAL: {}", error::chain(&e));
            sys.sleep(Duration::from_secs(1));
            sys.sync();
            sys.power_off();
        }
    }
}
