//! A simulated NOR flash for fault injection: the rules of real NOR flash (erase by 4 KiB
//! sector to `0xFF`, program in 4-byte words, programming only clears bits), and power that
//! can be cut after any number of byte programs or sector erases, or a bit flipped.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Sector size.
pub const ERASE: usize = 4096;
/// Program granularity.
pub const WORD: usize = 4;

/// What the simulated flash refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Offset or length not a multiple of the erase or write size.
    NotAligned,
    /// Past the end.
    OutOfBounds,
    /// Programming would set a bit that is 0 (NOR flash can only clear bits).
    NotErased,
    /// The power was cut; nothing more happens until a reboot.
    PowerCut,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotErased | Self::PowerCut => NorFlashErrorKind::Other,
        }
    }
}

/// The simulated flash.
#[derive(Clone, Debug)]
pub struct SimFlash {
    image: Vec<u8>,
    /// Byte programs and sector erases left before the power fails (`None`: never).
    budget: Option<u64>,
    /// Byte programs and sector erases so far.
    pub events: u64,
    dead: bool,
}

impl SimFlash {
    /// Erased flash of `size` bytes (a multiple of [`ERASE`]).
    pub fn new(size: usize) -> Self {
        Self {
            image: vec![0xFF; size],
            budget: None,
            events: 0,
            dead: false,
        }
    }

    /// The same contents after a reboot: power back, no budget, no events.
    pub fn reboot(&self) -> Self {
        Self {
            image: self.image.clone(),
            budget: None,
            events: 0,
            dead: false,
        }
    }

    /// Cuts the power after `events` more byte programs or sector erases.
    pub fn cut_after(&mut self, events: u64) {
        self.budget = Some(events);
    }

    /// Flips one bit of the stored contents.
    pub fn flip_bit(&mut self, bit: usize) {
        if let Some(b) = self.image.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
    }

    /// The contents.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Spends one event; `false` when the power fails now.
    fn spend(&mut self) -> bool {
        match self.budget.as_mut() {
            Some(0) => {
                self.dead = true;
                false
            }
            Some(b) => {
                *b -= 1;
                self.events += 1;
                true
            }
            None => {
                self.events += 1;
                true
            }
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, SimError> {
        if self.dead {
            return Err(SimError::PowerCut);
        }
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned);
        }
        if start + len > self.image.len() {
            return Err(SimError::OutOfBounds);
        }
        Ok(start)
    }
}

impl ErrorType for SimFlash {
    type Error = SimError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let start = self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.image[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.image.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let len = (to as usize)
            .checked_sub(from as usize)
            .ok_or(SimError::OutOfBounds)?;
        let start = self.check(from, len, ERASE)?;
        for sector in (start..start + len).step_by(ERASE) {
            if !self.spend() {
                // A torn erase: half the sector erased, half as it was.
                self.image[sector..sector + ERASE / 2].fill(0xFF);
                return Err(SimError::PowerCut);
            }
            self.image[sector..sector + ERASE].fill(0xFF);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let start = self.check(offset, bytes.len(), WORD)?;
        let target = &self.image[start..start + bytes.len()];
        if target.iter().zip(bytes).any(|(&old, &new)| new & !old != 0) {
            return Err(SimError::NotErased);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if !self.spend() {
                return Err(SimError::PowerCut);
            }
            self.image[start + i] &= b;
        }
        Ok(())
    }
}
