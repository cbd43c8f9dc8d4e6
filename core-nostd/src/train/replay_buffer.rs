//! A replay buffer as one checked byte blob, to keep in flash: [`Latent8`] rows, read in
//! place as training rows ([`Samples`]) without copying the buffer into RAM.
//!
//! Layout, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SGRB` |
//! | 4 | 2 | format version, 1 |
//! | 6 | 2 | values per row `F` |
//! | 8 | 2 | classes |
//! | 10 | 2 | reserved: written 0, not read |
//! | 12 | 4 | rows `n` |
//! | 16 | `n * (F + 5)` | each row: its `F` codes (`i8`), its scale (`f32`), its class (`u8`) |
//! | end | 4 | CRC-32 of every byte before it |
//!
//! [`ReplayBuffer::parse`] checks everything once (the CRC, every scale finite and not
//! negative, every class below the header's count); [`ReplayBuffer::parse_for`] also that
//! the classes are those of the model that reads it. Rows are then read without further
//! checks, each value its code times its row's scale, as [`Latent8::decode`] gives it.
//!
//! ```
//! use safegrad::train::{replay_buffer, Latent8, ReplayBuffer, Samples};
//!
//! let rows = [Latent8::encode(&[0.5f32, -1.0], 1)?, Latent8::encode(&[2.0, 0.0], 0)?];
//! let mut buf = [0u8; 64];
//! let n = replay_buffer::encode(&rows, 2, &mut buf)?;
//! assert_eq!(n, replay_buffer::encoded_len::<2>(2));
//! let replay = ReplayBuffer::<2>::parse(&buf[..n])?;
//! assert_eq!(replay.get(1), Some(rows[1]));
//! assert_eq!(replay.row(0), Some((rows[0].decode(), 1)));
//! // A flipped bit anywhere is refused.
//! buf[20] ^= 1;
//! assert!(ReplayBuffer::<2>::parse(&buf[..n]).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Latent8, Samples};
use crate::crc32::CRC32;

/// The four bytes a replay buffer starts with.
pub const MAGIC: [u8; 4] = *b"SGRB";
/// The format version written and read.
pub const VERSION: u16 = 1;
const HEADER: usize = 16;
const TRAILER: usize = 4;

/// A replay buffer's first [`HEADER`] bytes, field by field as in the table above.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    /// [`MAGIC`].
    magic: [u8; 4],
    /// [`VERSION`].
    version: U16,
    /// Values per row.
    values: U16,
    /// Number of classes.
    classes: U16,
    /// 0.
    reserved: U16,
    /// Number of rows.
    rows: U32,
}

const _: () = assert!(size_of::<Header>() == HEADER);

/// Why a replay buffer blob was refused, or could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReplayBufferError {
    /// Shorter than a header and a CRC.
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// Not `SGRB`.
    Magic,
    /// Another format version.
    Version {
        /// Found.
        found: u16,
    },
    /// Rows of another width than the reader's.
    Width {
        /// Values per row the reader expects.
        expected: usize,
        /// Found.
        found: u16,
    },
    /// The length does not match the header.
    Length {
        /// Implied by the header.
        expected: usize,
        /// Given.
        found: usize,
    },
    /// The CRC does not match.
    Crc {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The buffer's classes are not the reader's.
    Classes {
        /// Classes the reader's model has.
        expected: usize,
        /// Classes in the header.
        found: u16,
    },
    /// A class is not below the number of classes.
    Class {
        /// Row.
        row: usize,
        /// The class found.
        class: usize,
    },
    /// A scale is `nan`, infinite or negative.
    Scale {
        /// Row.
        row: usize,
    },
    /// The output buffer is too small (when encoding).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for ReplayBufferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => write!(f, "replay buffer truncated ({len} bytes)"),
            Self::Magic => write!(f, "not a replay buffer (magic is not \"SGRB\")"),
            Self::Version { found } => {
                write!(f, "replay buffer format version {found} is not supported")
            }
            Self::Width { expected, found } => write!(
                f,
                "replay buffer rows have {found} values, the reader expects {expected}"
            ),
            Self::Length { expected, found } => {
                write!(
                    f,
                    "replay buffer is {found} bytes, its header implies {expected}"
                )
            }
            Self::Crc { stored, computed } => write!(
                f,
                "replay buffer CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Self::Classes { expected, found } => write!(
                f,
                "replay buffer holds rows of {found} classes, the model has {expected}"
            ),
            Self::Class { row, class } => {
                write!(f, "replay buffer row {row}: class {class} out of range")
            }
            Self::Scale { row } => write!(
                f,
                "replay buffer row {row}: its scale is not finite or is negative"
            ),
            Self::BufferTooSmall { needed } => write!(f, "replay buffer needs {needed} bytes"),
        }
    }
}

impl core::error::Error for ReplayBufferError {}

/// Bytes of a replay buffer of `rows` rows of `F` values.
pub const fn encoded_len<const F: usize>(rows: usize) -> usize {
    HEADER + rows * Latent8::<F>::BYTES + TRAILER
}

/// Writes `rows` into `out`, for classes below `classes`; returns the length.
pub fn encode<const F: usize>(
    rows: &[Latent8<F>],
    classes: u16,
    out: &mut [u8],
) -> Result<usize, ReplayBufferError> {
    const { assert!(F <= u16::MAX as usize, "rows of more than 65535 values") };
    for (row, r) in rows.iter().enumerate() {
        check_row(row, r, usize::from(classes))?;
    }
    let needed = encoded_len::<F>(rows.len());
    let buf = out
        .get_mut(..needed)
        .ok_or(ReplayBufferError::BufferTooSmall { needed })?;
    let (head, rest) = buf.split_at_mut(HEADER);
    let header = Header {
        magic: MAGIC,
        version: U16::new(VERSION),
        values: U16::new(F as u16),
        classes: U16::new(classes),
        reserved: U16::new(0),
        rows: U32::new(rows.len() as u32),
    };
    head.copy_from_slice(header.as_bytes());
    let (body, crc) = rest.split_at_mut(rest.len() - TRAILER);
    for (chunk, r) in body.chunks_exact_mut(Latent8::<F>::BYTES).zip(rows) {
        let (codes, tail) = chunk.split_at_mut(F);
        for (b, &c) in codes.iter_mut().zip(&r.codes) {
            *b = c.to_le_bytes()[0];
        }
        let (scale, class) = tail.split_at_mut(4);
        scale.copy_from_slice(&r.scale.to_le_bytes());
        class.copy_from_slice(&[r.class]);
    }
    let mut c = CRC32.digest();
    c.update(head);
    c.update(body);
    crc.copy_from_slice(&c.finalize().to_le_bytes());
    Ok(needed)
}

/// Row `row`'s class is below `classes` and its scale finite and not negative.
fn check_row<const F: usize>(
    row: usize,
    r: &Latent8<F>,
    classes: usize,
) -> Result<(), ReplayBufferError> {
    if usize::from(r.class) >= classes {
        return Err(ReplayBufferError::Class {
            row,
            class: usize::from(r.class),
        });
    }
    if !(r.scale.is_finite() && r.scale >= 0.0) {
        return Err(ReplayBufferError::Scale { row });
    }
    Ok(())
}

/// A checked replay buffer of rows of `F` values, read in place.
#[derive(Clone, Copy, Debug)]
pub struct ReplayBuffer<'a, const F: usize> {
    rows: &'a [u8],
    len: usize,
    classes: usize,
}

impl<'a, const F: usize> ReplayBuffer<'a, F> {
    /// Checks a blob and returns the replay buffer it holds.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ReplayBufferError> {
        let truncated = ReplayBufferError::Truncated { len: bytes.len() };
        if bytes.len() < HEADER + TRAILER {
            return Err(truncated);
        }
        let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| truncated)?;
        if header.magic != MAGIC {
            return Err(ReplayBufferError::Magic);
        }
        let version = header.version.get();
        if version != VERSION {
            return Err(ReplayBufferError::Version { found: version });
        }
        let values = header.values.get();
        if usize::from(values) != F {
            return Err(ReplayBufferError::Width {
                expected: F,
                found: values,
            });
        }
        let classes = usize::from(header.classes.get());
        let len = header.rows.get() as usize;
        let expected = len
            .checked_mul(Latent8::<F>::BYTES)
            .and_then(|b| b.checked_add(HEADER + TRAILER))
            .ok_or(truncated)?;
        if bytes.len() != expected {
            return Err(ReplayBufferError::Length {
                expected,
                found: bytes.len(),
            });
        }
        let (contents, stored) = U32::read_from_suffix(bytes).map_err(|_| truncated)?;
        let (stored, computed) = (stored.get(), CRC32.checksum(contents));
        if stored != computed {
            return Err(ReplayBufferError::Crc { stored, computed });
        }
        let buffer = Self {
            rows: contents.get(HEADER..).unwrap_or(&[]),
            len,
            classes,
        };
        for row in 0..len {
            check_row(row, &buffer.get(row).ok_or(truncated)?, classes)?;
        }
        Ok(buffer)
    }

    /// [`parse`](Self::parse), for a model of `classes` classes: a buffer of another number
    /// of classes is refused ([`ReplayBufferError::Classes`]).
    pub fn parse_for(bytes: &'a [u8], classes: usize) -> Result<Self, ReplayBufferError> {
        let buffer = Self::parse(bytes)?;
        if buffer.classes != classes {
            return Err(ReplayBufferError::Classes {
                expected: classes,
                found: u16::try_from(buffer.classes).unwrap_or(u16::MAX),
            });
        }
        Ok(buffer)
    }

    /// Number of rows.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Number of classes the rows' classes are below.
    pub const fn classes(&self) -> usize {
        self.classes
    }

    /// `true` without rows.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i`.
    pub fn get(&self, i: usize) -> Option<Latent8<F>> {
        if i >= self.len {
            return None;
        }
        let size = Latent8::<F>::BYTES;
        let chunk = self.rows.get(i * size..(i + 1) * size)?;
        let (codes, tail) = chunk.split_at_checked(F)?;
        let mut row = Latent8 {
            codes: [0; F],
            scale: 0.0,
            class: *tail.get(4)?,
        };
        for (c, &b) in row.codes.iter_mut().zip(codes) {
            *c = i8::from_le_bytes([b]);
        }
        let (scale, _) = U32::read_from_prefix(tail).ok()?;
        row.scale = f32::from_bits(scale.get());
        Some(row)
    }
}

/// A replay buffer read in place is a source of training rows, each decoded as it is read.
impl<const F: usize> Samples<f32, F> for ReplayBuffer<'_, F> {
    fn len(&self) -> usize {
        self.len
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> [Latent8<3>; 3] {
        [
            Latent8::encode(&[0.5, -1.0, 3.0], 2).unwrap(),
            Latent8::encode(&[0.0, 0.0, 0.0], 0).unwrap(),
            Latent8::encode(&[-7.25, 1e-3, 2.0], 1).unwrap(),
        ]
    }

    const LEN: usize = encoded_len::<3>(3);

    fn encoded() -> [u8; LEN] {
        let mut buf = [0u8; LEN];
        assert_eq!(encode(&rows(), 3, &mut buf), Ok(LEN));
        buf
    }

    #[test]
    fn rows_read_back_as_written_and_decode_as_latent8_does() {
        let buf = encoded();
        let replay = ReplayBuffer::<3>::parse(&buf).unwrap();
        assert_eq!(replay.len(), 3);
        let mut out = [0.0f32; 3];
        for (i, r) in rows().iter().enumerate() {
            assert_eq!(replay.get(i), Some(*r));
            assert_eq!(replay.read_into(i, &mut out), Some(usize::from(r.class)));
            assert_eq!(out.map(f32::to_bits), r.decode().map(f32::to_bits));
        }
        assert_eq!(replay.get(3), None);
    }

    /// The layout of the module's table, written out byte by byte.
    #[test]
    fn the_bytes_are_the_documented_layout() {
        let row = Latent8 {
            codes: [1, -2],
            scale: 0.5,
            class: 3,
        };
        let mut buf = [0u8; encoded_len::<2>(1)];
        assert_eq!(encode(&[row], 4, &mut buf), Ok(27));
        let mut expected = [
            b'S', b'G', b'R', b'B', 1, 0, // magic, version
            2, 0, 4, 0, 0, 0, // values per row, classes, reserved
            1, 0, 0, 0, // rows
            0x01, 0xFE, // codes
            0x00, 0x00, 0x00, 0x3F, // scale 0.5
            3,    // class
            0, 0, 0, 0, // CRC-32
        ];
        let crc = CRC32.checksum(&expected[..23]).to_le_bytes();
        expected[23..].copy_from_slice(&crc);
        assert_eq!(buf, expected);
        let replay = ReplayBuffer::<2>::parse_for(&expected, 4).unwrap();
        assert_eq!(replay.row(0), Some(([0.5, -1.0], 3)));
        assert_eq!(
            ReplayBuffer::<2>::parse_for(&expected, 5).unwrap_err(),
            ReplayBufferError::Classes {
                expected: 5,
                found: 4
            }
        );
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let buf = encoded();
        for bit in 0..buf.len() * 8 {
            let mut bad = buf;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(ReplayBuffer::<3>::parse(&bad).is_err(), "bit {bit}");
        }
        for len in 0..buf.len() {
            assert!(
                ReplayBuffer::<3>::parse(&buf[..len]).is_err(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let buf = encoded();
        assert_eq!(
            ReplayBuffer::<4>::parse(&buf).unwrap_err(),
            ReplayBufferError::Width {
                expected: 4,
                found: 3
            }
        );
        let mut small = [0u8; 10];
        assert_eq!(
            encode(&rows(), 3, &mut small),
            Err(ReplayBufferError::BufferTooSmall {
                needed: encoded_len::<3>(3)
            })
        );
        let mut out = [0u8; LEN];
        assert_eq!(
            encode(&rows(), 2, &mut out),
            Err(ReplayBufferError::Class { row: 0, class: 2 })
        );
        let mut negative = rows();
        negative[1].scale = -1.0;
        assert_eq!(
            encode(&negative, 3, &mut out),
            Err(ReplayBufferError::Scale { row: 1 })
        );
        // A scale that is not finite, written with a valid CRC, is refused on reading.
        let mut nan = encoded();
        let at = HEADER + 2 * Latent8::<3>::BYTES + 3;
        nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let end = nan.len() - TRAILER;
        let crc = CRC32.checksum(&nan[..end]);
        nan[end..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            ReplayBuffer::<3>::parse(&nan).unwrap_err(),
            ReplayBufferError::Scale { row: 2 }
        );
    }
}
