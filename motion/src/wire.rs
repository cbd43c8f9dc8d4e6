//! The sample stream's frame format: what a host sends a device over a serial line.
//!
//! A frame is a packet encoded with COBS (Consistent Overhead Byte Stuffing, Cheshire and
//! Baker, 1999) and terminated by a `0x00` byte, so a receiver that lost bytes resynchronises
//! at the next `0x00`. A sender may also send a `0x00` before each frame, so that noise on an
//! idle line ends up in an empty or refused frame of its own instead of spoiling the next
//! one; empty frames are skipped. The packet, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | type: 1 training sample, 2 evaluation sample, 3 end of stream |
//! | 1 | 2 | sequence number (wraps) |
//! | 3 | 1 | class label (samples; 0 for end of stream) |
//! | 4 | 2 | values `n` (samples: `channels * length`; 0 for end of stream) |
//! | 6 | `4 n` | the values, `f32`, channel-major |
//! | end | 4 | CRC-32 of every packet byte before it |
//!
//! [`FrameDecoder`] collects bytes into a fixed buffer and decodes COBS in place (with the
//! `cobs` crate); [`parse_packet`] checks a packet and refuses anything malformed with a
//! specific [`WireError`]. Nothing allocates.
//!
//! ```
//! use motion::wire::{encode_frame, parse_packet, FrameDecoder, Kind};
//!
//! let values = [1.0f32, -2.5, 0.0, 3.0];
//! let mut frame = [0u8; 64];
//! let n = encode_frame(Kind::Train, 7, 2, &values, &mut frame).unwrap();
//! let mut decoder = FrameDecoder::<64>::new();
//! let mut got = None;
//! for &b in &frame[..n] {
//!     if let Some(packet) = decoder.push(b) {
//!         let msg = parse_packet(packet.unwrap(), 4, 4, 100.0).unwrap();
//!         got = Some((msg.kind, msg.seq, msg.label, msg.values().nth(1)));
//!     }
//! }
//! assert_eq!(got, Some((Kind::Train, 7, 2, Some(-2.5))));
//! ```

use core::fmt;

use safegrad::crc32::CRC32;

/// Bytes of a packet's header.
pub const HEADER_LEN: usize = 6;
/// Bytes of a packet's CRC.
pub const CRC_LEN: usize = 4;

/// What a packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// A labelled sample to train on.
    Train,
    /// A labelled sample to evaluate on.
    Eval,
    /// No more samples.
    End,
}

impl Kind {
    const fn code(self) -> u8 {
        match self {
            Self::Train => 1,
            Self::Eval => 2,
            Self::End => 3,
        }
    }
}

/// Why a frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The frame did not fit the receive buffer; bytes were dropped until the next `0x00`.
    Overflow,
    /// The COBS encoding is broken (a code byte points past the end).
    Cobs,
    /// Shorter than a header and a CRC.
    Truncated {
        /// Packet bytes.
        len: usize,
    },
    /// The CRC does not match.
    Crc {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// An unknown packet type.
    UnknownKind {
        /// The type byte.
        code: u8,
    },
    /// The value count is not what the receiver expects, or disagrees with the length.
    Length {
        /// Values announced.
        values: usize,
        /// Values expected.
        expected: usize,
    },
    /// The label is not a class.
    Label {
        /// The label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// A value is `nan` or infinite.
    NonFinite {
        /// Its index.
        index: usize,
    },
    /// A value's magnitude exceeds the documented bound.
    OutOfRange {
        /// Its index.
        index: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Overflow => write!(f, "frame longer than the receive buffer"),
            Self::Cobs => write!(f, "malformed COBS encoding"),
            Self::Truncated { len } => write!(f, "packet of {len} bytes is truncated"),
            Self::Crc { stored, computed } => write!(
                f,
                "packet CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Self::UnknownKind { code } => write!(f, "unknown packet type {code}"),
            Self::Length { values, expected } => {
                write!(f, "packet has {values} values, expected {expected}")
            }
            Self::Label { label, classes } => {
                write!(f, "label {label} out of range (classes 0..{classes})")
            }
            Self::NonFinite { index } => write!(f, "value {index} is not finite"),
            Self::OutOfRange { index } => write!(f, "value {index} is out of range"),
        }
    }
}

impl core::error::Error for WireError {}

/// A checked packet: its kind, sequence number, label and values (read in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// What it carries.
    pub kind: Kind,
    /// Its sequence number.
    pub seq: u16,
    /// Its class label.
    pub label: usize,
    values: &'a [u8],
}

impl Message<'_> {
    /// The values, in order.
    pub fn values(&self) -> impl Iterator<Item = f32> + Clone + '_ {
        self.values_in(0..self.len())
    }

    /// The values at the positions `range` (none past the end).
    pub fn values_in(
        &self,
        range: core::ops::Range<usize>,
    ) -> impl Iterator<Item = f32> + Clone + '_ {
        let bytes = self
            .values
            .get(range.start * 4..range.end * 4)
            .unwrap_or(&[]);
        bytes.chunks_exact(4).map(|b| {
            let mut x = [0u8; 4];
            x.copy_from_slice(b);
            f32::from_le_bytes(x)
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len() / 4
    }

    /// `true` without values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Checks a decoded packet: CRC, type, value count (`expected_values` for samples), label
/// (below `classes`), every value finite and of magnitude at most `bound`.
pub fn parse_packet(
    packet: &[u8],
    expected_values: usize,
    classes: usize,
    bound: f32,
) -> Result<Message<'_>, WireError> {
    if packet.len() < HEADER_LEN + CRC_LEN {
        return Err(WireError::Truncated { len: packet.len() });
    }
    let (body, crc) = packet.split_at(packet.len() - CRC_LEN);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    let (stored, computed) = (u32::from_le_bytes(stored), CRC32.checksum(body));
    if stored != computed {
        return Err(WireError::Crc { stored, computed });
    }
    let byte = |i: usize| body.get(i).copied().unwrap_or(0);
    let kind = match byte(0) {
        1 => Kind::Train,
        2 => Kind::Eval,
        3 => Kind::End,
        code => return Err(WireError::UnknownKind { code }),
    };
    let seq = u16::from_le_bytes([byte(1), byte(2)]);
    let label = byte(3);
    let count = usize::from(u16::from_le_bytes([byte(4), byte(5)]));
    let values = body.get(HEADER_LEN..).unwrap_or(&[]);
    let expected = if kind == Kind::End {
        0
    } else {
        expected_values
    };
    if count != expected || values.len() != 4 * count {
        return Err(WireError::Length {
            values: count,
            expected,
        });
    }
    if kind != Kind::End && usize::from(label) >= classes {
        return Err(WireError::Label { label, classes });
    }
    let message = Message {
        kind,
        seq,
        label: usize::from(label),
        values,
    };
    for (index, v) in message.values().enumerate() {
        if !v.is_finite() {
            return Err(WireError::NonFinite { index });
        }
        if v.abs() > bound {
            return Err(WireError::OutOfRange { index });
        }
    }
    Ok(message)
}

/// Collects bytes until a `0x00` and decodes the COBS frame in place, in a buffer of `CAP`
/// bytes.
#[derive(Clone, Debug)]
pub struct FrameDecoder<const CAP: usize> {
    buf: [u8; CAP],
    len: usize,
    overflowed: bool,
}

impl<const CAP: usize> Default for FrameDecoder<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> FrameDecoder<CAP> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; CAP],
            len: 0,
            overflowed: false,
        }
    }

    /// Feeds one byte. At a `0x00` it returns the decoded packet of the frame just ended, or
    /// why the frame was refused; otherwise `None`. An empty frame (two `0x00` in a row) is
    /// skipped.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], WireError>> {
        if byte != 0 {
            match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = byte;
                    self.len += 1;
                }
                None => self.overflowed = true,
            }
            return None;
        }
        let (len, overflowed) = (self.len, self.overflowed);
        self.len = 0;
        self.overflowed = false;
        if overflowed {
            return Some(Err(WireError::Overflow));
        }
        if len == 0 {
            return None;
        }
        let frame = self.buf.get_mut(..len)?;
        Some(cobs_decode_in_place(frame).and_then(|n| frame.get(..n).ok_or(WireError::Cobs)))
    }
}

/// Decodes a COBS frame (without its `0x00` terminator) in place; returns the packet length.
/// A code byte that points past the end, or an empty frame, is [`WireError::Cobs`];
/// decoding stops at a `0x00` (which [`FrameDecoder`] never passes on: it ends a frame).
pub fn cobs_decode_in_place(frame: &mut [u8]) -> Result<usize, WireError> {
    cobs::decode_in_place(frame).map_err(|_| WireError::Cobs)
}

/// COBS-encodes `packet` into `out` followed by the `0x00` terminator; returns the frame's
/// length, or `None` if `out` is too small.
pub fn cobs_encode(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    let n = cobs::try_encode(packet, out).ok()?;
    *out.get_mut(n)? = 0;
    Some(n + 1)
}

/// Builds a packet (header, values, CRC) into `packet`; returns its length.
pub fn encode_packet(
    kind: Kind,
    seq: u16,
    label: u8,
    values: &[f32],
    packet: &mut [u8],
) -> Option<usize> {
    let count = u16::try_from(values.len()).ok()?;
    let len = HEADER_LEN + 4 * values.len() + CRC_LEN;
    let buf = packet.get_mut(..len)?;
    let (body, crc) = buf.split_at_mut(len - CRC_LEN);
    let (head, data) = body.split_at_mut(HEADER_LEN);
    let s = seq.to_le_bytes();
    let c = count.to_le_bytes();
    head.copy_from_slice(&[kind.code(), s[0], s[1], label, c[0], c[1]]);
    for (dst, v) in data.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    crc.copy_from_slice(&CRC32.checksum(body).to_le_bytes());
    Some(len)
}

/// Builds a packet and COBS-encodes it into `out` as one frame; returns the frame's length.
/// The packet is assembled in `out`'s tail first, so `out` must hold both.
pub fn encode_frame(
    kind: Kind,
    seq: u16,
    label: u8,
    values: &[f32],
    out: &mut [u8],
) -> Option<usize> {
    let packet_len = HEADER_LEN + 4 * values.len() + CRC_LEN;
    let frame_max = packet_len + packet_len / 254 + 2;
    let split = out.len().checked_sub(packet_len)?;
    if split < frame_max {
        return None;
    }
    let (front, back) = out.split_at_mut(split);
    let n = encode_packet(kind, seq, label, values, back)?;
    cobs_encode(back.get(..n)?, front)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Examples from the COBS paper and Wikipedia's table, encoded by hand.
    #[test]
    fn cobs_matches_the_published_examples() {
        let cases: [(&[u8], &[u8]); 5] = [
            (&[0x00], &[0x01, 0x01, 0x00]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01, 0x00]),
            (
                &[0x11, 0x22, 0x00, 0x33],
                &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00],
            ),
            (
                &[0x11, 0x22, 0x33, 0x44],
                &[0x05, 0x11, 0x22, 0x33, 0x44, 0x00],
            ),
            (
                &[0x11, 0x00, 0x00, 0x00],
                &[0x02, 0x11, 0x01, 0x01, 0x01, 0x00],
            ),
        ];
        for (packet, frame) in cases {
            let mut out = [0u8; 16];
            let n = cobs_encode(packet, &mut out).unwrap();
            assert_eq!(&out[..n], frame);
            let mut f = frame[..frame.len() - 1].to_vec();
            let m = cobs_decode_in_place(&mut f).unwrap();
            assert_eq!(&f[..m], packet);
        }
    }

    /// Wikipedia's examples around the 254-byte block limit (its examples 7 to 11).
    #[test]
    fn cobs_matches_the_published_examples_at_the_block_limit() {
        let run = |from: u8, to: u8| (from..=to).collect::<Vec<u8>>();
        let cat = |parts: &[&[u8]]| parts.concat();
        let cases: [(Vec<u8>, Vec<u8>); 5] = [
            (run(0x01, 0xFE), cat(&[&[0xFF], &run(0x01, 0xFE), &[0x00]])),
            (
                cat(&[&[0x00], &run(0x01, 0xFE)]),
                cat(&[&[0x01, 0xFF], &run(0x01, 0xFE), &[0x00]]),
            ),
            (
                run(0x01, 0xFF),
                cat(&[&[0xFF], &run(0x01, 0xFE), &[0x02, 0xFF, 0x00]]),
            ),
            (
                cat(&[&run(0x02, 0xFF), &[0x00]]),
                cat(&[&[0xFF], &run(0x02, 0xFF), &[0x01, 0x01, 0x00]]),
            ),
            (
                cat(&[&run(0x03, 0xFF), &[0x00, 0x01]]),
                cat(&[&[0xFE], &run(0x03, 0xFF), &[0x02, 0x01, 0x00]]),
            ),
        ];
        for (packet, frame) in cases {
            let mut out = [0u8; 300];
            let n = cobs_encode(&packet, &mut out).unwrap();
            assert_eq!(&out[..n], &frame[..]);
            assert!(cobs_encode(&packet, &mut out[..n - 1]).is_none());
            let mut f = frame[..frame.len() - 1].to_vec();
            let m = cobs_decode_in_place(&mut f).unwrap();
            assert_eq!(&f[..m], &packet[..]);
        }
    }

    #[test]
    fn long_runs_without_zeros_round_trip() {
        let packet: Vec<u8> = (0..600).map(|i| (i % 255 + 1) as u8).collect();
        let mut out = vec![0u8; 700];
        let n = cobs_encode(&packet, &mut out).unwrap();
        assert!(!out[..n - 1].contains(&0));
        let mut f = out[..n - 1].to_vec();
        let m = cobs_decode_in_place(&mut f).unwrap();
        assert_eq!(&f[..m], &packet[..]);
    }

    #[test]
    fn malformed_input_is_refused_and_the_decoder_resynchronises() {
        let mut bad = [0x05, 0x11];
        assert_eq!(cobs_decode_in_place(&mut bad), Err(WireError::Cobs));
        assert_eq!(cobs_decode_in_place(&mut []), Err(WireError::Cobs));
        let mut frame = [0u8; 64];
        let n = encode_frame(Kind::Eval, 1, 0, &[1.0, 2.0], &mut frame).unwrap();
        let mut d = FrameDecoder::<64>::new();
        // Garbage, then a good frame: the garbage is refused, the frame goes through.
        let mut results = Vec::new();
        for &b in [0x07u8, 0x01, 0x00].iter().chain(&frame[..n]) {
            if let Some(r) = d.push(b) {
                results.push(r.map(|p| p.to_vec()));
            }
        }
        assert_eq!(results.len(), 2);
        assert!(results[0].is_err());
        let packet = results[1].as_ref().unwrap();
        assert_eq!(parse_packet(packet, 2, 4, 10.0).unwrap().kind, Kind::Eval);
    }

    #[test]
    fn every_malformed_packet_gets_its_error() {
        let mut p = [0u8; 64];
        let n = encode_packet(Kind::Train, 3, 1, &[1.0, -1.0], &mut p).unwrap();
        let good = &p[..n];
        assert!(parse_packet(good, 2, 4, 10.0).is_ok());
        assert_eq!(
            parse_packet(&good[..5], 2, 4, 10.0),
            Err(WireError::Truncated { len: 5 })
        );
        let mut flipped = good.to_vec();
        flipped[7] ^= 1;
        assert!(matches!(
            parse_packet(&flipped, 2, 4, 10.0),
            Err(WireError::Crc { .. })
        ));
        assert_eq!(
            parse_packet(good, 3, 4, 10.0),
            Err(WireError::Length {
                values: 2,
                expected: 3
            })
        );
        assert_eq!(
            parse_packet(good, 2, 1, 10.0),
            Err(WireError::Label {
                label: 1,
                classes: 1
            })
        );
        assert_eq!(
            parse_packet(good, 2, 4, 0.5),
            Err(WireError::OutOfRange { index: 0 })
        );
        let n = encode_packet(Kind::Train, 3, 1, &[1.0, f32::NAN], &mut p).unwrap();
        assert_eq!(
            parse_packet(&p[..n], 2, 4, 10.0),
            Err(WireError::NonFinite { index: 1 })
        );
        let n = encode_packet(Kind::End, 4, 0, &[], &mut p).unwrap();
        assert_eq!(parse_packet(&p[..n], 2, 4, 10.0).unwrap().kind, Kind::End);
        // An unknown type with a valid CRC.
        p[0] = 9;
        let crc = CRC32.checksum(&p[..n - 4]).to_le_bytes();
        p[n - 4..n].copy_from_slice(&crc);
        assert_eq!(
            parse_packet(&p[..n], 2, 4, 10.0),
            Err(WireError::UnknownKind { code: 9 })
        );
    }

    #[test]
    fn an_overlong_frame_is_refused_as_overflow() {
        let mut d = FrameDecoder::<4>::new();
        for b in [1u8, 2, 3, 4, 5, 6] {
            assert!(d.push(b).is_none());
        }
        assert_eq!(
            d.push(0).map(|r| r.map(<[u8]>::len)),
            Some(Err(WireError::Overflow))
        );
    }
}
