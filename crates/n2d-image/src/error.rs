//! What a failed build says, and the stage it failed in. It depends on none of the build's
//! modules: the pipeline ([`crate::build`]), the input checks ([`crate::inputs`]) and the
//! unshare-mode check ([`crate::unshare`]) all return [`BuildError`], and the limits its
//! messages quote live here beside it.

use crate::cache::CacheError;
use crate::init::{InitProblem, INIT_FIX};
use n2d_exec::ExecError;
use n2d_store::StoreError;
use std::io;
use std::path::PathBuf;

/// A Debian userland uses ids up to 65534 (nobody): the namespace maps 65536 of them.
pub const MIN_SUBORDINATE_IDS: u64 = 65536;
/// A suite's longest name (Debian's are short: `trixie`, `bookworm-backports`).
pub const MAX_SUITE_LEN: usize = 40;

/// The stages a build goes through, in order (for progress display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStage {
    Rootfs,
    Kernel,
    Modules,
    RootImage,
    Initramfs,
    Store,
}

impl BuildStage {
    pub const ALL: [BuildStage; 6] = [
        BuildStage::Rootfs,
        BuildStage::Kernel,
        BuildStage::Modules,
        BuildStage::RootImage,
        BuildStage::Initramfs,
        BuildStage::Store,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            BuildStage::Rootfs => "building the Debian userland (mmdebstrap)",
            BuildStage::Kernel => "unpacking the kernel",
            BuildStage::Modules => "selecting kernel modules",
            BuildStage::RootImage => "packing the root filesystem (erofs)",
            BuildStage::Initramfs => "packing the initramfs",
            BuildStage::Store => "storing the image",
        }
    }

    pub fn number(self) -> usize {
        BuildStage::ALL.iter().position(|s| *s == self).expect("listed") + 1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the guest init ({source_desc}) cannot be the VM's PID 1: {problem}; {fix}", fix = INIT_FIX)]
    UnusableInit { source_desc: String, problem: InitProblem },
    #[error("building an image as an ordinary user needs {program}, which is not installed: install uidmap (as root: apt-get install uidmap), or build as root")]
    UidmapMissing { program: &'static str },
    #[error("building an image as an ordinary user needs a range of at least {min} subordinate ids for {user} in {file}: add one (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}, with ranges no other user has), or build as root", min = MIN_SUBORDINATE_IDS)]
    NoSubordinateIds { user: String, file: &'static str },
    #[error(transparent)]
    MissingTool(ExecError),
    #[error("{stage} failed", stage = .stage.describe())]
    Tool {
        stage: BuildStage,
        #[source]
        source: ExecError,
    },
    #[error("{stage} failed", stage = .stage.describe())]
    Io {
        stage: BuildStage,
        #[source]
        source: io::Error,
    },
    #[error("the kernel package has no modules named {0:?}: the image recipe does not fit this kernel")]
    UnknownModules(Vec<String>),
    #[error("the kernel package holds no kernel (no boot/vmlinuz-* and usr/lib/modules/*)")]
    NoKernel,
    #[error("cannot store the image")]
    Store(#[source] StoreError),
    #[error("the mirror {url:?} cannot be used: {problem}")]
    BadMirror { url: String, problem: String },
    #[error("{0:?} is not a Debian suite: give a suite or codename such as trixie, stable or bookworm-backports (lower case letters, digits and '-', starting with a letter, at most {max} characters)", max = MAX_SUITE_LEN)]
    BadSuite(String),
    #[error("{0:?} is not a Debian package name (lower case letters, digits, '+', '-', '.'; give a local file with --deb)")]
    BadPackageName(String),
    #[error("the package file {path} (--deb) cannot be used: {problem}")]
    BadDeb { path: PathBuf, problem: String },
    #[error("the Docker archive {path} (--docker-archive) cannot be used: {problem}")]
    BadDockerArchive { path: PathBuf, problem: String },
    #[error("--offline, and the package cache {cache} is empty: build once with the network (without --offline), or pass --mirror file:///PATH (a local Debian mirror)")]
    OfflineNoCache { cache: PathBuf },
    #[error("{why}, and the package cache {cache} lacks {missing:?}: build once with the network and these packages, or pass --mirror file:///PATH (a local Debian mirror)", missing = .missing.join(", "))]
    CacheLacks { why: &'static str, cache: PathBuf, missing: Vec<String> },
    #[error("no network ({host} cannot be reached) and no cached packages for {suite} in {cache}: build once online, or pass --mirror file:///PATH (a local Debian mirror)")]
    NoNetworkNoCache { host: String, suite: String, cache: PathBuf },
    #[error("the package {name:?} does not exist in {suite} (or has no installable version): check its name (apt-cache policy {name}), or drop it from --include")]
    UnknownPackage {
        name: String,
        suite: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot keep the downloaded packages in the package cache")]
    Cache(#[source] CacheError),
}

impl BuildError {
    /// A mistake in the build's inputs (exit status 2), found before any work.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BuildError::UnusableInit { .. }
                | BuildError::BadMirror { .. }
                | BuildError::BadSuite(_)
                | BuildError::BadPackageName(_)
                | BuildError::BadDeb { .. }
                | BuildError::BadDockerArchive { .. }
        )
    }
}
