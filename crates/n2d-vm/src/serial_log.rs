//! The serial console's log (`serial.log`, which QEMU writes, see [`crate::argv::SERIAL_LOG`]):
//! rotation at each start, the last lines found from the end, and what `n2d logs` shows of it.
//!
//! The log is the guest's output: whatever it holds reaches the user's terminal through `n2d
//! logs`. [`Sanitizer`] keeps text, newlines and tabs, and drops every terminal control: escape
//! sequences (CSI, OSC such as a clipboard write or a title, DCS, SOS, PM, APC, and two-byte
//! ones such as a full reset), the other C0 controls (BEL, CR, backspace...), DEL, and C1
//! controls (as UTF-8 code points, and any byte that is not valid UTF-8, which a terminal not in
//! UTF-8 mode would read as C1). It is a state machine fed chunk by chunk, so a sequence split
//! across reads is still recognised, and memory stays constant whatever the log's size.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The previous boot's log, kept next to the current one (one kept).
pub const PREVIOUS_SERIAL_LOG: &str = "serial.log.1";

/// Moves `serial.log` to `serial.log.1` (replacing an older one): each start begins a fresh log,
/// so the log on disk is at most this boot's output and the previous boot's.
pub fn rotate(dir: &Path) -> io::Result<()> {
    match std::fs::rename(dir.join(crate::argv::SERIAL_LOG), dir.join(PREVIOUS_SERIAL_LOG)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The current log of a machine directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(crate::argv::SERIAL_LOG)
}

/// The offset where the last `lines` lines of `f` begin (a final line without a newline counts
/// as one), found by reading backwards from the end in blocks: never the whole file.
pub fn tail_offset<F: Read + Seek>(f: &mut F, lines: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = f.seek(SeekFrom::End(0))?;
    if lines == 0 || len == 0 {
        return Ok(len);
    }
    // The last byte's newline ends the last line; it does not begin another.
    let mut end = len;
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        end -= 1;
    }
    let mut found = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                found += 1;
                if found == lines {
                    return Ok(start + i as u64 + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Copies `from` to `to` through `sanitizer` (`None`: raw) in fixed-size chunks; returns the
/// bytes read.
pub fn copy<R: Read, W: Write>(
    from: &mut R,
    to: &mut W,
    mut sanitizer: Option<&mut Sanitizer>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut clean = Vec::with_capacity(buf.len() + 8);
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        match sanitizer.as_deref_mut() {
            Some(s) => {
                clean.clear();
                s.feed(&buf[..n], &mut clean);
                to.write_all(&clean)?;
            }
            None => to.write_all(&buf[..n])?,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Esc,
    /// ESC and intermediates (0x20-0x2F), until a final byte.
    EscIntermediate,
    /// A control sequence (ESC [ or C1 CSI), until its final byte.
    Csi,
    /// A control string (OSC, DCS, SOS, PM, APC), until BEL, ST, CAN/SUB or a newline.
    Str,
    /// ESC inside a control string: `\` ends it (ST).
    StrEsc,
}

/// Strips terminal controls from a byte stream (see the module's documentation).
#[derive(Debug, Default)]
pub struct Sanitizer {
    state: State,
    /// An incomplete UTF-8 sequence carried over to the next chunk.
    pending: Vec<u8>,
}

const ESC: u32 = 0x1b;

impl Sanitizer {
    pub fn new() -> Sanitizer {
        Sanitizer::default()
    }

    /// Appends the printable part of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    /// Ends the stream: an incomplete UTF-8 sequence is shown as U+FFFD.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.char(char::REPLACEMENT_CHARACTER, out);
        }
    }

    /// One byte, decoded as UTF-8 incrementally; invalid bytes become U+FFFD.
    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.pending.is_empty() {
            match b {
                0x00..=0x7f => self.char(b as char, out),
                0xc2..=0xf4 => self.pending.push(b),
                _ => self.char(char::REPLACEMENT_CHARACTER, out),
            }
            return;
        }
        if !(0x80..=0xbf).contains(&b) {
            // The sequence broke off: say so, then take this byte afresh.
            self.pending.clear();
            self.char(char::REPLACEMENT_CHARACTER, out);
            return self.byte(b, out);
        }
        self.pending.push(b);
        let want = match self.pending[0] {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        if self.pending.len() < want {
            // Overlong forms and surrogates show at the second byte already (E0 80, ED A0, F0 80,
            // F4 90): std's check on the whole sequence catches them below.
            return;
        }
        let c = std::str::from_utf8(&self.pending)
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        self.pending.clear();
        self.char(c, out);
    }

    fn char(&mut self, c: char, out: &mut Vec<u8>) {
        let u = c as u32;
        match self.state {
            State::Ground => match u {
                0x0a | 0x09 => out.push(u as u8),
                ESC => self.state = State::Esc,
                0x9b => self.state = State::Csi,
                0x90 | 0x98 | 0x9d | 0x9e | 0x9f => self.state = State::Str,
                // C0, DEL, C1.
                0x00..=0x1f | 0x7f..=0x9f => {}
                _ => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            },
            State::Esc => match u {
                0x5b => self.state = State::Csi,
                0x5d | 0x50 | 0x58 | 0x5e | 0x5f => self.state = State::Str,
                0x20..=0x2f => self.state = State::EscIntermediate,
                ESC => {}
                // A two-byte sequence (ESC c, ESC 7, ESC =...): dropped whole.
                0x30..=0x7e => self.state = State::Ground,
                // A lone ESC: it goes, what follows it stays.
                _ => {
                    self.state = State::Ground;
                    self.char(c, out);
                }
            },
            State::EscIntermediate => match u {
                0x20..=0x2f => {}
                0x30..=0x7e => self.state = State::Ground,
                _ => {
                    self.state = State::Ground;
                    self.char(c, out);
                }
            },
            State::Csi => match u {
                0x20..=0x3f => {}
                0x40..=0x7e => self.state = State::Ground,
                ESC => self.state = State::Esc,
                // Broken off (CAN, SUB, a newline, text): the rest is taken afresh.
                _ => {
                    self.state = State::Ground;
                    self.char(c, out);
                }
            },
            State::Str => match u {
                0x07 | 0x18 | 0x1a | 0x9c => self.state = State::Ground,
                ESC => self.state = State::StrEsc,
                // Unterminated strings end at the line: a guest cannot hide the rest of its log.
                0x0a => {
                    self.state = State::Ground;
                    out.push(b'\n');
                }
                _ => {}
            },
            State::StrEsc => match u {
                0x5c => self.state = State::Ground,
                _ => {
                    self.state = State::Esc;
                    self.char(c, out);
                }
            },
        }
    }
}

/// `input` sanitized in one go (tests, short texts).
pub fn sanitize(input: &[u8]) -> Vec<u8> {
    let mut s = Sanitizer::new();
    let mut out = Vec::with_capacity(input.len());
    s.feed(input, &mut out);
    s.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(input: &[u8]) -> String {
        String::from_utf8(sanitize(input)).expect("the output is UTF-8")
    }

    /// Every hostile sequence the stripper is tested against, with what must remain.
    const HOSTILE: &[(&[u8], &str)] = &[
        (b"a\x1b]52;c;ZWNobyBwd25lZA==\x07b", "ab"), // OSC 52: write the clipboard
        (b"a\x1b]52;c;ZWNobyBwd25lZA==\x1b\\b", "ab"), // the same, ended by ST
        (b"x\x1b[2J\x1b[Hy", "xy"),                  // clear the screen, cursor home
        (b"x\x1b[10;20Hy\x1b[1Az", "xyz"),           // cursor moves
        (b"\x1b]0;pwned\x07title", "title"),         // window title (BEL)
        (b"\x1b]2;pwned\x1b\\title", "title"),       // window title (ST)
        (b"ding\x07dong", "dingdong"),               // BEL
        (b"lone\x1b", "lone"),                       // a lone ESC at the end
        (b"lone\x1b\nnext", "lone\nnext"),           // a lone ESC before a newline
        (b"\x1bcreset", "reset"),                    // ESC c: full reset
        (b"\x1b(0box", "box"),                       // charset switch (intermediate)
        (b"ok\x1b[31mred\x1b[0m", "okred"),          // colours (SGR)
        (b"safe\rEVIL", "safeEVIL"),                 // CR: overwrite the line
        (b"abc\x08\x08\x08xyz", "abcxyz"),           // backspaces
        (b"\x1bP1$r0m\x1b\\dcs", "dcs"),             // DCS (DECRQSS answer)
        (b"\x1b_apc payload\x1b\\apc", "apc"),       // APC
        (b"\xc2\x9b31mc1csi", "c1csi"),              // C1 CSI as UTF-8 (U+009B)
        (b"\xc2\x9d0;t\xc2\x9cc1osc", "c1osc"),      // C1 OSC ... ST
        (b"\x9b31mraw", "\u{fffd}31mraw"),           // a raw 0x9B byte: not UTF-8
        (b"\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "link"), // hyperlink
        (b"\x1b[6n", ""),                            // device status report request
        (b"\x1b]52;c;unterminated\nvisible", "\nvisible"), // an OSC that never ends
        (b"\x00nul\x7fdel\x0bvt\x0cff", "nuldelvtff"), // other C0 and DEL
        (b"\xed\xa0\x80surrogate", "\u{fffd}surrogate"), // a UTF-8 surrogate
        (b"\xc0\xafoverlong", "\u{fffd}\u{fffd}overlong"), // an overlong '/'
    ];

    #[test]
    fn hostile_sequences_are_stripped_and_text_stays() {
        for (input, want) in HOSTILE {
            assert_eq!(clean(input), *want, "input {:?}", String::from_utf8_lossy(input));
        }
        assert_eq!(clean("héllo ✓\ttab\n".as_bytes()), "héllo ✓\ttab\n");
        assert_eq!(clean(b"[    1.234] Linux version 6.12\r\n"), "[    1.234] Linux version 6.12\n");
    }

    #[test]
    fn sequences_split_across_chunks_are_still_recognised() {
        let mut all: Vec<u8> = Vec::new();
        let mut want = String::new();
        for (input, w) in HOSTILE {
            all.extend_from_slice(input);
            all.extend_from_slice("é\n".as_bytes());
            want.push_str(w);
            want.push_str("é\n");
        }
        // A lone ESC at an input's end takes the next input's first byte: a sequence in the
        // concatenation is not the sum of the parts. So compare against one pass over it all.
        let whole = clean(&all);
        assert!(!whole.contains('\u{1b}'), "{whole:?}");
        for size in 1..=7 {
            let mut s = Sanitizer::new();
            let mut out = Vec::new();
            for chunk in all.chunks(size) {
                s.feed(chunk, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), whole, "chunks of {size}");
        }
        // Every byte of the output is printable, a newline or a tab.
        assert!(whole.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
        assert_eq!(want.lines().count(), whole.lines().count());
    }

    #[test]
    fn copy_streams_through_the_sanitizer_or_raw() {
        let input = b"a\x1b]52;c;eA==\x07b\n".repeat(10_000);
        let mut out = Vec::new();
        let mut s = Sanitizer::new();
        assert_eq!(copy(&mut &input[..], &mut out, Some(&mut s)).unwrap(), input.len() as u64);
        assert_eq!(out, b"ab\n".repeat(10_000));
        let mut raw = Vec::new();
        copy(&mut &input[..], &mut raw, None).unwrap();
        assert_eq!(raw, input);
    }

    #[test]
    fn tail_offset_finds_the_last_lines_from_the_end() {
        let text = "one\ntwo\nthree\n";
        let at = |text: &str, n| tail_offset(&mut std::io::Cursor::new(text.as_bytes()), n).unwrap() as usize;
        assert_eq!(&text[at(text, 1)..], "three\n");
        assert_eq!(&text[at(text, 2)..], "two\nthree\n");
        assert_eq!(&text[at(text, 3)..], text);
        assert_eq!(&text[at(text, 100)..], text);
        assert_eq!(&text[at(text, 0)..], "");
        let open = "one\ntwo";
        assert_eq!(&open[at(open, 1)..], "two");
        assert_eq!(&open[at(open, 2)..], open);
        assert_eq!(at("", 5), 0);
        assert_eq!(&"\n\n"[at("\n\n", 1)..], "\n");
        // Lines across the 64 KiB blocks it reads backwards.
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(&big[at(&big, 2)..], "line 49998\nline 49999\n");
        assert_eq!(big[at(&big, 20_000)..].lines().next(), Some("line 30000"));
    }

    /// A reader that counts what it was asked for: the tail must not read the whole file.
    struct Counting<'a> {
        inner: std::io::Cursor<&'a [u8]>,
        read: u64,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }
    impl Seek for Counting<'_> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn the_tail_of_a_big_log_reads_only_its_end() {
        let big = format!("{}\n", "x".repeat(99)).repeat(100_000); // 10 MB
        let mut f = Counting { inner: std::io::Cursor::new(big.as_bytes()), read: 0 };
        let at = tail_offset(&mut f, 10).unwrap();
        assert_eq!(big.len() as u64 - at, 1000);
        assert!(f.read <= 64 * 1024 + 1, "read {} bytes", f.read);
    }

    #[test]
    fn rotation_keeps_one_previous_log() {
        let dir = tempfile::tempdir().unwrap();
        rotate(dir.path()).unwrap(); // nothing yet: fine
        for boot in ["first\n", "second\n", "third\n"] {
            rotate(dir.path()).unwrap();
            std::fs::write(path(dir.path()), boot).unwrap();
        }
        assert_eq!(std::fs::read_to_string(path(dir.path())).unwrap(), "third\n");
        assert_eq!(std::fs::read_to_string(dir.path().join(PREVIOUS_SERIAL_LOG)).unwrap(), "second\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
