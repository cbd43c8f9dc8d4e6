//! An `int8` body: the frozen layers of a quantised model as a checkpoint carries them
//! (format version 2, [`checkpoint::int8_body`](crate::checkpoint::int8_body)), run in
//! place from flash in integer arithmetic, its output dequantised into the float head.
//!
//! Encoding, little-endian, every field at a multiple of its size from the start (which
//! must be 4-byte aligned: [`Int8Error::Misaligned`]):
//!
//! | size | field |
//! | --- | --- |
//! | 4 | magic `SGQ8` |
//! | 2 | layers `n` |
//! | 2 | input channels `C` |
//! | 2 | input length `L` (values per channel; a row is `C x L`, channel after channel) |
//! | 2 | reserved, 0 |
//! | 4 + 4 | the input's scale (`f32`) and zero point (`i32`) |
//! | `4 C` + `4 C` | the float prefix: `shift[c]` and `mul[c]` (`f32`); a value `x` of channel `c` is quantised as `(x + shift[c]) * mul[c]` |
//! | ... | `n` layers |
//!
//! A layer is a 32-byte record, then its parameters for [`Int8Op::Linear`] and
//! [`Int8Op::Conv1d`]:
//!
//! | size | field |
//! | --- | --- |
//! | 1 | op: 1 linear, 2 conv1d, 3 max pool, 4 average pool, 5 global average pool |
//! | 1 | 1 for a fused ReLU (linear and conv1d), else 0 |
//! | 2 | reserved, 0 |
//! | 2 x 4 | input channels, input length, output channels, output length |
//! | 2 x 5 | kernel, stride, padding, dilation, groups |
//! | 2 | reserved, 0 |
//! | 4 + 4 | the output's scale and zero point |
//! | `4 C_OUT` | each output channel's weight scale (`f32`) |
//! | `8 C_OUT` | each output channel's requantisation: multiplier and shift ([`Requant`]) |
//! | `4 C_OUT` | each output channel's `int32` bias; a linear layer's with its input's zero point folded in ([`fold_input_zero_point`](super::fold_input_zero_point)) |
//! | `C_OUT x C_IN / G x K` | the `int8` weights (PyTorch's layout), padded with zeros to a multiple of 4 |
//!
//! A linear layer reads the whole previous activation (`C x L` values, flattened) and has
//! `C_IN` inputs, `C_OUT` outputs and length 1. Pooling keeps its input's scale and zero
//! point. A global average pooling as the last layer hands its exact sums to the head,
//! `scale * sum(code - zero_point) / L`; any other last layer's codes are dequantised.
//!
//! [`Int8Body::parse`] checks every record before anything runs; [`Int8Body::forward`]
//! then runs with a scratch of [`Int8Body::scratch_len`] codes, allocating nothing.

use core::fmt;

use zerocopy::little_endian::{I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{qlinear, QuantParams, Requant};

/// The four bytes an `int8` body starts with.
pub const INT8_MAGIC: [u8; 4] = *b"SGQ8";

/// The body's first bytes, before the float prefix.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct BodyHeader {
    magic: [u8; 4],
    layers: U16,
    channels: U16,
    len: U16,
    reserved: U16,
    scale: U32,
    zero_point: I32,
}

/// A layer's record.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct LayerHeader {
    op: u8,
    relu: u8,
    reserved: U16,
    c_in: U16,
    l_in: U16,
    c_out: U16,
    l_out: U16,
    kernel: U16,
    stride: U16,
    padding: U16,
    dilation: U16,
    groups: U16,
    reserved2: U16,
    scale: U32,
    zero_point: I32,
}

const BODY_HEADER_LEN: usize = 20;
const LAYER_HEADER_LEN: usize = 32;
const _: () = assert!(size_of::<BodyHeader>() == BODY_HEADER_LEN);
const _: () = assert!(size_of::<LayerHeader>() == LAYER_HEADER_LEN);

/// A window's geometry (convolution and pooling), PyTorch's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Window {
    /// Input channels.
    pub c_in: usize,
    /// Input length.
    pub l_in: usize,
    /// Output channels (a pooling's are its input's).
    pub c_out: usize,
    /// Taps.
    pub kernel: usize,
    /// Step between outputs.
    pub stride: usize,
    /// Zeros (the real 0) before and after the input.
    pub padding: usize,
    /// Spacing of the taps.
    pub dilation: usize,
    /// Groups (1 for pooling).
    pub groups: usize,
}

impl Window {
    /// The output length, as PyTorch computes it (floor mode), or `None` if no window fits.
    pub const fn l_out(&self) -> Option<usize> {
        let span = self.dilation * self.kernel.saturating_sub(1) + 1;
        let padded = self.l_in + 2 * self.padding;
        if self.stride == 0 || self.kernel == 0 || padded < span {
            return None;
        }
        Some((padded - span) / self.stride + 1)
    }
}

/// An activation's `(channels, len)`.
type Shape = (usize, usize);

/// The operation of a layer of an `int8` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Int8Op {
    /// A fully connected layer of `inputs` (the whole previous activation) and `outputs`.
    Linear {
        /// Inputs.
        inputs: usize,
        /// Outputs.
        outputs: usize,
    },
    /// A 1-D convolution (feature `conv`).
    Conv1d(Window),
    /// Max pooling (feature `conv`).
    MaxPool1d(Window),
    /// Average pooling, the padding counted as the real 0; dilation 1 (feature `conv`).
    AvgPool1d(Window),
    /// Global average pooling of `channels x len`.
    GlobalAvgPool {
        /// Channels.
        channels: usize,
        /// Values per channel.
        len: usize,
    },
}

impl Int8Op {
    fn code(&self) -> u8 {
        match self {
            Self::Linear { .. } => 1,
            Self::Conv1d(_) => 2,
            Self::MaxPool1d(_) => 3,
            Self::AvgPool1d(_) => 4,
            Self::GlobalAvgPool { .. } => 5,
        }
    }

    /// The op's input and output `(channels, len)`, or why it has none.
    fn shapes(&self) -> Result<(Shape, Shape), &'static str> {
        match *self {
            Self::Linear { inputs, outputs } => Ok(((inputs, 1), (outputs, 1))),
            Self::Conv1d(w) | Self::MaxPool1d(w) | Self::AvgPool1d(w) => {
                let l_out = w.l_out().ok_or("no window fits its input")?;
                Ok(((w.c_in, w.l_in), (w.c_out, l_out)))
            }
            Self::GlobalAvgPool { channels, len } => Ok(((channels, len), (channels, 1))),
        }
    }

    /// Scalars of its weights (`usize::MAX` if they overflow, which no body can hold).
    fn weights(&self) -> usize {
        match *self {
            Self::Linear { inputs, outputs } => inputs.checked_mul(outputs),
            Self::Conv1d(w) => w
                .c_out
                .checked_mul(w.c_in / w.groups.max(1))
                .and_then(|n| n.checked_mul(w.kernel)),
            _ => Some(0),
        }
        .unwrap_or(usize::MAX)
    }
}

/// A layer to encode ([`Int8Encoder::layer`]) or as parsed.
#[derive(Clone, Copy, Debug)]
pub struct Int8Layer<'a> {
    /// What it computes.
    pub op: Int8Op,
    /// A fused ReLU (linear and convolution only): the output clamped at its zero point.
    pub relu: bool,
    /// The output's scale and zero point (a pooling's: its input's).
    pub output: QuantParams,
    /// Each output channel's weight scale (linear and convolution; empty otherwise).
    pub weight_scales: &'a [f32],
    /// Each output channel's requantisation.
    pub requant: &'a [Requant],
    /// Each output channel's `int32` bias (a linear layer's with its input's zero point
    /// folded in).
    pub bias: &'a [i32],
    /// The `int8` weights, PyTorch's layout.
    pub weights: &'a [i8],
}

/// Why an `int8` body was refused, or could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Int8Error {
    /// The checkpoint holds no `int8` body (a format version 1 checkpoint: float
    /// parameters only).
    Missing,
    /// The first four bytes are not `SGQ8`.
    Magic,
    /// The body ends inside layer `layer` (`None`: inside its header).
    Truncated {
        /// The layer.
        layer: Option<usize>,
    },
    /// Bytes after the last layer.
    Trailing {
        /// How many.
        bytes: usize,
    },
    /// Not 4-byte aligned, or not a little-endian target: the body cannot be read in place.
    Misaligned,
    /// A field of the header is out of range.
    Header(&'static str),
    /// Layer `layer` is refused for `problem`.
    Layer {
        /// The layer, from 0.
        layer: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The input row has another number of values.
    Input {
        /// Values of a row (`C x L`).
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// Input value `index` is `nan` or infinite.
    NonFinite {
        /// The value.
        index: usize,
    },
    /// The output has another number of values.
    Output {
        /// Values the body gives.
        expected: usize,
        /// Room given.
        found: usize,
    },
    /// The scratch (or the encoder's buffer) is too small.
    Buffer {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
}

impl fmt::Display for Int8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Missing => write!(
                f,
                "the checkpoint holds no int8 body (format version 1: float parameters only)"
            ),
            Self::Magic => write!(f, "not an int8 body: it does not start with \"SGQ8\""),
            Self::Truncated { layer: None } => write!(f, "int8 body truncated in its header"),
            Self::Truncated { layer: Some(l) } => {
                write!(f, "int8 body truncated in layer {l}")
            }
            Self::Trailing { bytes } => {
                write!(f, "int8 body has {bytes} bytes after its last layer")
            }
            Self::Misaligned => write!(
                f,
                "int8 body cannot be read in place: not 4-byte aligned, or not a little-endian target"
            ),
            Self::Header(problem) => write!(f, "int8 body header: {problem}"),
            Self::Layer { layer, problem } => write!(f, "int8 body layer {layer}: {problem}"),
            Self::Input { expected, found } => write!(
                f,
                "int8 body input has {found} values, the body reads {expected}"
            ),
            Self::NonFinite { index } => write!(f, "int8 body input value {index} is not finite"),
            Self::Output { expected, found } => write!(
                f,
                "int8 body gives {expected} values, the output has room for {found}"
            ),
            Self::Buffer { needed, available } => write!(
                f,
                "int8 body needs a buffer of {needed} bytes, {available} given"
            ),
        }
    }
}

impl core::error::Error for Int8Error {}

/// `value` padded to a multiple of 4.
const fn pad4(value: usize) -> usize {
    value.div_ceil(4) * 4
}

/// Bytes of a layer's record and parameters.
fn layer_len(op: &Int8Op, c_out: usize) -> usize {
    match op {
        Int8Op::Linear { .. } | Int8Op::Conv1d(_) => LAYER_HEADER_LEN
            .saturating_add(16 * c_out)
            .saturating_add(pad4(op.weights().min(usize::MAX - 3))),
        _ => LAYER_HEADER_LEN,
    }
}

/// Writes an `int8` body into a buffer, layer by layer, checking each as
/// [`Int8Body::parse`] will.
///
/// ```
/// use safegrad::quant::{Int8Body, Int8Encoder, Int8Layer, Int8Op, QuantParams, Requant};
///
/// // 2 inputs, a linear layer to 1 output: y = 2 x0 - x1 in codes of scale 1.
/// let unit = QuantParams { scale: 1.0, zero_point: 0 };
/// let mut buf = [0u8; 128];
/// let mut enc = Int8Encoder::new(&mut buf, 2, 1, unit, &[0.0, 0.0], &[1.0, 1.0])?;
/// enc.layer(&Int8Layer {
///     op: Int8Op::Linear { inputs: 2, outputs: 1 },
///     relu: false,
///     output: unit,
///     weight_scales: &[1.0],
///     requant: &[Requant::from_scale(1.0).unwrap()],
///     bias: &[0],
///     weights: &[2, -1],
/// })?;
/// let len = enc.finish()?;
///
/// let body = Int8Body::parse(&buf[..len])?;
/// let mut scratch = [0i8; 8];
/// let mut y = [0.0f32];
/// body.forward(&[5.0, 3.0], &mut scratch, &mut y)?;
/// assert_eq!(y, [7.0]);
/// # Ok::<(), safegrad::quant::Int8Error>(())
/// ```
pub struct Int8Encoder<'o> {
    out: &'o mut [u8],
    pos: usize,
    layers: usize,
    /// The last activation's `(channels, len)` and scale and zero point.
    shape: (usize, usize),
    params: QuantParams,
    /// The last layer was a global average pooling.
    ends_pooled: bool,
}

impl<'o> Int8Encoder<'o> {
    /// A body over rows of `channels x len` values, quantised with `input` after the float
    /// prefix `(x + shift[c]) * mul[c]` of each channel `c`.
    pub fn new(
        out: &'o mut [u8],
        channels: usize,
        len: usize,
        input: QuantParams,
        shift: &[f32],
        mul: &[f32],
    ) -> Result<Self, Int8Error> {
        let bad = Int8Error::Header;
        if channels == 0 || len == 0 || channels > 0xFFFF || len > 0xFFFF {
            return Err(bad("channels and length must be in 1 to 65535"));
        }
        if shift.len() != channels || mul.len() != channels {
            return Err(bad("the prefix needs a shift and a multiplier per channel"));
        }
        if shift.iter().chain(mul).any(|v| !v.is_finite()) {
            return Err(bad("the prefix is not finite"));
        }
        check_params(input).map_err(bad)?;
        let mut enc = Self {
            out,
            pos: 0,
            layers: 0,
            shape: (channels, len),
            params: input,
            ends_pooled: false,
        };
        let header = BodyHeader {
            magic: INT8_MAGIC,
            layers: U16::new(0),
            channels: U16::new(channels as u16),
            len: U16::new(len as u16),
            reserved: U16::new(0),
            scale: U32::new(input.scale.to_bits()),
            zero_point: I32::new(input.zero_point),
        };
        enc.put(header.as_bytes())?;
        for v in shift.iter().chain(mul) {
            enc.put(&v.to_le_bytes())?;
        }
        Ok(enc)
    }

    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Int8Error> {
        let end = self.pos + bytes.len();
        let available = self.out.len();
        self.out
            .get_mut(self.pos..end)
            .ok_or(Int8Error::Buffer {
                needed: end,
                available,
            })?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Appends a layer after checking it against the activation before it.
    pub fn layer(&mut self, layer: &Int8Layer<'_>) -> Result<(), Int8Error> {
        let index = self.layers;
        let out =
            check_layer(layer, self.shape, self.params, self.ends_pooled).map_err(|problem| {
                Int8Error::Layer {
                    layer: index,
                    problem,
                }
            })?;
        let needed = self.pos + layer_len(&layer.op, out.0);
        if needed > self.out.len() {
            return Err(Int8Error::Buffer {
                needed,
                available: self.out.len(),
            });
        }
        let header = record(layer, out.1);
        self.put(header.as_bytes())?;
        if matches!(layer.op, Int8Op::Linear { .. } | Int8Op::Conv1d(_)) {
            for s in layer.weight_scales {
                self.put(&s.to_le_bytes())?;
            }
            for r in layer.requant {
                self.put(&r.multiplier.to_le_bytes())?;
                self.put(&r.shift.to_le_bytes())?;
            }
            for b in layer.bias {
                self.put(&b.to_le_bytes())?;
            }
            for &w in layer.weights {
                self.put(&[w as u8])?;
            }
            while !self.pos.is_multiple_of(4) {
                self.put(&[0])?;
            }
        }
        self.layers += 1;
        self.shape = out;
        self.params = layer.output;
        self.ends_pooled = matches!(layer.op, Int8Op::GlobalAvgPool { .. });
        Ok(())
    }

    /// Writes the layer count; returns the body's length in bytes.
    pub fn finish(self) -> Result<usize, Int8Error> {
        if self.layers > 0xFFFF {
            return Err(Int8Error::Header("more than 65535 layers"));
        }
        let count = (self.layers as u16).to_le_bytes();
        if let Some(field) = self.out.get_mut(4..6) {
            field.copy_from_slice(&count);
        }
        Ok(self.pos)
    }
}

/// The record of `layer` with output length `l_out`, as [`Int8Encoder::layer`] writes it and
/// [`Int8Body::parse`] expects it: a linear layer's unused window fields are those of a
/// kernel of 1 over a length of 1, a global average pooling's of a kernel over its whole
/// length; reserved fields are 0.
fn record(layer: &Int8Layer<'_>, l_out: usize) -> LayerHeader {
    let w = match layer.op {
        Int8Op::Conv1d(w) | Int8Op::MaxPool1d(w) | Int8Op::AvgPool1d(w) => w,
        Int8Op::Linear { inputs, outputs } => Window {
            c_in: inputs,
            l_in: 1,
            c_out: outputs,
            kernel: 1,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        },
        Int8Op::GlobalAvgPool { channels, len } => Window {
            c_in: channels,
            l_in: len,
            c_out: channels,
            kernel: len,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        },
    };
    let u16_of = |v: usize| U16::new(v as u16);
    LayerHeader {
        op: layer.op.code(),
        relu: u8::from(layer.relu),
        reserved: U16::new(0),
        c_in: u16_of(w.c_in),
        l_in: u16_of(w.l_in),
        c_out: u16_of(w.c_out),
        l_out: u16_of(l_out),
        kernel: u16_of(w.kernel),
        stride: u16_of(w.stride),
        padding: u16_of(w.padding),
        dilation: u16_of(w.dilation),
        groups: u16_of(w.groups),
        reserved2: U16::new(0),
        scale: U32::new(layer.output.scale.to_bits()),
        zero_point: I32::new(layer.output.zero_point),
    }
}

/// Why `p` cannot be an activation's parameters.
fn check_params(p: QuantParams) -> Result<(), &'static str> {
    if !(p.scale.is_finite() && p.scale > 0.0) {
        return Err("a scale is not finite and positive");
    }
    if !(-128..=127).contains(&p.zero_point) {
        return Err("a zero point is outside [-128, 127]");
    }
    Ok(())
}

/// Checks `layer` after an activation of `shape` with `params` (`pooled`: after a global
/// average pooling, which must be last); returns its output's `(channels, len)`.
fn check_layer(
    layer: &Int8Layer<'_>,
    shape: (usize, usize),
    params: QuantParams,
    pooled: bool,
) -> Result<(usize, usize), &'static str> {
    if pooled {
        return Err("a layer after a global average pooling (it must be the last)");
    }
    if let Int8Op::Conv1d(w) | Int8Op::MaxPool1d(w) | Int8Op::AvgPool1d(w) = layer.op {
        let fields = [
            w.c_in, w.l_in, w.c_out, w.kernel, w.stride, w.padding, w.dilation, w.groups,
        ];
        if fields.iter().any(|&v| v > 0xFFFF) {
            return Err("a window field above 65535");
        }
    }
    let (input, out) = layer.op.shapes()?;
    if out.0.checked_mul(out.1).is_none_or(|n| n > 0x0FFF_FFFF) {
        return Err("its output has too many values");
    }
    if matches!(layer.op, Int8Op::Linear { .. }) {
        if input.0 != shape.0 * shape.1 {
            return Err("its inputs are not the previous activation's values");
        }
    } else if input != shape {
        return Err("its input is not the previous activation's channels and length");
    }
    if out.0 == 0 || out.0 > 0xFFFF || out.1 > 0xFFFF || input.1 > 0xFFFF || input.0 > 0xFFFF {
        return Err("channels and lengths must be in 1 to 65535");
    }
    check_params(layer.output)?;
    let weighted = matches!(layer.op, Int8Op::Linear { .. } | Int8Op::Conv1d(_));
    if weighted {
        let c = out.0;
        if layer.weight_scales.len() != c || layer.requant.len() != c || layer.bias.len() != c {
            return Err("it needs a weight scale, a requantisation and a bias per output");
        }
        if layer.op.weights() > 0x0FFF_FFFF || layer.weights.len() != layer.op.weights() {
            return Err("its weights are not C_OUT x C_IN / G x K");
        }
        if layer
            .weight_scales
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err("a weight scale is not finite and positive");
        }
        if layer.requant.iter().any(|r| !valid_requant(*r)) {
            return Err("a requantisation is out of range (multiplier in [2^30, 2^31) or 0, shift in [-31, 30])");
        }
    } else {
        if layer.relu {
            return Err("a fused ReLU on a pooling");
        }
        if layer.output != params {
            return Err("a pooling must keep its input's scale and zero point");
        }
        if !(layer.weight_scales.is_empty()
            && layer.requant.is_empty()
            && layer.bias.is_empty()
            && layer.weights.is_empty())
        {
            return Err("a pooling has no parameters");
        }
    }
    match layer.op {
        Int8Op::Conv1d(w) => {
            if w.groups == 0 || w.c_in % w.groups != 0 || w.c_out % w.groups != 0 {
                return Err("groups must divide the input and output channels");
            }
            #[cfg(feature = "conv")]
            if let Some(problem) = conv_shape(w).problem() {
                return Err(problem);
            }
            conv_available()?;
        }
        Int8Op::MaxPool1d(w) | Int8Op::AvgPool1d(w) => {
            if w.c_out != w.c_in || w.groups != 1 {
                return Err("a pooling keeps its channels (groups 1)");
            }
            if matches!(layer.op, Int8Op::AvgPool1d(_)) && w.dilation != 1 {
                return Err("average pooling takes no dilation");
            }
            #[cfg(feature = "conv")]
            if let Some(problem) = pool_shape(w).problem() {
                return Err(problem);
            }
            conv_available()?;
        }
        _ => {}
    }
    Ok(out)
}

/// Convolution and pooling need the `conv` feature.
fn conv_available() -> Result<(), &'static str> {
    if cfg!(feature = "conv") {
        Ok(())
    } else {
        Err("convolution and pooling need safegrad's `conv` feature")
    }
}

/// A requantisation [`Requant::apply`] is defined for.
fn valid_requant(r: Requant) -> bool {
    (-31..=30).contains(&r.shift) && (r.multiplier == 0 || r.multiplier >= 1 << 30)
}

/// A parsed layer, read in place.
struct LayerView<'a> {
    layer: Int8Layer<'a>,
}

/// An `int8` body read in place ([module](self)).
#[derive(Clone, Copy, Debug)]
pub struct Int8Body<'a> {
    bytes: &'a [u8],
    channels: usize,
    len: usize,
    layers: usize,
    input: QuantParams,
    /// The largest activation, in codes.
    largest: usize,
    /// Values of the output.
    outputs: usize,
}

/// `&[T]` of `n` values at `at` in `bytes` (aligned, little-endian).
fn slice_at<T: FromBytes + Immutable>(bytes: &[u8], at: usize, n: usize) -> Option<&[T]> {
    let b = bytes.get(at..at.checked_add(n.checked_mul(size_of::<T>())?)?)?;
    <[T]>::ref_from_bytes(b).ok()
}

impl<'a> Int8Body<'a> {
    /// Checks the encoding `bytes` (the [module](self)'s layout) and every layer.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Int8Error> {
        if bytes.is_empty() {
            return Err(Int8Error::Missing);
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) || !cfg!(target_endian = "little") {
            return Err(Int8Error::Misaligned);
        }
        let (h, _) =
            BodyHeader::ref_from_prefix(bytes).map_err(|_| Int8Error::Truncated { layer: None })?;
        if h.magic != INT8_MAGIC {
            return Err(Int8Error::Magic);
        }
        let (channels, len) = (usize::from(h.channels.get()), usize::from(h.len.get()));
        if h.reserved.get() != 0 {
            return Err(Int8Error::Header("a reserved field is not 0"));
        }
        if channels == 0 || len == 0 {
            return Err(Int8Error::Header("no input channels or length"));
        }
        let input = QuantParams {
            scale: f32::from_bits(h.scale.get()),
            zero_point: h.zero_point.get(),
        };
        check_params(input).map_err(Int8Error::Header)?;
        let prefix: &[f32] = slice_at(bytes, BODY_HEADER_LEN, 2 * channels)
            .ok_or(Int8Error::Truncated { layer: None })?;
        if prefix.iter().any(|v| !v.is_finite()) {
            return Err(Int8Error::Header("the prefix is not finite"));
        }
        let mut body = Self {
            bytes,
            channels,
            len,
            layers: usize::from(h.layers.get()),
            input,
            largest: channels * len,
            outputs: channels * len,
        };
        let mut shape = (channels, len);
        let mut params = input;
        let mut pooled = false;
        let mut at = BODY_HEADER_LEN + 8 * channels;
        for i in 0..body.layers {
            let (view, next) = read_layer(bytes, at).map_err(|problem| match problem {
                None => Int8Error::Truncated { layer: Some(i) },
                Some(problem) => Int8Error::Layer { layer: i, problem },
            })?;
            let out = check_layer(&view.layer, shape, params, pooled)
                .map_err(|problem| Int8Error::Layer { layer: i, problem })?;
            let recorded = bytes.get(at..at + LAYER_HEADER_LEN).unwrap_or(&[]);
            let weights_end = at + LAYER_HEADER_LEN + 16 * out.0 + view.layer.weights.len();
            let padding = if view.layer.weights.is_empty() {
                &[][..]
            } else {
                bytes.get(weights_end..next).unwrap_or(&[])
            };
            if recorded != record(&view.layer, out.1).as_bytes() || padding.iter().any(|&b| b != 0)
            {
                return Err(Int8Error::Layer {
                    layer: i,
                    problem: "a reserved or unused field, or the weights' padding, is not what the op records",
                });
            }
            pooled = matches!(view.layer.op, Int8Op::GlobalAvgPool { .. });
            if !pooled {
                body.largest = body.largest.max(out.0 * out.1);
            }
            shape = out;
            params = view.layer.output;
            at = next;
        }
        if at != bytes.len() {
            return Err(Int8Error::Trailing {
                bytes: bytes.len().saturating_sub(at),
            });
        }
        body.outputs = shape.0 * shape.1;
        Ok(body)
    }

    /// Values of an input row (`C x L`).
    pub fn inputs(&self) -> usize {
        self.channels * self.len
    }

    /// Values of the output (the latent the head reads).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Layers.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The input's scale and zero point.
    pub fn input_params(&self) -> QuantParams {
        self.input
    }

    /// Codes of scratch [`forward`](Self::forward) needs: two of the largest activations.
    pub fn scratch_len(&self) -> usize {
        self.largest.saturating_mul(2)
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoding, as given to [`parse`](Self::parse).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes of the weights, biases, requantisations and scales.
    pub fn parameter_bytes(&self) -> usize {
        self.layer_views()
            .map(|v| {
                let l = &v.layer;
                l.weights.len() + 4 * (l.bias.len() + l.weight_scales.len() + 2 * l.requant.len())
            })
            .sum()
    }

    /// The layers, as parsed ([`parse`](Self::parse) checked them).
    pub fn layer(&self, index: usize) -> Option<Int8Layer<'a>> {
        self.layer_views().nth(index).map(|v| v.layer)
    }

    fn layer_views(&self) -> impl Iterator<Item = LayerView<'a>> + 'a {
        let bytes = self.bytes;
        let mut at = BODY_HEADER_LEN + 8 * self.channels;
        (0..self.layers).map_while(move |_| {
            let (view, next) = read_layer(bytes, at).ok()?;
            at = next;
            Some(view)
        })
    }

    /// The float prefix: each channel's shift and multiplier.
    fn prefix(&self) -> (&'a [f32], &'a [f32]) {
        let all: &[f32] = slice_at(self.bytes, BODY_HEADER_LEN, 2 * self.channels).unwrap_or(&[]);
        all.split_at(self.channels.min(all.len()))
    }

    /// Runs the body on the row `x` (`C x L` values) and writes the dequantised output into
    /// `out` ([`outputs`](Self::outputs) values), with `scratch` for the codes
    /// ([`scratch_len`](Self::scratch_len)). A non-finite input is refused.
    // Never inlined: a caller built for size (the firmware's `opt-level = "z"`) would
    // otherwise take in the input's quantisation loop under link-time optimisation.
    #[inline(never)]
    pub fn forward(&self, x: &[f32], scratch: &mut [i8], out: &mut [f32]) -> Result<(), Int8Error> {
        if x.len() != self.inputs() {
            return Err(Int8Error::Input {
                expected: self.inputs(),
                found: x.len(),
            });
        }
        if out.len() != self.outputs {
            return Err(Int8Error::Output {
                expected: self.outputs,
                found: out.len(),
            });
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Int8Error::NonFinite { index });
        }
        let available = scratch.len();
        let (a, rest) = scratch
            .split_at_mut_checked(self.largest)
            .ok_or(Int8Error::Buffer {
                needed: self.scratch_len(),
                available,
            })?;
        let b = rest.get_mut(..self.largest).ok_or(Int8Error::Buffer {
            needed: self.scratch_len(),
            available,
        })?;
        let (shift, mul) = self.prefix();
        for (i, (code, &v)) in a.iter_mut().zip(x).enumerate() {
            let c = i / self.len;
            let (s, m) = (
                shift.get(c).copied().unwrap_or(0.0),
                mul.get(c).copied().unwrap_or(1.0),
            );
            *code = self.input.quantize((v + s) * m);
        }
        let (mut cur, mut next) = (a, b);
        let mut size = self.inputs();
        let mut params = self.input;
        for view in self.layer_views() {
            let l = &view.layer;
            let x_codes = cur.get(..size).unwrap_or(&[]);
            if let Int8Op::GlobalAvgPool { len, .. } = l.op {
                // The last layer ([`parse`](Self::parse) checked it): the exact sums,
                // dequantised into the head.
                for (o, row) in out.iter_mut().zip(x_codes.chunks_exact(len.max(1))) {
                    let sum: i32 = row.iter().map(|&c| i32::from(c) - params.zero_point).sum();
                    *o = params.scale * sum as f32 / len as f32;
                }
                return Ok(());
            }
            let produced = run_layer(l, x_codes, params, next)?;
            size = produced;
            params = l.output;
            core::mem::swap(&mut cur, &mut next);
        }
        for (o, &c) in out.iter_mut().zip(cur.iter().take(size)) {
            *o = params.dequantize(c);
        }
        Ok(())
    }
}

/// Runs one layer on the codes `x` (parameters `input`) into `y`; returns the output's codes.
fn run_layer(
    l: &Int8Layer<'_>,
    x: &[i8],
    input: QuantParams,
    y: &mut [i8],
) -> Result<usize, Int8Error> {
    let (_, out) = l.op.shapes().map_err(Int8Error::Header)?;
    let n = out.0 * out.1;
    let available = y.len();
    let y = y.get_mut(..n).ok_or(Int8Error::Buffer {
        needed: n,
        available,
    })?;
    let min = if l.relu {
        l.output.zero_point.clamp(-128, 127) as i8
    } else {
        i8::MIN
    };
    match l.op {
        Int8Op::Linear { .. } => {
            qlinear(x, l.weights, l.bias, l.requant, l.output.zero_point, min, y);
        }
        #[cfg(feature = "conv")]
        Int8Op::Conv1d(w) => {
            let shape = conv_shape(w);
            super::qconv1d(
                &shape,
                x,
                input.zero_point,
                l.weights,
                l.bias,
                l.requant,
                l.output.zero_point,
                min,
                y,
            );
        }
        #[cfg(feature = "conv")]
        Int8Op::MaxPool1d(w) => {
            let shape = pool_shape(w);
            super::qmax_pool1d(&shape, x, y);
        }
        #[cfg(feature = "conv")]
        Int8Op::AvgPool1d(w) => {
            let shape = pool_shape(w);
            super::qavg_pool1d(&shape, x, input.zero_point, y);
        }
        // Only ever last, where `forward` dequantises its sums.
        Int8Op::GlobalAvgPool { .. } => {
            return Err(Int8Error::Header(
                "a global average pooling before the last layer",
            ))
        }
        #[cfg(not(feature = "conv"))]
        _ => {
            let _ = input;
            return Err(Int8Error::Header(
                "convolution and pooling need safegrad's `conv` feature",
            ));
        }
    }
    Ok(n)
}

#[cfg(feature = "conv")]
fn conv_shape(w: Window) -> crate::ops::conv::Conv1dShape {
    crate::ops::conv::Conv1dShape::new(
        w.c_in, w.l_in, w.c_out, w.kernel, w.stride, w.padding, w.dilation, w.groups,
    )
}

#[cfg(feature = "conv")]
fn pool_shape(w: Window) -> crate::ops::pool::Pool1dShape {
    crate::ops::pool::Pool1dShape::new(w.c_in, w.l_in, w.kernel, w.stride, w.padding, w.dilation)
}

/// The layer at `at`, and where the next one starts; `Err(None)` if the bytes end inside it.
fn read_layer(bytes: &[u8], at: usize) -> Result<(LayerView<'_>, usize), Option<&'static str>> {
    let rest = bytes.get(at..).ok_or(None)?;
    let (h, _) = LayerHeader::ref_from_prefix(rest).map_err(|_| None)?;
    let g = |v: U16| usize::from(v.get());
    let window = Window {
        c_in: g(h.c_in),
        l_in: g(h.l_in),
        c_out: g(h.c_out),
        kernel: g(h.kernel),
        stride: g(h.stride),
        padding: g(h.padding),
        dilation: g(h.dilation),
        groups: g(h.groups),
    };
    let op = match h.op {
        1 => Int8Op::Linear {
            inputs: window.c_in,
            outputs: window.c_out,
        },
        2 => Int8Op::Conv1d(window),
        3 => Int8Op::MaxPool1d(window),
        4 => Int8Op::AvgPool1d(window),
        5 => Int8Op::GlobalAvgPool {
            channels: window.c_in,
            len: window.l_in,
        },
        _ => return Err(Some("an unknown op (1 to 5 are linear, conv1d, max pool, average pool, global average pool)")),
    };
    if h.relu > 1 {
        return Err(Some("the ReLU flag is not 0 or 1"));
    }
    // The recorded geometry must be the one the op implies.
    let (input, out) = op.shapes().map_err(Some)?;
    let implied_in = match op {
        Int8Op::Linear { .. } => (window.c_in, 1),
        _ => input,
    };
    if (g(h.l_in), g(h.c_out), g(h.l_out)) != (implied_in.1, out.0, out.1) {
        return Err(Some(
            "its recorded output length or channels differ from its geometry",
        ));
    }
    let output = QuantParams {
        scale: f32::from_bits(h.scale.get()),
        zero_point: h.zero_point.get(),
    };
    let mut layer = Int8Layer {
        op,
        relu: h.relu == 1,
        output,
        weight_scales: &[],
        requant: &[],
        bias: &[],
        weights: &[],
    };
    let mut next = at + LAYER_HEADER_LEN;
    if matches!(op, Int8Op::Linear { .. } | Int8Op::Conv1d(_)) {
        let c = out.0;
        layer.weight_scales = slice_at(bytes, next, c).ok_or(None)?;
        layer.requant = slice_at(bytes, next + 4 * c, c).ok_or(None)?;
        layer.bias = slice_at(bytes, next + 12 * c, c).ok_or(None)?;
        layer.weights = slice_at(bytes, next + 16 * c, op.weights()).ok_or(None)?;
        next += 16 * c + pad4(op.weights());
        if next > bytes.len() {
            return Err(None);
        }
    }
    Ok((LayerView { layer }, next))
}

/// The rows of a data set through an `int8` body: [`Samples`](crate::train::Samples) of
/// the body's outputs, computed as each row is read (a row the body refuses reads as
/// `None`), with a row buffer and a scratch the caller provides. To train a float head on
/// them, copy the rows first ([`Session::latents`](crate::session::Session::latents) does
/// this for a float body): the body then runs once per row, not once per epoch.
///
/// ```
/// use safegrad::quant::{Int8Body, Int8Encoder, Int8Latents, QuantParams};
/// use safegrad::train::Samples;
///
/// // A body of no layers: the codes of its input, dequantised.
/// let unit = QuantParams { scale: 1.0, zero_point: 0 };
/// let mut buf = [0u8; 64];
/// let len = Int8Encoder::new(&mut buf, 2, 1, unit, &[0.0; 2], &[1.0; 2])?.finish()?;
/// let body = Int8Body::parse(&buf[..len])?;
/// let rows = [([1.4f32, -2.6], 3usize)];
/// let (mut row, mut scratch) = ([0.0f32; 2], [0i8; 4]);
/// let latents = Int8Latents::<_, 2, 2>::new(body, &rows[..], &mut row, &mut scratch)?;
/// assert_eq!(latents.row(0), Some(([1.0, -3.0], 3)));
/// # Ok::<(), safegrad::quant::Int8Error>(())
/// ```
pub struct Int8Latents<'a, D: ?Sized, const IN: usize, const F: usize> {
    body: Int8Body<'a>,
    data: &'a D,
    buffers: core::cell::RefCell<(&'a mut [f32; IN], &'a mut [i8])>,
}

impl<'a, D, const IN: usize, const F: usize> Int8Latents<'a, D, IN, F>
where
    D: crate::train::Samples<f32, IN> + ?Sized,
{
    /// `data` (rows of `IN` values) through `body` (`F` outputs), with a buffer for a row and
    /// a scratch of [`Int8Body::scratch_len`] codes.
    pub fn new(
        body: Int8Body<'a>,
        data: &'a D,
        row: &'a mut [f32; IN],
        scratch: &'a mut [i8],
    ) -> Result<Self, Int8Error> {
        if body.inputs() != IN {
            return Err(Int8Error::Input {
                expected: body.inputs(),
                found: IN,
            });
        }
        if body.outputs() != F {
            return Err(Int8Error::Output {
                expected: body.outputs(),
                found: F,
            });
        }
        if scratch.len() < body.scratch_len() {
            return Err(Int8Error::Buffer {
                needed: body.scratch_len(),
                available: scratch.len(),
            });
        }
        Ok(Self {
            body,
            data,
            buffers: core::cell::RefCell::new((row, scratch)),
        })
    }
}

impl<D, const IN: usize, const F: usize> crate::train::Samples<f32, F> for Int8Latents<'_, D, IN, F>
where
    D: crate::train::Samples<f32, IN> + ?Sized,
{
    fn len(&self) -> usize {
        self.data.len()
    }

    fn row(&self, i: usize) -> Option<([f32; F], usize)> {
        let mut out = [0.0f32; F];
        let label = self.read_into(i, &mut out)?;
        Some((out, label))
    }

    fn read_into(&self, i: usize, out: &mut [f32]) -> Option<usize> {
        let mut buffers = self.buffers.try_borrow_mut().ok()?;
        let (row, scratch) = &mut *buffers;
        let label = self.data.read_into(i, &mut row[..])?;
        self.body
            .forward(&row[..], scratch, out.get_mut(..F)?)
            .ok()?;
        Some(label)
    }
}
