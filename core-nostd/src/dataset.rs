//! A labelled data set as one checked byte blob, to embed in flash: feature rows and their
//! classes, read in place without copying the whole set.
//!
//! Layout, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SGDS` |
//! | 4 | 2 | format version, 1 |
//! | 6 | 1 | bytes per scalar |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 2 | features per row `F` |
//! | 10 | 2 | classes |
//! | 12 | 4 | rows `n` |
//! | 16 | `n * (2 + F * bytes)` | each row: its class (`u16`), then its `F` features |
//! | end | 4 | CRC-32 of every byte before it |
//!
//! [`Dataset::parse`] checks everything (including that every value is finite and every
//! class in range) once; rows are then read without further checks.
//!
//! ```
//! use safegrad::dataset::{encoded_len, encode, Dataset};
//!
//! let rows = [([1.0f32, 2.0], 0), ([3.0, 4.0], 1)];
//! let mut buf = [0u8; 64];
//! let n = encode(&rows, 2, &mut buf)?;
//! assert_eq!(n, encoded_len::<f32, 2>(2));
//! let set = Dataset::<f32, 2>::parse(&buf[..n])?;
//! assert_eq!(set.len(), 2);
//! assert_eq!(set.get(1), Some(([3.0, 4.0], 1)));
//! # Ok::<(), safegrad::dataset::DatasetError>(())
//! ```

use core::fmt;
use core::marker::PhantomData;

use embedded_storage::nor_flash::NorFlash;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bytes::{le_scalar, put_le_scalar};
use crate::crc32::CRC32;
use crate::scalar::Scalar;
use crate::train::Samples;

/// The four bytes a data set starts with.
pub const MAGIC: [u8; 4] = *b"SGDS";
/// The format version written and read.
pub const VERSION: u16 = 1;
const HEADER: usize = 16;
const TRAILER: usize = 4;

/// A data set's first [`HEADER`] bytes, field by field as in the table above.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    /// [`MAGIC`].
    magic: [u8; 4],
    /// [`VERSION`].
    version: U16,
    /// Bytes per scalar.
    scalar_bytes: u8,
    /// 0.
    reserved: u8,
    /// Features per row.
    features: U16,
    /// Number of classes.
    classes: U16,
    /// Number of rows.
    rows: U32,
}

const _: () = assert!(size_of::<Header>() == HEADER);

/// Why a data set blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DatasetError {
    /// Shorter than a header and a CRC, or than its rows.
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// Not `SGDS`.
    Magic,
    /// Another format version.
    Version {
        /// Found.
        found: u16,
    },
    /// Another scalar size or feature count than the reader's.
    Shape {
        /// Bytes per scalar found.
        scalar_bytes: u8,
        /// Features per row found.
        features: u16,
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
    /// A class is not below the number of classes.
    Label {
        /// Row.
        row: usize,
        /// The class found.
        label: u16,
    },
    /// A feature is `nan` or infinite.
    NonFinite {
        /// Row.
        row: usize,
    },
    /// The output buffer is too small (when encoding).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { len } => write!(f, "data set truncated ({len} bytes)"),
            Self::Magic => write!(f, "not a data set (magic is not \"SGDS\")"),
            Self::Version { found } => write!(f, "data set format version {found} is not supported"),
            Self::Shape {
                scalar_bytes,
                features,
            } => write!(
                f,
                "data set has {features} features of {scalar_bytes} bytes, the reader expects another shape"
            ),
            Self::Length { expected, found } => {
                write!(f, "data set is {found} bytes, its header implies {expected}")
            }
            Self::Crc { stored, computed } => write!(
                f,
                "data set CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Self::Label { row, label } => write!(f, "data set row {row}: class {label} out of range"),
            Self::NonFinite { row } => write!(f, "data set row {row}: a feature is not finite"),
            Self::BufferTooSmall { needed } => write!(f, "data set needs {needed} bytes"),
        }
    }
}

impl core::error::Error for DatasetError {}

/// Bytes of a data set of `rows` rows of `F` features.
pub const fn encoded_len<T: Scalar, const F: usize>(rows: usize) -> usize {
    HEADER + rows * (2 + F * T::BYTES) + TRAILER
}

/// The header of a data set of `rows` rows.
fn header<T: Scalar, const F: usize>(classes: u16, rows: u32) -> Header {
    Header {
        magic: MAGIC,
        version: U16::new(VERSION),
        scalar_bytes: T::BYTES as u8,
        reserved: 0,
        features: U16::new(F as u16),
        classes: U16::new(classes),
        rows: U32::new(rows),
    }
}

/// Writes `rows` (features and class) into `out`; returns the length.
pub fn encode<T: Scalar, const F: usize>(
    rows: &[([T; F], usize)],
    classes: u16,
    out: &mut [u8],
) -> Result<usize, DatasetError> {
    let needed = encoded_len::<T, F>(rows.len());
    let buf = out
        .get_mut(..needed)
        .ok_or(DatasetError::BufferTooSmall { needed })?;
    let (head, rest) = buf.split_at_mut(HEADER);
    head.copy_from_slice(header::<T, F>(classes, rows.len() as u32).as_bytes());
    let (body, crc) = rest.split_at_mut(rest.len() - TRAILER);
    for (row, (chunk, (x, label))) in body
        .chunks_exact_mut(2 + F * T::BYTES)
        .zip(rows)
        .enumerate()
    {
        if *label >= usize::from(classes) {
            return Err(DatasetError::Label {
                row,
                label: u16::try_from(*label).unwrap_or(u16::MAX),
            });
        }
        let (l, values) = chunk.split_at_mut(2);
        l.copy_from_slice(&(*label as u16).to_le_bytes());
        for (dst, v) in values.chunks_exact_mut(T::BYTES).zip(x) {
            put_le_scalar(dst, *v);
        }
    }
    let mut c = CRC32.digest();
    c.update(head);
    c.update(body);
    crc.copy_from_slice(&c.finalize().to_le_bytes());
    Ok(needed)
}

/// A checked data set of rows of `F` features, read in place.
#[derive(Clone, Copy, Debug)]
pub struct Dataset<'a, T, const F: usize> {
    rows: &'a [u8],
    len: usize,
    classes: usize,
    scalar: PhantomData<T>,
}

impl<'a, T: Scalar, const F: usize> Dataset<'a, T, F> {
    const ROW: usize = 2 + F * T::BYTES;

    /// Checks a blob and returns the data set it holds.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DatasetError> {
        let truncated = DatasetError::Truncated { len: bytes.len() };
        if bytes.len() < HEADER + TRAILER {
            return Err(truncated);
        }
        let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| truncated)?;
        if header.magic != MAGIC {
            return Err(DatasetError::Magic);
        }
        let version = header.version.get();
        if version != VERSION {
            return Err(DatasetError::Version { found: version });
        }
        let (scalar_bytes, features) = (header.scalar_bytes, header.features.get());
        if usize::from(scalar_bytes) != T::BYTES || usize::from(features) != F {
            return Err(DatasetError::Shape {
                scalar_bytes,
                features,
            });
        }
        let classes = usize::from(header.classes.get());
        let len = header.rows.get() as usize;
        let expected = len
            .checked_mul(Self::ROW)
            .and_then(|b| b.checked_add(HEADER + TRAILER))
            .ok_or(truncated)?;
        if bytes.len() != expected {
            return Err(DatasetError::Length {
                expected,
                found: bytes.len(),
            });
        }
        let (contents, stored) = U32::read_from_suffix(bytes).map_err(|_| truncated)?;
        let (stored, computed) = (stored.get(), CRC32.checksum(contents));
        if stored != computed {
            return Err(DatasetError::Crc { stored, computed });
        }
        let rows = contents.get(HEADER..).unwrap_or(&[]);
        for (row, chunk) in rows.chunks_exact(Self::ROW).enumerate() {
            let (label, values) = U16::read_from_prefix(chunk).map_err(|_| truncated)?;
            let label = label.get();
            if usize::from(label) >= classes {
                return Err(DatasetError::Label { row, label });
            }
            if values
                .chunks_exact(T::BYTES)
                .any(|b| !le_scalar::<T>(b).is_finite())
            {
                return Err(DatasetError::NonFinite { row });
            }
        }
        Ok(Self {
            rows,
            len,
            classes,
            scalar: PhantomData,
        })
    }

    /// Number of rows.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// `true` without rows.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of classes.
    pub const fn classes(&self) -> usize {
        self.classes
    }

    /// Row `i`: its features and its class.
    pub fn get(&self, i: usize) -> Option<([T; F], usize)> {
        let chunk = self.rows.get(i * Self::ROW..(i + 1) * Self::ROW)?;
        let (label, values) = U16::read_from_prefix(chunk).ok()?;
        let mut x = [T::ZERO; F];
        for (dst, b) in x.iter_mut().zip(values.chunks_exact(T::BYTES)) {
            *dst = le_scalar(b);
        }
        Some((x, usize::from(label.get())))
    }

    /// The rows in order.
    pub fn iter(&self) -> impl Iterator<Item = ([T; F], usize)> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }
}

/// A data set read in place is a source of training rows: its rows are read by index,
/// from flash, and take no RAM.
///
/// ```
/// use safegrad::dataset::{encode, Dataset};
/// use safegrad::train::Samples;
///
/// let rows = [([1.0f32, 2.0], 0), ([3.0, 4.0], 1)];
/// let mut buf = [0u8; 64];
/// let n = encode(&rows, 2, &mut buf)?;
/// let set = Dataset::<f32, 2>::parse(&buf[..n])?;
/// assert_eq!(Samples::len(&set), Samples::len(&rows[..]));
/// assert_eq!(Samples::row(&set, 1), Samples::row(&rows[..], 1));
/// assert_eq!(Samples::row(&set, 2), None);
/// let mut out = [0.0f32; 2];
/// assert_eq!(set.read_into(0, &mut out), Some(0));
/// assert_eq!(out, [1.0, 2.0]);
/// # Ok::<(), safegrad::dataset::DatasetError>(())
/// ```
impl<T: Scalar, const F: usize> Samples<T, F> for Dataset<'_, T, F> {
    fn len(&self) -> usize {
        self.len
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        self.get(i)
    }

    /// Decodes the row straight into `out`, without a copy on the stack.
    fn read_into(&self, i: usize, out: &mut [T]) -> Option<usize> {
        let chunk = self.rows.get(i * Self::ROW..(i + 1) * Self::ROW)?;
        let (label, values) = U16::read_from_prefix(chunk).ok()?;
        for (dst, b) in out.iter_mut().zip(values.chunks_exact(T::BYTES)) {
            *dst = le_scalar(b);
        }
        Some(usize::from(label.get()))
    }
}

/// Why a [`Recorder`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecordError<E> {
    /// The flash failed.
    Flash(E),
    /// The region is not whole erase sectors at a sector boundary, or the flash's write
    /// size does not divide 32 bytes.
    Region,
    /// The region is full: it holds this many rows.
    Full {
        /// Rows it holds.
        rows: usize,
    },
    /// A class outside `0..classes`; nothing was written.
    Label {
        /// The class given.
        label: usize,
        /// Classes of the set.
        classes: u16,
    },
    /// A feature is not finite; nothing was written.
    NonFinite {
        /// Its index in the row.
        feature: usize,
    },
    /// A row of another width than the set's; nothing was written.
    Width {
        /// Values given.
        found: usize,
    },
}

impl<E> RecordError<E> {
    /// The same error with the flash's error converted by `f`.
    pub fn map_flash<F>(self, f: impl FnOnce(E) -> F) -> RecordError<F> {
        match self {
            Self::Flash(e) => RecordError::Flash(f(e)),
            Self::Region => RecordError::Region,
            Self::Full { rows } => RecordError::Full { rows },
            Self::Label { label, classes } => RecordError::Label { label, classes },
            Self::NonFinite { feature } => RecordError::NonFinite { feature },
            Self::Width { found } => RecordError::Width { found },
        }
    }
}

impl<E: fmt::Debug> fmt::Display for RecordError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flash(e) => write!(f, "flash error while recording samples: {e:?}"),
            Self::Region => write!(
                f,
                "the sample region is not whole erase sectors, or the flash's write size does not divide 32 bytes"
            ),
            Self::Full { rows } => write!(f, "the sample region is full ({rows} rows)"),
            Self::Label { label, classes } => {
                write!(f, "class {label} is out of range: the set has {classes}")
            }
            Self::NonFinite { feature } => write!(f, "feature {feature} is not finite"),
            Self::Width { found } => write!(f, "a row of {found} values does not fit the set"),
        }
    }
}

/// Bytes a [`Recorder`] gathers before it programs them.
const PIECE: usize = 32;

/// Records a data set into a region of NOR flash a row at a time (samples logged as they
/// arrive, then trained on for several epochs without holding them in RAM), in the format
/// [`Dataset::parse`] reads in place. [`finish`](Self::finish) writes the header and the
/// CRC; until then the region does not parse, so a set cut short by a reset is refused,
/// not half used.
///
/// ```
/// # use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
/// # struct Ram([u8; 1024]);
/// # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
/// # impl ReadNorFlash for Ram {
/// #     const READ_SIZE: usize = 1;
/// #     fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Self::Error> {
/// #         let at = at as usize;
/// #         out.copy_from_slice(&self.0[at..at + out.len()]);
/// #         Ok(())
/// #     }
/// #     fn capacity(&self) -> usize { self.0.len() }
/// # }
/// # impl NorFlash for Ram {
/// #     const WRITE_SIZE: usize = 4;
/// #     const ERASE_SIZE: usize = 512;
/// #     fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
/// #         self.0[from as usize..to as usize].fill(0xFF);
/// #         Ok(())
/// #     }
/// #     fn write(&mut self, at: u32, bytes: &[u8]) -> Result<(), Self::Error> {
/// #         for (d, s) in self.0[at as usize..].iter_mut().zip(bytes) { *d &= s; }
/// #         Ok(())
/// #     }
/// # }
/// use safegrad::dataset::{Dataset, RecordError, Recorder};
///
/// let mut flash = Ram([0; 1024]);
/// let mut rec = Recorder::<f32, 2>::new(&mut flash, 512, 512, 3)?;
/// rec.push(&mut flash, &[1.0, 2.0], 2)?;
/// assert!(matches!(rec.push(&mut flash, &[f32::NAN, 0.0], 0), Err(RecordError::NonFinite { feature: 0 })));
/// rec.push(&mut flash, &[3.0, 4.0], 0)?;
/// let len = rec.finish(&mut flash)?;
/// let set = Dataset::<f32, 2>::parse(&flash.0[512..512 + len]).unwrap();
/// assert_eq!((set.len(), set.get(1)), (2, Some(([3.0, 4.0], 0))));
/// # Ok::<(), RecordError<NorFlashErrorKind>>(())
/// ```
#[derive(Debug)]
pub struct Recorder<T, const F: usize> {
    base: u32,
    capacity: usize,
    classes: u16,
    rows: usize,
    /// Row bytes programmed so far (a multiple of [`PIECE`]).
    written: usize,
    /// Row bytes not yet programmed (fewer than a piece), and room for the CRC and the
    /// padding to a whole word after them.
    piece: [u8; 2 * PIECE],
    pending: usize,
    scalar: PhantomData<T>,
}

impl<T: Scalar, const F: usize> Recorder<T, F> {
    const ROW: usize = 2 + F * T::BYTES;

    /// Erases the `capacity` bytes at `base` (whole erase sectors) for a set of rows of
    /// `classes` classes.
    pub fn new<Fl: NorFlash>(
        flash: &mut Fl,
        base: u32,
        capacity: usize,
        classes: u16,
    ) -> Result<Self, RecordError<Fl::Error>> {
        let sector = Fl::ERASE_SIZE.max(1);
        let word = Fl::WRITE_SIZE.max(1);
        if !(base as usize).is_multiple_of(sector)
            || !capacity.is_multiple_of(sector)
            || capacity < HEADER + TRAILER + PIECE
            || !PIECE.is_multiple_of(word)
            || !HEADER.is_multiple_of(word)
        {
            return Err(RecordError::Region);
        }
        flash
            .erase(base, base + capacity as u32)
            .map_err(RecordError::Flash)?;
        Ok(Self {
            base,
            capacity,
            classes,
            rows: 0,
            written: 0,
            piece: [0xFF; 2 * PIECE],
            pending: 0,
            scalar: PhantomData,
        })
    }

    /// Rows recorded.
    pub const fn len(&self) -> usize {
        self.rows
    }

    /// `true` before the first row.
    pub const fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Most rows the region holds.
    pub const fn max_rows(&self) -> usize {
        (self.capacity - HEADER - TRAILER - PIECE) / Self::ROW
    }

    /// Appends the row `(x, label)`; a non-finite feature or a class out of range is refused
    /// before anything is written.
    pub fn push<Fl: NorFlash>(
        &mut self,
        flash: &mut Fl,
        x: &[T; F],
        label: usize,
    ) -> Result<(), RecordError<Fl::Error>> {
        self.push_values(flash, x.iter().copied(), label)
    }

    /// [`push`](Self::push) for a row given as the `F` values of an iterator (read where
    /// they lie, a received frame's say, without a copy of the row): it is read twice, to
    /// check and then to write. Other than `F` values are refused as
    /// [`RecordError::Width`].
    pub fn push_values<Fl: NorFlash>(
        &mut self,
        flash: &mut Fl,
        x: impl Iterator<Item = T> + Clone,
        label: usize,
    ) -> Result<(), RecordError<Fl::Error>> {
        if label >= usize::from(self.classes) {
            return Err(RecordError::Label {
                label,
                classes: self.classes,
            });
        }
        let mut width = 0;
        for (i, v) in x.clone().enumerate() {
            if !v.is_finite() {
                return Err(RecordError::NonFinite { feature: i });
            }
            width += 1;
        }
        if width != F {
            return Err(RecordError::Width { found: width });
        }
        if self.rows >= self.max_rows() {
            return Err(RecordError::Full { rows: self.rows });
        }
        let mut bytes = [0u8; 8];
        self.put(flash, &(label as u16).to_le_bytes())?;
        for v in x {
            let b = bytes.get_mut(..T::BYTES).unwrap_or(&mut []);
            put_le_scalar(b, v);
            self.put(flash, b)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Gathers row bytes, programming each whole piece.
    fn put<Fl: NorFlash>(
        &mut self,
        flash: &mut Fl,
        bytes: &[u8],
    ) -> Result<(), RecordError<Fl::Error>> {
        for &b in bytes {
            if let Some(slot) = self.piece.get_mut(self.pending) {
                *slot = b;
            }
            self.pending += 1;
            if self.pending == PIECE {
                let at = self.base + (HEADER + self.written) as u32;
                flash
                    .write(at, self.piece.get(..PIECE).unwrap_or(&[]))
                    .map_err(RecordError::Flash)?;
                self.written += PIECE;
                self.pending = 0;
                self.piece.fill(0xFF);
            }
        }
        Ok(())
    }

    /// Programs the last row bytes, the CRC and then the header: the set is complete.
    /// Returns its length in bytes, for [`Dataset::parse`] over the region.
    pub fn finish<Fl: NorFlash>(mut self, flash: &mut Fl) -> Result<usize, RecordError<Fl::Error>> {
        let head = header::<T, F>(self.classes, self.rows as u32);
        let mut crc = CRC32.digest();
        crc.update(head.as_bytes());
        let mut chunk = [0u8; PIECE];
        let mut done = 0;
        while done < self.written {
            let n = (self.written - done).min(PIECE);
            let buf = chunk.get_mut(..n).unwrap_or(&mut []);
            flash
                .read(self.base + (HEADER + done) as u32, buf)
                .map_err(RecordError::Flash)?;
            crc.update(buf);
            done += n;
        }
        let pending = self.pending;
        crc.update(self.piece.get(..pending).unwrap_or(&[]));
        if let Some(t) = self.piece.get_mut(pending..pending + TRAILER) {
            t.copy_from_slice(&crc.finalize().to_le_bytes());
        }
        let word = Fl::WRITE_SIZE.max(1);
        let tail = (pending + TRAILER).div_ceil(word) * word;
        flash
            .write(
                self.base + (HEADER + self.written) as u32,
                self.piece.get(..tail).unwrap_or(&[]),
            )
            .map_err(RecordError::Flash)?;
        flash
            .write(self.base, head.as_bytes())
            .map_err(RecordError::Flash)?;
        Ok(HEADER + self.written + pending + TRAILER)
    }
}
