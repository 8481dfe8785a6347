//! A build's inputs, checked before any work: the tools, the recipe and the local files it
//! names, and where the packages come from.

use super::BuildOptions;
use crate::cache::PackageCache;
use crate::error::BuildError;
use crate::init::check_static_x86_64;
use crate::inputs::{self, Mirror};
use crate::recipe::{default_sources, DebDigest, Recipe, ENGINE_PACKAGES};
use n2d_exec::{ExecError, SearchPath};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The external tools a build uses and the Debian packages that ship them.
pub const TOOLS: [(&str, &str); 7] = [
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("depmod", "kmod"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
];

/// Fails with the first missing tool and its package.
pub fn check_tools(search_path: &SearchPath) -> Result<(), BuildError> {
    for (program, package) in TOOLS {
        if !search_path.is_installed_or_in_sbin(program) {
            return Err(BuildError::MissingTool(ExecError::NotInstalled {
                program: program.into(),
                package,
            }));
        }
    }
    Ok(())
}

/// The recipe for the given options (and so the image ID they would produce).
pub fn recipe_for(opts: &BuildOptions) -> Result<Recipe, BuildError> {
    plan(opts).map(|p| p.recipe)
}

/// A build's checked inputs: the recipe, and the local files it names.
#[derive(Debug, Clone)]
pub struct Plan {
    pub recipe: Recipe,
    /// `--deb` files, in the recipe's order.
    pub local_debs: Vec<PathBuf>,
    pub docker_archive: Option<PathBuf>,
}

/// Checks every input (init, mirror, package names, .deb files, Docker archive) before any work
/// and makes the recipe.
pub fn plan(opts: &BuildOptions) -> Result<Plan, BuildError> {
    check_static_x86_64(&opts.init.bytes)
        .map_err(|problem| BuildError::UnusableInit { source_desc: opts.init.source.clone(), problem })?;
    let mut recipe = Recipe::docker_host(hex::encode(Sha256::digest(&opts.init.bytes)));
    if let Some(suite) = &opts.request.suite {
        inputs::check_suite(suite)?;
        recipe.suite = suite.clone();
    }
    let mut local_mirror = None;
    if let Some(mirror) = &opts.request.mirror {
        if let Mirror::Local(path) = inputs::check_mirror(mirror, &recipe.suite)? {
            local_mirror = Some(path);
        }
        recipe.mirror = mirror.trim_end_matches('/').to_string();
    }
    let has_dist =
        |d: &str| local_mirror.as_ref().is_some_and(|m: &PathBuf| m.join("dists").join(d).is_dir());
    recipe.sources = default_sources(&recipe.mirror, &recipe.suite, &has_dist);
    for name in &opts.request.include {
        inputs::check_package_name(name)?;
        if !recipe.packages.contains(name) {
            recipe.packages.push(name.clone());
        }
    }
    for deb in &opts.request.debs {
        let sha256 = inputs::check_deb(deb)?;
        let file = deb.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        recipe.local_debs.push(DebDigest { file, sha256 });
    }
    if let Some(archive) = &opts.request.docker_archive {
        let (sha256, _) = inputs::check_docker_archive(archive)?;
        recipe.packages.retain(|p| !ENGINE_PACKAGES.contains(&p.as_str()));
        recipe.docker_archive_sha256 = Some(sha256);
    }
    Ok(Plan {
        recipe,
        local_debs: opts.request.debs.clone(),
        docker_archive: opts.request.docker_archive.clone(),
    })
}

/// Where a build's packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// The recipe's mirrors (over the network, or a local mirror).
    Mirrors,
    /// The package cache: `--offline`, or the network is down (`no_network` names the host).
    Cache { no_network: Option<String> },
}

/// Decides where packages come from: a local mirror is read in place; `--offline` reads the
/// cache; otherwise the network, unless the mirror cannot be reached, then the cache if it has
/// packages. `reachable` is asked only when the network would be used.
pub fn package_source(
    recipe: &Recipe,
    offline: bool,
    cache: &PackageCache,
    reachable: &dyn Fn(&str, u16) -> bool,
) -> Result<PackageSource, BuildError> {
    let remote: Vec<(String, u16)> = recipe
        .sources
        .iter()
        .filter_map(|s| inputs::host_port(s.split_whitespace().next().unwrap_or("")))
        .collect();
    if remote.is_empty() {
        return Ok(PackageSource::Mirrors);
    }
    let cached = cache.is_usable();
    if offline {
        return if cached {
            Ok(PackageSource::Cache { no_network: None })
        } else {
            Err(BuildError::OfflineNoCache { cache: cache.dir.clone() })
        };
    }
    let (host, port) = &remote[0];
    if reachable(host, *port) {
        return Ok(PackageSource::Mirrors);
    }
    if cached {
        Ok(PackageSource::Cache { no_network: Some(host.clone()) })
    } else {
        Err(BuildError::NoNetworkNoCache {
            host: host.clone(),
            suite: recipe.suite.clone(),
            cache: cache.dir.clone(),
        })
    }
}

/// Whether a TCP connection to the mirror opens within a few seconds (name resolution included).
pub fn tcp_reachable(host: &str, port: u16) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(4)).is_ok())
}

/// The packages a cache-only build needs by name that the cache lacks.
pub(super) fn missing_from_cache(recipe: &Recipe, cache: &PackageCache) -> Vec<String> {
    let have = cache.package_names();
    recipe.packages.iter().chain([&recipe.kernel_package]).filter(|p| !have.contains(*p)).cloned().collect()
}
