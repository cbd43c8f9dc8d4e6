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
}

impl<T: Copy, const F: usize> Samples<T, F> for [([T; F], usize)] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        self.get(i).copied()
    }
}

impl<T: Copy, const F: usize, const K: usize> Samples<T, F> for heapless::Vec<([T; F], usize), K> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn row(&self, i: usize) -> Option<([T; F], usize)> {
        self.as_slice().get(i).copied()
    }
}
