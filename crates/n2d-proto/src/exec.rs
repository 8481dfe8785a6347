//! Exec sessions: a command run in the guest with its stdin, stdout, stderr and exit status
//! carried over the virtio-serial port named [`EXEC_PORT_NAME`](crate::EXEC_PORT_NAME) (`n2d
//! exec`, and `n2d cp`, which runs `tar` in the guest).
//!
//! Frames both ways: a kind byte, the payload's length (little-endian u32, at most
//! [`MAX_FRAME`]), the payload. One session at a time per port: the host opens with
//! [`Frame::Start`], the guest answers [`Frame::Started`] with the same session number (frames
//! before it belong to no one and are dropped), streams output, and ends with [`Frame::Exit`].
//! The host hanging up ends the session too: the guest kills the command's process group.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The largest payload of one frame; output is sent in pieces of at most this.
pub const MAX_FRAME: usize = 64 * 1024;

/// What the host asks to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStart {
    /// Chosen by the host; the guest's [`Frame::Started`] repeats it.
    pub session: u64,
    /// The program and its arguments; the program is looked up in the guest's `PATH`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs added to the guest's base environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory in the guest; `/` when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// A terminal of this size: stdin, stdout and stderr are one pseudo-terminal, and
    /// [`Frame::Stderr`] is never sent.
    #[serde(default)]
    pub tty: Option<WindowSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// One message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    // Host → guest.
    Start(ExecStart),
    Stdin(Vec<u8>),
    /// The host's stdin ended: the command's stdin is closed (ignored with a terminal).
    StdinEnd,
    Resize(WindowSize),
    // Guest → host.
    Started {
        session: u64,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended: its exit code, or 128 + the signal that ended it; 127 when the
    /// program was not found, 126 when it could not be run (as a shell says).
    Exit(i32),
}

const START: u8 = 1;
const STDIN: u8 = 2;
const STDIN_END: u8 = 3;
const RESIZE: u8 = 4;
const STARTED: u8 = 16;
const STDOUT: u8 = 17;
const STDERR: u8 = 18;
const EXIT: u8 = 19;

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Frame {
    fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Frame::Start(start) => (START, serde_json::to_vec(start).expect("ExecStart serialises")),
            Frame::Stdin(data) => (STDIN, data.clone()),
            Frame::StdinEnd => (STDIN_END, Vec::new()),
            Frame::Resize(size) => (RESIZE, [size.rows.to_le_bytes(), size.cols.to_le_bytes()].concat()),
            Frame::Started { session } => (STARTED, session.to_le_bytes().to_vec()),
            Frame::Stdout(data) => (STDOUT, data.clone()),
            Frame::Stderr(data) => (STDERR, data.clone()),
            Frame::Exit(code) => (EXIT, code.to_le_bytes().to_vec()),
        }
    }

    fn decode(kind: u8, payload: Vec<u8>) -> io::Result<Frame> {
        let fixed = |n: usize| -> io::Result<&[u8]> {
            if payload.len() == n {
                Ok(&payload)
            } else {
                Err(invalid(format!("exec frame {kind}: {} bytes, expected {n}", payload.len())))
            }
        };
        Ok(match kind {
            START => Frame::Start(
                serde_json::from_slice(&payload).map_err(|e| invalid(format!("exec start: {e}")))?,
            ),
            STDIN => Frame::Stdin(payload),
            STDIN_END => {
                fixed(0)?;
                Frame::StdinEnd
            }
            RESIZE => {
                let b = fixed(4)?;
                Frame::Resize(WindowSize {
                    rows: u16::from_le_bytes([b[0], b[1]]),
                    cols: u16::from_le_bytes([b[2], b[3]]),
                })
            }
            STARTED => Frame::Started { session: u64::from_le_bytes(fixed(8)?.try_into().expect("8 bytes")) },
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => Frame::Exit(i32::from_le_bytes(fixed(4)?.try_into().expect("4 bytes"))),
            other => return Err(invalid(format!("unknown exec frame kind {other}"))),
        })
    }

    /// Writes the frame in one `write_all` (header and payload together), so frames written
    /// by several threads under one lock never interleave. Data over [`MAX_FRAME`] is refused:
    /// callers send it in pieces.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let (kind, payload) = self.encode();
        if payload.len() > MAX_FRAME {
            return Err(invalid(format!("exec frame of {} bytes, over {MAX_FRAME}", payload.len())));
        }
        let mut bytes = Vec::with_capacity(5 + payload.len());
        bytes.push(kind);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&payload);
        out.write_all(&bytes)?;
        out.flush()
    }

    /// The next frame; `None` at a clean end of input (between frames). An end inside a frame,
    /// an unknown kind or a length over [`MAX_FRAME`] is an error, read no further.
    pub fn read_from(input: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut header = [0u8; 5];
        let mut got = 0;
        while got < header.len() {
            match input.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!("exec frame of {len} bytes, over {MAX_FRAME}")));
        }
        let mut payload = vec![0u8; len];
        input.read_exact(&mut payload)?;
        Frame::decode(header[0], payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = [
            Frame::Start(ExecStart {
                session: 7,
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["A=b".into()],
                workdir: Some("/tmp".into()),
                tty: Some(WindowSize { rows: 24, cols: 80 }),
            }),
            Frame::Stdin(b"input".to_vec()),
            Frame::StdinEnd,
            Frame::Resize(WindowSize { rows: 50, cols: 132 }),
            Frame::Started { session: u64::MAX },
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.write_to(&mut wire).unwrap();
        }
        let mut input = &wire[..];
        for f in &frames {
            assert_eq!(Frame::read_from(&mut input).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut input).unwrap(), None);
    }

    #[test]
    fn truncated_oversized_and_unknown_frames_are_errors() {
        let mut wire = Vec::new();
        Frame::Exit(3).write_to(&mut wire).unwrap();
        assert!(Frame::read_from(&mut &wire[..3]).is_err());
        assert!(Frame::read_from(&mut &wire[..7]).is_err());
        let mut huge = vec![STDOUT];
        huge.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(Frame::read_from(&mut &huge[..]).is_err());
        assert!(Frame::read_from(&mut &[99u8, 0, 0, 0, 0][..]).is_err());
        assert!(Frame::read_from(&mut &[EXIT, 1, 0, 0, 0, 0][..]).is_err());
        assert!(Frame::Stdout(vec![0; MAX_FRAME + 1]).write_to(&mut Vec::new()).is_err());
    }
}
