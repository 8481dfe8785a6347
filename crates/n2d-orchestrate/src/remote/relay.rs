//! Certificates for machines on other hosts, issued by the home that asked for them: its CA's
//! key never leaves it. A remote `n2d create NAME ... --tls-relay` (hidden) runs the create as
//! usual on its host, but when it needs the machine's server certificate (once its address is
//! known) it asks over the SSH session that started it: one JSON line on stdout
//! ([`IssueRequest`]), answered by one line on stdin ([`IssuedCert`]).
//!
//! The remote engine trusts clients of both CAs (the asking home's, so its docker CLI works,
//! and the remote home's own, so that host's n2d can still manage the machine); the remote
//! n2d checks the engine against the asking home's CA, kept in the machine's directory
//! ([`ISSUER_CA_FILE`]).

use crate::{Error, Result};
use n2d_spec::machine::MachineName;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::sync::Mutex;

/// In a relayed machine's directory: the CA that issued its server certificate.
pub const ISSUER_CA_FILE: &str = "issuer-ca.pem";

/// What the remote n2d asks for (one line on its stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    pub issue: CertRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRequest {
    pub name: MachineName,
    pub ips: Vec<IpAddr>,
}

/// The answer (one line on its stdin): the issuing CA's certificate and the server's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

// Never print key material.
impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Where a machine's server certificate comes from when it is not this home's CA.
pub trait CertIssuer: Send + Sync {
    fn issue(&self, name: &MachineName, ips: &[IpAddr]) -> Result<IssuedCert>;
}

/// The remote end: asks over a line stream (the CLI passes its stdout and stdin).
pub struct LineIssuer<R, W> {
    io: Mutex<(R, W)>,
}

impl<R: BufRead + Send, W: Write + Send> LineIssuer<R, W> {
    pub fn new(input: R, output: W) -> Self {
        LineIssuer { io: Mutex::new((input, output)) }
    }
}

impl<R: BufRead + Send, W: Write + Send> CertIssuer for LineIssuer<R, W> {
    fn issue(&self, name: &MachineName, ips: &[IpAddr]) -> Result<IssuedCert> {
        let broken = |e: String| Error::Failed(format!("the certificate relay to the asking n2d broke: {e}"));
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let (input, output) = &mut *io;
        let request = IssueRequest { issue: CertRequest { name: name.clone(), ips: ips.to_vec() } };
        let line = serde_json::to_string(&request).expect("serialisable");
        writeln!(output, "{line}").and_then(|()| output.flush()).map_err(|e| broken(e.to_string()))?;
        let mut answer = String::new();
        match input.read_line(&mut answer) {
            Ok(0) => Err(broken("it hung up".into())),
            Ok(_) => serde_json::from_str(&answer).map_err(|e| broken(e.to_string())),
            Err(e) => Err(broken(e.to_string())),
        }
    }
}

/// The asking end: the request in one line of the remote's stdout, if it is one.
pub fn parse_request(line: &str) -> Option<CertRequest> {
    line.starts_with("{\"issue\"")
        .then(|| serde_json::from_str::<IssueRequest>(line).ok())
        .flatten()
        .map(|r| r.issue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_goes_out_as_one_line_and_its_answer_comes_back() {
        let answer = IssuedCert { ca_pem: "CA".into(), cert_pem: "CERT".into(), key_pem: "KEY".into() };
        let input = format!("{}\n", serde_json::to_string(&answer).unwrap());
        let mut out = Vec::new();
        {
            let issuer = LineIssuer::new(input.as_bytes(), &mut out);
            let got = issuer.issue(&"web".parse().unwrap(), &["10.99.0.5".parse().unwrap()]).unwrap();
            assert_eq!(got, answer);
            assert!(!format!("{got:?}").contains("KEY"));
        }
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "{\"issue\":{\"name\":\"web\",\"ips\":[\"10.99.0.5\"]}}\n");
        let req = parse_request(line.trim()).unwrap();
        assert_eq!(req.name.as_str(), "web");
        assert_eq!(parse_request("10.99.0.5"), None);
    }

    #[test]
    fn a_relay_that_hangs_up_or_answers_garbage_is_an_error() {
        for input in ["", "not json\n"] {
            let issuer = LineIssuer::new(input.as_bytes(), Vec::new());
            let err = issuer.issue(&"web".parse().unwrap(), &[]).unwrap_err();
            assert!(err.to_string().contains("the certificate relay to the asking n2d broke"), "{err}");
        }
    }
}
