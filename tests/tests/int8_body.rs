//! The `int8` body and checkpoint format version 2: the body's forward pass against plain
//! integer loops written here from the documented semantics, every refusal of a damaged
//! encoding with its error, and checkpoints carrying a body: round trips, the version 1
//! checkpoint that has none, and damage to the body caught by the CRC.

use safegrad::checkpoint::{
    checksum_with_int8, encoded_len_with_int8, int8_body, load, save, save_with_int8,
    CheckpointError, Encoder, FLOAT_FORMAT_VERSION, FORMAT_VERSION,
};
use safegrad::nn::{Build, Init, InitScheme, Linear, Plan};
use safegrad::quant::{
    Int8Body, Int8Encoder, Int8Error, Int8Layer, Int8Op, QuantParams, Requant, Window,
};
use safegrad::Tensor;

/// A deterministic stream of numbers for the tests' parameters.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn i8(&mut self) -> i8 {
        ((self.next() % 255) as i32 - 127) as i8
    }
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u32) as i32
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 10_000) as f32 / 10_000.0
    }
}

/// A layer's parameters, owned.
struct Params {
    op: Int8Op,
    relu: bool,
    output: QuantParams,
    scales: Vec<f32>,
    requant: Vec<Requant>,
    bias: Vec<i32>,
    weights: Vec<i8>,
}

impl Params {
    fn layer(&self) -> Int8Layer<'_> {
        Int8Layer {
            op: self.op,
            relu: self.relu,
            output: self.output,
            weight_scales: &self.scales,
            requant: &self.requant,
            bias: &self.bias,
            weights: &self.weights,
        }
    }

    fn weighted(rng: &mut Lcg, op: Int8Op, c_out: usize, weights: usize, relu: bool) -> Self {
        Self {
            op,
            relu,
            output: QuantParams {
                scale: 0.05 + rng.unit(),
                zero_point: rng.range(-20, 20),
            },
            scales: (0..c_out).map(|_| 0.01 + rng.unit() / 10.0).collect(),
            requant: (0..c_out)
                .map(|_| Requant::from_scale(f64::from(0.001 + rng.unit() / 50.0)).unwrap())
                .collect(),
            bias: (0..c_out).map(|_| rng.range(-3000, 3000)).collect(),
            weights: (0..weights).map(|_| rng.i8()).collect(),
        }
    }

    fn pooling(op: Int8Op, params: QuantParams) -> Self {
        Self {
            op,
            relu: false,
            output: params,
            scales: Vec::new(),
            requant: Vec::new(),
            bias: Vec::new(),
            weights: Vec::new(),
        }
    }
}

/// The output's code: `clamp(apply(acc) + zp, min, 127)`.
fn out_code(acc: i32, r: Requant, p: QuantParams, relu: bool) -> i8 {
    let min = if relu { p.zero_point } else { -128 };
    (r.apply(acc) + p.zero_point).clamp(min, 127) as i8
}

/// Division rounded to nearest, ties away from zero.
fn round_div(sum: i32, n: i32) -> i32 {
    let q = f64::from(sum) / f64::from(n);
    q.round() as i32
}

/// The taps of window `t` that lie inside the input: input positions and kernel indices.
fn taps(t: usize, l_in: usize, w: &Window) -> Vec<(usize, usize)> {
    (0..w.kernel)
        .filter_map(|k| {
            let at = (t * w.stride + k * w.dilation) as isize - w.padding as isize;
            (at >= 0 && (at as usize) < l_in).then_some((at as usize, k))
        })
        .collect()
}

/// The body's codes after each layer and its output, computed with plain loops.
fn reference(
    x: &[f32],
    (channels, len): (usize, usize),
    input: QuantParams,
    shift: &[f32],
    mul: &[f32],
    layers: &[Params],
) -> Vec<f32> {
    let mut codes: Vec<i8> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / len;
            let real = (v + shift[c]) * mul[c];
            (real / input.scale).round() as i32 + input.zero_point
        })
        .map(|q: i32| q.clamp(-128, 127) as i8)
        .collect();
    let mut shape = (channels, len);
    let mut params = input;
    for p in layers {
        let zp = params.zero_point;
        codes = match p.op {
            Int8Op::Linear { inputs, outputs } => (0..outputs)
                .map(|o| {
                    let row = &p.weights[o * inputs..(o + 1) * inputs];
                    // The stored bias has the input's zero point folded in.
                    let acc = p.bias[o]
                        + row
                            .iter()
                            .zip(&codes)
                            .map(|(&w, &c)| i32::from(w) * i32::from(c))
                            .sum::<i32>();
                    out_code(acc, p.requant[o], p.output, p.relu)
                })
                .collect(),
            Int8Op::Conv1d(w) => {
                let l_out = w.l_out().unwrap();
                let per_in = w.c_in / w.groups;
                let per_out = w.c_out / w.groups;
                let mut y = Vec::new();
                for c in 0..w.c_out {
                    let g = c / per_out;
                    for t in 0..l_out {
                        let mut acc = p.bias[c];
                        for i in 0..per_in {
                            let ch = g * per_in + i;
                            for (at, k) in taps(t, w.l_in, &w) {
                                let wv = p.weights[(c * per_in + i) * w.kernel + k];
                                let xv = codes[ch * w.l_in + at];
                                acc += i32::from(wv) * (i32::from(xv) - zp);
                            }
                        }
                        y.push(out_code(acc, p.requant[c], p.output, p.relu));
                    }
                }
                y
            }
            Int8Op::MaxPool1d(w) | Int8Op::AvgPool1d(w) => {
                let l_out = w.l_out().unwrap();
                let mut y = Vec::new();
                for c in 0..w.c_in {
                    for t in 0..l_out {
                        let inside: Vec<i32> = taps(t, w.l_in, &w)
                            .iter()
                            .map(|&(at, _)| i32::from(codes[c * w.l_in + at]))
                            .collect();
                        let v = if matches!(p.op, Int8Op::MaxPool1d(_)) {
                            *inside.iter().max().unwrap()
                        } else {
                            let sum: i32 = inside.iter().map(|v| v - zp).sum();
                            (zp + round_div(sum, w.kernel as i32)).clamp(-128, 127)
                        };
                        y.push(v as i8);
                    }
                }
                y
            }
            Int8Op::GlobalAvgPool { len, .. } => {
                return codes
                    .chunks(len)
                    .map(|row| {
                        let sum: i32 = row.iter().map(|&c| i32::from(c) - zp).sum();
                        params.scale * sum as f32 / len as f32
                    })
                    .collect();
            }
        };
        let _ = shape;
        shape = (codes.len(), 1);
        params = p.output;
    }
    codes
        .iter()
        .map(|&c| params.scale * (i32::from(c) - params.zero_point) as f32)
        .collect()
}

/// Two bodies over `2 x 12` rows: convolution (padded, dilated), max pooling, average
/// pooling (padded), a grouped convolution and a linear layer; and a convolution ending
/// in a global average pooling.
fn bodies(rng: &mut Lcg) -> Vec<Vec<Params>> {
    let conv = Window {
        c_in: 2,
        l_in: 12,
        c_out: 4,
        kernel: 3,
        stride: 1,
        padding: 2,
        dilation: 2,
        groups: 1,
    };
    let l1 = conv.l_out().unwrap(); // 12
    let c1 = Params::weighted(rng, Int8Op::Conv1d(conv), 4, 4 * 2 * 3, true);
    let max = Window {
        c_in: 4,
        l_in: l1,
        c_out: 4,
        kernel: 3,
        stride: 2,
        padding: 1,
        dilation: 1,
        groups: 1,
    };
    let l2 = max.l_out().unwrap();
    let avg = Window {
        l_in: l2,
        kernel: 3,
        stride: 1,
        padding: 1,
        ..max
    };
    let l3 = avg.l_out().unwrap();
    let depthwise = Window {
        c_in: 4,
        l_in: l3,
        c_out: 4,
        kernel: 2,
        stride: 2,
        padding: 0,
        dilation: 1,
        groups: 4,
    };
    let l4 = depthwise.l_out().unwrap();
    let p1 = c1.output;
    let first = vec![
        c1,
        Params::pooling(Int8Op::MaxPool1d(max), p1),
        Params::pooling(Int8Op::AvgPool1d(avg), p1),
        Params::weighted(rng, Int8Op::Conv1d(depthwise), 4, 4 * 2, false),
        Params::weighted(
            rng,
            Int8Op::Linear {
                inputs: 4 * l4,
                outputs: 3,
            },
            3,
            3 * 4 * l4,
            false,
        ),
    ];
    let c = Params::weighted(
        rng,
        Int8Op::Conv1d(Window { stride: 3, ..conv }),
        4,
        24,
        true,
    );
    let l = Window { stride: 3, ..conv }.l_out().unwrap();
    let p = c.output;
    let second = vec![
        c,
        Params::pooling(
            Int8Op::GlobalAvgPool {
                channels: 4,
                len: l,
            },
            p,
        ),
    ];
    vec![first, second]
}

const INPUT: QuantParams = QuantParams {
    scale: 0.02,
    zero_point: -5,
};
const SHIFT: [f32; 2] = [0.5, -1.0];
const MUL: [f32; 2] = [2.0, 0.25];

/// The encoding of `layers` over `2 x 12` rows, in words (aligned).
fn encode(layers: &[Params]) -> (Vec<u32>, usize) {
    let mut buf = vec![0u8; 4096];
    let mut enc = Int8Encoder::new(&mut buf, 2, 12, INPUT, &SHIFT, &MUL).unwrap();
    for p in layers {
        enc.layer(&p.layer()).unwrap();
    }
    let len = enc.finish().unwrap();
    let mut words = vec![0u32; len.div_ceil(4)];
    for (i, &b) in buf[..len].iter().enumerate() {
        words[i / 4] |= u32::from(b) << (8 * (i % 4));
    }
    (words, len)
}

fn bytes(words: &[u32], len: usize) -> &[u8] {
    &bytemuck::cast_slice(words)[..len]
}

#[test]
fn the_body_computes_what_plain_loops_compute() {
    for seed in 1..=20 {
        let mut rng = Lcg(seed);
        for layers in bodies(&mut rng) {
            let (words, len) = encode(&layers);
            let body = Int8Body::parse(bytes(&words, len)).unwrap();
            assert_eq!(body.layers(), layers.len());
            let mut scratch = vec![0i8; body.scratch_len()];
            let mut out = vec![0.0f32; body.outputs()];
            for _ in 0..10 {
                let x: Vec<f32> = (0..24).map(|_| rng.unit() * 4.0 - 2.0).collect();
                body.forward(&x, &mut scratch, &mut out).unwrap();
                let want = reference(&x, (2, 12), INPUT, &SHIFT, &MUL, &layers);
                assert_eq!(out, want, "seed {seed}");
            }
        }
    }
}

#[test]
fn the_layers_read_back_as_written() {
    let mut rng = Lcg(3);
    let layers = &bodies(&mut rng)[0];
    let (words, len) = encode(layers);
    let body = Int8Body::parse(bytes(&words, len)).unwrap();
    for (i, p) in layers.iter().enumerate() {
        let l = body.layer(i).unwrap();
        assert_eq!((l.op, l.relu, l.output), (p.op, p.relu, p.output));
        assert_eq!(
            (l.weight_scales, l.requant, l.bias, l.weights),
            (&p.scales[..], &p.requant[..], &p.bias[..], &p.weights[..])
        );
    }
    assert!(body.layer(layers.len()).is_none());
    let params: usize = layers
        .iter()
        .map(|p| p.weights.len() + 16 * p.bias.len())
        .sum();
    assert_eq!(body.parameter_bytes(), params);
}

/// `bytes` with the 4 bytes at `at` set to `value`.
fn patched(words: &[u32], len: usize, at: usize, value: &[u8]) -> (Vec<u32>, usize) {
    let mut b = bytes(words, len).to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    let mut w = vec![0u32; len.div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut w)[..len].copy_from_slice(&b);
    (w, len)
}

#[test]
fn damaged_bodies_are_refused_naming_what_is_wrong() {
    let mut rng = Lcg(5);
    let layers = &bodies(&mut rng)[0];
    let (words, len) = encode(layers);
    let first = 20 + 8 * 2; // the first layer's record
    let parse = |w: &[u32], n: usize| Int8Body::parse(bytes(w, n)).map(|_| ());
    assert_eq!(Int8Body::parse(&[]).map(|_| ()), Err(Int8Error::Missing));
    let cases: Vec<(usize, Vec<u8>, Int8Error)> = vec![
        (0, b"SGQ9".to_vec(), Int8Error::Magic),
        // Input scale 0.
        (
            12,
            0f32.to_le_bytes().to_vec(),
            Int8Error::Header("a scale is not finite and positive"),
        ),
        // A prefix value nan.
        (
            20,
            f32::NAN.to_le_bytes().to_vec(),
            Int8Error::Header("the prefix is not finite"),
        ),
        // An unknown op.
        (
            first,
            vec![9],
            Int8Error::Layer {
                layer: 0,
                problem: "an unknown op (1 to 5 are linear, conv1d, max pool, average pool, global average pool)",
            },
        ),
        // The first layer reading 3 channels.
        (
            first + 4,
            3u16.to_le_bytes().to_vec(),
            Int8Error::Layer {
                layer: 0,
                problem: "its input is not the previous activation's channels and length",
            },
        ),
        // A requantisation shift of 40.
        (
            first + 32 + 16 + 4,
            40i32.to_le_bytes().to_vec(),
            Int8Error::Layer {
                layer: 0,
                problem: "a requantisation is out of range (multiplier in [2^30, 2^31) or 0, shift in [-31, 30])",
            },
        ),
        // The output length recorded wrong.
        (
            first + 10,
            99u16.to_le_bytes().to_vec(),
            Int8Error::Layer {
                layer: 0,
                problem: "its recorded output length or channels differ from its geometry",
            },
        ),
    ];
    for (at, value, want) in cases {
        let (w, n) = patched(&words, len, at, &value);
        assert_eq!(parse(&w, n), Err(want), "byte {at}");
        // Every refusal explains itself.
        assert!(!want.to_string().is_empty());
    }
    // A reserved field of a layer's record, and of the body's header, set.
    let (w, n) = patched(&words, len, first + 2, &[1]);
    assert_eq!(
        parse(&w, n),
        Err(Int8Error::Layer {
            layer: 0,
            problem:
                "a reserved or unused field, or the weights' padding, is not what the op records"
        })
    );
    let (w, n) = patched(&words, len, 10, &[1]);
    assert_eq!(
        parse(&w, n),
        Err(Int8Error::Header("a reserved field is not 0"))
    );
    // The max pooling (layer 1) with another zero point than its input's.
    let second = first + 32 + 16 * 4 + 24;
    let (w, n) = patched(&words, len, second + 28, &100i32.to_le_bytes());
    assert_eq!(
        parse(&w, n),
        Err(Int8Error::Layer {
            layer: 1,
            problem: "a pooling must keep its input's scale and zero point"
        })
    );
    // Truncated inside the last layer, and trailing bytes.
    assert_eq!(
        parse(&words, len - 4),
        Err(Int8Error::Truncated {
            layer: Some(layers.len() - 1)
        })
    );
    let mut longer = words.clone();
    longer.push(0);
    assert_eq!(
        parse(&longer, len + 4),
        Err(Int8Error::Trailing { bytes: 4 })
    );
    // Not 4-byte aligned.
    let mut shifted = vec![0u8; len + 1];
    shifted[1..].copy_from_slice(bytes(&words, len));
    assert_eq!(
        Int8Body::parse(&shifted[1..]).map(|_| ()),
        Err(Int8Error::Misaligned)
    );
}

#[test]
fn the_encoder_refuses_a_layer_that_does_not_fit() {
    let mut rng = Lcg(7);
    let layers = &bodies(&mut rng)[0];
    let mut buf = vec![0u8; 4096];
    let mut enc = Int8Encoder::new(&mut buf, 2, 12, INPUT, &SHIFT, &MUL).unwrap();
    // The linear layer first: it expects 4 x l4 inputs, the input has 24.
    assert!(matches!(
        enc.layer(&layers[4].layer()),
        Err(Int8Error::Layer { layer: 0, .. })
    ));
    enc.layer(&layers[0].layer()).unwrap();
    // A ReLU on a pooling.
    let mut pool = layers[1].layer();
    pool.relu = true;
    assert_eq!(
        enc.layer(&pool),
        Err(Int8Error::Layer {
            layer: 1,
            problem: "a fused ReLU on a pooling"
        })
    );
    // Average pooling with dilation.
    if let Int8Op::AvgPool1d(w) = layers[2].op {
        let dilated = Params::pooling(
            Int8Op::AvgPool1d(Window {
                dilation: 2,
                l_in: 12,
                ..w
            }),
            layers[0].output,
        );
        assert_eq!(
            enc.layer(&dilated.layer()),
            Err(Int8Error::Layer {
                layer: 1,
                problem: "average pooling takes no dilation"
            })
        );
    }
    // A window field that its 16-bit record cannot hold.
    let huge = Params::pooling(
        Int8Op::MaxPool1d(Window {
            c_in: 4,
            l_in: 12,
            c_out: 4,
            kernel: 2,
            stride: 1 << 16,
            padding: 0,
            dilation: 1,
            groups: 1,
        }),
        layers[0].output,
    );
    assert_eq!(
        enc.layer(&huge.layer()),
        Err(Int8Error::Layer {
            layer: 1,
            problem: "a window field above 65535"
        })
    );
    // Too small a buffer.
    let mut small = [0u8; 40];
    let mut enc = Int8Encoder::new(&mut small, 2, 12, INPUT, &SHIFT, &MUL).unwrap();
    assert!(matches!(
        enc.layer(&layers[0].layer()),
        Err(Int8Error::Buffer { .. })
    ));
}

#[test]
fn bad_input_to_the_body_is_refused() {
    let mut rng = Lcg(9);
    let layers = &bodies(&mut rng)[0];
    let (words, len) = encode(layers);
    let body = Int8Body::parse(bytes(&words, len)).unwrap();
    let mut scratch = vec![0i8; body.scratch_len()];
    let mut out = vec![0.0f32; body.outputs()];
    let mut x = vec![0.5f32; 24];
    x[7] = f32::NAN;
    assert_eq!(
        body.forward(&x, &mut scratch, &mut out),
        Err(Int8Error::NonFinite { index: 7 })
    );
    assert_eq!(
        body.forward(&x[..23], &mut scratch, &mut out),
        Err(Int8Error::Input {
            expected: 24,
            found: 23
        })
    );
    x[7] = 0.0;
    let n = body.scratch_len();
    assert_eq!(
        body.forward(&x, &mut scratch[..n - 1], &mut out),
        Err(Int8Error::Buffer {
            needed: n,
            available: n - 1
        })
    );
    assert!(matches!(
        body.forward(&x, &mut scratch, &mut out[1..]),
        Err(Int8Error::Output { .. })
    ));
}

/// The tape of a head of 2 inputs and 3 outputs, sized from its type.
type HeadTape = safegrad::tape_for!(f32, Linear<2, 3>, Plan::All);

/// A head's tape and its layer, its weight and bias zero.
fn zero_head() -> (HeadTape, Linear<2, 3>) {
    let mut tape = HeadTape::new();
    let layer =
        Linear::<2, 3>::build(&mut tape, &mut Init::new(0).with_scheme(InitScheme::Zeros)).unwrap();
    (tape, layer)
}

/// A head's tape with a weight and a bias set.
fn head() -> HeadTape {
    let (mut tape, layer) = zero_head();
    tape.set_parameter(
        layer.weight,
        &Tensor::new([[1.0f32, -2.0, 3.5], [0.25, 0.5, -0.75]]),
    )
    .unwrap();
    tape.set_parameter(layer.bias, &Tensor::new([[0.125f32, -4.0, 8.0]]))
        .unwrap();
    tape
}

#[test]
fn a_checkpoint_carries_the_body_after_the_head() {
    let mut rng = Lcg(11);
    let layers = &bodies(&mut rng)[1];
    let (words, len) = encode(layers);
    let int8 = bytes(&words, len);
    let tape = head();
    let n = encoded_len_with_int8(&tape, int8);
    assert_eq!(n, 16 + 9 * 4 + 4 + len + 4);
    let mut buf = vec![0u8; n];
    assert_eq!(save_with_int8(&tape, int8, &mut buf), Ok(n));
    // The documented layout.
    assert_eq!(&buf[..4], b"SGCK");
    assert_eq!(u16::from_le_bytes([buf[4], buf[5]]), FORMAT_VERSION);
    assert_eq!(
        u32::from_le_bytes(buf[52..56].try_into().unwrap()) as usize,
        len
    );
    assert_eq!(&buf[56..56 + len], int8);
    let crc = safegrad::crc32::CRC32.checksum(&buf[..n - 4]);
    assert_eq!(buf[n - 4..], crc.to_le_bytes());
    assert_eq!(checksum_with_int8(&tape, int8), crc);
    // Written a piece at a time, the same bytes.
    let mut encoder = Encoder::with_int8(&tape, int8);
    let mut pieces = vec![0u8; n];
    let mut at = 0;
    for size in [1, 7, 13, 64].iter().cycle() {
        let end = (at + size).min(n);
        at += encoder.fill(&mut pieces[at..end]);
        if at == n {
            break;
        }
    }
    assert_eq!(pieces, buf);
    // It loads into a head, and the body comes back.
    let (mut other, layer) = zero_head();
    let (w, b) = (layer.weight, layer.bias);
    load(&mut other, &buf).unwrap();
    assert_eq!(
        other.value(w).unwrap(),
        Tensor::new([[1.0f32, -2.0, 3.5], [0.25, 0.5, -0.75]])
    );
    assert_eq!(
        other.value(b).unwrap(),
        Tensor::new([[0.125f32, -4.0, 8.0]])
    );
    assert_eq!(int8_body::<f32>(&buf).unwrap(), int8);
    // A flipped bit of the body is caught by the CRC, and the head is left as it was.
    let mut damaged = buf.clone();
    damaged[56 + len / 2] ^= 0x10;
    let mut untouched = head();
    assert!(matches!(
        load(&mut untouched, &damaged),
        Err(CheckpointError::Crc { .. })
    ));
    assert!(matches!(
        int8_body::<f32>(&damaged),
        Err(CheckpointError::Crc { .. })
    ));
    // Version 2 with an empty body.
    let mut empty = buf[..56].to_vec();
    empty[52..56].copy_from_slice(&0u32.to_le_bytes());
    let crc = safegrad::crc32::CRC32.checksum(&empty);
    empty.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(
        int8_body::<f32>(&empty),
        Err(CheckpointError::EmptyInt8Body)
    );
    // A body length that runs past the end.
    let mut long = buf.clone();
    long[52..56].copy_from_slice(&((len + 8) as u32).to_le_bytes());
    assert_eq!(
        int8_body::<f32>(&long),
        Err(CheckpointError::Length {
            expected: 56 + len + 8 + 4,
            found: n
        })
    );
}

#[test]
fn a_version_1_checkpoint_loads_and_has_no_body() {
    let tape = head();
    let mut buf = vec![0u8; 64];
    let n = save(&tape, &mut buf).unwrap();
    let buf = &buf[..n];
    assert_eq!(
        u16::from_le_bytes([buf[4], buf[5]]),
        FLOAT_FORMAT_VERSION,
        "a checkpoint without a body stays version 1"
    );
    // An empty body writes the same bytes.
    let mut same = vec![0u8; 64];
    assert_eq!(save_with_int8(&tape, &[], &mut same), Ok(n));
    assert_eq!(&same[..n], buf);
    let mut other = head();
    load(&mut other, buf).unwrap();
    let body = int8_body::<f32>(buf).unwrap();
    assert!(body.is_empty());
    let refused = Int8Body::parse(body).map(|_| ());
    assert_eq!(refused, Err(Int8Error::Missing));
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("format version 1"));
}
