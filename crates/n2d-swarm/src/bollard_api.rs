//! [`DockerApi`] over bollard.
//!
//! Note for callers: bollard logs request payloads and response bodies at
//! `debug` level through the `log` crate, and those include join tokens
//! (swarm join request, swarm inspect response). Keep the `bollard` log
//! target at `info` or above.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use bollard::models::{
    LocalNodeState, Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState as BNodeState,
    SwarmInitRequest, SwarmJoinRequest, TaskState,
};
use bollard::query_parameters::{
    DeleteNodeOptions, ImportImageOptions, LeaveSwarmOptions, ListServicesOptions, ListTasksOptions,
    UpdateNodeOptions,
};
use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use tokio::io::AsyncReadExt;

use crate::api::{
    ApiError, Availability, ByteProgress, DockerApi, Endpoint, JoinToken, JoinTokens, LocalSwarmState,
    NodeInfo, NodeRole, NodeState, TaskInfo, TlsPaths, SWARM_PORT,
};

/// Chunk size when streaming image archives.
const CHUNK: usize = 256 * 1024;

/// Docker engine reached over TCP (TLS or plain HTTP).
#[derive(Debug, Clone)]
pub struct BollardApi {
    docker: Docker,
    /// How to look at the certificate the engine presents (at `host`): its TLS files and the
    /// time a handshake may take.
    tls: Option<(TlsPaths, u64)>,
    /// The engine's address (`tcp://IP:PORT`), also named in `-vv`'s lines.
    host: String,
}

impl BollardApi {
    /// Connect lazily (no request is made). `timeout_secs` bounds each
    /// request, so keep it large enough for image loads.
    pub fn connect(endpoint: &Endpoint, timeout_secs: u64) -> Result<BollardApi, ApiError> {
        let docker = match &endpoint.tls {
            Some(tls) => connect_tls(&endpoint.docker_host, tls, timeout_secs)?,
            None => Docker::connect_with_http(&endpoint.docker_host, timeout_secs, API_DEFAULT_VERSION)?,
        };
        let tls = endpoint.tls.clone().map(|t| (t, timeout_secs));
        Ok(BollardApi { docker, tls, host: endpoint.docker_host.clone() })
    }

    pub fn from_docker(docker: Docker) -> BollardApi {
        BollardApi { docker, tls: None, host: "docker".into() }
    }

    /// Runs one call to the engine; with `-vv` (debug) says which, how it ended and how long it
    /// took. Errors are the API's own text, never a join token (`join_swarm` scrubs it first).
    async fn logged<T>(
        &self,
        call: &str,
        request: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = std::time::Instant::now();
        let result = request.await;
        let secs = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => tracing::debug!("{}: Docker API {call}: ok ({secs:.2}s)", self.host),
            Err(e) => tracing::debug!("{}: Docker API {call}: {e} ({secs:.2}s)", self.host),
        }
        result
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Read-modify-write of a node spec. Swarm objects are versioned; a
    /// concurrent update makes ours fail with "update out of sequence", so
    /// retry a few times with a fresh version.
    async fn update_node_spec(
        &self,
        node_id: &str,
        edit: impl Fn(&mut bollard::models::NodeSpec),
    ) -> Result<(), ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let node = self.docker.inspect_node(node_id).await?;
            let version = node
                .version
                .and_then(|v| v.index)
                .ok_or_else(|| ApiError::Other(format!("node {node_id} has no version")))?;
            let mut spec = node.spec.unwrap_or_default();
            edit(&mut spec);
            let opts = UpdateNodeOptions { version: version as i64 };
            match self.docker.update_node(node_id, spec, opts).await {
                Err(e) if attempt < 3 && e.to_string().contains("out of sequence") => continue,
                r => return r.map_err(Into::into),
            }
        }
    }
}

/// bollard over n2d's own TLS client ([`crate::tls::client_config`]): bollard's
/// `connect_with_ssl` would add the system's root CAs to the endpoint's CA, so any certificate a
/// public CA issued for the address would be accepted.
fn connect_tls(docker_host: &str, tls: &TlsPaths, timeout_secs: u64) -> Result<Docker, ApiError> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let config = crate::tls::client_config(tls)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, config));
    let mut builder = Client::builder(hyper_util::rt::TokioExecutor::new());
    // As bollard's own TLS client: a fresh connection per request.
    builder.pool_max_idle_per_host(0);
    let client = std::sync::Arc::new(builder.build(https));
    let addr = format!("https://{}", docker_host.strip_prefix("tcp://").unwrap_or(docker_host));
    let transport = move |req: BollardRequest| {
        let client = client.clone();
        async move { client.request(req).await.map_err(bollard::errors::Error::from) }
    };
    Ok(Docker::connect_with_custom_transport(transport, Some(addr), timeout_secs, API_DEFAULT_VERSION)?)
}

fn node_info(n: Node) -> NodeInfo {
    let spec = n.spec.unwrap_or_default();
    let status = n.status.unwrap_or_default();
    NodeInfo {
        id: n.id.unwrap_or_default(),
        hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
        role: match spec.role {
            Some(NodeSpecRoleEnum::MANAGER) => NodeRole::Manager,
            _ => NodeRole::Worker,
        },
        state: match status.state {
            Some(BNodeState::READY) => NodeState::Ready,
            Some(BNodeState::DOWN) => NodeState::Down,
            Some(BNodeState::DISCONNECTED) => NodeState::Disconnected,
            _ => NodeState::Unknown,
        },
        availability: match spec.availability {
            Some(NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
            Some(NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
            _ => Availability::Active,
        },
        addr: status.addr,
        leader: n.manager_status.and_then(|m| m.leader).unwrap_or(false),
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
    }
}

impl DockerApi for BollardApi {
    async fn ping(&self) -> Result<(), ApiError> {
        self.logged("ping", async move {
            self.docker.ping().await?;
            Ok(())
        })
        .await
    }

    async fn server_certificate(&self) -> Result<Option<Vec<u8>>, ApiError> {
        self.logged("server_certificate", async move {
            let Some((tls, secs)) = &self.tls else { return Ok(None) };
            crate::tls::presented_certificate(&self.host, tls, std::time::Duration::from_secs(*secs))
                .await
                .map(Some)
        })
        .await
    }

    async fn swarm_state(&self) -> Result<LocalSwarmState, ApiError> {
        self.logged("swarm_state", async move {
            let info = self.docker.info().await?;
            let swarm = info.swarm.unwrap_or_default();
            Ok(match swarm.local_node_state {
                Some(LocalNodeState::ACTIVE) => LocalSwarmState::Active {
                    node_id: swarm.node_id.unwrap_or_default(),
                    is_manager: swarm.control_available.unwrap_or(false),
                },
                Some(LocalNodeState::PENDING) => LocalSwarmState::Pending,
                Some(LocalNodeState::LOCKED) => LocalSwarmState::Locked,
                Some(LocalNodeState::ERROR) => {
                    LocalSwarmState::Error(swarm.error.unwrap_or_else(|| "unknown error".into()))
                }
                _ => LocalSwarmState::Inactive,
            })
        })
        .await
    }

    async fn init_swarm(&self, advertise_addr: Ipv4Addr) -> Result<String, ApiError> {
        self.logged("init_swarm", async move {
            let req = SwarmInitRequest {
                listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
                advertise_addr: Some(format!("{advertise_addr}:{SWARM_PORT}")),
                ..Default::default()
            };
            Ok(self.docker.init_swarm(req).await?)
        })
        .await
    }

    async fn join_tokens(&self) -> Result<JoinTokens, ApiError> {
        self.logged("join_tokens", async move {
            let swarm = self.docker.inspect_swarm().await?;
            let t = swarm
                .join_tokens
                .ok_or_else(|| ApiError::Other("swarm inspect returned no join tokens".into()))?;
            match (t.worker, t.manager) {
                (Some(w), Some(m)) => {
                    Ok(JoinTokens { worker: JoinToken::new(w), manager: JoinToken::new(m) })
                }
                _ => Err(ApiError::Other("swarm inspect returned incomplete join tokens".into())),
            }
        })
        .await
    }

    async fn join_swarm(
        &self,
        manager_addr: Ipv4Addr,
        token: &JoinToken,
        advertise_addr: Option<Ipv4Addr>,
    ) -> Result<(), ApiError> {
        self.logged("join_swarm", async move {
            let req = SwarmJoinRequest {
                listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
                advertise_addr: advertise_addr.map(|a| format!("{a}:{SWARM_PORT}")),
                remote_addrs: Some(vec![format!("{manager_addr}:{SWARM_PORT}")]),
                join_token: Some(token.expose().to_string()),
                ..Default::default()
            };
            // Never let the token travel inside an error: keep only the text,
            // scrubbed.
            self.docker
                .join_swarm(req)
                .await
                .map_err(|e| ApiError::Other(e.to_string().replace(token.expose(), "<redacted>")))
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        self.logged("list_nodes", async move {
            let nodes = self.docker.list_nodes(None).await?;
            Ok(nodes.into_iter().map(node_info).collect())
        })
        .await
    }

    async fn set_node_labels(
        &self,
        node_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        self.logged("set_node_labels", async move {
            self.update_node_spec(node_id, |spec| {
                let l = spec.labels.get_or_insert_with(HashMap::new);
                l.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            })
            .await
        })
        .await
    }

    async fn set_availability(&self, node_id: &str, availability: Availability) -> Result<(), ApiError> {
        self.logged("set_availability", async move {
            let a = match availability {
                Availability::Active => NodeSpecAvailabilityEnum::ACTIVE,
                Availability::Pause => NodeSpecAvailabilityEnum::PAUSE,
                Availability::Drain => NodeSpecAvailabilityEnum::DRAIN,
            };
            self.update_node_spec(node_id, |spec| spec.availability = Some(a)).await
        })
        .await
    }

    async fn set_role(&self, node_id: &str, role: NodeRole) -> Result<(), ApiError> {
        self.logged("set_role", async move {
            let r = match role {
                NodeRole::Manager => NodeSpecRoleEnum::MANAGER,
                NodeRole::Worker => NodeSpecRoleEnum::WORKER,
            };
            self.update_node_spec(node_id, |spec| spec.role = Some(r)).await
        })
        .await
    }

    async fn list_tasks_on(&self, node_id: &str) -> Result<Vec<TaskInfo>, ApiError> {
        self.logged("list_tasks_on", async move {
            let filters = HashMap::from([("node".to_string(), vec![node_id.to_string()])]);
            let tasks = self.docker.list_tasks(Some(ListTasksOptions { filters: Some(filters) })).await?;
            // A drained node's tasks get desired state "shutdown"; they are gone
            // once their actual state is terminal.
            let live = tasks.into_iter().filter_map(|t| {
                let state = t.status.and_then(|s| s.state);
                let done = matches!(
                    state,
                    Some(
                        TaskState::COMPLETE
                            | TaskState::SHUTDOWN
                            | TaskState::FAILED
                            | TaskState::REJECTED
                            | TaskState::REMOVE
                            | TaskState::ORPHANED
                    )
                );
                (!done).then(|| TaskInfo {
                    id: t.id.unwrap_or_default(),
                    service_id: t.service_id,
                    state: state.map(|s| s.to_string()).unwrap_or_default(),
                })
            });
            Ok(live.collect())
        })
        .await
    }

    async fn unsettled_services(&self) -> Result<Vec<String>, ApiError> {
        self.logged("unsettled_services", async move {
            let options = ListServicesOptions { status: Some(true), ..Default::default() };
            let services = self.docker.list_services(Some(options)).await?;
            // Replicated services only: a global one's desired count drops with a drained node.
            let short = services.into_iter().filter(|s| {
                let replicated = s
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.mode.as_ref())
                    .is_some_and(|m| m.replicated.is_some());
                let status = s.service_status.as_ref();
                let running = status.and_then(|st| st.running_tasks).unwrap_or(0);
                let desired = status.and_then(|st| st.desired_tasks).unwrap_or(0);
                replicated && running < desired
            });
            Ok(short.map(|s| s.spec.and_then(|spec| spec.name).or(s.id).unwrap_or_default()).collect())
        })
        .await
    }

    async fn leave_swarm(&self, force: bool) -> Result<(), ApiError> {
        self.logged("leave_swarm", async move {
            Ok(self.docker.leave_swarm(Some(LeaveSwarmOptions { force })).await?)
        })
        .await
    }

    async fn remove_node(&self, node_id: &str, force: bool) -> Result<(), ApiError> {
        self.logged("remove_node", async move {
            Ok(self.docker.delete_node(node_id, Some(DeleteNodeOptions { force })).await?)
        })
        .await
    }

    async fn load_image(&self, path: &Path, progress: ByteProgress) -> Result<Vec<String>, ApiError> {
        self.logged("load_image", async move {
            let io_err = |source| ApiError::Io { path: path.to_path_buf(), source };
            let file = tokio::fs::File::open(path).await.map_err(io_err)?;
            // Read the file in chunks as the request body is sent; only one
            // chunk is in memory at a time.
            let body = stream::try_unfold((file, 0u64), move |(mut file, sent)| {
                let progress = progress.clone();
                async move {
                    let mut buf = vec![0u8; CHUNK];
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(None);
                    }
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    progress(sent);
                    Ok(Some((Bytes::from(buf), (file, sent))))
                }
            });
            let opts = ImportImageOptions { quiet: true, ..Default::default() };
            let mut responses = self.docker.import_image_stream(opts, body, None);
            let mut loaded = Vec::new();
            while let Some(r) = responses.next().await {
                let info = r?;
                if let Some(line) = info.stream {
                    let line = line.trim();
                    if !line.is_empty() {
                        loaded.push(line.to_string());
                    }
                }
            }
            Ok(loaded)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! Against a one-shot fake HTTP server, to check what really goes over
    //! the wire and what comes back in errors.
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Serve one request with `response`; yields (request head, body).
    async fn serve_once(response: String) -> (Endpoint, tokio::task::JoinHandle<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(sock);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                head += &line;
                if line == "\r\n" {
                    break;
                }
            }
            let lower = head.to_ascii_lowercase();
            let mut body = Vec::new();
            if lower.contains("transfer-encoding: chunked") {
                loop {
                    let mut size = String::new();
                    r.read_line(&mut size).await.unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0u8; n + 2];
                    r.read_exact(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            } else if let Some(len) = lower.lines().find_map(|l| l.strip_prefix("content-length: ")) {
                body = vec![0u8; len.trim().parse().unwrap()];
                r.read_exact(&mut body).await.unwrap();
            }
            r.get_mut().write_all(response.as_bytes()).await.unwrap();
            r.get_mut().shutdown().await.unwrap();
            (head, body)
        });
        let ep = Endpoint {
            name: "mock".into(),
            ip: Ipv4Addr::LOCALHOST,
            docker_host: format!("tcp://127.0.0.1:{port}"),
            tls: None,
        };
        (ep, task)
    }

    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn join_sends_addresses_and_scrubs_token_from_errors() {
        let token = JoinToken::new("SWMTKN-1-topsecret");
        // A daemon that echoes the token back in its error.
        let (ep, server) = serve_once(http(
            "500 Internal Server Error",
            r#"{"message":"join failed with token SWMTKN-1-topsecret"}"#,
        ))
        .await;
        let api = BollardApi::connect(&ep, 5).unwrap();
        let err = api
            .join_swarm(Ipv4Addr::new(10, 0, 0, 2), &token, Some(Ipv4Addr::new(10, 0, 0, 3)))
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let (head, body) = server.await.unwrap();
        assert!(head.starts_with("POST /"), "{head}");
        assert!(head.contains("/swarm/join"), "{head}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["RemoteAddrs"][0], "10.0.0.2:2377");
        assert_eq!(body["AdvertiseAddr"], "10.0.0.3:2377");
        assert_eq!(body["JoinToken"], "SWMTKN-1-topsecret");
    }

    #[tokio::test]
    async fn load_image_streams_the_file() {
        let mut data = Vec::new();
        for i in 0..(3 * CHUNK + 123) {
            data.push((i % 251) as u8);
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &data).unwrap();
        let (ep, server) = serve_once(http("200 OK", r#"{"stream":"Loaded image: demo:latest\n"}"#)).await;
        let api = BollardApi::connect(&ep, 5).unwrap();
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let last2 = last.clone();
        let lines = api
            .load_image(file.path(), Arc::new(move |n| last2.store(n, std::sync::atomic::Ordering::SeqCst)))
            .await
            .unwrap();
        assert_eq!(lines, ["Loaded image: demo:latest"]);
        assert_eq!(last.load(std::sync::atomic::Ordering::SeqCst), data.len() as u64);
        let (head, body) = server.await.unwrap();
        assert!(head.contains("/images/load"), "{head}");
        assert_eq!(body, data);
    }
}

/// Connects [`BollardApi`] clients.
#[derive(Debug, Default, Clone, Copy)]
pub struct BollardConnector;

impl crate::api::Connector for BollardConnector {
    type Api = BollardApi;
    fn connect(&self, endpoint: &Endpoint, timeout_secs: u64) -> Result<BollardApi, ApiError> {
        BollardApi::connect(endpoint, timeout_secs)
    }
}
