//! Deterministic pseudo-random numbers for weight initialisation and shuffling: the
//! generator is `rand_xoshiro`'s SplitMix64 (Steele, Lea and Flood, 2014), the same
//! sequence on every target; [`Draw`] adds what safegrad draws from any
//! [`rand_core::Rng`].
//!
//! Seed with [`SeedableRng::seed_from_u64`]: `rand_xoshiro` makes the seed the generator's
//! state, so the outputs are those of the reference `splitmix64.c` started from that state
//! (`from_seed` does the same with the seed's little-endian bytes; `rand_core`'s default
//! `seed_from_u64`, which rand_xoshiro overrides here, would run the seed through PCG32
//! first). A test pins both against the recurrence.
//!
//! ```
//! use safegrad::rng::{Draw, Rng, SeedableRng, SplitMix64};
//!
//! let mut a = SplitMix64::seed_from_u64(42);
//! let mut b = SplitMix64::seed_from_u64(42);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let u = a.next_f64();
//! assert!((0.0..1.0).contains(&u));
//! ```

pub use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::SplitMix64;

/// What safegrad draws from a generator. The arithmetic fixes the sequence of weights and
/// shuffles a seed gives, so it is part of the reproducibility of training runs.
pub trait Draw: Rng {
    /// Uniform in `[0, 1)` with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform in `0..n` (`0` for `n == 0`), by rejection so every value is equally likely.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - rem(u64::MAX, n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return rem(x, n) as usize;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    fn shuffle<X>(&mut self, items: &mut [X]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

impl<R: Rng + ?Sized> Draw for R {}

/// `x % n` for `n > 0`: the processor's division on 64-bit targets, [`rem_narrow`] on the
/// others.
#[inline]
fn rem(x: u64, n: u64) -> u64 {
    if cfg!(target_pointer_width = "64") {
        x % n
    } else {
        rem_narrow(x, n)
    }
}

/// `x % n` for `n > 0` in 32-bit arithmetic: four 32-bit divisions, 16 bits of `x` at a
/// time, for `n` up to 2^16 (a shuffle's), bit by bit above. A firmware then links no 64-bit
/// division routine: 676 bytes of the Cortex-M4F's fine-tuning firmware (`llvm-size`).
fn rem_narrow(x: u64, n: u64) -> u64 {
    if let Ok(n) = u32::try_from(n) {
        if n != 0 && n <= 1 << 16 {
            // `r < n <= 2^16`, so `r << 16` and the next 16 bits fit in 32.
            let mut r = 0u32;
            for shift in [48u32, 32, 16, 0] {
                r = ((r << 16) | ((x >> shift) as u32 & 0xFFFF)) % n;
            }
            return u64::from(r);
        }
    }
    // Restoring division: the remainder of the bits so far, one bit at a time.
    let mut r = 0u64;
    for shift in (0..64).rev() {
        let over = r >> 63 == 1;
        r = (r << 1) | ((x >> shift) & 1);
        if over || r >= n {
            r = r.wrapping_sub(n);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 written out from the paper's recurrence, independent of `rand_xoshiro`.
    struct Reference(u64);

    impl Reference {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567, as the reference algorithm
        // (Vigna's splitmix64.c) gives them, computed independently in Python.
        let mut r = SplitMix64::seed_from_u64(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
        // `from_seed` takes the state as little-endian bytes.
        let mut f = SplitMix64::from_seed(1_234_567u64.to_le_bytes());
        assert_eq!(f.next_u64(), 6_457_827_717_110_365_317);
        // The recurrence, for zero, small, mixed and all-ones seeds, over enough outputs to
        // cover a shuffle.
        for seed in [
            0,
            1,
            7,
            42,
            0x50a6,
            0x5eed ^ 0xD1B5_4A32_D192_ED03,
            u64::MAX,
        ] {
            let (mut r, mut reference) = (SplitMix64::seed_from_u64(seed), Reference(seed));
            for _ in 0..1000 {
                assert_eq!(r.next_u64(), reference.next());
            }
        }
    }

    #[test]
    fn the_draws_keep_their_arithmetic() {
        // From the reference outputs of seed 1234567 above, by the formulas of `Draw`.
        let mut r = SplitMix64::seed_from_u64(1_234_567);
        let first = 6_457_827_717_110_365_317u64;
        assert_eq!(
            r.next_f64().to_bits(),
            ((first >> 11) as f64 / 9_007_199_254_740_992.0).to_bits()
        );
        let mut r = SplitMix64::seed_from_u64(1_234_567);
        let second = 3_203_168_211_198_807_973u64;
        r.next_u64();
        assert_eq!(
            r.uniform(-0.5, 2.0).to_bits(),
            (-0.5 + 2.5 * ((second >> 11) as f64 / 9_007_199_254_740_992.0)).to_bits()
        );
        let mut r = SplitMix64::seed_from_u64(1_234_567);
        assert_eq!(r.below(10), (first % 10) as usize);
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn the_narrow_remainder_is_the_remainder() {
        let mut r = SplitMix64::seed_from_u64(11);
        let divisors = [
            1,
            2,
            3,
            7,
            12,
            64,
            65_535,
            1 << 16,
            (1 << 16) + 1,
            1 << 31,
            u64::from(u32::MAX),
            1 << 32,
            (1 << 63) + 5,
            u64::MAX - 1,
            u64::MAX,
        ];
        for n in divisors {
            for x in [0, 1, n - 1, n, n.wrapping_add(1), u64::MAX, u64::MAX - 1] {
                assert_eq!(rem_narrow(x, n), x % n, "{x} % {n}");
            }
            for _ in 0..200 {
                let x = r.next_u64();
                assert_eq!(rem_narrow(x, n), x % n, "{x} % {n}");
                let m = r.next_u64() >> (r.next_u64() % 64);
                if m != 0 {
                    assert_eq!(rem_narrow(x, m), x % m, "{x} % {m}");
                }
            }
        }
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = SplitMix64::seed_from_u64(7);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let x = r.below(5);
            assert!(x < 5);
            seen[x] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let mut v = [1, 2, 3, 4, 5, 6];
        r.shuffle(&mut v);
        let mut sorted = v;
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6]);
    }
}
