//! A minimal cpio "newc" writer for the initramfs. The format is a few fixed-width hex fields
//! per entry; writing it here (rather than piping `find | cpio`) lets the builder add
//! `/dev/console` without mknod (and so without root) and keeps entry order deterministic.

use std::io::{self, Write};

pub enum Entry<'a> {
    Dir { path: &'a str },
    File { path: &'a str, mode: u32, data: &'a [u8] },
    CharDev { path: &'a str, major: u32, minor: u32 },
}

pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter { out, next_ino: 1 }
    }

    pub fn add(&mut self, entry: Entry) -> io::Result<()> {
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match entry {
            Entry::Dir { path } => (path, 0o040755, &[], (0, 0)),
            Entry::File { path, mode, data } => (path, 0o100000 | (mode & 0o7777), data, (0, 0)),
            Entry::CharDev { path, major, minor } => (path, 0o020600, &[], (major, minor)),
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        self.header(ino, mode, nlink, data.len() as u32, rdev, path)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> io::Result<()> {
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let pad = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_trailer_ends_the_archive() {
        let mut w = CpioWriter::new(Vec::new());
        w.add(Entry::Dir { path: "dev" }).unwrap();
        w.add(Entry::CharDev { path: "dev/console", major: 5, minor: 1 }).unwrap();
        w.add(Entry::File { path: "init", mode: 0o755, data: b"hello" }).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // dev/console header: mode 020600, rdevmajor 5, rdevminor 1.
        let at = text.find("0000218000000000").is_some() || text.contains("00002180");
        assert!(at, "char device mode missing");
        assert!(text.contains("0000000500000001"));
    }
}
