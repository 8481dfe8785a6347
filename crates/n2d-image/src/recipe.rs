//! What an image is made of, and the content address derived from it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the builder changes what it produces from the same inputs.
const BUILDER_VERSION: u32 = 3;

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
        }
    }

    /// The content address: sha256 of the canonical JSON of the recipe and builder version.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(BUILDER_VERSION.to_le_bytes());
        h.update(serde_json::to_vec(self).expect("recipe serialises"));
        hex::encode(h.finalize())
    }
}

/// Stored as `image.json` beside the image files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub id: String,
    pub recipe: Recipe,
    pub kernel_release: String,
    pub created_unix: u64,
    /// Bytes of each artifact, for `image ls` and the size budget.
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    pub rootfs_bytes: u64,
    /// Size of the root filesystem tree before compression.
    pub rootfs_unpacked_bytes: u64,
    /// Bytes of the decompressed kernel booted directly (`vmlinux`), if the image has one.
    #[serde(default)]
    pub direct_kernel_bytes: Option<u64>,
}

impl ImageManifest {
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
    }
}
