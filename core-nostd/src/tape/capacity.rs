//! A tape's capacities as one type: how many nodes, values and gradients it holds.
//!
//! Code generic over a tape names one parameter, `Mem: Capacity`, instead of three bare
//! numbers; the storage the capacities size is part of the type, so a tape is still one flat
//! block of memory that a `static` can hold (see [`Tape::new`](crate::Tape::new)).
//! [`Cap`] is the only implementation; a model's type gives its numbers
//! ([`nn::Footprint`](crate::nn::Footprint), [`tape_for!`](crate::tape_for)).
//!
//! Why a capacity type rather than a view type (heapless's `VecView`, an unsized tape that
//! helpers would borrow): a struct has one unsized field, and a tape has three buffers, so a
//! view would reach them through a vtable or through unsafe offsets, on every op. The
//! capacity type costs nothing at run time: its numbers are associated constants and its
//! storage plain arrays, resolved at compile time, so a step compiles to what three const
//! generics gave (the device benchmark measures the step, `cargo xtask bench-device`).

use core::ops::{Deref, DerefMut};

use heapless::Vec;

use crate::graph::Node;
use crate::scalar::Scalar;

/// The capacities of a [`Tape`](crate::Tape): at most [`NODES`](Self::NODES) recorded
/// nodes, [`VALUES`](Self::VALUES) scalar values and [`GRADIENTS`](Self::GRADIENTS) scalar
/// gradients. Implemented by [`Cap`] only.
pub trait Capacity: sealed::Sealed {
    /// Nodes the tape records, parameters included.
    const NODES: usize;
    /// Scalar values the tape holds: the parameters it holds and one step's activations.
    const VALUES: usize;
    /// Scalar gradients: those of the trainable parameters and of the activations that
    /// depend on them.
    const GRADIENTS: usize;

    /// The node list.
    #[doc(hidden)]
    type Nodes<T: Scalar>: NodeStore<T>;
    /// The value buffer.
    #[doc(hidden)]
    type Values<T: Scalar>: Deref<Target = [T]> + DerefMut;
    /// The gradient buffer.
    #[doc(hidden)]
    type Gradients<T: Scalar>: Deref<Target = [T]> + DerefMut;

    /// One `X` per node, for what code walking the graph keeps per node (the audit's
    /// domains, say).
    #[doc(hidden)]
    type PerNode<X: Copy>: Deref<Target = [X]> + DerefMut;

    /// `NODES` copies of `value`.
    #[doc(hidden)]
    fn per_node<X: Copy>(value: X) -> Self::PerNode<X>;

    /// Empty storage, for a tape built at run time.
    #[doc(hidden)]
    fn storage<T: Scalar>() -> (Self::Nodes<T>, Self::Values<T>, Self::Gradients<T>);
}

/// A tape's capacities: `NODES` nodes, `VALUES` scalar values, `GRADIENTS` scalar gradients
/// (as many as values unless given). `Tape<f32, Cap<16, 254, 137>>` is a tape sized for one
/// model's training step; [`tape_for!`](crate::tape_for) computes the numbers from the
/// model's type.
///
/// ```
/// use safegrad::tape::Capacity;
/// use safegrad::{Cap, Tape};
///
/// type Small = Cap<8, 64>;
/// assert_eq!((Small::NODES, Small::VALUES, Small::GRADIENTS), (8, 64, 64));
/// let tape = Tape::<f32, Small>::new();
/// assert_eq!(tape.scalars_used(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cap<const NODES: usize, const VALUES: usize, const GRADIENTS: usize = VALUES>;

impl<const N: usize, const S: usize, const G: usize> sealed::Sealed for Cap<N, S, G> {}

impl<const N: usize, const S: usize, const G: usize> Capacity for Cap<N, S, G> {
    const NODES: usize = N;
    const VALUES: usize = S;
    const GRADIENTS: usize = G;
    type Nodes<T: Scalar> = Vec<Node<T>, N>;
    type Values<T: Scalar> = Buffer<T, S>;
    type Gradients<T: Scalar> = Buffer<T, G>;
    type PerNode<X: Copy> = Buffer<X, N>;

    fn per_node<X: Copy>(value: X) -> Self::PerNode<X> {
        Buffer([value; N])
    }

    fn storage<T: Scalar>() -> (Self::Nodes<T>, Self::Values<T>, Self::Gradients<T>) {
        (Vec::new(), Buffer([T::ZERO; S]), Buffer([T::ZERO; G]))
    }
}

/// A buffer of `L` scalars, seen as a slice.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Buffer<T, const L: usize>(pub(crate) [T; L]);

impl<T, const L: usize> Deref for Buffer<T, L> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const L: usize> DerefMut for Buffer<T, L> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// The list of a tape's nodes.
#[doc(hidden)]
pub trait NodeStore<T>: Deref<Target = [Node<T>]> + DerefMut {
    /// Appends a node; gives it back when the list is full.
    fn push(&mut self, node: Node<T>) -> Result<(), Node<T>>;
    /// Keeps the first `len` nodes.
    fn truncate(&mut self, len: usize);
    /// `true` when no node fits.
    fn is_full(&self) -> bool;
}

impl<T, const N: usize> NodeStore<T> for Vec<Node<T>, N> {
    fn push(&mut self, node: Node<T>) -> Result<(), Node<T>> {
        Vec::push(self, node)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    fn is_full(&self) -> bool {
        Vec::is_full(self)
    }
}

mod sealed {
    /// Only [`Cap`](super::Cap) is a capacity.
    pub trait Sealed {}
}
