//! Restores source order after the decode workers, whose finishing order depends on thread
//! timing. Items are released strictly by sequence number, so batches always hold the same images
//! and embeddings are bit-identical from run to run. Memory is bounded by the number of items in
//! flight between the source and here (channel capacities + workers), because the source numbers
//! samples without gaps and every sample comes back exactly once.

use std::collections::BTreeMap;

pub struct Reorder<T> {
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Reorder<T> {
    /// Accepts item `seq` and calls `release` for every item that is now in order.
    pub fn push<E>(
        &mut self,
        seq: u64,
        item: T,
        mut release: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        self.waiting.insert(seq, item);
        while let Some(item) = self.waiting.remove(&self.next) {
            self.next += 1;
            release(item)?;
        }
        Ok(())
    }

    /// Items still waiting for an earlier one (non-zero only if a sample went missing).
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_sequence_order() {
        let mut r = Reorder::default();
        let mut out = vec![];
        for seq in [2u64, 0, 3, 1, 5, 4] {
            r.push::<()>(seq, seq, |x| {
                out.push(x);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
        assert_eq!(r.pending(), 0);
    }
}
