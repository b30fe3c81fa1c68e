//! Requests a worker holds paused until its root context can answer them — when a token or a
//! key set arrives, or a deadline passes. This is the root's index of whom to wake: it takes
//! the ready ones and calls [`crate::Host::wake`] for each; the stream keeps its own wait
//! state and decides in `on_wake`. Bounded: when full, the caller answers at once instead of
//! pausing.

use std::cell::RefCell;

/// What a wait list needs of its entries.
pub trait Waiter {
    /// The paused stream's context id.
    fn context_id(&self) -> u32;
}

#[derive(Debug)]
pub struct WaitList<W> {
    capacity: usize,
    items: RefCell<Vec<W>>,
}

impl<W: Waiter> WaitList<W> {
    pub fn new(capacity: usize) -> WaitList<W> {
        WaitList { capacity, items: RefCell::new(Vec::new()) }
    }

    /// Add a waiter; `false` (and nothing added) when the list is full.
    pub fn push(&self, waiter: W) -> bool {
        let mut items = self.items.borrow_mut();
        if items.len() >= self.capacity {
            return false;
        }
        items.push(waiter);
        true
    }

    pub fn is_full(&self) -> bool {
        self.items.borrow().len() >= self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    /// The stream ended (its filter is dropped): drop its entry. Never panics, so a `Drop` may
    /// call it: while the list is borrowed (not the case when Envoy deletes a context) the
    /// entry stays, and serving it finds the stream gone.
    pub fn forget(&self, context_id: u32) {
        if let Ok(mut items) = self.items.try_borrow_mut() {
            items.retain(|w| w.context_id() != context_id);
        }
    }

    /// Remove and return the waiters `ready` selects, oldest first; the others keep waiting.
    /// The list is not borrowed while the caller serves them, so serving may push again.
    pub fn take(&self, mut ready: impl FnMut(&W) -> bool) -> Vec<W> {
        let mut items = self.items.borrow_mut();
        let (taken, keep): (Vec<W>, Vec<W>) = items.drain(..).partition(|w| ready(w));
        *items = keep;
        taken
    }

    pub fn any(&self, f: impl FnMut(&W) -> bool) -> bool {
        self.items.borrow().iter().any(f)
    }

    /// Change waiters in place (e.g. bring a deadline forward).
    pub fn update(&self, f: impl FnMut(&mut W)) {
        self.items.borrow_mut().iter_mut().for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct W(u32, u64);
    impl Waiter for W {
        fn context_id(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn bounded_take_forget_update() {
        let l = WaitList::new(3);
        assert!(l.push(W(1, 10)) && l.push(W(2, 20)) && l.push(W(3, 30)));
        assert!(l.is_full() && !l.push(W(4, 40)));
        l.forget(2);
        assert!(!l.any(|w| w.0 == 2));
        l.update(|w| w.1 = w.1.min(15));
        assert_eq!(l.take(|w| w.1 <= 10), vec![W(1, 10)]);
        // Serving may push again while the taken ones are being handled.
        assert!(l.push(W(5, 50)));
        assert_eq!(l.take(|_| true), vec![W(3, 15), W(5, 50)]);
        assert!(l.is_empty());
    }
}
