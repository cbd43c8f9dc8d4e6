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

/// One fold of `data` split `folds` ways (row `i` falls in fold `i % folds`): its rows, or
/// every row but its rows. The two parts of k-fold cross-validation, read in place.
///
/// ```
/// use safegrad::train::{Fold, Samples};
///
/// let rows = [([0.0f32], 0), ([1.0], 1), ([2.0], 0), ([3.0], 1), ([4.0], 0)];
/// let held = Fold::held_out(&rows[..], 3, 1);
/// let rest = Fold::rest(&rows[..], 3, 1);
/// assert_eq!((held.len(), rest.len()), (2, 3));
/// assert_eq!((held.row(0), held.row(1), held.row(2)), (Some(([1.0], 1)), Some(([4.0], 0)), None));
/// let rest: Vec<_> = (0..3).filter_map(|j| rest.row(j)).map(|(x, _)| x[0]).collect();
/// assert_eq!(rest, [0.0, 2.0, 3.0]);
/// ```
#[derive(Debug)]
pub struct Fold<'a, D: ?Sized> {
    data: &'a D,
    folds: usize,
    fold: usize,
    held_out: bool,
}

impl<D: ?Sized> Clone for Fold<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: ?Sized> Copy for Fold<'_, D> {}

impl<'a, D: ?Sized> Fold<'a, D> {
    /// The rows of fold `fold` of `folds` (none if `fold >= folds`).
    pub fn held_out(data: &'a D, folds: usize, fold: usize) -> Self {
        Self {
            data,
            folds,
            fold,
            held_out: true,
        }
    }

    /// Every row outside fold `fold` of `folds` (every row if `fold >= folds`).
    pub fn rest(data: &'a D, folds: usize, fold: usize) -> Self {
        Self {
            data,
            folds,
            fold,
            held_out: false,
        }
    }

    /// The index in `data` of this part's row `j`, if it has one among `rows` rows.
    fn index(&self, j: usize, rows: usize) -> Option<usize> {
        let k = self.folds;
        if k == 0 || self.fold >= k {
            return if self.held_out || j >= rows {
                None
            } else {
                Some(j)
            };
        }
        let i = if self.held_out {
            j.checked_mul(k)?.checked_add(self.fold)?
        } else if k == 1 {
            return None;
        } else {
            let (block, r) = (j / (k - 1), j % (k - 1));
            block * k + r + usize::from(r >= self.fold)
        };
        (i < rows).then_some(i)
    }

    /// Rows of `rows` in fold `fold` of `folds`.
    fn held_len(rows: usize, folds: usize, fold: usize) -> usize {
        if folds == 0 || fold >= folds || rows <= fold {
            0
        } else {
            (rows - fold).div_ceil(folds)
        }
    }
}

impl<T, D: Samples<T, F> + ?Sized, const F: usize> Samples<T, F> for Fold<'_, D> {
    fn len(&self) -> usize {
        let rows = self.data.len();
        let held = Self::held_len(rows, self.folds, self.fold);
        if self.held_out {
            held
        } else {
            rows - held
        }
    }

    fn row(&self, j: usize) -> Option<([T; F], usize)> {
        self.data.row(self.index(j, self.data.len())?)
    }

    fn read_into(&self, j: usize, out: &mut [T]) -> Option<usize> {
        self.data.read_into(self.index(j, self.data.len())?, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::indexing_slicing)]
    fn a_fold_and_its_rest_split_the_rows_as_i_mod_k_says() {
        let rows: [([f32; 1], usize); 13] = core::array::from_fn(|i| ([i as f32], i % 3));
        for n in 0..=13 {
            let data = &rows[..n];
            for folds in 0..6 {
                for fold in 0..7 {
                    let held = Fold::held_out(data, folds, fold);
                    let rest = Fold::rest(data, folds, fold);
                    let in_fold = |i: usize| folds > 0 && fold < folds && i % folds == fold;
                    let expect_held: heapless::Vec<usize, 13> =
                        (0..n).filter(|&i| in_fold(i)).collect();
                    let expect_rest: heapless::Vec<usize, 13> =
                        (0..n).filter(|&i| !in_fold(i)).collect();
                    let seen = |part: &Fold<'_, [([f32; 1], usize)]>| -> heapless::Vec<usize, 13> {
                        (0..part.len() + 2)
                            .filter_map(|j| part.row(j))
                            .map(|(x, _)| x[0] as usize)
                            .collect()
                    };
                    assert_eq!(seen(&held), expect_held, "n {n}, fold {fold} of {folds}");
                    assert_eq!(seen(&rest), expect_rest, "n {n}, fold {fold} of {folds}");
                    assert_eq!(held.len(), expect_held.len());
                    assert_eq!(rest.len(), expect_rest.len());
                    let mut out = [0.0f32];
                    for (j, &i) in expect_rest.iter().enumerate() {
                        assert_eq!(rest.read_into(j, &mut out), Some(i % 3));
                        assert_eq!(out[0] as usize, i);
                    }
                }
            }
        }
    }
}
