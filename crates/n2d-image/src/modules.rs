//! Choosing the kernel modules an image carries, from the kernel package's `modules.dep`.

use std::collections::{BTreeMap, BTreeSet};

/// A module's name as modprobe sees it: file stem, without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The dependency graph of a kernel's modules.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// module path (relative to the module dir) -> paths it depends on
    deps: BTreeMap<String, Vec<String>>,
    /// module name -> path
    paths: BTreeMap<String, String>,
    /// names of modules built into the kernel
    builtin: BTreeSet<String>,
}

impl ModuleDb {
    /// Parses `modules.dep` and `modules.builtin` as written by depmod.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> ModuleDb {
        let mut db = ModuleDb::default();
        for line in modules_dep.lines() {
            let Some((module, deps)) = line.split_once(':') else { continue };
            let module = module.trim().to_string();
            db.paths.insert(module_name(&module), module.clone());
            db.deps.insert(module, deps.split_whitespace().map(str::to_string).collect());
        }
        db.builtin = modules_builtin.lines().filter(|l| !l.trim().is_empty()).map(module_name).collect();
        db
    }

    /// The paths of the named modules, of every module under one of `prefixes`, and of all
    /// their dependencies. Names built into the kernel are skipped; unknown names are returned
    /// as the error.
    pub fn select(&self, names: &[String], prefixes: &[String]) -> Result<BTreeSet<String>, Vec<String>> {
        let mut wanted = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            let name = name.replace('-', "_");
            match self.paths.get(&name) {
                Some(path) => wanted.push(path.clone()),
                None if self.builtin.contains(&name) => {}
                None => unknown.push(name),
            }
        }
        if !unknown.is_empty() {
            return Err(unknown);
        }
        wanted.extend(
            self.deps.keys().filter(|p| prefixes.iter().any(|pre| p.starts_with(pre.as_str()))).cloned(),
        );
        let mut selected = BTreeSet::new();
        while let Some(path) = wanted.pop() {
            if selected.insert(path.clone()) {
                wanted.extend(self.deps.get(&path).into_iter().flatten().cloned());
            }
        }
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/overlayfs/overlay.ko.xz:\n\
kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n\
kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n\
kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz\n\
kernel/net/llc/llc.ko.xz:\n\
kernel/drivers/block/virtio_blk.ko.xz:\n\
kernel/drivers/gpu/drm/drm.ko.xz:\n";

    #[test]
    fn names_are_normalised() {
        assert_eq!(module_name("kernel/net/ipv4/netfilter/nf-nat.ko.xz"), "nf_nat");
        assert_eq!(module_name("virtio_blk.ko"), "virtio_blk");
    }

    #[test]
    fn selection_pulls_in_dependencies_and_prefixes_only() {
        let db = ModuleDb::parse(DEP, "kernel/fs/ext4/ext4.ko\n");
        let sel =
            db.select(&["br-netfilter".into(), "ext4".into()], &["kernel/drivers/block/".into()]).unwrap();
        let names: Vec<String> = sel.iter().map(|p| module_name(p)).collect();
        assert_eq!(names, ["virtio_blk", "stp", "br_netfilter", "bridge", "llc"]); // sorted by path
        assert!(!sel.iter().any(|p| p.contains("drm")));
    }

    #[test]
    fn unknown_modules_are_reported() {
        let db = ModuleDb::parse(DEP, "");
        assert_eq!(db.select(&["overlay".into(), "nope".into()], &[]).unwrap_err(), ["nope"]);
    }
}
