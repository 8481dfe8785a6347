//! TCP throughput, std only, for bench/usernet.sh.
//!
//!   nettput server PORT [COUNT]   accept COUNT connections (default: forever), one at a time;
//!                                 read each to EOF, print and send back
//!                                 "BYTES bytes SECONDS s" (time from accept to EOF)
//!   nettput client HOST PORT MIB  connect, write MIB MiB, half-close, wait for the server's
//!                                 line; print "MB/s" (10^6 bytes/s, connect to reply) and the
//!                                 server's own figure
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::exit;
use std::time::Instant;

const CHUNK: usize = 128 * 1024;

fn usage() -> ! {
    eprintln!("usage: nettput server PORT [COUNT] | nettput client HOST PORT MIB");
    exit(2)
}

fn fail(what: &str, e: std::io::Error) -> ! {
    eprintln!("nettput: {what}: {e}");
    exit(1)
}

fn server(port: u16, count: Option<u64>) {
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| fail("bind", e));
    println!("listening on port {port}");
    let mut buf = vec![0u8; CHUNK];
    let mut served = 0u64;
    while count.map_or(true, |c| served < c) {
        let (mut s, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => fail("accept", e),
        };
        let t0 = Instant::now();
        let mut bytes = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("nettput: read from {peer}: {e}");
                    break;
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let line = format!("{bytes} bytes {secs:.3} s");
        println!("{peer}: {line} = {:.1} MB/s", bytes as f64 / secs / 1e6);
        let _ = s.write_all(format!("{line}\n").as_bytes());
        served += 1;
    }
}

fn client(host: &str, port: u16, mib: u64) {
    let buf: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 13) as u8).collect();
    let t0 = Instant::now();
    let mut s = TcpStream::connect((host, port)).unwrap_or_else(|e| fail("connect", e));
    let total = mib * 1024 * 1024;
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).unwrap_or_else(|e| fail("write", e));
        sent += n as u64;
    }
    s.shutdown(Shutdown::Write).unwrap_or_else(|e| fail("shutdown", e));
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap_or_else(|e| fail("read the server's reply", e));
    let secs = t0.elapsed().as_secs_f64();
    let reply = reply.trim();
    let got: u64 = reply.split(' ').next().and_then(|b| b.parse().ok()).unwrap_or(0);
    if got != total {
        eprintln!("nettput: sent {total} bytes, the server says {reply:?}");
        exit(1)
    }
    println!("{:.1} MB/s ({mib} MiB in {secs:.3} s; server: {reply})", total as f64 / secs / 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<u64>().unwrap_or_else(|_| usage());
    match args.first().map(String::as_str) {
        Some("server") if args.len() == 2 || args.len() == 3 => {
            let port = u16::try_from(num(&args[1])).unwrap_or_else(|_| usage());
            server(port, args.get(2).map(num))
        }
        Some("client") if args.len() == 4 => {
            let port = u16::try_from(num(&args[2])).unwrap_or_else(|_| usage());
            client(&args[1], port, num(&args[3]))
        }
        _ => usage(),
    }
}
