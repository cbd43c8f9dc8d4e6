//! The model checkpoint: every parameter of a tape (trainable and frozen), with what is
//! needed to refuse a wrong or damaged one.
//!
//! Layout, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SGCK` |
//! | 4 | 2 | format version, [`FORMAT_VERSION`] |
//! | 6 | 1 | bytes per scalar (4 for `f32`, 8 for `f64`) |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 4 | shape signature: CRC-32 of the parameters' `(rows, columns)` in order |
//! | 12 | 4 | number of parameter scalars `n` |
//! | 16 | `n * bytes` | the parameters, in recording order |
//! | (version 2) | 4 | bytes `q` of the `int8` body |
//! | (version 2) | `q` | the `int8` body ([`quant::Int8Body`](crate::quant::Int8Body)) |
//! | end | 4 | CRC-32 of every byte before it |
//!
//! Version 2 adds the `int8` body: the frozen layers of a quantised model, their `int8`
//! weights with their scales, `int32` biases and requantisation, ahead of the float
//! parameters of its trainable head ([`Encoder::with_int8`], [`int8_body`]). A checkpoint
//! without one is written as version 1, byte for byte as before, and both versions are read.
//! A model that needs an `int8` body refuses a version 1 checkpoint, saying that it holds
//! none.
//!
//! [`load`] checks all of it, and that every value is finite, before it writes a single
//! parameter: a refused checkpoint leaves the model as it was. Of the `int8` body it checks
//! the length and, with everything else, the CRC; [`Int8Body::parse`](crate::quant::Int8Body::parse)
//! checks its layers when the body is read.
//!
//! ```
//! use safegrad::checkpoint::{encoded_len, load, save, CheckpointError};
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let w = tape.parameter(&Tensor::new([[1.0, 2.0], [3.0, 4.0]]))?;
//! let mut buf = [0u8; 64];
//! let n = save(&tape, &mut buf)?;
//! assert_eq!(n, encoded_len(&tape));
//!
//! tape.set_parameter(w, &Tensor::zeros())?;
//! load(&mut tape, &buf[..n])?;
//! assert_eq!(tape.value(w)?, Tensor::new([[1.0, 2.0], [3.0, 4.0]]));
//!
//! buf[20] ^= 0x01; // one flipped bit
//! assert!(matches!(load(&mut tape, &buf[..n]), Err(CheckpointError::Crc { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bytes::{le_scalar, put_le_scalar};
use crate::crc32::{Digest, CRC32};
use crate::graph::Op;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape};

/// The four bytes a checkpoint starts with.
pub const MAGIC: [u8; 4] = *b"SGCK";
/// The newest format version, which this library writes for a checkpoint with an `int8`
/// body; it reads this one and [`FLOAT_FORMAT_VERSION`].
pub const FORMAT_VERSION: u16 = 2;
/// The format version of a checkpoint of float parameters alone, as this library writes it.
pub const FLOAT_FORMAT_VERSION: u16 = 1;
/// Bytes between the parameters and the `int8` body in a version 2 checkpoint (its length).
pub const INT8_LEN_BYTES: usize = 4;
/// Bytes before the parameters.
pub const HEADER_LEN: usize = 16;
/// Bytes after the parameters (the CRC).
pub const TRAILER_LEN: usize = 4;

/// A checkpoint's first [`HEADER_LEN`] bytes, field by field as in the table above.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    /// [`MAGIC`].
    magic: [u8; 4],
    /// [`FORMAT_VERSION`].
    version: U16,
    /// Bytes per scalar.
    scalar_bytes: u8,
    /// 0.
    reserved: u8,
    /// [`shape_signature`] of the model.
    signature: U32,
    /// Number of parameter scalars.
    count: U32,
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

/// Why a checkpoint was refused. Each names the check that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CheckpointError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Shorter than a header and a CRC.
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// The first four bytes are not `SGCK`.
    Magic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A format version this library does not read.
    Version {
        /// The version found.
        found: u16,
    },
    /// Written for another scalar type.
    ScalarSize {
        /// Bytes per scalar in the checkpoint.
        found: u8,
        /// Bytes per scalar of this model.
        expected: u8,
    },
    /// Written for a model with other parameter shapes.
    ShapeSignature {
        /// Signature in the checkpoint.
        found: u32,
        /// Signature of this model.
        expected: u32,
    },
    /// Holds another number of parameters.
    ParameterCount {
        /// Count in the checkpoint.
        found: u32,
        /// Count of this model.
        expected: u32,
    },
    /// The length does not match the header's parameter count.
    Length {
        /// Bytes the header implies.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The CRC does not match the contents.
    Crc {
        /// CRC stored in the checkpoint.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// A parameter is `nan` or infinite.
    NonFinite {
        /// Index of the first such parameter.
        index: usize,
    },
    /// A frozen parameter of the tape is read in place
    /// ([`Tape::read_frozen_in_place`](crate::Tape::read_frozen_in_place)) and the
    /// checkpoint holds another value for it.
    InPlaceMismatch {
        /// Index of the first differing value among all parameter scalars.
        index: usize,
    },
    /// The checkpoint's parameters cannot be read in place: they are not aligned for the
    /// scalar type, or the target is not little-endian.
    NotInPlace,
    /// A format version 2 checkpoint whose `int8` body is empty (a checkpoint without one
    /// is version 1).
    EmptyInt8Body,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "checkpoint needs {needed} bytes, the buffer has {available}"
            ),
            Self::Truncated { len } => write!(
                f,
                "checkpoint truncated: {len} bytes, less than a header and a CRC"
            ),
            Self::Magic { found } => write!(f, "not a checkpoint: magic {found:02x?}, expected \"SGCK\""),
            Self::Version { found } => write!(
                f,
                "checkpoint format version {found} is not supported (this library reads versions {FLOAT_FORMAT_VERSION} and {FORMAT_VERSION})"
            ),
            Self::ScalarSize { found, expected } => write!(
                f,
                "checkpoint stores {found}-byte scalars, the model uses {expected}-byte scalars"
            ),
            Self::ShapeSignature { found, expected } => write!(
                f,
                "checkpoint shape signature {found:#010x} does not match the model's {expected:#010x}"
            ),
            Self::ParameterCount { found, expected } => write!(
                f,
                "checkpoint holds {found} parameters, the model has {expected}"
            ),
            Self::Length { expected, found } => write!(
                f,
                "checkpoint length {found} bytes, its header implies {expected}"
            ),
            Self::Crc { stored, computed } => write!(
                f,
                "checkpoint CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Self::NonFinite { index } => {
                write!(f, "checkpoint parameter {index} is not finite")
            }
            Self::InPlaceMismatch { index } => write!(
                f,
                "checkpoint parameter {index} belongs to a frozen parameter read in place and differs from it"
            ),
            Self::EmptyInt8Body => write!(
                f,
                "checkpoint of format version 2 with an empty int8 body (one without a body is version 1)"
            ),
            Self::NotInPlace => write!(
                f,
                "checkpoint parameters cannot be read in place: not aligned for the scalar type, or not a little-endian target"
            ),
        }
    }
}

impl core::error::Error for CheckpointError {}

/// CRC-32 of the parameter shapes `(rows, columns)` in recording order: two models with the
/// same layers in the same order have the same signature, whatever is frozen.
pub fn shape_signature<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>) -> u32 {
    let mut crc = CRC32.digest();
    for node in tape.nodes() {
        if matches!(node.op(), Op::Parameter) {
            let (r, c) = node.shape();
            crc.update(&(r as u32).to_le_bytes());
            crc.update(&(c as u32).to_le_bytes());
        }
    }
    crc.finalize()
}

/// Bytes [`save`] writes for this tape's parameters.
pub fn encoded_len<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>) -> usize {
    encoded_len_with_int8(tape, &[])
}

/// Bytes [`save_with_int8`] writes for this tape's parameters and an `int8` body of
/// `int8.len()` bytes.
pub fn encoded_len_with_int8<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>, int8: &[u8]) -> usize {
    let body = if int8.is_empty() {
        0
    } else {
        INT8_LEN_BYTES + int8.len()
    };
    HEADER_LEN + tape.parameter_len() * T::BYTES + body + TRAILER_LEN
}

/// The header of `tape`'s checkpoint, with an `int8` body or without.
fn header<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>, int8: bool) -> Header {
    Header {
        magic: MAGIC,
        version: U16::new(if int8 {
            FORMAT_VERSION
        } else {
            FLOAT_FORMAT_VERSION
        }),
        scalar_bytes: T::BYTES as u8,
        reserved: 0,
        signature: U32::new(shape_signature(tape)),
        count: U32::new(tape.parameter_len() as u32),
    }
}

/// Writes the checkpoint of every parameter of `tape` into `out`; returns its length.
pub fn save<T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    out: &mut [u8],
) -> Result<usize, CheckpointError> {
    let len = encoded_len(tape);
    let available = out.len();
    let buf = out.get_mut(..len).ok_or(CheckpointError::BufferTooSmall {
        needed: len,
        available,
    })?;
    Ok(Encoder::new(tape).fill(buf))
}

/// Writes the checkpoint of every parameter of `tape` and of the `int8` body `int8` (the
/// encoding [`quant::Int8Body`](crate::quant::Int8Body) reads; format version 2, or 1 if
/// it is empty) into `out`; returns its length.
pub fn save_with_int8<T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    int8: &[u8],
    out: &mut [u8],
) -> Result<usize, CheckpointError> {
    let len = encoded_len_with_int8(tape, int8);
    let available = out.len();
    let buf = out.get_mut(..len).ok_or(CheckpointError::BufferTooSmall {
        needed: len,
        available,
    })?;
    Ok(Encoder::with_int8(tape, int8).fill(buf))
}

/// The CRC-32 a checkpoint of `tape` ends with (it covers every parameter bit), computed
/// without a buffer for the checkpoint.
///
/// ```
/// use safegrad::checkpoint::{checksum, save};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 32>>::new();
/// tape.parameter(&Tensor::new([[1.0, 2.0]]))?;
/// let mut buf = [0u8; 28];
/// let n = save(&tape, &mut buf)?;
/// assert_eq!(checksum(&tape).to_le_bytes(), buf[n - 4..n]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn checksum<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>) -> u32 {
    checksum_with_int8(tape, &[])
}

/// The CRC-32 a checkpoint of `tape` and the `int8` body `int8` ends with
/// ([`save_with_int8`]).
pub fn checksum_with_int8<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>, int8: &[u8]) -> u32 {
    let mut encoder = Encoder::with_int8(tape, int8);
    let body_end = encoder.len() - TRAILER_LEN;
    let mut scratch = [0u8; 64];
    while encoder.pos < body_end {
        let want = (body_end - encoder.pos).min(scratch.len());
        if encoder.fill(scratch.get_mut(..want).unwrap_or(&mut [])) == 0 {
            break;
        }
    }
    encoder.crc.finalize()
}

/// The checkpoint of a tape's parameters as [`save`] writes it, a piece at a time: for
/// programming flash without a buffer of the whole checkpoint (see
/// [`Slots::save_from`](crate::store::Slots::save_from)).
///
/// ```
/// use safegrad::checkpoint::{save, Encoder};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 32>>::new();
/// tape.parameter(&Tensor::new([[1.0, 2.0, 3.0]]))?;
/// let mut whole = [0u8; 32];
/// let n = save(&tape, &mut whole)?;
/// let mut encoder = Encoder::new(&tape);
/// assert_eq!(encoder.len(), n);
/// let mut pieces = [0u8; 32];
/// let first = encoder.fill(&mut pieces[..5]);
/// let rest = encoder.fill(&mut pieces[5..]);
/// assert_eq!((first, first + rest), (5, n));
/// assert_eq!(pieces[..n], whole[..n]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encoder<'t, T: Scalar, Mem: Capacity> {
    tape: &'t Tape<T, Mem>,
    /// The `int8` body after the parameters (empty: none, format version 1).
    int8: &'t [u8],
    header: Header,
    crc: Digest,
    /// Bytes produced so far.
    pos: usize,
    /// The parameter node the last value came from, and the index of its first scalar.
    node: usize,
    node_start: usize,
}

impl<'t, T: Scalar, Mem: Capacity> Encoder<'t, T, Mem> {
    /// The checkpoint of `tape`'s parameters, from its first byte.
    pub fn new(tape: &'t Tape<T, Mem>) -> Self {
        Self::with_int8(tape, &[])
    }

    /// The checkpoint of `tape`'s parameters and of the `int8` body `int8`
    /// ([`save_with_int8`]), from its first byte.
    pub fn with_int8(tape: &'t Tape<T, Mem>, int8: &'t [u8]) -> Self {
        Self {
            tape,
            int8,
            header: header(tape, !int8.is_empty()),
            crc: CRC32.digest(),
            pos: 0,
            node: 0,
            node_start: 0,
        }
    }

    /// Bytes of the whole checkpoint ([`encoded_len_with_int8`]).
    pub fn len(&self) -> usize {
        encoded_len_with_int8(self.tape, self.int8)
    }

    /// `true` for no checkpoint at all (never: a checkpoint has a header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parameter scalar `index` in recording order, found from the node of the last one.
    fn parameter(&mut self, index: usize) -> Option<T> {
        let nodes = self.tape.parameter_nodes();
        if index < self.node_start {
            (self.node, self.node_start) = (0, 0);
        }
        loop {
            let node = nodes.get(self.node)?;
            if index < self.node_start + node.len() {
                return self
                    .tape
                    .values_of(node)
                    .get(index - self.node_start)
                    .copied();
            }
            self.node_start += node.len();
            self.node += 1;
        }
    }

    /// Writes the next bytes into `out`; returns how many, fewer than `out.len()` only at
    /// the end (0 once everything is written).
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let params_end = HEADER_LEN + self.tape.parameter_len() * T::BYTES;
        let body_end = self.len() - TRAILER_LEN;
        let int8_start = params_end + INT8_LEN_BYTES;
        let int8_len = (self.int8.len() as u32).to_le_bytes();
        let mut written = 0;
        for o in out.iter_mut() {
            let p = self.pos;
            let byte = if p < HEADER_LEN {
                self.header.as_bytes().get(p).copied()
            } else if p < params_end {
                let (index, at) = ((p - HEADER_LEN) / T::BYTES, (p - HEADER_LEN) % T::BYTES);
                self.parameter(index).map(|v| {
                    let mut bytes = [0u8; 8];
                    put_le_scalar(bytes.get_mut(..T::BYTES).unwrap_or(&mut []), v);
                    bytes.get(at).copied().unwrap_or(0)
                })
            } else if p < int8_start.min(body_end) {
                int8_len.get(p - params_end).copied()
            } else if p < body_end {
                self.int8.get(p - int8_start).copied()
            } else {
                self.crc
                    .clone()
                    .finalize()
                    .to_le_bytes()
                    .get(p - body_end)
                    .copied()
            };
            let Some(byte) = byte else {
                break;
            };
            if p < body_end {
                self.crc.update(&[byte]);
            }
            *o = byte;
            self.pos += 1;
            written += 1;
        }
        written
    }
}

/// Checks `bytes` against `tape`'s model without changing anything; returns the parameter
/// bytes.
pub fn verify<'b, T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    bytes: &'b [u8],
) -> Result<&'b [u8], CheckpointError> {
    let header = check_header::<T>(bytes)?;
    let (signature, expected_signature) = (header.signature.get(), shape_signature(tape));
    if signature != expected_signature {
        return Err(CheckpointError::ShapeSignature {
            found: signature,
            expected: expected_signature,
        });
    }
    let (count, expected_count) = (header.count.get(), tape.parameter_len() as u32);
    if count != expected_count {
        return Err(CheckpointError::ParameterCount {
            found: count,
            expected: expected_count,
        });
    }
    let body = check_body::<T>(bytes, header)?.params;
    // Frozen parameters read in place cannot take the checkpoint's values: they must hold
    // them already.
    let mut start = 0;
    for node in tape.parameter_nodes() {
        if tape.is_in_place(node) {
            let stored = body.get(start * T::BYTES..).unwrap_or(&[]);
            let values = tape.values_of(node);
            let differs = values
                .iter()
                .zip(stored.chunks_exact(T::BYTES))
                .position(|(&v, b)| !same_bits(v, le_scalar(b)));
            if let Some(k) = differs {
                return Err(CheckpointError::InPlaceMismatch { index: start + k });
            }
        }
        start += node.len();
    }
    Ok(body)
}

/// The checks of a checkpoint's header that need no tape: length, magic, version, scalar
/// size. Returns the header.
fn check_header<T: Scalar>(bytes: &[u8]) -> Result<&Header, CheckpointError> {
    let truncated = CheckpointError::Truncated { len: bytes.len() };
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(truncated);
    }
    let (header, _) = Header::ref_from_prefix(bytes).map_err(|_| truncated)?;
    if header.magic != MAGIC {
        return Err(CheckpointError::Magic {
            found: header.magic,
        });
    }
    let version = header.version.get();
    if version != FORMAT_VERSION && version != FLOAT_FORMAT_VERSION {
        return Err(CheckpointError::Version { found: version });
    }
    if usize::from(header.scalar_bytes) != T::BYTES {
        return Err(CheckpointError::ScalarSize {
            found: header.scalar_bytes,
            expected: T::BYTES as u8,
        });
    }
    Ok(header)
}

/// A checked checkpoint's parts after its header.
struct Body<'b> {
    /// The parameters' bytes.
    params: &'b [u8],
    /// The `int8` body's bytes (empty in version 1).
    int8: &'b [u8],
}

/// The checks of a checkpoint after its `header`: length (from the parameter count and, in
/// version 2, the `int8` body's length), CRC, finite values. Returns its parts.
fn check_body<'b, T: Scalar>(
    bytes: &'b [u8],
    header: &Header,
) -> Result<Body<'b>, CheckpointError> {
    let found = bytes.len();
    let too_long = CheckpointError::Length {
        expected: usize::MAX,
        found,
    };
    let params_end = (header.count.get() as usize)
        .checked_mul(T::BYTES)
        .and_then(|b| b.checked_add(HEADER_LEN))
        .ok_or(too_long)?;
    let (int8_start, int8_len) = if header.version.get() == FLOAT_FORMAT_VERSION {
        (params_end, 0)
    } else {
        let int8_start = params_end.checked_add(INT8_LEN_BYTES).ok_or(too_long)?;
        let len = bytes
            .get(params_end..int8_start)
            .and_then(|b| U32::read_from_bytes(b).ok())
            .ok_or_else(|| CheckpointError::Length {
                expected: int8_start.saturating_add(TRAILER_LEN),
                found,
            })?;
        // Version 2 is the format of a checkpoint with a body.
        if len.get() == 0 {
            return Err(CheckpointError::EmptyInt8Body);
        }
        (int8_start, len.get() as usize)
    };
    let expected = int8_start
        .checked_add(int8_len)
        .and_then(|b| b.checked_add(TRAILER_LEN))
        .ok_or(too_long)?;
    if found != expected {
        return Err(CheckpointError::Length { expected, found });
    }
    let (contents, stored) =
        U32::read_from_suffix(bytes).map_err(|_| CheckpointError::Truncated { len: found })?;
    let (stored, computed) = (stored.get(), CRC32.checksum(contents));
    if stored != computed {
        return Err(CheckpointError::Crc { stored, computed });
    }
    let params = contents.get(HEADER_LEN..params_end).unwrap_or(&[]);
    if let Some(index) = params
        .chunks_exact(T::BYTES)
        .position(|c| !le_scalar::<T>(c).is_finite())
    {
        return Err(CheckpointError::NonFinite { index });
    }
    Ok(Body {
        params,
        int8: contents
            .get(int8_start..int8_start + int8_len)
            .unwrap_or(&[]),
    })
}

/// The `int8` body of the checkpoint `bytes` (empty for a version 1 checkpoint), after the
/// checks that need no tape (magic, version, scalar size, length, CRC, finite values):
/// what [`quant::Int8Body::parse`](crate::quant::Int8Body::parse) reads, in place.
pub fn int8_body<T: Scalar>(bytes: &[u8]) -> Result<&[u8], CheckpointError> {
    let header = check_header::<T>(bytes)?;
    Ok(check_body::<T>(bytes, header)?.int8)
}

/// `true` when `a` and `b` encode to the same bytes.
fn same_bits<T: Scalar>(a: T, b: T) -> bool {
    let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
    put_le_scalar(x.get_mut(..T::BYTES).unwrap_or(&mut []), a);
    put_le_scalar(y.get_mut(..T::BYTES).unwrap_or(&mut []), b);
    x == y
}

/// The parameters of the checkpoint `bytes`, read in place, for
/// [`Tape::read_frozen_in_place`](crate::Tape::read_frozen_in_place): on a microcontroller, a
/// checkpoint in flash whose frozen layers then need no RAM. Everything [`verify`] checks
/// without a tape is checked (magic, version, scalar size, length, CRC, finite values);
/// [`load`] checks the rest (the model's shapes) when it fills the trainable parameters.
/// [`CheckpointError::NotInPlace`] if the parameters are not aligned for `T` (keep the
/// checkpoint at an address aligned for it) or the target is not little-endian.
///
/// ```
/// use safegrad::checkpoint::{load, parameters_in_place, save};
/// use safegrad::nn::{Build, Init, Linear, Train};
/// use safegrad::{Cap, Tape};
///
/// type Model = (Linear<4, 8>, Linear<8, 2>);
/// let mut trained = Tape::<f32, Cap<8, 64>>::new();
/// Model::build(&mut trained, &mut Init::new(1))?;
/// // A checkpoint in flash: 4-byte aligned, alive for the whole program.
/// #[repr(C, align(4))]
/// struct Flash([u8; 252]);
/// let flash: &'static mut Flash = Box::leak(Box::new(Flash([0; 252])));
/// save(&trained, &mut flash.0)?;
/// let flash: &'static Flash = flash;
///
/// // The first layer frozen and read in place: only the second takes value slots.
/// let mut tape = Tape::<f32, Cap<8, 32>>::new();
/// tape.read_frozen_in_place(parameters_in_place(&flash.0)?)?;
/// Model::build(&mut tape, &mut Init::new(2).with_plan(&[Train::Frozen]))?;
/// load(&mut tape, &flash.0)?;
/// assert_eq!(tape.parameters().len(), 8 * 2 + 2);
/// assert_eq!(tape.parameter_len(), trained.parameter_len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parameters_in_place<T: Scalar + bytemuck::Pod>(
    bytes: &'static [u8],
) -> Result<&'static [T], CheckpointError> {
    let header = check_header::<T>(bytes)?;
    let body = check_body::<T>(bytes, header)?.params;
    if !cfg!(target_endian = "little") {
        return Err(CheckpointError::NotInPlace);
    }
    bytemuck::try_cast_slice(body).map_err(|_| CheckpointError::NotInPlace)
}

/// Restores every parameter of `tape` from `bytes`, after [`verify`] accepted them; on any
/// error the parameters are unchanged.
pub fn load<T: Scalar, Mem: Capacity>(
    tape: &mut Tape<T, Mem>,
    bytes: &[u8],
) -> Result<(), CheckpointError> {
    let body = verify(tape, bytes)?;
    tape.set_held_parameters(|i| {
        body.get(i * T::BYTES..(i + 1) * T::BYTES)
            .map_or(T::ZERO, le_scalar)
    });
    Ok(())
}
