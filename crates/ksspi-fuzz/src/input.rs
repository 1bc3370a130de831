//! A fuzz input read as a script: bytes, integers and lengths taken from
//! the front, zeros once it runs out (so every input is a valid script).

/// Reads a fuzz input from the front.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True once everything is read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next little-endian u16 (zero-filled past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32 (zero-filled past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A u16 length, then up to that many bytes (fewer if the input ends).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// Writes scripts for [`Input`] (the seed corpora).
#[derive(Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// Append a byte.
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }

    /// Append a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a u16 length and the bytes (at most 65 535 of them).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_reads_back_and_an_ended_input_reads_zeros() {
        let mut s = Script::default();
        s.u8(7).u16(0x1234).u32(0xDEAD_BEEF).bytes(b"abc");
        let mut i = Input::new(&s.0);
        assert_eq!(
            (i.u8(), i.u16(), i.u32(), i.bytes()),
            (7, 0x1234, 0xDEAD_BEEF, &b"abc"[..])
        );
        assert!(i.is_empty());
        assert_eq!((i.u8(), i.u32(), i.bytes()), (0, 0, &b""[..]));
        // A length longer than what is left takes what is left.
        let mut i = Input::new(&[5, 0, 1, 2]);
        assert_eq!(i.bytes(), &[1, 2]);
    }
}
