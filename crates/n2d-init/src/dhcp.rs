//! A small DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK with the broadcast flag
//! on a socket bound to one interface ([`crate::sys::DhcpSocket`]), retries with backoff in a
//! bounded time, renewal at T1 from the supervisor's loop, and the lease applied with `ip`.

use crate::console;
use crate::error::{write_err, Error, Result};
use crate::iproute;
use crate::log::info;
use crate::sys::{DhcpSocket, System};
use std::net::Ipv4Addr;
use std::time::Duration;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const FIXED_LEN: usize = 236;
const BROADCAST_FLAG: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Ack = 5,
    Nak = 6,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            5 => Self::Ack,
            6 => Self::Nak,
            _ => return None,
        })
    }
}

/// One DHCP message (the fields this client uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// Options in order, code and value (pad and end left out).
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_u8(*self.option(OPT_MESSAGE_TYPE)?.first()?)
    }

    fn addr(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(code)?.get(..4)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }

    fn secs(&self, code: u8) -> Option<u32> {
        Some(u32::from_be_bytes(self.option(code)?.get(..4)?.try_into().ok()?))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        if self.broadcast {
            b[10..12].copy_from_slice(&BROADCAST_FLAG.to_be_bytes());
        }
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in &self.options {
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(OPT_END);
        // BOOTP relays and some servers drop messages under 300 bytes.
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// Parses a message; `None` for anything that is not a well-formed DHCP message.
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        if bytes.len() < FIXED_LEN + 4 || bytes[1] != 1 || bytes[2] != 6 {
            return None;
        }
        if bytes[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut rest = &bytes[FIXED_LEN + 4..];
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                OPT_PAD => rest = tail,
                OPT_END => break,
                _ => {
                    let (&len, tail) = tail.split_first()?;
                    let value = tail.get(..len as usize)?;
                    // A repeated option continues the first (RFC 3396), as `encode` splits
                    // values longer than 255 bytes.
                    match options.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, first)) => first.extend_from_slice(value),
                        None => options.push((code, value.to_vec())),
                    }
                    rest = &tail[len as usize..];
                }
            }
        }
        Some(Message {
            op: bytes[0],
            xid: u32::from_be_bytes(bytes[4..8].try_into().ok()?),
            broadcast: u16::from_be_bytes([bytes[10], bytes[11]]) & BROADCAST_FLAG != 0,
            ciaddr: ip(12),
            yiaddr: ip(16),
            chaddr: bytes[28..34].try_into().ok()?,
            options,
        })
    }
}

/// Who is asking: the NIC and the name sent to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub ifname: String,
    pub mac: [u8; 6],
    pub hostname: String,
}

impl Client {
    fn request(&self, xid: u32, kind: MessageType, ciaddr: Ipv4Addr, extra: Vec<(u8, Vec<u8>)>) -> Message {
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        let mut options = vec![(OPT_MESSAGE_TYPE, vec![kind as u8]), (OPT_CLIENT_ID, client_id)];
        options.extend(extra);
        options.push((OPT_HOSTNAME, self.hostname.as_bytes().to_vec()));
        let params =
            vec![OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_LEASE_TIME, OPT_SERVER_ID, OPT_RENEWAL_TIME];
        options.push((OPT_PARAMS, params));
        Message {
            op: BOOTREQUEST,
            xid,
            broadcast: true,
            ciaddr,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: self.mac,
            options,
        }
    }

    pub fn discover(&self, xid: u32) -> Message {
        self.request(xid, MessageType::Discover, Ipv4Addr::UNSPECIFIED, vec![])
    }

    /// The REQUEST for an offer (SELECTING: requested address and server named).
    pub fn select(&self, xid: u32, offer: &Lease) -> Message {
        self.request(
            xid,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![
                (OPT_REQUESTED_IP, offer.address.octets().to_vec()),
                (OPT_SERVER_ID, offer.server.octets().to_vec()),
            ],
        )
    }

    /// The REQUEST that extends a lease (ciaddr set, nothing else named; sent broadcast, as
    /// in REBINDING, so that it needs no route to the server).
    pub fn renewal(&self, xid: u32, lease: &Lease) -> Message {
        self.request(xid, MessageType::Request, lease.address, vec![])
    }
}

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_time: Duration,
    /// When to ask for more (T1: the server's, else half the lease).
    pub renew_after: Duration,
}

/// Name servers a lease may set: resolvers read only the first three (glibc's MAXNS).
pub const MAX_LEASE_DNS: usize = 3;

/// An address a host may have or talk to: not 0.0.0.0/8, loopback, multicast, or 240.0.0.0/4
/// (reserved, and the broadcast address).
pub fn is_host_address(ip: Ipv4Addr) -> bool {
    let first = ip.octets()[0];
    first != 0 && !ip.is_loopback() && !ip.is_multicast() && first < 240
}

/// Whether `ip` is a host of `subnet`/`prefix_len`: in it, and, below /31, neither its network
/// nor its broadcast address.
fn is_host_of(ip: Ipv4Addr, subnet: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0);
    let (ip, subnet) = (u32::from(ip), u32::from(subnet));
    let host = ip & !mask;
    is_host_address(ip.into())
        && ip & mask == subnet & mask
        && (prefix_len >= 31 || (host != 0 && host != !mask))
}

fn addrs(value: &[u8]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    value.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
}

impl Lease {
    /// The lease an OFFER or ACK describes. What a server sends is input like any other:
    /// `None` unless the address is a host of a subnet with a contiguous mask (/1 to /32) and
    /// the server id a host address; the router is the first one listed that is another host
    /// of the subnet (else no default route), the name servers the host addresses listed.
    pub fn from_message(m: &Message) -> Option<Lease> {
        let mask = match m.option(OPT_SUBNET_MASK) {
            Some(v) => u32::from_be_bytes(v.try_into().ok()?),
            None => 0xFFFF_FF00,
        };
        let prefix_len = mask.leading_ones() as u8;
        if prefix_len == 0 || mask.count_ones() != u32::from(prefix_len) {
            return None;
        }
        let address = m.yiaddr;
        if !is_host_of(address, address, prefix_len) {
            return None;
        }
        let server = m.addr(OPT_SERVER_ID).filter(|&s| is_host_address(s))?;
        let router = addrs(m.option(OPT_ROUTER).unwrap_or(&[]))
            .find(|&r| r != address && is_host_of(r, address, prefix_len));
        let dns = addrs(m.option(OPT_DNS).unwrap_or(&[])).filter(|&ip| is_host_address(ip));
        let lease_secs = m.secs(OPT_LEASE_TIME).unwrap_or(3600);
        let t1 = m.secs(OPT_RENEWAL_TIME).filter(|&t| t > 0 && t < lease_secs).unwrap_or(lease_secs / 2);
        Some(Lease {
            address,
            prefix_len,
            router,
            dns: dns.take(MAX_LEASE_DNS).collect(),
            server,
            lease_time: Duration::from_secs(lease_secs.into()),
            renew_after: Duration::from_secs(t1.max(10).into()),
        })
    }
}

/// Attempts' reply waits: 1 s, 2 s, 4 s, then 4 s each until the budget is spent.
fn attempt_wait(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(2))
}

fn new_xid(sys: &dyn System, mac: &[u8; 6]) -> u32 {
    let random =
        sys.read_head("/dev/urandom", 4).ok().and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    let salt = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ sys.now().subsec_nanos();
    random.unwrap_or(salt)
}

/// Waits up to `wait` for a reply to `xid` of one of `kinds`; other traffic is skipped.
fn await_reply(
    sys: &dyn System,
    socket: &dyn DhcpSocket,
    xid: u32,
    mac: &[u8; 6],
    kinds: &[MessageType],
    wait: Duration,
) -> Option<Message> {
    let deadline = sys.now() + wait;
    while sys.now() < deadline {
        let bytes = match socket.recv(deadline - sys.now()) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                info!("dhcp: receiving: {e}");
                return None;
            }
        };
        let Some(m) = Message::decode(&bytes) else { continue };
        let ours = m.op == BOOTREPLY && m.xid == xid && m.chaddr == *mac;
        if ours && m.message_type().is_some_and(|t| kinds.contains(&t)) {
            return Some(m);
        }
    }
    None
}

/// How one exchange of [`with_retries`] ended.
enum Attempt {
    Leased(Lease),
    /// Nothing usable came back: again, with the next backoff.
    Again,
    /// The server said no (NAK to a renewal): no point asking again now.
    Refused,
}

/// Runs `attempt` (one exchange, with a fresh xid and how long to wait for each reply: this
/// round's backoff and the next's) on the client's socket until it leases, is refused, or
/// `budget` is spent.
fn with_retries(
    sys: &dyn System,
    client: &Client,
    budget: Duration,
    mut attempt: impl FnMut(&dyn DhcpSocket, u32, Duration, Duration) -> Attempt,
) -> Result<Lease> {
    let socket = sys
        .dhcp_socket(&client.ifname)
        .map_err(|source| Error::DhcpSocket { ifname: client.ifname.clone(), source })?;
    let deadline = sys.now() + budget;
    let mut round = 0;
    while sys.now() < deadline {
        let wait = attempt_wait(round).min(deadline - sys.now());
        round += 1;
        let xid = new_xid(sys, &client.mac);
        let started = sys.now();
        match attempt(&*socket, xid, wait, attempt_wait(round)) {
            Attempt::Leased(lease) => return Ok(lease),
            Attempt::Refused => break,
            // A server that answers at once with nothing usable (a NAK, an offer that is no
            // lease) is asked again after the backoff, not in a tight loop.
            Attempt::Again => sys.sleep(wait.saturating_sub(sys.now() - started)),
        }
    }
    Err(Error::NoDhcpLease { ifname: client.ifname.clone(), waited_s: budget.as_secs() })
}

/// The ACK among `kinds` replies, as a lease; a NAK is `Refused` when `nak_refuses`.
fn acked(reply: Option<Message>, nak_refuses: bool) -> Attempt {
    match reply {
        Some(m) if m.message_type() == Some(MessageType::Ack) => {
            Lease::from_message(&m).map_or(Attempt::Again, Attempt::Leased)
        }
        Some(_) if nak_refuses => Attempt::Refused,
        _ => Attempt::Again,
    }
}

/// DISCOVER → OFFER → REQUEST → ACK, retried with backoff for at most `budget`.
pub fn obtain(sys: &dyn System, client: &Client, budget: Duration) -> Result<Lease> {
    with_retries(sys, client, budget, |socket, xid, wait, next_wait| {
        if let Err(e) = socket.send(&client.discover(xid).encode()) {
            info!("dhcp: sending DISCOVER on {}: {e}", client.ifname);
            sys.sleep(wait);
            return Attempt::Again;
        }
        let Some(offer) = await_reply(sys, socket, xid, &client.mac, &[MessageType::Offer], wait) else {
            return Attempt::Again;
        };
        let Some(offered) = Lease::from_message(&offer) else { return Attempt::Again };
        if socket.send(&client.select(xid, &offered).encode()).is_err() {
            return Attempt::Again;
        }
        let reply =
            await_reply(sys, socket, xid, &client.mac, &[MessageType::Ack, MessageType::Nak], next_wait);
        if reply.as_ref().is_some_and(|m| m.message_type() == Some(MessageType::Nak)) {
            info!("dhcp: {} refused {} (NAK); starting over", offered.server, offered.address);
        }
        acked(reply, false)
    })
}

/// Extends `lease` (a REQUEST with its address); a NAK or silence is an error.
pub fn renew(sys: &dyn System, client: &Client, lease: &Lease, budget: Duration) -> Result<Lease> {
    with_retries(sys, client, budget, |socket, xid, wait, _| {
        if socket.send(&client.renewal(xid, lease).encode()).is_err() {
            sys.sleep(wait);
            return Attempt::Again;
        }
        acked(await_reply(sys, socket, xid, &client.mac, &[MessageType::Ack, MessageType::Nak], wait), true)
    })
}

/// Puts `lease` on the interface: address (replacing `old`'s if it changed), default route,
/// and resolv.conf unless the config names its own name servers (`fixed_dns`).
pub fn apply(
    sys: &dyn System,
    ifname: &str,
    lease: &Lease,
    old: Option<&Lease>,
    fixed_dns: bool,
) -> Result<()> {
    if let Some(old) = old.filter(|o| (o.address, o.prefix_len) != (lease.address, lease.prefix_len)) {
        let _ =
            iproute::ip(sys, &["addr", "del", &format!("{}/{}", old.address, old.prefix_len), "dev", ifname]);
    }
    let cidr = format!("{}/{}", lease.address, lease.prefix_len);
    iproute::ip(sys, &["addr", "replace", &cidr, "dev", ifname])?;
    if let Some(router) = lease.router {
        iproute::ip(sys, &["route", "replace", "default", "via", &router.to_string(), "dev", ifname])?;
    }
    if !fixed_dns && old.is_none_or(|o| o.dns != lease.dns) {
        let text: String = lease.dns.iter().map(|ip| format!("nameserver {ip}\n")).collect();
        sys.write_file("/etc/resolv.conf", text.as_bytes(), 0o644).map_err(write_err("/etc/resolv.conf"))?;
    }
    Ok(())
}

/// Prints the leased address where a person and a test can see it.
pub fn announce(sys: &dyn System, ifname: &str, lease: &Lease) {
    console::announce(sys, &format!("{} {}", n2d_proto::ADDRESS_MARKER, lease.address));
    console::announce(
        sys,
        &format!(
            "n2d: this machine's address is {} ({ifname}, /{}, leased from {} for {} s)",
            lease.address,
            lease.prefix_len,
            lease.server,
            lease.lease_time.as_secs()
        ),
    );
}

/// A DHCP NIC's client state between the supervisor's rounds.
#[derive(Debug, Clone)]
pub struct Session {
    pub client: Client,
    pub lease: Option<Lease>,
    /// When the next renewal (with a lease) or new attempt (without) is due.
    pub next_at: Duration,
    pub fixed_dns: bool,
}

/// Renewals and retries in the supervisor's loop take at most this long (it reaps meanwhile
/// nothing: keep it short).
const LOOP_BUDGET: Duration = Duration::from_secs(3);
/// Without a lease, a new attempt every this long.
const RETRY_EVERY: Duration = Duration::from_secs(30);

impl Session {
    pub fn new(client: Client, lease: Option<Lease>, now: Duration, fixed_dns: bool) -> Session {
        let next_at = now + lease.as_ref().map_or(RETRY_EVERY, |l| l.renew_after);
        Session { client, lease, next_at, fixed_dns }
    }

    /// Renews or retries when due. A failed renewal keeps the address (the lease may still
    /// run) and tries again after half the time left to the renewal period, at least 10 s.
    pub fn tick(&mut self, sys: &dyn System, now: Duration) {
        if now < self.next_at {
            return;
        }
        let result = match &self.lease {
            Some(lease) => renew(sys, &self.client, lease, LOOP_BUDGET),
            None => obtain(sys, &self.client, LOOP_BUDGET),
        };
        let now = sys.now();
        match result {
            Ok(lease) => {
                let changed = self.lease.as_ref().is_none_or(|old| old.address != lease.address);
                if let Err(e) = apply(sys, &self.client.ifname, &lease, self.lease.as_ref(), self.fixed_dns) {
                    info!("dhcp: applying the lease: {e}");
                }
                if changed {
                    announce(sys, &self.client.ifname, &lease);
                }
                self.next_at = now + lease.renew_after;
                self.lease = Some(lease);
            }
            Err(e) => {
                let retry = match &self.lease {
                    Some(lease) => (lease.renew_after / 2).max(Duration::from_secs(10)),
                    None => RETRY_EVERY,
                };
                info!("dhcp: {e}; trying again in {} s", retry.as_secs());
                self.next_at = now + retry;
            }
        }
    }
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> =
        text.trim().split(':').map(|h| u8::from_str_radix(h, 16).ok()).collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::sys::fake::FakeSystem;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

    pub fn client() -> Client {
        Client { ifname: "eth0".into(), mac: MAC, hostname: "n2d-abcdef".into() }
    }

    /// A well-formed reply, as the servers n2d meets send them (dnsmasq on n2d0, slirp): 10.9.0.50/24
    /// from 10.9.0.1 (router, DNS) for `lease_secs`, broadcast to [`MAC`].
    pub fn reply(xid: u32, kind: MessageType, lease_secs: u32) -> Message {
        Message {
            op: BOOTREPLY,
            xid,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 9, 0, 50),
            chaddr: MAC,
            options: vec![
                (OPT_MESSAGE_TYPE, vec![kind as u8]),
                (OPT_SERVER_ID, vec![10, 9, 0, 1]),
                (OPT_LEASE_TIME, lease_secs.to_be_bytes().to_vec()),
                (OPT_SUBNET_MASK, vec![255, 255, 255, 0]),
                (OPT_ROUTER, vec![10, 9, 0, 1]),
                (OPT_DNS, vec![10, 9, 0, 1, 9, 9, 9, 9]),
            ],
        }
    }

    /// A server answering each request with [`reply`], echoing the request's transaction,
    /// broadcast flag, client address and hardware address.
    pub fn server(lease_secs: u32) -> impl FnMut(&[u8]) -> Vec<Vec<u8>> {
        move |bytes: &[u8]| {
            let m = Message::decode(bytes).expect("client sends valid messages");
            let reply = |kind: MessageType| {
                Message {
                    broadcast: m.broadcast,
                    ciaddr: m.ciaddr,
                    chaddr: m.chaddr,
                    ..reply(m.xid, kind, lease_secs)
                }
                .encode()
            };
            match m.message_type() {
                Some(MessageType::Discover) => vec![reply(MessageType::Offer)],
                Some(MessageType::Request) => vec![reply(MessageType::Ack)],
                _ => vec![],
            }
        }
    }

    #[test]
    fn messages_round_trip_and_carry_what_servers_need() {
        let c = client();
        let bytes = c.discover(0x1234_5678).encode();
        assert!(bytes.len() >= 300);
        assert_eq!(&bytes[236..240], &MAGIC_COOKIE);
        assert_eq!(u16::from_be_bytes([bytes[10], bytes[11]]), 0x8000, "broadcast flag");
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.message_type(), Some(MessageType::Discover));
        assert_eq!((m.xid, m.chaddr), (0x1234_5678, MAC));
        assert_eq!(m.option(OPT_HOSTNAME), Some(&b"n2d-abcdef"[..]));
        assert_eq!(m.option(OPT_CLIENT_ID), Some(&[1, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef][..]));
        assert!(m.option(OPT_PARAMS).unwrap().contains(&OPT_DNS));

        let offer = Lease::from_message(&Message::decode(&server(600)(&bytes)[0]).unwrap()).unwrap();
        let req = Message::decode(&c.select(7, &offer).encode()).unwrap();
        assert_eq!(req.message_type(), Some(MessageType::Request));
        assert_eq!(req.option(OPT_REQUESTED_IP), Some(&[10, 9, 0, 50][..]));
        assert_eq!(req.option(OPT_SERVER_ID), Some(&[10, 9, 0, 1][..]));
        let renewal = Message::decode(&c.renewal(8, &offer).encode()).unwrap();
        assert_eq!(renewal.ciaddr, Ipv4Addr::new(10, 9, 0, 50));
        assert_eq!(renewal.option(OPT_REQUESTED_IP), None);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(Message::decode(&[]), None);
        assert_eq!(Message::decode(&[0u8; 300]), None);
        let mut truncated = client().discover(1).encode();
        // An option whose length runs past the end.
        let end = truncated.iter().rposition(|&b| b == OPT_END).unwrap();
        truncated.truncate(end);
        truncated.extend_from_slice(&[OPT_HOSTNAME, 200, b'x']);
        assert_eq!(Message::decode(&truncated), None);
    }

    #[test]
    fn lease_from_an_ack() {
        let ack = Message::decode(&server(600)(&client().discover(1).encode())[0]).unwrap();
        let lease = Lease::from_message(&ack).unwrap();
        assert_eq!(
            lease,
            Lease {
                address: Ipv4Addr::new(10, 9, 0, 50),
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 9, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(9, 9, 9, 9)],
                server: Ipv4Addr::new(10, 9, 0, 1),
                lease_time: Duration::from_secs(600),
                renew_after: Duration::from_secs(300),
            }
        );
    }

    #[test]
    fn exchange_against_a_server_then_the_lease_becomes_commands() {
        let sys = FakeSystem::new();
        sys.state.borrow_mut().dhcp_server = Some(Box::new(server(600)));
        let lease = obtain(&sys, &client(), Duration::from_secs(20)).unwrap();
        apply(&sys, "eth0", &lease, None, false).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "dhcp socket eth0",
                "run ip addr replace 10.9.0.50/24 dev eth0",
                "run ip route replace default via 10.9.0.1 dev eth0",
                "write /etc/resolv.conf",
            ]
        );
        assert_eq!(sys.file_text("/etc/resolv.conf"), "nameserver 10.9.0.1\nnameserver 9.9.9.9\n");
    }

    #[test]
    fn a_silent_network_is_retried_with_backoff_within_the_budget() {
        let sys = FakeSystem::new();
        let sent = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = sent.clone();
        sys.state.borrow_mut().dhcp_server = Some(Box::new(move |_: &[u8]| {
            counter.set(counter.get() + 1);
            vec![]
        }));
        let err = obtain(&sys, &client(), Duration::from_secs(15)).unwrap_err();
        assert!(matches!(err, Error::NoDhcpLease { waited_s: 15, .. }), "{err}");
        assert_eq!(sys.now(), Duration::from_secs(15));
        // 1 + 2 + 4 + 4 + 4 = 15 s: five DISCOVERs.
        assert_eq!(sent.get(), 5);
    }

    #[test]
    fn replies_to_someone_else_are_ignored_and_a_nak_starts_over() {
        let sys = FakeSystem::new();
        let mut real = server(600);
        let mut naks = 1;
        sys.state.borrow_mut().dhcp_server = Some(Box::new(move |bytes: &[u8]| {
            let mut replies = real(bytes);
            let m = Message::decode(bytes).unwrap();
            // Another client's offer first.
            let mut other = Message::decode(&replies[0]).unwrap();
            other.xid ^= 1;
            if m.message_type() == Some(MessageType::Request) && naks > 0 {
                naks -= 1;
                other.options[0].1 = vec![MessageType::Nak as u8];
                other.xid = m.xid;
                return vec![other.encode()];
            }
            replies.insert(0, other.encode());
            replies
        }));
        let lease = obtain(&sys, &client(), Duration::from_secs(20)).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 9, 0, 50));
    }

    #[test]
    fn a_server_with_only_unusable_offers_is_asked_at_the_backoff_pace() {
        let sys = FakeSystem::new();
        let sent = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = sent.clone();
        let mut real = server(600);
        sys.state.borrow_mut().dhcp_server = Some(Box::new(move |bytes: &[u8]| {
            counter.set(counter.get() + 1);
            // At once, and the subnet's broadcast address: no lease.
            let mut offer = Message::decode(&real(bytes)[0]).unwrap();
            offer.yiaddr = Ipv4Addr::new(10, 9, 0, 255);
            vec![offer.encode()]
        }));
        assert!(obtain(&sys, &client(), Duration::from_secs(15)).is_err());
        // As with a silent network: 1 + 2 + 4 + 4 + 4 s, five DISCOVERs, not a flood.
        assert_eq!(sent.get(), 5);
    }

    #[test]
    fn the_session_renews_at_t1_and_keeps_the_address_when_the_server_is_gone() {
        let sys = FakeSystem::new();
        sys.state.borrow_mut().dhcp_server = Some(Box::new(server(600)));
        let lease = obtain(&sys, &client(), Duration::from_secs(5)).unwrap();
        let mut session = Session::new(client(), Some(lease), sys.now(), false);
        let before = sys.calls().len();
        session.tick(&sys, sys.now() + Duration::from_secs(299));
        assert_eq!(sys.calls().len(), before, "not due yet");
        sys.sleep(Duration::from_secs(300));
        session.tick(&sys, sys.now());
        // Same address: no address change, no new resolv.conf, just the route re-asserted.
        assert_eq!(
            sys.calls()[before..],
            [
                "dhcp socket eth0",
                "run ip addr replace 10.9.0.50/24 dev eth0",
                "run ip route replace default via 10.9.0.1 dev eth0"
            ]
        );
        assert_eq!(session.next_at, sys.now() + Duration::from_secs(300));

        sys.state.borrow_mut().dhcp_server = Some(Box::new(|_: &[u8]| vec![]));
        sys.sleep(Duration::from_secs(300));
        session.tick(&sys, sys.now());
        assert!(session.lease.is_some(), "the address is kept");
        assert_eq!(session.next_at, sys.now() + Duration::from_secs(150));
    }

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("52:54:00:AB:cd:ef\n"), Some(MAC));
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("zz:54:00:ab:cd:ef"), None);
    }
}
