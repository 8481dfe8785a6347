//! The CLI's help, checked over clap's own model of it: every command and every argument (flags
//! and positionals, in every subcommand) says what it is.

use clap::CommandFactory;
use n2d::args::Cli;

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name()).trim().to_string();
    if cmd.get_about().is_none() && path != "n2d" {
        missing.push(format!("`{path}` has no about text"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("`{path}`: argument {id} has no help text"));
        }
    }
    for sub in cmd.get_subcommands() {
        walk(sub, &path, missing);
    }
}

#[test]
fn every_command_and_argument_has_help_text() {
    let mut missing = Vec::new();
    walk(&Cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "{} without help:\n{}", missing.len(), missing.join("\n"));
}

fn paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        paths(sub, &path, out);
    }
}

#[test]
fn help_fits_an_80_column_terminal() {
    let mut all = vec![vec![]];
    paths(&Cli::command(), &[], &mut all);
    for path in all {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_n2d"))
            .args(&path)
            .arg("--help")
            .env("COLUMNS", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "{path:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 80, "`n2d {} --help` has a line of {widest} columns:\n{text}", path.join(" "));
    }
}
