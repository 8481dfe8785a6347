//! Standard output and standard error without panics.
//!
//! `println!` panics when stdout is a closed pipe (`n2d ls | true`: Rust ignores SIGPIPE, so the
//! write fails with EPIPE) or a full disk (`n2d ls > /dev/full`). Every write of data goes through
//! [`outln!`]/[`out!`] instead, which return a [`StdoutError`] that commands propagate with `?`;
//! `main_with_args` maps it to the exit status ([`exit_status`]): a broken pipe ends n2d quietly
//! with 141 (what a shell reports for a process killed by SIGPIPE), any other error prints one
//! line and exits 1. Messages on stderr go through [`errln!`], which drops what cannot be written.
//!
//! SIGPIPE itself stays ignored, as Rust sets it: dying by the signal would skip the unwinding
//! that releases locks and rolls back, and the sockets to Docker engines must see EPIPE as an
//! error, not kill n2d.

use std::fmt;
use std::io::{self, Write};

/// The exit status of a command whose output went to a closed pipe, as a shell reports a
/// process killed by SIGPIPE (128 + 13).
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// A write to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct StdoutError(#[source] pub io::Error);

/// Writes `args` to stdout (what [`out!`] expands to).
pub fn write_fmt(args: fmt::Arguments) -> Result<(), StdoutError> {
    io::stdout().lock().write_fmt(args).map_err(StdoutError)
}

/// Writes `bytes` to stdout.
pub fn write_bytes(bytes: &[u8]) -> Result<(), StdoutError> {
    io::stdout().lock().write_all(bytes).map_err(StdoutError)
}

/// Flushes stdout (line-buffered): what is still buffered when a command ends must fail it too,
/// not be dropped silently at exit.
pub fn flush() -> Result<(), StdoutError> {
    io::stdout().lock().flush().map_err(StdoutError)
}

/// A `Write` to stdout for code that streams (`logs`): its errors are `io::Error`s that carry a
/// [`StdoutError`], so that `?` into anyhow still maps to the right exit status.
pub struct Stdout;

pub fn stdout() -> Stdout {
    Stdout
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf).map_err(wrap)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(buf).map_err(wrap)
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush().map_err(wrap)
    }
}

fn wrap(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), StdoutError(e))
}

/// Writes a line to stderr; a failure (stderr a closed pipe or a full disk) is dropped: there is
/// nowhere left to report it.
pub fn err_line(args: fmt::Arguments) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// The stdout failure in `err`'s chain, if any: a [`StdoutError`] itself, or an `io::Error` from
/// [`Stdout`] that carries one.
pub fn stdout_error(err: &anyhow::Error) -> Option<&io::Error> {
    err.chain().find_map(|c| {
        c.downcast_ref::<StdoutError>().map(|e| &e.0).or_else(|| {
            c.downcast_ref::<io::Error>()
                .or_else(|| c.downcast_ref::<n2d_orchestrate::Error>().and_then(n2d_orchestrate::Error::io))
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<StdoutError>())
                .map(|e| &e.0)
        })
    })
}

/// The exit status for a failed write to stdout, saying why on stderr unless the reader went away.
pub fn exit_status(e: &io::Error) -> i32 {
    if e.kind() == io::ErrorKind::BrokenPipe {
        BROKEN_PIPE_STATUS
    } else {
        err_line(format_args!("n2d: cannot write to standard output: {e}"));
        1
    }
}

/// `print!` that returns `Result<(), StdoutError>` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` that returns `Result<(), StdoutError>` instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::write_bytes(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: what cannot be written to stderr is dropped.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::err_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_errors_are_found_in_the_chain_however_they_were_wrapped() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        let direct = anyhow::Error::new(StdoutError(pipe())).context("cannot list machines");
        assert_eq!(stdout_error(&direct).map(io::Error::kind), Some(io::ErrorKind::BrokenPipe));
        let streamed = anyhow::Error::new(wrap(pipe()));
        assert_eq!(stdout_error(&streamed).map(io::Error::kind), Some(io::ErrorKind::BrokenPipe));
        // EPIPE from a socket (a Docker engine gone) is an ordinary error, not stdout's.
        assert!(stdout_error(&anyhow::Error::new(pipe())).is_none());
        assert_eq!(exit_status(&pipe()), BROKEN_PIPE_STATUS);
        assert_eq!(exit_status(&io::Error::from_raw_os_error(28)), 1);
    }
}
