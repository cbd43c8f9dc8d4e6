//! NaN provenance: the first node that produced a non-finite value from finite inputs.

use core::fmt;

use crate::graph::{Node, NodeId};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape};

/// Where a non-finite value first appeared, with what fed it: the NaN-provenance check.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Provenance<T> {
    /// The node that produced it from finite inputs (recording order).
    pub node: NodeId,
    /// Its op's name.
    pub op: &'static str,
    /// The first non-finite position in the node's values (row-major).
    pub index: usize,
    /// The value there.
    pub value: T,
    /// The inputs' values at the same position, for inputs of the node's shape (an
    /// elementwise op's operands); `None` for other inputs.
    pub inputs: [Option<T>; 3],
}

impl<T: fmt::Display> fmt::Display for Provenance<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} ({}) produced {} at position {} from finite inputs",
            self.node, self.op, self.value, self.index
        )?;
        let mut first = true;
        for v in self.inputs.iter().flatten() {
            write!(f, "{}{v}", if first { ": operands " } else { ", " })?;
            first = false;
        }
        Ok(())
    }
}

/// The first node, in recording order, among those `output` depends on (itself included),
/// with a non-finite value whose inputs are all finite; `None` if all their values are
/// finite. One pass over the nodes and their values: cheap enough to run after every
/// forward on the device.
///
/// ```
/// use safegrad::audit::first_non_finite;
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 32>>::new();
/// let x = tape.input(&Tensor::new([[1.0, 0.0]]))?;
/// let y = tape.input(&Tensor::new([[2.0, 0.0]]))?;
/// let q = tape.div(x, y)?; // 0 / 0 in the second lane
/// let e = tape.exp(q)?;
/// let p = first_non_finite(&tape, e.node()).unwrap();
/// assert_eq!((p.node, p.op, p.index), (q.node(), "div", 1));
/// assert_eq!(p.inputs, [Some(0.0), Some(0.0), None]);
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub fn first_non_finite<T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    output: NodeId,
) -> Option<Provenance<T>> {
    let nodes = tape.nodes();
    // The nodes `output` depends on: marked backwards from it.
    let mut feeds = Mem::per_node(false);
    if let Some(f) = feeds.get_mut(output.0) {
        *f = true;
    }
    for i in (0..nodes.len().min(output.0 + 1)).rev() {
        if !feeds.get(i).copied().unwrap_or(false) {
            continue;
        }
        let inputs = nodes.get(i).map_or([None; 3], |n| n.op().inputs());
        for id in inputs.iter().flatten() {
            if let Some(f) = feeds.get_mut(id.0) {
                *f = true;
            }
        }
    }
    let all_finite = |n: &Node<T>| tape.values_of(n).iter().all(|v| v.is_finite());
    for (i, node) in nodes.iter().enumerate() {
        if !feeds.get(i).copied().unwrap_or(false) {
            continue;
        }
        let values = tape.values_of(node);
        let Some(index) = values.iter().position(|v| !v.is_finite()) else {
            continue;
        };
        let inputs = node.op().inputs();
        let inputs_finite = inputs
            .iter()
            .flatten()
            .all(|id| nodes.get(id.0).is_some_and(all_finite));
        if !inputs_finite {
            continue;
        }
        let at = |id: Option<NodeId>| {
            let n = nodes.get(id?.0)?;
            (n.shape() == node.shape()).then(|| tape.values_of(n).get(index).copied())?
        };
        return Some(Provenance {
            node: NodeId(i),
            op: node.op().name(),
            index,
            value: values.get(index).copied().unwrap_or(T::ZERO),
            inputs: [at(inputs[0]), at(inputs[1]), at(inputs[2])],
        });
    }
    None
}
