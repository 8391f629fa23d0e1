//! The exchange's future in a block of memory kept per thread.
//!
//! The future of one request's exchange (the request, the pipeline's state,
//! the answer's writing) is about 5 KB. A block that size has no fast path in
//! the allocator: allocating it cost ~200 instructions a request and freeing
//! it ~40. A block given back waits in a small per-thread list, like the read
//! buffers, for the next exchange; no connection keeps one while it idles.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept per thread (the read buffers' bound: one for each exchange
/// in flight at the last burst, up to it).
const KEEP_BLOCKS: usize = 64;

thread_local! {
    static FREE_BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Memory for one future, not in use; freed when dropped.
struct Block {
    at: NonNull<u8>,
    layout: Layout,
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout by `take` and not in use.
        unsafe { alloc::dealloc(self.at.as_ptr(), self.layout) };
    }
}

/// A future that lives in a block from the per-thread list, where it was
/// built, until it is dropped there; the block then goes back to the list.
pub(super) struct InBlock<F> {
    future: NonNull<F>,
}

// SAFETY: `InBlock` owns its future as a `Box` would; the block itself is
// plain memory that any thread may free or keep.
unsafe impl<F: Send> Send for InBlock<F> {}

impl<F> InBlock<F> {
    /// `make`'s future, written into the block: built on the stack and moved
    /// in, a future that has not started holds only its arguments.
    #[inline(always)]
    pub(super) fn new(make: impl FnOnce() -> F) -> Self {
        let future = take(Layout::new::<F>()).cast::<F>();
        // SAFETY: the block has `F`'s size and alignment and holds nothing.
        unsafe { future.as_ptr().write(make()) };
        InBlock { future }
    }
}

impl<F: Future> Future for InBlock<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future is never moved out of its block before it is
        // dropped there (`Drop` below), so it is pinned.
        unsafe { Pin::new_unchecked(&mut *self.future.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for InBlock<F> {
    fn drop(&mut self) {
        // SAFETY: written by `new`, dropped once, here.
        unsafe { self.future.as_ptr().drop_in_place() };
        give_back(Block {
            at: self.future.cast(),
            layout: Layout::new::<F>(),
        });
    }
}

/// A block for `layout`: the last one given back on this thread if it has
/// that layout, else a new one.
fn take(layout: Layout) -> NonNull<u8> {
    if layout.size() == 0 {
        return NonNull::<u8>::dangling();
    }
    let kept = FREE_BLOCKS
        .try_with(|f| {
            let mut f = f.borrow_mut();
            match f.last() {
                Some(b) if b.layout == layout => f.pop(),
                _ => None,
            }
        })
        .ok()
        .flatten();
    match kept {
        Some(block) => {
            let at = block.at;
            std::mem::forget(block);
            at
        }
        // SAFETY: `layout`'s size is not zero.
        None => NonNull::new(unsafe { alloc::alloc(layout) })
            .unwrap_or_else(|| alloc::handle_alloc_error(layout)),
    }
}

/// Keeps `block` for the next exchange on this thread, or frees it when the
/// list is full (or the thread is ending).
fn give_back(block: Block) {
    if block.layout.size() == 0 {
        std::mem::forget(block);
        return;
    }
    let _ = FREE_BLOCKS.try_with(move |f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP_BLOCKS {
            f.push(block);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A block given back is the next one taken for the same layout on this
    /// thread; the future in it is dropped in place, once.
    #[test]
    fn a_block_is_used_again_and_its_future_dropped_once() {
        struct Counted(Rc<Cell<u32>>, [u64; 64]);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(Cell::new(0));
        let make = |d: &Rc<Cell<u32>>| {
            let d = d.clone();
            async move {
                let held = Counted(d, [7; 64]);
                std::future::ready(()).await;
                held.1[63]
            }
        };
        let first = InBlock::new(|| make(&drops));
        let at = first.future.as_ptr() as usize;
        drop(first);
        assert_eq!(drops.get(), 0, "the future never ran: nothing was held");
        let mut second = InBlock::new(|| make(&drops));
        assert_eq!(second.future.as_ptr() as usize, at);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(Pin::new(&mut second).poll(&mut cx), Poll::Ready(7));
        assert_eq!(drops.get(), 1);
        drop(second);
        assert_eq!(drops.get(), 1);
        // A future of another size gets a block of its own.
        let other = InBlock::new(|| std::future::ready([0u8; 3]));
        assert_ne!(other.future.as_ptr() as usize, at);
        drop(other);
        let zero = InBlock::new(|| std::future::ready(()));
        drop(zero);
    }

    /// Dropped before it ends, the future's state goes with it.
    #[test]
    fn a_future_dropped_midway_drops_what_it_holds() {
        let held = Rc::new(());
        let mut pending = InBlock::new(|| {
            let held = held.clone();
            async move {
                std::future::pending::<()>().await;
                drop(held);
            }
        });
        let waker = std::task::Waker::noop();
        assert!(
            Pin::new(&mut pending)
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
        assert_eq!(Rc::strong_count(&held), 2);
        drop(pending);
        assert_eq!(Rc::strong_count(&held), 1);
    }
}
