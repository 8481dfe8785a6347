//! `n2d adopt NAME --host tcp://…`: records a machine booted elsewhere from an export made
//! with `--for NAME`, after checking that its engine answers the home's client certificate
//! with a certificate of the home's CA that names HOST (an IP or DNS SAN: the TLS client's own
//! check) and was issued for NAME (`NAME.internal`): another machine of the same CA, wherever it
//! answers, is refused.

use crate::args::AdoptArgs;
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::error::UsageError;
use anyhow::{Context as _, Result};
use n2d_spec::machine::MachineName;
use n2d_store::AdoptedHost;
use n2d_swarm::{DockerApi, Endpoint, TlsPaths};

/// Checks a `--host` value: `tcp://HOST:PORT`, HOST a name or an IPv4 address (the store's
/// check, which an adopted machine's record passes again whenever it is read).
pub fn check_docker_host(host: &str) -> Result<(String, u16), String> {
    n2d_store::check_docker_host(host)
}

/// The endpoint of an adopted machine: the home's client certificate, as for its own VMs.
pub fn adopted_endpoint(ctx: &Ctx, host: &AdoptedHost) -> Endpoint {
    let certs = ctx.home.certs_dir();
    let ip = check_docker_host(&host.docker_host)
        .ok()
        .and_then(|(h, _)| h.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    Endpoint {
        name: host.name.to_string(),
        ip,
        docker_host: host.docker_host.clone(),
        tls: Some(TlsPaths {
            ca: certs.join(n2d_pki::CA_CERT),
            cert: certs.join(n2d_pki::CLIENT_CERT),
            key: certs.join(n2d_pki::CLIENT_KEY),
        }),
    }
}

/// The certificate an adopted engine presented must have been issued for `name`.
fn check_presented(name: &MachineName, host: &str, der: Option<&[u8]>) -> Result<()> {
    let der = der.context("the engine presented no certificate")?;
    let info = n2d_pki::CertInfo::from_der(der)?;
    if !info.names_machine(name) {
        anyhow::bail!(
            "the engine at {host} presents a certificate of this home's CA issued for another machine ({}), not {name}: adopt it under its own name, or check the address",
            info.names()
        );
    }
    Ok(())
}

pub fn adopt(ctx: &Ctx, args: &AdoptArgs) -> Result<()> {
    check_docker_host(&args.host).map_err(UsageError::err)?;
    let name: &MachineName = &args.name;
    let exists =
        || -> Result<bool> { Ok(ctx.home.machine_exists(name) || ctx.home.load_adopted(name)?.is_some()) };
    if exists()? {
        return Err(UsageError::err(format!(
            "a machine named {name} already exists in this home (see `n2d ls`, or remove hosts/{name}.json)"
        )));
    }
    if !ctx.home.certs_dir().join(n2d_pki::CA_CERT).exists() {
        return Err(UsageError::err(format!(
            "this home has no CA, so no export was made for {name} here: adopt it from the home that ran `n2d image export --for {name}`"
        )));
    }
    let host = AdoptedHost { name: name.clone(), docker_host: args.host.clone() };
    let ep = adopted_endpoint(ctx, &host);
    let api = ctx.connect(&ep, 30)?;
    let rt = n2d_orchestrate::runtime()?;
    let answered = rt.block_on(async {
        api.ping().await?;
        api.server_certificate().await
    });
    let der = answered.with_context(|| {
        format!(
            "{name}'s Docker engine does not answer at {} with a certificate of this home's CA for that address (is it running, and was it exported here with --for {name}? With DHCP, use a name in its certificate: {name}.mshome.net, or {name}.internal in /etc/hosts)",
            args.host
        )
    })?;
    check_presented(name, &args.host, der.as_deref())?;
    {
        let _lock = ctx.home.lock()?;
        if exists()? {
            return Err(UsageError::err(format!("a machine named {name} was recorded meanwhile")));
        }
        ctx.home.save_adopted(&host)?;
    }
    let context = docker_context::register(
        &ctx.runner,
        &ContextSpec::machine(&ep, ctx.home.root()),
        &format!("n2d env {name}"),
    )
    .map(|c| format!(", `docker --context {c}`"))
    .unwrap_or_default();
    errln!(
        "Adopted {name} at {}: `n2d env {name}`{context}, `n2d swarm add-host SWARM --host {name}`",
        args.host
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_are_tcp_with_a_port_and_a_plain_host() {
        assert_eq!(check_docker_host("tcp://192.168.1.50:2376").unwrap(), ("192.168.1.50".into(), 2376));
        assert_eq!(check_docker_host("tcp://web1.mshome.net:2376").unwrap().0, "web1.mshome.net");
        assert!(check_docker_host("192.168.1.50:2376").unwrap_err().contains("tcp://HOST:PORT"));
        assert!(check_docker_host("tcp://192.168.1.50").unwrap_err().contains("no port"));
        assert!(check_docker_host("tcp://h:0").is_err());
        assert!(check_docker_host("tcp://a/b:2376").is_err());
        assert!(check_docker_host("tcp://:2376").is_err());
    }
}
