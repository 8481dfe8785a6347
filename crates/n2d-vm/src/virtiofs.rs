//! Host folders: one `virtiofsd` per folder, started before QEMU and connected to it over a
//! vhost-user socket in the machine's directory (`vfs-N.sock`). virtiofsd ends by itself when
//! QEMU hangs up; [`stop`] ends the ones a failed start left waiting.
//!
//! As root, virtiofsd runs in its own namespaces (its default sandbox) and the guest's owners
//! are the host's. As an ordinary user it runs unsandboxed (it can do no more than the user)
//! and maps every guest owner to the user: what the guest writes is the user's, and the user's
//! files are root's in the guest.

use crate::{VmError, VmHandle, VmMount};
use n2d_exec::SearchPath;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const VIRTIOFSD_PACKAGE: &str = "virtiofsd";
/// Where Debian's package puts it (it is not on `PATH`), after `PATH` itself.
const LIBEXEC: [&str; 2] = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];
/// How long virtiofsd may take to listen.
const LISTEN: Duration = Duration::from_secs(10);

/// The virtiofsd to run: on `PATH`, else where Debian installs it.
pub fn find_virtiofsd(search_path: &SearchPath) -> Option<PathBuf> {
    search_path.find("virtiofsd").or_else(|| LIBEXEC.iter().map(PathBuf::from).find(|p| p.is_file()))
}

pub fn socket(index: usize) -> String {
    format!("vfs-{index}.sock")
}

fn pid_file(index: usize) -> String {
    format!("vfs-{index}.pid")
}

fn log_file(index: usize) -> String {
    format!("vfs-{index}.log")
}

/// virtiofsd's arguments for one folder.
pub fn args(mount: &VmMount, index: usize, uid: u32, gid: u32) -> Vec<String> {
    let mut a = vec![
        format!("--socket-path={}", socket(index)),
        format!("--shared-dir={}", mount.host.display()),
        "--cache=auto".into(),
        "--log-level=warn".into(),
    ];
    if mount.read_only {
        a.push("--readonly".into());
    }
    if mount.keep_owners {
        a.push("--sandbox=namespace".into());
    } else {
        a.extend([
            "--sandbox=none".into(),
            // An ordinary user cannot raise its descriptor limit past the hard one.
            "--rlimit-nofile=0".into(),
            format!("--translate-uid=squash-guest:0:{uid}:4294967295"),
            format!("--translate-gid=squash-guest:0:{gid}:4294967295"),
            format!("--translate-uid=host:{uid}:0:1"),
            format!("--translate-gid=host:{gid}:0:1"),
        ]);
    }
    a
}

/// Starts one virtiofsd per folder of `mounts` in `vm`'s directory and waits until each
/// listens. On failure, the ones started are ended.
pub fn start(vm: &VmHandle, mounts: &[VmMount], search_path: &SearchPath) -> Result<(), VmError> {
    if mounts.is_empty() {
        return Ok(());
    }
    stop(vm);
    let binary = find_virtiofsd(search_path).ok_or_else(|| {
        VmError::QemuMissing(n2d_exec::ExecError::NotInstalled {
            program: "virtiofsd".into(),
            package: VIRTIOFSD_PACKAGE,
        })
    })?;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    for (i, mount) in mounts.iter().enumerate() {
        if let Err(e) = start_one(vm, &binary, mount, i, uid, gid) {
            stop(vm);
            return Err(e);
        }
    }
    Ok(())
}

fn start_one(
    vm: &VmHandle,
    binary: &Path,
    mount: &VmMount,
    i: usize,
    uid: u32,
    gid: u32,
) -> Result<(), VmError> {
    let io = |path: PathBuf| move |source| VmError::Io { path, source };
    let sock = vm.dir.join(socket(i));
    let _ = std::fs::remove_file(&sock);
    let log_path = vm.dir.join(log_file(i));
    let log = std::fs::File::create(&log_path).map_err(io(log_path.clone()))?;
    let err_log = log.try_clone().map_err(io(log_path.clone()))?;
    let argv = args(mount, i, uid, gid);
    tracing::info!("{}: starting {} {}", vm.name, binary.display(), argv.join(" "));
    let child = Command::new(binary)
        .args(&argv)
        .current_dir(&vm.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        // Its own process group: a Ctrl-C at n2d's terminal is not its to take.
        .process_group(0)
        .spawn()
        .map_err(|source| VmError::Spawn { name: vm.name.clone(), source })?;
    let pid = child.id();
    let pid_path = vm.dir.join(pid_file(i));
    std::fs::write(&pid_path, format!("{pid}\n")).map_err(io(pid_path))?;
    // Reaped by whoever outlives it (n2d exits long before QEMU hangs up).
    drop(child);
    let deadline = Instant::now() + LISTEN;
    while !sock.exists() {
        let gone = !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid);
        if gone || Instant::now() >= deadline {
            let said = std::fs::read(&log_path).unwrap_or_default();
            return Err(VmError::Start {
                name: vm.name.clone(),
                stderr: format!(
                    "virtiofsd for {} did not start: {}",
                    mount.host.display(),
                    n2d_exec::tail(&said, 4)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Ends the virtiofsd processes `vm`'s pid files name, if they are still virtiofsd serving
/// this directory (a pid reused by another process is left alone), and removes the files.
pub fn stop(vm: &VmHandle) {
    for i in 0..n2d_spec::mount::MAX_MOUNTS {
        let pid_path = vm.dir.join(pid_file(i));
        let Ok(text) = std::fs::read_to_string(&pid_path) else { continue };
        if let Ok(pid) = text.trim().parse::<i32>() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&format!("--socket-path={}", socket(i)))
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == vm.dir);
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                // Reap it if it is ours to reap (started by this process).
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        let _ = std::fs::remove_file(&pid_path);
        let _ = std::fs::remove_file(vm.dir.join(socket(i)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_only_a_virtiofsd_of_this_directory_and_clears_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let vm = VmHandle::new("m", dir.path().canonicalize().unwrap());
        let spawn = |cwd: &Path| {
            // A stand-in whose command line and cwd are those of this machine's virtiofsd 0
            // (the `; :` keeps the shell from exec-ing sleep in its place).
            let child = Command::new("sh")
                .args(["-c", "sleep 30; :", "--socket-path=vfs-0.sock"])
                .current_dir(cwd)
                .spawn()
                .unwrap();
            // spawn returns as soon as exec begins; the new command line shows a moment later.
            let cmdline = format!("/proc/{}/cmdline", child.id());
            while std::fs::read(&cmdline).map_or(true, |c| c.is_empty()) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            child
        };
        let ours = spawn(&vm.dir);
        let pid = ours.id();
        std::fs::write(vm.dir.join("vfs-0.pid"), format!("{pid}\n")).unwrap();
        std::fs::write(vm.dir.join("vfs-0.sock"), "").unwrap();
        stop(&vm);
        // Killed, and maybe reaped by `stop` already (it is this process's child here).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(std::time::Instant::now() < deadline, "ours was not killed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(ours);
        assert!(!vm.dir.join("vfs-0.pid").exists() && !vm.dir.join("vfs-0.sock").exists());
        // A pid file naming another directory's process (a reused pid) kills nothing.
        let elsewhere = tempfile::tempdir().unwrap();
        let mut other = spawn(elsewhere.path());
        std::fs::write(vm.dir.join("vfs-0.pid"), format!("{}\n", other.id())).unwrap();
        stop(&vm);
        assert!(other.try_wait().unwrap().is_none(), "another directory's process was killed");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn root_keeps_owners_in_a_sandbox_and_a_user_maps_every_owner_to_itself() {
        let m = VmMount { tag: "t".into(), host: "/src".into(), read_only: true, keep_owners: true };
        let a = args(&m, 1, 0, 0);
        assert!(
            a.contains(&"--socket-path=vfs-1.sock".to_string())
                && a.contains(&"--shared-dir=/src".to_string())
        );
        assert!(a.contains(&"--readonly".to_string()) && a.contains(&"--sandbox=namespace".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--translate")));
        let user = args(&VmMount { keep_owners: false, read_only: false, ..m }, 0, 1000, 1001);
        assert!(user.contains(&"--sandbox=none".to_string()) && !user.contains(&"--readonly".to_string()));
        assert!(user.contains(&"--translate-uid=squash-guest:0:1000:4294967295".to_string()));
        assert!(user.contains(&"--translate-gid=host:1001:0:1".to_string()));
    }
}
