//! The seed scripts each fuzz target starts from: honest runs the fuzzer
//! mutates into hostile ones. They are committed under `fuzz/seeds/<target>/`
//! and checked against this module by `tests/corpus.rs` (rewrite them with
//! `KSSPI_WRITE_SEEDS=1 cargo test -p ksspi-fuzz --test corpus`).

use crate::input::Script;
use crate::{ioctl, peer};

/// A named seed.
pub type Seed = (&'static str, Vec<u8>);

/// A fuzz target: its name (as in `fuzz/fuzz_targets/`), its program and
/// its seeds.
pub struct Target {
    /// The cargo-fuzz target's name.
    pub name: &'static str,
    /// The program it runs.
    pub run: fn(&[u8]),
    /// Its seeds.
    pub seeds: fn() -> Vec<Seed>,
}

/// The fuzz targets.
pub const TARGETS: [Target; 3] = [
    Target {
        name: "ioctl",
        run: ioctl::run,
        seeds: ioctl_seeds,
    },
    Target {
        name: "handshake",
        run: peer::handshake,
        seeds: handshake_seeds,
    },
    Target {
        name: "record",
        run: peer::record,
        seeds: record_seeds,
    },
];

fn op(s: &mut Script, op: ioctl::Op) -> &mut Script {
    s.u8(op as u8)
}

/// OPEN flags: role (client bit 0) and protocols (bits 4-5).
const SERVER_TLS12: u8 = 0x10;
const SERVER_TLS13: u8 = 0x20;
const CLIENT: u8 = 1;

/// A handshake between sessions 0 (server) and 1 (client) by relayed STEPs,
/// client first, each on `file`s of its own; then data both ways, a query,
/// shutdown and close.
fn ioctl_exchange(s: &mut Script, server_file: u8, client_file: u8) {
    // Client and server in turn, three steps each.
    for (who, file) in [(1u8, client_file), (0, server_file)].repeat(3) {
        // session, file, relay, fitting buffer
        op(s, ioctl::Op::Step).u8(who).u8(file).u8(0).u8(0);
    }
    op(s, ioctl::Op::Encrypt)
        .u8(0)
        .u8(server_file)
        .bytes(b"hello from the server")
        .u8(0);
    op(s, ioctl::Op::Decrypt).u8(1).u8(client_file).u8(0).u8(0);
    op(s, ioctl::Op::Query).u8(1).u8(client_file).u8(0);
    op(s, ioctl::Op::Shutdown).u8(1).u8(client_file).u8(0);
    op(s, ioctl::Op::Decrypt).u8(0).u8(server_file).u8(0).u8(0);
    op(s, ioctl::Op::Close).u8(0).u8(server_file);
    op(s, ioctl::Op::Close).u8(1).u8(client_file);
}

fn ioctl_open_pair(s: &mut Script, server_flags: u8, server_file: u8, client_file: u8) {
    ioctl_open_pair_alpn(s, server_flags, server_file, client_file, (0, 0));
}

/// [`ioctl_open_pair`] with each side's ALPN selector (0: none; see
/// `ioctl::run`'s OPEN).
fn ioctl_open_pair_alpn(
    s: &mut Script,
    server_flags: u8,
    server_file: u8,
    client_file: u8,
    (server_alpn, client_alpn): (u8, u8),
) {
    op(s, ioctl::Op::Open)
        .u8(server_flags)
        .u8(server_file)
        .u8(server_alpn);
    op(s, ioctl::Op::Open)
        .u8(CLIENT | (server_flags & 0x30))
        .u8(client_file)
        .u8(client_alpn);
}

/// Seeds for [`ioctl::run`].
pub fn ioctl_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // Header: completion (4: mixed), IRQL and tickets, seed.
    let mut s = Script::default();
    s.u8(4).u8(2).u8(1);
    ioctl_open_pair(&mut s, SERVER_TLS13, 0, 0);
    ioctl_exchange(&mut s, 0, 0);
    seeds.push(("tls13-one-file", s.0));

    // ALPN: a server preferring h2, a client offering h2 and http/1.1; and
    // one with no overlap (both sides fail the handshake).
    let mut s = Script::default();
    s.u8(4).u8(2).u8(1);
    ioctl_open_pair_alpn(&mut s, SERVER_TLS13, 0, 0, (3, 1));
    ioctl_exchange(&mut s, 0, 0);
    seeds.push(("tls13-alpn", s.0));
    let mut s = Script::default();
    s.u8(4).u8(2).u8(1);
    ioctl_open_pair_alpn(&mut s, SERVER_TLS12, 0, 0, (3, 2));
    ioctl_exchange(&mut s, 0, 0);
    seeds.push(("alpn-no-overlap-tls12", s.0));

    let mut s = Script::default();
    s.u8(0).u8(2 | 2 << 2).u8(2); // async, mixed IRQLs, two tickets
    ioctl_open_pair(&mut s, SERVER_TLS12, 0, 0);
    ioctl_exchange(&mut s, 0, 0);
    seeds.push(("tls12-tickets", s.0));

    let mut s = Script::default();
    s.u8(3).u8(1 | 2 << 2).u8(3); // sync, DISPATCH callbacks, two tickets
    ioctl_open_pair(&mut s, SERVER_TLS13, 0, 1);
    ioctl_exchange(&mut s, 0, 1);
    // Each session asked for on the other file: foreign.
    op(&mut s, ioctl::Op::Step).u8(0).u8(1).u8(0).u8(0);
    seeds.push(("tls13-two-files", s.0));

    // Pending requests: cancelled, cancelled before they pend, and under a
    // file close.
    let mut s = Script::default();
    s.u8(0).u8(2).u8(4);
    ioctl_open_pair(&mut s, SERVER_TLS13, 0, 0);
    // session 1, file 0, a step, pended normally, relay, fitting buffer
    op(&mut s, ioctl::Op::Pend)
        .u8(1)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0);
    op(&mut s, ioctl::Op::Cancel).u8(0);
    op(&mut s, ioctl::Op::Settle);
    op(&mut s, ioctl::Op::Pend)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(1)
        .u8(0)
        .u8(0);
    op(&mut s, ioctl::Op::Settle);
    ioctl_open_pair(&mut s, SERVER_TLS12, 1, 1);
    op(&mut s, ioctl::Op::Pend)
        .u8(3)
        .u8(1)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0);
    op(&mut s, ioctl::Op::Cleanup).u8(1);
    seeds.push(("pend-cancel-cleanup", s.0));

    // Self-tests: two handshakes with bytes, and one with an unknown
    // certificate; GET_INFO.
    let mut s = Script::default();
    s.u8(4).u8(2).u8(5);
    op(&mut s, ioctl::Op::Selftest)
        .u8(0)
        .u8(0x0F)
        .u8(4)
        .u8(3)
        .u8(9)
        .u8(2);
    op(&mut s, ioctl::Op::Selftest)
        .u8(1)
        .u8(0x10)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0);
    op(&mut s, ioctl::Op::Info).u8(0).u8(0);
    seeds.push(("selftest", s.0));

    // Large self-tests: 100 handshakes at the device's bound with 40 KiB
    // each way, left running and cancelled; then one with figures past every
    // bound, refused.
    let mut s = Script::default();
    s.u8(0).u8(1).u8(7);
    op(&mut s, ioctl::Op::Selftest)
        .u8(0)
        .u8(0x24)
        .u8(1)
        .u8(1)
        .u8(5)
        .u8(10)
        .u8(0)
        .u8(3)
        .u8(0)
        .u8(0);
    op(&mut s, ioctl::Op::Info).u8(0).u8(0);
    op(&mut s, ioctl::Op::Cancel).u8(0);
    op(&mut s, ioctl::Op::Settle);
    op(&mut s, ioctl::Op::Selftest)
        .u8(1)
        .u8(0x20)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(3)
        .u32(u32::MAX)
        .u8(0)
        .u8(2)
        .u8(1);
    seeds.push(("selftest-large", s.0));

    // Raw buffers under every code, and a code of its own.
    let mut s = Script::default();
    s.u8(2).u8(0).u8(6);
    ioctl_open_pair(&mut s, SERVER_TLS13, 0, 0);
    for code in 0..=ioctl::CODES.len() as u8 {
        op(&mut s, ioctl::Op::Raw).u8(code);
        if usize::from(code) == ioctl::CODES.len() {
            s.u32(0x0022_2003);
        }
        s.u8(0)
            .u16(64)
            .bytes(b"KSSP\x01\x00\x00\x00garbage garbage garbage");
    }
    seeds.push(("raw-every-code", s.0));
    seeds
}

fn peer_op(s: &mut Script, op: peer::Op) -> &mut Script {
    s.u8(op as u8)
}

/// Header bytes for [`peer::run`]: victim (client bit 0), protocols (bits
/// 1-2: 1 TLS 1.2, 2 TLS 1.3), completion, IRQL and tickets, seed.
fn peer_header(s: &mut Script, client: bool, protocols: u8, completion: u8, irql: u8) {
    s.u8(u8::from(client) | protocols << 1)
        .u8(completion)
        .u8(irql)
        .u8(7);
}

/// Data both ways, then close_notify both ways.
fn peer_data(s: &mut Script) {
    peer_op(s, peer::Op::HonestWrite).u16(300);
    peer_op(s, peer::Op::Deliver);
    peer_op(s, peer::Op::VictimWrite).u16(20_000);
    peer_op(s, peer::Op::HonestWrite).u16(17_000);
    peer_op(s, peer::Op::Split).u16(5);
    peer_op(s, peer::Op::Split).u16(16_400);
    peer_op(s, peer::Op::Deliver);
    peer_op(s, peer::Op::Shutdown).u8(0);
    peer_op(s, peer::Op::Shutdown).u8(1);
    peer_op(s, peer::Op::Deliver);
}

/// Seeds for [`peer::handshake`].
pub fn handshake_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (name, client, protocols, completion, irql) in [
        ("server-tls13", false, 2, 4, 2),
        ("server-tls12", false, 1, 0, 2 | 2 << 2),
        ("client-tls13", true, 2, 3, 1 | 2 << 2),
        ("client-tls12", true, 1, 2, 0),
    ] {
        let mut s = Script::default();
        peer_header(&mut s, client, protocols, completion, irql);
        for _ in 0..5 {
            peer_op(&mut s, peer::Op::Deliver);
        }
        peer_data(&mut s);
        seeds.push((name, s.0));
    }
    // The first flight in pieces, then a flipped byte in the next one.
    let mut s = Script::default();
    peer_header(&mut s, false, 0, 4, 2);
    for n in [1u16, 4, 40] {
        peer_op(&mut s, peer::Op::Split).u16(n);
    }
    peer_op(&mut s, peer::Op::Deliver);
    peer_op(&mut s, peer::Op::Flip).u16(60).u8(0x80);
    seeds.push(("server-split-flip", s.0));
    // Raw records: a truncated ClientHello, an alert, a ChangeCipherSpec, an
    // oversized length, SSLv2-style bytes.
    for (name, client, bytes) in [
        (
            "server-raw-hello",
            false,
            &b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03"[..],
        ),
        (
            "client-raw-alert",
            true,
            &b"\x15\x03\x03\x00\x02\x02\x28"[..],
        ),
        ("client-raw-ccs", true, &b"\x14\x03\x03\x00\x01\x01"[..]),
        ("server-raw-huge", false, &b"\x16\x03\x03\xff\xff\x01"[..]),
        ("server-raw-sslv2", false, &b"\x80\x2e\x01\x00\x02"[..]),
    ] {
        let mut s = Script::default();
        peer_header(&mut s, client, 0, 4, 2);
        peer_op(&mut s, peer::Op::Drop).u16(u16::MAX);
        peer_op(&mut s, peer::Op::Raw).bytes(bytes);
        peer_op(&mut s, peer::Op::Deliver);
        seeds.push((name, s.0));
    }
    seeds
}

/// Seeds for [`peer::record`].
pub fn record_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (name, client, protocols, completion, irql) in [
        ("server-tls13-tickets", false, 2, 4, 2 | 2 << 2),
        ("client-tls13-tickets", true, 2, 0, 2 | 2 << 2),
        ("client-tls12", true, 1, 3, 1),
        ("server-tls12", false, 1, 2, 0),
    ] {
        let mut s = Script::default();
        peer_header(&mut s, client, protocols, completion, irql);
        peer_data(&mut s);
        seeds.push((name, s.0));
    }
    // A tampered record, a record cut short and finished later, a raw
    // application-data record.
    let mut s = Script::default();
    peer_header(&mut s, true, 2, 4, 2 | 1 << 2);
    peer_op(&mut s, peer::Op::Deliver);
    peer_op(&mut s, peer::Op::HonestWrite).u16(1000);
    peer_op(&mut s, peer::Op::Split).u16(600);
    peer_op(&mut s, peer::Op::Flip).u16(10).u8(1);
    seeds.push(("client-tamper", s.0));
    let mut s = Script::default();
    peer_header(&mut s, false, 1, 4, 2);
    peer_op(&mut s, peer::Op::Raw).bytes(b"\x17\x03\x03\x00\x20abcdefghijklmnopqrstuvwxyz012345");
    seeds.push(("server-raw-record", s.0));
    seeds
}
