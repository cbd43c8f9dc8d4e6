//! The nonzero entries of a short run of values, found without branches: what the SIMD shape
//! of a kernel loops over instead of testing each value (after a ReLU about half are zero, in
//! no pattern a branch predictor could learn).

use crate::scalar::Scalar;

/// Values a [`Nonzero`] looks at, at most: the bits of its mask.
pub(super) const CHUNK: usize = 32;

/// The nonzero values among up to [`CHUNK`] values, as a bit mask over their positions.
#[derive(Clone, Copy)]
pub(super) struct Nonzero<T> {
    /// The values, zeros after them: a position from the mask indexes the copy without a
    /// bounds check (a copy of up to 32 values per run, against a compare and a branch for
    /// each nonzero value each tile visits it: about 170 instructions fewer per step,
    /// `callgrind` on the host bench's batch-1 step).
    x: [T; CHUNK],
    base: usize,
    bits: u32,
}

impl<T: Scalar> Nonzero<T> {
    /// The nonzero values among the first [`CHUNK`] of `x`; positions count from `base`.
    ///
    /// The mask is built four values at a time from the last four down, each four's bits
    /// shifted in below the ones before: on x86-64 LLVM compiles a four to one packed
    /// comparison and one `movmskps`, 7 instructions per four values where bits shifted to
    /// their positions one by one took 35 per eight (`callgrind`, the host bench's batch-1
    /// step).
    pub(super) fn of(x: &[T], base: usize) -> Self {
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
        let mut values = [T::ZERO; CHUNK];
        for (v, &xv) in values.iter_mut().zip(x) {
            *v = xv;
        }
        Self {
            x: values,
            base,
            bits,
        }
    }

    /// `true` when every value is nonzero (a data input usually is).
    pub(super) fn all(&self, len: usize) -> bool {
        let full = if len >= CHUNK {
            u32::MAX
        } else {
            (1u32 << len) - 1
        };
        self.bits == full
    }

    /// `(position, value)` of each nonzero value, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, T)> + '_ {
        let (x, base) = (&self.x, self.base);
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
                assert_eq!(Nonzero::of(x, 0).bits, want, "length {len}, shift {shift}");
            }
        }
    }
}
