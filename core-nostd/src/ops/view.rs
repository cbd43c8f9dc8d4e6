//! Views: a node that reads its operand's values in another shape, without copying them.
//! A view shares its operand's value slots and gradient slots, so it costs a node and no
//! memory; its backward has nothing to do (the gradient written to it is its operand's).
//! Flattening a `channels x length` activation for a dense head, and reading a sample
//! row as `channels x length`, are views.
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 16>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]))?;
//! let v = tape.reshape::<1, 6, 2, 3>(x)?;
//! assert_eq!(tape.value(v)?, Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]));
//! let loss = tape.sum(v)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.grad(x)?, Tensor::full(1.0));
//! assert_eq!(tape.scalars_used(), 6 + 1); // x and the sum: the view holds nothing
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::Scalar;
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};

/// A view as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ViewOp {
    /// The operand's values, row-major, in another shape of the same size.
    Reshape {
        /// Operand.
        x: NodeId,
    },
}

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Records a view of the `R x C` node `x` as `R2 x C2` (the same values, row-major).
    /// Sizes that differ do not compile.
    pub fn reshape<const R: usize, const C: usize, const R2: usize, const C2: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R2, C2>, TapeError> {
        const {
            assert!(R * C == R2 * C2, "a reshape keeps the number of values");
        }
        let node = self.alias(Op::View(ViewOp::Reshape { x: x.node() }), x, R2, C2)?;
        Ok(self.var(node))
    }
}

impl<T: Scalar> OpFamily<T> for ViewOp {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let Self::Reshape { x } = *self;
        [Some(x), None, None]
    }

    /// Nothing: the view's gradient slots are its operand's.
    fn backward(&self, _: &mut Backward<'_, '_, T>) {}

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let Self::Reshape { x } = *self;
        facts.domain(x)
    }
}
