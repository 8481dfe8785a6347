//! Kernel modules: the list of modules to load, `modules.dep` parsing and load order.

use crate::error::{Error, Result};
use crate::log::info;
use crate::sys::System;
use std::collections::{BTreeMap, HashSet};

/// Module name as the kernel sees it: file stem without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn normalise(name_or_path: &str) -> String {
    let file = name_or_path.rsplit('/').next().unwrap_or(name_or_path);
    let stem =
        [".ko.xz", ".ko.zst", ".ko.gz", ".ko"].iter().find_map(|ext| file.strip_suffix(ext)).unwrap_or(file);
    stem.replace('-', "_")
}

/// Names in a module list file: one a line, `#` starts a comment.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(normalise)
        .collect()
}

/// `modules.dep`: module path -> its dependencies' paths (relative to the module dir).
#[derive(Debug, Default)]
pub struct DepTable {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

impl DepTable {
    pub fn parse(text: &str) -> Self {
        let mut table = DepTable::default();
        for line in text.lines() {
            let Some((module, deps)) = line.split_once(':') else { continue };
            let module = module.trim().to_string();
            let deps = deps.split_whitespace().map(str::to_string).collect();
            table.by_name.insert(normalise(&module), module.clone());
            table.deps.insert(module, deps);
        }
        table
    }

    /// Module paths to load for `names`, each once, every module after its dependencies.
    /// depmod lists a module's dependencies so that the last one must be loaded first.
    pub fn load_order(&self, names: &[String]) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let path = self.by_name.get(&normalise(name)).ok_or_else(|| name.clone())?;
            self.visit(path, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten().rev() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_string());
    }
}

pub fn modules_dir(sys: &dyn System) -> String {
    let release = sys.read_file("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("/usr/lib/modules/{}", String::from_utf8_lossy(&release).trim())
}

/// The modules n2d's own VMs need to reach their root (a virtio disk with an erofs, under an
/// overlay). Stage 1 loads these of its list first, and the rest of the list (other hypervisors'
/// and CDs' drivers, for exported images) only when no serial root disk appears.
pub const OWN_ROOT_MODULES: &[&str] = &["virtio_blk", "erofs", "overlay"];

/// The names in `list_file`; a missing file is an empty list.
pub fn read_list(sys: &dyn System, list_file: &str) -> Result<Vec<String>> {
    match sys.read_file(list_file) {
        Ok(text) => Ok(parse_list(&String::from_utf8_lossy(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::ReadModuleList { path: list_file.into(), source }),
    }
}

/// Splits a list into n2d's own root modules ([`OWN_ROOT_MODULES`]) and the others, in order.
pub fn split_own_root(list: Vec<String>) -> (Vec<String>, Vec<String>) {
    list.into_iter().partition(|m| OWN_ROOT_MODULES.contains(&m.as_str()))
}

/// Loads the modules named in `list_file` (and their dependencies) from `modules_dir`.
/// With `strict`, the first failure is returned; otherwise failures are logged and skipped.
pub fn load_listed(sys: &dyn System, list_file: &str, modules_dir: &str, strict: bool) -> Result<usize> {
    let list = read_list(sys, list_file)?;
    load_names(sys, &list, modules_dir, strict)
}

/// Loads `list` (and dependencies) from `modules_dir`, as [`load_listed`] does.
pub fn load_names(sys: &dyn System, list: &[String], modules_dir: &str, strict: bool) -> Result<usize> {
    if list.is_empty() {
        return Ok(0);
    }
    let dep_file = format!("{modules_dir}/modules.dep");
    let table = sys
        .read_file(&dep_file)
        .map_err(|source| Error::ReadModuleList { path: dep_file.clone(), source })?;
    let table = DepTable::parse(&String::from_utf8_lossy(&table));

    let mut wanted = Vec::new();
    for name in list.iter().cloned() {
        match table.load_order(std::slice::from_ref(&name)) {
            Ok(_) => wanted.push(name),
            Err(name) if strict => return Err(Error::UnknownModule { name, dep_file }),
            Err(name) => info!("module {name} is not in modules.dep; skipped"),
        }
    }
    let order = table.load_order(&wanted).expect("names checked above");
    let mut loaded = 0;
    for rel in order {
        let path = if rel.starts_with('/') { rel.clone() } else { format!("{modules_dir}/{rel}") };
        let compressed = !rel.ends_with(".ko");
        match sys.load_module(&path, compressed) {
            Ok(()) => loaded += 1,
            Err(source) if strict => return Err(Error::LoadModule { name: normalise(&rel), source }),
            // Off its hypervisor a driver's bus is absent (hv_vmbus: ENODEV), and what needs it
            // then cannot resolve its symbols (ENOENT): expected for an exported image.
            Err(e) => info!("module {} not loaded: {e}", normalise(&rel)),
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/crc/crc32c.ko kernel/lib/netfs.ko
kernel/lib/crc/crc32c.ko:
kernel/lib/netfs.ko: kernel/lib/crc/crc32c.ko
kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
";

    #[test]
    fn names_are_normalised_from_paths_and_dashes() {
        assert_eq!(normalise("kernel/net/bridge/br-netfilter.ko.xz"), "br_netfilter");
        assert_eq!(normalise("virtio-blk"), "virtio_blk");
        assert_eq!(parse_list("# stage 1\nvirtio-blk\n\n erofs # fs\n"), ["virtio_blk", "erofs"]);
    }

    #[test]
    fn dependencies_load_first_last_listed_first_and_each_once() {
        let table = DepTable::parse(DEP);
        let names: Vec<String> = ["br-netfilter", "bridge", "erofs", "overlay"].map(String::from).into();
        let order = table.load_order(&names).unwrap();
        let short: Vec<String> = order.iter().map(|p| normalise(p)).collect();
        assert_eq!(short, ["llc", "stp", "bridge", "br_netfilter", "crc32c", "netfs", "erofs", "overlay"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let table = DepTable::parse(DEP);
        assert_eq!(table.load_order(&["ext9".to_string()]), Err("ext9".to_string()));
    }

    #[test]
    fn own_root_modules_come_first_and_the_rest_is_kept_in_order() {
        let list = parse_list("virtio_blk\nvirtio_scsi\nerofs\nsr_mod\noverlay\nloop\n");
        let (own, rest) = split_own_root(list);
        assert_eq!(own, ["virtio_blk", "erofs", "overlay"]);
        assert_eq!(rest, ["virtio_scsi", "sr_mod", "loop"]);
    }

    #[test]
    fn load_listed_uses_full_paths_and_compression_flag() {
        let sys = FakeSystem::new();
        sys.add_file("/etc/n2d/modules", "virtio_net\nnope\n");
        sys.add_file(
            "/m/modules.dep",
            "kernel/net/virtio_net.ko.xz: kernel/net/core/failover.ko.xz\nkernel/net/core/failover.ko.xz:\n",
        );
        // Lenient (stage 2): the unknown module is skipped, the rest loads.
        assert_eq!(load_listed(&sys, "/etc/n2d/modules", "/m", false).unwrap(), 2);
        assert_eq!(
            sys.calls(),
            [
                "load /m/kernel/net/core/failover.ko.xz (compressed)",
                "load /m/kernel/net/virtio_net.ko.xz (compressed)"
            ]
        );
        // Strict (stage 1): it is fatal.
        let err = load_listed(&sys, "/etc/n2d/modules", "/m", true).unwrap_err();
        assert!(matches!(err, Error::UnknownModule { ref name, .. } if name == "nope"), "{err}");
    }
}
