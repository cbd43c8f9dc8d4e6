//! A model seen as a body and a head: its last layer, and everything before it. With the
//! body frozen (the last-layer plan), what the head is trained on is the body's output:
//! the latent rows, which stay the same from one epoch to the next.

use super::{Linear, Module};
use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

/// A model whose forward pass is its head's applied to its body's:
/// `forward(x) = head.forward(body(x))`, the same nodes in the same order, so the same
/// values; the head comes from [`WithHead`]. Implemented for [`Linear`] (no body: the
/// identity) and for tuples of layers whose last element is `Headed` (the elements before
/// it, then that element's body, are the body), so a tuple of tuples finds its last layer.
///
/// ```
/// use safegrad::nn::{Build, Headed, Init, Linear, Module, Relu, WithHead};
/// use safegrad::{Cap, Tape, Tensor};
///
/// type Model = (Linear<3, 8>, Relu, (Linear<8, 8>, Relu, Linear<8, 2>));
/// let mut tape = Tape::<f32, Cap<32, 256>>::new();
/// let model = Model::build(&mut tape, &mut Init::new(5))?;
/// let x = tape.input(&Tensor::new([[0.5, -1.0, 2.0]]))?;
/// let whole = model.forward(&mut tape, x)?;
/// let latent = model.body(&mut tape, x)?; // the second hidden layer, 8 values
/// let split = model.head().forward(&mut tape, latent)?;
/// assert_eq!(tape.value(split)?, tape.value(whole)?);
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub trait Headed<T: Scalar, X>: Module<T, X> + WithHead
where
    Self::Head: Module<T, Self::Latent, Output = Self::Output>,
{
    /// The body's output: the head's input.
    type Latent;

    /// Records the body's forward pass (every layer but the head).
    fn body<Mem: Capacity>(&self, tape: &mut Tape<T, Mem>, x: X)
        -> Result<Self::Latent, TapeError>;
}

/// A model's last layer, whatever its input ([`Headed`] says what the body feeds it).
pub trait WithHead {
    /// The last layer.
    type Head;

    /// The last layer.
    fn head(&self) -> &Self::Head;
}

impl<const IN: usize, const OUT: usize> WithHead for Linear<IN, OUT> {
    type Head = Self;

    fn head(&self) -> &Self {
        self
    }
}

impl<T: Scalar, const B: usize, const IN: usize, const OUT: usize> Headed<T, Var<B, IN>>
    for Linear<IN, OUT>
{
    type Latent = Var<B, IN>;

    fn body<Mem: Capacity>(
        &self,
        _: &mut Tape<T, Mem>,
        x: Var<B, IN>,
    ) -> Result<Var<B, IN>, TapeError> {
        Ok(x)
    }
}

// Tuples: the layers before the last run forward, then the last one's body; the head is
// the last one's.

impl<A, B: WithHead> WithHead for (A, B) {
    type Head = B::Head;

    fn head(&self) -> &Self::Head {
        self.1.head()
    }
}

impl<T: Scalar, X, A, B> Headed<T, X> for (A, B)
where
    A: Module<T, X>,
    B: Headed<T, A::Output>,
    B::Head: Module<T, B::Latent, Output = B::Output>,
{
    type Latent = B::Latent;

    fn body<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Latent, TapeError> {
        let x = self.0.forward(tape, x)?;
        self.1.body(tape, x)
    }
}

impl<A, B, C: WithHead> WithHead for (A, B, C) {
    type Head = C::Head;

    fn head(&self) -> &Self::Head {
        self.2.head()
    }
}

impl<T: Scalar, X, A, B, C> Headed<T, X> for (A, B, C)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Headed<T, B::Output>,
    C::Head: Module<T, C::Latent, Output = C::Output>,
{
    type Latent = C::Latent;

    fn body<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Latent, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        self.2.body(tape, x)
    }
}

impl<A, B, C, D: WithHead> WithHead for (A, B, C, D) {
    type Head = D::Head;

    fn head(&self) -> &Self::Head {
        self.3.head()
    }
}

impl<T: Scalar, X, A, B, C, D> Headed<T, X> for (A, B, C, D)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Headed<T, C::Output>,
    D::Head: Module<T, D::Latent, Output = D::Output>,
{
    type Latent = D::Latent;

    fn body<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Latent, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        self.3.body(tape, x)
    }
}

impl<A, B, C, D, E: WithHead> WithHead for (A, B, C, D, E) {
    type Head = E::Head;

    fn head(&self) -> &Self::Head {
        self.4.head()
    }
}

impl<T: Scalar, X, A, B, C, D, E> Headed<T, X> for (A, B, C, D, E)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Module<T, C::Output>,
    E: Headed<T, D::Output>,
    E::Head: Module<T, E::Latent, Output = E::Output>,
{
    type Latent = E::Latent;

    fn body<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Latent, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        let x = self.3.forward(tape, x)?;
        self.4.body(tape, x)
    }
}

impl<A, B, C, D, E, F: WithHead> WithHead for (A, B, C, D, E, F) {
    type Head = F::Head;

    fn head(&self) -> &Self::Head {
        self.5.head()
    }
}

impl<T: Scalar, X, A, B, C, D, E, F> Headed<T, X> for (A, B, C, D, E, F)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Module<T, C::Output>,
    E: Module<T, D::Output>,
    F: Headed<T, E::Output>,
    F::Head: Module<T, F::Latent, Output = F::Output>,
{
    type Latent = F::Latent;

    fn body<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Latent, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        let x = self.3.forward(tape, x)?;
        let x = self.4.forward(tape, x)?;
        self.5.body(tape, x)
    }
}
