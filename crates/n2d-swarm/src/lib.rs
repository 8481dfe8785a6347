//! Docker Swarm orchestration for n2d: form a swarm over the VMs' Docker
//! engines, join external hosts, remove nodes gracefully, and load images
//! into every node.
//!
//! Everything is written against the small [`DockerApi`] trait;
//! [`BollardApi`] implements it over the Docker Engine API, and the tests
//! use an in-memory fake swarm.

#![forbid(unsafe_code)]

pub mod api;
pub mod bollard_api;
pub mod error;
pub mod form;
pub mod load;
pub mod restart;
pub mod scale;
pub mod tls;
mod wait;

#[cfg(any(test, feature = "fakes"))]
pub mod fake;
#[cfg(any(test, feature = "fakes"))]
pub mod testing;

pub use api::{
    ApiError, Availability, ByteProgress, Connector, DockerApi, Endpoint, JoinToken, JoinTokens,
    LocalSwarmState, NodeInfo, NodeRole, NodeState, TaskInfo, TlsPaths, DOCKER_TLS_PORT, SWARM_PORT,
};
pub use bollard_api::{BollardApi, BollardConnector};
pub use error::{Result, SwarmError};
pub use form::{form_swarm, join_external_worker, swarm_health, JoinAction, Manager, NodeStatus};
pub use load::{check_docker_save_archive, load_image_everywhere, LoadProgress};
pub use restart::{drain_for_restart, return_to_service, RestartTimeouts};
pub use scale::{remove_nodes, RemoveTimeouts};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{MANAGER_TOKEN, WORKER_TOKEN};

    #[test]
    fn tokens_never_printed() {
        let t = JoinTokens { worker: JoinToken::new(WORKER_TOKEN), manager: JoinToken::new(MANAGER_TOKEN) };
        let dbg = format!("{t:?} {:?} {:#?}", t.worker, t);
        assert!(!dbg.contains("SWMTKN"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        assert_eq!(t.for_role(NodeRole::Manager).expose(), MANAGER_TOKEN);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_not_in_join_errors() {
        use n2d_spec::swarm::SwarmSpec;
        use std::error::Error;
        use std::net::Ipv4Addr;
        use std::time::Duration;

        let cluster = fake::Cluster::new();
        cluster.fail("n2d-wrkr-0", "join");
        let nodes: Vec<_> = SwarmSpec::default()
            .plan()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let ep = Endpoint::vm(&p.name, Ipv4Addr::new(10, 0, 0, 2 + i as u8), None);
                let api = cluster.api(&p.name);
                (p, ep, api)
            })
            .collect();
        let err = form_swarm(&nodes, Duration::from_secs(1), |msg| assert!(!msg.contains("SWMTKN"), "{msg}"))
            .await
            .unwrap_err();
        let mut chain = format!("{err} {err:?}");
        let mut src = err.source();
        while let Some(s) = src {
            chain += &format!(" {s} {s:?}");
            src = s.source();
        }
        assert!(chain.contains("n2d-wrkr-0"));
        assert!(!chain.contains("SWMTKN"), "{chain}");
    }

    #[test]
    fn endpoint_for_vm() {
        let ep = Endpoint::vm("n2d-mngr-0", std::net::Ipv4Addr::new(10, 1, 2, 3), None);
        assert_eq!(ep.docker_host, "tcp://10.1.2.3:2376");
    }

    #[tokio::test]
    async fn bollard_api_connects_lazily() {
        // No daemon needed: connecting only builds the client.
        let ep = Endpoint::vm("x", std::net::Ipv4Addr::LOCALHOST, None);
        BollardApi::connect(&ep, 5).unwrap();
        let tls = TlsPaths {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let ep = Endpoint::vm("x", std::net::Ipv4Addr::LOCALHOST, Some(tls));
        assert!(BollardApi::connect(&ep, 5).is_err());
    }
}
