//! Feature extraction for a window of 6-axis IMU data (3-axis accelerometer, 3-axis
//! gyroscope), the same on the host and on the device.
//!
//! The 16 features, in order:
//!
//! | index | feature |
//! | --- | --- |
//! | `2k`, `2k + 1` for `k` in `0..6` | mean and standard deviation of channel `k` (`ax, ay, az, gx, gy, gz`) |
//! | 12, 13 | mean and standard deviation of the acceleration magnitude `sqrt(ax^2 + ay^2 + az^2)` |
//! | 14, 15 | mean and standard deviation of the angular-rate magnitude |
//!
//! The per-axis features carry the orientation of the device (the direction of gravity, the
//! axis a motion happens along); the magnitudes do not. A device worn rotated changes the
//! first twelve and keeps the last four, which is what makes fine-tuning after a change of
//! mounting worthwhile. Standard deviations are population ones, computed in two passes.
//!
//! ```
//! use motion::features::{imu_features, IMU_FEATURES};
//!
//! let mut window = [[0.0f32; 4]; 6];
//! window[2] = [9.81; 4]; // gravity on z, at rest
//! let f = imu_features(&window)?;
//! assert_eq!(f.as_slice().len(), IMU_FEATURES);
//! assert_eq!(f.get(0, 4), Some(9.81)); // mean of az
//! assert_eq!(f.get(0, 5), Some(0.0)); // std of az
//! assert_eq!(f.get(0, 12), Some(9.81)); // mean |a|
//! # Ok::<(), motion::features::FeatureError>(())
//! ```

use core::fmt;

use safegrad::{Scalar, Tensor};

/// Number of features [`imu_features`] computes.
pub const IMU_FEATURES: usize = 16;
/// Largest sample magnitude accepted. Any real IMU reading is far below it; above it the
/// squares and sums of a long window could overflow `f32` and turn finite samples into
/// infinite features.
pub const MAX_SAMPLE_MAGNITUDE: f64 = 1e15;

/// Number of channels of an IMU window: `ax, ay, az, gx, gy, gz`.
pub const IMU_CHANNELS: usize = 6;

/// Why a window was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FeatureError {
    /// The window has no samples.
    Empty,
    /// A sample is `nan` or infinite.
    NonFinite {
        /// Channel, `0..6`.
        channel: usize,
        /// Time index.
        index: usize,
    },
    /// A sample's magnitude exceeds [`MAX_SAMPLE_MAGNITUDE`].
    OutOfRange {
        /// Channel, `0..6`.
        channel: usize,
        /// Time index.
        index: usize,
    },
}

impl fmt::Display for FeatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(f, "empty IMU window"),
            Self::NonFinite { channel, index } => {
                write!(f, "IMU sample {index} of channel {channel} is not finite")
            }
            Self::OutOfRange { channel, index } => write!(
                f,
                "IMU sample {index} of channel {channel} exceeds {MAX_SAMPLE_MAGNITUDE:e} in magnitude"
            ),
        }
    }
}

impl core::error::Error for FeatureError {}

/// Mean and population standard deviation, in two passes.
fn mean_std<T: Scalar>(values: impl Iterator<Item = T> + Clone, n: T) -> (T, T) {
    let mean = values.clone().fold(T::ZERO, |acc, v| acc + v) / n;
    let var = values.fold(T::ZERO, |acc, v| {
        let d = v - mean;
        acc + d * d
    }) / n;
    (mean, var.sqrt())
}

/// `sqrt(x^2 + y^2 + z^2)` sample by sample.
fn magnitude<T: Scalar>(
    x: impl Iterator<Item = T> + Clone,
    y: impl Iterator<Item = T> + Clone,
    z: impl Iterator<Item = T> + Clone,
) -> impl Iterator<Item = T> + Clone {
    x.zip(y)
        .zip(z)
        .map(|((a, b), c)| (a * a + b * b + c * c).sqrt())
}

/// The 16 features of a window of `L` samples per channel (channel-major). A window with a
/// non-finite sample, or one beyond [`MAX_SAMPLE_MAGNITUDE`], is refused, naming the first
/// such sample; the features of an accepted window are finite.
pub fn imu_features<T: Scalar, const L: usize>(
    window: &[[T; L]; IMU_CHANNELS],
) -> Result<Tensor<T, 1, IMU_FEATURES>, FeatureError> {
    imu_features_of(L, |c| window.get(c).into_iter().flatten().copied())
}

/// [`imu_features`] of a window of `len` samples per channel that is read, not held: the
/// samples of channel `c` are `channel(c)` (read twice; a window decoded from a frame
/// needs no copy of its own). The same operations in the same order, so the same values.
pub fn imu_features_of<T: Scalar, I: Iterator<Item = T> + Clone>(
    len: usize,
    channel: impl Fn(usize) -> I,
) -> Result<Tensor<T, 1, IMU_FEATURES>, FeatureError> {
    if len == 0 {
        return Err(FeatureError::Empty);
    }
    let bound = T::from_f64(MAX_SAMPLE_MAGNITUDE);
    for c in 0..IMU_CHANNELS {
        if let Some(index) = channel(c).position(|v| !v.is_finite()) {
            return Err(FeatureError::NonFinite { channel: c, index });
        }
        if let Some(index) = channel(c).position(|v| v.abs() > bound) {
            return Err(FeatureError::OutOfRange { channel: c, index });
        }
    }
    let n = T::from_usize(len);
    let mut out = Tensor::<T, 1, IMU_FEATURES>::zeros();
    let f = out.as_mut_slice();
    for (c, pair) in f.chunks_exact_mut(2).enumerate().take(IMU_CHANNELS) {
        let (mean, std) = mean_std(channel(c), n);
        pair.copy_from_slice(&[mean, std]);
    }
    let (acc_mean, acc_std) = mean_std(magnitude(channel(0), channel(1), channel(2)), n);
    let (gyro_mean, gyro_std) = mean_std(magnitude(channel(3), channel(4), channel(5)), n);
    if let Some(tail) = f.get_mut(12..16) {
        tail.copy_from_slice(&[acc_mean, acc_std, gyro_mean, gyro_std]);
    }
    Ok(out)
}

/// Rotates the accelerometer and gyroscope axes of a window in place by the 3x3 rotation
/// matrix `r` (row-major): each sample `v` of either sensor becomes `r v`. This is what a
/// device mounted at another orientation measures for the same motion.
pub fn rotate_imu<T: Scalar, const L: usize>(window: &mut [[T; L]; IMU_CHANNELS], r: &[[T; 3]; 3]) {
    let [ax, ay, az, gx, gy, gz] = window;
    for (x, y, z) in [(ax, ay, az), (gx, gy, gz)] {
        for ((x, y), z) in x.iter_mut().zip(y.iter_mut()).zip(z.iter_mut()) {
            let v = [*x, *y, *z];
            let [r0, r1, r2] = r;
            let dot = |row: &[T; 3]| {
                row.iter()
                    .zip(&v)
                    .fold(T::ZERO, |acc, (&a, &b)| acc + a * b)
            };
            (*x, *y, *z) = (dot(r0), dot(r1), dot(r2));
        }
    }
}
