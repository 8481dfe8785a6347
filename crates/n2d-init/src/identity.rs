//! Warm starts: template mode and the identity hand-off (issue 20).
//!
//! A boot to a Docker engine that answers takes seconds; restoring a machine saved running takes
//! far less. So the host boots one machine as a *template* (`GuestConfig::template`), saves it
//! once the ready marker is printed, and restores *clones* from that state, each with a config
//! disk of its own. A template holds nothing its clones could share: its NICs stay down without
//! an address, dockerd serves its local socket only (no TLS key, no TCP port; [`as_template`]).
//!
//! A clone starts as its template to the last byte of memory. The host's `identity <unix_ms>`
//! ([`n2d_proto::ControlRequest::TakeIdentity`]) makes it a machine of its own before anything
//! answers on TCP, in this order (the supervisor's `take_identity`):
//!
//! 1. the wall clock set to the host's (the template's stopped when it was saved);
//! 2. the clone's config disk read past the kernel's cache (which holds the template's) and
//!    checked ([`read_clone_config`]); a config that is not a clone's changes nothing more;
//! 3. the clone's seed mixed into the kernel's RNG and a reseed forced, so that no two clones
//!    share random state;
//! 4. hostname, /etc/hosts, resolv.conf; each NIC found by the template's MAC, given the clone's
//!    and configured as a boot does;
//! 5. a fresh /etc/machine-id;
//! 6. dockerd stopped, its engine ID removed, its TLS files and daemon.json written for the
//!    clone, dockerd started: the ready marker again once it answers.
//!
//! A guest takes one identity: a second `identity`, or one sent to a guest that did not boot
//! as a template, is refused.

use crate::config;
use crate::docker;
use crate::error::{write_err, Error, Result};
use crate::log::info;
use crate::net;
use crate::sys::System;
use n2d_proto::{DockerConfig, GuestConfig};

pub const MACHINE_ID: &str = "/etc/machine-id";

/// What this guest is to warm starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Booted with a config of its own: it has its identity.
    Machine,
    /// Booted as a template (its config as [`as_template`] made it): waits for `identity`.
    Template(Box<GuestConfig>),
    /// A clone that took its identity (or failed to, midway).
    Clone,
}

/// Mixes the config's seed (when it has one) into the kernel's RNG and forces a reseed.
pub fn mix_seed(sys: &dyn System, config: &GuestConfig) -> Result<()> {
    let Some(seed) = &config.seed else { return Ok(()) };
    sys.mix_entropy(&seed.0).map_err(|source| Error::MixEntropy { source })
}

/// A template's config as the guest keeps and applies it: no TLS material, no TCP port (dockerd
/// on its local socket only) and no seed. The host sends none of them to a template; any it
/// sends anyway are dropped, and the console says so.
pub fn as_template(config: &GuestConfig) -> GuestConfig {
    if config.docker.tls.is_some() || config.docker.tcp_port != 0 {
        info!(
            "template: ignoring the config's TLS material ({}) and TCP port ({}); dockerd serves its local socket only",
            if config.docker.tls.is_some() { "given" } else { "none" },
            config.docker.tcp_port
        );
    }
    GuestConfig { docker: DockerConfig { tls: None, tcp_port: 0 }, seed: None, ..config.clone() }
}

/// The clone's config, read again from the config disk past the cache (the template read its
/// own there). Refused unless it is a clone's: not a template's, TLS material in PEM and a TCP
/// port (a clone answers on the network over TLS only), a seed (else clones would share the
/// template's random state), its NIC's MAC, and an uplink exactly when the template has one
/// (a clone has its template's NICs).
pub fn read_clone_config(sys: &dyn System, template: &GuestConfig) -> Result<GuestConfig> {
    let (clone, device) = config::reread_config(sys)?;
    if clone.template {
        return Err(Error::TemplateConfig { device });
    }
    docker::checked_tls(&clone, &device)?;
    if clone.docker.tcp_port == 0 {
        return Err(Error::NoTcpPort { device });
    }
    if clone.seed.is_none() {
        return Err(Error::NoSeed { device });
    }
    if clone.network.mac.is_empty() {
        return Err(Error::NoNicMac { device });
    }
    match (template.uplink.is_some(), clone.uplink.is_some()) {
        (false, true) => Err(Error::UnexpectedUplink { device }),
        (true, false) => Err(Error::MissingUplink { device }),
        _ => Ok(clone),
    }
}

/// Steps 3 to 5: the clone's seed, names, network and machine-id. Returns its configured NIC.
pub fn become_clone(
    sys: &dyn System,
    template: &GuestConfig,
    clone: &GuestConfig,
) -> Result<net::Configured> {
    mix_seed(sys, clone)?;
    // As at boot, before the NICs: a DHCP lease's name servers replace the config's none.
    net::write_identity(sys, clone)?;
    net::assign_clone_macs(sys, template, clone)?;
    let network = net::configure(sys, clone)?;
    write_machine_id(sys)?;
    Ok(network)
}

/// A new random /etc/machine-id: 32 lower-case hex digits, a version 4 UUID's bits set (as
/// systemd makes one), read from the CRNG after the reseed.
pub fn write_machine_id(sys: &dyn System) -> Result<()> {
    let mut id = [0u8; 16];
    sys.random_bytes(&mut id).map_err(|source| Error::RandomBytes { source })?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let mut text: String = id.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    sys.write_file(MACHINE_ID, text.as_bytes(), 0o444).map_err(write_err(MACHINE_ID))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::sys::fake::FakeSystem;

    #[test]
    fn a_template_keeps_no_tls_port_or_seed() {
        let mut config = sample_config();
        config.template = true;
        config.seed = Some(n2d_proto::Seed([7; 32]));
        let template = as_template(&config);
        assert_eq!(template.docker, DockerConfig { tls: None, tcp_port: 0 });
        assert_eq!(template.seed, None);
        assert_eq!((template.network, template.labels), (config.network, config.labels));
    }

    #[test]
    fn the_seed_is_mixed_only_when_there_is_one() {
        let sys = FakeSystem::new();
        mix_seed(&sys, &sample_config()).unwrap();
        assert!(sys.calls().is_empty());
        let mut config = sample_config();
        config.seed = Some(n2d_proto::Seed([7; 32]));
        mix_seed(&sys, &config).unwrap();
        assert_eq!(sys.calls(), ["mix-entropy 32 bytes"]);
    }

    #[test]
    fn machine_id_is_32_hex_digits_from_the_crng() {
        let sys = FakeSystem::new();
        write_machine_id(&sys).unwrap();
        assert_eq!(sys.file(MACHINE_ID).unwrap(), (b"000102030405460788090a0b0c0d0e0f\n".to_vec(), 0o444));
        write_machine_id(&sys).unwrap();
        assert_eq!(sys.file_text(MACHINE_ID), "101112131415461798191a1b1c1d1e1f\n");
    }
}
