//! Little-endian fields read from byte slices, for the binary formats (checkpoints, data
//! sets, flash slots). A field past the end of the slice reads as zero bytes: the formats
//! check lengths first, so this never hides a short read.

use crate::scalar::Scalar;

/// The `u32` at `at`.
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

/// A scalar from its [`Scalar::BYTES`] little-endian bytes at the start of `chunk`.
pub(crate) fn le_scalar<T: Scalar>(chunk: &[u8]) -> T {
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(chunk.iter().take(T::BYTES)) {
        *dst = *src;
    }
    T::from_bits_u64(u64::from_le_bytes(b))
}

/// Writes a scalar's [`Scalar::BYTES`] little-endian bytes into `chunk`.
pub(crate) fn put_le_scalar<T: Scalar>(chunk: &mut [u8], value: T) {
    let bits = value.to_bits_u64().to_le_bytes();
    for (dst, src) in chunk.iter_mut().zip(bits.iter().take(T::BYTES)) {
        *dst = *src;
    }
}
