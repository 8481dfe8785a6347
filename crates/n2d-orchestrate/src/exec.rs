//! `n2d exec` and `n2d cp`: commands and files over a running machine's exec port
//! ([`n2d_vm::exec`]). A copy is `tar` at both ends: the host's side in process (the `tar`
//! crate), the guest's the image's own `tar`, in a small `sh` script.
//!
//! Nothing half-made is left: a copy lands in a hidden directory beside its target and is
//! renamed into place once whole; a failure removes the hidden directory.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_proto::exec::ExecStart;
use n2d_spec::copy::CopyEnd;
use n2d_spec::machine::MachineName;
use n2d_swarm::Connector;
pub use n2d_vm::exec::ExecIo;
use n2d_vm::{Hypervisor, VmState};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `n2d exec` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// The caller's terminal is the command's (raw mode, window size).
    pub terminal: bool,
}

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Where it landed, as `NAME:PATH` or a host path.
    pub target: String,
    /// The tar stream's size.
    pub bytes: u64,
}

/// Exit status of the guest scripts when their source is missing: a usage error, not a failure.
const MISSING: i32 = 66;

/// Writes the copy into `$1` (a directory) as `$2`, from a tar on stdin whose one top entry is
/// `$2`: unpacked beside it first, then moved into place (a directory onto a directory merges).
const UNPACK_SCRIPT: &str = r#"set -e
tmp=$(mktemp -d "$1/.n2d-cp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -x --no-same-owner -f - -C "$tmp"
if [ -d "$1/$2" ] && [ ! -L "$1/$2" ] && [ -d "$tmp/$2" ]; then
  cp -a "$tmp/$2/." "$1/$2/"
else
  mv -T -f "$tmp/$2" "$1/$2"
fi"#;

/// Says `dir` when `$1` is a directory, `parent` when its parent is, else nothing.
const TARGET_SCRIPT: &str =
    r#"if [ -d "$1" ]; then echo dir; elif [ -d "$(dirname "$1")" ]; then echo parent; fi"#;

/// A tar of `$1` on stdout, its one top entry named as `$1`'s last component.
const PACK_SCRIPT: &str = r#"[ -e "$1" ] || [ -L "$1" ] || { echo "no such file or directory: $1" >&2; exit 66; }
cd "$(dirname "$1")"
exec tar -c -f - -- "$(basename "$1")""#;

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d exec NAME CMD...`: runs the command in the running machine and returns its exit
    /// status (the caller's to pass on).
    pub fn exec(&self, name: &MachineName, request: ExecRequest, io: ExecIo<'_>) -> Result<i32> {
        let port = self.exec_port(name)?;
        let start = ExecStart {
            session: 0,
            argv: request.argv,
            env: request.env,
            workdir: request.workdir,
            tty: None,
        };
        Ok(n2d_vm::exec::run(name.as_str(), port, start, io, request.terminal)?)
    }

    fn exec_port(&self, name: &MachineName) -> Result<n2d_vm::exec::ExecPort> {
        let record = self.load_record(name)?;
        if self.machine_state(&record.spec.name) != VmState::Running {
            return Err(Error::Usage(format!("{name} is not running: start it with `n2d start {name}`")));
        }
        Ok(self.hypervisor.exec_port(&self.vm_handle(name))?)
    }

    /// Runs `argv` in `name` with no input; returns its status, stdout and stderr.
    pub(crate) fn run_in_guest(
        &self,
        name: &MachineName,
        argv: Vec<String>,
    ) -> Result<(i32, Vec<u8>, String)> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let request = ExecRequest { argv, env: vec![], workdir: None, terminal: false };
        let io = ExecIo { stdin: Box::new(std::io::empty()), stdout: &mut stdout, stderr: &mut stderr };
        let status = self.exec(name, request, io)?;
        Ok((status, stdout, String::from_utf8_lossy(&stderr).trim().to_string()))
    }

    /// Runs `sh -c SCRIPT sh ARGS...` in `name` with `input`; returns its status, stdout and
    /// stderr (stdout into `out` when given).
    fn guest_script(
        &self,
        name: &MachineName,
        script: &str,
        args: &[&str],
        input: Box<dyn std::io::Read + Send>,
        out: Option<&mut dyn Write>,
    ) -> Result<(i32, Vec<u8>, String)> {
        let argv = ["sh", "-c", script, "sh"].iter().chain(args).map(|s| s.to_string()).collect();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let request = ExecRequest { argv, env: vec![], workdir: None, terminal: false };
        let io = ExecIo { stdin: input, stdout: out.unwrap_or(&mut stdout), stderr: &mut stderr };
        let status = self.exec(name, request, io)?;
        Ok((status, stdout, String::from_utf8_lossy(&stderr).trim().to_string()))
    }

    /// `n2d cp FROM TO`: one end on the host, the other `NAME:PATH` in a running machine.
    /// Into an existing directory the copy keeps its name; otherwise it takes the target's.
    pub fn copy(&self, from: &CopyEnd, to: &CopyEnd) -> Result<CopyReport> {
        match (from, to) {
            (CopyEnd::Host(src), CopyEnd::Machine { name, path }) => self.copy_in(src, name, path),
            (CopyEnd::Machine { name, path }, CopyEnd::Host(dest)) => self.copy_out(name, path, dest),
            (CopyEnd::Host(_), CopyEnd::Host(_)) => Err(Error::Usage(format!(
                "neither {from} nor {to} is in a machine: write one end as NAME:PATH (e.g. web-1:/tmp)"
            ))),
            (CopyEnd::Machine { .. }, CopyEnd::Machine { .. }) => Err(Error::Usage(format!(
                "both ends are in machines: copy through the host (n2d cp {from} ./x, then n2d cp ./x {to})"
            ))),
        }
    }

    fn copy_in(&self, src: &Path, name: &MachineName, dest: &str) -> Result<CopyReport> {
        let meta = std::fs::metadata(src)
            .map_err(|e| Error::Usage(format!("cannot copy {}: {e}", src.display())))?;
        let Some(src_name) = src.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_os_string()))
        else {
            return Err(Error::Usage(format!(
                "cannot copy {}: name a file or directory below /",
                src.display()
            )));
        };
        let src_name = src_name.to_string_lossy().into_owned();
        let (status, said, _) =
            self.guest_script(name, TARGET_SCRIPT, &[dest], Box::new(std::io::empty()), None)?;
        let said = String::from_utf8_lossy(&said);
        let (dir, entry) = match (status, said.trim()) {
            (0, "dir") => (dest.to_string(), src_name),
            (0, "parent") if !dest.ends_with('/') => {
                let file_name = Path::new(dest).file_name().map(|n| n.to_string_lossy().into_owned());
                (parent_of(dest), file_name.unwrap_or_default())
            }
            _ => {
                return Err(Error::Usage(format!(
                    "{name} has no directory {}: create it first (n2d exec {name} mkdir -p DIR)",
                    if dest.ends_with('/') { dest.to_string() } else { parent_of(dest) }
                )))
            }
        };
        let (reader, writer) = std::io::pipe()?;
        let (src, entry_name, is_dir) = (src.to_path_buf(), entry.clone(), meta.is_dir());
        let packer = std::thread::spawn(move || -> std::io::Result<u64> {
            let mut counted = CountingWriter { inner: writer, bytes: 0 };
            let mut tar = tar::Builder::new(&mut counted);
            tar.follow_symlinks(false);
            if is_dir {
                tar.append_dir_all(&entry_name, &src)?;
            } else {
                tar.append_path_with_name(&src, &entry_name)?;
            }
            tar.into_inner()?;
            Ok(counted.bytes)
        });
        let (status, _, stderr) =
            self.guest_script(name, UNPACK_SCRIPT, &[&dir, &entry], Box::new(reader), None)?;
        let packed = packer.join().map_err(|_| Error::Usage("the tar writer panicked".into()))?;
        let target = format!("{name}:{}", Path::new(&dir).join(&entry).display());
        if status != 0 {
            // The guest's reason says more than our broken pipe.
            return Err(Error::CopyFailed { what: target, message: stderr });
        }
        let bytes = packed.map_err(|e| Error::CopyFailed { what: target.clone(), message: e.to_string() })?;
        Ok(CopyReport { target, bytes })
    }

    fn copy_out(&self, name: &MachineName, src: &str, dest: &Path) -> Result<CopyReport> {
        let src_name = Path::new(src).file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(src_name) = src_name else {
            return Err(Error::Usage(format!("cannot copy {name}:{src}: name a file or directory below /")));
        };
        let (dir, entry) = if dest.is_dir() {
            (dest.to_path_buf(), src_name.clone())
        } else {
            let parent = match dest.parent() {
                Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
                Some(p) => p.to_path_buf(),
                None => PathBuf::from("/"),
            };
            let entry = dest.file_name().map(|n| n.to_string_lossy().into_owned());
            match entry {
                Some(entry) if parent.is_dir() => (parent, entry),
                _ => {
                    return Err(Error::Usage(format!(
                        "there is no directory {} on the host: create it first",
                        parent.display()
                    )))
                }
            }
        };
        let target = dir.join(&entry);
        let staging = Staging::new(&dir)?;
        let (reader, mut writer) = std::io::pipe()?;
        let into = staging.path.clone();
        let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
            let mut archive = tar::Archive::new(reader);
            archive.set_preserve_permissions(true);
            archive.set_preserve_mtime(true);
            archive.unpack(&into)
        });
        let mut counted = CountingWriter { inner: &mut writer, bytes: 0 };
        let run =
            self.guest_script(name, PACK_SCRIPT, &[src], Box::new(std::io::empty()), Some(&mut counted));
        let bytes = counted.bytes;
        drop(writer);
        let unpacked = unpacker.join().map_err(|_| Error::Usage("the tar reader panicked".into()))?;
        let (status, _, stderr) = run?;
        let what = target.display().to_string();
        match status {
            0 => {}
            MISSING => return Err(Error::Usage(format!("{name} has no {src}"))),
            _ => return Err(Error::CopyFailed { what, message: stderr }),
        }
        unpacked.map_err(|e| Error::CopyFailed { what: what.clone(), message: e.to_string() })?;
        let made = staging.path.join(&src_name);
        if target.is_dir() && !target.is_symlink() && made.is_dir() {
            return Err(Error::Usage(format!(
                "{} already exists: remove it, or copy into it (n2d cp {name}:{src}/. {})",
                target.display(),
                target.display()
            )));
        }
        std::fs::rename(&made, &target).map_err(|e| Error::CopyFailed { what, message: e.to_string() })?;
        Ok(CopyReport { target: target.display().to_string(), bytes })
    }
}

fn parent_of(path: &str) -> String {
    Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into())
}

/// A hidden directory beside a copy's target, removed with whatever is still in it.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn new(dir: &Path) -> Result<Staging> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let path = dir.join(format!(".n2d-cp-{}-{}", std::process::id(), nanos.as_nanos()));
        std::fs::create_dir(&path).map_err(|e| Error::CopyFailed {
            what: dir.display().to_string(),
            message: format!("cannot make a directory there: {e}"),
        })?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

struct CountingWriter<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
