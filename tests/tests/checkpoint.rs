//! Checkpoints: the byte layout against an encoder written here from the documented format,
//! bit-exact round trips in `f32` and `f64` (across models built with other plans), every
//! refusal with its exact error and the model untouched, and CRC-32 against known check
//! values and a bitwise implementation written here.

use proptest::collection::vec;
use proptest::prelude::*;
use safegrad::checkpoint::{
    encoded_len, load, save, shape_signature, verify, CheckpointError, FLOAT_FORMAT_VERSION,
    FORMAT_VERSION, HEADER_LEN, MAGIC, TRAILER_LEN,
};
use safegrad::crc32::CRC32;
use safegrad::nn::{last_layer_only, Build, Init, Linear, Plan, Relu, Train};
use safegrad::{Scalar, Tensor};

/// Tapes sized for a training step of the one-layer models built below, from their types.
type Linear22Tape = safegrad::tape_for!(f32, Linear<2, 2>, Plan::All);
type Linear12Tape = safegrad::tape_for!(f64, Linear<1, 2>, Plan::All);

type Mlp = (Linear<4, 5>, Relu, Linear<5, 3>);
/// The parameter shapes of [`Mlp`], in recording order.
const MLP_SHAPES: [(u32, u32); 4] = [(4, 5), (1, 5), (5, 3), (1, 3)];
const MLP_PARAMETERS: usize = 20 + 5 + 15 + 3;
type Tp<T> = safegrad::tape_for!(T, Mlp, Plan::All);

// ---------------------------------------------------------------------------------------------
// Independent implementations

/// CRC-32 (IEEE, reflected 0xEDB88320, init and final XOR 0xFFFFFFFF), bit by bit.
fn crc32_ref(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0xEDB8_8320;
            }
        }
    }
    !crc
}

/// The documented shape signature: CRC-32 of `(rows, columns)` as little-endian `u32`s.
fn signature_ref(shapes: &[(u32, u32)]) -> u32 {
    let mut bytes = Vec::new();
    for &(r, c) in shapes {
        bytes.extend_from_slice(&r.to_le_bytes());
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    crc32_ref(&bytes)
}

/// The documented layout: magic, version, bytes per scalar, 0, signature, count, the
/// parameters little-endian, CRC-32 of everything before.
fn encode_ref(shapes: &[(u32, u32)], scalar_bytes: u8, count: u32, params: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"SGCK");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(scalar_bytes);
    out.push(0);
    out.extend_from_slice(&signature_ref(shapes).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(params);
    let crc = crc32_ref(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_bytes_f64(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Replaces the trailing CRC with the CRC of the rest (so only later checks can fire).
fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32_ref(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Models

fn bits<T: Scalar>(tape: &Tp<T>) -> Vec<u64> {
    tape.parameters().iter().map(|v| v.to_bits_u64()).collect()
}

/// The MLP built with `plan`, its 43 parameters overwritten with `values(i)`.
fn mlp<T: Scalar>(seed: u64, plan: &[Train], values: impl Fn(usize) -> T) -> Tp<T> {
    let mut tape = Tp::<T>::new();
    Mlp::build(&mut tape, &mut Init::new(seed).with_plan(plan)).expect("build");
    for (i, p) in tape.parameters_mut().iter_mut().enumerate() {
        *p = values(i);
    }
    tape
}

/// Awkward f32 values: signed zeros, subnormals, extremes, and ordinary numbers.
fn special_f32(i: usize) -> f32 {
    match i % 9 {
        0 => -0.0,
        1 => f32::from_bits(1),
        2 => -f32::MAX,
        3 => f32::MIN_POSITIVE,
        4 => f32::from_bits(0x007F_FFFF),
        5 => f32::EPSILON,
        _ => 0.1 * (i as f32 + 1.0).sin(),
    }
}

fn special_f64(i: usize) -> f64 {
    match i % 9 {
        0 => -0.0,
        1 => f64::from_bits(1),
        2 => f64::MAX,
        3 => -f64::MIN_POSITIVE,
        4 => f64::from_bits(0x000F_FFFF_FFFF_FFFF),
        5 => 1.0 + f64::EPSILON,
        _ => 0.1 * (i as f64 + 1.0).cos(),
    }
}

fn saved<T: Scalar>(tape: &Tp<T>) -> Vec<u8> {
    let mut buf = vec![0u8; encoded_len(tape)];
    let n = save(tape, &mut buf).expect("save");
    assert_eq!(n, buf.len());
    buf
}

/// `load` and `verify` both refuse `bytes` with `expected`, and the model is unchanged.
#[track_caller]
fn assert_refused<T: Scalar>(tape: &mut Tp<T>, bytes: &[u8], expected: CheckpointError) {
    let before = bits(tape);
    assert_eq!(verify(tape, bytes).map(|_| ()), Err(expected), "verify");
    assert_eq!(load(tape, bytes), Err(expected), "load");
    assert_eq!(
        bits(tape),
        before,
        "a refused load changed the model ({expected})"
    );
}

// ---------------------------------------------------------------------------------------------
// Layout and round trips

#[test]
fn layout_matches_the_documented_format() {
    assert_eq!(MAGIC, *b"SGCK");
    assert_eq!((FORMAT_VERSION, FLOAT_FORMAT_VERSION), (2, 1));
    assert_eq!((HEADER_LEN, TRAILER_LEN), (16, 4));

    let tape = mlp::<f32>(1, &[], special_f32);
    assert_eq!(shape_signature(&tape), signature_ref(&MLP_SHAPES));
    let params: Vec<f32> = (0..MLP_PARAMETERS).map(special_f32).collect();
    let expected = encode_ref(&MLP_SHAPES, 4, 43, &le_bytes_f32(&params));
    assert_eq!(encoded_len(&tape), 16 + 43 * 4 + 4);
    assert_eq!(saved(&tape), expected);

    let tape = mlp::<f64>(1, &[], special_f64);
    assert_eq!(shape_signature(&tape), signature_ref(&MLP_SHAPES));
    let params: Vec<f64> = (0..MLP_PARAMETERS).map(special_f64).collect();
    let expected = encode_ref(&MLP_SHAPES, 8, 43, &le_bytes_f64(&params));
    assert_eq!(encoded_len(&tape), 16 + 43 * 8 + 4);
    assert_eq!(saved(&tape), expected);
}

#[test]
fn shape_signature_ignores_freezing_and_activations() {
    let reference = signature_ref(&MLP_SHAPES);
    for plan in [
        &[][..],
        &last_layer_only::<2>()[..],
        &[Train::BiasOnly, Train::BiasOnly][..],
        &[Train::Frozen, Train::Frozen][..],
    ] {
        let mut tape = mlp::<f32>(3, plan, special_f32);
        assert_eq!(shape_signature(&tape), reference, "{plan:?}");
        // Recording activations changes neither the signature nor the checkpoint.
        let before = saved(&tape);
        let x = tape.input(&Tensor::<f32, 2, 4>::full(1.0)).expect("input");
        let _ = tape.relu(x).expect("relu");
        assert_eq!(shape_signature(&tape), reference);
        assert_eq!(saved(&tape), before);
    }
}

#[test]
fn round_trip_is_bit_exact_across_plans_f32() {
    let plans: [&[Train]; 4] = [
        &[],
        &[Train::Frozen, Train::All],
        &[Train::BiasOnly, Train::BiasOnly],
        &[Train::Frozen, Train::Frozen],
    ];
    for source in plans {
        let original = mlp::<f32>(11, source, special_f32);
        let bytes = saved(&original);
        for target in plans {
            // Another seed: every parameter differs before the load.
            let mut other = mlp::<f32>(22, target, |i| 1.0 + i as f32);
            load(&mut other, &bytes).expect("load");
            assert_eq!(bits(&other), bits(&original), "{source:?} -> {target:?}");
            assert_eq!(saved(&other), bytes, "saving again gives the same bytes");
        }
    }
}

#[test]
fn round_trip_is_bit_exact_across_plans_f64() {
    let original = mlp::<f64>(5, &[], special_f64);
    let bytes = saved(&original);
    for target in [&[][..], &last_layer_only::<2>()[..], &[Train::BiasOnly][..]] {
        let mut other = mlp::<f64>(6, target, |i| -(i as f64));
        load(&mut other, &bytes).expect("load");
        assert_eq!(bits(&other), bits(&original), "{target:?}");
    }
    // A trained model's parameters (Kaiming-initialised, not overwritten) too.
    let mut tape = Tp::<f64>::new();
    Mlp::build(&mut tape, &mut Init::new(99)).expect("build");
    let bytes = saved(&tape);
    let mut other = mlp::<f64>(1, &last_layer_only::<2>(), |_| 0.0);
    load(&mut other, &bytes).expect("load");
    assert_eq!(bits(&other), bits(&tape));
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[test]
fn truncated_checkpoints_are_refused() {
    let source = mlp::<f32>(1, &[], special_f32);
    let bytes = saved(&source);
    let n = bytes.len();
    let mut tape = mlp::<f32>(2, &[], |i| i as f32);
    // Shorter than a header and a CRC.
    for len in [0, 1, 4, 8, 15, 16, 19] {
        assert_refused(&mut tape, &bytes[..len], CheckpointError::Truncated { len });
    }
    // A whole header but missing parameters or CRC bytes: the length check.
    for len in [20, 21, 100, n - 4, n - 1] {
        assert_refused(
            &mut tape,
            &bytes[..len],
            CheckpointError::Length {
                expected: n,
                found: len,
            },
        );
    }
}

#[test]
fn bad_magic_version_and_scalar_size_are_refused() {
    let bytes = saved(&mlp::<f32>(1, &[], special_f32));
    let mut tape = mlp::<f32>(2, &[], |i| i as f32);

    for magic in [*b"SGCL", *b"sgck", [0; 4], *b"\x7fELF"] {
        let mut b = bytes.clone();
        b[..4].copy_from_slice(&magic);
        fix_crc(&mut b);
        assert_refused(&mut tape, &b, CheckpointError::Magic { found: magic });
    }
    for version in [0u16, 3, 0x0100, u16::MAX] {
        let mut b = bytes.clone();
        b[4..6].copy_from_slice(&version.to_le_bytes());
        fix_crc(&mut b);
        assert_refused(&mut tape, &b, CheckpointError::Version { found: version });
    }
    // An f64 checkpoint into an f32 model and the other way round.
    let f64_bytes = saved(&mlp::<f64>(1, &[], special_f64));
    assert_refused(
        &mut tape,
        &f64_bytes,
        CheckpointError::ScalarSize {
            found: 8,
            expected: 4,
        },
    );
    let mut tape64 = mlp::<f64>(2, &[], |i| i as f64);
    assert_refused(
        &mut tape64,
        &bytes,
        CheckpointError::ScalarSize {
            found: 4,
            expected: 8,
        },
    );
    // A scalar size of 2 with everything else right.
    let mut b = bytes.clone();
    b[6] = 2;
    fix_crc(&mut b);
    assert_refused(
        &mut tape,
        &b,
        CheckpointError::ScalarSize {
            found: 2,
            expected: 4,
        },
    );
}

#[test]
fn another_architecture_is_refused_by_its_shape_signature() {
    let mut tape = mlp::<f32>(2, &[], |i| i as f32);
    let expected = signature_ref(&MLP_SHAPES);

    // A wider head: (4, 5), (1, 5), (5, 4), (1, 4).
    let mut other = Tp::<f32>::new();
    <(Linear<4, 5>, Relu, Linear<5, 4>)>::build(&mut other, &mut Init::new(1)).expect("build");
    let found = signature_ref(&[(4, 5), (1, 5), (5, 4), (1, 4)]);
    assert_ne!(found, expected);
    assert_refused(
        &mut tape,
        &saved(&other),
        CheckpointError::ShapeSignature { found, expected },
    );

    // Same parameter count, other shapes: (4, 3), (1, 3), (3, 7), (1, 7) is
    // 12 + 3 + 21 + 7 = 43 scalars, like the MLP.
    let mut same_count = Tp::<f32>::new();
    <(Linear<4, 3>, Relu, Linear<3, 7>)>::build(&mut same_count, &mut Init::new(1)).expect("build");
    assert_eq!(same_count.parameters().len(), MLP_PARAMETERS);
    let found = signature_ref(&[(4, 3), (1, 3), (3, 7), (1, 7)]);
    assert_refused(
        &mut tape,
        &saved(&same_count),
        CheckpointError::ShapeSignature { found, expected },
    );

    // The transposed layers of the same sizes.
    let mut transposed = Tp::<f32>::new();
    <(Linear<5, 4>, Relu, Linear<3, 5>)>::build(&mut transposed, &mut Init::new(1)).expect("build");
    let found = signature_ref(&[(5, 4), (1, 4), (3, 5), (1, 5)]);
    assert_refused(
        &mut tape,
        &saved(&transposed),
        CheckpointError::ShapeSignature { found, expected },
    );
}

#[test]
fn wrong_parameter_count_and_length_are_refused() {
    let bytes = saved(&mlp::<f32>(1, &[], special_f32));
    let n = bytes.len();
    let mut tape = mlp::<f32>(2, &[], |i| i as f32);
    for count in [0u32, 42, 44, u32::MAX] {
        let mut b = bytes.clone();
        b[12..16].copy_from_slice(&count.to_le_bytes());
        fix_crc(&mut b);
        assert_refused(
            &mut tape,
            &b,
            CheckpointError::ParameterCount {
                found: count,
                expected: 43,
            },
        );
    }
    // One extra byte, with or without a CRC that covers it.
    let mut longer = bytes.clone();
    longer.push(0);
    assert_refused(
        &mut tape,
        &longer,
        CheckpointError::Length {
            expected: n,
            found: n + 1,
        },
    );
    fix_crc(&mut longer);
    assert_refused(
        &mut tape,
        &longer,
        CheckpointError::Length {
            expected: n,
            found: n + 1,
        },
    );
    // A parameter more, announced in the header, with a consistent CRC.
    let mut grown = bytes[..n - 4].to_vec();
    grown[12..16].copy_from_slice(&44u32.to_le_bytes());
    grown.extend_from_slice(&0f32.to_le_bytes());
    grown.extend_from_slice(&[0; 4]);
    fix_crc(&mut grown);
    assert_refused(
        &mut tape,
        &grown,
        CheckpointError::ParameterCount {
            found: 44,
            expected: 43,
        },
    );
}

/// Which check must refuse a flip of bit `bit` of byte `byte` of `bytes` (a valid checkpoint
/// of a model with signature `sig`, `count` parameters and `scalar`-byte scalars), from the
/// documented order of the checks.
fn expected_for_flip(
    bytes: &[u8],
    byte: usize,
    bit: u32,
    sig: u32,
    count: u32,
    scalar: u8,
) -> CheckpointError {
    let n = bytes.len();
    let mut flipped = bytes.to_vec();
    flipped[byte] ^= 1 << bit;
    let field_u32 = |at: usize| {
        u32::from_le_bytes([
            flipped[at],
            flipped[at + 1],
            flipped[at + 2],
            flipped[at + 3],
        ])
    };
    match byte {
        0..=3 => CheckpointError::Magic {
            found: [flipped[0], flipped[1], flipped[2], flipped[3]],
        },
        4 | 5 => CheckpointError::Version {
            found: u16::from_le_bytes([flipped[4], flipped[5]]),
        },
        6 => CheckpointError::ScalarSize {
            found: flipped[6],
            expected: scalar,
        },
        8..=11 => CheckpointError::ShapeSignature {
            found: field_u32(8),
            expected: sig,
        },
        12..=15 => CheckpointError::ParameterCount {
            found: field_u32(12),
            expected: count,
        },
        // The reserved byte, the parameters and the CRC itself: only the CRC can tell.
        _ => CheckpointError::Crc {
            stored: field_u32(n - 4),
            computed: crc32_ref(&flipped[..n - 4]),
        },
    }
}

#[test]
fn every_single_bit_flip_is_refused_f32() {
    // Linear<2, 2>: 6 parameters, 16 + 24 + 4 = 44 bytes, 352 flips.
    let mut source = Linear22Tape::new();
    Linear::<2, 2>::build(&mut source, &mut Init::new(4)).expect("build");
    source.parameters_mut()[4] = 0.5; // biases start at 0: give them bits to flip
    source.parameters_mut()[5] = -2.0;
    let mut bytes = vec![0u8; 44];
    assert_eq!(save(&source, &mut bytes), Ok(44));
    let sig = signature_ref(&[(2, 2), (1, 2)]);

    let mut tape = Linear22Tape::new();
    Linear::<2, 2>::build(&mut tape, &mut Init::new(5)).expect("build");
    let before: Vec<u32> = tape.parameters().iter().map(|v| v.to_bits()).collect();
    let mut refused = 0;
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[byte] ^= 1 << bit;
            let expected = expected_for_flip(&bytes, byte, bit, sig, 6, 4);
            assert_eq!(load(&mut tape, &b), Err(expected), "byte {byte} bit {bit}");
            let now: Vec<u32> = tape.parameters().iter().map(|v| v.to_bits()).collect();
            assert_eq!(now, before, "byte {byte} bit {bit} changed the model");
            refused += 1;
        }
    }
    assert_eq!(refused, 44 * 8);
    // And the intact checkpoint still loads.
    load(&mut tape, &bytes).expect("intact");
    assert_eq!(tape.parameters(), source.parameters());
}

#[test]
fn every_single_bit_flip_is_refused_f64() {
    // Linear<1, 2>: 4 parameters, 16 + 32 + 4 = 52 bytes, 416 flips.
    let mut source = Linear12Tape::new();
    Linear::<1, 2>::build(&mut source, &mut Init::new(4)).expect("build");
    source.parameters_mut()[2] = 0.25;
    source.parameters_mut()[3] = -3.0;
    let mut bytes = vec![0u8; 52];
    assert_eq!(save(&source, &mut bytes), Ok(52));
    let sig = signature_ref(&[(1, 2), (1, 2)]);
    let mut tape = Linear12Tape::new();
    Linear::<1, 2>::build(&mut tape, &mut Init::new(5)).expect("build");
    let before: Vec<u64> = tape.parameters().iter().map(|v| v.to_bits()).collect();
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[byte] ^= 1 << bit;
            let expected = expected_for_flip(&bytes, byte, bit, sig, 4, 8);
            assert_eq!(load(&mut tape, &b), Err(expected), "byte {byte} bit {bit}");
            let now: Vec<u64> = tape.parameters().iter().map(|v| v.to_bits()).collect();
            assert_eq!(now, before, "byte {byte} bit {bit} changed the model");
        }
    }
}

#[test]
fn non_finite_parameters_are_refused_after_the_crc() {
    let bytes = saved(&mlp::<f32>(1, &[], special_f32));
    let mut tape = mlp::<f32>(2, &[], |i| i as f32);
    let at = |i: usize| HEADER_LEN + 4 * i;
    for (index, value) in [
        (7, f32::NAN),
        (0, f32::INFINITY),
        (42, f32::NEG_INFINITY),
        (20, f32::from_bits(0x7FC0_0001)), // a nan with a payload
        (13, f32::from_bits(0xFF80_0001)), // a signalling nan, negative
    ] {
        let mut b = bytes.clone();
        b[at(index)..at(index) + 4].copy_from_slice(&value.to_le_bytes());
        // Without the CRC fixed the CRC check fires first.
        let stored = u32::from_le_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
        let computed = crc32_ref(&b[..b.len() - 4]);
        assert_refused(&mut tape, &b, CheckpointError::Crc { stored, computed });
        fix_crc(&mut b);
        assert_refused(&mut tape, &b, CheckpointError::NonFinite { index });
    }
    // Two of them: the first is named.
    let mut b = bytes.clone();
    b[at(30)..at(30) + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    b[at(9)..at(9) + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    fix_crc(&mut b);
    assert_refused(&mut tape, &b, CheckpointError::NonFinite { index: 9 });

    // f64.
    let bytes = saved(&mlp::<f64>(1, &[], special_f64));
    let mut tape = mlp::<f64>(2, &[], |i| i as f64);
    let mut b = bytes.clone();
    let at = HEADER_LEN + 8 * 17;
    b[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
    fix_crc(&mut b);
    assert_refused(&mut tape, &b, CheckpointError::NonFinite { index: 17 });
}

#[test]
fn save_refuses_a_small_buffer_and_writes_only_its_length() {
    let tape = mlp::<f32>(1, &[], special_f32);
    let n = encoded_len(&tape);
    for available in [0, 1, 16, n - 1] {
        let mut buf = vec![0xAAu8; available];
        assert_eq!(
            save(&tape, &mut buf),
            Err(CheckpointError::BufferTooSmall {
                needed: n,
                available
            })
        );
        assert!(buf.iter().all(|&b| b == 0xAA), "a refused save wrote bytes");
    }
    let mut buf = vec![0xAAu8; n + 10];
    assert_eq!(save(&tape, &mut buf), Ok(n));
    assert_eq!(&buf[..n], &saved(&tape)[..]);
    assert!(
        buf[n..].iter().all(|&b| b == 0xAA),
        "save wrote past its length"
    );
}

#[test]
fn refusal_messages_name_the_check() {
    let cases = [
        (CheckpointError::Truncated { len: 3 }, "truncated"),
        (CheckpointError::Magic { found: [0; 4] }, "magic"),
        (CheckpointError::Version { found: 9 }, "version 9"),
        (
            CheckpointError::ScalarSize {
                found: 8,
                expected: 4,
            },
            "8-byte",
        ),
        (
            CheckpointError::Crc {
                stored: 1,
                computed: 2,
            },
            "CRC",
        ),
        (CheckpointError::NonFinite { index: 7 }, "parameter 7"),
    ];
    for (e, needle) in cases {
        let text = e.to_string();
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// CRC-32

#[test]
fn crc32_known_values() {
    // The CRC-32/ISO-HDLC check value, the empty string, and values from Python's
    // zlib.crc32 (b"The quick brown fox jumps over the lazy dog" -> 0x414FA339,
    // bytes(range(256)) -> 0x29058C73, b"SGCK" -> 0xB77360CB).
    assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    assert_eq!(CRC32.checksum(b""), 0);
    assert_eq!(CRC32.digest().finalize(), 0);
    assert_eq!(
        CRC32.checksum(b"The quick brown fox jumps over the lazy dog"),
        0x414F_A339
    );
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(CRC32.checksum(&all), 0x2905_8C73);
    assert_eq!(CRC32.checksum(b"SGCK"), 0xB773_60CB);
    // The bitwise reference agrees on the same values.
    assert_eq!(crc32_ref(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32_ref(&all), 0x2905_8C73);
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // Table-driven, fed in any two pieces, against the bitwise reference.
    #[test]
    fn crc32_matches_bitwise_reference(
        bytes in vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let k = if bytes.is_empty() { 0 } else { cut.index(bytes.len() + 1) };
        let mut c = CRC32.digest();
        c.update(&bytes[..k]);
        c.update(&bytes[k..]);
        prop_assert_eq!(c.finalize(), crc32_ref(&bytes));
        prop_assert_eq!(CRC32.checksum(&bytes), crc32_ref(&bytes));
    }

    // Any finite f32 parameter bits survive a round trip; a nan or an infinity is refused
    // (the first named) and the model is unchanged.
    #[test]
    fn any_finite_f32_round_trips(raw in vec(prop_oneof![
        6 => any::<u32>(),
        1 => Just(0x7F80_0000u32),
        1 => Just(0xFFC0_0000u32),
        1 => Just(0x8000_0000u32),
    ], 6)) {
        let mut source = Linear22Tape::new();
        Linear::<2, 2>::build(&mut source, &mut Init::new(1)).map_err(fail)?;
        for (p, &r) in source.parameters_mut().iter_mut().zip(&raw) {
            *p = f32::from_bits(r);
        }
        let mut buf = [0u8; 44];
        save(&source, &mut buf).map_err(fail)?;
        let mut target = Linear22Tape::new();
        Linear::<2, 2>::build(&mut target, &mut Init::new(2)).map_err(fail)?;
        let before: Vec<u32> = target.parameters().iter().map(|v| v.to_bits()).collect();
        let first_bad = raw.iter().position(|&r| !f32::from_bits(r).is_finite());
        match first_bad {
            None => {
                prop_assert_eq!(load(&mut target, &buf), Ok(()));
                let after: Vec<u32> = target.parameters().iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(after, raw);
            }
            Some(index) => {
                prop_assert_eq!(load(&mut target, &buf), Err(CheckpointError::NonFinite { index }));
                let after: Vec<u32> = target.parameters().iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(after, before);
            }
        }
    }
}
