//! Loading the data sets in `data/` (see `data/README.md` for their provenance).
//!
//! Every malformed line is refused with the file, the line number and what was wrong; a
//! value that is not finite or a label out of range is malformed.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use motion::features::IMU_CHANNELS;
/// Classes of BasicMotions (the motion model's): 0 Standing, 1 Running, 2 Walking,
/// 3 Badminton.
pub use motion::model::CLASSES as MOTION_CLASSES;
/// Names of the BasicMotions classes, by label.
pub use motion::model::CLASS_NAMES as MOTION_NAMES;

/// Pixels of a digits image (8 x 8).
pub const DIGIT_PIXELS: usize = 64;
/// Classes of the digits data set.
pub const DIGIT_CLASSES: usize = 10;
/// Samples per channel of a BasicMotions recording (10 s at 10 Hz): a window of the
/// device's sample stream.
pub const MOTION_LEN: usize = motion::samples::WINDOW_LEN;

/// One BasicMotions recording: `ax, ay, az, gx, gy, gz`, 100 samples each.
pub type MotionWindow = [[f32; MOTION_LEN]; IMU_CHANNELS];

/// A labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example<X> {
    /// The input.
    pub x: X,
    /// The class.
    pub label: usize,
}

/// A data file that could not be read or parsed.
#[derive(Debug)]
pub struct DataError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, 0 for the file as a whole.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for DataError {}

/// The folder of the data sets shipped with the repository.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
}

/// Parses a CSV with a header line: each row is a label in `0..classes` and `width`
/// finite numbers.
pub fn parse_rows(
    path: &Path,
    text: &str,
    width: usize,
    classes: usize,
) -> Result<Vec<Example<Vec<f32>>>, DataError> {
    let err = |line: usize, message: String| DataError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(',');
        let label_text = fields.next().unwrap_or("").trim();
        let label: usize = label_text
            .parse()
            .map_err(|_| err(n, format!("label {label_text:?} is not a class number")))?;
        if label >= classes {
            return Err(err(n, format!("label {label} out of range 0..{classes}")));
        }
        let mut x = Vec::with_capacity(width);
        for (k, field) in fields.enumerate() {
            let v: f32 = field
                .trim()
                .parse()
                .map_err(|_| err(n, format!("value {} ({field:?}) is not a number", k + 1)))?;
            if !v.is_finite() {
                return Err(err(n, format!("value {} is not finite ({v})", k + 1)));
            }
            x.push(v);
        }
        if x.len() != width {
            return Err(err(
                n,
                format!("expected {width} values after the label, found {}", x.len()),
            ));
        }
        rows.push(Example { x, label });
    }
    if rows.is_empty() {
        return Err(err(0, "no data rows".into()));
    }
    Ok(rows)
}

fn read(path: &Path) -> Result<String, DataError> {
    fs::read_to_string(path).map_err(|e| DataError {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// The handwritten digits: 1797 images, pixel counts `0..=16` scaled to `[0, 1]`.
pub fn load_digits(dir: &Path) -> Result<Vec<Example<[f32; DIGIT_PIXELS]>>, DataError> {
    let path = dir.join("digits.csv");
    let rows = parse_rows(&path, &read(&path)?, DIGIT_PIXELS, DIGIT_CLASSES)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut x = [0.0f32; DIGIT_PIXELS];
            for (dst, v) in x.iter_mut().zip(r.x) {
                *dst = v / 16.0;
            }
            Example { x, label: r.label }
        })
        .collect())
}

/// A split of BasicMotions, `"train"` or `"test"`: 40 recordings each.
pub fn load_motions(dir: &Path, split: &str) -> Result<Vec<Example<MotionWindow>>, DataError> {
    let path = dir.join(format!("basicmotions_{split}.csv"));
    let rows = parse_rows(
        &path,
        &read(&path)?,
        IMU_CHANNELS * MOTION_LEN,
        MOTION_CLASSES,
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut w = [[0.0f32; MOTION_LEN]; IMU_CHANNELS];
            for (channel, values) in w.iter_mut().zip(r.x.chunks_exact(MOTION_LEN)) {
                channel.copy_from_slice(values);
            }
            Example {
                x: w,
                label: r.label,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Example<Vec<f32>>>, DataError> {
        parse_rows(Path::new("t.csv"), text, 2, 3)
    }

    #[test]
    fn parses_rows_and_refuses_malformed_ones_with_their_line() {
        let ok = parse("label,a,b\n0,1.5,2\n2,-1,0\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].x, vec![-1.0, 0.0]);
        let cases = [
            ("label,a,b\n3,1,2\n", "t.csv:2: label 3 out of range 0..3"),
            (
                "label,a,b\n0,1,2\nx,1,2\n",
                "t.csv:3: label \"x\" is not a class number",
            ),
            (
                "label,a,b\n0,1\n",
                "t.csv:2: expected 2 values after the label, found 1",
            ),
            (
                "label,a,b\n0,1,nan\n",
                "t.csv:2: value 2 is not finite (NaN)",
            ),
            (
                "label,a,b\n0,1,zz\n",
                "t.csv:2: value 2 (\"zz\") is not a number",
            ),
            ("label,a,b\n", "t.csv: no data rows"),
        ];
        for (text, message) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn the_shipped_data_sets_load() {
        let dir = default_dir();
        let digits = load_digits(&dir).unwrap();
        assert_eq!(digits.len(), 1797);
        assert!(digits
            .iter()
            .all(|d| d.x.iter().all(|&p| (0.0..=1.0).contains(&p))));
        for split in ["train", "test"] {
            let m = load_motions(&dir, split).unwrap();
            assert_eq!(m.len(), 40);
            for class in 0..MOTION_CLASSES {
                assert_eq!(m.iter().filter(|e| e.label == class).count(), 10);
            }
        }
    }
}
