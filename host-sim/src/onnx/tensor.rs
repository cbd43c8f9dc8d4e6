//! The interpreter's values: `f32` tensors of any rank, row-major, with ONNX's
//! (numpy's) broadcasting. Booleans are `0.0` and `1.0`; integer shapes and axes are exact
//! small integers.

/// A row-major `f32` tensor of any rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data` (the caller keeps the lengths consistent).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data }
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let len = shape.iter().product();
        Self {
            shape,
            data: vec![value; len],
        }
    }

    /// Its number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// `true` if it holds no value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Its values read as integers (shapes, axes); `None` if one is not a whole number.
    pub fn as_ints(&self) -> Option<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| (v.fract() == 0.0 && v.abs() < 1e15).then_some(v as i64))
            .collect()
    }
}

/// The shape two shapes broadcast to (numpy's rule: align on the right; each pair of
/// dimensions equal, or one of them 1), or `None` if they do not.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn dim_from_right(shape: &[usize], from_right: usize) -> usize {
    if from_right < shape.len() {
        shape[shape.len() - 1 - from_right]
    } else {
        1
    }
}

/// For each position of `out` (row-major), the index into a tensor of `shape` broadcast to
/// it.
pub fn broadcast_indices(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    // The stride of each output axis in the source (0 where the source is broadcast).
    let mut strides = vec![0usize; rank];
    let mut stride = 1;
    for i in (0..rank).rev() {
        let from_right = rank - 1 - i;
        let d = dim_from_right(shape, from_right);
        strides[i] = if d == 1 { 0 } else { stride };
        stride *= d;
    }
    let total: usize = out.iter().product();
    let mut indices = Vec::with_capacity(total);
    let mut pos = vec![0usize; rank];
    for _ in 0..total {
        indices.push(pos.iter().zip(&strides).map(|(p, s)| p * s).sum());
        for axis in (0..rank).rev() {
            pos[axis] += 1;
            if pos[axis] < out[axis] {
                break;
            }
            pos[axis] = 0;
        }
    }
    indices
}

/// Applies `f` lane by lane to `a` and `b` broadcast together; `None` if their shapes do not
/// broadcast.
pub fn zip_with(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Option<Tensor> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| f(a.data[i], b.data[j]))
        .collect();
    Some(Tensor::new(shape, data))
}

/// `cond ? a : b` lane by lane, the three broadcast together.
pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let shape = broadcast_shape(&broadcast_shape(&cond.shape, &a.shape)?, &b.shape)?;
    let ic = broadcast_indices(&cond.shape, &shape);
    let ia = broadcast_indices(&a.shape, &shape);
    let ib = broadcast_indices(&b.shape, &shape);
    let data = (0..ic.len())
        .map(|k| {
            if cond.data[ic[k]] != 0.0 {
                a.data[ia[k]]
            } else {
                b.data[ib[k]]
            }
        })
        .collect();
    Some(Tensor::new(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1], &[1, 4]), Some(vec![2, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
        let a = Tensor::new(vec![2, 1], vec![1.0, 2.0]);
        let b = Tensor::new(vec![3], vec![10.0, 20.0, 30.0]);
        let s = zip_with(&a, &b, |x, y| x + y).unwrap();
        assert_eq!(s.shape, vec![2, 3]);
        assert_eq!(s.data, vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }

    #[test]
    fn batched_matmul_broadcasts_the_leading_axes() {
        use crate::onnx::{eval, Graph, Input, Node};
        // [2, 2, 3] x [1, 3, 2]: each of A's two matrices times B's one.
        let graph = Graph {
            inputs: vec![Input {
                name: "a".into(),
                dims: vec![Some(2), Some(2), Some(3)],
            }],
            outputs: vec!["y".into()],
            initializers: vec![(
                "b".into(),
                Tensor::new(vec![1, 3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
            )],
            nodes: vec![Node {
                name: "mm".into(),
                op_type: "MatMul".into(),
                inputs: vec!["a".into(), "b".into()],
                outputs: vec!["y".into()],
                attrs: Default::default(),
            }],
            opset: 17,
        };
        let a = Tensor::new(vec![2, 2, 3], (1..=12).map(|v| v as f32).collect());
        let y = eval::run(&graph, &[a]).unwrap().remove(0);
        assert_eq!(y.shape, vec![2, 2, 2]);
        // Row [x0, x1, x2] times B = [x0 + x2, x1 + x2].
        assert_eq!(y.data, vec![4.0, 5.0, 10.0, 11.0, 16.0, 17.0, 22.0, 23.0]);
    }
}
