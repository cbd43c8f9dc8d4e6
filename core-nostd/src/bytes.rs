//! Scalars of the binary formats (checkpoint parameters, data set features) as little-endian
//! bytes. The formats' headers are `zerocopy` structs in their own modules; a scalar stays
//! hand-written here because its width is the [`Scalar`] type's (4 bytes for `f32`, 8 for
//! `f64`) and code generic over `Scalar` only knows it as [`Scalar::BYTES`] and the bits of
//! [`Scalar::to_bits_u64`]: a zerocopy field type (`F32`, `F64`) would need one more
//! associated type on the public `Scalar` trait, for the same few lines.

use crate::scalar::Scalar;

/// A scalar from its [`Scalar::BYTES`] little-endian bytes at the start of `chunk` (missing
/// bytes read as zeros: callers pass whole chunks).
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
