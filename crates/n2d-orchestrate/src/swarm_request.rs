//! What the swarm commands ask for, checked below the CLI: a swarm's spec from its cluster
//! file or flags (`n2d swarm create`), a swarm that already exists, an engine outside n2d
//! joining one (`n2d swarm add-host`) and images loaded into its nodes (`n2d swarm load`).

use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_net::wireguard;
use n2d_spec::address::IpRange;
use n2d_spec::machine::MachineName;
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::{LabelRule, SwarmName, SwarmSpec};
use n2d_store::{ExternalHost, SwarmRecord};
use n2d_swarm::{Connector, LoadProgress, TlsPaths};
use n2d_vm::Hypervisor;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `n2d swarm create`'s flags: a cluster file, or the swarm's settings one by one.
#[derive(Debug, Clone, Default)]
pub struct SwarmRequest {
    pub file: Option<PathBuf>,
    pub prefix: Option<SwarmName>,
    pub managers: Option<u32>,
    pub workers: Option<u32>,
    pub cpus: Option<u32>,
    pub memory: Option<String>,
    /// Default: [`Orchestrator::default_network`].
    pub network: Option<String>,
    pub ip_range: Option<IpRange>,
    pub publish: Vec<PortForward>,
    pub expose: bool,
    /// Label rules `KEY=VALUE[@TARGET]`.
    pub labels: Vec<String>,
    pub mounts: Vec<n2d_spec::mount::HostMount>,
    /// The hosts to spread the nodes over (`--on`); empty: this host only.
    pub on: Vec<n2d_spec::host::HostName>,
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// Where each node of `plan` goes among `hosts` ([`crate::remote::placement::place`]), each
    /// remote host asked for its free memory first (one that does not answer fails it all,
    /// before anything is made); says the placement. Returns the nodes placed off this host.
    pub fn place_swarm(
        &self,
        hosts: &[n2d_spec::host::HostName],
        plan: &crate::swarm::SwarmPlan,
    ) -> Result<std::collections::BTreeMap<String, n2d_spec::host::HostName>> {
        use crate::remote::placement::{place, Capacity};
        let mut unique: Vec<n2d_spec::host::HostName> = Vec::new();
        for h in hosts {
            if !unique.contains(h) {
                unique.push(h.clone());
            }
        }
        let mut capacities = Vec::new();
        for host in &unique {
            let free = if host.is_local() {
                self.local_host_info().memory_available
            } else {
                let record = self.remote_host(host)?;
                let info = self.host_info(host, &record.url)?;
                if info.version != crate::remote::VERSION {
                    return Err(crate::remote::RemoteError::VersionMismatch {
                        name: host.clone(),
                        url: record.url,
                        remote: info.version,
                    }
                    .into());
                }
                info.memory_available
            };
            capacities.push(Capacity { host: host.clone(), free });
        }
        let managers: Vec<bool> =
            plan.nodes.iter().map(|n| n.role == n2d_spec::swarm::NodeRole::Manager).collect();
        let memory = plan.specs.first().map_or(0, |s| s.memory.0);
        let placed = place(&managers, &capacities, memory);
        let said: Vec<String> =
            plan.nodes.iter().zip(&placed).map(|(n, h)| format!("{} on {h}", n.name)).collect();
        self.progress.say(&format!("Placement: {}", said.join(", ")));
        Ok(plan
            .nodes
            .iter()
            .zip(placed)
            .filter(|(_, h)| !h.is_local())
            .map(|(n, h)| (n.name.clone(), h))
            .collect())
    }
}

/// `--network wireguard` links hosts: it needs other hosts (`--on`), and their subnets are n2d's.
fn check_linked_request(req: &SwarmRequest, spec: &SwarmSpec) -> Result<()> {
    if req.on.iter().all(|h| h.is_local()) {
        return Err(Error::Usage(
            "--network wireguard links the hosts of a swarm across hosts: name them with --on (e.g. --on local,h2,h3)"
                .into(),
        ));
    }
    if spec.ip_range.is_some() {
        return Err(Error::Usage("--ip-range has no meaning with --network wireguard: each host's machines take addresses of its own subnet (10.78.N.0/24, N the host's link index)".into()));
    }
    if !spec.publish.is_empty() {
        return Err(Error::Usage("--publish needs --network user; with --network wireguard, reach the routing mesh at any node's address (`n2d ip NODE`)".into()));
    }
    Ok(())
}

/// `n2d swarm add-host`'s flags.
#[derive(Debug, Clone)]
pub struct AddHost {
    pub swarm: SwarmName,
    /// `tcp://HOST:PORT`, or the name of a machine recorded by `n2d adopt`.
    pub host: String,
    /// The name it is recorded (and listed) under (`--as`).
    pub host_name: Option<String>,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    /// `KEY=VALUE`.
    pub labels: Vec<String>,
}

/// The name an external host is recorded (and listed) under: a DNS name, so it can hold no
/// path or control character.
fn check_host_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        return Err(Error::Usage(format!(
            "invalid host name {name:?}: use letters, digits, '-' and '.' (at most 253), or name it with --as"
        )));
    }
    Ok(())
}

impl<R, H, C> Orchestrator<R, H, C> {
    /// The swarm spec from the cluster file or the flags, checked; without a network, the
    /// [default](Orchestrator::default_network) one.
    pub fn swarm_spec(&self, req: &SwarmRequest) -> Result<SwarmSpec> {
        let mut spec = if let Some(file) = &req.file {
            // One byte past the cap is enough to refuse it: never read a huge file (or /dev/zero).
            // Opened without blocking and checked to be a regular file: a FIFO or device is refused.
            let (f, _) = n2d_store::safe_fs::check_input(file, u64::MAX, "a cluster file")?;
            let mut bytes = Vec::new();
            f.take(n2d_spec::swarm::MAX_CLUSTER_FILE as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::ReadFile { path: file.clone(), source })?;
            let mut spec = SwarmSpec::from_yaml_bytes(&bytes)?;
            // A cluster file's relative host folders are relative to the file, as in compose.
            let dir = file.parent().unwrap_or(Path::new("."));
            for m in spec.mounts.iter_mut().filter(|m| m.host.is_relative()) {
                m.host = dir.join(&m.host);
            }
            spec
        } else {
            let mut spec = SwarmSpec::default();
            if let Some(p) = &req.prefix {
                spec.prefix = p.to_string();
            }
            spec.managers = req.managers.unwrap_or(spec.managers);
            spec.workers = req.workers.unwrap_or(spec.workers);
            spec.cpus = req.cpus;
            spec.memory = req.memory.clone();
            spec.network = req.network.clone();
            spec.ip_range = req.ip_range;
            spec.publish = req.publish.clone();
            spec.expose = req.expose;
            spec.mounts = req.mounts.clone();
            spec.labels = req.labels.iter().map(|l| LabelRule::parse(l)).collect::<Result<_, _>>()?;
            spec
        };
        if spec.network.is_none() {
            spec.network = Some(self.default_network());
        }
        spec.mounts = crate::inventory::resolve_mounts(&spec.mounts)?;
        spec.validate()?;
        Ok(spec)
    }
}

/// What `n2d swarm create` did ([`Orchestrator::create_swarm_checked`]).
#[derive(Debug)]
pub enum SwarmCreated {
    /// The swarm existed already and all its `ready` nodes are Ready: nothing was done.
    Existing { record: SwarmRecord, ready: usize },
    /// The swarm was created.
    Created(SwarmRecord),
}

/// What `n2d swarm scale` did ([`Orchestrator::scale_swarm_checked`]).
#[derive(Debug)]
pub enum Scaled {
    /// The swarm already had that many managers and workers.
    Unchanged { managers: u32, workers: u32 },
    /// Nodes were added or removed: the updated record.
    Scaled(SwarmRecord),
}

/// The host checks' target for new nodes: their bridge (the default one when there are none).
fn nodes_target(specs: &[n2d_spec::machine::MachineSpec], image: Option<&str>) -> crate::preflight::Target {
    let bridge =
        specs.first().map_or_else(|| n2d_spec::machine::DEFAULT_BRIDGE.to_string(), |s| s.bridge.clone());
    let mounts = specs.iter().any(|s| !s.mounts.is_empty());
    crate::preflight::Target { bridge, image: image.map(str::to_string), mounts }
}

impl<R: Runner, H: Hypervisor, C: Connector> Orchestrator<R, H, C> {
    /// `n2d swarm create` of a swarm that exists: fine (nothing to do) when all its nodes are
    /// Ready (returns how many), else a usage error saying how to fix or remove it.
    pub fn check_existing_swarm(&self, record: &SwarmRecord) -> Result<usize> {
        let (_, nodes) = self.swarm_nodes(record)?;
        let expected = record.managers.len() + record.workers.len() + record.external_hosts.len();
        let ready = nodes.iter().filter(|n| n.ready()).count();
        if ready >= expected {
            return Ok(ready);
        }
        Err(Error::Usage(format!(
            "swarm {} already exists but only {ready} of {expected} nodes are Ready: fix it with `n2d swarm scale`, or remove it with `n2d swarm rm {}`",
            record.prefix, record.prefix
        )))
    }

    /// `n2d swarm create` of a planned swarm on `image` (see [`Orchestrator::resolve_image`]).
    pub fn create_swarm_from(
        &self,
        spec: &SwarmSpec,
        mut plan: crate::swarm::SwarmPlan,
        image: Option<&str>,
        default: &crate::image::ImageBuild,
        timeout: std::time::Duration,
        keep_on_failure: bool,
    ) -> Result<SwarmRecord> {
        let image = self.resolve_image(image, default)?.manifest.id;
        plan.specs.iter_mut().for_each(|s| s.image = image.clone());
        self.create_swarm(spec, &plan, timeout, keep_on_failure)
    }

    /// `n2d swarm create`: the spec from the request ([`Orchestrator::swarm_spec`]; a note on
    /// its manager count is said); a swarm of that name that exists is checked
    /// ([`Orchestrator::check_existing_swarm`]) and left as it is; else every node's spec and
    /// the network are checked, then this host ([`Orchestrator::preflight`], on `probe`), before
    /// any VM starts, and the swarm is created ([`Orchestrator::create_swarm_from`]).
    pub fn create_swarm_checked(
        &self,
        probe: &dyn crate::preflight::HostProbe,
        req: &SwarmRequest,
        image: Option<&str>,
        default: &crate::image::ImageBuild,
        timeout: std::time::Duration,
        keep_on_failure: bool,
    ) -> Result<SwarmCreated> {
        let mut spec = self.swarm_spec(req)?;
        if let Some(advice) = n2d_spec::swarm::manager_count_advice(spec.managers) {
            self.progress.say(&format!("note: {advice}"));
        }
        let prefix: SwarmName = spec.prefix.parse()?;
        if let Some(existing) = self.find_swarm(&prefix)? {
            let ready = self.check_existing_swarm(&existing)?;
            return Ok(SwarmCreated::Existing { record: existing, ready });
        }
        let linked = spec.network.as_deref() == Some(wireguard::WIREGUARD_NETWORK);
        if !linked {
            return self.create_swarm_planned(probe, req, &spec, image, default, timeout, keep_on_failure);
        }
        // The hosts are linked first (the plan checks their bridges), unlinked again on failure.
        check_linked_request(req, &spec)?;
        spec.network = Some(wireguard::LINK_BRIDGE.to_string());
        spec.ip_range = Some(wireguard::machine_range(crate::remote::link::LOCAL_INDEX));
        let linked: Vec<n2d_spec::host::HostName> = self.link_hosts(&req.on)?.into_keys().collect();
        let created = self.create_swarm_planned(probe, req, &spec, image, default, timeout, keep_on_failure);
        if created.is_err() && !keep_on_failure {
            self.unlink_hosts(&linked);
        }
        created
    }

    #[allow(clippy::too_many_arguments)]
    fn create_swarm_planned(
        &self,
        probe: &dyn crate::preflight::HostProbe,
        req: &SwarmRequest,
        spec: &SwarmSpec,
        image: Option<&str>,
        default: &crate::image::ImageBuild,
        timeout: std::time::Duration,
        keep_on_failure: bool,
    ) -> Result<SwarmCreated> {
        let mut plan = self.plan_swarm(spec)?;
        if !req.on.is_empty() {
            plan.placement = self.place_swarm(&req.on, &plan)?;
        }
        self.preflight(probe, &nodes_target(&plan.specs, image))?;
        let record = self.create_swarm_from(spec, plan, image, default, timeout, keep_on_failure)?;
        Ok(SwarmCreated::Created(record))
    }

    /// `n2d swarm scale`: the scale planned ([`Orchestrator::plan_swarm_scale`]); when it adds
    /// nodes, this host is checked first ([`Orchestrator::preflight`], on `probe`); then carried
    /// out ([`Orchestrator::scale_swarm`]).
    pub fn scale_swarm_checked(
        &self,
        probe: &dyn crate::preflight::HostProbe,
        name: &SwarmName,
        workers: Option<u32>,
        managers: Option<u32>,
        on: &[n2d_spec::host::HostName],
        timeout: std::time::Duration,
    ) -> Result<Scaled> {
        let mut work = self.plan_swarm_scale_on(name, workers, managers, on)?;
        if work.is_empty() {
            return Ok(Scaled::Unchanged { managers: work.want_managers, workers: work.want_workers });
        }
        if work.add.iter().any(|s| s.bridge == wireguard::LINK_BRIDGE) {
            // A linked swarm: every host with a node, old or new, is (re)linked; new nodes here
            // take this host's link subnet (those on other hosts, theirs: `create_remote_node`).
            let mut hosts: Vec<n2d_spec::host::HostName> = work.placement.values().cloned().collect();
            hosts.extend(self.home.list_remote_machines().into_iter().filter_map(|(_, m)| {
                m.ok().filter(|m| m.swarm.as_deref() == Some(name.as_str())).map(|m| m.host)
            }));
            self.link_hosts(&hosts)?;
            for spec in work.add.iter_mut().filter(|s| !work.placement.contains_key(s.name.as_str())) {
                spec.addresses = Some(wireguard::machine_range(crate::remote::link::LOCAL_INDEX));
            }
        }
        if work.add.iter().any(|s| !work.placement.contains_key(s.name.as_str())) {
            let image = work.add.first().map(|s| s.image.clone());
            self.preflight(probe, &nodes_target(&work.add, image.as_deref()))?;
        }
        Ok(Scaled::Scaled(self.scale_swarm(work, timeout)?))
    }

    /// `n2d swarm add-host`: the engine joins the swarm as a worker over TLS (it is sent the
    /// join token); returns the name it is recorded under and the swarm's record.
    pub fn add_host(&self, req: &AddHost) -> Result<(String, SwarmRecord)> {
        let labels = req
            .labels
            .iter()
            .map(|l| n2d_spec::machine::parse_label(l))
            .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
        // `--host NAME` of a machine recorded by `n2d adopt`: its endpoint and the home's certs.
        let adopted = match req.host.parse::<MachineName>() {
            Ok(name) if !req.host.contains("://") => self.home.load_adopted(&name)?,
            _ => None,
        };
        if let Some(host) = adopted {
            let ep = self.adopted_endpoint(&host);
            let req = AddHost {
                host: host.docker_host.clone(),
                host_name: req.host_name.clone().or_else(|| Some(host.name.to_string())),
                tlscacert: ep.tls.as_ref().map(|t| t.ca.clone()),
                tlscert: ep.tls.as_ref().map(|t| t.cert.clone()),
                tlskey: ep.tls.as_ref().map(|t| t.key.clone()),
                ..req.clone()
            };
            return self.add_host(&req);
        }
        let tls = match (&req.tlscacert, &req.tlscert, &req.tlskey) {
            (Some(ca), Some(cert), Some(key)) => {
                Some(TlsPaths { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            // The host is sent the swarm's join token: never over a plain connection.
            (None, None, None) => return Err(Error::Usage(
                "add-host sends the swarm's join token to the host, which needs TLS: give --tlscacert, --tlscert and --tlskey (for an n2d machine, the files in `n2d env NAME`'s DOCKER_CERT_PATH)"
                    .into()
            )),
            _ => return Err(Error::Usage("give all three of --tlscacert, --tlscert and --tlskey".into())),
        };
        let mut record = self.load_swarm(&req.swarm)?;
        let host_name = req.host_name.clone().unwrap_or_else(|| {
            req.host.trim_start_matches("tcp://").split(':').next().unwrap_or("host").to_string()
        });
        check_host_name(&host_name)?;
        n2d_spec::machine::check_labels_size(&host_name, &labels)?;
        let ext = ExternalHost { name: host_name.clone(), docker_host: req.host.clone(), tls, labels };
        self.add_external_host(&mut record, ext)?;
        Ok((host_name, record))
    }

    /// `n2d swarm load NAME ARCHIVE`: the archive checked to be a `docker save` one, then
    /// sent to every node; returns the images each node loaded.
    pub fn load_images(
        &self,
        swarm: &SwarmName,
        archive: &Path,
        on_progress: impl Fn(LoadProgress<'_>) + Send + Sync + 'static,
    ) -> Result<Vec<(String, Vec<String>)>> {
        n2d_swarm::check_docker_save_archive(archive).map_err(|e| Error::Usage(e.to_string()))?;
        let record = self.load_swarm(swarm)?;
        self.load_archive(&record, archive, on_progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_host_names_are_dns_names() {
        check_host_name("web1.example.com").unwrap();
        for bad in ["", "-x", ".x", "a/b", "a b", "a\n", &"a".repeat(254)] {
            let err = check_host_name(bad).unwrap_err();
            assert!(err.is_usage(), "{bad:?}: {err}");
        }
    }
}
