//! The timer queue: `(due, entity)` pairs popped in time order.
//!
//! A single binary heap over a million entities is deep and cache-hostile (every push and pop walks ~20
//! levels of a 16 MB array). Timers are instead bucketed by day: future days are plain vectors in a
//! `BTreeMap` (a push is an append), and only the earliest day is a binary heap, small enough to stay in
//! cache. Order is exact to the second: a day's bucket is heapified when the clock reaches it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::time::{DAY, Ts};

/// Timers in time order. Ties pop in an unspecified order; the engine sorts each instant's batch itself.
pub struct TimerQueue {
    /// Timers due before `horizon`.
    near: BinaryHeap<Reverse<(Ts, u32)>>,
    /// Exclusive end of the day held in `near` (`Ts::MIN + DAY` when none is); every timer in `far` is due
    /// at or after it.
    horizon: Ts,
    /// Later timers by the start of their day.
    far: BTreeMap<Ts, Vec<(Ts, u32)>>,
}

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue { near: BinaryHeap::new(), horizon: Ts::MIN + DAY, far: BTreeMap::new() }
    }
}

impl TimerQueue {
    /// Adds a timer.
    pub fn push(&mut self, due: Ts, entity: u32) {
        let day = due.div_euclid(DAY) * DAY;
        if day < self.horizon - DAY {
            // Earlier than the day in `near`: put that day back, so `near` only ever holds one day.
            let held = std::mem::take(&mut self.near).into_vec();
            self.far.entry(self.horizon - DAY).or_default().extend(held.into_iter().map(|Reverse(t)| t));
            self.horizon = Ts::MIN + DAY;
        }
        if due < self.horizon {
            self.near.push(Reverse((due, entity)));
        } else {
            self.far.entry(day).or_default().push((due, entity));
        }
    }

    /// The earliest due instant, if any.
    pub fn peek(&mut self) -> Option<Ts> {
        if self.near.is_empty() {
            let (day, timers) = self.far.pop_first()?;
            self.horizon = day + DAY;
            self.near = BinaryHeap::from(timers.into_iter().map(Reverse).collect::<Vec<_>>());
        }
        self.near.peek().map(|Reverse((due, _))| *due)
    }

    /// Removes and returns the earliest timer if it is due at or before `at`.
    pub fn pop_due(&mut self, at: Ts) -> Option<(Ts, u32)> {
        if self.peek()? > at {
            return None;
        }
        self.near.pop().map(|Reverse(t)| t)
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        let far: usize = self.far.values().map(|v| v.capacity() * 16 + 48).sum();
        self.near.capacity() * 16 + far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut TimerQueue, at: Ts) -> Vec<Ts> {
        std::iter::from_fn(|| q.pop_due(at).map(|t| t.0)).collect()
    }

    #[test]
    fn pops_in_time_order_across_days() {
        let mut q = TimerQueue::default();
        for (i, d) in [5 * DAY + 7, 3, DAY - 1, DAY, 2 * DAY + 5, 3, 40 * DAY].into_iter().enumerate() {
            q.push(d, i as u32);
        }
        assert_eq!(q.pop_due(2), None);
        assert_eq!(drain(&mut q, 3), vec![3, 3]);
        // A push into the day being drained, and one into a later day.
        q.push(DAY - 2, 99);
        q.push(2 * DAY + 1, 98);
        assert_eq!(drain(&mut q, DAY), vec![DAY - 2, DAY - 1, DAY]);
        // Day 2 is now in `near`; a push into day 1 puts it back and comes out first.
        assert_eq!(q.peek(), Some(2 * DAY + 1));
        q.push(DAY + 5, 97);
        assert_eq!(drain(&mut q, Ts::MAX), vec![DAY + 5, 2 * DAY + 1, 2 * DAY + 5, 5 * DAY + 7, 40 * DAY]);
        assert_eq!(q.peek(), None);
    }
}
