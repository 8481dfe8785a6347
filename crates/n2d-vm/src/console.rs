//! `n2d console`: the user's terminal attached to the guest's root shell on /dev/hvc0.

use crate::argv::CONSOLE_SOCKET;
use crate::{VmError, VmHandle};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// Ctrl-] detaches, as in telnet and virsh.
pub const DETACH_BYTE: u8 = 0x1d;

/// Bridges stdin to the guest console and the console to `out` until the user detaches or the
/// VM goes away. On a terminal, "Connected to ..." and the newline after a detach go to
/// `notes` (the CLI passes stdout and stderr).
pub fn attach(vm: &VmHandle, out: &mut dyn Write, notes: &mut dyn Write) -> Result<(), VmError> {
    let sock_err = |source| VmError::Socket { name: vm.name.clone(), what: "console", source };
    let stream = UnixStream::connect(vm.dir.join(CONSOLE_SOCKET)).map_err(sock_err)?;
    let mut to_guest = stream.try_clone().map_err(sock_err)?;
    let stdin = std::io::stdin();
    // Raw mode only when stdin is a terminal; piped input (scripts, tests) passes through as is.
    let saved = tcgetattr(&stdin).ok();
    if let Some(orig) = &saved {
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        let _ = write!(notes, "Connected to {} (Ctrl-] to detach)\r\n", vm.name);
    }
    let _ = to_guest.write_all(b"\n");
    let interactive = saved.is_some();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut input = std::io::stdin();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if interactive && buf[..n].contains(&DETACH_BYTE) {
                        break;
                    }
                    if to_guest.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        // End of input: stop reading from the guest too.
        let _ = to_guest.shutdown(std::net::Shutdown::Both);
    });
    let mut from_guest = stream;
    let mut buf = [0u8; 4096];
    while let Ok(n) = from_guest.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    if let Some(orig) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &orig);
        let _ = writeln!(notes);
    }
    Ok(())
}
