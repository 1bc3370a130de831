//! The commands' prelude: flag types and parsers more than one command (or a
//! command and the backend) share, and small helpers.

use crate::relay;
use clap::ValueEnum;
use ksspi_abi::proto;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, ValueEnum)]
pub enum Tls {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
    Both,
}

/// `connect --resume` and `serve --resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resume {
    /// Resume sessions where Schannel can (a client shares the driver's
    /// cached credentials, whose session cache finds the target again; a
    /// server's credentials allow reconnects).
    On,
    /// A full handshake every time.
    Off,
}

impl Resume {
    /// OPEN's [`ksspi_abi::Resumption`].
    pub fn abi(self) -> ksspi_abi::Resumption {
        match self {
            Resume::On => ksspi_abi::Resumption::On,
            Resume::Off => ksspi_abi::Resumption::Off,
        }
    }
}

/// How `connect` and `serve` print whether a handshake resumed.
pub fn resumed_line(r: relay::Resumed) -> String {
    format!("resumed: {}", relay::resumed_word(r))
}

/// `connect --repeat`'s last line: how many handshakes resumed, and the
/// fallbacks (a handshake after the first that was full: the server
/// refused the session offered, or none was offered); handshakes whose
/// resumption the driver did not tell are named apart.
pub fn resumption_summary(seen: &[relay::Resumed]) -> String {
    use relay::Resumed;
    let resumed = seen.iter().filter(|&&r| r == Resumed::Yes).count();
    let fallbacks = seen.iter().skip(1).filter(|&&r| r == Resumed::No).count();
    let unknown = seen.iter().filter(|&&r| r == Resumed::Unknown).count();
    let mut line = format!(
        "resumed {resumed} of {} handshake{} (fallbacks: {fallbacks}",
        seen.len(),
        if seen.len() == 1 { "" } else { "s" }
    );
    if unknown > 0 {
        line.push_str(&format!(", not told: {unknown}"));
    }
    line.push(')');
    line
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
    /// Model: QueryContextAttributes(SECPKG_ATTR_SESSION_INFO) is refused
    /// (resumption is then reported unknown).
    #[arg(long = "no-session-info")]
    pub no_session_info: bool,
    /// Model: Schannel keeps no session cache (every handshake is full).
    #[arg(long = "no-session-cache")]
    pub no_session_cache: bool,
}

impl ModelOptions {
    /// Whether any option that chooses how calls complete was given (the
    /// seed has a default, and is unused where ksecdd decides).
    pub fn chosen(&self) -> bool {
        self.completion.is_some()
            || self.callback_irql.is_some()
            || self.no_requires_notify
            || self.refuse_reinit_in_callback
            || self.no_session_info
            || self.no_session_cache
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

/// A parser for a number of seconds from `min` to `max` (a decimal, so
/// fractions are allowed): anything else, NaN, infinities and values a
/// [`Duration`] cannot hold included, is refused with one line naming the
/// range.
pub fn seconds(
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let refuse = || format!("takes seconds from {min} to {max}");
        let secs: f64 = s.trim().parse().map_err(|_| refuse())?;
        if !(secs.is_finite() && (min..=max).contains(&secs)) {
            return Err(refuse());
        }
        // In range, so finite and far below u64::MAX seconds.
        Ok(Duration::from_secs_f64(secs))
    }
}

/// `--send`'s text with its escapes resolved: `\n` (LF), `\r` (CR), `\t`
/// (tab), `\0`, `\\` (a backslash) and `\xHH` (the byte HH); any other
/// backslash is refused, so a typo cannot go out as two literal characters.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let byte = match chars.next().map(|(_, e)| e) {
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('t') => b'\t',
            Some('0') => 0,
            Some('\\') => b'\\',
            Some('x') => {
                let hex: String = chars.by_ref().take(2).map(|(_, h)| h).collect();
                Some(hex)
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(&h, 16).ok())
                    .ok_or_else(|| format!("\\x at byte {at} takes two hex digits"))?
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{other} at byte {at} (known: \\n \\r \\t \\0 \\xHH, and \\\\ for a backslash)"
                ))
            }
            None => return Err("a lone backslash at the end (\\\\ for a backslash)".into()),
        };
        out.push(byte);
    }
    Ok(out)
}

/// A command-line error from clap, as every other failure is reported: one
/// line (`ksspictl: ...`) and exit status 2. Help and version requests go
/// out as clap prints them.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("ksspictl: {}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's error text in one line: the message and its tips, without the
/// usage block and the closing hint, which becomes "; try --help".
fn one_line(text: &str) -> String {
    let mut line = String::new();
    for part in text.lines().map(str::trim) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if part.is_empty() {
            continue;
        }
        let part = part.strip_prefix("error: ").unwrap_or(part);
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    line.push_str("; try --help");
    line
}

/// A SHA-1 thumbprint: 40 hex digits (spaces and colons ignored).
/// `--alpn h2,http/1.1`: protocol names, most preferred first, as the TLS
/// wire list OPEN carries (each name 8-bit length-prefixed). Refused at
/// start: an empty list, an empty name, a name over 255 bytes, a list over
/// `ksspi::alpn::MAX_ALPN_LIST` bytes.
pub fn parse_alpn(s: &str) -> Result<AlpnList, String> {
    let names: Vec<&[u8]> = if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::as_bytes).collect()
    };
    ksspi::alpn::ApplicationProtocols::new(names)
        .map(|list| AlpnList(list.wire().to_vec()))
        .map_err(|e| e.to_string())
}

/// An `--alpn` list in the TLS wire form (one value to clap, not bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlpnList(pub Vec<u8>);

/// How `connect` and `serve` print the protocol ALPN chose.
pub fn alpn_line(chosen: Option<&[u8]>) -> String {
    match chosen {
        Some(name) => format!("ALPN: {}", String::from_utf8_lossy(name)),
        None => "ALPN: none".to_string(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_resolves_each_escape_and_refuses_the_rest() {
        assert_eq!(
            unescape(r"GET / HTTP/1.0\r\n\r\n").unwrap(),
            b"GET / HTTP/1.0\r\n\r\n"
        );
        assert_eq!(unescape(r"a\tb\0\\\x41\xfF").unwrap(), b"a\tb\0\\A\xff");
        assert_eq!(unescape("é\\n").unwrap(), "é\n".as_bytes());
        for bad in [r"\q", r"\x", r"\x4", r"\xg0", "\\", r"\é"] {
            assert!(unescape(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_resumption_summary_counts_resumed_and_fallbacks_after_the_first() {
        use relay::Resumed::{No, Unknown, Yes};
        assert_eq!(
            resumption_summary(&[No, Yes]),
            "resumed 1 of 2 handshakes (fallbacks: 0)"
        );
        // The first handshake is never a fallback, even when full.
        assert_eq!(
            resumption_summary(&[No, No, Yes, No]),
            "resumed 1 of 4 handshakes (fallbacks: 2)"
        );
        // A first handshake that resumed (a session cached before).
        assert_eq!(
            resumption_summary(&[Yes, Yes]),
            "resumed 2 of 2 handshakes (fallbacks: 0)"
        );
        assert_eq!(
            resumption_summary(&[Unknown, Unknown, Unknown]),
            "resumed 0 of 3 handshakes (fallbacks: 0, not told: 3)"
        );
        assert_eq!(resumed_line(Yes), "resumed: yes");
        assert_eq!(resumed_line(No), "resumed: no");
        assert_eq!(resumed_line(Unknown), "resumed: unknown");
    }

    #[test]
    fn seconds_takes_finite_values_in_range_only() {
        let parse = seconds(0.001, 60.0);
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("60"), Ok(Duration::from_secs(60)));
        for bad in ["0", "60.001", "-1", "NaN", "inf", "1e300", "", "5s"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn clap_errors_become_one_line() {
        let text = "error: the following required arguments were not provided:\n  <ADDR>\n\n\
                    Usage: ksspictl connect <ADDR>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: <ADDR>; try --help"
        );
        let text = "error: unexpected argument '--cont' found\n\n  tip: a similar argument \
                    exists: '--count'\n\nUsage: ksspictl selftest --count <COUNT>\n";
        assert_eq!(
            one_line(text),
            "unexpected argument '--cont' found; tip: a similar argument exists: '--count'; try --help"
        );
    }
}
