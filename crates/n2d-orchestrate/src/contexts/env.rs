//! `n2d env`: the environment that points the docker CLI at a machine.
//!
//! Every value is quoted for the shell that evals it: the certificates' path is under `$N2D_HOME`,
//! which may hold spaces, quotes, `$(...)` or newlines, and must come back byte for byte, never
//! run.

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::machine::MachineName;
use n2d_swarm::Connector;
use n2d_vm::Hypervisor;
use std::path::Path;

/// The shells `n2d env` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Fish,
    Powershell,
}

/// `value` as one word of `shell`, taken literally: POSIX sh/bash single quotes (a `'` becomes
/// `'\''`), fish single quotes (`\` and `'` escaped), PowerShell single quotes (every kind of
/// single quote PowerShell accepts, `'` and U+2018..U+201B, doubled).
pub fn quote(shell: Shell, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match (shell, c) {
            (Shell::Bash, '\'') => out.push_str("'\\''"),
            (Shell::Fish, '\\' | '\'') => {
                out.push('\\');
                out.push(c);
            }
            (Shell::Powershell, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') => {
                out.push(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Renders DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH for `shell`. `cert_path` is
/// `None` for plain-TCP engines, which then get DOCKER_TLS_VERIFY and DOCKER_CERT_PATH unset.
pub fn render(shell: Shell, docker_host: &str, cert_path: Option<&str>, eval_hint: &str) -> String {
    let set = |k: &str, v: &str| match shell {
        Shell::Bash => format!("export {k}={}\n", quote(shell, v)),
        Shell::Fish => format!("set -gx {k} {};\n", quote(shell, v)),
        Shell::Powershell => format!("$Env:{k} = {}\n", quote(shell, v)),
    };
    let unset = |k: &str| unset_line(shell, k);
    let mut out = set("DOCKER_HOST", docker_host);
    match cert_path {
        Some(path) => {
            out += &set("DOCKER_TLS_VERIFY", "1");
            out += &set("DOCKER_CERT_PATH", path);
        }
        None => {
            out += &unset("DOCKER_TLS_VERIFY");
            out += &unset("DOCKER_CERT_PATH");
        }
    }
    let hint = match shell {
        Shell::Bash => format!("eval \"$({eval_hint})\""),
        Shell::Fish => format!("{eval_hint} --shell fish | source"),
        Shell::Powershell => format!("& {eval_hint} --shell powershell | Invoke-Expression"),
    };
    out += &format!("# Run this command to configure your shell:\n# {hint}\n");
    out
}

fn unset_line(shell: Shell, k: &str) -> String {
    match shell {
        Shell::Bash => format!("unset {k}\n"),
        Shell::Fish => format!("set -e {k};\n"),
        Shell::Powershell => format!("Remove-Item Env:\\{k} -ErrorAction SilentlyContinue\n"),
    }
}

/// `n2d env --unset`: the lines that undo [`render`]'s, so the docker CLI talks to its default
/// engine (or context) again.
pub fn render_unset(shell: Shell) -> String {
    ["DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"].iter().map(|k| unset_line(shell, k)).collect()
}

/// The certificates' directory as text for DOCKER_CERT_PATH: a path that is not UTF-8 cannot be
/// written into an environment line without changing it, so it is refused.
pub fn cert_path_text(certs: &Path) -> Result<&str> {
    certs.to_str().ok_or_else(|| Error::CertPathNotUtf8 { path: certs.to_path_buf() })
}

/// What `n2d env NAME` prints, before it is written for a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEnv {
    pub docker_host: String,
    /// DOCKER_CERT_PATH; `None` for plain-TCP engines.
    pub cert_path: Option<String>,
    /// The command that prints this again (`n2d env NAME`), for the hint at the end.
    pub eval_hint: String,
}

impl MachineEnv {
    /// The lines for `shell` (see [`render`]).
    pub fn render(&self, shell: Shell) -> String {
        render(shell, &self.docker_host, self.cert_path.as_deref(), &self.eval_hint)
    }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// The environment that reaches machine `name`'s engine: a machine of this home, or one
    /// booted elsewhere from an export (`n2d adopt`), reached with the same certificates.
    pub fn machine_env(&self, name: &MachineName) -> Result<MachineEnv> {
        let eval_hint = format!("n2d env {name}");
        if !self.home.machine_exists(name) {
            if let Some(host) = self.home.load_adopted(name)? {
                let certs = self.home.certs_dir();
                let cert_path = Some(cert_path_text(&certs)?.to_string());
                return Ok(MachineEnv { docker_host: host.docker_host, cert_path, eval_hint });
            }
            if let Some(remote) = self.home.load_remote_machine(name)? {
                let cert_path = Some(cert_path_text(&self.home.certs_dir())?.to_string());
                let docker_host = self.remote_endpoint(&remote).docker_host;
                return Ok(MachineEnv { docker_host, cert_path, eval_hint });
            }
        }
        let record = self.load_record(name)?;
        let certs = self.home.certs_dir();
        let cert_path =
            if record.spec.insecure_tcp { None } else { Some(cert_path_text(&certs)?.to_string()) };
        Ok(MachineEnv { docker_host: record.docker_host(), cert_path, eval_hint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_undoes_each_variable_in_each_shell() {
        assert_eq!(
            render_unset(Shell::Bash),
            "unset DOCKER_HOST\nunset DOCKER_TLS_VERIFY\nunset DOCKER_CERT_PATH\n"
        );
        assert!(render_unset(Shell::Fish).contains("set -e DOCKER_CERT_PATH;"));
        assert!(render_unset(Shell::Powershell).contains("Remove-Item Env:\\DOCKER_HOST"));
    }

    #[test]
    fn bash_fish_and_powershell_syntax() {
        let bash = render(Shell::Bash, "tcp://10.0.0.2:2376", Some("/c"), "n2d env h1");
        assert!(bash.starts_with("export DOCKER_HOST='tcp://10.0.0.2:2376'\nexport DOCKER_TLS_VERIFY='1'\nexport DOCKER_CERT_PATH='/c'\n"));
        assert!(bash.contains("# eval \"$(n2d env h1)\""));
        let fish = render(Shell::Fish, "tcp://h:2376", Some("/c"), "n2d env h1");
        assert!(fish.contains("set -gx DOCKER_TLS_VERIFY '1';"));
        let ps = render(Shell::Powershell, "tcp://h:2376", Some("/c"), "n2d env h1");
        assert!(ps.contains("$Env:DOCKER_CERT_PATH = '/c'"));
    }

    #[test]
    fn plain_tcp_unsets_tls_variables() {
        let bash = render(Shell::Bash, "tcp://10.0.0.2:2375", None, "n2d env h1");
        assert!(bash.contains("unset DOCKER_TLS_VERIFY\nunset DOCKER_CERT_PATH\n"));
        assert!(!bash.contains("DOCKER_TLS_VERIFY='1'"));
    }

    /// Home paths a careless user or an attacker could give, each to come back byte for byte.
    const HOSTILE: &[&str] = &[
        "/home/a b/n2d/certs",
        "/tmp/it's/certs",
        "/tmp/'/certs'",
        "/tmp/\"quoted\"/certs",
        "/tmp/$(touch MARKER)/certs",
        "/tmp/`touch MARKER`/certs",
        "/tmp/${HOME}$HOME/certs",
        "/tmp/line\nbreak/certs\n",
        "/tmp/back\\slash\\/certs\\",
        "/tmp/'; touch MARKER; echo '/certs",
        "/tmp/\\'\\''/certs",
        "/tmp/tab\there/*?[a]/~/certs",
        "/tmp/!event/#hash/;&|<>/certs",
        "/tmp/ünï‘cödé’/certs",
    ];

    /// Evals the bash output of `render` in `shell` as a user would (`eval "$(n2d env h1)"`)
    /// and returns the three variables as the shell sees them.
    fn eval_in(shell: &str, dir: &Path, docker_host: &str, cert_path: &str) -> Vec<String> {
        let env_file = dir.join("env");
        std::fs::write(&env_file, render(Shell::Bash, docker_host, Some(cert_path), "n2d env h1")).unwrap();
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(r#"cd "$2" && eval "$(cat "$1")" && printf '%s\0' "$DOCKER_HOST" "$DOCKER_TLS_VERIFY" "$DOCKER_CERT_PATH""#)
            .arg(shell)
            .arg(&env_file)
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        text.strip_suffix('\0').unwrap().split('\0').map(str::to_string).collect()
    }

    #[test]
    fn bash_and_sh_read_hostile_paths_back_exactly_and_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for shell in ["bash", "sh"] {
            for path in HOSTILE {
                let host = format!("tcp://h:2376/{path}");
                let got = eval_in(shell, dir.path(), &host, path);
                assert_eq!(got, [host.as_str(), "1", path], "{shell} changed {path:?}");
                assert!(!dir.path().join("MARKER").exists(), "{shell} ran a command hidden in {path:?}");
            }
        }
    }

    /// fish's single quotes: `\\` and `\'` are escapes, anything else (newlines too) is literal.
    fn fish_unquote(word: &str) -> String {
        let inner = word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')).expect("one quoted word");
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('\\' | '\'')) => out.push(e),
                    Some(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => panic!("a backslash before the closing quote escapes it"),
                },
                '\'' => panic!("an unescaped quote ends the word early in {word:?}"),
                _ => out.push(c),
            }
        }
        out
    }

    /// PowerShell's single quotes: any of ' ‘ ’ ‚ ‛ closes the string unless doubled.
    fn powershell_unquote(word: &str) -> String {
        let is_quote = |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
        let mut chars = word.chars().peekable();
        assert!(chars.next().is_some_and(is_quote));
        let mut out = String::new();
        while let Some(c) = chars.next() {
            if is_quote(c) {
                match chars.peek() {
                    Some(&next) if is_quote(next) => {
                        out.push(c);
                        chars.next();
                    }
                    None => return out,
                    Some(_) => panic!("the string ends early in {word:?}"),
                }
            } else {
                out.push(c);
            }
        }
        panic!("unterminated {word:?}")
    }

    #[test]
    fn fish_and_powershell_quoting_round_trips() {
        assert_eq!(quote(Shell::Fish, r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote(Shell::Powershell, "a'b‘c’$(x)"), "'a''b‘‘c’’$(x)'");
        for path in HOSTILE {
            assert_eq!(fish_unquote(&quote(Shell::Fish, path)), *path);
            assert_eq!(powershell_unquote(&quote(Shell::Powershell, path)), *path);
        }
        let fish = render(Shell::Fish, "tcp://h:2376", Some("/it's"), "n2d env h1");
        assert!(fish.contains("set -gx DOCKER_CERT_PATH '/it\\'s';\n"), "{fish}");
        let ps = render(Shell::Powershell, "tcp://h:2376", Some("/it's"), "n2d env h1");
        assert!(ps.contains("$Env:DOCKER_CERT_PATH = '/it''s'\n"), "{ps}");
    }

    #[test]
    fn a_path_that_is_not_utf8_is_refused_not_mangled() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff/certs"));
        assert!(cert_path_text(path).unwrap_err().to_string().contains("not valid UTF-8"));
        assert_eq!(cert_path_text(Path::new("/tmp/ok")).unwrap(), "/tmp/ok");
    }
}
