//! Checkpoints that survive power loss: two slots (A and B) on NOR flash, through
//! `embedded-storage`'s `NorFlash` traits.
//!
//! Each slot holds a record header and a payload (a [`checkpoint`](crate::checkpoint)):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SGSL` |
//! | 4 | 2 | format version, 1 |
//! | 6 | 2 | reserved, `0xFFFF` |
//! | 8 | 4 | sequence number (the newest valid slot wins) |
//! | 12 | 4 | shape signature of the model (from the checkpoint's header) |
//! | 16 | 4 | payload length |
//! | 20 | 4 | CRC-32 of bytes 0..20 and of the payload |
//! | 24 | 4 | commit word `0x5AFE_C0DE`, written last |
//! | 28 | 4 | reserved, `0xFFFF_FFFF` (checked, so every header bit is covered) |
//! | 32 | length | the payload |
//!
//! A save goes to the slot that is not the newest: erase it, program the payload, program
//! the header, and only then the commit word. A slot counts only with its magic, its commit
//! word and a matching CRC, so a save cut short at any byte or erase step leaves a slot that
//! does not count, and the other slot, untouched, is loaded instead.
//!
//! ```
//! use safegrad::store::{Slots, SLOT_HEADER};
//! # use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash, NorFlashErrorKind};
//! # struct Ram([u8; 8192]);
//! # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for Ram {
//! #     const READ_SIZE: usize = 1;
//! #     fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), Self::Error> {
//! #         b.copy_from_slice(&self.0[o as usize..o as usize + b.len()]); Ok(()) }
//! #     fn capacity(&self) -> usize { 8192 }
//! # }
//! # impl NorFlash for Ram {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 1024;
//! #     fn erase(&mut self, f: u32, t: u32) -> Result<(), Self::Error> {
//! #         self.0[f as usize..t as usize].fill(0xFF); Ok(()) }
//! #     fn write(&mut self, o: u32, b: &[u8]) -> Result<(), Self::Error> {
//! #         for (d, s) in self.0[o as usize..].iter_mut().zip(b) { *d &= *s; } Ok(()) }
//! # }
//! let mut flash = Ram([0xFF; 8192]);
//! let slots = Slots::new(0, 4096); // slot A at 0, slot B at 4096
//! let mut buf = [0u8; 64];
//! assert_eq!(slots.load(&mut flash, &mut buf).unwrap(), None); // nothing saved yet
//! slots.save(&mut flash, b"first checkpoint", 7).unwrap();
//! slots.save(&mut flash, b"second one", 7).unwrap();
//! let (len, seq) = slots.load(&mut flash, &mut buf).unwrap().unwrap();
//! assert_eq!((&buf[..len], seq), (&b"second one"[..], 2));
//! # let _ = SLOT_HEADER;
//! ```

use core::fmt;
use core::mem::offset_of;

use embedded_storage::nor_flash::NorFlash;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::crc32::CRC32;

/// Bytes of a slot's header.
pub const SLOT_HEADER: usize = 32;
/// The magic a slot starts with.
pub const SLOT_MAGIC: [u8; 4] = *b"SGSL";
/// The word written last, that makes a slot count.
pub const COMMIT: u32 = 0x5AFE_C0DE;
const VERSION: u16 = 1;

/// A slot's first [`SLOT_HEADER`] bytes, field by field as in the table above.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SlotHeader {
    /// [`SLOT_MAGIC`].
    magic: [u8; 4],
    /// [`VERSION`].
    version: U16,
    /// `0xFFFF`.
    reserved: [u8; 2],
    /// Sequence number.
    seq: U32,
    /// Shape signature of the model.
    signature: U32,
    /// Payload length.
    len: U32,
    /// CRC-32 of the bytes before it and of the payload.
    crc: U32,
    /// [`COMMIT`], written last.
    commit: U32,
    /// `0xFFFF_FFFF`.
    end: U32,
}

const _: () = assert!(size_of::<SlotHeader>() == SLOT_HEADER);

/// Header bytes the CRC covers: those before it.
const CRC_COVERS: usize = offset_of!(SlotHeader, crc);
/// Offset of the commit word; a save programs the bytes before it first.
const COMMIT_AT: usize = offset_of!(SlotHeader, commit);

/// Why a slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError<E> {
    /// The flash failed (or lost power).
    Flash(E),
    /// The payload does not fit a slot.
    TooLarge {
        /// Bytes of payload.
        len: usize,
        /// Bytes a slot holds after its header.
        capacity: usize,
    },
    /// The buffer for loading is smaller than the stored payload.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A streamed payload ended before the length it was announced with (nothing was
    /// committed: the slot does not count).
    ShortPayload {
        /// Bytes announced.
        expected: usize,
        /// Bytes the source gave.
        produced: usize,
    },
}

impl<E> StoreError<E> {
    /// The same error with the flash's error converted by `f`.
    pub fn map_flash<F>(self, f: impl FnOnce(E) -> F) -> StoreError<F> {
        match self {
            Self::Flash(e) => StoreError::Flash(f(e)),
            Self::TooLarge { len, capacity } => StoreError::TooLarge { len, capacity },
            Self::BufferTooSmall { needed } => StoreError::BufferTooSmall { needed },
            Self::ShortPayload { expected, produced } => {
                StoreError::ShortPayload { expected, produced }
            }
        }
    }
}

impl<E: fmt::Debug> fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flash(e) => write!(f, "flash error in a checkpoint slot: {e:?}"),
            Self::TooLarge { len, capacity } => write!(
                f,
                "a {len}-byte payload does not fit a checkpoint slot ({capacity} bytes after the header)"
            ),
            Self::BufferTooSmall { needed } => {
                write!(f, "the stored payload needs a {needed}-byte buffer")
            }
            Self::ShortPayload { expected, produced } => write!(
                f,
                "the payload ended after {produced} of the {expected} bytes announced; nothing was committed"
            ),
        }
    }
}

/// What a slot holds, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotState {
    /// Erased or never committed.
    Empty,
    /// A committed record whose checks pass: its sequence number and payload length.
    Valid {
        /// Sequence number.
        seq: u32,
        /// Payload length.
        len: usize,
    },
    /// Something is there but a check fails (a torn save, a flipped bit).
    Corrupt,
}

/// Where a stored payload is ([`Slots::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Located {
    /// Offset of the payload's first byte in the flash.
    pub offset: u32,
    /// Bytes of payload.
    pub len: usize,
    /// The slot's sequence number.
    pub seq: u32,
}

/// Two slots of `slot_size` bytes, at `base` and `base + slot_size`; `slot_size` is a
/// multiple of the flash's erase size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    base: u32,
    slot_size: u32,
}

impl Slots {
    /// Slots A at `base` and B at `base + slot_size`.
    pub const fn new(base: u32, slot_size: u32) -> Self {
        Self { base, slot_size }
    }

    /// Offset of slot `i` (0 or 1).
    pub const fn offset(&self, i: usize) -> u32 {
        self.base + if i == 0 { 0 } else { self.slot_size }
    }

    /// Payload bytes a slot holds.
    pub const fn capacity(&self) -> usize {
        self.slot_size as usize - SLOT_HEADER
    }

    /// Reads and checks slot `i`: magic, commit word, length and CRC (computed over the
    /// flash in small chunks, so no buffer is needed).
    pub fn inspect<F: NorFlash>(
        &self,
        flash: &mut F,
        i: usize,
    ) -> Result<SlotState, StoreError<F::Error>> {
        let at = self.offset(i);
        let mut h = SlotHeader::new_zeroed();
        flash
            .read(at, h.as_mut_bytes())
            .map_err(StoreError::Flash)?;
        if h.as_bytes().iter().all(|&b| b == 0xFF) {
            return Ok(SlotState::Empty);
        }
        let len = h.len.get() as usize;
        if h.magic != SLOT_MAGIC
            || h.commit.get() != COMMIT
            || h.end.get() != 0xFFFF_FFFF
            || len > self.capacity()
        {
            return Ok(SlotState::Corrupt);
        }
        let mut crc = CRC32.digest();
        crc.update(h.as_bytes().get(..CRC_COVERS).unwrap_or(&[]));
        let mut chunk = [0u8; 64];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            let part = chunk.get_mut(..n).unwrap_or(&mut []);
            flash
                .read(at + (SLOT_HEADER + done) as u32, part)
                .map_err(StoreError::Flash)?;
            crc.update(part);
            done += n;
        }
        if crc.finalize() != h.crc.get() {
            return Ok(SlotState::Corrupt);
        }
        Ok(SlotState::Valid {
            seq: h.seq.get(),
            len,
        })
    }

    /// The states of both slots.
    pub fn states<F: NorFlash>(
        &self,
        flash: &mut F,
    ) -> Result<[SlotState; 2], StoreError<F::Error>> {
        Ok([self.inspect(flash, 0)?, self.inspect(flash, 1)?])
    }

    /// The slot with the highest valid sequence number (wrapping comparison), if any.
    fn newest(states: &[SlotState; 2]) -> Option<(usize, u32, usize)> {
        let valid = |i: usize| match states.get(i) {
            Some(SlotState::Valid { seq, len }) => Some((i, *seq, *len)),
            _ => None,
        };
        match (valid(0), valid(1)) {
            (Some(a), Some(b)) => Some(if b.1.wrapping_sub(a.1) as i32 > 0 {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    /// Where the newest slot whose checks pass keeps its payload, or `None` if neither slot
    /// holds one. On memory-mapped flash the payload can then be used in place, without a
    /// buffer.
    pub fn locate<F: NorFlash>(
        &self,
        flash: &mut F,
    ) -> Result<Option<Located>, StoreError<F::Error>> {
        let states = self.states(flash)?;
        Ok(Self::newest(&states).map(|(i, seq, len)| Located {
            offset: self.offset(i) + SLOT_HEADER as u32,
            len,
            seq,
        }))
    }

    /// Loads the newest slot whose checks pass into `buf`: its length and sequence number,
    /// or `None` if neither slot holds one.
    pub fn load<F: NorFlash>(
        &self,
        flash: &mut F,
        buf: &mut [u8],
    ) -> Result<Option<(usize, u32)>, StoreError<F::Error>> {
        let states = self.states(flash)?;
        let Some((i, seq, len)) = Self::newest(&states) else {
            return Ok(None);
        };
        let out = buf
            .get_mut(..len)
            .ok_or(StoreError::BufferTooSmall { needed: len })?;
        flash
            .read(self.offset(i) + SLOT_HEADER as u32, out)
            .map_err(StoreError::Flash)?;
        Ok(Some((len, seq)))
    }

    /// Saves `payload` (with the model's shape `signature`) into the slot that is not the
    /// newest, with the next sequence number; returns that sequence number.
    pub fn save<F: NorFlash>(
        &self,
        flash: &mut F,
        payload: &[u8],
        signature: u32,
    ) -> Result<u32, StoreError<F::Error>> {
        let mut rest = payload;
        self.save_from(flash, payload.len(), signature, |out| {
            let n = out.len().min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.get_mut(..n).unwrap_or(&mut []).copy_from_slice(head);
            rest = tail;
            n
        })
    }

    /// [`save`](Self::save) of a payload of `len` bytes that `fill` produces a piece at a
    /// time (each call fills its buffer and returns how many bytes it wrote, fewer only at
    /// the end; [`checkpoint::Encoder::fill`](crate::checkpoint::Encoder::fill) is such a
    /// source): no buffer of the whole payload. A source that ends early leaves the slot
    /// uncommitted ([`StoreError::ShortPayload`]).
    pub fn save_from<F: NorFlash>(
        &self,
        flash: &mut F,
        len: usize,
        signature: u32,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> Result<u32, StoreError<F::Error>> {
        if len > self.capacity() {
            return Err(StoreError::TooLarge {
                len,
                capacity: self.capacity(),
            });
        }
        let states = self.states(flash)?;
        let (target, seq) = match Self::newest(&states) {
            Some((i, seq, _)) => (1 - i, seq.wrapping_add(1)),
            None => (0, 1),
        };
        let at = self.offset(target);
        flash
            .erase(at, at + self.slot_size)
            .map_err(StoreError::Flash)?;
        // The header without its commit word (the CRC is filled in after the payload; the
        // fields not yet written read as erased flash); its CRC covers the fields before it
        // and the payload.
        let mut h = SlotHeader {
            magic: SLOT_MAGIC,
            version: U16::new(VERSION),
            reserved: [0xFF; 2],
            seq: U32::new(seq),
            signature: U32::new(signature),
            len: U32::new(len as u32),
            crc: U32::new(0xFFFF_FFFF),
            commit: U32::new(0xFFFF_FFFF),
            end: U32::new(0xFFFF_FFFF),
        };
        let mut crc = CRC32.digest();
        crc.update(h.as_bytes().get(..CRC_COVERS).unwrap_or(&[]));
        // The payload first, in pieces of whole words; a partial last word padded with 0xFF.
        let word = F::WRITE_SIZE.clamp(1, 32);
        let mut piece = [0xFFu8; 64];
        let piece_len = piece.len() - piece.len() % word;
        let mut done = 0;
        while done < len {
            let want = (len - done).min(piece_len);
            let buf = piece.get_mut(..want).unwrap_or(&mut []);
            let got = fill(buf);
            if got != want {
                return Err(StoreError::ShortPayload {
                    expected: len,
                    produced: done + got.min(want),
                });
            }
            crc.update(buf);
            let padded = want.div_ceil(word) * word;
            if let Some(pad) = piece.get_mut(want..padded) {
                pad.fill(0xFF);
            }
            flash
                .write(
                    at + (SLOT_HEADER + done) as u32,
                    piece.get(..padded).unwrap_or(&[]),
                )
                .map_err(StoreError::Flash)?;
            done += want;
        }
        h.crc = U32::new(crc.finalize());
        flash
            .write(at, h.as_bytes().get(..COMMIT_AT).unwrap_or(&[]))
            .map_err(StoreError::Flash)?;
        // The commit word in a write of its own, padded with 0xFF to a whole flash word (up
        // to 32 bytes, more than the header's 4-byte `commit` field).
        let mut commit = [0xFFu8; 32];
        let commit = commit.get_mut(..word.max(4)).unwrap_or(&mut []);
        if let Some(c) = commit.get_mut(..4) {
            c.copy_from_slice(&COMMIT.to_le_bytes());
        }
        flash
            .write(at + COMMIT_AT as u32, commit)
            .map_err(StoreError::Flash)?;
        Ok(seq)
    }
}
