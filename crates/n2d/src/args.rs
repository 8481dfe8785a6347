//! The command line (clap derive). Every argument definition lives here, and only they: this
//! module uses nothing else of the crate, so `commands/*` depend on it and never the reverse.

use clap::{Args, Parser, Subcommand, ValueEnum};
use n2d_spec::copy::CopyEnd;
use n2d_spec::host::{HostName, SshUrl};
use n2d_spec::machine::MachineName;
use n2d_spec::swarm::SwarmName;
use std::path::PathBuf;

/// The main help's footer: the commands by group (every command is in one: `tests/cli_help.rs`)
/// and a few first steps.
pub const COMMAND_GROUPS: &str = "\
Commands by group:
  machines  create, ls, inspect, ip, env, start, stop, restart, suspend, rm,
            logs, console, exec, cp, port
  swarms    swarm create, ls, env, rm, suspend, scale, upgrade, load,
            add-host
  images    image build, ls, inspect, warm, rm, prune, export
  hosts     host add, ls, rm (other Linux machines that run n2d, over SSH)
  faults    fault partition, delay, pause, kill-engine, fill-disk, clock, run, ls,
            clear (break things on purpose)
  setup     doctor, certs, adopt, completions, man, version

Examples:
  n2d create dev && docker --context dev ps
  n2d exec dev -- df -h /var/lib/docker
  n2d swarm create lab --workers 2 && docker --context lab node ls
  n2d -v start --all

`n2d COMMAND --help` shows a command's flags; `man n2d` the manual.";

#[derive(Debug, Parser)]
#[command(
    name = "n2d",
    version,
    about = "Docker hosts and Docker Swarms in tiny local VMs",
    max_term_width = 100,
    after_help = COMMAND_GROUPS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Show what n2d does, on stderr: -v each external command (QEMU's command line too) with
    /// its exit status and time, and the stages of long work; -vv also QMP and Docker API calls.
    /// N2D_LOG=FILTER overrides it (e.g. N2D_LOG=debug, N2D_LOG=n2d_vm=debug)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and list base images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create a Docker host VM, start it and wait until its Docker API answers over TLS
    #[command(after_help = "\
Examples:
  n2d create dev                        # 1 vCPU under emulation, 2 GiB, a 20 GiB disk
  n2d create big --memory 4G --disk 40G --cpus 2
  n2d create web -p 8080:80             # user-mode networking: host 8080 to 80
  docker --context dev run --rm busybox echo hi")]
    Create(CreateArgs),
    /// List machines
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON instead of a table: one object per machine, every key in every row
        #[arg(long)]
        json: bool,
        /// Print only the names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Show a machine's full record as JSON
    Inspect {
        /// The machine
        name: MachineName,
    },
    /// Print a machine's IP address
    Ip {
        /// The machine
        name: MachineName,
    },
    /// Print the environment that points the docker CLI at a machine (--unset: back to the
    /// default engine)
    Env {
        /// The machine
        #[arg(required_unless_present = "unset")]
        name: Option<MachineName>,
        /// The shell to print for
        #[arg(long, value_enum, default_value_t = Shell::Bash)]
        shell: Shell,
        /// Print the lines that unset DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
        #[arg(long, conflicts_with = "name")]
        unset: bool,
    },
    /// Start stopped machines
    Start(StartArgs),
    /// Stop machines (graceful shutdown, forced after --timeout seconds)
    Stop(StopArgs),
    /// Restart machines
    Restart(StopArgs),
    /// Save running machines whole (memory and devices) and free their memory; `n2d start`
    /// resumes them where they were
    Suspend {
        /// The machines
        names: Vec<MachineName>,
    },
    /// Remove machines: VM, disks, tap, IP lease
    #[command(visible_alias = "delete")]
    Rm {
        /// The machines
        names: Vec<MachineName>,
        /// Remove running machines too (they are killed)
        #[arg(short, long)]
        force: bool,
    },
    /// Show a machine's serial console log (terminal control sequences stripped)
    Logs {
        /// The machine
        name: MachineName,
        /// Keep printing new output
        #[arg(short, long)]
        follow: bool,
        /// Start with the last N lines
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<u64>,
        /// Show the log as the guest wrote it, escape sequences included
        #[arg(long)]
        raw: bool,
    },
    /// Open a root shell in the guest (Ctrl-] detaches)
    Console {
        /// The machine
        name: MachineName,
    },
    /// Run a command in a machine (or swarm node) as root; its exit status is n2d's. A terminal
    /// when stdin and stdout are one
    #[command(after_help = "\
Examples:
  n2d exec dev -- uname -a
  n2d exec dev sh                       # an interactive shell
  echo hi | n2d exec dev -- cat > out.txt
  n2d exec lab-mngr-0 -- docker info --format '{{.Swarm.LocalNodeState}}'")]
    Exec {
        /// The machine
        name: MachineName,
        /// The command and its arguments (put `--` before a command that takes flags)
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
        /// Set an environment variable for the command (repeatable)
        #[arg(short, long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory in the machine [default: /]
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// Never use a terminal, even when stdin and stdout are one (raw bytes through)
        #[arg(short = 'T', long)]
        no_tty: bool,
    },
    /// Copy a file or directory between the host and a machine: one end is NAME:PATH
    #[command(after_help = "\
Into an existing directory the copy keeps its name; otherwise it takes the target's.
A directory copied onto one in the machine merges into it. Files land owned by root in the
machine, and by you on the host.

Examples:
  n2d cp ./app.conf dev:/etc/app.conf
  n2d cp ./site dev:/srv/              # -> dev:/srv/site
  n2d cp dev:/var/log/n2d-init.log .")]
    Cp {
        /// What to copy: a host path, or NAME:PATH in a machine
        source: CopyEnd,
        /// Where to: a host path, or NAME:PATH in a machine
        target: CopyEnd,
    },
    /// Forward a port on the host's 127.0.0.1 to a machine, or to a swarm's routing mesh
    /// (user-mode networking); with only NAME, list the forwards
    Port(PortArgs),
    /// Create and manage Docker Swarms of n2d machines
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Other Linux hosts that run n2d, reached over SSH, to place machines and swarm nodes on
    #[command(subcommand)]
    Host(HostCommand),
    /// Break things on purpose: cut machines from each other, delay their packets, list and
    /// clear what is in force
    #[command(subcommand)]
    Fault(FaultCommand),
    /// Print a shell completion script (e.g. `n2d completions bash > /usr/share/bash-completion/completions/n2d`)
    Completions {
        /// The shell to write the script for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (n2d.1 and one per command) into a directory
    Man {
        /// Where to write them, e.g. /usr/local/share/man/man1
        dir: PathBuf,
    },
    /// Print n2d's version (as `n2d --version`)
    Version,
    /// Certificates: list them with their expiry, re-issue them
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Check that this host has what `create` needs: one line per check, with the fix
    Doctor(DoctorArgs),
    /// Record a machine booted elsewhere from `n2d image export --for NAME` (its Docker
    /// endpoint is checked first), so that `env`, docker contexts and `swarm add-host` work
    Adopt(AdoptArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// List the home's CA, client certificate and each machine's server certificate with
    /// when they expire (those within 30 days are marked)
    Ls {
        /// Print JSON instead of a table: one object per certificate (name, expires,
        /// days_left, serial, expiring, error), every key in every row
        #[arg(long)]
        json: bool,
        /// Print only the certificates' names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Re-issue machines' server certificates (same names) and push them to running machines
    /// without a reboot: each engine restarts (its containers stop, swarm tasks are started
    /// again); a stopped machine gets its new certificate at its next start
    Rotate(RotateArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RotateArgs {
    /// Machines whose server certificates to re-issue
    pub names: Vec<MachineName>,
    /// Every machine of this home
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Re-issue your client certificate (`certs/cert.pem`, `key.pem`): nothing revokes the old
    /// one, which stays valid until it expires (docker contexts keep a copy of it)
    #[arg(long)]
    pub client: bool,
    /// Seconds to wait for each running machine's engine to come back
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args, Clone)]
pub struct AdoptArgs {
    /// The name given to `image export --for`
    pub name: MachineName,
    /// Its Docker endpoint, e.g. tcp://192.168.1.50:2376 or tcp://NAME.mshome.net:2376
    #[arg(long)]
    pub host: String,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Check a host (SSH with your keys or agent and a known host key, the same n2d version,
    /// a passing `n2d doctor` there) and record it
    #[command(after_help = "\
Examples:
  n2d host add lab2 ssh://alice@lab2.example
  n2d host add rack1 ssh://root@10.0.0.7:2222
  n2d host ls")]
    Add {
        /// The host's name in n2d (`local` is this machine)
        name: HostName,
        /// Where it is: ssh://[USER@]HOST[:PORT] (as docker's ssh:// contexts)
        url: SshUrl,
        /// The bridge there that machines placed on this host attach to: one that reaches the
        /// LAN, so that the other hosts reach them [default: that host's n2d0, reached by that
        /// host only]
        #[arg(long, value_parser = bridge_name)]
        network: Option<String>,
        /// The addresses machines on this host may take on that bridge, FIRST-LAST or a CIDR
        /// block: one range per host, not overlapping another host's
        #[arg(long, requires = "network")]
        ip_range: Option<n2d_spec::address::IpRange>,
    },
    /// List the hosts: reachable or not, n2d version, CPUs, free memory, machines
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON instead of a table: one object per host, every key in every row
        #[arg(long)]
        json: bool,
        /// Print only the names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Forget hosts (refused while machines of this home run there, unless --force)
    #[command(visible_alias = "delete")]
    Rm {
        /// The hosts
        #[arg(required = true)]
        names: Vec<HostName>,
        /// Forget the host's machines too (their VMs stay on that host, in its own home)
        #[arg(short, long)]
        force: bool,
    },
    /// Internal: load the docker-save archive on stdin into these machines (what `swarm load`
    /// asks another host to do for its nodes there); prints JSON
    #[command(hide = true)]
    Load {
        /// The machines
        #[arg(required = true)]
        names: Vec<MachineName>,
    },
    /// This host's resources as JSON (what `host ls` asks other hosts for)
    #[command(hide = true)]
    Info {
        /// Print JSON (the only output)
        #[arg(long)]
        json: bool,
    },
    /// Internal: make this host's WireGuard interface for link index N and print its public
    /// key as JSON (what `swarm create --network wireguard` asks each host)
    #[command(hide = true)]
    LinkPrepare {
        /// This host's link index
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
        index: u8,
    },
    /// Internal: set this host's WireGuard peers, routes, link bridge and chain from the JSON
    /// on stdin
    #[command(hide = true)]
    LinkUp,
    /// Internal: remove this host's WireGuard link unless machines still use its bridge;
    /// prints `removed`, `in-use` or `not-linked`
    #[command(hide = true)]
    LinkDown,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Cut machines from the others on their bridge (or from those named with --from), both
    /// directions, in n2d's own bridge filter chains, until `fault clear` or --duration is up
    #[command(after_help = "\
Examples:
  n2d fault partition n2d-wrkr-1                  # from every other machine on its bridge
  n2d fault partition n2d-wrkr-1 --from n2d-mngr-0 --duration 30s
  n2d fault ls
  n2d fault clear")]
    Partition {
        /// The machines to cut (they still reach each other)
        #[arg(required = true)]
        names: Vec<MachineName>,
        /// Cut them only from these machines [default: every other machine on their bridge]
        #[arg(long, value_delimiter = ',')]
        from: Vec<MachineName>,
        /// End it by itself after this long, e.g. 30s or 5m (also if n2d is killed meanwhile:
        /// the next n2d command ends it) [default: until `n2d fault clear`]
        #[arg(long, value_parser = duration)]
        duration: Option<std::time::Duration>,
    },
    /// Delay a machine's outgoing packets (with jitter, loss, duplication, reordering, a rate
    /// limit if asked), through netem inside the guest, until `fault clear` or --duration is up
    #[command(after_help = "\
Examples:
  n2d fault delay n2d-wrkr-0 200ms
  n2d fault delay n2d-wrkr-0 100ms --jitter 20ms --loss 2% --duration 1m")]
    Delay {
        /// The machine
        name: MachineName,
        /// How long each packet waits, e.g. 200ms
        #[arg(value_parser = duration)]
        delay: std::time::Duration,
        /// Up to this much more or less, at random, e.g. 20ms
        #[arg(long, value_parser = duration)]
        jitter: Option<std::time::Duration>,
        /// Drop this share of packets, e.g. 1%
        #[arg(long)]
        loss: Option<n2d_spec::shaping::Percent>,
        /// Send this share of packets twice, e.g. 1%
        #[arg(long)]
        duplicate: Option<n2d_spec::shaping::Percent>,
        /// Send this share of packets at once, ahead of the delayed ones, e.g. 25%
        #[arg(long)]
        reorder: Option<n2d_spec::shaping::Percent>,
        /// Limit the rate, e.g. 1mbit or 500kbit
        #[arg(long)]
        rate: Option<n2d_spec::shaping::Rate>,
        /// End it by itself after this long, e.g. 30s or 5m [default: until `n2d fault clear`]
        #[arg(long, value_parser = duration)]
        duration: Option<std::time::Duration>,
    },
    /// Freeze a machine's vCPUs (QMP stop): it answers nothing until `fault clear` (cont) or
    /// --duration is up
    Pause {
        /// The machine
        name: MachineName,
        /// End it by itself after this long, e.g. 30s or 5m [default: until `n2d fault clear`]
        #[arg(long, value_parser = duration)]
        duration: Option<std::time::Duration>,
    },
    /// Fill a machine's data disk (Docker's /var/lib/docker) with one file, leaving --leave
    /// free, until `fault clear` (the file removed) or --duration is up
    FillDisk {
        /// The machine
        name: MachineName,
        /// Leave this much free, e.g. 10M
        #[arg(long, default_value = "0B")]
        leave: String,
        /// End it by itself after this long, e.g. 30s or 5m [default: until `n2d fault clear`]
        #[arg(long, value_parser = duration)]
        duration: Option<std::time::Duration>,
    },
    /// Set a machine's clock away from the host's, e.g. +5m or -30s, until `fault clear` (set
    /// back to the host's time) or --duration is up
    Clock {
        /// The machine
        name: MachineName,
        /// How far, ahead (+) or behind (-), e.g. +5m or -30s
        #[arg(allow_hyphen_values = true)]
        offset: String,
        /// End it by itself after this long, e.g. 30s or 5m [default: until `n2d fault clear`]
        #[arg(long, value_parser = duration)]
        duration: Option<std::time::Duration>,
    },
    /// Kill a machine's Docker engine (SIGKILL to dockerd); the guest's supervisor starts it
    /// again after its back-off, as after a crash, or keeps it down (--no-restart) until
    /// `n2d fault clear`
    KillEngine {
        /// The machine
        name: MachineName,
        /// Keep the engine down: a fault in force, shown by `fault ls`, ended by `fault clear`
        /// or --duration
        #[arg(long)]
        no_restart: bool,
        /// With --no-restart: end it by itself after this long, e.g. 30s or 5m [default: until
        /// `n2d fault clear`]
        #[arg(long, value_parser = duration, requires = "no_restart")]
        duration: Option<std::time::Duration>,
    },
    /// Run a scenario file of timed steps against a swarm, printing each step as applied and
    /// the nodes' changes, then a report (the file is checked whole before anything runs)
    #[command(after_help = "\
A scenario file:
  steps:
    - at: 10s
      partition: [n2d-wrkr-1]
    - at: 20s
      delay: { node: n2d-wrkr-0, delay: 200ms, jitter: 20ms, loss: 1% }
    - at: 40s
      clear: all
Verbs: partition (with from), delay, pause, kill-engine, fill-disk, clock ({ node, offset }),
clear (all, or a list of nodes).")]
    Run {
        /// The scenario file (YAML)
        file: std::path::PathBuf,
        /// The swarm it runs against
        #[arg(long)]
        swarm: SwarmName,
        /// After the last step, wait this long at most for every node to be Ready with a leader
        #[arg(long, value_parser = duration, default_value = "120s")]
        settle: std::time::Duration,
    },
    /// List the faults in force: where, what, since when, until when
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON instead of a table: one object per fault, every key in every row
        #[arg(long)]
        json: bool,
        /// Print only the machines' names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Internal: wait for the faults with a --duration and end each when its time is up (what
    /// a fault made with --duration starts, in the background); exits when none is left
    #[command(hide = true)]
    Expire,
    /// Undo the faults of these machines [default: every fault]
    Clear {
        /// The machines
        names: Vec<MachineName>,
    },
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    n2d_spec::duration::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Create a swarm: N managers + M workers, created in parallel, joined and labelled
    #[command(after_help = "\
Examples:
  n2d swarm create                      # n2d: 1 manager, 3 workers
  n2d swarm create lab --managers 3 --workers 5 --memory 1G
  n2d swarm create --file cluster.yaml
  docker --context lab stack deploy -c stack.yml demo")]
    Create(SwarmCreateArgs),
    /// List swarms and the health of their nodes
    Ls {
        /// Print JSON instead of a table: one object per swarm, every key in every row
        #[arg(long)]
        json: bool,
        /// Print only the names, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Print the environment that points the docker CLI at a swarm manager
    Env {
        /// The swarm
        name: SwarmName,
        /// The shell to print for
        #[arg(long, value_enum, default_value_t = Shell::Bash)]
        shell: Shell,
    },
    /// Remove a swarm: its VMs, disks, leases and certificates (external hosts only leave)
    Rm {
        /// The swarm
        name: SwarmName,
    },
    /// Suspend every running node of a swarm (`n2d start --all` or `n2d start NODE...` resumes)
    Suspend {
        /// The swarm
        name: SwarmName,
    },
    /// Add or remove nodes (removed nodes are drained first, so services keep running)
    Scale {
        /// The swarm
        name: SwarmName,
        /// How many workers the swarm should have (default: as many as now)
        #[arg(long)]
        workers: Option<u32>,
        /// How many managers the swarm should have (default: as many as now; keep it odd)
        #[arg(long)]
        managers: Option<u32>,
        /// The hosts the swarm is to run on: new nodes are placed over them, and a worker on a
        /// host not named (a lost one) is replaced by one on these [default: as it is]
        #[arg(long, value_name = "HOST", value_delimiter = ',')]
        on: Vec<HostName>,
        /// Seconds to wait for new nodes to be Ready and removed ones to be drained
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Boot the new nodes, even when a warm template could be cloned
        #[arg(long)]
        cold: bool,
    },
    /// Load a `docker save` archive into every node
    Load {
        /// The swarm
        name: SwarmName,
        /// The archive (`docker save -o FILE IMAGE...`)
        archive: PathBuf,
    },
    /// Move a live swarm to another image, one node at a time without downtime: workers first,
    /// the managers last (never below quorum); each drained, restarted on the new image with its
    /// data disk, Ready and active again before the next. Interrupted, it leaves every node on
    /// the old or the new image, active; run it again to continue
    #[command(after_help = "\
Examples:
  n2d image build --refresh          # a newer image, if packages changed
  n2d swarm upgrade lab --dry-run    # the plan
  n2d swarm upgrade lab              # to the newest image
  n2d swarm upgrade lab --image 3f2a9c")]
    Upgrade {
        /// The swarm
        name: SwarmName,
        /// Image ID (or prefix) to move to [default: the newest image]
        #[arg(long)]
        image: Option<String>,
        /// Print the plan (which nodes, in which order) and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Seconds each node has to boot on the new image
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Join a Docker engine n2d did not create to the swarm as a worker
    AddHost(AddHostArgs),
}

#[derive(Debug, Args)]
pub struct SwarmCreateArgs {
    /// Name of the swarm and prefix of its node names (NAME-mngr-0, NAME-wrkr-0...) [default:
    /// n2d]
    pub name: Option<SwarmName>,
    /// Cluster file (YAML) describing the swarm; replaces NAME and the flags below
    #[arg(long = "file", conflicts_with_all = ["name", "prefix", "managers", "workers", "cpus", "memory", "network", "ip_range", "labels", "publish", "expose", "mounts"])]
    pub file: Option<PathBuf>,
    /// The same as NAME (what older versions took)
    #[arg(long, conflicts_with = "name")]
    pub prefix: Option<SwarmName>,
    /// Spread the nodes over these hosts (`local` is this one; see `n2d host add`): managers on
    /// distinct hosts first, workers where the most memory is free [default: local only]
    #[arg(long, value_name = "HOST", value_delimiter = ',')]
    pub on: Vec<HostName>,
    /// Manager nodes (keep it odd: 1, 3, 5) [default: 1]
    #[arg(long)]
    pub managers: Option<u32>,
    /// Worker nodes [default: 3]
    #[arg(long)]
    pub workers: Option<u32>,
    /// Virtual CPUs per node [default: 1 under emulation (single-threaded TCG), 2 with KVM]
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per node, e.g. 1536M [default: 1G]
    #[arg(long)]
    pub memory: Option<String>,
    /// Bridge to attach the nodes to, `user` for user-mode networking, or `wireguard` (with
    /// --on) for each host's own bridge, the hosts linked with WireGuard [default: n2d0 as
    /// root, created if absent; user otherwise]
    #[arg(long, value_parser = bridge_name)]
    pub network: Option<String>,
    /// Publish a port on the host's 127.0.0.1 to the routing mesh, [HOST:]GUEST (user-mode
    /// networking; repeatable)
    #[arg(long, short = 'p')]
    pub publish: Vec<n2d_spec::ports::PortForward>,
    /// Let other networks (the LAN, other bridges) open connections to the nodes' addresses:
    /// by default n2d's firewall drops them (bridges n2d made; `expose: true` in a cluster file)
    #[arg(long)]
    pub expose: bool,
    /// The addresses the nodes take, FIRST-LAST or a CIDR block (needed on a bridge n2d did
    /// not create)
    #[arg(long)]
    pub ip_range: Option<n2d_spec::address::IpRange>,
    /// Label KEY=VALUE[@TARGET] of nodes, TARGET a node name, all (the default), workers or
    /// managers: the node's swarm label (`node.labels.KEY` in placement) and its engine's
    /// label (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Share a host folder, HOST_PATH[:GUEST_PATH][:ro]; inside at the same path unless
    /// GUEST_PATH is given, so `docker run -v $PWD:/app` works as on the host (repeatable)
    #[arg(long = "mount", value_name = "HOST_PATH[:GUEST_PATH][:ro]")]
    pub mounts: Vec<n2d_spec::mount::HostMount>,
    /// Image ID (or prefix) every node boots [default: the default image, built if needed]
    #[arg(long)]
    pub image: Option<String>,
    /// Seconds to wait for the nodes to boot and become Ready
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Keep what was created when the command fails (for debugging)
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Boot, even when a warm template could be cloned (see `n2d image warm`)
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// A machine, or a swarm (its port then reaches the routing mesh through one running node)
    pub name: String,
    /// GUEST (the same port on the host) or HOST:GUEST, TCP
    #[arg(conflicts_with = "remove")]
    pub forward: Option<n2d_spec::ports::PortForward>,
    /// Remove the forward of this host port
    #[arg(long = "rm", value_name = "HOST_PORT")]
    pub remove: Option<u16>,
    /// List the forwards as JSON: host_port, guest_port, what (docker-api, published or
    /// routing-mesh) and through (the node holding a swarm's forward, else null)
    #[arg(long, conflicts_with_all = ["forward", "remove"])]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddHostArgs {
    /// The swarm to join
    pub name: SwarmName,
    /// The engine to join, e.g. tcp://192.168.1.20:2376, or the name of a machine recorded by
    /// `n2d adopt` (its endpoint and this home's certificates are used)
    #[arg(long)]
    pub host: String,
    /// Name to record the host under [default: from --host]
    #[arg(long = "as")]
    pub host_name: Option<String>,
    /// CA certificate the engine's TLS certificate is checked against [default: this home's CA]
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// Client certificate presented to the engine [default: this home's client certificate]
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// Key of the client certificate [default: this home's client key]
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Label KEY=VALUE of the added node in the swarm (`node.labels.KEY` in placement); its
    /// engine is not changed (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// Check this bridge instead of n2d0
    #[arg(long, value_parser = bridge_name)]
    pub network: Option<String>,
    /// Print JSON instead of lines
    #[arg(long)]
    pub json: bool,
    /// Complete or undo what an n2d that was killed left half done (every command that changes
    /// state also does this first)
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the base image (kernel, initramfs, read-only root) from Debian packages
    Build(ImageBuildArgs),
    /// List built images
    Ls {
        /// Print JSON instead of a table (each image's manifest)
        #[arg(long)]
        json: bool,
        /// Print only the image IDs, one per line
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Show what an image is made of (its inputs) and the size of each part
    Inspect {
        /// Image ID or unique prefix
        id: String,
        /// The whole manifest as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove images no machine uses
    Rm {
        /// Image IDs or unique prefixes
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove every image no machine of this home uses
    Prune,
    /// Make a warm template of an image ahead of time: machines of its shape then start from
    /// it in seconds (the first create that needs one makes it otherwise)
    Warm(ImageWarmArgs),
    /// Write an image as bootable disks (GPT, UEFI) or a hybrid ISO (BIOS and UEFI) for other
    /// hypervisors: files named n2d-<short id>[-<machine>].<img|qcow2|vhdx|vmdk|iso>
    Export(ImageExportArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ImageWarmArgs {
    /// Image ID (or prefix) [default: the newest image]
    pub id: Option<String>,
    /// Virtual CPUs of the machines it serves [default: 1 under emulation (single-threaded
    /// TCG), 2 with KVM]
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory of the machines it serves, as `n2d create --memory` [`swarm create`: 1G]
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Data disk size of the machines it serves
    #[arg(long, default_value = "20G")]
    pub disk: String,
    /// Bridge or `user`, as `n2d create --network` [default: n2d0 as root; user otherwise]
    #[arg(long, value_parser = bridge_name)]
    pub network: Option<String>,
}

#[derive(Debug, Args, Clone)]
#[command(after_help = "Disks: an EFI system partition with a unified kernel image, the read-only root \
(n2d-root), a config partition (n2d-config) and a data partition (n2d-data, /var/lib/docker) filling \
the rest. Without --for the machine runs DHCP and serves Docker on its local console only; with \
--for NAME it gets a TLS endpoint on port 2376 with a certificate for NAME.internal, NAME.local, \
NAME.mshome.net and the --ip, and `n2d adopt NAME --host tcp://ADDRESS:2376` records it.

Examples:
  n2d image export --format qcow2,iso --output ~/exports
  n2d image export --format vhdx --for web1 --hyperv \\
      --address 192.168.1.50/24 --gateway 192.168.1.1")]
pub struct ImageExportArgs {
    /// Image ID (or prefix) [default: the newest image; none is built]
    pub id: Option<String>,
    /// One or more of raw, qcow2, vhdx, vmdk, iso, separated by commas
    #[arg(long, value_name = "FORMAT[,FORMAT...]")]
    pub format: n2d_orchestrate::image::FormatList,
    /// Directory to write the files to (it must exist)
    #[arg(long, short = 'o', default_value = ".")]
    pub output: PathBuf,
    /// Size of the disk formats (sparse: the data partition takes what the rest leaves)
    #[arg(long, default_value = n2d_orchestrate::image::DEFAULT_DISK_SIZE)]
    pub disk_size: n2d_spec::machine::ByteSize,
    /// Make the export for one machine: its hostname, TLS certificate and network settings
    /// go into the config partition (the ISO's n2d/config)
    #[arg(long = "for", value_name = "NAME")]
    pub for_name: Option<MachineName>,
    /// Static address with prefix length, e.g. 192.168.1.50/24 (needs --for and --gateway;
    /// `--ip`, as older versions spelled it, is the same)
    #[arg(long, alias = "ip", value_name = "CIDR", requires_all = ["for_name", "gateway"], conflicts_with = "dhcp")]
    pub address: Option<n2d_orchestrate::image::HostCidr>,
    /// Default gateway of a static address (needs --address)
    #[arg(long, value_name = "IP", requires = "address")]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Name server of a static address (repeatable) [default: the gateway]
    #[arg(long, value_name = "IP", requires = "address")]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// Lease the address by DHCP (the default for --for)
    #[arg(long, requires = "for_name")]
    pub dhcp: bool,
    /// Label KEY=VALUE of the machine's Docker engine (`docker info`, `engine.labels.KEY` in
    /// placement) (repeatable; needs --for)
    #[arg(long = "label", requires = "for_name")]
    pub labels: Vec<String>,
    /// Also write a PowerShell script that creates and starts a Generation 2 Hyper-V VM from
    /// the VHDX (needs vhdx in --format)
    #[arg(long)]
    pub hyperv: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ImageBuildArgs {
    /// Debian suite for the guest [default: trixie]
    #[arg(long)]
    pub suite: Option<String>,
    /// Debian mirror: http(s)://… or a local mirror file:///PATH (holding dists/SUITE)
    /// [default: http://deb.debian.org/debian; security updates from deb.debian.org/debian-security]
    #[arg(long)]
    pub mirror: Option<String>,
    /// A static n2d-init binary to use instead of the one built into n2d [default: $N2D_INIT]
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Another Debian package for the userland (repeatable)
    #[arg(long = "include", value_name = "PKG")]
    pub include: Vec<String>,
    /// A local .deb file to install into the userland, e.g. an update (repeatable)
    #[arg(long = "deb", value_name = "FILE")]
    pub debs: Vec<PathBuf>,
    /// Docker's static binaries tarball (docker-VERSION.tgz: docker/dockerd, docker/containerd,
    /// docker/runc, …) to run instead of Debian's engine
    #[arg(long, value_name = "PATH")]
    pub docker_archive: Option<PathBuf>,
    /// Never reach the network: take packages from the package cache ($N2D_HOME/cache/debs) or a
    /// file:// mirror
    #[arg(long)]
    pub offline: bool,
    /// Build even if the image exists, to pick up package updates (a new image when anything
    /// changed; machines keep the one they run)
    #[arg(long)]
    pub refresh: bool,
}

/// Machine resources shared by `create` and `swarm create`.
#[derive(Debug, Args, Clone)]
pub struct MachineArgs {
    /// Virtual CPUs [default: 1 under emulation (single-threaded TCG, where more only cost), 2 with KVM]
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 1536M or 2G (unused memory goes back to the host)
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Size of the data disk (/var/lib/docker); grows on demand
    #[arg(long, default_value = "20G")]
    pub disk: String,
    /// Bridge to attach to, or `user` for user-mode networking (no root: Docker API and
    /// published ports on 127.0.0.1) [default: n2d0 as root, created if absent; user otherwise]
    #[arg(long, value_parser = bridge_name)]
    pub network: Option<String>,
    /// The address to give the machine on its bridge [default: the first free one]
    #[arg(long, conflicts_with = "ip_range")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// The addresses the machine may take, FIRST-LAST or a CIDR block (needed on a bridge n2d
    /// did not create)
    #[arg(long)]
    pub ip_range: Option<n2d_spec::address::IpRange>,
    /// Image ID (or prefix) to boot [default: the default image, built if needed]
    #[arg(long)]
    pub image: Option<String>,
    /// Plain TCP on port 2375 with no TLS: anyone who can reach the VM is root on it
    #[arg(long)]
    pub insecure_tcp: bool,
    /// Seconds to wait for the Docker engine to come up
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// The new machine's name (also its hostname and docker context)
    pub name: MachineName,
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Label KEY=VALUE of the machine's Docker engine (`docker info`, `engine.labels.KEY` in
    /// placement) (repeatable)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Publish a port on the host's 127.0.0.1, [HOST:]GUEST (user-mode networking; repeatable)
    #[arg(long, short = 'p')]
    pub publish: Vec<n2d_spec::ports::PortForward>,
    /// Let other networks (the LAN, other bridges) open connections to the machine's address:
    /// by default n2d's firewall drops them, and only the host and machines on its bridge can
    /// (bridges n2d made)
    #[arg(long)]
    pub expose: bool,
    /// Share a host folder, HOST_PATH[:GUEST_PATH][:ro]; inside at the same path unless
    /// GUEST_PATH is given, so `docker run -v $PWD:/app` works as on the host (repeatable)
    #[arg(long = "mount", value_name = "HOST_PATH[:GUEST_PATH][:ro]")]
    pub mounts: Vec<n2d_spec::mount::HostMount>,
    /// Boot, even when a warm template could be cloned (see `n2d image warm`)
    #[arg(long)]
    pub cold: bool,
    /// The host to run it on (see `n2d host add`); its n2d makes it there, with the network
    /// given to `host add` unless --network is given [default: local, this machine]
    #[arg(long, value_name = "HOST")]
    pub on: Option<HostName>,
    /// Internal: the machine is made for the n2d on the other end of this SSH session, whose CA
    /// issues its certificate (requests on stdout, answers on stdin)
    #[arg(long, hide = true)]
    pub tls_relay: bool,
}

#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// The machines
    pub names: Vec<MachineName>,
    /// Start every stopped machine of this home, in parallel (after a host reboot: whole
    /// swarms); each is reported, and the command fails if any did not start
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Seconds to wait for each machine's Docker engine
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Boot suspended machines from their disks, discarding their saved state (what ran in
    /// their memory is lost)
    #[arg(long)]
    pub cold: bool,
}

#[derive(Debug, Args, Clone)]
pub struct StopArgs {
    /// The machines
    pub names: Vec<MachineName>,
    /// Every running machine of this home (swarm nodes included)
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// Seconds to wait for a graceful shutdown before forcing it
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Fish,
    Powershell,
}

/// A bridge name, checked as the store and the spec check it (no path, at most 15 bytes).
pub(crate) fn bridge_name(name: &str) -> Result<String, n2d_spec::machine::MachineSpecError> {
    n2d_spec::machine::validate_bridge_name(name).map(|()| name.to_string())
}
