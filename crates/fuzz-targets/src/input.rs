//! Reads fuzzer bytes as a stream of small numbers and slices; past the
//! end every read returns zeros or an empty slice, so any input decodes.

/// A cursor over the fuzzer's bytes.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Whether the low bit of the next byte is set.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A length-prefixed slice: a 16-bit length (modulo `max + 1`), then
    /// that many bytes (or what is left).
    pub fn chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes inputs for [`Input`] to read: the inverse, for building seeds.
#[derive(Debug, Default, Clone)]
pub struct InputWriter {
    /// The bytes so far.
    pub bytes: Vec<u8>,
}

impl InputWriter {
    /// Appends a byte.
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.bytes.push(b);
        self
    }

    /// Appends a big-endian 16-bit number.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian 32-bit number.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// Appends a slice for [`Input::chunk`] (the length must fit `max`).
    pub fn chunk(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16).raw(b)
    }
}
