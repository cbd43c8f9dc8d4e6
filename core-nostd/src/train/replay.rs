//! Latent replay: rows of a frozen body's outputs from the domain a model was trained on,
//! kept in 8 bits, trained on next to the new domain's rows so that the head fitted to the
//! new domain still serves the old one.
//!
//! ```
//! use safegrad::train::{Chain, Latent8, Samples};
//!
//! let old = [Latent8::encode(&[0.0f32, 1.5, 3.0], 1)?, Latent8::encode(&[2.0, 0.0, 0.5], 0)?];
//! assert_eq!(Latent8::<3>::BYTES, 8);
//! let back = old[0].decode(); // the scale is 3.0 / 127: code 127 is 3.0, code 64 about 1.51
//! assert_eq!((back[0], back[2]), (0.0, 3.0));
//! assert!((back[1] - 1.5).abs() <= 0.5 * 3.0 / 127.0);
//! let new = [([0.25f32, 0.5, 0.75], 2)];
//! let rows = Chain::new(&new[..], &old[..]);
//! assert_eq!(rows.len(), 3);
//! assert_eq!(rows.row(0), Some(([0.25, 0.5, 0.75], 2)));
//! assert_eq!(rows.row(1).map(|(_, class)| class), Some(1));
//! # Ok::<(), safegrad::train::ReplayError>(())
//! ```

use core::fmt;

use super::Samples;

/// Why a row could not be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReplayError {
    /// Value `index` is not finite.
    NonFinite {
        /// Its index in the row.
        index: usize,
    },
    /// The class does not fit in a byte.
    Class {
        /// The class.
        class: usize,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite { index } => {
                write!(f, "latent value {index} is not finite: not stored")
            }
            Self::Class { class } => write!(f, "class {class} does not fit in a byte"),
        }
    }
}

impl core::error::Error for ReplayError {}

/// One latent row in `F + 5` bytes: `F` signed 8-bit codes, their scale and the class.
/// Symmetric quantisation: the scale is the largest magnitude over 127, a value is its code
/// times the scale, and the code is the value over the scale rounded to nearest (ties away
/// from zero); the error of each value is at most half the scale.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Latent8<const F: usize> {
    /// The codes.
    pub codes: [i8; F],
    /// What code 1 stands for.
    pub scale: f32,
    /// The class.
    pub class: u8,
}

impl<const F: usize> Latent8<F> {
    /// Bytes of a row's contents: the codes, the scale and the class.
    pub const BYTES: usize = F + 4 + 1;

    /// `values` of class `class` in 8 bits. A non-finite value or a class above 255 is
    /// refused.
    pub fn encode(values: &[f32; F], class: usize) -> Result<Self, ReplayError> {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(ReplayError::NonFinite { index });
        }
        let class = u8::try_from(class).map_err(|_| ReplayError::Class { class })?;
        let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = largest / 127.0;
        let mut codes = [0i8; F];
        if scale > 0.0 {
            for (c, &v) in codes.iter_mut().zip(values) {
                // Within [-127, 127] by the choice of the scale; the clamp keeps rounding
                // of the division from leaving it.
                *c = libm::roundf(v / scale).clamp(-127.0, 127.0) as i8;
            }
        }
        Ok(Self {
            codes,
            scale,
            class,
        })
    }

    /// The values the row stands for: each code times the scale.
    pub fn decode(&self) -> [f32; F] {
        let mut out = [0.0f32; F];
        self.decode_into(&mut out);
        out
    }

    /// [`decode`](Self::decode) into the first `F` values of `out`.
    pub(crate) fn decode_into(&self, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(&self.codes) {
            *o = f32::from(c) * self.scale;
        }
    }
}

impl<const F: usize> Samples<f32, F> for [Latent8<F>] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn row(&self, i: usize) -> Option<([f32; F], usize)> {
        self.get(i).map(|r| (r.decode(), usize::from(r.class)))
    }

    fn read_into(&self, i: usize, out: &mut [f32]) -> Option<usize> {
        let r = self.get(i)?;
        r.decode_into(out);
        Some(usize::from(r.class))
    }
}

/// The rows of `first`, then those of `second`: the new domain's rows and the replayed
/// ones, read in place as one set.
#[derive(Debug)]
pub struct Chain<'a, A: ?Sized, B: ?Sized> {
    first: &'a A,
    second: &'a B,
}

impl<A: ?Sized, B: ?Sized> Clone for Chain<'_, A, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: ?Sized, B: ?Sized> Copy for Chain<'_, A, B> {}

impl<'a, A: ?Sized, B: ?Sized> Chain<'a, A, B> {
    /// `first`'s rows, then `second`'s.
    pub fn new(first: &'a A, second: &'a B) -> Self {
        Self { first, second }
    }
}

impl<T, A, B, const F: usize> Samples<T, F> for Chain<'_, A, B>
where
    A: Samples<T, F> + ?Sized,
    B: Samples<T, F> + ?Sized,
{
    fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        match i.checked_sub(self.first.len()) {
            None => self.first.row(i),
            Some(j) => self.second.row(j),
        }
    }

    fn read_into(&self, i: usize, out: &mut [T]) -> Option<usize> {
        match i.checked_sub(self.first.len()) {
            None => self.first.read_into(i, out),
            Some(j) => self.second.read_into(j, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::indexing_slicing, clippy::unwrap_used)]
    fn every_value_comes_back_within_half_a_step() {
        let mut state = 7u32;
        for _ in 0..200 {
            let mut v = [0.0f32; 24];
            for x in v.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *x = (state >> 8) as f32 / (1u32 << 24) as f32 * 20.0 - 10.0;
            }
            let r = Latent8::encode(&v, 3).unwrap();
            let back = r.decode();
            let largest = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (a, b) in v.iter().zip(back) {
                // Half a step, and the roundings of the division and the product.
                assert!((a - b).abs() <= largest / 127.0 * 0.5001, "{a} {b}");
            }
            assert!(r.codes.iter().any(|&c| c == 127 || c == -127));
        }
        assert_eq!(Latent8::encode(&[0.0f32; 4], 0).unwrap().decode(), [0.0; 4]);
        assert_eq!(
            Latent8::encode(&[1.0, f32::NAN], 0),
            Err(ReplayError::NonFinite { index: 1 })
        );
        assert_eq!(
            Latent8::encode(&[1.0f32], 256),
            Err(ReplayError::Class { class: 256 })
        );
    }
}
