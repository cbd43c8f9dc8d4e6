//! The recorded graph (tape) and its reverse sweep.
//!
//! A [`Tape<T, Cap<N, S, G>>`](Tape) holds up to `N` nodes; their values live in one flat
//! buffer of `S` scalars, and the gradients of the nodes that need one in a second buffer of
//! `G` scalars (`G = S` unless chosen smaller). The capacities travel as one type,
//! [`Cap`], so that code generic over a tape names one parameter (`Mem: Capacity`), and a
//! model's type gives them ([`nn::Footprint`](crate::nn::Footprint)). Recording an op computes its value and appends
//! a [`Node`] naming the [`Op`](crate::Op) and its inputs; [`Tape::backward`] walks the nodes in
//! reverse and lets each op add its inputs' gradients. Nothing is allocated: a full tape
//! returns [`TapeError::NodeCapacity`], [`TapeError::ScalarCapacity`] or
//! [`TapeError::GradientCapacity`].
//!
//! A node carries a gradient only if it depends on a trainable parameter or a
//! [`variable`](Tape::variable): with a frozen body, only the trainable layers and the
//! activations after them take gradient memory.
//!
//! Parameters are recorded first and persist; [`Tape::clear_activations`] drops every node
//! after them, so the same tape is reused step after step. Parameter gradients accumulate
//! over calls to [`Tape::backward`] until [`Tape::zero_grad`].
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! // loss = sum(relu(x W + b)) for one sample, recorded afresh each step.
//! let mut tape = Tape::<f32, Cap<16, 64>>::new();
//! let w = tape.parameter(&Tensor::new([[1.0, -1.0], [0.5, 2.0]]))?;
//! let b = tape.parameter(&Tensor::new([[0.0, -0.5]]))?;
//! for _step in 0..3 {
//!     tape.clear_activations();
//!     tape.zero_grad();
//!     let x = tape.input(&Tensor::new([[2.0, 1.0]]))?;
//!     let h = tape.matmul(x, w)?;
//!     let h = tape.add_row(h, b)?;
//!     let y = tape.relu(h)?;
//!     let loss = tape.sum(y)?;
//!     tape.backward(loss)?;
//!     assert_eq!(tape.scalar(loss)?, 2.5); // relu([2.5, -0.5]) = [2.5, 0]
//! }
//! assert_eq!(tape.grad(w)?, Tensor::new([[2.0, 0.0], [1.0, 0.0]]));
//! assert_eq!(tape.grad(b)?, Tensor::new([[1.0, 0.0]]));
//! assert_eq!(tape.nodes().len(), 7); // 2 parameters + 5 activations, the same every step
//! # Ok::<(), safegrad::TapeError>(())
//! ```

mod capacity;
pub(crate) mod held;
mod record;
pub(crate) mod sweep;

pub use capacity::{Buffer, Cap, Capacity, NodeStore};
use held::OuterGrads;

use core::fmt;
use core::ops::Range;

use crate::error::TapeError;
use crate::graph::{Domain, Node, NodeId, Op};
use crate::scalar::Scalar;
use crate::tensor::Tensor;

/// A handle to an `R x C` node of a tape. It is `Copy`; the shape in its type makes
/// shape errors compile errors. A handle to an activation becomes stale when the
/// activations are cleared. A handle carries no identity of its tape: use it with the tape
/// that recorded it (another tape checks only that the index, generation and shape fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var<const R: usize, const C: usize> {
    node: NodeId,
    generation: u32,
}

impl<const R: usize, const C: usize> Var<R, C> {
    /// The node this handle names.
    pub const fn node(&self) -> NodeId {
        self.node
    }
}

/// A handle to a parameter whose shape its type does not carry: a convolution's kernel,
/// `C_OUT x (C_IN / G) x K` scalars, a size that const generics cannot compute from a
/// layer's parameters. Its length is checked wherever it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatVar {
    node: NodeId,
    generation: u32,
    len: usize,
}

impl FlatVar {
    /// The node this handle names.
    pub const fn node(&self) -> NodeId {
        self.node
    }

    /// Its number of scalars.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// `true` for a handle of no scalars.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A recorded graph of at most `Mem::NODES` nodes, `Mem::VALUES` scalar values and
/// `Mem::GRADIENTS` scalar gradients (see [`Capacity`], [`Cap`]).
///
/// Its size is the values and gradients plus the small nodes, fixed at compile time; put a large tape
/// in a `static` or on a task's stack with room for it. Frozen parameters can instead be read
/// in place, from flash ([`read_frozen_in_place`](Self::read_frozen_in_place)): they then
/// take no value slots.
// `repr(C)`, the bookkeeping first: the fields every op reads sit at small offsets from the
// tape's address, before the buffers (one load each on a Cortex-M, whatever the buffers'
// sizes).
#[repr(C)]
pub struct Tape<T: Scalar, Mem: Capacity> {
    used: usize,
    grads_used: usize,
    parameter_nodes: usize,
    parameter_slots: usize,
    parameter_grad_slots: usize,
    /// Scalars of every parameter, those read in place included.
    parameter_len: usize,
    generation: u32,
    /// A reverse sweep has run since the activations were last cleared: their gradient
    /// slots hold its gradients (before, they hold those of an earlier graph).
    swept: bool,
    /// The values frozen parameters are read from in place; a node's value slots from
    /// `Mem::VALUES` on index into it (from `VALUES + k` for the value at `k`). An `Option`, so that a new
    /// tape is all zero bytes (a `static` one goes to `.bss`, not to flash).
    in_place: Option<&'static [T]>,
    /// Weights whose gradient is not in the buffer (see [`update`]).
    outer: OuterGrads,
    nodes: Mem::Nodes<T>,
    values: Mem::Values<T>,
    grads: Mem::Gradients<T>,
}

impl<T: Scalar, Mem: Capacity> Default for Tape<T, Mem> {
    fn default() -> Self {
        let (nodes, values, grads) = Mem::storage();
        Self::with_storage(nodes, values, grads)
    }
}

impl<T: Scalar, Mem: Capacity> fmt::Debug for Tape<T, Mem> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tape")
            .field("nodes", &self.nodes.len())
            .field("node_capacity", &Mem::NODES)
            .field("scalars", &self.used)
            .field("scalar_capacity", &Mem::VALUES)
            .field("gradients", &self.grads_used)
            .field("gradient_capacity", &Mem::GRADIENTS)
            .field("parameter_nodes", &self.parameter_nodes)
            .finish()
    }
}

pub(crate) type Result<V> = core::result::Result<V, TapeError>;

/// The values of a tape's nodes: value slots below `split` are in `local` (the tape's
/// buffer), slots from `split` on in `in_place` (frozen parameters read in place).
#[derive(Clone, Copy)]
pub(crate) struct Values<'a, T> {
    local: &'a [T],
    in_place: &'a [T],
    split: usize,
}

impl<'a, T> Values<'a, T> {
    /// The values of a tape whose whole value buffer is `buffer`.
    pub(crate) const fn new(buffer: &'a [T], in_place: &'a [T]) -> Self {
        Self {
            local: buffer,
            in_place,
            split: buffer.len(),
        }
    }

    /// The values of the value slots `slots`, if they are all there.
    #[inline(always)]
    pub(crate) fn get(&self, slots: Range<usize>) -> Option<&'a [T]> {
        // The tape's own slots first: the common case costs one slice lookup.
        match self.local.get(slots.clone()) {
            Some(values) => Some(values),
            None => {
                let at = slots.start.checked_sub(self.split)?;
                self.in_place.get(at..at + slots.len())
            }
        }
    }
}

/// How a leaf is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    TrainableParameter,
    FrozenParameter,
    Variable,
    Data,
    Constant,
}

impl<T: Scalar, const N: usize, const S: usize, const G: usize> Tape<T, Cap<N, S, G>> {
    /// An empty tape. A `const fn`, so a tape can be a `static` initialised at compile time
    /// (e.g. in a `static_cell::ConstStaticCell` on a device); all zero bytes, so a
    /// `static` one goes to `.bss`, not to flash.
    pub const fn new() -> Self {
        Self {
            nodes: heapless::Vec::new(),
            values: Buffer([T::ZERO; S]),
            grads: Buffer([T::ZERO; G]),
            in_place: None,
            used: 0,
            grads_used: 0,
            parameter_nodes: 0,
            parameter_slots: 0,
            parameter_grad_slots: 0,
            parameter_len: 0,
            generation: 0,
            outer: OuterGrads::new(),
            swept: false,
        }
    }
}

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// An empty tape over the given storage.
    fn with_storage(
        nodes: Mem::Nodes<T>,
        values: Mem::Values<T>,
        grads: Mem::Gradients<T>,
    ) -> Self {
        Self {
            nodes,
            values,
            grads,
            in_place: None,
            used: 0,
            grads_used: 0,
            parameter_nodes: 0,
            parameter_slots: 0,
            parameter_grad_slots: 0,
            parameter_len: 0,
            generation: 0,
            outer: OuterGrads::new(),
            swept: false,
        }
    }

    /// Makes the frozen parameters recorded from now on read their values in place from
    /// `params` instead of copying them into the tape: on a microcontroller, `params` is the
    /// parameter block of a checkpoint in flash
    /// ([`checkpoint::parameters_in_place`](crate::checkpoint::parameters_in_place)), and the
    /// frozen layers then take no RAM. `params` holds every parameter of the model, trainable
    /// and frozen, in recording order: a frozen parameter reads the values at its position
    /// (the values its builder passes are not used); trainable parameters are held in the
    /// tape as usual (a checkpoint load fills them). Call it before recording any parameter;
    /// non-finite values are refused.
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// static PARAMS: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 0.5, -0.5];
    /// let mut tape = Tape::<f32, Cap<8, 16>>::new();
    /// tape.read_frozen_in_place(&PARAMS)?;
    /// let w = tape.frozen_parameter(&Tensor::<f32, 2, 2>::zeros())?; // PARAMS[0..4]
    /// let b = tape.parameter(&Tensor::new([[0.0, 0.0]]))?; // held: PARAMS[4..6] unused
    /// assert_eq!(tape.value(w)?, Tensor::new([[1.0, 2.0], [3.0, 4.0]]));
    /// assert_eq!((tape.parameters().len(), tape.parameter_len()), (2, 6));
    /// assert!(tape.set_parameter(w, &Tensor::zeros()).is_err()); // read-only
    /// # let _ = b;
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn read_frozen_in_place(&mut self, params: &'static [T]) -> Result<()> {
        if self.parameter_nodes > 0 {
            return Err(TapeError::InPlaceAfterParameters);
        }
        if let Some(index) = params.iter().position(|v| !v.is_finite()) {
            return Err(TapeError::InPlaceNonFinite { index });
        }
        self.in_place = Some(params);
        Ok(())
    }

    /// `true` once [`read_frozen_in_place`](Self::read_frozen_in_place) has given the values
    /// frozen parameters are read from.
    pub const fn reads_frozen_in_place(&self) -> bool {
        self.in_place.is_some()
    }

    /// Records an `R x C` frozen parameter read in place, without an initial value (what
    /// the layers' builders record for a frozen layer when
    /// [`reads_frozen_in_place`](Self::reads_frozen_in_place)): the values at its position
    /// among all parameter scalars. [`TapeError::InPlaceRange`] if they are not there (or
    /// no values were given).
    pub fn frozen_parameter_in_place<const R: usize, const C: usize>(
        &mut self,
    ) -> Result<Var<R, C>> {
        if self.nodes.len() != self.parameter_nodes {
            return Err(TapeError::ParameterAfterActivation);
        }
        let params = self.in_place.unwrap_or(&[]);
        self.in_place_leaf(params, R, C).map(|node| self.var(node))
    }

    /// `true` for a frozen parameter read in place (see
    /// [`read_frozen_in_place`](Self::read_frozen_in_place)).
    pub const fn is_in_place(&self, node: &Node<T>) -> bool {
        node.offset >= Mem::VALUES
    }

    /// The values of every node, those read in place included.
    pub(crate) fn view(&self) -> Values<'_, T> {
        Values::new(&self.values, self.in_place.unwrap_or(&[]))
    }

    // -- bookkeeping ------------------------------------------------------------------------

    /// The recorded nodes, in recording order (parameters first).
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// The node `id`, if recorded.
    pub fn node(&self, id: NodeId) -> Option<&Node<T>> {
        self.nodes.get(id.0)
    }

    /// Value slots in use (parameters and activations).
    pub const fn scalars_used(&self) -> usize {
        self.used
    }

    /// Gradient slots in use (trainable parameters and the activations that depend on them).
    pub const fn gradients_used(&self) -> usize {
        self.grads_used
    }

    /// Empties the tape: every node, parameters included, and the values frozen parameters
    /// were read in place from (handles of the old nodes become stale).
    pub fn reset(&mut self) {
        self.nodes.truncate(0);
        self.in_place = None;
        self.outer.clear();
        self.used = 0;
        self.grads_used = 0;
        self.parameter_nodes = 0;
        self.parameter_slots = 0;
        self.parameter_grad_slots = 0;
        self.parameter_len = 0;
        self.swept = false;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Drops every node recorded after the parameters, invalidating their handles. The
    /// parameters, their values and their accumulated gradients stay (gradients a step's
    /// sweep holds as outer products are written out first).
    pub fn clear_activations(&mut self) {
        if self.outer.is_held() {
            self.write_outer_grads();
        }
        self.nodes.truncate(self.parameter_nodes);
        self.nodes.iter_mut().for_each(|n| n.uses = 0);
        self.swept = false;
        self.used = self.parameter_slots;
        self.grads_used = self.parameter_grad_slots;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        if let Some(g) = self.grads.get_mut(..self.parameter_grad_slots) {
            g.iter_mut().for_each(|v| *v = T::ZERO);
        }
        self.outer.clear();
    }

    /// The parameter values the tape holds, trainable and frozen, in recording order, flat.
    /// Without frozen parameters read in place, these are all of them (what a checkpoint
    /// stores); those read in place are not among them.
    pub fn parameters(&self) -> &[T] {
        self.values.get(..self.parameter_slots).unwrap_or(&[])
    }

    /// The parameter values the tape holds, mutable.
    pub fn parameters_mut(&mut self) -> &mut [T] {
        self.values
            .get_mut(..self.parameter_slots)
            .unwrap_or(&mut [])
    }

    /// Scalars of every parameter, trainable and frozen, those read in place included (what
    /// a checkpoint stores).
    pub const fn parameter_len(&self) -> usize {
        self.parameter_len
    }

    /// The parameter nodes, in recording order.
    pub fn parameter_nodes(&self) -> &[Node<T>] {
        self.nodes.get(..self.parameter_nodes).unwrap_or(&[])
    }

    /// Sets every parameter the tape holds from `value(i)`, `i` its index among all
    /// parameter scalars in recording order (those read in place keep their values).
    pub(crate) fn set_held_parameters(&mut self, mut value: impl FnMut(usize) -> T) {
        let mut index = 0;
        for node in self.nodes.get(..self.parameter_nodes).unwrap_or(&[]) {
            if let Some(values) = self.values.get_mut(node.slots()) {
                for (k, v) in values.iter_mut().enumerate() {
                    *v = value(index + k);
                }
            }
            index += node.len();
        }
    }

    /// Number of trainable scalars: the length of [`parameter_grads`](Self::parameter_grads)
    /// and of an optimiser's state.
    pub const fn trainable_len(&self) -> usize {
        self.parameter_grad_slots
    }

    /// The gradients of the trainable parameters, in recording order;
    /// [`TapeError::GradientConsumed`] if a training step did not keep some of them.
    pub fn parameter_grads(&self) -> Result<&[T]> {
        if let Some(node) = self.outer.first_node() {
            return Err(TapeError::GradientConsumed { node });
        }
        Ok(self.grads.get(..self.parameter_grad_slots).unwrap_or(&[]))
    }

    /// Calls `f(i, value, gradient)` for every trainable scalar, `i` counting from 0 in
    /// recording order (the index into an optimiser's state).
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 16>>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, 2.0]]))?;
    /// let frozen = tape.frozen_parameter(&Tensor::new([[5.0]]))?;
    /// let y = tape.mul(w, w)?;
    /// let loss = tape.sum(y)?;
    /// tape.backward(loss)?;
    /// tape.update_parameters(|_, p, g| *p -= 0.25 * g); // SGD
    /// assert_eq!(tape.value(w)?, Tensor::new([[0.5, 1.0]]));
    /// assert_eq!(tape.value(frozen)?, Tensor::new([[5.0]]));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn update_parameters(&mut self, mut f: impl FnMut(usize, &mut T, T)) {
        let params = self.nodes.get(..self.parameter_nodes).unwrap_or(&[]);
        for node in params {
            let Some(grad_slots) = node.grad_slots() else {
                continue;
            };
            let values = self.values.get_mut(node.slots()).unwrap_or(&mut []);
            let grads = self.grads.get(grad_slots.clone()).unwrap_or(&[]);
            for (k, (p, &g)) in values.iter_mut().zip(grads).enumerate() {
                f(grad_slots.start + k, p, g);
            }
        }
    }

    /// Copies the trainable scalars into `out`, in the order of
    /// [`update_parameters`](Self::update_parameters): a snapshot to roll back to with
    /// [`restore_trainable`](Self::restore_trainable), [`trainable_len`](Self::trainable_len)
    /// values (the frozen parameters never change, so they need no copy).
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 16>>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, 2.0]]))?;
    /// tape.frozen_parameter(&Tensor::new([[5.0]]))?;
    /// let mut snapshot = [0.0; 2];
    /// tape.snapshot_trainable(&mut snapshot)?;
    /// tape.set_parameter(w, &Tensor::new([[9.0, 9.0]]))?;
    /// tape.restore_trainable(&snapshot)?;
    /// assert_eq!(tape.value(w)?, Tensor::new([[1.0, 2.0]]));
    /// assert!(tape.restore_trainable(&[0.0; 3]).is_err()); // not one value per scalar
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn snapshot_trainable(&self, out: &mut [T]) -> Result<()> {
        let expected = self.trainable_len();
        if out.len() != expected {
            return Err(TapeError::SnapshotLength {
                expected,
                found: out.len(),
            });
        }
        let params = self.nodes.get(..self.parameter_nodes).unwrap_or(&[]);
        for node in params {
            if let (Some(g), Some(values)) = (node.grad_slots(), self.values.get(node.slots())) {
                if let Some(dst) = out.get_mut(g) {
                    dst.copy_from_slice(values);
                }
            }
        }
        Ok(())
    }

    /// Sets the trainable scalars from a [`snapshot_trainable`](Self::snapshot_trainable);
    /// a snapshot of another length is refused and changes nothing.
    pub fn restore_trainable(&mut self, snapshot: &[T]) -> Result<()> {
        let expected = self.trainable_len();
        if snapshot.len() != expected {
            return Err(TapeError::SnapshotLength {
                expected,
                found: snapshot.len(),
            });
        }
        let params = self.nodes.get(..self.parameter_nodes).unwrap_or(&[]);
        for node in params {
            if let (Some(g), Some(values)) = (node.grad_slots(), self.values.get_mut(node.slots()))
            {
                if let Some(src) = snapshot.get(g) {
                    values.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    /// Moves every trainable scalar `v` toward its value `a` in `anchor` (a
    /// [`snapshot_trainable`](Self::snapshot_trainable)): `v -= rate * (v - a)`, one scalar
    /// at a time. It is the decoupled step of an L2 penalty `strength / 2 * |v - a|^2` at
    /// `rate = learning rate * strength` (L2-SP: a fine-tuned model kept near the model it
    /// started from). A snapshot of another length is refused and changes nothing.
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 16>>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, 2.0]]))?;
    /// tape.pull_trainable_toward(&[0.0, 4.0], 0.25)?;
    /// assert_eq!(tape.value(w)?, Tensor::new([[0.75, 2.5]]));
    /// assert!(tape.pull_trainable_toward(&[0.0], 0.25).is_err());
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn pull_trainable_toward(&mut self, anchor: &[T], rate: T) -> Result<()> {
        let expected = self.trainable_len();
        if anchor.len() != expected {
            return Err(TapeError::SnapshotLength {
                expected,
                found: anchor.len(),
            });
        }
        let params = self.nodes.get(..self.parameter_nodes).unwrap_or(&[]);
        for node in params {
            if let (Some(g), Some(values)) = (node.grad_slots(), self.values.get_mut(node.slots()))
            {
                if let Some(src) = anchor.get(g) {
                    for (v, &a) in values.iter_mut().zip(src) {
                        *v -= rate * (*v - a);
                    }
                }
            }
        }
        Ok(())
    }

    /// The values of a recorded node, flat (empty for a node of another tape).
    pub fn values_of(&self, node: &Node<T>) -> &[T] {
        self.view().get(node.slots()).unwrap_or(&[])
    }

    /// The gradient of a recorded node, flat (empty for a node without gradient, for a
    /// weight whose gradient a training step did not keep, and for an activation before the
    /// reverse sweep).
    pub fn grads_of(&self, node: &Node<T>) -> &[T] {
        if !self.swept && node.offset >= self.parameter_slots {
            return &[];
        }
        let index = self.nodes.iter().position(|n| n.offset == node.offset);
        if index.is_some_and(|i| i < self.parameter_nodes && self.outer.find(i).is_some()) {
            return &[];
        }
        node.grad_slots()
            .and_then(|g| self.grads.get(g))
            .unwrap_or(&[])
    }

    /// The value of a node as a tensor.
    pub fn value<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<Tensor<T, R, C>> {
        let node = self.resolve(v)?;
        self.view()
            .get(node.slots())
            .and_then(Tensor::from_slice)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The value of a `1 x 1` node.
    pub fn scalar(&self, v: Var<1, 1>) -> Result<T> {
        let node = self.resolve(v)?;
        let value = match self.values.get(node.offset) {
            Some(&value) => Some(value),
            None => self
                .view()
                .get(node.slots())
                .and_then(|v| v.first().copied()),
        };
        value.ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The gradient of a node from the last [`backward`](Self::backward) (accumulated over
    /// calls, for parameters); [`TapeError::NoGradient`] for a node that carries none. The
    /// gradient of a weight that a step's sweep holds as an outer product is computed from
    /// its factors; [`TapeError::GradientConsumed`] if the step did not keep it.
    pub fn grad<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<Tensor<T, R, C>> {
        let node = self.resolve(v)?;
        if v.node.0 < self.parameter_nodes {
            if let Some((o, part)) = self.outer.find(v.node.0) {
                return self.held_grad(o, part, v.node.0);
            }
        }
        if !self.swept && v.node.0 >= self.parameter_nodes && node.requires_grad() {
            return Ok(Tensor::zeros());
        }
        let slots = node
            .grad_slots()
            .ok_or(TapeError::NoGradient { node: v.node.0 })?;
        self.grads
            .get(slots)
            .and_then(Tensor::from_slice)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// Overwrites a parameter's value (e.g. to load weights).
    pub fn set_parameter<const R: usize, const C: usize>(
        &mut self,
        v: Var<R, C>,
        value: &Tensor<T, R, C>,
    ) -> Result<()> {
        let node = *self.resolve(v)?;
        if v.node.0 >= self.parameter_nodes {
            return Err(TapeError::UnknownVar { node: v.node.0 });
        }
        if self.is_in_place(&node) {
            return Err(TapeError::ReadOnly { node: v.node.0 });
        }
        let dst = self
            .values
            .get_mut(node.slots())
            .ok_or(TapeError::UnknownVar { node: v.node.0 })?;
        dst.copy_from_slice(value.as_slice());
        Ok(())
    }

    /// A held parameter's values, flat and row-major, to change in place (a layer's output
    /// set up anew, say); [`TapeError::ReadOnly`] for one read in place from a checkpoint.
    pub fn parameter_mut<const R: usize, const C: usize>(
        &mut self,
        v: Var<R, C>,
    ) -> Result<&mut [T]> {
        let node = *self.resolve(v)?;
        if v.node.0 >= self.parameter_nodes {
            return Err(TapeError::UnknownVar { node: v.node.0 });
        }
        if self.is_in_place(&node) {
            return Err(TapeError::ReadOnly { node: v.node.0 });
        }
        self.values
            .get_mut(node.slots())
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The values of a parameter named by a [`FlatVar`], flat.
    pub fn flat_value(&self, v: FlatVar) -> Result<&[T]> {
        let node = self.resolve_flat(v)?;
        self.view()
            .get(node.slots())
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The accumulated gradient of a parameter named by a [`FlatVar`];
    /// [`TapeError::NoGradient`] for a frozen one.
    pub fn flat_grad(&self, v: FlatVar) -> Result<&[T]> {
        let node = self.resolve_flat(v)?;
        let slots = node
            .grad_slots()
            .ok_or(TapeError::NoGradient { node: v.node.0 })?;
        self.grads
            .get(slots)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// Overwrites the values of a parameter named by a [`FlatVar`]; [`TapeError::Length`]
    /// if `value` has another length.
    pub fn set_flat_parameter(&mut self, v: FlatVar, value: &[T]) -> Result<()> {
        if value.len() != v.len {
            return Err(TapeError::Length {
                node: v.node.0,
                expected: v.len,
                found: value.len(),
            });
        }
        self.fill_flat_parameter(v, &mut |i| value.get(i).copied().unwrap_or(T::ZERO))
    }

    /// Writes `value(i)` into scalar `i` of a held parameter named by a [`FlatVar`] (for a
    /// layer's initial values, without a buffer on the stack).
    pub fn fill_flat_parameter(
        &mut self,
        v: FlatVar,
        value: &mut dyn FnMut(usize) -> T,
    ) -> Result<()> {
        let node = *self.resolve_flat(v)?;
        if v.node.0 >= self.parameter_nodes {
            return Err(TapeError::UnknownVar { node: v.node.0 });
        }
        if self.is_in_place(&node) {
            return Err(TapeError::ReadOnly { node: v.node.0 });
        }
        let dst = self
            .values
            .get_mut(node.slots())
            .ok_or(TapeError::UnknownVar { node: v.node.0 })?;
        for (i, d) in dst.iter_mut().enumerate() {
            *d = value(i);
        }
        Ok(())
    }

    /// `true` if node `id` is a frozen parameter read in place.
    pub fn is_in_place_var(&self, id: NodeId) -> bool {
        self.nodes.get(id.0).is_some_and(|n| self.is_in_place(n))
    }

    /// The node a [`FlatVar`] names, checked: recorded, of this generation, of this length.
    pub(crate) fn resolve_flat(&self, v: FlatVar) -> Result<&Node<T>> {
        let index = v.node.0;
        let node = match self.nodes.get(index) {
            Some(node) => node,
            None if v.generation != self.generation => {
                return Err(TapeError::StaleVar { node: index })
            }
            None => return Err(TapeError::UnknownVar { node: index }),
        };
        if node.generation != v.generation {
            return Err(TapeError::StaleVar { node: index });
        }
        if node.len() != v.len {
            return Err(TapeError::UnknownVar { node: index });
        }
        Ok(node)
    }

    /// Records a `rows x cols` parameter named by a [`FlatVar`]: trainable or frozen, zeros
    /// (or read in place, for a frozen one when the tape reads frozen parameters in place).
    pub fn flat_parameter(&mut self, rows: usize, cols: usize, trainable: bool) -> Result<FlatVar> {
        let kind = if trainable {
            Leaf::TrainableParameter
        } else {
            Leaf::FrozenParameter
        };
        let node = self.leaf_shaped(kind, None, rows, cols, Domain::UNKNOWN)?;
        Ok(FlatVar {
            node,
            generation: self.generation,
            len: rows * cols,
        })
    }

    /// The node a handle names, checked: recorded, of this generation, of this shape.
    pub(crate) fn resolve<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<&Node<T>> {
        let index = v.node.0;
        let stale = TapeError::StaleVar { node: index };
        let node = match self.nodes.get(index) {
            Some(node) => node,
            None if v.generation != self.generation => return Err(stale),
            None => return Err(TapeError::UnknownVar { node: index }),
        };
        if node.generation != v.generation {
            return Err(stale);
        }
        if node.rows != R || node.cols != C {
            return Err(TapeError::UnknownVar { node: index });
        }
        Ok(node)
    }

    // -- leaves -----------------------------------------------------------------------------

    /// Records a trainable parameter. Parameters come before every activation.
    pub fn parameter<const R: usize, const C: usize>(
        &mut self,
        init: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::TrainableParameter, init, Domain::UNKNOWN)
    }

    /// Records a frozen parameter: it persists like a parameter but carries no gradient and
    /// needs no optimiser state (the body of a model fine-tuned on the device).
    pub fn frozen_parameter<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::FrozenParameter, value, Domain::UNKNOWN)
    }

    /// Records a data input for this step (a sample): cleared with the activations, no
    /// gradient.
    pub fn input<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::Data, value, Domain::UNKNOWN)
    }

    /// Records a `1 x C` data input whose values `fill` writes straight into the tape (a row
    /// read from a data set in flash, say: no copy of it on the stack), with the tag `fill`
    /// returns (the row's class). If `fill` returns `None`, nothing is recorded.
    ///
    /// ```
    /// use safegrad::{Cap, Tape};
    ///
    /// let mut tape = Tape::<f32, Cap<4, 8>>::new();
    /// let (x, tag) = tape
    ///     .input_with::<3, _>(|out| {
    ///         out.copy_from_slice(&[1.0, 2.0, 3.0]);
    ///         Some(7)
    ///     })?
    ///     .unwrap();
    /// assert_eq!((tape.value(x)?.as_slice(), tag), (&[1.0, 2.0, 3.0][..], 7));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn input_with<const C: usize, U>(
        &mut self,
        fill: impl FnOnce(&mut [T]) -> Option<U>,
    ) -> Result<Option<(Var<1, C>, U)>> {
        self.reserve(C)?;
        let (_, out) = self.split_for_output(C)?;
        let Some(tag) = fill(out) else {
            return Ok(None);
        };
        let node = self.commit_shaped(Op::Input, 1, C, false, Domain::UNKNOWN)?;
        Ok(Some((self.var(node), tag)))
    }

    /// Records a data input whose values are known to lie in `domain` (e.g. counts are
    /// [`Domain::NON_NEGATIVE`]), for the domain audit. The declaration is not checked
    /// against the values: it states what every sample will satisfy.
    pub fn input_in<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
        domain: Domain,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::Data, value, domain)
    }

    /// A [`variable`](Self::variable) declared to lie in `domain`.
    pub fn variable_in<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
        domain: Domain,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::Variable, value, domain)
    }

    /// Records a differentiable input for this step: cleared with the activations, its
    /// gradient computed by [`backward`](Self::backward) (to differentiate with respect to
    /// data, or to check gradients).
    pub fn variable<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::Variable, value, Domain::UNKNOWN)
    }

    /// Records a constant (labels, masks): no gradient.
    pub fn constant<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Leaf::Constant, value, Domain::UNKNOWN)
    }

    // -- reverse sweep ----------------------------------------------------------------------

    /// Computes the gradient of the `1 x 1` node `loss` with respect to every node recorded
    /// before it that carries a gradient. Activation gradients are overwritten; parameter
    /// gradients accumulate.
    pub fn backward(&mut self, loss: Var<1, 1>) -> Result<()> {
        self.backward_with_seed(loss, &Tensor::full(T::ONE))
    }

    /// Reverse sweep from any node, with `seed` as its upstream gradient (a vector-Jacobian
    /// product). The seed is added to the node's gradient, so seeding a parameter
    /// accumulates like any other contribution.
    pub fn backward_with_seed<const R: usize, const C: usize>(
        &mut self,
        output: Var<R, C>,
        seed: &Tensor<T, R, C>,
    ) -> Result<()> {
        let node = *self.resolve(output)?;
        let seed_slots = node.grad_slots().ok_or(TapeError::NoGradient {
            node: output.node.0,
        })?;
        // Parameter gradients accumulate: gradients held as outer products are written out
        // first, gradients a step did not keep start again from zero.
        self.settle_outer_grads();
        if let Some(g) = self
            .grads
            .get_mut(self.parameter_grad_slots..self.grads_used)
        {
            g.iter_mut().for_each(|v| *v = T::ZERO);
        }
        if let Some(g) = self.grads.get_mut(seed_slots) {
            for (g, &s) in g.iter_mut().zip(seed.as_slice()) {
                *g += s;
            }
        }
        self.swept = true;
        let nodes = self.nodes.get(..=output.node.0).unwrap_or(&[]);
        let values = Values::new(&self.values, self.in_place.unwrap_or(&[]));
        sweep::sweep(nodes, values, &mut self.grads, |_| sweep::Defer::NOTHING);
        Ok(())
    }
}
