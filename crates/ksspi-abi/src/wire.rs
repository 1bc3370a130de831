//! Little-endian field readers and writers over byte slices, with checked
//! lengths.

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the message does.
    Truncated,
    /// The message is longer than [`crate::MAX_MESSAGE`] or a field's limit.
    TooLong,
    /// Not a ksspi message.
    BadMagic,
    /// Another ABI version.
    BadVersion(u16),
    /// An unknown message kind.
    BadKind(u16),
    /// A known kind, but not the one this IOCTL takes.
    WrongKind,
    /// The header's size disagrees with the buffer or the fields.
    BadSize,
    /// A reserved field is not zero.
    Reserved,
    /// A field has a value outside its range.
    BadField,
    /// The output buffer is too small for the reply.
    OutputTooSmall,
}

impl DecodeError {
    /// The NTSTATUS a driver completes the request with.
    pub const fn ntstatus(self) -> i32 {
        match self {
            DecodeError::Truncated | DecodeError::BadSize => 0xC000_0023u32 as i32, // STATUS_BUFFER_TOO_SMALL
            DecodeError::OutputTooSmall => 0xC000_0023u32 as i32, // STATUS_BUFFER_TOO_SMALL
            DecodeError::BadVersion(_) => 0xC000_0059u32 as i32,  // STATUS_REVISION_MISMATCH
            DecodeError::TooLong => 0xC000_0206u32 as i32,        // STATUS_INVALID_BUFFER_SIZE
            _ => 0xC000_000Du32 as i32,                           // STATUS_INVALID_PARAMETER
        }
    }
}

/// Reads fields from the front of a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Read from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A little-endian i32.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A fixed-size byte array.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.array()
    }
    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
    /// Require that nothing is left.
    pub fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadSize)
        }
    }
}

/// Writes fields into a byte slice.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    /// Write into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, at: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.at
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.at == 0
    }

    /// Append bytes.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), DecodeError> {
        let end = self
            .at
            .checked_add(b.len())
            .ok_or(DecodeError::OutputTooSmall)?;
        if end > self.buf.len() {
            return Err(DecodeError::OutputTooSmall);
        }
        self.buf[self.at..end].copy_from_slice(b);
        self.at = end;
        Ok(())
    }
    /// A byte.
    pub fn u8(&mut self, v: u8) -> Result<(), DecodeError> {
        self.bytes(&[v])
    }
    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// A little-endian i32.
    pub fn i32(&mut self, v: i32) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> Result<(), DecodeError> {
        self.bytes(&v.to_le_bytes())
    }
}
