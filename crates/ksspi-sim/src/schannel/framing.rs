//! TLS record framing of the input: where complete records end, the bytes a
//! partial record still needs (SECBUFFER_MISSING, with
//! `SEC_E_INCOMPLETE_MESSAGE`), and input that is not TLS at all. What a
//! call leaves after the records it consumes is EXTRA.

/// The longest record body framing accepts: 16 KiB of plaintext and the
/// 2 KiB a ciphertext may add.
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// How the input splits into TLS records.
pub(super) enum Framing {
    /// `n` bytes of complete records, then a partial one missing `missing` bytes (or none).
    Records { complete: Vec<usize> },
    /// Not TLS.
    Garbage,
}

/// Split `input` into its complete records.
pub(super) fn frame(input: &[u8]) -> Framing {
    let mut ends = Vec::new();
    if walk_records(input, |end| ends.push(end)) {
        Framing::Records { complete: ends }
    } else {
        Framing::Garbage
    }
}

/// Walk the record headers of `input`, handing `each` the end of every
/// complete record; false if a header is not TLS (the input is garbage).
fn walk_records(input: &[u8], mut each: impl FnMut(usize)) -> bool {
    let mut off = 0;
    while input.len() - off >= 5 {
        let h = &input[off..off + 5];
        let valid_type = (20..=24).contains(&h[0]);
        if !valid_type || h[1] != 3 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len > MAX_RECORD {
            return false;
        }
        if input.len() - off < 5 + len {
            break;
        }
        off += 5 + len;
        each(off);
    }
    true
}

/// The end of the first complete record of `input` (`Ok(None)`: none yet),
/// every header checked as [`frame`] checks them, without allocating;
/// `Err(())` for garbage.
pub(super) fn first_record(input: &[u8]) -> Result<Option<usize>, ()> {
    let mut first = None;
    if walk_records(input, |end| {
        first.get_or_insert(end);
    }) {
        Ok(first)
    } else {
        Err(())
    }
}

/// The bytes a partial record at the start of `tail` still needs.
pub(super) fn missing_after(tail: &[u8]) -> usize {
    if tail.len() < 5 {
        5 - tail.len()
    } else {
        5 + usize::from(u16::from_be_bytes([tail[3], tail[4]])) - tail.len()
    }
}
