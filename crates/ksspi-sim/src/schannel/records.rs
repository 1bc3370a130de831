//! The record layer: the stream sizes ([`StreamSizes`]), EncryptMessage
//! ([`Context::encrypt`]) and DecryptMessage ([`Context::decrypt`], whose
//! result is [`Unsealed`]), in place in the caller's buffers.

use super::framing::{first_record, missing_after};
use super::rustls_unbuffered::Opened;
use super::Context;
use ksspi::sys::*;
use ksspi::SecStatus;

/// `SecPkgContext_StreamSizes`, as the model's contexts report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSizes {
    /// Bytes of record before the data (`cbHeader`).
    pub header: usize,
    /// Bytes after it (`cbTrailer`).
    pub trailer: usize,
    /// The most data one EncryptMessage takes (`cbMaximumMessage`).
    pub max_message: usize,
}

/// One DecryptMessage, in place: what became of the caller's buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unsealed {
    /// SEC_E_OK, SEC_E_INCOMPLETE_MESSAGE, SEC_I_RENEGOTIATE,
    /// SEC_I_CONTEXT_EXPIRED or an error.
    pub status: SecStatus,
    /// With SEC_E_OK: where the plaintext of the first record now lies in the
    /// buffer (the DATA buffer). It starts after the record's STREAM_HEADER
    /// (`data.start` bytes); the STREAM_TRAILER runs from `data.end` to
    /// `record`.
    pub data: std::ops::Range<usize>,
    /// Length of the record decrypted (0 if none).
    pub record: usize,
    /// Input after the record (SECBUFFER_EXTRA); with SEC_I_RENEGOTIATE, the
    /// post-handshake record itself and what follows.
    pub extra: usize,
    /// With SEC_E_INCOMPLETE_MESSAGE: bytes still needed (SECBUFFER_MISSING).
    pub missing: usize,
}

/// The largest plaintext one record carries.
pub const MAX_PLAINTEXT: usize = 16 * 1024;

/// The record layer: EncryptMessage, DecryptMessage, stream sizes.
impl Context {
    /// `SECPKG_ATTR_STREAM_SIZES`, once established.
    pub fn stream_sizes(&self) -> Option<StreamSizes> {
        self.sizes.filter(|_| self.established)
    }

    /// The stream sizes of the negotiated version and suite.
    pub(super) fn negotiated_sizes(&self) -> Option<StreamSizes> {
        let tls13 = self.protocol()? & (SP_PROT_TLS1_3_SERVER | SP_PROT_TLS1_3_CLIENT) != 0;
        let suite = self.cipher_suite_name().unwrap_or("");
        let (header, trailer) = if tls13 {
            (5, 17) // content type byte and the 16-byte tag after the data
        } else if suite.contains("GCM") {
            (13, 16) // the 8-byte explicit nonce before, the tag after
        } else {
            (5, 16) // ChaCha20-Poly1305: the tag after
        };
        Some(StreamSizes {
            header,
            trailer,
            max_message: MAX_PLAINTEXT,
        })
    }

    /// `Ok` once established and not failed; otherwise the status a record
    /// call returns.
    pub(super) fn usable(&self) -> Result<(), SecStatus> {
        if let Some(status) = self.failed {
            return Err(status);
        }
        if !self.established {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        }
        Ok(())
    }

    /// EncryptMessage: one record carrying `data` (at most [`MAX_PLAINTEXT`]
    /// bytes), exactly `header + data.len() + trailer` bytes of
    /// [`Context::stream_sizes`]: header, ciphertext, trailer. rustls writes
    /// the record into the context's scratch buffer, which the result borrows
    /// until the next call (the provider copies it out to the caller's
    /// buffers); nothing is allocated once the scratch has grown to the
    /// largest record. rustls cannot write over the plaintext it reads (its
    /// input and output are two slices that may not alias), so one copy is
    /// the fewest a caller's buffers in place can get.
    ///
    /// Empty `data` gives an empty record: rustls seals no record for no
    /// data (Schannel would send a record with no data in it).
    pub fn encrypt(&mut self, data: &[u8]) -> Result<&[u8], SecStatus> {
        self.usable()?;
        if data.len() > MAX_PLAINTEXT {
            return Err(SecStatus::SEC_E_BUFFER_TOO_SMALL);
        }
        if self.shutdown {
            return Err(SecStatus::SEC_E_CONTEXT_EXPIRED);
        }
        let Some(sizes) = self.sizes else {
            return Err(SecStatus::SEC_E_INVALID_HANDLE);
        };
        let len = sizes.header + data.len() + sizes.trailer;
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        // Exactly one record's room: were rustls to put anything before the
        // record (a queued handshake message), it would refuse for want of
        // room and keep it, rather than hand back more than one record.
        let out = &mut self.scratch[..len];
        let written = self.conn.seal(data, out)?;
        if written != len && !(data.is_empty() && written == 0) {
            return Err(SecStatus::SEC_E_INTERNAL_ERROR);
        }
        Ok(&self.scratch[..written])
    }

    /// DecryptMessage over a byte stream, in place: the first record of
    /// `buf` is decrypted where it lies, its plaintext put after its header
    /// ([`Unsealed::data`]), and what follows it left alone (EXTRA). Nothing
    /// is allocated; the plaintext is copied once, from the buffer rustls
    /// keeps it in (its `ReadTraffic` hands out a chunk it owns, not a slice
    /// of the record) into the record. On a failure the record's bytes are
    /// left as rustls left them.
    pub fn decrypt(&mut self, buf: &mut [u8]) -> Unsealed {
        let refuse = |status| Unsealed {
            status,
            ..Unsealed::default()
        };
        if let Err(status) = self.usable() {
            return refuse(status);
        }
        if self.peer_closed {
            return refuse(SecStatus::SEC_I_CONTEXT_EXPIRED);
        }
        if self.post_handshake.is_some() {
            // The post-handshake record must go to the handshake call first.
            return refuse(SecStatus::SEC_E_OUT_OF_SEQUENCE);
        }
        let record = match first_record(buf) {
            Err(()) => {
                self.failed = Some(SecStatus::SEC_E_DECRYPT_FAILURE);
                return refuse(SecStatus::SEC_E_DECRYPT_FAILURE);
            }
            Ok(None) => {
                return Unsealed {
                    status: SecStatus::SEC_E_INCOMPLETE_MESSAGE,
                    missing: missing_after(buf),
                    ..Unsealed::default()
                }
            }
            Ok(Some(record)) => record,
        };
        let input_len = buf.len();
        let header = self.sizes.map_or(5, |s| s.header);
        let rec = &mut buf[..record];
        let Opened {
            got,
            closed,
            error,
            answer,
        } = self.conn.open(rec, header);
        if let Some(status) = error {
            if status != SecStatus::SEC_I_CONTEXT_EXPIRED {
                self.failed = Some(status);
            }
            return refuse(status);
        }
        let extra = input_len - record;
        if closed {
            self.peer_closed = true;
            return Unsealed {
                status: SecStatus::SEC_I_CONTEXT_EXPIRED,
                record,
                extra,
                ..Unsealed::default()
            };
        }
        if got == 0 {
            // A handshake message after the handshake (a TLS 1.3
            // NewSessionTicket or KeyUpdate): Schannel says
            // SEC_I_RENEGOTIATE and wants the record handed to the handshake
            // call, so it stays in EXTRA.
            self.post_handshake = Some(record);
            self.post_handshake_out = answer;
            return Unsealed {
                status: SecStatus::SEC_I_RENEGOTIATE,
                extra: input_len,
                ..Unsealed::default()
            };
        }
        Unsealed {
            status: SecStatus::SEC_E_OK,
            data: header..header + got,
            record,
            extra,
            missing: 0,
        }
    }
}
