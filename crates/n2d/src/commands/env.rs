//! `n2d env`: the environment that points the docker CLI at a machine.

use crate::args::Shell;
use crate::context::Ctx;
use anyhow::Result;

/// Renders DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH for `shell`. `cert_path` is
/// `None` for plain-TCP engines, which then get DOCKER_TLS_VERIFY and DOCKER_CERT_PATH unset.
pub fn render(shell: Shell, docker_host: &str, cert_path: Option<&str>, eval_hint: &str) -> String {
    let set = |k: &str, v: &str| match shell {
        Shell::Bash => format!("export {k}=\"{v}\"\n"),
        Shell::Fish => format!("set -gx {k} \"{v}\";\n"),
        Shell::Powershell => format!("$Env:{k} = \"{v}\"\n"),
    };
    let unset = |k: &str| match shell {
        Shell::Bash => format!("unset {k}\n"),
        Shell::Fish => format!("set -e {k};\n"),
        Shell::Powershell => format!("Remove-Item Env:\\{k} -ErrorAction SilentlyContinue\n"),
    };
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

pub fn machine_env(ctx: &Ctx, name: &n2d_spec::machine::MachineName, shell: Shell) -> Result<()> {
    // A machine booted elsewhere from an export (`n2d adopt`) is reached with the same certs.
    if !ctx.home.machine_exists(name) {
        if let Some(host) = ctx.home.load_adopted(name)? {
            let certs = ctx.home.certs_dir().to_string_lossy().into_owned();
            print!("{}", render(shell, &host.docker_host, Some(&certs), &format!("n2d env {name}")));
            return Ok(());
        }
    }
    let record = ctx.load_record(name)?;
    let certs = ctx.home.certs_dir();
    let cert_path = (!record.spec.insecure_tcp).then(|| certs.to_string_lossy().into_owned());
    print!("{}", render(shell, &record.docker_host(), cert_path.as_deref(), &format!("n2d env {name}")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_fish_and_powershell_syntax() {
        let bash = render(Shell::Bash, "tcp://10.0.0.2:2376", Some("/c"), "n2d env h1");
        assert!(bash.starts_with("export DOCKER_HOST=\"tcp://10.0.0.2:2376\"\nexport DOCKER_TLS_VERIFY=\"1\"\nexport DOCKER_CERT_PATH=\"/c\"\n"));
        assert!(bash.contains("# eval \"$(n2d env h1)\""));
        let fish = render(Shell::Fish, "tcp://h:2376", Some("/c"), "n2d env h1");
        assert!(fish.contains("set -gx DOCKER_TLS_VERIFY \"1\";"));
        let ps = render(Shell::Powershell, "tcp://h:2376", Some("/c"), "n2d env h1");
        assert!(ps.contains("$Env:DOCKER_CERT_PATH = \"/c\""));
    }

    #[test]
    fn plain_tcp_unsets_tls_variables() {
        let bash = render(Shell::Bash, "tcp://10.0.0.2:2375", None, "n2d env h1");
        assert!(bash.contains("unset DOCKER_TLS_VERIFY\nunset DOCKER_CERT_PATH\n"));
        assert!(!bash.contains("DOCKER_TLS_VERIFY=\"1\""));
    }
}
