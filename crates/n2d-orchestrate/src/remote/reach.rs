//! Before a swarm across hosts forms: every node must reach every other on the swarm's TCP
//! ports (2377 managers, 7946 gossip). Nothing listens there yet, so each node tries to
//! connect from inside (bash's /dev/tcp, over `n2d exec`): refused is reached, a timeout or no
//! route is not. A failure names the pair and the port. UDP (7946, 4789 for overlay
//! networks) cannot be told apart this way and is not checked.

use super::RemoteError;
use crate::{Error, Orchestrator, Result};
use n2d_store::MachineRecord;

/// The swarm's TCP ports between nodes.
pub const SWARM_TCP_PORTS: [u16; 2] = [2377, 7946];

/// Run in a node with `IP:PORT` arguments: one line `IP:PORT ok|blocked` each.
pub const PROBE: &str = r#"for t in "$@"; do
  if err=$(timeout 3 bash -c "exec 3<>/dev/tcp/${t%:*}/${t#*:}" 2>&1) || printf '%s' "$err" | grep -q refused; then
    echo "$t ok"
  else
    echo "$t blocked"
  fi
done"#;

/// The `IP:PORT` a probe's output says are blocked.
pub fn blocked(output: &str) -> Vec<String> {
    output.lines().filter_map(|l| l.strip_suffix(" blocked")).map(str::to_string).collect()
}

impl<R: n2d_exec::Runner, H: n2d_vm::Hypervisor, C: n2d_swarm::Connector> Orchestrator<R, H, C> {
    /// Checks that each of `nodes` reaches every other on [`SWARM_TCP_PORTS`] (in parallel,
    /// one probe per node); the first pair that does not is the error.
    pub(crate) fn check_node_reach(&self, nodes: &[MachineRecord]) -> Result<()> {
        let ports = SWARM_TCP_PORTS.map(|p| format!("{p}/tcp")).join(" and ");
        self.progress.say(&format!("Checking that the nodes reach each other on {ports}..."));
        let results: Vec<(String, Result<String>)> = std::thread::scope(|scope| {
            let probes: Vec<_> = nodes
                .iter()
                .map(|from| {
                    let targets: Vec<String> = nodes
                        .iter()
                        .filter(|to| to.spec.name != from.spec.name)
                        .flat_map(|to| SWARM_TCP_PORTS.map(|p| format!("{}:{p}", to.ip)))
                        .collect();
                    scope.spawn(move || (from.spec.name.to_string(), self.probe_from(from, &targets)))
                })
                .collect();
            probes.into_iter().map(|p| p.join().expect("a probe does not panic")).collect()
        });
        for (from, output) in results {
            if let Some(target) = blocked(&output?).into_iter().next() {
                let (ip, port) = target.split_once(':').unwrap_or((&target, "?"));
                let to = nodes
                    .iter()
                    .find(|n| n.ip.to_string() == ip)
                    .map_or(ip.to_string(), |n| n.spec.name.to_string());
                return Err(Error::NodesCannotReach { from, to, ip: ip.to_string(), port: port.to_string() });
            }
        }
        Ok(())
    }

    /// [`PROBE`] in node `from`, wherever it runs; its output.
    fn probe_from(&self, from: &MachineRecord, targets: &[String]) -> Result<String> {
        let name = &from.spec.name;
        let mut argv: Vec<String> = ["bash", "-c", PROBE, "probe"].map(String::from).to_vec();
        argv.extend(targets.iter().cloned());
        if let Some(remote) = self.home.load_remote_machine(name)? {
            let host = self.remote_host(&remote.host)?;
            let mut args = vec!["exec".to_string(), name.to_string(), "-T".into(), "--".into()];
            args.extend(argv);
            let out = self.call_host(&remote.host, &host.url, &args, b"")?;
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        let (status, stdout, stderr) = self.run_in_guest(name, argv)?;
        if status != 0 {
            return Err(RemoteError::BadAnswer {
                name: n2d_spec::host::HostName::local(),
                command: format!("exec {name} (the reach probe)"),
                reason: stderr,
            }
            .into());
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reports_blocked_targets_and_runs_in_a_real_bash() {
        assert_eq!(blocked("10.0.0.2:2377 ok\n10.0.0.2:7946 blocked\n"), ["10.0.0.2:7946"]);
        // The probe itself, here: a port nobody listens on is refused, which is reached. (What
        // does not route is judged by the e2e lab: this machine's own network may answer
        // for any address.)
        let out =
            std::process::Command::new("bash").args(["-c", PROBE, "probe", "127.0.0.1:1"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "127.0.0.1:1 ok\n");
    }
}
