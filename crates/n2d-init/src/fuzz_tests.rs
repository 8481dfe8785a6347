//! Property tests ("a short fuzz run") for what n2d-init reads from outside the guest's own
//! config: DHCP messages from the network (and the leases they make) and the GPT of the disk it
//! grows, plus the regression corpus in `tests/corpus/dhcp/` and `tests/corpus/gpt/`. They live
//! in the binary (a test module) because n2d-init has no library for `tests/` to import.
//!
//! The checks below restate the rules independently of the code under test (subnet arithmetic,
//! CRCs), so a shared mistake would not hide.

use crate::dhcp::{self, Lease, Message, MessageType};
use crate::gpt;
use crate::sys::fake::FakeSystem;
use crate::sys::System;
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

const CASES: u32 = 256;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus at {}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Replaces, inserts or removes bytes at random places.
fn mutate(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, op) in edits {
        let i = at.index(bytes.len() + 1);
        match op % 3 {
            0 if i < bytes.len() => bytes[i] = *byte,
            1 => bytes.insert(i, *byte),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..8)
}

// ---------------------------------------------------------------------------------------------
// DHCP

const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_RENEWAL_TIME: u8 = 58;
use crate::dhcp::tests::{client, reply};

/// Addresses with the edge cases over-represented.
fn address() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        prop::sample::select(vec![
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(0, 1, 2, 3),
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::new(240, 0, 0, 1),
            Ipv4Addr::new(10, 9, 0, 0),
            Ipv4Addr::new(10, 9, 0, 1),
            Ipv4Addr::new(10, 9, 0, 50),
            Ipv4Addr::new(10, 9, 0, 255),
            Ipv4Addr::new(10, 9, 1, 1),
            Ipv4Addr::new(100, 64, 77, 2),
        ]),
    ]
}

/// Option values as a hostile server may send them: any bytes, addresses, lists of them.
fn option_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(address(), 0..5)
            .prop_map(|ips| ips.iter().flat_map(|ip| ip.octets()).collect()),
        (0u32..=32).prop_map(|p| u32::MAX.checked_shl(32 - p).unwrap_or(0).to_be_bytes().to_vec()),
        any::<u32>().prop_map(|v| v.to_be_bytes().to_vec()),
    ]
}

/// A reply to `xid` whose lease options are hostile.
fn hostile_reply() -> impl Strategy<Value = Message> {
    let codes = prop::sample::select(vec![
        OPT_SUBNET_MASK,
        OPT_ROUTER,
        OPT_DNS,
        OPT_LEASE_TIME,
        OPT_SERVER_ID,
        OPT_RENEWAL_TIME,
        OPT_MESSAGE_TYPE,
        12,
        200,
    ]);
    (address(), prop::collection::vec((codes, option_value()), 0..10), any::<bool>()).prop_map(
        |(yiaddr, options, ack)| {
            let mut m = reply(0, if ack { MessageType::Ack } else { MessageType::Offer }, 600);
            m.yiaddr = yiaddr;
            // The hostile options replace the good ones (repeated ones are joined: RFC 3396).
            m.options.retain(|(code, _)| !options.iter().any(|(c, _)| c == code));
            m.options.extend(options);
            m
        },
    )
}

/// The subnet arithmetic, written out again: network and broadcast of `ip`/`prefix`.
fn subnet(ip: Ipv4Addr, prefix: u8) -> (u32, u32) {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask, u32::from(ip) | !mask)
}

fn is_usable_unicast(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] != 0 && o[0] != 127 && o[0] < 224
}

/// What every lease must be before it becomes `ip` commands and resolv.conf.
fn check_lease(lease: &Lease) -> Result<(), TestCaseError> {
    prop_assert!((1..=32).contains(&lease.prefix_len), "{lease:?}");
    prop_assert!(is_usable_unicast(lease.address), "{lease:?}");
    let (net, bcast) = subnet(lease.address, lease.prefix_len);
    if lease.prefix_len <= 30 {
        prop_assert!(![net, bcast].contains(&u32::from(lease.address)), "network/broadcast: {lease:?}");
    }
    if let Some(router) = lease.router {
        prop_assert!(is_usable_unicast(router) && router != lease.address, "{lease:?}");
        prop_assert_eq!(subnet(router, lease.prefix_len).0, net, "router off the subnet: {:?}", lease);
        if lease.prefix_len <= 30 {
            prop_assert!(![net, bcast].contains(&u32::from(router)), "{lease:?}");
        }
    }
    prop_assert!(lease.dns.len() <= dhcp::MAX_LEASE_DNS && lease.dns.iter().all(|&ip| is_usable_unicast(ip)));
    prop_assert!(is_usable_unicast(lease.server), "{lease:?}");
    prop_assert!(lease.renew_after >= Duration::from_secs(10));
    prop_assert!(lease.renew_after <= lease.lease_time.max(Duration::from_secs(10)));
    Ok(())
}

/// Applies `lease` on a fake machine: exactly the expected commands, each re-parsable.
fn check_applied(lease: &Lease) -> Result<(), TestCaseError> {
    let sys = FakeSystem::new();
    dhcp::apply(&sys, "eth0", lease, None, false).unwrap();
    let calls = sys.calls();
    let cidr = calls[0].strip_prefix("run ip addr replace ").and_then(|c| c.strip_suffix(" dev eth0"));
    let (ip, prefix) = cidr.and_then(|c| c.split_once('/')).expect("an address command");
    prop_assert_eq!(
        (ip.parse::<Ipv4Addr>().ok(), prefix.parse::<u8>().ok()),
        (Some(lease.address), Some(lease.prefix_len))
    );
    let mut rest = &calls[1..];
    if let Some(router) = lease.router {
        prop_assert_eq!(&rest[0], &format!("run ip route replace default via {router} dev eth0"));
        rest = &rest[1..];
    }
    prop_assert_eq!(rest, ["write /etc/resolv.conf"]);
    let resolv = sys.file_text("/etc/resolv.conf");
    for line in resolv.lines() {
        let ip = line.strip_prefix("nameserver ").and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        prop_assert!(ip.is_some_and(is_usable_unicast), "{resolv}");
    }
    Ok(())
}

/// A decoded message, checked: re-encoding gives it back, and any lease it makes is valid.
fn check_message(m: &Message) -> Result<(), TestCaseError> {
    let mut expected = m.clone();
    // `encode` leaves empty options out (no option a client sends is empty).
    expected.options.retain(|(_, v)| !v.is_empty());
    prop_assert_eq!(Message::decode(&m.encode()), Some(expected));
    if let Some(lease) = Lease::from_message(m) {
        check_lease(&lease)?;
        check_applied(&lease)?;
    }
    Ok(())
}

/// A valid message of any shape: option codes other than pad and end, each once, values of
/// 1 to 600 bytes (longer than 255 are split and joined again).
fn any_message() -> impl Strategy<Value = Message> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u8; 6]>(),
        prop::collection::btree_map(1u8..=254, prop::collection::vec(any::<u8>(), 1..600), 0..8),
    )
        .prop_map(|(op, xid, broadcast, ciaddr, yiaddr, chaddr, options)| Message {
            op,
            xid,
            broadcast,
            ciaddr: ciaddr.into(),
            yiaddr: yiaddr.into(),
            chaddr,
            options: options.into_iter().collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn dhcp_valid_messages_round_trip(m in any_message()) {
        prop_assert_eq!(Message::decode(&m.encode()), Some(m));
    }

    #[test]
    fn dhcp_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        if let Some(m) = Message::decode(&bytes) {
            check_message(&m)?;
        }
        // Past the fixed part and the cookie, so that the options are parsed.
        let mut framed = reply(1, MessageType::Offer, 60).encode();
        framed.truncate(240);
        framed.extend_from_slice(&bytes);
        let m = Message::decode(&framed);
        if let Some(m) = &m {
            check_message(m)?;
        }
    }

    #[test]
    fn dhcp_mutated_replies(edits in edits(), ack in any::<bool>(), secs in any::<u32>()) {
        let kind = if ack { MessageType::Ack } else { MessageType::Offer };
        let mut bytes = reply(7, kind, secs).encode();
        mutate(&mut bytes, &edits);
        if let Some(m) = Message::decode(&bytes) {
            check_message(&m)?;
        }
    }

    #[test]
    fn dhcp_hostile_lease_options(m in hostile_reply()) {
        let bytes = m.encode();
        let decoded = Message::decode(&bytes).expect("encoded replies decode");
        check_message(&decoded)?;
    }

    /// The whole exchange and a renewal against a server whose replies are hostile: no panic,
    /// and a lease obtained or renewed is a valid one.
    #[test]
    fn dhcp_exchange_with_a_hostile_server(replies in prop::collection::vec(hostile_reply(), 1..4), edits in edits(), mangle in any::<bool>()) {
        let sys = FakeSystem::new();
        let mut n = 0;
        sys.state.borrow_mut().dhcp_server = Some(Box::new(move |bytes: &[u8]| {
            let asked = Message::decode(bytes).expect("the client sends valid messages");
            let mut m: Message = replies[n % replies.len()].clone();
            n += 1;
            // Addressed to the client, so that it gets past the xid filter.
            m.xid = asked.xid;
            let mut out = m.encode();
            if mangle {
                mutate(&mut out, &edits);
            }
            vec![out]
        }));
        if let Ok(lease) = dhcp::obtain(&sys, &client(), Duration::from_secs(8)) {
            check_lease(&lease)?;
            let mut session = dhcp::Session::new(client(), Some(lease), sys.now(), false);
            sys.sleep(Duration::from_secs(1 << 20));
            session.tick(&sys, sys.now());
            check_lease(session.lease.as_ref().unwrap())?;
        }
    }
}

/// `lease-*`: a valid lease; `nolease-*`: a message, but no lease from it; `garbage-*`: no
/// message at all.
#[test]
fn dhcp_regression_corpus() {
    let files = corpus("dhcp");
    for (name, bytes) in &files {
        let m = Message::decode(bytes);
        let lease = m.as_ref().and_then(Lease::from_message);
        let expect = name.split('-').next().unwrap();
        match (expect, &m, &lease) {
            ("lease", Some(m), Some(lease)) => {
                check_message(m).unwrap();
                check_lease(lease).unwrap();
            }
            ("nolease", Some(m), None) => check_message(m).unwrap(),
            ("garbage", None, None) => {}
            _ => panic!("{name}: expected {expect}, got {m:?} → {lease:?}"),
        }
    }
    assert!(files.len() >= 8, "the DHCP corpus is missing");
}

// ---------------------------------------------------------------------------------------------
// GPT

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The head (MBR, primary header, entries) of a disk an export wrote, sized `mib` MiB.
fn exported_head(mib: u64, root_mib: u64) -> Vec<u8> {
    let layout = n2d_export::gpt::layout(mib * MIB, 30 * MIB, root_mib * MIB, 4096, "fuzz").unwrap();
    layout.primary()
}

/// Recomputes the entries' and the header's CRCs after an edit (a crafted but consistent GPT).
fn reseal(head: &mut [u8]) {
    let h = 512;
    let header_size = (le32(head, h + 12) as usize).clamp(92, 512);
    let (lba, count, size) = (le64(head, h + 72), le32(head, h + 80) as u64, le32(head, h + 84) as u64);
    let start = lba.saturating_mul(SECTOR);
    let end = start.saturating_add(count.saturating_mul(size));
    if end <= head.len() as u64 {
        let crc = gpt::crc32(&head[start as usize..end as usize]);
        head[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    head[h + 16..h + 20].fill(0);
    let crc = gpt::crc32(&head[h..h + header_size]);
    head[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
}

/// What an accepted plan must be: the partition inside the GPT's usable sectors, after every
/// other partition, every write on the disk and clear of the partitions, and the result a
/// valid GPT that has nothing more to grow.
fn check_plan(head: &[u8], disk_sectors: u64, partn: u32) -> Result<(), TestCaseError> {
    let Ok(Some(plan)) = gpt::plan(head, disk_sectors, partn) else { return Ok(()) };
    let h = &head[512..1024];
    let (first_usable, entries_lba) = (le64(h, 40), le64(h, 72));
    let (count, size) = (le32(h, 80) as usize, le32(h, 84) as usize);
    let entries = &head[entries_lba as usize * 512..][..count * size];
    let at = (partn as usize - 1) * size;
    prop_assert_eq!(plan.start, le64(entries, at + 32));
    prop_assert!(plan.start >= first_usable && plan.start >= 2);
    let table_sectors = (count * size).div_ceil(512) as u64;
    let part_end = plan.start + plan.sectors; // exclusive
    prop_assert!(part_end <= disk_sectors - 1 - table_sectors, "partition over the backup");
    prop_assert_eq!(plan.gained, part_end - 1 - le64(entries, at + 40));
    for i in (0..count).filter(|&i| i != partn as usize - 1) {
        let e = &entries[i * size..(i + 1) * size];
        if e[..16].iter().any(|&b| b != 0) {
            prop_assert!(le64(e, 40) < plan.start, "entry {} after the grown partition", i + 1);
        }
    }
    let mut grown = head.to_vec();
    for (offset, bytes) in &plan.writes {
        let (start, end) = (*offset / SECTOR, (*offset + bytes.len() as u64).div_ceil(SECTOR));
        prop_assert!(end <= disk_sectors, "write past the disk's end");
        prop_assert!(end <= plan.start || start >= part_end, "write into the partition");
        if (*offset as usize) < grown.len() {
            grown[*offset as usize..][..bytes.len()].copy_from_slice(bytes);
        }
    }
    // The backup header names itself, the primary and its entries, which match the primary's.
    let backup =
        &plan.writes.iter().find(|(o, _)| *o == (disk_sectors - 1) * SECTOR).expect("backup header").1;
    // The CRC covers the header's own size (92 for n2d's, up to a sector in a crafted one).
    let header_size = (le32(backup, 12) as usize).clamp(92, backup.len());
    let mut check = backup[..header_size].to_vec();
    check[16..20].fill(0);
    prop_assert_eq!(gpt::crc32(&check), le32(backup, 16));
    prop_assert_eq!((le64(backup, 24), le64(backup, 32)), (disk_sectors - 1, 1));
    let backup_entries =
        &plan.writes.iter().find(|(o, _)| *o == le64(backup, 72) * SECTOR).expect("backup entries").1;
    prop_assert_eq!(gpt::crc32(backup_entries), le32(backup, 88));
    prop_assert_eq!(gpt::plan(&grown, disk_sectors, partn).unwrap(), None, "grown once, nothing left");
    Ok(())
}

/// Byte ranges a CRC covers in a head: the header's first 92 bytes and the entries.
fn crc_covered(head: &[u8], i: usize) -> bool {
    let entries = le64(head, 512 + 72) as usize * 512;
    let len = le32(head, 512 + 80) as usize * le32(head, 512 + 84) as usize;
    (512..512 + 92).contains(&i) || (entries..entries + len).contains(&i)
}

fn exported_disk() -> impl Strategy<Value = (Vec<u8>, u64)> {
    // Disk size and how much the user enlarged it (0 too: nothing to gain).
    (300u64..4096, 1u64..400, prop_oneof![Just(0u64), 0u64..4, 1u64..1 << 20]).prop_map(
        |(mib, root, more)| {
            let mib = mib.max(root + 300);
            (exported_head(mib, root), (mib + more) * MIB / SECTOR)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn gpt_exported_disks_grow_validly((head, disk_sectors) in exported_disk()) {
        let made = le64(&head, 512 + 32) + 1;
        let plan = gpt::plan(&head, disk_sectors, 4).unwrap();
        // An export leaves 1 MiB less the backup after its data partition, under the minimum
        // gain: a disk kept as made does not grow, one enlarged by a MiB or more does.
        prop_assert_eq!(plan.is_some(), disk_sectors > made, "{} → {}", made, disk_sectors);
        check_plan(&head, disk_sectors, 4)?;
    }

    #[test]
    fn gpt_arbitrary_heads_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        disk_sectors in any::<u64>(),
        partn in any::<u32>(),
    ) {
        let _ = gpt::head_len(&bytes);
        let _ = gpt::plan(&bytes, disk_sectors, partn);
        let mut signed = bytes.clone();
        signed.resize(2048, 0);
        signed[512..520].copy_from_slice(b"EFI PART");
        let _ = gpt::head_len(&signed);
        let _ = gpt::plan(&signed, disk_sectors, partn);
    }

    /// One damaged byte where a CRC covers it is always refused; elsewhere it changes nothing.
    #[test]
    fn gpt_crcs_are_respected((head, disk_sectors) in exported_disk(), at in any::<prop::sample::Index>(), xor in 1u8..) {
        let mut damaged = head.clone();
        let i = at.index(head.len());
        damaged[i] ^= xor;
        let result = gpt::plan(&damaged, disk_sectors, 4);
        if crc_covered(&head, i) {
            prop_assert!(result.is_err(), "byte {} changed: {:?}", i, result);
        } else if i >= 512 {
            // Outside the CRCs and the MBR: the header's padding, which changes nothing.
            let span = |p: Option<gpt::Plan>| p.map(|p| (p.start, p.sectors));
            prop_assert_eq!(span(result.unwrap()), span(gpt::plan(&head, disk_sectors, 4).unwrap()));
        }
    }

    /// A crafted GPT, its CRCs made right: header fields and entries changed at random (a
    /// hostile disk, or a hypervisor's), and the disk size and partition number too.
    #[test]
    fn gpt_crafted_headers_and_entries(
        (head, disk_sectors) in exported_disk(),
        fields in prop::collection::vec((prop::sample::select(vec![12usize, 24, 32, 40, 48, 72, 80, 84]), prop_oneof![any::<u64>(), 0u64..4096, Just(u64::MAX), Just(u32::MAX as u64)]), 0..3),
        entry_edits in prop::collection::vec((0usize..6, prop::sample::select(vec![0usize, 16, 32, 40]), prop_oneof![any::<u64>(), 0u64..(1 << 24), Just(u64::MAX)]), 0..4),
        partn in prop_oneof![Just(4u32), 0u32..8, any::<u32>()],
        disk_sectors_edit in prop_oneof![Just(None), any::<u64>().prop_map(Some), (0u64..100_000).prop_map(Some)],
    ) {
        let mut head = head;
        for (at, value) in fields {
            let at = 512 + at;
            match at - 512 {
                12 | 80 | 84 => head[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes()),
                _ => head[at..at + 8].copy_from_slice(&value.to_le_bytes()),
            }
        }
        for (entry, field, value) in entry_edits {
            let at = 1024 + entry * 128 + field;
            head[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        reseal(&mut head);
        let disk_sectors = disk_sectors_edit.unwrap_or(disk_sectors);
        let _ = gpt::head_len(&head);
        if gpt::plan(&head, disk_sectors, partn).is_ok() {
            // Only a table that fits the head can be accepted.
            check_plan(&head, disk_sectors, partn)?;
        }
    }

    #[test]
    fn gpt_mutated_heads((head, disk_sectors) in exported_disk(), edits in edits(), reseal_after in any::<bool>()) {
        let mut head = head;
        mutate(&mut head, &edits);
        if reseal_after && head.len() >= 1024 {
            reseal(&mut head);
        }
        let _ = gpt::head_len(&head);
        check_plan(&head, disk_sectors, 4)?;
    }
}

/// `grow-P-SECTORS-*`: partition P of a disk of SECTORS sectors grows; `same-…`: nothing to
/// gain; `refused-…`: an error.
#[test]
fn gpt_regression_corpus() {
    let files = corpus("gpt");
    for (name, head) in &files {
        let mut parts = name.splitn(4, '-');
        let (expect, partn, sectors) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let (partn, sectors) = (partn.parse().unwrap(), sectors.parse().unwrap());
        let _ = gpt::head_len(head);
        let result = gpt::plan(head, sectors, partn);
        match (expect, &result) {
            ("grow", Ok(Some(_))) => check_plan(head, sectors, partn).unwrap(),
            ("same", Ok(None)) | ("refused", Err(_)) => {}
            _ => panic!("{name}: expected {expect}, got {result:?}"),
        }
    }
    assert!(files.len() >= 8, "the GPT corpus is missing");
}
