//! Before a swarm across hosts forms: every node must reach every other on the swarm's ports
//! (2377/tcp managers, 7946/tcp+udp gossip, 4789/udp overlay networks). Nothing listens there
//! yet, so each node tries from inside (bash's /dev/tcp and /dev/udp, over `n2d exec`):
//! refused is reached (a TCP reset; for UDP, the ICMP port-unreachable that makes a later send
//! on the connected socket fail), a timeout, silence or no route is not. A failure names the
//! pair and the port.

use super::RemoteError;
use crate::{Error, Orchestrator, Result};
use n2d_store::MachineRecord;

/// The swarm's ports between nodes, `PORT/PROTO`.
pub const SWARM_PORTS: [&str; 4] = ["2377/tcp", "7946/tcp", "7946/udp", "4789/udp"];

/// Run in a node with `IP:PORT/PROTO` arguments: one line `IP:PORT/PROTO ok|blocked` each.
/// UDP: three datagrams 0.3 s apart; an ICMP port-unreachable for one fails the next send.
pub const PROBE: &str = r#"for t in "$@"; do
  a=${t%/*}; ip=${a%:*}; port=${a#*:}
  case $t in
  */udp) err=$(timeout 3 bash -c "exec 3<>/dev/udp/$ip/$port; printf x >&3; sleep 0.3; printf x >&3; sleep 0.3; printf x >&3" 2>&1) ;;
  *) err=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ip/$port" 2>&1) && err=refused ;;
  esac
  if printf '%s' "$err" | grep -q refused; then
    echo "$t ok"
  else
    echo "$t blocked"
  fi
done"#;

/// The `IP:PORT/PROTO` a probe's output says are blocked.
pub fn blocked(output: &str) -> Vec<String> {
    output.lines().filter_map(|l| l.strip_suffix(" blocked")).map(str::to_string).collect()
}

impl<R: n2d_exec::Runner, H: n2d_vm::Hypervisor, C: n2d_swarm::Connector> Orchestrator<R, H, C> {
    /// Checks that each of `nodes` reaches every other on [`SWARM_PORTS`] (in parallel, one
    /// probe per node); the first pair that does not is the error.
    pub(crate) fn check_node_reach(&self, nodes: &[MachineRecord]) -> Result<()> {
        let ports = SWARM_PORTS.join(", ");
        self.progress.say(&format!("Checking that the nodes reach each other on {ports}..."));
        let results: Vec<(String, Result<String>)> = std::thread::scope(|scope| {
            let probes: Vec<_> = nodes
                .iter()
                .map(|from| {
                    let targets: Vec<String> = nodes
                        .iter()
                        .filter(|to| to.spec.name != from.spec.name)
                        .flat_map(|to| SWARM_PORTS.map(|p| format!("{}:{p}", to.ip)))
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
        assert_eq!(blocked("10.0.0.2:2377/tcp ok\n10.0.0.2:7946/udp blocked\n"), ["10.0.0.2:7946/udp"]);
        // The probe itself, here: a port nobody listens on is refused, which is reached, over
        // TCP and UDP; a UDP port something listens on (and so never refuses) is silence. (What
        // does not route is judged by the e2e lab: this machine's own network may answer for
        // any address.)
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent = format!("127.0.0.1:{}/udp", listener.local_addr().unwrap().port());
        let out = std::process::Command::new("bash")
            .args(["-c", PROBE, "probe", "127.0.0.1:1/tcp", "127.0.0.1:9/udp", &silent])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("127.0.0.1:1/tcp ok\n127.0.0.1:9/udp ok\n{silent} blocked\n")
        );
    }
}
