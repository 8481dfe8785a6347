//! Progress lines on the console (PID 1's stdout is ttyS0, which the host logs).

use std::fmt::Arguments;
#[cfg(not(test))]
use std::io::Write;

pub fn line(args: Arguments<'_>) {
    let t = crate::sys::linux::uptime();
    emit(format_args!("n2d-init [{:>3}.{:03}s] {args}", t.as_secs(), t.subsec_millis()));
}

/// Prints a line without the prefix (the ready marker must be the whole line).
pub fn raw(text: &str) {
    emit(format_args!("{text}"));
}

#[cfg(not(test))]
fn emit(args: Arguments<'_>) {
    // Never panic on a console write error (println! would): PID 1 must not die.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

// println! so that the test harness captures it.
#[cfg(test)]
fn emit(args: Arguments<'_>) {
    println!("{args}");
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}
pub(crate) use info;
