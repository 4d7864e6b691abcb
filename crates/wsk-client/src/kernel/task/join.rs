//! [`join`]: two futures awaited together in one task (a send beside a receive); [`OptionFuture`]:
//! a future that may not be there.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// Awaits `a` and `b` together: both are polled whenever the task runs, until each has
/// completed; then both outputs. (Written by hand, as every future of the library.)
pub fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B> {
    Join {
        a: Half::Running(a),
        b: Half::Running(b),
    }
}

/// One side of a [`Join`].
enum Half<F: Future> {
    Running(F),
    Done(Option<F::Output>),
}

impl<F: Future> Half<F> {
    /// Polls the future if it still runs; `true` when it has completed (now or before).
    ///
    /// # Safety
    /// `self` is pinned: a `Running` future is never moved until it is dropped.
    unsafe fn poll_half(&mut self, cx: &mut Context<'_>) -> bool {
        let output = match self {
            // SAFETY: per the contract: pinned in place until `*self` is replaced below.
            Self::Running(future) => match unsafe { Pin::new_unchecked(future) }.poll(cx) {
                Poll::Ready(output) => output,
                Poll::Pending => return false,
            },
            Self::Done(_) => return true,
        };
        // The completed future is dropped in place here (never moved).
        *self = Self::Done(Some(output));
        true
    }

    fn take(&mut self) -> Option<F::Output> {
        match self {
            Self::Done(output) => output.take(),
            Self::Running(_) => None,
        }
    }
}

/// See [`join`].
#[must_use = "a future does nothing unless awaited"]
pub struct Join<A: Future, B: Future> {
    a: Half<A>,
    b: Half<B>,
}

impl<A: Future, B: Future> Future for Join<A, B> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: pinning is structural for both halves: neither is moved out of a pinned
        // `Join` (a running future is only replaced, in place, once it completed).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `a` is pinned with `self`.
        let a = unsafe { this.a.poll_half(cx) };
        // SAFETY: as above: `b` is pinned with `self`.
        let b = unsafe { this.b.poll_half(cx) };
        if !(a && b) {
            return Poll::Pending;
        }
        match (this.a.take(), this.b.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            // Polled again after it completed: it never completes again.
            _ => Poll::Pending,
        }
    }
}

/// `Some` future's output, or `None` at once for no future (one side of a [`join`] that has
/// nothing to do this time). (Written by hand, as every future of the library.)
#[must_use = "a future does nothing unless awaited"]
pub struct OptionFuture<F>(Option<F>);

impl<F> From<Option<F>> for OptionFuture<F> {
    fn from(future: Option<F>) -> Self {
        Self(future)
    }
}

impl<F: Future> Future for OptionFuture<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: pinning is structural for the future: it is never moved out of a pinned
        // `OptionFuture` (only dropped in place, with it).
        let this = unsafe { self.get_unchecked_mut() };
        match this.0.as_mut() {
            // SAFETY: as above: pinned with `self`.
            Some(future) => unsafe { Pin::new_unchecked(future) }.poll(cx).map(Some),
            None => Poll::Ready(None),
        }
    }
}
