//! Shell completions and man pages, generated from the clap definitions in `args.rs` so they
//! never drift from the real command line.

use crate::args::Cli;
use anyhow::{Context as _, Result};
use clap::CommandFactory;
use std::path::Path;

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    // clap_complete panics when its writer fails: render into memory, then write fallibly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "n2d", &mut script);
    crate::out::write_bytes(&script)?;
    Ok(())
}

/// Writes `n2d.1` and `n2d-<command>.1` for every command and subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(())
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
