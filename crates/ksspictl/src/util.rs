//! The commands' prelude: flag types and parsers more than one command (or a
//! command and the backend) share, and small helpers.

use crate::relay;
use crate::Failure;
use clap::ValueEnum;
use ksspi_abi::proto;

#[derive(Clone, Copy, ValueEnum)]
pub enum Tls {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompletionArg {
    Async,
    Inline,
    Sync,
    Mixed,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IrqlArg {
    Passive,
    Dispatch,
    Mixed,
}

/// The model's behaviour, as `selftest` takes it: the backend configures a
/// model from these, and Windows refuses all but the seed.
#[derive(clap::Args)]
pub struct ModelOptions {
    /// Model: how async calls complete.
    #[arg(long, value_enum)]
    pub completion: Option<CompletionArg>,
    /// Model: the IRQL completion callbacks run at.
    #[arg(long = "callback-irql", value_enum)]
    pub callback_irql: Option<IrqlArg>,
    /// Model: the seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Model: ksecdd does not export SspiAsyncContextRequiresNotify (every
    /// call then completes through its callback).
    #[arg(long = "no-requires-notify")]
    pub no_requires_notify: bool,
    /// Model: SspiReinitAsyncContext is refused inside the callback.
    #[arg(long = "refuse-reinit-in-callback")]
    pub refuse_reinit_in_callback: bool,
}

impl ModelOptions {
    /// Whether any option that chooses how calls complete was given (the
    /// seed has a default, and is unused where ksecdd decides).
    pub fn chosen(&self) -> bool {
        self.completion.is_some()
            || self.callback_irql.is_some()
            || self.no_requires_notify
            || self.refuse_reinit_in_callback
    }
}

/// One part of `bench` (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSection {
    /// Handshakes per second against rustls.
    Handshakes,
    /// The async machinery over the null provider.
    Continuations,
    /// Record-layer throughput against rustls.
    Records,
    /// Memory per session at rest.
    Memory,
    /// The self-test at growing concurrency (and the plot, with memory).
    Scale,
    /// Instructions per handshake of each path, under valgrind's callgrind.
    Instructions,
}

/// "one in N": `N` or `1inN` (`0`, `off`: never).
pub fn parse_one_in(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "off" {
        return Ok(0);
    }
    let n = t.strip_prefix("1in").unwrap_or(&t);
    n.parse()
        .map_err(|_| format!("{s:?} is not N or 1inN (one fault point in N fails)"))
}

/// A SHA-1 thumbprint: 40 hex digits (spaces and colons ignored).
pub fn parse_thumbprint(s: &str) -> Result<[u8; 20], String> {
    let hex: Vec<u8> = s.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
    if hex.len() != 40 {
        return Err(format!("a thumbprint has 40 hex digits, not {}", hex.len()));
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| "not hex".to_string())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(out)
}

pub fn protocols(tls: Tls) -> u32 {
    match tls {
        Tls::V12 => proto::TLS12,
        Tls::V13 => proto::TLS13,
        Tls::Both => proto::ALL,
    }
}

pub fn read_file(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))
}

pub fn ntstatus_name(status: i32) -> String {
    format!("NTSTATUS {:#010x}", status as u32)
}

/// One line on how a record-layer exchange went.
pub fn describe(x: &relay::Exchange) -> String {
    let close = match (x.close_notify_sent, x.peer_close_notify) {
        (true, true) => "closed cleanly: close_notify sent and received".to_string(),
        (sent, got) => format!(
            "closed: close_notify {}, peer's close_notify {}{}",
            if sent { "sent" } else { "not sent" },
            if got { "received" } else { "not received" },
            if x.eof_without_close_notify {
                " (the peer closed the connection without it)"
            } else {
                ""
            }
        ),
    };
    format!(
        "sent {} bytes, received {} bytes, {} post-handshake messages; {close}",
        x.sent, x.received, x.renegotiations
    )
}
