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

fn n2d(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_n2d"))
        .args(args)
        .env("N2D_HOME", home)
        .env("N2D_RUN_DIR", home.join("run"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .output()
        .unwrap()
}

#[test]
fn aliases_version_and_stop_all_work_as_their_long_forms() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    assert_eq!(n2d(home, &["list", "--json"]).stdout, n2d(home, &["ls", "--json"]).stdout);
    // `delete` is `rm`: the same usage error without names.
    let (delete, rm) = (n2d(home, &["delete"]), n2d(home, &["rm"]));
    assert_eq!((delete.status.code(), delete.stderr), (Some(2), rm.stderr));
    let version = n2d(home, &["version"]);
    assert_eq!(String::from_utf8_lossy(&version.stdout), format!("n2d {}\n", env!("CARGO_PKG_VERSION")));
    // `stop --all` with nothing running says so and succeeds; names and --all together are refused.
    let stop_all = n2d(home, &["stop", "--all"]);
    assert_eq!(stop_all.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&stop_all.stderr).contains("no machine is running"));
    assert_eq!(n2d(home, &["stop", "--all", "h1"]).status.code(), Some(2));
    assert_eq!(n2d(home, &["restart", "--all"]).status.code(), Some(0));
    // `env --unset` undoes `env NAME` (no machine needed); with a name it is refused.
    let unset = n2d(home, &["env", "--unset"]);
    assert_eq!(
        String::from_utf8_lossy(&unset.stdout),
        "unset DOCKER_HOST\nunset DOCKER_TLS_VERIFY\nunset DOCKER_CERT_PATH\n"
    );
    assert_eq!(n2d(home, &["env", "h1", "--unset"]).status.code(), Some(2));
    assert_eq!(n2d(home, &["env"]).status.code(), Some(2));
    let no_names = n2d(home, &["stop"]);
    assert!(String::from_utf8_lossy(&no_names.stderr).contains("or --all"));
}

#[test]
fn listings_have_one_row_shape_and_a_quiet_form() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // An adopted machine and a machine whose record cannot be read: rows of other kinds.
    std::fs::create_dir_all(home.join("hosts")).unwrap();
    std::fs::write(home.join("hosts/web.json"), r#"{"name":"web","docker_host":"tcp://192.168.1.50:2376"}"#)
        .unwrap();
    std::fs::create_dir_all(home.join("machines/broken")).unwrap();
    std::fs::write(home.join("machines/broken/machine.json"), b"garbage").unwrap();
    std::fs::create_dir_all(home.join("swarms")).unwrap();
    std::fs::write(home.join("swarms/lab.json"), b"garbage").unwrap();

    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = n2d(home, args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
    };
    let keys = |row: &serde_json::Value| row.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    for args in [&["ls", "--json"][..], &["swarm", "ls", "--json"]] {
        let rows = json(args);
        assert!(rows.len() >= 2 || args[0] == "swarm", "{args:?}: {rows:?}");
        assert!(!rows.is_empty(), "{args:?}");
        for row in &rows {
            assert_eq!(keys(row), keys(&rows[0]), "{args:?}: rows differ in shape: {rows:#?}");
        }
    }
    let names = String::from_utf8(n2d(home, &["ls", "-q"]).stdout).unwrap();
    assert_eq!(names.lines().collect::<Vec<_>>(), ["broken", "web"]);
    let swarms = String::from_utf8(n2d(home, &["swarm", "ls", "-q"]).stdout).unwrap();
    assert_eq!(swarms.trim(), "lab");
    assert_eq!(n2d(home, &["image", "ls", "-q"]).stdout, b"");
    assert_eq!(n2d(home, &["ls", "-q", "--json"]).status.code(), Some(2));
}

/// What bash offers for `words` (the last one being completed), with the generated script, the
/// completion function called as `complete -F` calls it (command, word, previous word).
fn bash_completes(home: &std::path::Path, words: &[&str]) -> Vec<String> {
    let script = n2d(home, &["completions", "bash"]).stdout;
    let script_file = home.join("n2d.bash");
    std::fs::write(&script_file, script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=('{}' {}); COMP_CWORD={}; _n2d_names \"${{COMP_WORDS[0]}}\" \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_file.display(),
        env!("CARGO_BIN_EXE_n2d"),
        quoted.join(" "),
        words.len()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &program])
        .env("N2D_HOME", home)
        .env("N2D_RUN_DIR", home.join("run"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn bash_completes_the_names_of_real_machines_and_swarms() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    for machine in ["web1", "web2", "db"] {
        std::fs::create_dir_all(home.join("machines").join(machine)).unwrap();
        std::fs::write(home.join("machines").join(machine).join("machine.json"), b"{}").unwrap();
    }
    std::fs::create_dir_all(home.join("swarms")).unwrap();
    std::fs::write(home.join("swarms/lab.json"), b"{}").unwrap();
    assert_eq!(bash_completes(home, &["stop", "we"]), ["web1", "web2"]);
    assert_eq!(bash_completes(home, &["-v", "rm", ""]), ["db", "web1", "web2"]);
    assert_eq!(bash_completes(home, &["swarm", "rm", ""]), ["lab"]);
    // Elsewhere, the generated completion: commands, not names.
    let commands = bash_completes(home, &["sta"]);
    assert!(
        commands.contains(&"start".to_string()) && !commands.contains(&"web1".to_string()),
        "{commands:?}"
    );
}

#[test]
fn the_main_help_groups_every_command() {
    let cli = Cli::command();
    let groups = n2d::args::COMMAND_GROUPS;
    let line_of = |group: &str| -> String {
        let start = groups.find(&format!("  {group} ")).unwrap_or_else(|| panic!("no {group} group"));
        // A group runs until the next line that starts another group (or a blank line).
        groups[start..].lines().take_while(|l| !l.is_empty()).take(2).collect::<Vec<_>>().join(" ")
    };
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).map(String::from).collect()
    };
    let all: Vec<String> =
        ["machines", "swarms", "images", "hosts", "setup"].iter().flat_map(|g| words(&line_of(g))).collect();
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        assert!(
            all.contains(&sub.get_name().to_string()),
            "`{}` is in no group of the main help",
            sub.get_name()
        );
    }
    for (parent, group) in [("swarm", "swarms"), ("image", "images"), ("host", "hosts")] {
        let line = words(&line_of(group));
        let cmd = cli.find_subcommand(parent).unwrap();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
            assert!(
                line.contains(&sub.get_name().to_string()),
                "`{parent} {}` is not in {group}",
                sub.get_name()
            );
        }
    }
    let help = String::from_utf8(n2d(std::path::Path::new("/nonexistent"), &["--help"]).stdout).unwrap();
    assert!(help.contains("Commands by group:") && help.contains("Examples:"), "{help}");
}

/// Every verb whose positional is an existing machine, swarm or image, by clap's model: the
/// value's type (`MachineName`, `SwarmName`) or, for images, an `id`/`ids` argument.
fn name_verbs(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, &'static str)>) {
    use std::any::TypeId;
    // These name something new, which no completion can offer.
    const NEW_NAMES: [&str; 4] = ["create", "swarm create", "adopt", "host add"];
    // Hidden verbs are n2d's own, between hosts: nobody types them.
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
        let path = format!("{prefix} {}", sub.get_name()).trim().to_string();
        let kind = sub.get_positionals().next().and_then(|arg| {
            let ty = arg.get_value_parser().type_id();
            if ty == TypeId::of::<n2d_spec::machine::MachineName>() {
                Some("machine")
            } else if ty == TypeId::of::<n2d_spec::swarm::SwarmName>() {
                Some("swarm")
            } else if ty == TypeId::of::<n2d_spec::host::HostName>() {
                Some("host")
            } else if prefix == "image" && matches!(arg.get_id().as_str(), "id" | "ids") {
                Some("image")
            } else {
                None
            }
        });
        if let Some(kind) = kind.filter(|_| !NEW_NAMES.contains(&path.as_str())) {
            out.push((path.clone(), kind));
            out.extend(sub.get_all_aliases().map(|a| (format!("{prefix} {a}").trim().to_string(), kind)));
        }
        name_verbs(sub, &path, out);
    }
}

#[test]
fn name_completions_cover_every_verb_that_takes_a_name() {
    let mut verbs = Vec::new();
    name_verbs(&Cli::command(), "", &mut verbs);
    for expected in [
        ("exec", "machine"),
        ("swarm scale", "swarm"),
        ("image rm", "image"),
        ("delete", "machine"),
        ("host rm", "host"),
    ] {
        assert!(
            verbs.iter().any(|(v, k)| v == expected.0 && *k == expected.1),
            "{expected:?} not in {verbs:?}"
        );
    }
    let scripts = [
        ("bash", include_str!("../src/commands/completions/names.bash")),
        ("zsh", include_str!("../src/commands/completions/names.zsh")),
        ("fish", include_str!("../src/commands/completions/names.fish")),
    ];
    let mut missing = Vec::new();
    for (shell, script) in scripts {
        for (verb, kind) in &verbs {
            let word = verb.rsplit(' ').next().unwrap();
            // The line that lists the verbs of this kind (and of this group: swarm, image).
            let group = verb.split_once(' ').map(|(g, _)| g);
            let listed = script.lines().any(|line| {
                let of_kind =
                    line.contains(&format!("kind={kind}")) || line.contains(&format!("__n2d_names {kind}"));
                let in_group = match group {
                    Some(g) => line.contains(g),
                    None => {
                        !line.contains("swarm)")
                            && !line.contains("image)")
                            && !line.contains("host)")
                            && !line.contains("seen_subcommand_from swarm;")
                            && !line.contains("seen_subcommand_from image;")
                            && !line.contains("seen_subcommand_from host;")
                    }
                };
                of_kind
                    && in_group
                    && line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|w| w == word)
            });
            if !listed {
                missing.push(format!("{shell}: `{verb}` ({kind})"));
            }
        }
    }
    assert!(missing.is_empty(), "name completions miss:\n{}", missing.join("\n"));
}

/// Every flag of every command: (command path, long name, short letter, value name).
fn flags(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, String, Option<char>, String)>) {
    let path = format!("{prefix} {}", cmd.get_name()).trim().to_string();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let value = arg.get_value_names().map(|v| v.join(" ")).unwrap_or_default();
        out.push((path.clone(), long.to_string(), arg.get_short(), value));
    }
    for sub in cmd.get_subcommands() {
        flags(sub, &path, out);
    }
}

#[test]
fn one_meaning_per_flag_letter_and_name_and_every_listing_has_json_and_quiet() {
    let mut all = Vec::new();
    flags(&Cli::command(), "", &mut all);
    let mut problems = Vec::new();
    // A letter stands for one long flag everywhere.
    let mut letters: std::collections::BTreeMap<char, std::collections::BTreeSet<&str>> = Default::default();
    for (_, long, short, _) in &all {
        if let Some(c) = short {
            letters.entry(*c).or_default().insert(long);
        }
    }
    for (c, longs) in &letters {
        // docker's own two meanings of -f, kept on purpose: `rm -f` forces, `logs -f` follows.
        let docker_f = *c == 'f' && longs.iter().all(|l| matches!(*l, "force" | "follow"));
        if longs.len() > 1 && !docker_f {
            problems.push(format!("-{c} means {longs:?}"));
        }
    }
    // A long flag takes the same kind of value everywhere.
    let mut values: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = Default::default();
    for (_, long, _, value) in &all {
        values.entry(long).or_default().insert(value);
    }
    for (long, kinds) in &values {
        if kinds.len() > 1 {
            let at: Vec<&str> = all.iter().filter(|f| f.1 == *long).map(|f| f.0.as_str()).collect();
            problems.push(format!("--{long} takes {kinds:?} (in {at:?})"));
        }
    }
    // Every listing has --json and -q.
    let mut listings = Vec::new();
    fn find_ls(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, bool, bool)>) {
        for sub in cmd.get_subcommands() {
            let path = format!("{prefix} {}", sub.get_name()).trim().to_string();
            if sub.get_name() == "ls" {
                let has = |id: &str| sub.get_arguments().any(|a| a.get_id() == id);
                out.push((path.clone(), has("json"), has("quiet")));
            }
            find_ls(sub, &path, out);
        }
    }
    find_ls(&Cli::command(), "", &mut listings);
    assert!(listings.len() >= 4, "{listings:?}");
    for (path, json, quiet) in &listings {
        if !json || !quiet {
            problems.push(format!("`n2d {path}` lacks --json or -q"));
        }
    }
    assert!(problems.is_empty(), "CLI consistency:\n{}", problems.join("\n"));
}
