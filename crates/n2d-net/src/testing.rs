//! Test doubles (feature `fakes`, and this crate's own tests): [`FakeHost`], a host's links,
//! routes and iptables chains, kept in memory and changed by the `ip` and `iptables` commands
//! n2d runs, so the host-wide network code runs as it does on a real host.

use n2d_exec::{Cmd, ExecError, Runner};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// A host's links, routes and iptables chains, changed by the `ip` and `iptables` commands
/// n2d runs.
#[derive(Default)]
pub struct FakeHost {
    inner: Mutex<Fake>,
}

/// A link's kind, IPv4 address and master.
type FakeLink = (String, Option<(Ipv4Addr, u8)>, Option<String>);

#[derive(Default)]
struct Fake {
    links: BTreeMap<String, FakeLink>,
    default_dev: Option<String>,
    /// "table chain" → rules
    chains: BTreeMap<String, Vec<String>>,
    fail: Vec<String>,
}

impl FakeHost {
    pub fn new(default_dev: Option<&str>) -> FakeHost {
        let host = FakeHost::default();
        {
            let mut f = host.inner.lock().unwrap();
            f.default_dev = default_dev.map(str::to_string);
            for c in ["filter FORWARD", "nat POSTROUTING"] {
                f.chains.insert(c.into(), Vec::new());
            }
            f.links.insert("lo".into(), ("loopback".into(), Some((Ipv4Addr::LOCALHOST, 8)), None));
            f.links.insert("eth0".into(), ("ether".into(), Some((Ipv4Addr::new(192, 168, 1, 9), 24)), None));
        }
        host
    }
    pub fn add_link(&self, name: &str, kind: &str, addr: Option<(Ipv4Addr, u8)>) {
        self.inner.lock().unwrap().links.insert(name.into(), (kind.into(), addr, None));
    }
    pub fn links(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().links.keys().cloned().collect()
    }
    pub fn master(&self, dev: &str) -> Option<String> {
        self.inner.lock().unwrap().links.get(dev).and_then(|l| l.2.clone())
    }
    pub fn chain(&self, table_chain: &str) -> Option<Vec<String>> {
        self.inner.lock().unwrap().chains.get(table_chain).cloned()
    }
    /// Replaces a chain's rules.
    pub fn set_chain(&self, table_chain: &str, rules: &[&str]) {
        self.inner
            .lock()
            .unwrap()
            .chains
            .insert(table_chain.into(), rules.iter().map(|r| r.to_string()).collect());
    }
    /// Every command whose line contains `needle` fails from now on.
    pub fn fail_on(&self, needle: &str) {
        self.inner.lock().unwrap().fail.push(needle.into());
    }
}

impl Runner for FakeHost {
    fn run(&self, cmd: &Cmd) -> Result<Vec<u8>, ExecError> {
        let line = cmd.display();
        let mut f = self.inner.lock().unwrap();
        let fail = || {
            Err(ExecError::Failed {
                command: line.clone(),
                status: "exit status: 1".into(),
                stderr_tail: "no".into(),
            })
        };
        if f.fail.iter().any(|n| line.contains(n.as_str())) {
            return fail();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let ok = |s: String| Ok(s.into_bytes());
        match words.as_slice() {
            ["ip", "-j", "-d", "link", "show", "dev", d] => match f.links.get(*d) {
                Some((kind, ..)) if kind == "ether" || kind == "loopback" => {
                    ok(format!(r#"[{{"ifname":"{d}","link_type":"{kind}"}}]"#))
                }
                Some((kind, ..)) => ok(format!(
                    r#"[{{"ifname":"{d}","link_type":"ether","linkinfo":{{"info_kind":"{kind}"}}}}]"#
                )),
                None => fail(),
            },
            ["ip", "link", "show", "dev", d] => {
                if f.links.contains_key(*d) {
                    ok(String::new())
                } else {
                    fail()
                }
            }
            ["ip", "-j", "-4", "addr", "show", "dev", d] => match f.links.get(*d) {
                Some((_, Some((ip, len)), _)) => {
                    ok(format!(r#"[{{"addr_info":[{{"local":"{ip}","prefixlen":{len}}}]}}]"#))
                }
                Some(_) => ok("[{\"addr_info\":[]}]".into()),
                None => fail(),
            },
            ["ip", "-j", "-4", "route", "show", "default"] => match &f.default_dev {
                Some(dev) => ok(format!(r#"[{{"dst":"default","gateway":"192.168.1.1","dev":"{dev}"}}]"#)),
                None => ok("[]".into()),
            },
            ["ip", "link", "add", "name", d, "type", kind] => {
                if f.links.contains_key(*d) {
                    return fail();
                }
                f.links.insert(d.to_string(), (kind.to_string(), None, None));
                ok(String::new())
            }
            ["ip", "addr", "add", cidr, "dev", d] => {
                let (ip, len) = cidr.split_once('/').unwrap();
                let addr = Some((ip.parse().unwrap(), len.parse().unwrap()));
                match f.links.get_mut(*d) {
                    Some(l) => {
                        l.1 = addr;
                        ok(String::new())
                    }
                    None => fail(),
                }
            }
            ["ip", "tuntap", "add", "dev", d, "mode", "tap"] => {
                if f.links.contains_key(*d) {
                    return fail();
                }
                f.links.insert(d.to_string(), ("tun".into(), None, None));
                ok(String::new())
            }
            ["ip", "link", "set", "dev", d, "master", b] => {
                if !f.links.contains_key(*b) {
                    return fail();
                }
                match f.links.get_mut(*d) {
                    Some(l) => {
                        l.2 = Some(b.to_string());
                        ok(String::new())
                    }
                    None => fail(),
                }
            }
            ["ip", "link", "set", "dev", d, "up"] => {
                if f.links.contains_key(*d) {
                    ok(String::new())
                } else {
                    fail()
                }
            }
            ["ip", "link", "del", "dev", d] => {
                if f.links.remove(*d).is_none() {
                    return fail();
                }
                // Ports of a deleted bridge lose their master.
                for l in f.links.values_mut() {
                    if l.2.as_deref() == Some(*d) {
                        l.2 = None
                    }
                }
                ok(String::new())
            }
            ["iptables", "-w", "5", "-t", table, op, chain, rule @ ..] => {
                let key = format!("{table} {chain}");
                let rule = rule.join(" ");
                let exists = f.chains.contains_key(&key);
                match *op {
                    "-N" if exists => fail(),
                    "-N" => {
                        f.chains.insert(key, Vec::new());
                        ok(String::new())
                    }
                    "-F" | "-X" if !exists => fail(),
                    "-F" => {
                        f.chains.get_mut(&key).unwrap().clear();
                        ok(String::new())
                    }
                    "-X" => {
                        f.chains.remove(&key);
                        ok(String::new())
                    }
                    "-A" if exists => {
                        f.chains.get_mut(&key).unwrap().push(rule);
                        ok(String::new())
                    }
                    // -I CHAIN POS RULE: POS counts from 1.
                    "-I" if exists => {
                        let (pos, rule) = rule.split_once(' ').unwrap_or_default();
                        let rules = f.chains.get_mut(&key).unwrap();
                        match pos.parse::<usize>() {
                            Ok(p) if (1..=rules.len() + 1).contains(&p) => {
                                rules.insert(p - 1, rule.to_string());
                                ok(String::new())
                            }
                            _ => fail(),
                        }
                    }
                    "-C" | "-D" => {
                        let rules = f.chains.get_mut(&key);
                        match rules.and_then(|r| r.iter().position(|x| *x == rule).map(|i| (r, i))) {
                            Some((r, i)) => {
                                if *op == "-D" {
                                    r.remove(i);
                                }
                                ok(String::new())
                            }
                            None => fail(),
                        }
                    }
                    _ => fail(),
                }
            }
            _ => panic!("unexpected command {line}"),
        }
    }
}
