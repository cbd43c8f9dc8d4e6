//! A NOR flash over a borrowed memory image, through `embedded-storage`'s
//! [`ReadNorFlash`] and [`NorFlash`] traits, with the rules of real NOR flash:
//!
//! - erase by [`ERASE`]-byte (4 KiB) sector, to `0xFF`;
//! - program in [`WORD`]-byte (4-byte) words, and programming only clears bits: a write that
//!   would turn a 0 bit into 1 is refused, naming the first offending offset;
//! - every change can be handed to a [`Persist`] hook, so that the image outlives the
//!   program (on a board emulator: a host file);
//! - faults for tests: the power can be cut after any number of byte programs and sector
//!   erases ([`SimFlash::cut_after`]; a cut erase leaves its sector torn), and any stored bit
//!   flipped ([`SimFlash::flip_bit`]).
//!
//! No heap: the image is lent by the caller (a `static` region on a device, a `Vec<u8>` on
//! the host), and a reboot is a new [`SimFlash`] over the same (or a copied) image.
//!
//! ```
//! use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
//! use nor_sim::{FlashError, SimFlash, ERASE};
//!
//! let mut image = [0xFF; 2 * ERASE];
//! let mut flash = SimFlash::new(&mut image);
//! flash.write(0, &[0x12, 0x34, 0x56, 0x78])?;
//! // Programming again may only clear more bits.
//! assert_eq!(
//!     flash.write(0, &[0xFF; 4]),
//!     Err(FlashError::NotErased { offset: 0 })
//! );
//! flash.erase(0, ERASE as u32)?;
//! let mut back = [0; 4];
//! flash.read(0, &mut back)?;
//! assert_eq!(back, [0xFF; 4]);
//! # Ok::<(), FlashError>(())
//! ```
#![no_std]
#![warn(missing_docs)]

use core::ops::Range;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Bytes of one sector, the unit of erasing.
pub const ERASE: usize = 4096;
/// Bytes of one word, the unit of programming.
pub const WORD: usize = 4;

/// Why a flash operation failed.
///
/// ```
/// use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};
/// use nor_sim::FlashError;
///
/// assert_eq!(FlashError::NotAligned.kind(), NorFlashErrorKind::NotAligned);
/// assert_eq!(
///     FlashError::NotErased { offset: 8 }.to_string(),
///     "programming would set a cleared bit at offset 8 (erase first)"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashError {
    /// Offset or length not a multiple of the erase or program size.
    NotAligned,
    /// Past the end of the flash.
    OutOfBounds,
    /// A write would have to turn a 0 bit into 1 without an erase (NOR flash cannot).
    NotErased {
        /// The first offending offset.
        offset: u32,
    },
    /// The power was cut ([`SimFlash::cut_after`]); nothing more happens until a reboot.
    PowerCut,
    /// The [`Persist`] hook could not store the image.
    Persist,
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotAligned => f.write_str("offset or length not aligned to the flash's unit"),
            Self::OutOfBounds => f.write_str("past the end of the flash"),
            Self::NotErased { offset } => write!(
                f,
                "programming would set a cleared bit at offset {offset} (erase first)"
            ),
            Self::PowerCut => f.write_str("the power was cut"),
            Self::Persist => f.write_str("the flash image could not be persisted"),
        }
    }
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotErased { .. } | Self::PowerCut | Self::Persist => NorFlashErrorKind::Other,
        }
    }
}

/// Somewhere a flash image is kept between boots: [`SimFlash`] hands it the whole image
/// after every change (an erase, a write, a flipped bit).
///
/// ```
/// use embedded_storage::nor_flash::NorFlash;
/// use nor_sim::{Persist, SimFlash, ERASE};
///
/// /// Counts the changes.
/// struct Count(usize);
///
/// impl Persist for Count {
///     fn persist(&mut self, _image: &[u8]) -> bool {
///         self.0 += 1;
///         true
///     }
/// }
///
/// let mut image = [0xFF; ERASE];
/// let mut flash = SimFlash::with_persist(&mut image, Count(0));
/// flash.erase(0, ERASE as u32)?;
/// flash.write(0, &[1, 2, 3, 4])?;
/// assert_eq!(flash.persistence().0, 2);
/// # Ok::<(), nor_sim::FlashError>(())
/// ```
pub trait Persist {
    /// Stores the whole image; `false` if that failed (the operation then fails with
    /// [`FlashError::Persist`], its change made in memory).
    fn persist(&mut self, image: &[u8]) -> bool;
}

/// No persistence: the image lives as long as the memory lent to the flash.
///
/// ```
/// use nor_sim::{Persist, Volatile};
///
/// assert!(Volatile.persist(&[0xFF; 4]));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volatile;

impl Persist for Volatile {
    fn persist(&mut self, _: &[u8]) -> bool {
        true
    }
}

/// A NOR flash over the memory `image` (its length a multiple of [`ERASE`], for every
/// sector to be erasable), every change handed to `P`.
///
/// Byte programs and sector erases are counted as [`operations`](Self::operations);
/// after [`cut_after`](Self::cut_after) the power fails at a chosen one, and every operation
/// from then on fails with [`FlashError::PowerCut`].
///
/// ```
/// use embedded_storage::nor_flash::NorFlash;
/// use nor_sim::{FlashError, SimFlash, ERASE};
///
/// let mut image = vec![0xFF; ERASE];
/// let mut flash = SimFlash::new(&mut image);
/// flash.cut_after(2);
/// // Two bytes of the word are programmed, then the power fails.
/// assert_eq!(flash.write(0, &[0; 4]), Err(FlashError::PowerCut));
/// assert_eq!(flash.write(4, &[0; 4]), Err(FlashError::PowerCut));
/// // A reboot: the same image, powered again.
/// let flash = SimFlash::new(&mut image);
/// assert_eq!(&flash.image()[..8], &[0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
/// ```
#[derive(Debug)]
pub struct SimFlash<'a, P = Volatile> {
    image: &'a mut [u8],
    persist: P,
    /// Byte programs and sector erases left before the power fails (`None`: never).
    budget: Option<u32>,
    /// Byte programs and sector erases done.
    operations: u32,
    cut: bool,
}

impl<'a> SimFlash<'a, Volatile> {
    /// Flash over `image` as it is (all `0xFF` when new), not persisted.
    ///
    /// ```
    /// use embedded_storage::nor_flash::ReadNorFlash;
    /// use nor_sim::{SimFlash, ERASE};
    ///
    /// let mut image = [0xFF; 2 * ERASE];
    /// assert_eq!(SimFlash::new(&mut image).capacity(), 8192);
    /// ```
    pub fn new(image: &'a mut [u8]) -> Self {
        Self::with_persist(image, Volatile)
    }
}

impl<'a, P: Persist> SimFlash<'a, P> {
    /// Flash over `image` as it is (e.g. what a previous boot persisted), every change
    /// handed to `persist` (see [`Persist`]).
    pub fn with_persist(image: &'a mut [u8], persist: P) -> Self {
        Self {
            image,
            persist,
            budget: None,
            operations: 0,
            cut: false,
        }
    }

    /// The whole image: what is stored can be read in place, as from memory-mapped flash.
    ///
    /// ```
    /// use nor_sim::SimFlash;
    ///
    /// let mut image = [0xFF; 4096];
    /// assert!(SimFlash::new(&mut image).image().iter().all(|&b| b == 0xFF));
    /// ```
    pub fn image(&self) -> &[u8] {
        self.image
    }

    /// The persistence hook.
    pub fn persistence(&self) -> &P {
        &self.persist
    }

    /// Byte programs and sector erases done so far (those a power cut stopped not counted).
    ///
    /// ```
    /// use embedded_storage::nor_flash::NorFlash;
    /// use nor_sim::{SimFlash, ERASE};
    ///
    /// let mut image = [0xFF; 2 * ERASE];
    /// let mut flash = SimFlash::new(&mut image);
    /// flash.erase(0, 2 * ERASE as u32)?;
    /// flash.write(0, &[0; 8])?;
    /// assert_eq!(flash.operations(), 2 + 8);
    /// # Ok::<(), nor_sim::FlashError>(())
    /// ```
    pub fn operations(&self) -> u32 {
        self.operations
    }

    /// Cuts the power after `operations` more byte programs or sector erases: the next one
    /// fails (a sector being erased is left torn, its first half erased and the rest as it
    /// was), and so does every operation after it.
    ///
    /// ```
    /// use embedded_storage::nor_flash::NorFlash;
    /// use nor_sim::{FlashError, SimFlash, ERASE};
    ///
    /// let mut image = [0u8; 2 * ERASE];
    /// let mut flash = SimFlash::new(&mut image);
    /// flash.cut_after(1);
    /// assert_eq!(flash.erase(0, 2 * ERASE as u32), Err(FlashError::PowerCut));
    /// assert!(flash.is_cut());
    /// let image = flash.image();
    /// assert!(image[..ERASE + ERASE / 2].iter().all(|&b| b == 0xFF));
    /// assert!(image[ERASE + ERASE / 2..].iter().all(|&b| b == 0));
    /// ```
    pub fn cut_after(&mut self, operations: u32) {
        self.budget = Some(operations);
    }

    /// Whether the power has been cut.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Flips bit `bit` of the image (bit 0 is the least significant bit of byte 0), as a
    /// fault of the stored medium; the image is persisted like after any change.
    ///
    /// ```
    /// use nor_sim::{FlashError, SimFlash};
    ///
    /// let mut image = [0xFF; 4096];
    /// let mut flash = SimFlash::new(&mut image);
    /// flash.flip_bit(8 + 3)?;
    /// assert_eq!(flash.image()[1], 0xF7);
    /// assert_eq!(flash.flip_bit(4096 * 8), Err(FlashError::OutOfBounds));
    /// # Ok::<(), FlashError>(())
    /// ```
    pub fn flip_bit(&mut self, bit: usize) -> Result<(), FlashError> {
        let byte = self.image.get_mut(bit / 8).ok_or(FlashError::OutOfBounds)?;
        *byte ^= 1 << (bit % 8);
        self.save()
    }

    /// The bytes `offset..offset + len`, if the power is on, both are multiples of `align`
    /// and the range is inside the image.
    fn range(&self, offset: u32, len: usize, align: usize) -> Result<Range<usize>, FlashError> {
        if self.cut {
            return Err(FlashError::PowerCut);
        }
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned);
        }
        let end = start.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        if end > self.image.len() {
            return Err(FlashError::OutOfBounds);
        }
        Ok(start..end)
    }

    /// Spends up to `wanted` operations of the budget: how many happen before the power
    /// fails (all of them unless it does).
    fn allow(&mut self, wanted: usize) -> usize {
        let done = match self.budget.as_mut() {
            None => wanted,
            Some(left) => {
                let done = wanted.min(*left as usize);
                *left -= done as u32;
                if done < wanted {
                    self.cut = true;
                }
                done
            }
        };
        self.operations = self.operations.wrapping_add(done as u32);
        done
    }

    fn save(&mut self) -> Result<(), FlashError> {
        if self.persist.persist(self.image) {
            Ok(())
        } else {
            Err(FlashError::Persist)
        }
    }

    /// After a change: persists it, and reports a power cut that stopped it first.
    fn changed(&mut self) -> Result<(), FlashError> {
        let saved = self.save();
        if self.cut {
            Err(FlashError::PowerCut)
        } else {
            saved
        }
    }
}

impl<P> ErrorType for SimFlash<'_, P> {
    type Error = FlashError;
}

impl<P: Persist> ReadNorFlash for SimFlash<'_, P> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let r = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(self.image.get(r).ok_or(FlashError::OutOfBounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.image.len()
    }
}

impl<P: Persist> NorFlash for SimFlash<'_, P> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(FlashError::OutOfBounds)?;
        let r = self.range(from, len, ERASE)?;
        let mut erased = self.allow(len / ERASE) * ERASE;
        if self.cut {
            // The sector the power failed in is left torn: its first half erased.
            erased += ERASE / 2;
        }
        if let Some(sectors) = self.image.get_mut(r.start..r.start + erased) {
            sectors.fill(0xFF);
        }
        self.changed()
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let r = self.range(offset, bytes.len(), WORD)?;
        let target = self.image.get(r.clone()).ok_or(FlashError::OutOfBounds)?;
        if let Some(i) = target
            .iter()
            .zip(bytes)
            .position(|(&old, &new)| new & !old != 0)
        {
            return Err(FlashError::NotErased {
                offset: offset + i as u32,
            });
        }
        let programmed = self.allow(bytes.len());
        if let Some(target) = self.image.get_mut(r.start..r.start + programmed) {
            for (old, &new) in target.iter_mut().zip(bytes) {
                *old &= new;
            }
        }
        self.changed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn nor_rules_hold() {
        let mut image = [0xFF; 2 * ERASE];
        let mut f = SimFlash::new(&mut image);
        f.write(0, &[0x0F, 0xF0, 0x00, 0xFF]).unwrap();
        // Clearing more bits is fine; setting one back is not.
        f.write(0, &[0x0E, 0xF0, 0x00, 0xFF]).unwrap();
        assert_eq!(
            f.write(0, &[0x0E, 0xF0, 0x01, 0xFF]),
            Err(FlashError::NotErased { offset: 2 })
        );
        assert_eq!(f.write(2, &[0; 4]), Err(FlashError::NotAligned));
        assert_eq!(f.write(0, &[0; 3]), Err(FlashError::NotAligned));
        assert_eq!(f.erase(0, 100), Err(FlashError::NotAligned));
        assert_eq!(f.erase(ERASE as u32, 0), Err(FlashError::OutOfBounds));
        assert_eq!(f.write(8192, &[0; 4]), Err(FlashError::OutOfBounds));
        assert_eq!(f.read(8190, &mut [0; 4]), Err(FlashError::OutOfBounds));
        assert_eq!(f.write(u32::MAX - 3, &[0; 4]), Err(FlashError::OutOfBounds));
        f.erase(0, ERASE as u32).unwrap();
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4]);
        assert!(!f.is_cut());
    }

    #[test]
    fn a_cut_stops_the_operation_where_it_is_and_everything_after_it() {
        let mut image = [0u8; 3 * ERASE];
        let mut f = SimFlash::new(&mut image);
        f.erase(0, ERASE as u32).unwrap();
        f.cut_after(5);
        // 4 bytes, then 1 of the next word.
        f.write(0, &[0xAA; 4]).unwrap();
        assert_eq!(f.write(4, &[0x55; 8]), Err(FlashError::PowerCut));
        assert_eq!(f.operations(), 1 + 5);
        assert_eq!(f.read(0, &mut [0; 4]), Err(FlashError::PowerCut));
        assert_eq!(f.erase(0, ERASE as u32), Err(FlashError::PowerCut));
        assert_eq!(
            &image[..12],
            &[0xAA, 0xAA, 0xAA, 0xAA, 0x55, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        // A reboot: power back, the image as the cut left it.
        let mut f = SimFlash::new(&mut image);
        f.cut_after(0);
        assert_eq!(
            f.erase(ERASE as u32, 2 * ERASE as u32),
            Err(FlashError::PowerCut)
        );
        assert_eq!(f.operations(), 0);
        assert!(image[ERASE..ERASE + ERASE / 2].iter().all(|&b| b == 0xFF));
        assert!(image[ERASE + ERASE / 2..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_refused_write_changes_nothing_and_spends_nothing() {
        let mut image = [0xFF; ERASE];
        let mut f = SimFlash::new(&mut image);
        f.write(4, &[0; 4]).unwrap();
        f.cut_after(3);
        assert_eq!(
            f.write(0, &[0xFF; 8]),
            Err(FlashError::NotErased { offset: 4 })
        );
        assert_eq!(f.operations(), 4);
        assert!(!f.is_cut());
        assert_eq!(&f.image()[..4], &[0xFF; 4]);
    }

    #[test]
    fn every_change_is_persisted_even_one_cut_short() {
        struct Last([u8; 8], usize);
        impl Persist for Last {
            fn persist(&mut self, image: &[u8]) -> bool {
                self.0.copy_from_slice(&image[..8]);
                self.1 += 1;
                true
            }
        }
        let mut image = [0u8; ERASE];
        let mut f = SimFlash::with_persist(&mut image, Last([0; 8], 0));
        f.erase(0, ERASE as u32).unwrap();
        f.write(0, &[1, 2, 3, 4]).unwrap();
        f.cut_after(2);
        assert_eq!(f.write(4, &[5, 6, 7, 8]), Err(FlashError::PowerCut));
        assert_eq!(f.persistence().1, 3);
        assert_eq!(f.persistence().0, [1, 2, 3, 4, 5, 6, 0xFF, 0xFF]);
    }

    #[test]
    fn a_failed_persist_is_reported() {
        struct Broken;
        impl Persist for Broken {
            fn persist(&mut self, _: &[u8]) -> bool {
                false
            }
        }
        let mut image = [0xFF; ERASE];
        let mut f = SimFlash::with_persist(&mut image, Broken);
        assert_eq!(f.write(0, &[0; 4]), Err(FlashError::Persist));
        assert_eq!(f.flip_bit(0), Err(FlashError::Persist));
    }
}
