//! The model's knobs: how calls complete ([`Completion`], [`CompletionPolicy`]),
//! at which IRQL callbacks run ([`CallbackIrql`]), and the policy that holds
//! them with the seed and the open points' answers ([`SimConfig`]).

/// How an async call completes (docs/DESIGN.md, contract item 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Completion {
    /// (a) later, the callback on another thread ("CPU"), after the issuing
    /// function returned or racing it.
    Async,
    /// (a) on another thread, and the callback has *finished* before the issuing
    /// function returns (each such call gets a thread of its own).
    AsyncBeforeReturn,
    /// (b) synchronously, the callback inline on the issuer's stack.
    Inline,
    /// (c) synchronously with no callback at all.
    Sync,
}

impl Completion {
    /// Every mode.
    pub const ALL: [Completion; 4] = [
        Completion::Async,
        Completion::AsyncBeforeReturn,
        Completion::Inline,
        Completion::Sync,
    ];
}

/// Which modes the model picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionPolicy {
    /// Always this mode.
    Always(Completion),
    /// A seeded random mix of every mode.
    Mixed,
}

impl CompletionPolicy {
    /// Each mode alone, then the mix.
    pub const ALL: [CompletionPolicy; 5] = [
        CompletionPolicy::Always(Completion::Async),
        CompletionPolicy::Always(Completion::AsyncBeforeReturn),
        CompletionPolicy::Always(Completion::Inline),
        CompletionPolicy::Always(Completion::Sync),
        CompletionPolicy::Mixed,
    ];
}

/// The IRQL callbacks run at (contract item 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackIrql {
    /// PASSIVE_LEVEL.
    Passive,
    /// DISPATCH_LEVEL.
    Dispatch,
    /// A seeded random mix.
    Mixed,
}

/// The model's policy; every choice it makes follows from `seed` (per call:
/// the seed, the async context's creation number and the call's number on
/// it, so the choices do not depend on thread timing).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed for every random choice.
    pub seed: u64,
    /// How calls complete.
    pub completion: CompletionPolicy,
    /// At which IRQL callbacks run.
    pub callback_irql: CallbackIrql,
    /// Open point: may `SspiReinitAsyncContext` run inside the callback? When
    /// false, the model refuses it there (`SEC_E_INVALID_HANDLE`).
    pub reinit_in_callback: bool,
    /// Open point: does ksecdd export `SspiAsyncContextRequiresNotify`?
    /// Neither independent list of its exports has it. When false, the
    /// function answers `None` (the driver could not find it) and no call
    /// completes without its callback: where the policy picks
    /// [`Completion::Sync`], the call still completes synchronously but calls
    /// back inline before the issuing function returns `SEC_E_OK`.
    pub requires_notify_exported: bool,
    /// Completion threads (the other CPUs).
    pub cpus: usize,
    /// TLS 1.3 NewSessionTickets a server context sends after the handshake
    /// (each reaches the client's DecryptMessage as SEC_I_RENEGOTIATE).
    pub tls13_tickets: usize,
    /// Open point: does kernel Schannel answer
    /// `QueryContextAttributes(SECPKG_ATTR_SESSION_INFO)`? User-mode Schannel
    /// documents it; no kernel caller is known to query it. When false, the
    /// model answers `SEC_E_UNSUPPORTED_FUNCTION` and the engine reports
    /// "resumed: unknown", never "full".
    pub session_info_answered: bool,
    /// Open point: does kernel Schannel keep a session cache at all? When
    /// false, no credential keeps a session (a client offers none, a server
    /// issues no ticket and finds nothing): every handshake is full, and
    /// the driver reports it so.
    pub session_cache: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0x006b_7373_7069,
            completion: CompletionPolicy::Always(Completion::Async),
            callback_irql: CallbackIrql::Passive,
            reinit_in_callback: true,
            requires_notify_exported: true,
            cpus: 2,
            tls13_tickets: 0,
            session_info_answered: true,
            session_cache: true,
        }
    }
}
