//! `ip` (iproute2): how the NIC setup ([`crate::net`]) and the DHCP client ([`crate::dhcp`])
//! both set links, addresses and routes. A module of its own so that neither needs the other
//! for it.

use crate::error::{Error, Result};
use crate::sys::System;

pub fn ip(sys: &dyn System, args: &[&str]) -> Result<()> {
    let command = format!("ip {}", args.join(" "));
    match sys.run("ip", args) {
        Ok(exit) if exit.success() => Ok(()),
        Ok(exit) => Err(Error::CommandFailed { command, exit }),
        Err(source) => Err(Error::RunCommand { command, source }),
    }
}
