//! Why a guest died during boot, read from its console: a flaw of the emulator, worth one more
//! boot, or a fault of the machine or image, which would fail the same way again.

/// Console lines that mean the same boot will fail again: a bad init or root, not bad luck.
const DETERMINISTIC: &[&str] = &[
    "No working init found",
    "VFS: Unable to mount root",
    "Requested init",
    "Attempted to kill init",
    "] FATAL: ", // n2d-init could not boot the machine and powered off
];

/// The signature of QEMU 7.2 multi-threaded TCG's race: one vCPU runs stale kernel text while
/// another patches it, and trips over a leftover `int3` of a static-branch patch.
const EMULATION_RACE: &[&str] = &["int3"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFailure {
    /// The known emulation race: booting again is the dependable answer.
    EmulationRace,
    /// A failure that would repeat (named by the console line that shows it).
    Deterministic(String),
    /// Anything else (the guest stopped without a known sign): not retried.
    Unknown,
}

impl BootFailure {
    pub fn is_retryable(&self) -> bool {
        *self == BootFailure::EmulationRace
    }
}

/// Classifies a boot from everything its console printed.
pub fn classify_boot_failure(console: &str) -> BootFailure {
    if let Some(line) = console.lines().find(|l| DETERMINISTIC.iter().any(|d| l.contains(d))) {
        return BootFailure::Deterministic(line.trim().to_string());
    }
    let panicked = console.contains("Kernel panic") || console.contains("Oops");
    if panicked && console.lines().any(|l| EMULATION_RACE.iter().any(|r| l.contains(r))) {
        return BootFailure::EmulationRace;
    }
    BootFailure::Unknown
}

/// What the host keeps of a booting guest's console while it waits: whether the ready marker
/// ([`n2d_proto::READY_MARKER`]) came, and the last bytes, to tell why a boot failed. The guest
/// writes what it likes (any bytes, any amount, a marker split across reads), so this keeps a
/// bounded tail of raw bytes and decodes it only to classify.
#[derive(Debug, Default)]
pub struct ConsoleWatch {
    tail: Vec<u8>,
    ready: bool,
}

/// The tail kept: far longer than the marker and the lines [`classify_boot_failure`] looks for.
const KEEP: usize = 32 * 1024;

impl ConsoleWatch {
    /// Takes the next bytes of the console; returns whether the marker has been seen.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let marker = n2d_proto::READY_MARKER.as_bytes();
        for chunk in bytes.chunks(KEEP) {
            // Enough of the old tail to find a marker that began in it.
            let from = self.tail.len().saturating_sub(marker.len() - 1);
            self.tail.extend_from_slice(chunk);
            self.ready |= self.tail[from..].windows(marker.len()).any(|w| w == marker);
            if self.tail.len() > 2 * KEEP {
                self.tail.drain(..self.tail.len() - KEEP);
            }
        }
        self.ready
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The longest the kept tail gets.
    pub const MAX_TAIL: usize = 2 * KEEP;

    pub fn tail_len(&self) -> usize {
        self.tail.len()
    }

    /// Why the boot failed, from the tail (bytes that are not UTF-8 read as U+FFFD).
    pub fn failure(&self) -> BootFailure {
        classify_boot_failure(&String::from_utf8_lossy(&self.tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_dynamic_init_is_not_retried() {
        let console = "[    1.9] Run /init as init process\n[    1.9] Failed to execute /init (error -2)\n\
                       [    1.9] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.\n";
        let failure = classify_boot_failure(console);
        assert!(matches!(&failure, BootFailure::Deterministic(l) if l.contains("No working init found")));
        assert!(!failure.is_retryable());
    }

    #[test]
    fn an_unmountable_root_is_not_retried() {
        let console = "VFS: Unable to mount root fs on unknown-block(0,0)\nKernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert!(!classify_boot_failure(console).is_retryable());
    }

    #[test]
    fn the_int3_race_is_retried() {
        let console =
            "[    1.5] int3: 0000 [#1] PREEMPT SMP NOPTI\n[    1.5] RIP: 0010:sched_clock_cpu+0x10/0x1a0\n\
                       [    1.6] Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert_eq!(classify_boot_failure(console), BootFailure::EmulationRace);
    }

    #[test]
    fn the_console_watch_finds_a_split_marker_and_keeps_a_bounded_tail() {
        let mut watch = ConsoleWatch::default();
        // Multi-byte characters across the trim point (the old code sliced the text there).
        for _ in 0..50_000 {
            assert!(!watch.feed("é€".as_bytes()));
        }
        assert!(watch.tail_len() <= ConsoleWatch::MAX_TAIL);
        let marker = n2d_proto::READY_MARKER.as_bytes();
        assert!(!watch.feed(&marker[..5]));
        assert!(watch.feed(&marker[5..]));
        assert_eq!(watch.failure(), BootFailure::Unknown);
    }

    #[test]
    fn other_panics_and_silent_exits_are_not_retried() {
        assert_eq!(
            classify_boot_failure("Kernel panic - not syncing: Out of memory\n"),
            BootFailure::Unknown
        );
        assert_eq!(classify_boot_failure(""), BootFailure::Unknown);
    }
}
