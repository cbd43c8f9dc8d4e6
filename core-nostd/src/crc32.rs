//! The CRC-32 of every safegrad format (checkpoints, data sets, the store's slots, wire
//! packets): CRC-32/ISO-HDLC, the one of zlib, PNG and Ethernet (reflected polynomial
//! `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`), computed by the `crc` crate.
//!
//! ```
//! use safegrad::crc32::CRC32;
//!
//! // The standard check value of CRC-32/ISO-HDLC.
//! assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
//! let mut c = CRC32.digest();
//! c.update(b"1234");
//! c.update(b"56789");
//! assert_eq!(c.finalize(), 0xCBF4_3926);
//! ```

use crc::{Crc, Table, CRC_32_ISO_HDLC};

/// How the CRC is computed: one 256-entry table (1 KiB of read-only data), a byte per
/// lookup.
///
/// Chosen by measuring the firmware (flash from `llvm-size -A`; time from one boot on QEMU
/// with `-icount`, which checks the pre-trained checkpoint and both sample sets, fine-tunes
/// for 360 steps and saves a checkpoint). `NoTable` spares 904 bytes of flash but shifts bit
/// by bit, and makes that boot 35% longer (the bit-by-bit CRCs add two thirds of the
/// training's time); `Table<16>` adds 15 KiB of tables and takes the firmware to 80 KB, past
/// its 64 KiB budget.
pub type Implementation = Table<1>;

/// CRC-32/ISO-HDLC. `CRC32.checksum(bytes)` for bytes at hand, `CRC32.digest()` for a
/// running CRC fed in pieces. A `static` that every use shares (as a `const`, the firmware
/// came out 68 bytes larger).
pub static CRC32: Crc<u32, Implementation> = Crc::<u32, Implementation>::new(&CRC_32_ISO_HDLC);

/// A running CRC-32 ([`CRC32`]`.digest()`), for a value that holds one.
pub type Digest = crc::Digest<'static, u32, Implementation>;
