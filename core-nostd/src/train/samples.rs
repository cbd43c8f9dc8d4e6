//! Where training reads its rows from.

/// Rows of `F` features with a class each, read by index: what the training loops
/// ([`epoch`](super::epoch), [`count_correct`](super::count_correct), a
/// [`Session`](crate::session::Session)) train and evaluate on. Implemented for slices and
/// `heapless::Vec`s of `([T; F], usize)`, and for a data set read in place from flash
/// ([`dataset::Dataset`](crate::dataset::Dataset)).
///
/// ```
/// use safegrad::train::Samples;
///
/// let rows = [([1.0f32, 2.0], 0), ([3.0, 4.0], 1)];
/// assert_eq!(Samples::len(&rows[..]), 2);
/// assert_eq!(rows[..].row(1), Some(([3.0, 4.0], 1)));
/// assert_eq!(rows[..].row(2), None);
/// let mut out = [0.0f32; 2];
/// assert_eq!(rows[..].read_into(1, &mut out), Some(1));
/// assert_eq!(out, [3.0, 4.0]);
/// ```
pub trait Samples<T, const F: usize> {
    /// Number of rows.
    fn len(&self) -> usize;

    /// `true` without rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`: its features and its class, or `None` past the end.
    fn row(&self, i: usize) -> Option<([T; F], usize)>;

    /// Writes row `i`'s features into `out` (its first `F` values) and returns its class, or
    /// `None` past the end. The training loops read rows through it, straight into the
    /// tape: a source that overrides it (all of this crate's do) never copies a row on the
    /// stack, which matters for a raw window of hundreds of values on a microcontroller.
    fn read_into(&self, i: usize, out: &mut [T]) -> Option<usize> {
        let (x, label) = self.row(i)?;
        for (o, v) in out.iter_mut().zip(x) {
            *o = v;
        }
        Some(label)
    }
}

impl<T: Copy, const F: usize> Samples<T, F> for [([T; F], usize)] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        self.get(i).copied()
    }

    fn read_into(&self, i: usize, out: &mut [T]) -> Option<usize> {
        let (x, label) = self.get(i)?;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v;
        }
        Some(*label)
    }
}

impl<T: Copy, const F: usize, const K: usize> Samples<T, F> for heapless::Vec<([T; F], usize), K> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        self.as_slice().get(i).copied()
    }

    fn read_into(&self, i: usize, out: &mut [T]) -> Option<usize> {
        self.as_slice().read_into(i, out)
    }
}
