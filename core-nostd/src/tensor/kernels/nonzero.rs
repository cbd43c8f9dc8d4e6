//! The nonzero entries of a short run of values, found without branches: what the SIMD shape
//! of a kernel loops over instead of testing each value (after a ReLU about half are zero, in
//! no pattern a branch predictor could learn).

use crate::scalar::Scalar;

/// Values a [`Nonzero`] looks at, at most: the bits of its mask.
pub(super) const CHUNK: usize = 32;

/// The nonzero values among up to [`CHUNK`] values, as a bit mask over their positions.
#[derive(Clone, Copy)]
pub(super) struct Nonzero<'a, T> {
    x: &'a [T],
    base: usize,
    bits: u32,
}

impl<'a, T: Scalar> Nonzero<'a, T> {
    /// The nonzero values among the first [`CHUNK`] of `x`; positions count from `base`.
    pub(super) fn of(x: &'a [T], base: usize) -> Self {
        let x = x.get(..CHUNK).unwrap_or(x);
        let mut bits = 0u32;
        for (k, &v) in x.iter().enumerate() {
            bits |= u32::from(v != T::ZERO) << (k & (CHUNK - 1));
        }
        Self { x, base, bits }
    }

    /// `(position, value)` of each nonzero value, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, T)> + 'a {
        let (x, base) = (self.x, self.base);
        let mut bits = self.bits;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let k = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some((base + k, x.get(k).copied().unwrap_or(T::ZERO)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_nonzero_values_in_order_with_their_positions() {
        let x = [0.0f32, 2.0, -0.0, f32::NAN, 0.0, -1.5];
        let want = [(11, 2.0f32), (13, f32::NAN), (15, -1.5f32)];
        assert!(Nonzero::of(&x, 10)
            .iter()
            .map(|(k, v)| (k, v.to_bits()))
            .eq(want.iter().map(|&(k, v)| (k, v.to_bits()))));
        // A whole chunk of nonzero values; only the first CHUNK values are looked at.
        let full = [1.0f32; CHUNK + 3];
        assert!(Nonzero::of(&full, 0).iter().map(|(k, _)| k).eq(0..CHUNK));
    }
}
