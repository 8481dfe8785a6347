//! What the single-machine commands read and ask for, below the CLI: a create's flags checked
//! into a spec (`n2d create`), the home's machines with their states (`n2d ls`), a machine's
//! serial log (`n2d logs`) and console, its forwards (`n2d port`), and the queries the CLI
//! needs of the home.

use crate::image::ImageBuild;
use crate::{Error, Orchestrator, Result};
use n2d_exec::Runner;
use n2d_spec::address::IpRange;
use n2d_spec::machine::{parse_label, MachineName, MachineSpec};
use n2d_spec::ports::PortForward;
use n2d_spec::swarm::SwarmName;
use n2d_store::SwarmRecord;
use n2d_store::{AdoptedHost, MachineRecord};
use n2d_vm::{Hypervisor, VmState};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `n2d create`'s flags (the machine part, shared with nothing else).
#[derive(Debug, Clone, Default)]
pub struct MachineRequest {
    /// Default: the hypervisor's.
    pub cpus: Option<u32>,
    pub memory: String,
    pub disk: String,
    /// Default: [`Orchestrator::default_network`].
    pub network: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub ip_range: Option<IpRange>,
    pub insecure_tcp: bool,
    /// `KEY=VALUE`.
    pub labels: Vec<String>,
    pub publish: Vec<PortForward>,
    pub expose: bool,
    /// Host folders (`--mount`), host paths as typed.
    pub mounts: Vec<n2d_spec::mount::HostMount>,
}

/// A machine as `n2d ls` shows it.
#[derive(Debug, Clone)]
pub struct ListedMachine {
    pub record: MachineRecord,
    pub state: VmState,
    /// Stopped with its running state saved (`n2d suspend`): `start` resumes it.
    pub suspended: bool,
    /// A newer build of its image (`image build --refresh`), by ID.
    pub newer_image: Option<String>,
}

/// The home's machines (`n2d ls`): its own, by name (or why a record cannot be read), then the
/// adopted ones.
#[derive(Debug)]
pub struct Listing {
    pub machines: Vec<(String, Result<ListedMachine, String>)>,
    pub adopted: Vec<(MachineName, Result<AdoptedHost, String>)>,
}

/// What `n2d start --all` did.
#[derive(Debug)]
pub struct StartedAll {
    pub plan: crate::start_all::StartAllPlan,
    /// Each stopped machine (in the plan's order) and its record once started, or why not.
    pub started: Vec<(MachineName, Result<MachineRecord>)>,
}

impl StartedAll {
    /// An error naming the machines that did not start (or cannot be read), if any.
    pub fn result(&self) -> Result<()> {
        let failed: Vec<String> = self
            .plan
            .unreadable
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.started.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.to_string()))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let total = self.plan.stopped.len() + self.plan.unreadable.len();
        Err(Error::Failed(format!(
            "{} of {total} machines did not start: {}",
            failed.len(),
            failed.join(", ")
        )))
    }
}

/// Said once per run (the CLI is one run).
static SAID_USER_NETWORK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl<R, H, C> Orchestrator<R, H, C> {
    /// The state home's directory.
    pub fn home_root(&self) -> &Path {
        self.home.root()
    }

    /// Where the CA and the user's client certificate are.
    pub fn certs_dir(&self) -> PathBuf {
        self.home.certs_dir()
    }

    /// Tightens the permissions of the home; returns each path changed.
    pub fn tighten_home(&self) -> Result<Vec<PathBuf>> {
        Ok(self.home.tighten()?)
    }

    /// A machine of this home (not an adopted one) of that name exists.
    pub fn machine_exists(&self, name: &MachineName) -> bool {
        self.home.machine_exists(name)
    }

    /// The swarm's record, if there is one.
    pub fn find_swarm(&self, name: &SwarmName) -> Result<Option<SwarmRecord>> {
        Ok(self.home.load_swarm(name)?)
    }

    /// The names of the home's swarms (or why one cannot be read).
    pub fn swarm_names(&self) -> Vec<Result<SwarmName>> {
        self.home.swarm_names().into_iter().map(|r| r.map_err(Error::from)).collect()
    }

    /// The network a machine gets without `--network`: n2d's bridge as root (or with
    /// CAP_NET_ADMIN in the ambient set), user-mode networking otherwise, said once per run.
    pub fn default_network(&self) -> String {
        let (network, note) = crate::preflight::network_for(n2d_net::require_root().is_ok());
        if let Some(note) =
            note.filter(|_| !SAID_USER_NETWORK.swap(true, std::sync::atomic::Ordering::Relaxed))
        {
            self.progress.say(note);
        }
        network
    }
}

impl<R: Runner, H: Hypervisor, C: n2d_swarm::Connector> Orchestrator<R, H, C> {
    /// The spec `req` asks for, checked (flags, name free, network choice) before anything is
    /// built or created; its image is left empty (see [`Orchestrator::create_machine_from`]).
    pub fn plan_machine(&self, name: &MachineName, req: &MachineRequest) -> Result<MachineSpec> {
        if req.network.as_deref() == Some(n2d_net::wireguard::WIREGUARD_NETWORK) {
            return Err(Error::Usage("--network wireguard links the hosts of a swarm: use it with `n2d swarm create NAME --on local,HOST... --network wireguard`; a single machine joins a bridge or `user`".into()));
        }
        let labels = req.labels.iter().map(|l| parse_label(l)).collect::<Result<BTreeMap<_, _>, _>>()?;
        let spec = MachineSpec {
            name: name.clone(),
            cpus: req.cpus.unwrap_or_else(|| self.hypervisor.default_cpus()),
            memory: crate::error::size_flag("--memory", &req.memory)?,
            disk: crate::error::size_flag("--disk", &req.disk)?,
            bridge: req.network.clone().unwrap_or_else(|| self.default_network()),
            addresses: req.ip.map(IpRange::single).or(req.ip_range),
            image: String::new(),
            insecure_tcp: req.insecure_tcp,
            labels,
            publish: req.publish.clone(),
            expose: req.expose,
            mounts: resolve_mounts(&req.mounts)?,
        };
        spec.validate()?;
        self.check_new_machine(&spec)?;
        if !spec.user_network() {
            self.net.check_choice(&self.runner, &spec.bridge, spec.addresses)?;
        }
        Ok(spec)
    }

    /// `n2d create`: the machine of a planned `spec` on `image` (see
    /// [`Orchestrator::resolve_image`]), created and booted.
    pub fn create_machine_from(
        &self,
        mut spec: MachineSpec,
        image: Option<&str>,
        default: &ImageBuild,
        timeout: Duration,
    ) -> Result<MachineRecord> {
        spec.image = self.resolve_image(image, default)?.manifest.id;
        self.create_machine(&spec, None, timeout)
    }

    /// `n2d create`: the request checked into a spec ([`Orchestrator::plan_machine`]), then this
    /// host's checks ([`Orchestrator::preflight`], on `probe`), then the machine created and
    /// booted on `image` ([`Orchestrator::create_machine_from`]). Nothing is built or created
    /// before every check passed.
    pub fn create_machine_checked(
        &self,
        probe: &dyn crate::preflight::HostProbe,
        name: &MachineName,
        req: &MachineRequest,
        image: Option<&str>,
        default: &ImageBuild,
        timeout: Duration,
    ) -> Result<MachineRecord> {
        let spec = self.plan_machine(name, req)?;
        let target = crate::preflight::Target {
            bridge: spec.bridge.clone(),
            image: image.map(str::to_string),
            mounts: !spec.mounts.is_empty(),
        };
        self.preflight(probe, &target)?;
        if req.insecure_tcp {
            self.progress.say("WARNING: --insecure-tcp: the Docker API listens on plain TCP port 2375 with no authentication; anyone who can reach the VM is root on it");
        }
        self.create_machine_from(spec, image, default, timeout)
    }

    /// `n2d start --all`: every stopped machine of the home, in parallel (bounded); which are
    /// started is said first. See [`StartedAll::result`].
    pub fn start_all(&self, timeout: Duration) -> StartedAll {
        let plan = self.plan_start_all();
        if !plan.stopped.is_empty() {
            let names: Vec<&str> = plan.stopped.iter().map(MachineName::as_str).collect();
            self.progress.say(&format!("Starting {} machines: {}", names.len(), names.join(", ")));
        }
        let results = self.start_machines(&plan.stopped, timeout);
        let started = plan
            .stopped
            .iter()
            .zip(results)
            .map(|(name, result)| (name.clone(), result.and_then(|_| self.load_record(name))))
            .collect();
        StartedAll { plan, started }
    }

    /// `n2d ls`.
    pub fn list(&self) -> Listing {
        // Machines booting an image that `image build --refresh` has since rebuilt.
        let newer = n2d_image::newer_builds(&self.home);
        let machines = self
            .home
            .list_machines()
            .into_iter()
            .map(|(name, record)| {
                let listed = record.map_err(|e| e.to_string()).map(|record| {
                    let state = self.machine_state(&record.spec.name);
                    ListedMachine {
                        state,
                        suspended: state == VmState::Stopped && self.has_saved_state(&record.spec.name),
                        newer_image: newer.get(&record.spec.image).cloned(),
                        record,
                    }
                });
                (name, listed)
            })
            .collect();
        let adopted = self
            .home
            .list_adopted()
            .into_iter()
            .map(|(name, h)| (name, h.map_err(|e| e.to_string())))
            .collect();
        Listing { machines, adopted }
    }

    /// The directory of a machine (`n2d inspect`).
    pub fn machine_dir(&self, name: &MachineName) -> PathBuf {
        self.home.machine_dir(name)
    }

    /// `n2d logs NAME [-f] [-n N] [--raw]`: the serial log written to `out`, streamed (constant
    /// memory), with terminal controls stripped unless `raw` (it is the guest's output), from its
    /// last `tail` lines when asked (found from the end). Following, a restart's fresh log is
    /// read from its start; Ctrl-C ends it.
    pub fn write_log(
        &self,
        name: &MachineName,
        follow: bool,
        raw: bool,
        tail: Option<u64>,
        mut out: impl Write,
    ) -> Result<()> {
        use n2d_vm::serial_log::{self, Sanitizer};
        use std::os::unix::fs::MetadataExt;
        let dir = self.home.machine_dir(name);
        let record = self.load_record(name)?;
        let path = serial_log::path(&dir);
        let mut sanitizer = (!raw).then(Sanitizer::new);
        // The log being read (its inode) and how far.
        let mut at: Option<(u64, u64)> = None;
        loop {
            if let Ok(mut f) = n2d_store::safe_fs::open_nofollow(&path) {
                let meta = f.metadata()?;
                if !meta.file_type().is_file() {
                    return Err(Error::Failed(format!("{} is not a regular file", path.display())));
                }
                let offset = match at {
                    Some((ino, offset)) if ino == meta.ino() && offset <= meta.len() => offset,
                    // A new boot's log: from its start, the old one's half sequence forgotten.
                    Some(_) => {
                        sanitizer = (!raw).then(Sanitizer::new);
                        0
                    }
                    None => match tail {
                        Some(n) => serial_log::tail_offset(&mut f, n)?,
                        None => 0,
                    },
                };
                f.seek(SeekFrom::Start(offset))?;
                let read = serial_log::copy(&mut f, &mut out, sanitizer.as_mut())?;
                out.flush()?;
                at = Some((meta.ino(), offset + read));
            }
            if !follow || self.cancelled() {
                return Ok(());
            }
            if self.machine_state(&record.spec.name) == VmState::Stopped {
                std::thread::sleep(Duration::from_secs(1));
            } else {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    /// `n2d console NAME`: attaches the terminal to the running machine's serial console; the
    /// guest's output goes to `out`, n2d's own lines (connected, detached) to `notes`.
    pub fn attach_console(
        &self,
        name: &MachineName,
        out: &mut dyn std::io::Write,
        notes: &mut dyn std::io::Write,
    ) -> Result<()> {
        let record = self.load_record(name)?;
        if self.machine_state(&record.spec.name) != VmState::Running {
            return Err(Error::Usage(format!("{name} is not running: start it with `n2d start {name}`")));
        }
        n2d_vm::console::attach(&self.vm_handle(&record.spec.name), out, notes)?;
        Ok(())
    }

    /// `n2d port NAME` of a machine: its record, which must be on user-mode networking (the
    /// Docker API's forward is `api_port`).
    pub fn machine_forwards(&self, name: &MachineName) -> Result<(MachineRecord, u16)> {
        let r = self.load_record(name)?;
        let Some(api) = r.api_port else {
            return Err(Error::Usage(format!(
                "{name} is on bridge {}: reach its ports at {} (forwards are for user-mode networking)",
                r.spec.bridge, r.ip
            )));
        };
        Ok((r, api))
    }

    /// The swarm `target` names, for `n2d port` (after no machine of that name was found).
    pub fn port_swarm(&self, target: &str) -> Result<SwarmName> {
        let Ok(swarm) = target.parse::<SwarmName>() else {
            return Err(Error::NoSuchTarget(target.to_string()));
        };
        if self.home.load_swarm(&swarm)?.is_none() {
            return Err(Error::NoSuchTarget(target.to_string()));
        }
        Ok(swarm)
    }
}

/// Host folders as the machine records them: each host path an existing directory, made
/// absolute and free of symlinks (QEMU's); a guest path left out is the host path as typed,
/// made absolute (so `--mount $PWD` is `$PWD` inside too), and checked.
pub fn resolve_mounts(mounts: &[n2d_spec::mount::HostMount]) -> Result<Vec<n2d_spec::mount::HostMount>> {
    mounts
        .iter()
        .map(|m| {
            let bad = |reason: String| Error::Usage(format!("--mount {m}: {reason}"));
            let real = m.host.canonicalize().map_err(|e| bad(format!("{}: {e}", m.host.display())))?;
            if !real.is_dir() {
                return Err(bad(format!(
                    "{} is not a directory: share the folder it is in",
                    m.host.display()
                )));
            }
            let guest = if m.guest.is_empty() {
                let typed = std::path::absolute(&m.host).map_err(|e| bad(e.to_string()))?;
                let typed = typed.to_string_lossy().trim_end_matches('/').to_string();
                n2d_spec::mount::check_guest_path(&typed).map_err(|reason| {
                    bad(format!("{reason} (give one: --mount {}:/GUEST_PATH)", m.host.display()))
                })?;
                typed
            } else {
                m.guest.clone()
            };
            if real.to_str().is_none_or(|p| p.contains([',', ':'])) {
                return Err(bad(format!(
                    "{} has `,` or `:` in it, or is not UTF-8: link it elsewhere",
                    real.display()
                )));
            }
            Ok(n2d_spec::mount::HostMount { host: real, guest, read_only: m.read_only })
        })
        .collect()
}
