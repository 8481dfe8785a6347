//! What an image is made of, and the content address derived from it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the builder changes what it produces from the same inputs.
const BUILDER_VERSION: u32 = 5;

/// `SOURCE_DATE_EPOCH` of every build, and the timestamp of every file in the root filesystem:
/// Debian 13's release day (2025-08-09 00:00 UTC). A constant rather than the build's time or
/// the archive's Release date, so that a rebuild from the same packages gives the same bytes
/// whenever and wherever it runs, online or from the package cache (which keeps no Release
/// file of the mirror). What it stamps (`/etc/shadow`'s last-change day, mtimes) says nothing
/// about the packages, which the manifest lists with their versions. Not 0: a shadow last-change
/// day of 0 means "must change the password".
pub const SOURCE_DATE_EPOCH: u64 = 1_754_697_600;

/// The Debian archive used when the user names no mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Where Debian's security updates are published (the `<suite>-security` pocket).
pub const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// The Debian packages that make up the engine; left out of the recipe when the image takes
/// Docker's static binaries instead (`--docker-archive`).
pub const ENGINE_PACKAGES: [&str; 3] = ["docker.io", "containerd", "runc"];

/// The inputs of an image build. Its hash is the image ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Debian suite of the guest userland and kernel.
    pub suite: String,
    /// Debian mirror URL; empty means mmdebstrap's default.
    pub mirror: String,
    /// Packages on top of the `essential` variant.
    pub packages: Vec<String>,
    /// Metapackage whose kernel the image boots.
    pub kernel_package: String,
    /// Modules loaded from the initramfs to reach the root disk.
    pub initrd_modules: Vec<String>,
    /// Modules n2d-init loads once the root is mounted, before dockerd starts.
    pub boot_modules: Vec<String>,
    /// Modules n2d-init loads once Docker answers (the kernel would also load them on demand).
    pub late_modules: Vec<String>,
    /// Directories (relative to the module tree) whose modules ship for on-demand loading.
    pub module_dirs: Vec<String>,
    /// sha256 of the n2d-init binary.
    pub init_sha256: String,
    /// The apt sources, `URI SUITE` (component main): the suite, its `-updates` and `-security`
    /// pockets. Written to the image's `/etc/apt/sources.list` whatever the build read from.
    pub sources: Vec<String>,
    /// Local .deb files installed into the userland (`--deb`), by file name and digest.
    pub local_debs: Vec<DebDigest>,
    /// sha256 of Docker's static binaries tarball (`--docker-archive`) replacing Debian's engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_archive_sha256: Option<String>,
}

/// A .deb and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebDigest {
    pub file: String,
    pub sha256: String,
}

/// One installed package of the userland, as dpkg records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// `apt sources` lines of a recipe: the suite and its pockets from `mirror`, security from
/// Debian's security archive, or from a local mirror when it holds them (`has_dist` says which
/// `dists/<name>` a `file://` mirror holds).
pub fn default_sources(mirror: &str, suite: &str, has_dist: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mirror = if mirror.is_empty() { DEFAULT_MIRROR } else { mirror.trim_end_matches('/') };
    let mut out = vec![format!("{mirror} {suite}")];
    let updates = format!("{suite}-updates");
    let security = format!("{suite}-security");
    if mirror.starts_with("file://") {
        for pocket in [updates, security] {
            if has_dist(&pocket) {
                out.push(format!("{mirror} {pocket}"));
            }
        }
    } else {
        out.push(format!("{mirror} {updates}"));
        out.push(format!("{SECURITY_MIRROR} {security}"));
    }
    out
}

impl Recipe {
    /// The default Docker host: Debian 13's engine (26.x) and 6.12 cloud kernel.
    pub fn docker_host(init_sha256: String) -> Recipe {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Recipe {
            suite: "trixie".into(),
            mirror: String::new(),
            packages: s(&[
                "docker.io",
                "containerd",
                "runc",
                "tini",
                "iptables",
                "iproute2",
                "e2fsprogs",
                "kmod",
            ]),
            kernel_package: "linux-image-cloud-amd64".into(),
            // n2d's own VMs need the first three (n2d-init loads them first); the others, for
            // an exported image on another hypervisor or a CD, load only when no serial root
            // disk appears: SCSI (virtio, Hyper-V, VMware), SATA/IDE and CDs (q35's AHCI, pc's
            // PIIX), the ISO's filesystem and the loop device its root file is attached to, and
            // the NICs of Hyper-V and VMware. NVMe is built into the cloud kernel; it has no
            // e1000/e1000e (VirtualBox, VMware's default NIC): choose virtio-net or vmxnet3 there.
            initrd_modules: s(&[
                "virtio_blk",
                "erofs",
                "overlay",
                "virtio_scsi",
                "sd_mod",
                "sr_mod",
                "ahci",
                "ata_piix",
                "isofs",
                "loop",
                "hv_vmbus",
                "hv_storvsc",
                "vmw_pvscsi",
                "hv_netvsc",
                "vmxnet3",
            ]),
            // What dockerd needs to come up: overlay2, the docker0 bridge, iptables-nft's rules.
            // The legacy iptables tables are not loaded: Debian's iptables is the nft one.
            boot_modules: s(&[
                "virtio_net",
                "virtio_rng",
                "virtio_balloon",
                "overlay",
                "bridge",
                "br_netfilter",
                "veth",
                "nf_tables",
                "nft_compat",
                "nft_chain_nat",
                "nf_nat",
                "nf_conntrack",
                "xt_addrtype",
                "xt_conntrack",
                "xt_MASQUERADE",
                "xt_comment",
                "xt_multiport",
                "xt_nat",
            ]),
            // Swarm's: overlay networks (vxlan, encrypted: xfrm), the routing mesh (IPVS, marks),
            // loaded once Docker answers, off the path to the API.
            late_modules: s(&[
                "vxlan",
                "ip_vs",
                "ip_vs_rr",
                "ip_vs_wrr",
                "ip_vs_sh",
                "xt_ipvs",
                "xt_mark",
                "nf_conntrack_netlink",
                "xfrm_user",
            ]),
            // The network stacks a Docker host may load on demand (netfilter, bridge, tc, IPsec
            // for encrypted overlays, SCTP for `-p 80/sctp`, VLANs for macvlan), not the rest of
            // net/ (NFS's sunrpc, Ceph, TIPC, RDS, SMC and the InfiniBand core they pull in).
            module_dirs: s(&[
                "kernel/net/netfilter/",
                "kernel/net/ipv4/",
                "kernel/net/ipv6/",
                "kernel/net/bridge/",
                "kernel/net/sched/",
                "kernel/net/xfrm/",
                "kernel/net/key/",
                "kernel/net/core/",
                "kernel/net/802/",
                "kernel/net/8021q/",
                "kernel/net/llc/",
                "kernel/net/sctp/",
                "kernel/net/tls/",
                "kernel/net/psample/",
                "kernel/drivers/net/vxlan/",
                "kernel/drivers/net/veth.ko",
                "kernel/drivers/net/dummy.ko",
                "kernel/drivers/net/macvlan.ko",
                "kernel/drivers/net/ipvlan/",
                "kernel/drivers/net/tun.ko",
                "kernel/fs/isofs/",
                "kernel/fs/fat/",
                "kernel/fs/nls/",
            ]),
            init_sha256,
            sources: default_sources("", "trixie", &|_| false),
            local_debs: Vec::new(),
            docker_archive_sha256: None,
        }
    }

    /// The image's `/etc/apt/sources.list`.
    pub fn sources_list(&self) -> String {
        self.sources.iter().map(|s| format!("deb {s} main\n")).collect()
    }

    /// The erofs filesystem UUID: from the recipe's ID, so rebuilds give the same bytes.
    pub fn erofs_uuid(&self) -> String {
        uuid_from_hex(&self.id())
    }

    /// The content address: sha256 of the canonical JSON of the recipe and builder version.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(BUILDER_VERSION.to_le_bytes());
        h.update(serde_json::to_vec(self).expect("recipe serialises"));
        hex::encode(h.finalize())
    }
}

/// A UUID written out of the first 32 hex digits of `hex`.
fn uuid_from_hex(hex: &str) -> String {
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The image artifacts covered by [`ImageManifest::artifacts_sha256`], in digest order
/// (`image.json` describes them).
pub const DIGESTED_ARTIFACTS: [&str; 3] = [crate::KERNEL_FILE, crate::INITRD_FILE, crate::ROOTFS_FILE];

/// sha256 over `(name, bytes)` pairs in the given order: each name, a NUL, the length as 8
/// little-endian bytes, then the bytes, so no two different sets of files hash alike.
pub fn artifacts_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// The ID of a `--refresh` build whose artifacts differ from the stored image's: the recipe's
/// ID and the artifacts' digest, hashed.
pub fn refreshed_id(recipe_id: &str, artifacts_sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(recipe_id.as_bytes());
    h.update(artifacts_sha256.as_bytes());
    hex::encode(h.finalize())
}

/// Stored as `image.json` beside the image files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub id: String,
    /// The recipe's ID: the image's ID, except for a `--refresh` build that picked up updates
    /// (see [`refreshed_id`]).
    pub recipe_id: String,
    pub recipe: Recipe,
    pub kernel_release: String,
    pub created_unix: u64,
    /// Bytes of each artifact, for `image ls` and the size budget.
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    pub rootfs_bytes: u64,
    /// Size of the root filesystem tree before compression.
    pub rootfs_unpacked_bytes: u64,
    /// Every package installed in the userland (dpkg's database), sorted by name.
    pub packages: Vec<Package>,
    /// `SOURCE_DATE_EPOCH` of the build: the time stamped in the userland and the erofs root.
    pub source_date_epoch: u64,
    /// Every .deb that went in (the kernel's too), by file name, with its sha256.
    pub debs: Vec<DebDigest>,
    /// sha256 of the n2d-init binary (`/init` of the initramfs).
    pub init_sha256: String,
    /// [`artifacts_digest`] of [`DIGESTED_ARTIFACTS`].
    pub artifacts_sha256: String,
}

/// Why an `image.json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadManifest {
    #[error("not an image record ({0})")]
    Json(#[from] serde_json::Error),
    #[error("its {field} {value:?} is not {what}")]
    Field { field: &'static str, value: String, what: &'static str },
}

/// The largest size an image's files can claim (bigger is no image n2d built).
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 40;

impl ImageManifest {
    /// Parses an `image.json` and checks what later steps trust: the ID (a directory and file
    /// name) is lower case hex of at most 64 digits, the suite is a suite name, the kernel
    /// release has no quotes or spaces (it goes into the exported UKI's os-release), and every
    /// size is below [`MAX_ARTIFACT_BYTES`] (sums of them never overflow).
    pub fn from_json(bytes: &[u8]) -> Result<ImageManifest, BadManifest> {
        let m: ImageManifest = serde_json::from_slice(bytes)?;
        let bad =
            |field, value: &str, what| Err(BadManifest::Field { field, value: value.to_string(), what });
        let hex = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(&m.id) {
            return bad("id", &m.id, "at most 64 lower case hex digits");
        }
        if !hex(&m.recipe_id) {
            return bad("recipe_id", &m.recipe_id, "at most 64 lower case hex digits");
        }
        if crate::inputs::check_suite(&m.recipe.suite).is_err() {
            return bad("suite", &m.recipe.suite, "a Debian suite name");
        }
        let release_ok = !m.kernel_release.is_empty()
            && m.kernel_release.len() <= 128
            && m.kernel_release.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-_~".contains(&b));
        if !release_ok {
            return bad("kernel_release", &m.kernel_release, "a kernel release (letters, digits, . + - _ ~)");
        }
        let sizes = [m.kernel_bytes, m.initrd_bytes, m.rootfs_bytes, m.rootfs_unpacked_bytes];
        if sizes.iter().any(|&n| n > MAX_ARTIFACT_BYTES) {
            return bad("sizes", &format!("{sizes:?}"), "the sizes of an image's files");
        }
        Ok(m)
    }

    /// The first 12 characters of the ID (cut on a character boundary: a manifest on disk may
    /// hold anything).
    pub fn short_id(&self) -> &str {
        self.id.char_indices().nth(12).map_or(&self.id[..], |(i, _)| &self.id[..i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_id_and_any_change_changes_it() {
        let a = Recipe::docker_host("abc".into());
        assert_eq!(a.id(), Recipe::docker_host("abc".into()).id());
        assert_eq!(a.id().len(), 64);
        assert_ne!(a.id(), Recipe::docker_host("abd".into()).id());
        let mut b = a.clone();
        b.packages.push("strace".into());
        assert_ne!(a.id(), b.id());
        let mut c = a.clone();
        c.docker_archive_sha256 = Some("ff".into());
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn the_default_sources_are_the_suite_its_updates_and_security() {
        let r = Recipe::docker_host("abc".into());
        assert_eq!(
            r.sources_list(),
            "deb http://deb.debian.org/debian trixie main\n\
             deb http://deb.debian.org/debian trixie-updates main\n\
             deb http://deb.debian.org/debian-security trixie-security main\n"
        );
        let own = default_sources("https://m.example/debian/", "trixie", &|_| false);
        assert_eq!(own[..2], ["https://m.example/debian trixie", "https://m.example/debian trixie-updates"]);
        assert_eq!(own[2], "http://deb.debian.org/debian-security trixie-security");
        // A local mirror brings only the pockets it holds.
        let local = default_sources("file:///srv/m", "trixie", &|d| d == "trixie-updates");
        assert_eq!(local, ["file:///srv/m trixie", "file:///srv/m trixie-updates"]);
    }

    #[test]
    fn the_erofs_uuid_follows_the_recipe() {
        let a = Recipe::docker_host("abc".into());
        let uuid = a.erofs_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.replace('-', ""), a.id()[..32]);
        assert_eq!(uuid, Recipe::docker_host("abc".into()).erofs_uuid());
    }

    #[test]
    fn the_artifacts_digest_covers_names_and_bytes_in_order() {
        let d = artifacts_digest([("a", &b"xy"[..]), ("b", &b""[..])]);
        assert_eq!(d.len(), 64);
        assert_eq!(d, artifacts_digest([("a", &b"xy"[..]), ("b", &b""[..])]));
        assert_ne!(d, artifacts_digest([("a", &b"x"[..]), ("b", &b"y"[..])]));
        assert_ne!(d, artifacts_digest([("b", &b""[..]), ("a", &b"xy"[..])]));
        assert_ne!(refreshed_id("r", &d), refreshed_id("r2", &d));
    }
}
