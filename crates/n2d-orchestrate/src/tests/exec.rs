//! `n2d exec` and `n2d cp` over the fake hypervisor's exec port, whose stand-in guest runs the
//! session's command on this host: the host side's protocol, the copy's tar streams and its
//! guest scripts, targets, and failures.

use super::*;
use crate::exec::ExecRequest;
use crate::ErrorKind;
use n2d_spec::copy::CopyEnd;
use n2d_vm::exec::ExecIo;
use std::path::Path;

fn run(k: &Kit, argv: &[&str], input: &str) -> crate::Result<(i32, String, String)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let request = ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["GREETING=hi there".into()],
        workdir: Some("/tmp".into()),
        terminal: false,
    };
    let io = ExecIo {
        stdin: Box::new(std::io::Cursor::new(input.as_bytes().to_vec())),
        stdout: &mut out,
        stderr: &mut err,
    };
    let status = k.orch.exec(&name("h1"), request, io)?;
    Ok((status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap()))
}

#[test]
fn exec_passes_input_output_environment_and_the_exit_status() {
    let k = kit();
    k.create("h1").unwrap();
    let (status, out, err) =
        run(&k, &["sh", "-c", "cat; echo \" $GREETING from $(pwd)\"; echo warn >&2; exit 7"], "typed")
            .unwrap();
    assert_eq!((status, out.as_str(), err.as_str()), (7, "typed hi there from /tmp\n", "warn\n"));
}

#[test]
fn exec_on_a_stopped_or_unknown_machine_is_a_usage_error() {
    let k = kit();
    k.create("h1").unwrap();
    k.orch.stop_machine(&name("h1"), BOOT).unwrap();
    let err = run(&k, &["true"], "").unwrap_err();
    assert_eq!(err.to_string(), "h1 is not running: start it with `n2d start h1`");
    assert_eq!(err.kind(), ErrorKind::Usage);
    let request = ExecRequest { argv: vec!["true".into()], env: vec![], workdir: None, terminal: false };
    let (mut out, mut e) = (Vec::new(), Vec::new());
    let io = ExecIo { stdin: Box::new(std::io::empty()), stdout: &mut out, stderr: &mut e };
    let err = k.orch.exec(&name("nosuch"), request, io).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err:?}");
}

fn end(s: &str) -> CopyEnd {
    s.parse().unwrap()
}

#[test]
fn cp_copies_files_and_directories_both_ways_and_keeps_names_in_directories() {
    let k = kit();
    k.create("h1").unwrap();
    let host = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    let (h, g) = (host.path(), guest.path().display().to_string());
    std::fs::create_dir_all(h.join("site/css")).unwrap();
    std::fs::write(h.join("site/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(h.join("site/css/a.css"), "a{}").unwrap();
    std::os::unix::fs::symlink("index.html", h.join("site/home.html")).unwrap();
    std::fs::write(h.join("app.conf"), "x=1\n").unwrap();

    // Into an existing directory: the name is kept.
    let report = k.orch.copy(&end(&h.join("site").display().to_string()), &end(&format!("h1:{g}"))).unwrap();
    assert_eq!(report.target, format!("h1:{g}/site"));
    assert!(report.bytes >= 3 * 512, "{report:?}");
    assert_eq!(std::fs::read_to_string(guest.path().join("site/css/a.css")).unwrap(), "a{}");
    assert_eq!(std::fs::read_link(guest.path().join("site/home.html")).unwrap(), Path::new("index.html"));
    // To a new name.
    k.orch
        .copy(&end(&h.join("app.conf").display().to_string()), &end(&format!("h1:{g}/renamed.conf")))
        .unwrap();
    assert_eq!(std::fs::read_to_string(guest.path().join("renamed.conf")).unwrap(), "x=1\n");
    // A file over a file is replaced; nothing is left beside it.
    std::fs::write(h.join("app.conf"), "x=2\n").unwrap();
    k.orch
        .copy(&end(&h.join("app.conf").display().to_string()), &end(&format!("h1:{g}/renamed.conf")))
        .unwrap();
    assert_eq!(std::fs::read_to_string(guest.path().join("renamed.conf")).unwrap(), "x=2\n");
    let names: Vec<_> = std::fs::read_dir(guest.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Back out: into a directory, and to a new name.
    let back = tempfile::tempdir().unwrap();
    let report =
        k.orch.copy(&end(&format!("h1:{g}/site")), &end(&back.path().display().to_string())).unwrap();
    assert_eq!(report.target, back.path().join("site").display().to_string());
    assert_eq!(std::fs::read_to_string(back.path().join("site/index.html")).unwrap(), "<h1>hi</h1>");
    k.orch
        .copy(&end(&format!("h1:{g}/renamed.conf")), &end(&back.path().join("c").display().to_string()))
        .unwrap();
    assert_eq!(std::fs::read_to_string(back.path().join("c")).unwrap(), "x=2\n");
    let names: Vec<_> = std::fs::read_dir(back.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no staging directory is left: {names:?}");
}

#[test]
fn cp_refuses_missing_sources_missing_directories_and_two_ends_of_one_kind() {
    let k = kit();
    k.create("h1").unwrap();
    let host = tempfile::tempdir().unwrap();
    let h = host.path().display().to_string();
    let usage = |from: &str, to: &str, says: &str| {
        let err = k.orch.copy(&end(from), &end(to)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{from} {to}: {err:?}");
        assert!(err.to_string().contains(says), "{from} {to}: {err}");
    };
    usage(&format!("{h}/nosuch"), "h1:/tmp", "nosuch");
    usage(&h, &format!("h1:{h}/no/such/dir/x"), "has no directory");
    usage(&format!("h1:{h}/nosuch"), &h, "h1 has no");
    usage(&format!("h1:{h}"), &format!("{h}/no/such/x"), "there is no directory");
    usage(&h, &h, "neither");
    usage("h1:/a", "h1:/b", "both ends are in machines");
    let names: Vec<_> = std::fs::read_dir(host.path()).unwrap().collect();
    assert!(names.is_empty(), "nothing was made on the host: {names:?}");
}
