//! Fixed-shape tensors: `R` rows by `C` columns, both known at compile time.
//!
//! A [`Tensor`] owns its values row-major in a `[[T; C]; R]`: no heap, no runtime shape, and
//! an operation between incompatible shapes does not compile. The numeric kernels in
//! [`kernels`] work on flat row-major slices, so the [`Tape`](crate::Tape) (whose storage is
//! one flat buffer) and [`Tensor`] run the very same loops, in the same order.

use crate::scalar::Scalar;

/// A matrix of `R` rows and `C` columns (a row vector is `Tensor<T, 1, C>`, a scalar
/// `Tensor<T, 1, 1>`).
///
/// ```
/// use safegrad::Tensor;
///
/// let x = Tensor::new([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
/// let w = Tensor::new([[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]);
/// let y = x.matmul(&w); // (2x3) * (3x2) = 2x2
/// assert_eq!(y, Tensor::new([[4.0, 5.0], [10.0, 11.0]]));
/// assert_eq!(y.transpose().get(1, 0), Some(5.0));
/// assert_eq!(x.sum(), 21.0);
/// ```
///
/// The inner dimensions of a matrix product must agree, or the program does not compile:
///
/// ```compile_fail
/// use safegrad::Tensor;
///
/// let a = Tensor::<f32, 2, 3>::zeros();
/// let b = Tensor::<f32, 4, 2>::zeros();
/// let _ = a.matmul(&b); // expected `Tensor<f32, 3, _>`, found `Tensor<f32, 4, 2>`
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tensor<T, const R: usize, const C: usize> {
    rows: [[T; C]; R],
}

impl<T: Scalar, const R: usize, const C: usize> Default for Tensor<T, R, C> {
    fn default() -> Self {
        Self::zeros()
    }
}

impl<T: Scalar, const R: usize, const C: usize> Tensor<T, R, C> {
    /// Number of values, `R * C`.
    pub const LEN: usize = R * C;

    /// A tensor from its rows.
    pub const fn new(rows: [[T; C]; R]) -> Self {
        Self { rows }
    }

    /// All zeros.
    pub fn zeros() -> Self {
        Self::full(T::ZERO)
    }

    /// Every value equal to `value`.
    pub fn full(value: T) -> Self {
        Self {
            rows: [[value; C]; R],
        }
    }

    /// Each value computed from its `(row, column)`.
    ///
    /// ```
    /// use safegrad::Tensor;
    ///
    /// let eye = Tensor::<f64, 2, 2>::from_fn(|r, c| if r == c { 1.0 } else { 0.0 });
    /// assert_eq!(eye, Tensor::new([[1.0, 0.0], [0.0, 1.0]]));
    /// ```
    pub fn from_fn(mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut out = Self::zeros();
        for (r, row) in out.rows.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f(r, c);
            }
        }
        out
    }

    /// A tensor from `R * C` row-major values; `None` if the slice has another length.
    ///
    /// ```
    /// use safegrad::Tensor;
    ///
    /// let t = Tensor::<f32, 2, 2>::from_slice(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    /// assert_eq!(t.get(1, 0), Some(3.0));
    /// assert!(Tensor::<f32, 2, 2>::from_slice(&[1.0]).is_none());
    /// ```
    pub fn from_slice(values: &[T]) -> Option<Self> {
        if values.len() != R * C {
            return None;
        }
        let mut out = Self::zeros();
        out.as_mut_slice().copy_from_slice(values);
        Some(out)
    }

    /// The rows.
    pub const fn rows(&self) -> &[[T; C]; R] {
        &self.rows
    }

    /// The values in row-major order.
    pub fn as_slice(&self) -> &[T] {
        self.rows.as_flattened()
    }

    /// The values in row-major order, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.rows.as_flattened_mut()
    }

    /// The value at `(row, column)`, or `None` outside the shape.
    pub fn get(&self, row: usize, column: usize) -> Option<T> {
        self.rows.get(row).and_then(|r| r.get(column)).copied()
    }

    /// `f` applied to every value.
    pub fn map(&self, mut f: impl FnMut(T) -> T) -> Self {
        let mut out = *self;
        out.as_mut_slice().iter_mut().for_each(|v| *v = f(*v));
        out
    }

    /// `f` applied to every pair of values at the same position.
    pub fn zip_map(&self, other: &Self, mut f: impl FnMut(T, T) -> T) -> Self {
        let mut out = *self;
        for (o, b) in out.as_mut_slice().iter_mut().zip(other.as_slice()) {
            *o = f(*o, *b);
        }
        out
    }

    /// Elementwise sum.
    pub fn add(&self, other: &Self) -> Self {
        self.zip_map(other, |a, b| a + b)
    }

    /// Elementwise difference.
    pub fn sub(&self, other: &Self) -> Self {
        self.zip_map(other, |a, b| a - b)
    }

    /// Elementwise (Hadamard) product.
    pub fn mul(&self, other: &Self) -> Self {
        self.zip_map(other, |a, b| a * b)
    }

    /// Every value times `factor`.
    pub fn scale(&self, factor: T) -> Self {
        self.map(|v| v * factor)
    }

    /// The row vector `row` added to every row (broadcasting, as a bias is added).
    ///
    /// ```
    /// use safegrad::Tensor;
    ///
    /// let x = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]);
    /// let b = Tensor::new([[10.0f32, 20.0]]);
    /// assert_eq!(x.add_row(&b), Tensor::new([[11.0, 22.0], [13.0, 24.0]]));
    /// ```
    pub fn add_row(&self, row: &Tensor<T, 1, C>) -> Self {
        let mut out = *self;
        kernels::add_row(self.as_slice(), row.as_slice(), out.as_mut_slice());
        out
    }

    /// Matrix product `self (R x C) * other (C x N)`, an `R x N` tensor.
    pub fn matmul<const N: usize>(&self, other: &Tensor<T, C, N>) -> Tensor<T, R, N> {
        let mut out = Tensor::<T, R, N>::zeros();
        kernels::matmul(self.as_slice(), other.as_slice(), out.as_mut_slice(), C, N);
        out
    }

    /// The transpose, `C x R`.
    pub fn transpose(&self) -> Tensor<T, C, R> {
        let mut out = Tensor::<T, C, R>::zeros();
        kernels::transpose(self.as_slice(), out.as_mut_slice(), R, C);
        out
    }

    /// Sum of all values, added in row-major order.
    pub fn sum(&self) -> T {
        kernels::sum(self.as_slice())
    }

    /// Mean of all values (`nan` for an empty tensor).
    pub fn mean(&self) -> T {
        self.sum() / T::from_usize(R * C)
    }

    /// Largest value; `nan` if any value is `nan`, `-inf` for an empty tensor.
    pub fn max(&self) -> T {
        kernels::max(self.as_slice())
    }

    /// `true` when no value is `nan` or infinite.
    pub fn is_finite(&self) -> bool {
        self.as_slice().iter().all(|v| v.is_finite())
    }
}

/// Kernels on flat row-major slices: the loops every op and layer runs, on the host and on the
/// device alike (see the module's own documentation).
pub mod kernels;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_the_definition() {
        let a = Tensor::<f64, 3, 4>::from_fn(|r, c| (r * 4 + c) as f64 - 5.0);
        let b = Tensor::<f64, 4, 2>::from_fn(|r, c| (r as f64) * 0.5 - (c as f64));
        let p = a.matmul(&b);
        for r in 0..3 {
            for c in 0..2 {
                let mut expected = 0.0;
                for k in 0..4 {
                    expected += a.rows()[r][k] * b.rows()[k][c];
                }
                assert_eq!(p.get(r, c), Some(expected));
            }
        }
    }

    #[test]
    fn transpose_swaps_indices_and_is_an_involution() {
        let a = Tensor::<f32, 2, 3>::from_fn(|r, c| (10 * r + c) as f32);
        let t = a.transpose();
        for r in 0..2 {
            for c in 0..3 {
                assert_eq!(t.get(c, r), a.get(r, c));
            }
        }
        assert_eq!(t.transpose(), a);
    }

    #[test]
    fn reductions() {
        let a = Tensor::new([[1.0f32, -2.0], [3.5, 0.5]]);
        assert_eq!(a.sum(), 3.0);
        assert_eq!(a.mean(), 0.75);
        assert_eq!(a.max(), 3.5);
        let with_nan = Tensor::new([[1.0f32, f32::NAN, 3.0]]);
        assert!(with_nan.max().is_nan());
        let first_nan = Tensor::new([[f32::NAN, 1.0]]);
        assert!(first_nan.max().is_nan());
        assert_eq!(Tensor::<f32, 0, 3>::zeros().max(), f32::NEG_INFINITY);
        assert!(!with_nan.is_finite());
        assert!(a.is_finite());
    }

    #[test]
    fn elementwise_and_broadcast() {
        let a = Tensor::new([[1.0f32, 2.0], [3.0, 4.0]]);
        let b = Tensor::new([[0.5f32, -1.0], [2.0, 0.0]]);
        assert_eq!(a.add(&b), Tensor::new([[1.5, 1.0], [5.0, 4.0]]));
        assert_eq!(a.sub(&b), Tensor::new([[0.5, 3.0], [1.0, 4.0]]));
        assert_eq!(a.mul(&b), Tensor::new([[0.5, -2.0], [6.0, 0.0]]));
        assert_eq!(a.scale(-2.0), Tensor::new([[-2.0, -4.0], [-6.0, -8.0]]));
        let row = Tensor::new([[1.0f32, -1.0]]);
        assert_eq!(a.add_row(&row), Tensor::new([[2.0, 1.0], [4.0, 3.0]]));
        assert_eq!(a.get(2, 0), None);
        assert_eq!(a.get(0, 2), None);
    }
}
