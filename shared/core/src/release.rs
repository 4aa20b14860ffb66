//! Ordered release: outcomes that finish in any order, handed on in offset order.
//!
//! A worker reads its range in offset order and finishes records in whatever order the API
//! answers. Its output parts are sorted by offset and its cut (see [`crate::continuation`]) falls
//! before the first unfinished record, so an outcome can be written as soon as every record
//! before it is finished, and no sooner. [`OrderedRelease`] keeps, in reading order, the offsets
//! not yet written: each is *unfinished* (dispatched to the API) or *finished* with its item;
//! [`OrderedRelease::release`] hands on the finished prefix. What it holds is the records in
//! flight and those finished behind a slower one, not the range, so a worker's memory is bounded
//! by what it has in flight.
//!
//! At a hard stop the cut is [`OrderedRelease::first_unfinished`] (or where reading stopped):
//! everything released is before it by construction, and what is still held is after it and
//! dropped (the continuation does it again).

use std::collections::VecDeque;

/// Offsets in reading order, each unfinished or finished with its `T`; see the module.
#[derive(Debug)]
pub struct OrderedRelease<T> {
    /// Every offset registered and not yet released, increasing; `None` while unfinished.
    slots: VecDeque<(u64, Option<T>)>,
    /// How many of `slots` are finished (held behind an unfinished one, or not yet released).
    finished: usize,
}

impl<T> Default for OrderedRelease<T> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            finished: 0,
        }
    }
}

impl<T> OrderedRelease<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `offset` as dispatched and unfinished. Offsets come in reading order: each
    /// greater than every one registered before.
    pub fn dispatch(&mut self, offset: u64) {
        self.push(offset, None);
    }

    /// Registers `offset` as finished already (a rejected record, a blank line).
    pub fn finished(&mut self, offset: u64, item: T) {
        self.push(offset, Some(item));
        self.finished += 1;
    }

    fn push(&mut self, offset: u64, item: Option<T>) {
        assert!(
            self.slots.back().is_none_or(|(last, _)| *last < offset),
            "offset {offset} registered out of reading order"
        );
        self.slots.push_back((offset, item));
    }

    /// Finishes the dispatched `offset` with `item`. False (and `item` dropped) when `offset` is
    /// not an unfinished one: never registered, released already, or finished twice.
    pub fn complete(&mut self, offset: u64, item: T) -> bool {
        match self.slots.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) if self.slots[i].1.is_none() => {
                self.slots[i].1 = Some(item);
                self.finished += 1;
                true
            }
            _ => false,
        }
    }

    /// Removes and gives the finished prefix, in offset order: every finished offset before the
    /// first unfinished one.
    pub fn release(&mut self) -> impl Iterator<Item = (u64, T)> + '_ {
        std::iter::from_fn(move || {
            if !self.slots.front().is_some_and(|(_, item)| item.is_some()) {
                return None;
            }
            let (offset, item) = self.slots.pop_front()?;
            self.finished -= 1;
            item.map(|item| (offset, item))
        })
    }

    /// The lowest unfinished offset: where a cut falls if the work stops now.
    pub fn first_unfinished(&self) -> Option<u64> {
        self.slots
            .iter()
            .find(|(_, item)| item.is_none())
            .map(|(o, _)| *o)
    }

    /// Finished outcomes not yet released (behind an unfinished one, or not released yet).
    pub fn held(&self) -> usize {
        self.finished
    }

    /// Offsets registered and not yet released.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_finished_record_waits_for_the_one_before_it() {
        let mut r = OrderedRelease::new();
        r.dispatch(0);
        r.dispatch(10);
        r.finished(20, "rejected");
        assert!(r.complete(10, "b"));
        assert_eq!(r.release().count(), 0, "0 is still in flight");
        assert_eq!(r.held(), 2);
        assert_eq!(r.first_unfinished(), Some(0));
        assert!(r.complete(0, "a"));
        assert_eq!(
            r.release().collect::<Vec<_>>(),
            [(0, "a"), (10, "b"), (20, "rejected")]
        );
        assert!(r.is_empty());
        assert_eq!(r.held(), 0);
        assert_eq!(r.first_unfinished(), None);
    }

    #[test]
    fn completing_an_unknown_or_finished_offset_is_refused() {
        let mut r = OrderedRelease::new();
        r.dispatch(5);
        assert!(!r.complete(4, ()));
        assert!(r.complete(5, ()));
        assert!(!r.complete(5, ()), "finished twice");
        assert_eq!(r.release().count(), 1);
        assert!(!r.complete(5, ()), "released already");
    }

    #[test]
    #[should_panic(expected = "out of reading order")]
    fn offsets_must_come_in_reading_order() {
        let mut r = OrderedRelease::<()>::new();
        r.dispatch(5);
        r.dispatch(5);
    }

    /// A range of records: for each, whether it is dispatched (true) or finished at once.
    fn records() -> impl Strategy<Value = Vec<bool>> {
        proptest::collection::vec(proptest::bool::weighted(0.8), 0..60)
    }

    proptest! {
        /// Completions in any order, releases at any point, a hard stop after any number of
        /// completions: every released offset comes once, in increasing order, all before the
        /// cut; released and held together are every finished record; and with no stop every
        /// record is released.
        #[test]
        fn releases_the_finished_prefix_in_offset_order(
            kinds in records(),
            seed in any::<u64>(),
            stop_after in any::<proptest::sample::Index>(),
            release_every in 1usize..5,
        ) {
            let offsets: Vec<u64> = (0..kinds.len() as u64).map(|i| i * 7 + 3).collect();
            let mut r = OrderedRelease::new();
            let mut dispatched = Vec::new();
            let mut released = Vec::new();
            for (&o, &call) in offsets.iter().zip(&kinds) {
                if call {
                    r.dispatch(o);
                    dispatched.push(o);
                } else {
                    r.finished(o, o);
                }
            }
            // A permutation of the dispatched offsets, from the seed.
            let mut completions = dispatched.clone();
            let mut s = seed;
            for i in (1..completions.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                completions.swap(i, (s >> 33) as usize % (i + 1));
            }
            let stop = if completions.is_empty() { 0 } else { stop_after.index(completions.len() + 1) };
            for (n, &o) in completions.iter().take(stop).enumerate() {
                prop_assert!(r.complete(o, o));
                if n % release_every == 0 {
                    released.extend(r.release().map(|(o, item)| { assert_eq!(o, item); o }));
                }
            }
            released.extend(r.release().map(|(o, _)| o));
            prop_assert!(released.windows(2).all(|w| w[0] < w[1]), "in offset order, once each");
            let cut = crate::continuation::cut(r.first_unfinished(), None);
            match cut {
                None => prop_assert_eq!(&released, &offsets, "no stop: everything released"),
                Some(cut) => {
                    prop_assert!(released.iter().all(|o| *o < cut));
                    // The released prefix is exactly the records before the cut.
                    let before: Vec<u64> = offsets.iter().copied().filter(|o| *o < cut).collect();
                    prop_assert_eq!(&released, &before);
                    prop_assert!(!completions[..stop].contains(&cut), "the cut is unfinished");
                }
            }
            // Held: the finished records after the cut (dropped at a hard stop).
            let finished_total = kinds.iter().filter(|c| !**c).count() + stop;
            prop_assert_eq!(released.len() + r.held(), finished_total);
        }
    }
}
