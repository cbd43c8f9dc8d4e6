//! Simulated installations: the watch worn otherwise than in the recordings it was trained
//! on, as a transform of each recording's six IMU channels (accelerometer x, y, z, then
//! gyroscope x, y, z), `host-sim finetune --shift SPEC`.
//!
//! A SPEC is one part or several joined by `+`, applied left to right:
//!
//! | part | what it does |
//! | --- | --- |
//! | `rot-x:DEG`, `rot-y:DEG`, `rot-z:DEG` | the watch turned by `DEG` degrees about its own x, y or z axis (z points out of its face), right-handed: both sensors' vectors `v` become `R v` |
//! | `rot:AX,AY,AZ:DEG` | the same about the axis `(AX, AY, AZ)`, of any non-zero length |
//! | `mirror`, `mirror:x`, `mirror:y`, `mirror:z` | the other wrist, as a reflection that negates the named axis (x when none is named): the accelerometer's component along it is negated; the gyroscope measures an angular velocity, a pseudo-vector, which a reflection maps to minus its mirror image, so its component along the axis is kept and the other two are negated |
//! | `gain:ACC,GYRO` | every accelerometer value times `ACC`, every gyroscope value times `GYRO` |
//! | `offset:X,Y,Z` | `(X, Y, Z)` added to every accelerometer sample |
//! | `noise:STD` | Gaussian noise of standard deviation `STD` added to every value of every channel, drawn from SplitMix64 seeded by the recording's split and index, so that a recording gets the same noise in every run |
//!
//! `none` alone is the watch worn as in the recordings (no transform): what `--new-class`
//! fine-tunes under unless told otherwise.
//!
//! Numbers must be finite; a standard deviation must not be negative. A spec that does not
//! parse is refused with the part that is wrong. `rot-z:90` is the shipped shift, and
//! `--rotation DEG` is shorthand for `rot-z:DEG`.
//!
//! ```
//! use host_sim::shift::Shift;
//!
//! let shift: Shift = "rot-x:30+mirror+noise:0.05".parse().unwrap();
//! assert_eq!(shift.to_string(), "rot-x:30+mirror+noise:0.05");
//! assert!("rot-w:30".parse::<Shift>().unwrap_err().contains("rot-w:30"));
//! ```

use std::fmt;
use std::str::FromStr;

use motion::features::{rotate_imu, IMU_CHANNELS};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};

/// One transform of a [`Shift`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Part {
    /// Both sensors' vectors times this rotation matrix (row-major).
    Rotate([[f32; 3]; 3]),
    /// Reflection negating axis 0, 1 or 2 (x, y, z).
    Mirror(usize),
    /// Accelerometer and gyroscope gains.
    Gain {
        /// The accelerometer's.
        acc: f32,
        /// The gyroscope's.
        gyro: f32,
    },
    /// Added to every accelerometer sample.
    Offset([f32; 3]),
    /// Standard deviation of Gaussian noise on every value.
    Noise(f64),
}

/// A simulated installation: [`Part`]s applied in order, with the spec they were parsed
/// from.
#[derive(Clone, Debug, PartialEq)]
pub struct Shift {
    parts: Vec<Part>,
    spec: String,
}

/// The rotation by `degrees` about the unit axis `(x, y, z)` (Rodrigues' formula), computed
/// in `f64` and rounded to `f32`.
fn rotation(axis: [f64; 3], degrees: f64) -> [[f32; 3]; 3] {
    let [x, y, z] = axis;
    let (s, c) = (degrees.to_radians().sin(), degrees.to_radians().cos());
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
    .map(|row| row.map(|v| v as f32))
}

/// The rotation by `degrees` about z, as the shipped shift has always computed it (`f64`
/// sine and cosine rounded to `f32`; Rodrigues' formula gives the same matrix).
pub fn rotation_z(degrees: f64) -> [[f32; 3]; 3] {
    let (s, c) = (
        degrees.to_radians().sin() as f32,
        degrees.to_radians().cos() as f32,
    );
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

/// A finite number, or what is wrong with it.
fn number(text: &str, what: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{what} `{text}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{what} `{text}` is not finite"))
    }
}

/// `n` comma-separated finite numbers.
fn numbers<const N: usize>(text: &str, what: &str) -> Result<[f64; N], String> {
    let items: Vec<&str> = text.split(',').collect();
    if items.len() != N {
        return Err(format!(
            "{what} takes {N} comma-separated numbers, not `{text}`"
        ));
    }
    let mut out = [0.0; N];
    for (o, item) in out.iter_mut().zip(items) {
        *o = number(item, what)?;
    }
    Ok(out)
}

/// One part of a spec.
fn part<'a>(text: &'a str) -> Result<Part, String> {
    let (name, args) = match text.split_once(':') {
        Some((name, args)) => (name, Some(args)),
        None => (text, None),
    };
    let need =
        |args: Option<&'a str>| args.ok_or_else(|| format!("`{name}` needs `:` and its values"));
    Ok(match name {
        "rot-x" | "rot-y" | "rot-z" => {
            let degrees = number(need(args)?, "the angle")?;
            match name {
                "rot-z" => Part::Rotate(rotation_z(degrees)),
                "rot-x" => Part::Rotate(rotation([1.0, 0.0, 0.0], degrees)),
                _ => Part::Rotate(rotation([0.0, 1.0, 0.0], degrees)),
            }
        }
        "rot" => {
            let (axis, degrees) = need(args)?
                .rsplit_once(':')
                .ok_or("`rot` takes AX,AY,AZ:DEG")?;
            let [x, y, z] = numbers::<3>(axis, "the axis")?;
            let norm = (x * x + y * y + z * z).sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(format!("the axis `{axis}` has no direction"));
            }
            Part::Rotate(rotation(
                [x / norm, y / norm, z / norm],
                number(degrees, "the angle")?,
            ))
        }
        "mirror" => Part::Mirror(match args {
            None | Some("x") => 0,
            Some("y") => 1,
            Some("z") => 2,
            Some(other) => return Err(format!("`mirror` takes x, y or z, not `{other}`")),
        }),
        "gain" => {
            let [acc, gyro] = numbers::<2>(need(args)?, "a gain")?;
            Part::Gain {
                acc: acc as f32,
                gyro: gyro as f32,
            }
        }
        "offset" => Part::Offset(numbers::<3>(need(args)?, "the offset")?.map(|v| v as f32)),
        "noise" => {
            let std = number(need(args)?, "the standard deviation")?;
            if std < 0.0 {
                return Err(format!("the standard deviation `{std}` is negative"));
            }
            Part::Noise(std)
        }
        _ => {
            return Err(
                "the known parts are rot-x, rot-y, rot-z, rot, mirror, gain, offset and noise \
                 (`none` alone for no shift)"
                    .into(),
            )
        }
    })
}

impl FromStr for Shift {
    type Err = String;

    /// Parses a spec (see the [module](self)); the error names the part that is wrong.
    fn from_str(spec: &str) -> Result<Self, String> {
        if spec.trim().is_empty() {
            return Err("an empty shift: give at least one part, e.g. rot-z:90".into());
        }
        if spec.trim() == "none" {
            return Ok(Self::none());
        }
        let parts = spec
            .split('+')
            .map(|text| part(text.trim()).map_err(|e| format!("in `{}`: {e}", text.trim())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            parts,
            spec: spec.trim().to_string(),
        })
    }
}

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl Default for Shift {
    /// The shipped shift, `rot-z:90`.
    fn default() -> Self {
        Self::rotation_z(90.0)
    }
}

impl Shift {
    /// `none`: no transform.
    pub fn none() -> Self {
        Self {
            parts: Vec::new(),
            spec: "none".into(),
        }
    }

    /// `true` for [`none`](Self::none).
    pub fn is_none(&self) -> bool {
        self.parts.is_empty()
    }

    /// `rot-z:DEG`, what `--rotation DEG` means.
    pub fn rotation_z(degrees: f64) -> Self {
        Self {
            parts: vec![Part::Rotate(rotation_z(degrees))],
            spec: format!("rot-z:{degrees}"),
        }
    }

    /// Its parts, in the order they apply.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Applies the shift to one recording's window; `stream` seeds its noise (the
    /// recording's split and index, say).
    pub fn apply<const L: usize>(&self, window: &mut [[f32; L]; IMU_CHANNELS], stream: u64) {
        for (p, part) in self.parts.iter().enumerate() {
            match *part {
                Part::Rotate(r) => rotate_imu(window, &r),
                Part::Mirror(axis) => {
                    for (c, channel) in window.iter_mut().enumerate() {
                        // Accelerometer: the axis negated; gyroscope: the two others.
                        let negate = if c < 3 { c == axis } else { c - 3 != axis };
                        if negate {
                            channel.iter_mut().for_each(|v| *v = -*v);
                        }
                    }
                }
                Part::Gain { acc, gyro } => {
                    for (c, channel) in window.iter_mut().enumerate() {
                        let k = if c < 3 { acc } else { gyro };
                        channel.iter_mut().for_each(|v| *v *= k);
                    }
                }
                Part::Offset(offset) => {
                    for (channel, &o) in window.iter_mut().zip(&offset) {
                        channel.iter_mut().for_each(|v| *v += o);
                    }
                }
                Part::Noise(std) => {
                    let seed = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ p as u64;
                    let mut rng = SplitMix64::seed_from_u64(seed);
                    for v in window.iter_mut().flatten() {
                        // Box-Muller: a standard normal from two uniforms in (0, 1].
                        let u1 = 1.0 - rng.next_f64();
                        let u2 = rng.next_f64();
                        let n = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                        *v += (std * n) as f32;
                    }
                }
            }
        }
    }

    /// The noise stream of recording `index` of a split (`test` false for training).
    pub fn stream(test: bool, index: usize) -> u64 {
        (u64::from(test) << 32) | index as u64
    }

    /// The angle of a shift that is one rotation about z, as `--rotation` gives it.
    pub fn rotation_z_degrees(&self) -> Option<f64> {
        self.spec
            .strip_prefix("rot-z:")
            .filter(|_| self.parts.len() == 1)
            .and_then(|d| d.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> [[f32; 4]; IMU_CHANNELS] {
        core::array::from_fn(|c| core::array::from_fn(|t| (c * 4 + t) as f32 * 0.5 - 3.0))
    }

    #[test]
    fn none_is_no_shift_and_stands_alone() {
        let none: Shift = " none ".parse().expect("none");
        assert!(none.is_none());
        assert_eq!(none.to_string(), "none");
        let mut w = window();
        none.apply(&mut w, 3);
        assert_eq!(w, window());
        let err = "none+mirror".parse::<Shift>().expect_err("refused");
        assert!(err.contains("`none` alone"), "{err}");
        assert!(!"mirror".parse::<Shift>().expect("mirror").is_none());
    }

    #[test]
    fn refusals_name_the_part() {
        for (spec, says) in [
            ("", "empty"),
            ("rot-q:30", "rot-q:30"),
            ("rot-x", "needs"),
            ("rot-x:nan", "not finite"),
            ("rot-z:inf", "not finite"),
            ("rot-z:ninety", "not a number"),
            ("rot:0,0,0:45", "no direction"),
            ("rot:1,2:45", "3 comma-separated"),
            ("rot:1,2,3", "AX,AY,AZ:DEG"),
            ("mirror:w", "x, y or z"),
            ("gain:1", "2 comma-separated"),
            ("gain:1,nan", "not finite"),
            ("offset:1,2,x", "not a number"),
            ("noise:-0.1", "negative"),
            ("rot-z:90+", "in ``"),
            ("rot-z:90+bogus:1", "bogus:1"),
        ] {
            let err = spec.parse::<Shift>().expect_err(spec);
            assert!(err.contains(says), "{spec}: {err}");
        }
    }

    #[test]
    fn rotations_are_right_handed_and_agree_with_the_closed_forms() {
        // 90 degrees about x takes y to z; about y takes z to x; about z takes x to y.
        let close = |a: [f32; 3], b: [f32; 3]| a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6);
        let apply = |r: [[f32; 3]; 3], v: [f32; 3]| {
            r.map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>())
        };
        assert!(close(
            apply(rotation([1.0, 0.0, 0.0], 90.0), [0.0, 1.0, 0.0]),
            [0.0, 0.0, 1.0]
        ));
        assert!(close(
            apply(rotation([0.0, 1.0, 0.0], 90.0), [0.0, 0.0, 1.0]),
            [1.0, 0.0, 0.0]
        ));
        assert!(close(
            apply(rotation([0.0, 0.0, 1.0], 90.0), [1.0, 0.0, 0.0]),
            [0.0, 1.0, 0.0]
        ));
        // Rodrigues' formula about z is the shipped matrix to within rounding.
        for deg in [0.0, 17.0, 90.0, 135.0, -60.0] {
            let (a, b) = (rotation([0.0, 0.0, 1.0], deg), rotation_z(deg));
            assert!(a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(p, q)| (p - q).abs() < 1e-6));
        }
        // `rot:` normalises its axis.
        let Part::Rotate(r) = part("rot:0,0,5:30").unwrap() else {
            panic!()
        };
        let s = rotation([0.0, 0.0, 1.0], 30.0);
        assert!(r
            .iter()
            .flatten()
            .zip(s.iter().flatten())
            .all(|(p, q)| (p - q).abs() < 1e-6));
    }

    #[test]
    fn the_shipped_shift_is_the_rotation_it_always_was() {
        let mut a = window();
        let mut b = window();
        Shift::default().apply(&mut a, 0);
        rotate_imu(&mut b, &rotation_z(90.0));
        assert_eq!(a, b);
        assert_eq!(Shift::default().rotation_z_degrees(), Some(90.0));
        assert_eq!(
            "rot-z:90+mirror"
                .parse::<Shift>()
                .unwrap()
                .rotation_z_degrees(),
            None
        );
    }

    #[test]
    fn mirror_negates_the_axis_of_the_accelerometer_and_the_others_of_the_gyroscope() {
        let before = window();
        for (name, axis) in [("mirror", 0), ("mirror:y", 1), ("mirror:z", 2)] {
            let mut w = before;
            name.parse::<Shift>().unwrap().apply(&mut w, 0);
            for c in 0..6 {
                let negated = if c < 3 { c == axis } else { c - 3 != axis };
                let want = before[c].map(|v| if negated { -v } else { v });
                assert_eq!(w[c], want, "{name}, channel {c}");
            }
            // A reflection applied twice is the identity.
            name.parse::<Shift>().unwrap().apply(&mut w, 0);
            assert_eq!(w, before);
        }
    }

    #[test]
    fn gain_offset_and_noise() {
        let before = window();
        let mut w = before;
        "gain:2,0.5+offset:1,2,3"
            .parse::<Shift>()
            .unwrap()
            .apply(&mut w, 0);
        for c in 0..6 {
            for t in 0..4 {
                let want = if c < 3 {
                    before[c][t] * 2.0 + [1.0, 2.0, 3.0][c]
                } else {
                    before[c][t] * 0.5
                };
                assert_eq!(w[c][t], want);
            }
        }
        // Noise: the same stream gives the same noise, another stream other noise; its
        // spread is about the standard deviation.
        let noise: Shift = "noise:0.1".parse().unwrap();
        let (mut a, mut b, mut c) = ([[0.0f32; 500]; 6], [[0.0f32; 500]; 6], [[0.0f32; 500]; 6]);
        noise.apply(&mut a, 7);
        noise.apply(&mut b, 7);
        noise.apply(&mut c, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let values: Vec<f64> = a.iter().flatten().map(|&v| f64::from(v)).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let std =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        assert!(
            mean.abs() < 0.01 && (std - 0.1).abs() < 0.01,
            "mean {mean}, std {std}"
        );
    }
}
