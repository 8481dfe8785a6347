//! Shell completions and man pages, generated from the clap definitions in `args.rs` so they
//! never drift from the real command line.

use crate::args::Cli;
use anyhow::{Context as _, Result};
use clap::CommandFactory;
use std::path::Path;

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    crate::out::write_bytes(completion_script(shell).as_bytes())?;
    Ok(())
}

/// clap's generated script, and for bash, zsh and fish the names of machines, swarms and
/// images where a command takes one, asked of n2d itself (`ls -q`, `swarm ls -q`, `image ls -q`)
/// when the user presses Tab: the names are never baked into the script.
pub fn completion_script(shell: clap_complete::Shell) -> String {
    use clap_complete::Shell;
    // clap_complete panics when its writer fails: render into memory, then write fallibly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "n2d", &mut script);
    let script = String::from_utf8(script).expect("clap writes UTF-8");
    match shell {
        Shell::Bash => script + include_str!("completions/names.bash"),
        Shell::Fish => script + include_str!("completions/names.fish"),
        // The file is autoloaded as `_n2d`: its last lines call or register `_n2d`; they call
        // or register the wrapper instead, defined just before them.
        Shell::Zsh => {
            let tail = "if [ \"$funcstack[1]\" = \"_n2d\" ]; then\n    _n2d \"$@\"\nelse\n    compdef _n2d n2d\nfi\n";
            let wrapper = include_str!("completions/names.zsh");
            let dynamic = format!(
                "{wrapper}\nif [ \"$funcstack[1]\" = \"_n2d\" ]; then\n    _n2d_names \"$@\"\nelse\n    compdef _n2d_names n2d\nfi\n"
            );
            match script.strip_suffix(tail) {
                Some(head) => format!("{head}{dynamic}"),
                None => script,
            }
        }
        _ => script,
    }
}

/// Writes `n2d.1` and `n2d-<command>.1` for every command and subcommand into `dir`, readable
/// by every user (n2d's own umask is 077: its state is private, its man pages are not).
pub fn man_pages(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let readable = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make {} readable", path.display()))
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        readable(dir, 0o755)?;
    }
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    // n2d.1 gains what clap does not know: examples, the environment, files, exit statuses.
    let main = dir.join("n2d.1");
    let mut page =
        std::fs::read_to_string(&main).with_context(|| format!("cannot read {}", main.display()))?;
    page.push_str(MAIN_PAGE_SECTIONS);
    std::fs::write(&main, page).with_context(|| format!("cannot write {}", main.display()))?;
    for page in page_names(&cmd, "") {
        readable(&dir.join(page), 0o644)?;
    }
    Ok(())
}

/// The sections of `n2d.1` after clap's (roff).
const MAIN_PAGE_SECTIONS: &str = r#".SH EXAMPLES
.nf
n2d create dev && docker \-\-context dev ps
n2d exec dev \-\- df \-h /var/lib/docker
n2d cp ./site dev:/srv/
n2d create web \-\-mount $PWD && docker \-\-context web run \-v $PWD:/app busybox ls /app
n2d swarm create lab \-\-managers 3 \-\-workers 5 \-\-memory 1G
docker \-\-context lab stack deploy \-c stack.yml demo
n2d \-v start \-\-all
n2d rm \-f dev; n2d swarm rm lab
.fi
.SH ENVIRONMENT
.TP
\fBN2D_HOME\fR
The state home (images, machines, swarms, certificates). Default: \fB$XDG_DATA_HOME/n2d\fR, else \fB~/.local/share/n2d\fR.
.TP
\fBN2D_RUN_DIR\fR
Host-wide network state (bridges, taps, leases). Default: \fB/run/n2d\fR.
.TP
\fBN2D_LOCK_TIMEOUT\fR
Seconds to wait for the state lock, 0\(en86400 (default 120).
.TP
\fBN2D_LOG\fR
What \fB\-v\fR shows, in tracing's filter syntax (\fBdebug\fR, \fBn2d_vm=debug\fR); overrides \fB\-v\fR.
.TP
\fBN2D_QEMU\fR
The QEMU binary to run instead of qemu\-system\-x86_64.
.TP
\fBN2D_NO_KVM\fR
Set to anything: never use KVM (emulation only).
.TP
\fBN2D_TCG_THREAD\fR, \fBN2D_TCG_TB_SIZE\fR
Emulation's threading (single or multi) and translation cache size in MiB (16\(en2048).
.TP
\fBN2D_SSH_CONFIG\fR
An ssh_config file for n2d's connections to other hosts (\fBssh \-F\fR); host keys are checked whatever it says.
.TP
\fBN2D_INIT\fR
A static x86\-64 guest init to build images with, instead of the built\-in one (as \fBimage build \-\-init\fR).
.SH FILES
.TP
\fB$N2D_HOME/images/ID/\fR
An image: vmlinuz, initrd.img, rootfs.erofs, image.json; its warm templates under templates/.
.TP
\fB$N2D_HOME/machines/NAME/\fR
A machine: its record, disks, QEMU's sockets and pid, serial.log; with host folders, each virtiofsd's log (vfs\-N.log).
.TP
\fB$N2D_HOME/remotes/NAME.json\fR, \fB$N2D_HOME/remote\-machines/NAME.json\fR
The hosts added with \fBn2d host add\fR; which host each remote machine runs on (the machine itself is in that host's home).
.TP
\fB$N2D_HOME/swarms/NAME.json\fR, \fB$N2D_HOME/certs/\fR
Swarm records; the home's CA and client certificate (the docker CLI's DOCKER_CERT_PATH).
.SH EXIT STATUS
0 success; 1 a failure at run time (the message says what failed); 2 bad input, an unknown machine or a refused request (nothing was changed); 130 interrupted (what was begun is rolled back).
"#;

/// The files `generate_to` writes: `n2d.1`, then `n2d-<sub>[-<subsub>].1` for each command.
fn page_names(cmd: &clap::Command, prefix: &str) -> Vec<String> {
    let name =
        if prefix.is_empty() { cmd.get_name().to_string() } else { format!("{prefix}-{}", cmd.get_name()) };
    let mut pages = vec![format!("{name}.1")];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.extend(page_names(sub, &name));
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_command() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        for page in ["n2d.1", "n2d-create.1", "n2d-swarm-create.1", "n2d-image-build.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.contains(".TH"), "{page} is not a man page");
        }
        let main = std::fs::read_to_string(dir.path().join("n2d.1")).unwrap();
        assert!(main.contains("swarm"), "n2d.1 does not list the swarm command");
        for section in [".SH EXAMPLES", ".SH ENVIRONMENT", ".SH FILES", ".SH EXIT STATUS", "N2D_LOG"] {
            assert!(main.contains(section), "n2d.1 has no {section}");
        }
    }

    #[test]
    fn man_pages_are_readable_by_every_user_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("share/man/man1");
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let written = man_pages(&dir);
        rustix::process::umask(old);
        written.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o755);
        let pages: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(pages.len() > 30, "{pages:?}");
        for page in pages {
            assert_eq!(mode(&page), 0o644, "{}", page.display());
        }
    }

    #[test]
    fn zsh_and_fish_scripts_complete_names_through_n2d() {
        let zsh = completion_script(clap_complete::Shell::Zsh);
        assert!(zsh.contains("_n2d_names() {") && zsh.ends_with("compdef _n2d_names n2d\nfi\n"), "{zsh}");
        assert!(!zsh.contains("compdef _n2d n2d"), "the static function is still the one registered");
        let fish = completion_script(clap_complete::Shell::Fish);
        assert!(fish.contains("(__n2d_names machine)") && fish.contains("n2d swarm ls -q"));
    }

    #[test]
    fn bash_completion_knows_the_commands_and_flags() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "n2d", &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("complete -F _n2d"), "not a bash completion script");
        for word in ["create", "swarm", "--memory", "--workers"] {
            assert!(script.contains(word), "{word} missing from the completion script");
        }
    }
}
