//! The nonzero entries of a short run of values, found without branches: what the SIMD shape
//! of a kernel loops over instead of testing each value (after a ReLU about half are zero, in
//! no pattern a branch predictor could learn).

use crate::scalar::Scalar;

/// Values a [`Nonzero`] looks at, at most: the bits of its mask.
pub(super) const CHUNK: usize = 32;

/// The nonzero values among up to [`CHUNK`] values, as a bit mask over their positions.
#[derive(Clone, Copy)]
pub(super) struct Nonzero<'a, T> {
    /// A whole chunk of values (a shorter run padded with zeros, see [`padded`]): a position
    /// from the mask indexes it without a bounds check (against a compare and a branch for
    /// each nonzero value each tile visits: about 170 instructions fewer per step,
    /// `callgrind` on the host bench's batch-1 step). Borrowed, not copied: a copy of a
    /// chunk compiled to a call to `memcpy`.
    x: &'a [T; CHUNK],
    base: usize,
    bits: u32,
}

/// Bit `k` set for each nonzero value `k` among the first [`CHUNK`] of `x`.
///
/// Built four values at a time from the last four down, each four's bits shifted in below the
/// ones before: on x86-64 LLVM compiles a four to one packed comparison and one `movmskps`, 7
/// instructions per four values where bits shifted to their positions one by one took 35 per
/// eight (`callgrind`, the host bench's batch-1 step).
#[cfg_attr(target_arch = "x86_64", inline(always))]
pub(super) fn mask<T: Scalar>(x: &[T]) -> u32 {
    let x = x.get(..CHUNK).unwrap_or(x);
    let mut fours = x.rchunks_exact(4);
    let mut bits = 0u32;
    for four in &mut fours {
        if let Some(four) = four.first_chunk::<4>() {
            let nonzero = four.map(|v| v != T::ZERO);
            let mut m = 0u32;
            for (i, &nz) in nonzero.iter().enumerate() {
                if nz {
                    m |= 1 << i;
                }
            }
            bits = bits << 4 | m;
        }
    }
    // The first `len % 4` values, below every four.
    for &v in fours.remainder().iter().rev() {
        bits = bits << 1 | u32::from(v != T::ZERO);
    }
    bits
}

/// `true` when the mask `bits` of `len` values has every value nonzero (a data input's
/// usually are).
pub(super) fn all_nonzero(bits: u32, len: usize) -> bool {
    let full = if len >= CHUNK {
        u32::MAX
    } else {
        (1u32 << len) - 1
    };
    bits == full
}

impl<'a, T: Scalar> Nonzero<'a, T> {
    /// The nonzero values among `x` (mask `bits`, from [`mask`]); positions count from
    /// `base`.
    pub(super) fn new(x: &'a [T; CHUNK], base: usize, bits: u32) -> Self {
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
            let v = x.get(k & (CHUNK - 1)).copied().unwrap_or(T::ZERO);
            Some((base + k, v))
        })
    }
}

/// The first values of `x`, zeros after them: a run shorter than a chunk as a chunk.
#[cfg_attr(target_arch = "x86_64", inline(always))]
pub(super) fn padded<T: Scalar>(x: &[T]) -> [T; CHUNK] {
    let mut values = [T::ZERO; CHUNK];
    for (v, &xv) in values.iter_mut().zip(x) {
        *v = xv;
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_nonzero_values_in_order_with_their_positions() {
        let x = [0.0f32, 2.0, -0.0, f32::NAN, 0.0, -1.5];
        let want = [(11, 2.0f32), (13, f32::NAN), (15, -1.5f32)];
        let chunk = padded(&x);
        assert!(Nonzero::new(&chunk, 10, mask(&x))
            .iter()
            .map(|(k, v)| (k, v.to_bits()))
            .eq(want.iter().map(|&(k, v)| (k, v.to_bits()))));
        // A whole chunk of nonzero values; only the first CHUNK values are looked at.
        let full = [1.0f32; CHUNK + 3];
        let chunk = full.first_chunk::<CHUNK>().unwrap();
        let nz = Nonzero::new(chunk, 0, mask(&full));
        assert!(nz.iter().map(|(k, _)| k).eq(0..CHUNK));
    }

    #[test]
    fn the_mask_is_that_of_a_plain_loop_for_every_length() {
        let values = [0.0f32, -0.0, 1.0, f32::NAN, -2.5, f32::INFINITY, 0.0];
        for len in 0..=CHUNK + 5 {
            for shift in 0..values.len() {
                let x: [f32; CHUNK + 5] =
                    core::array::from_fn(|i| values[(i * 3 + shift) % values.len()]);
                let x = &x[..len];
                let mut want = 0u32;
                for (k, &v) in x.iter().take(CHUNK).enumerate() {
                    if v != 0.0 {
                        want |= 1 << k;
                    }
                }
                assert_eq!(mask(x), want, "length {len}, shift {shift}");
                let every = want.count_ones() as usize == len.min(CHUNK);
                assert_eq!(all_nonzero(want, len), every, "length {len}, shift {shift}");
            }
        }
    }
}
