//! Models as tuples of layers, run in order: `(A, B)` is `B(A(x))`, and so on up to six
//! layers (a tuple of tuples for more). Each impl spells out its chain of output types, so
//! the compiler checks that every layer accepts what the previous one produces; a tuple's
//! [`Footprint`] is its layers' in order.

use super::{Build, Footprint, Init, Layers, Module};
use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape};

impl<T: Scalar, X, A, B> Module<T, X> for (A, B)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
{
    type Output = B::Output;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError> {
        let x = self.0.forward(tape, x)?;
        self.1.forward(tape, x)
    }
}

impl<T: Scalar, A: Build<T>, B: Build<T>> Build<T> for (A, B) {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(Self::LAYERS.planned());
        Ok((A::build(tape, init)?, B::build(tape, init)?))
    }
}

impl<T: Scalar, X, A, B, C> Module<T, X> for (A, B, C)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
{
    type Output = C::Output;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        self.2.forward(tape, x)
    }
}

impl<T: Scalar, A: Build<T>, B: Build<T>, C: Build<T>> Build<T> for (A, B, C) {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(Self::LAYERS.planned());
        Ok((
            A::build(tape, init)?,
            B::build(tape, init)?,
            C::build(tape, init)?,
        ))
    }
}

impl<T: Scalar, X, A, B, C, D> Module<T, X> for (A, B, C, D)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Module<T, C::Output>,
{
    type Output = D::Output;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        self.3.forward(tape, x)
    }
}

impl<T: Scalar, A: Build<T>, B: Build<T>, C: Build<T>, D: Build<T>> Build<T> for (A, B, C, D) {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(Self::LAYERS.planned());
        Ok((
            A::build(tape, init)?,
            B::build(tape, init)?,
            C::build(tape, init)?,
            D::build(tape, init)?,
        ))
    }
}

impl<T: Scalar, X, A, B, C, D, E> Module<T, X> for (A, B, C, D, E)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Module<T, C::Output>,
    E: Module<T, D::Output>,
{
    type Output = E::Output;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        let x = self.3.forward(tape, x)?;
        self.4.forward(tape, x)
    }
}

impl<T: Scalar, A: Build<T>, B: Build<T>, C: Build<T>, D: Build<T>, E: Build<T>> Build<T>
    for (A, B, C, D, E)
{
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(Self::LAYERS.planned());
        Ok((
            A::build(tape, init)?,
            B::build(tape, init)?,
            C::build(tape, init)?,
            D::build(tape, init)?,
            E::build(tape, init)?,
        ))
    }
}

impl<T: Scalar, X, A, B, C, D, E, F> Module<T, X> for (A, B, C, D, E, F)
where
    A: Module<T, X>,
    B: Module<T, A::Output>,
    C: Module<T, B::Output>,
    D: Module<T, C::Output>,
    E: Module<T, D::Output>,
    F: Module<T, E::Output>,
{
    type Output = F::Output;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError> {
        let x = self.0.forward(tape, x)?;
        let x = self.1.forward(tape, x)?;
        let x = self.2.forward(tape, x)?;
        let x = self.3.forward(tape, x)?;
        let x = self.4.forward(tape, x)?;
        self.5.forward(tape, x)
    }
}

impl<T: Scalar, A: Build<T>, B: Build<T>, C: Build<T>, D: Build<T>, E: Build<T>, F: Build<T>>
    Build<T> for (A, B, C, D, E, F)
{
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(Self::LAYERS.planned());
        Ok((
            A::build(tape, init)?,
            B::build(tape, init)?,
            C::build(tape, init)?,
            D::build(tape, init)?,
            E::build(tape, init)?,
            F::build(tape, init)?,
        ))
    }
}

impl<A: Footprint, B: Footprint> Footprint for (A, B) {
    const LAYERS: Layers = Layers::chain(&[A::LAYERS, B::LAYERS]);
}

impl<A: Footprint, B: Footprint, C: Footprint> Footprint for (A, B, C) {
    const LAYERS: Layers = Layers::chain(&[A::LAYERS, B::LAYERS, C::LAYERS]);
}

impl<A: Footprint, B: Footprint, C: Footprint, D: Footprint> Footprint for (A, B, C, D) {
    const LAYERS: Layers = Layers::chain(&[A::LAYERS, B::LAYERS, C::LAYERS, D::LAYERS]);
}

impl<A: Footprint, B: Footprint, C: Footprint, D: Footprint, E: Footprint> Footprint
    for (A, B, C, D, E)
{
    const LAYERS: Layers = Layers::chain(&[A::LAYERS, B::LAYERS, C::LAYERS, D::LAYERS, E::LAYERS]);
}

impl<A: Footprint, B: Footprint, C: Footprint, D: Footprint, E: Footprint, F: Footprint> Footprint
    for (A, B, C, D, E, F)
{
    const LAYERS: Layers = Layers::chain(&[
        A::LAYERS,
        B::LAYERS,
        C::LAYERS,
        D::LAYERS,
        E::LAYERS,
        F::LAYERS,
    ]);
}
