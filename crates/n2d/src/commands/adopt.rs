//! `n2d adopt NAME --host tcp://…`: records a machine booted elsewhere from an export made
//! with `--for NAME`, after checking that its engine answers the home's client certificate.

use crate::args::AdoptArgs;
use crate::context::Ctx;
use crate::docker_context::{self, ContextSpec};
use crate::error::UsageError;
use anyhow::{Context as _, Result};
use n2d_spec::machine::MachineName;
use n2d_store::AdoptedHost;
use n2d_swarm::{DockerApi, Endpoint, TlsPaths};

/// Checks a `--host` value: `tcp://HOST:PORT`, HOST a name or an IPv4 address.
pub fn check_docker_host(host: &str) -> Result<(String, u16), String> {
    let rest = host
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("--host {host:?} is not tcp://HOST:PORT (e.g. tcp://192.168.1.50:2376)"))?;
    let (name, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("--host {host:?} has no port (e.g. tcp://{rest}:2376)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--host {host:?}: {port:?} is not a port number"))?;
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        return Err(format!("--host {host:?}: {name:?} is not a host name or IPv4 address"));
    }
    Ok((name.to_string(), port))
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
    rt.block_on(api.ping()).with_context(|| {
        format!(
            "{name}'s Docker engine does not answer at {} with this home's client certificate (is it running, and was it exported here with --for {name}?)",
            args.host
        )
    })?;
    {
        let _lock = ctx.home.lock()?;
        if exists()? {
            return Err(UsageError::err(format!("a machine named {name} was recorded meanwhile")));
        }
        ctx.home.save_adopted(&host)?;
    }
    docker_context::register(&ctx.runner, &ContextSpec::machine(&ep), &format!("n2d env {name}"));
    eprintln!("Adopted {name} at {}: `n2d env {name}`, `docker --context {name}`, `n2d swarm add-host SWARM --host {name}`", args.host);
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
