//! A NOR flash over a memory-mapped region, through `embedded-storage`'s traits, whose
//! image can be persisted (under QEMU: to a host file via semihosting). On `mps2-an386` the
//! region is the end of the code memory where the program sits (`memory.x`'s `STORAGE`),
//! as a microcontroller's data flash would be; the NOR rules are enforced here. Checkpoints
//! go into it through `safegrad::store`'s two slots.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum FlashError {
    /// Offset or length not a multiple of the erase or write size.
    NotAligned,
    /// Past the end of the flash.
    OutOfBounds,
    /// A write would have to turn a 0 bit into 1 without an erase (NOR flash cannot).
    NotErased {
        /// The first offending offset.
        offset: u32,
    },
    /// Saving the image failed.
    Persist,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotErased { .. } | Self::Persist => NorFlashErrorKind::Other,
        }
    }
}

/// Somewhere a flash image is kept between boots.
pub trait Persist {
    /// Stores the whole image; `false` if that failed.
    fn persist(&mut self, image: &[u8]) -> bool;
}

/// No persistence: the image lives as long as the program.
pub struct Volatile;

impl Persist for Volatile {
    fn persist(&mut self, _: &[u8]) -> bool {
        true
    }
}

/// NOR flash of `SIZE` bytes over the memory `image` with real NOR rules: erase in 4 KiB
/// sectors to `0xFF`, program in 4-byte words, and programming only clears bits. Every
/// change is handed to `P` so that the image survives a reset.
pub struct RamFlash<'a, P, const SIZE: usize> {
    image: &'a mut [u8; SIZE],
    persist: P,
}

impl<'a, P: Persist, const SIZE: usize> RamFlash<'a, P, SIZE> {
    /// Sector size.
    pub const ERASE: usize = 4096;
    /// Program granularity.
    pub const WORD: usize = 4;

    /// Flash over `image` as it is (e.g. what a previous boot persisted; all `0xFF` when
    /// new).
    pub fn new(image: &'a mut [u8; SIZE], persist: P) -> Self {
        Self { image, persist }
    }

    /// The whole image, memory-mapped: a stored slot can be read in place.
    pub fn image(&self) -> &[u8; SIZE] {
        self.image
    }

    fn range(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<core::ops::Range<usize>, FlashError> {
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned);
        }
        let end = start.checked_add(len).ok_or(FlashError::OutOfBounds)?;
        if end > SIZE {
            return Err(FlashError::OutOfBounds);
        }
        Ok(start..end)
    }

    fn save(&mut self) -> Result<(), FlashError> {
        if self.persist.persist(&self.image[..]) {
            Ok(())
        } else {
            Err(FlashError::Persist)
        }
    }
}

impl<P, const SIZE: usize> ErrorType for RamFlash<'_, P, SIZE> {
    type Error = FlashError;
}

impl<P: Persist, const SIZE: usize> ReadNorFlash for RamFlash<'_, P, SIZE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let r = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(self.image.get(r).ok_or(FlashError::OutOfBounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<P: Persist, const SIZE: usize> NorFlash for RamFlash<'_, P, SIZE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(FlashError::OutOfBounds)?;
        let r = self.range(from, len, Self::ERASE)?;
        self.image
            .get_mut(r)
            .ok_or(FlashError::OutOfBounds)?
            .iter_mut()
            .for_each(|b| *b = 0xFF);
        self.save()
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let r = self.range(offset, bytes.len(), Self::WORD)?;
        let target = self.image.get_mut(r).ok_or(FlashError::OutOfBounds)?;
        if let Some(i) = target
            .iter()
            .zip(bytes)
            .position(|(&old, &new)| new & !old != 0)
        {
            return Err(FlashError::NotErased {
                offset: offset + i as u32,
            });
        }
        for (old, &new) in target.iter_mut().zip(bytes) {
            *old &= new;
        }
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash<'a> = RamFlash<'a, Volatile, 8192>;

    #[test]
    fn nor_rules_hold() {
        let mut image = [0xFF; 8192];
        let mut f = Flash::new(&mut image, Volatile);
        f.write(0, &[0x0F, 0xF0, 0x00, 0xFF]).unwrap();
        // Clearing more bits is fine; setting one back is not.
        f.write(0, &[0x0E, 0xF0, 0x00, 0xFF]).unwrap();
        assert_eq!(
            f.write(0, &[0x1E, 0xF0, 0x00, 0xFF]),
            Err(FlashError::NotErased { offset: 0 })
        );
        assert_eq!(f.write(2, &[0; 4]), Err(FlashError::NotAligned));
        assert_eq!(f.erase(0, 100), Err(FlashError::NotAligned));
        assert_eq!(f.write(8192, &[0; 4]), Err(FlashError::OutOfBounds));
        f.erase(0, 4096).unwrap();
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [0xFF; 4]);
    }

    #[test]
    fn checkpoints_round_trip_through_the_two_slots() {
        let slots = safegrad::store::Slots::new(0, 4096);
        let mut image = [0xFF; 8192];
        let mut f = Flash::new(&mut image, Volatile);
        let first: Vec<u8> = (0..3001).map(|i| (i * 7 % 251) as u8).collect();
        let second: Vec<u8> = (0..3001).map(|i| (i * 13 % 253) as u8).collect();
        slots.save(&mut f, &first, 1).unwrap();
        slots.save(&mut f, &second, 1).unwrap();
        let mut back = vec![0u8; 4096];
        let (len, seq) = slots.load(&mut f, &mut back).unwrap().unwrap();
        assert_eq!((&back[..len], seq), (&second[..], 2));
        // The first is still in the other slot, for a save cut short.
        assert_eq!(
            slots.inspect(&mut f, 0).unwrap(),
            safegrad::store::SlotState::Valid { seq: 1, len: 3001 }
        );
    }

    #[test]
    fn every_change_is_persisted() {
        struct Count(usize, Vec<u8>);
        impl Persist for Count {
            fn persist(&mut self, image: &[u8]) -> bool {
                self.0 += 1;
                self.1 = image.to_vec();
                true
            }
        }
        let mut image = [0xFF; 4096];
        let mut f = RamFlash::<Count, 4096>::new(&mut image, Count(0, Vec::new()));
        f.erase(0, 4096).unwrap();
        f.write(0, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(f.persist.0, 2); // the erase and the write
        assert_eq!(&f.persist.1[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
