//! CRC-32 (IEEE 802.3, the one of zlib, PNG and Ethernet: reflected polynomial
//! `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`), table-driven with a table built
//! at compile time.

#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an out-of-range index fails the build"
)]
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A running CRC-32, fed in pieces.
///
/// ```
/// use safegrad::crc32::Crc32;
///
/// // The standard check value of CRC-32/ISO-HDLC.
/// assert_eq!(Crc32::checksum(b"123456789"), 0xCBF4_3926);
/// let mut c = Crc32::new();
/// c.update(b"1234");
/// c.update(b"56789");
/// assert_eq!(c.finish(), 0xCBF4_3926);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        Self { state: 0xFFFF_FFFF }
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let index = usize::from((self.state as u8) ^ b);
            let entry = TABLE.get(index).copied().unwrap_or(0);
            self.state = entry ^ (self.state >> 8);
        }
    }

    /// The CRC of everything fed so far.
    pub const fn finish(&self) -> u32 {
        self.state ^ 0xFFFF_FFFF
    }

    /// The CRC of `bytes`.
    pub fn checksum(bytes: &[u8]) -> u32 {
        let mut c = Self::new();
        c.update(bytes);
        c.finish()
    }
}
