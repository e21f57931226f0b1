//! The newest log entries, kept in memory (`log-max-cache-size` bytes).
//!
//! raft-rs reads entries back from storage twice per write: to send them to a
//! follower whose window was full when they were proposed, and to apply them
//! once committed. Without a cache each read is a `pread` (and an LZ4 block
//! decode) on the Raft thread; with it, the hot tail of the log is served from
//! memory. Entry payloads are `Bytes`, so a cached entry shares its buffer with
//! the one raft-rs holds.
//!
//! The cache always holds a contiguous run of the log's newest entries. It
//! also holds every entry that is staged but not yet durable (the Raft
//! thread stages entries, a log-writer thread makes them durable later), and
//! never evicts those, whatever the limit: raft-rs must be able to read them
//! back before they reach the disk. So everything below the cache's first
//! index is durable in the files.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

fn cost(e: &Entry) -> u64 {
    (e.data.len() + e.context.len() + 48) as u64
}

#[derive(Default)]
pub struct EntryCache {
    /// Each entry with the sequence number of the write that staged it.
    entries: VecDeque<(Entry, u64)>,
    bytes: u64,
    max_bytes: u64,
    /// Writes up to this sequence number are durable.
    durable_seq: u64,
}

impl EntryCache {
    pub fn new(max_bytes: u64) -> EntryCache {
        EntryCache {
            max_bytes,
            ..EntryCache::default()
        }
    }

    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.0.index)
    }

    /// Entries staged by write number `seq` (consecutive), replacing any
    /// cached entry at or after the first of them. Write numbers grow.
    pub fn append(&mut self, ents: &[Entry], seq: u64) {
        let Some(first) = ents.first() else { return };
        self.truncate_from(first.index);
        if self
            .entries
            .back()
            .is_some_and(|last| last.0.index + 1 != first.index)
        {
            // Not contiguous with what is cached (a rewrite below it, which
            // means everything cached is durable): start over from these.
            self.clear();
        }
        for e in ents {
            self.bytes += cost(e);
            self.entries.push_back((e.clone(), seq));
        }
        self.trim();
    }

    /// Writes up to `seq` are durable: their entries may be evicted.
    pub fn mark_durable(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
        self.trim();
    }

    /// Drops cached entries with index >= `index`.
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.0.index >= index) {
            let (e, _) = self.entries.pop_back().expect("checked");
            self.bytes -= cost(&e);
        }
    }

    /// Drops cached entries with index <= `index` (compacted away).
    pub fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.0.index <= index) {
            let (e, _) = self.entries.pop_front().expect("checked");
            self.bytes -= cost(&e);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn set_max_bytes(&mut self, max: u64) {
        self.max_bytes = max;
        self.trim();
    }

    /// Evicts the oldest durable entries while over the limit.
    fn trim(&mut self) {
        while self.bytes > self.max_bytes {
            match self.entries.front() {
                Some((_, seq)) if *seq <= self.durable_seq => {}
                _ => break,
            }
            let (e, _) = self.entries.pop_front().expect("checked");
            self.bytes -= cost(&e);
        }
    }

    /// Entries `[low, high)` if all are cached, limited like raft's
    /// `limit_size` (stop once the total passes `max_size`, keep the first).
    pub fn get(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.0.index;
        if low < first || high > last + 1 || low >= high {
            return None;
        }
        let start = (low - first) as usize;
        let n = (high - low) as usize;
        let mut out = Vec::with_capacity(n.min(1024));
        let mut size = 0u64;
        for (e, _) in self.entries.range(start..start + n) {
            size += protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; len].into(),
            ..Entry::default()
        }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&[ent(5, 1, 10), ent(6, 1, 10), ent(7, 1, 10)], 1);
        assert_eq!(
            indexes(&c.get(5, 8, None).unwrap()),
            [(5, 1), (6, 1), (7, 1)]
        );
        assert_eq!(indexes(&c.get(6, 7, None).unwrap()), [(6, 1)]);
        assert!(c.get(4, 6, None).is_none(), "4 is not cached");
        assert!(c.get(7, 9, None).is_none(), "8 is not cached");
        assert!(c.get(6, 6, None).is_none(), "empty range goes to the log");
    }

    #[test]
    fn an_overwrite_replaces_the_conflicting_suffix() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&[ent(1, 1, 1), ent(2, 1, 1), ent(3, 1, 1)], 1);
        c.append(&[ent(2, 2, 1)], 2);
        assert_eq!(indexes(&c.get(1, 3, None).unwrap()), [(1, 1), (2, 2)]);
        assert!(c.get(3, 4, None).is_none());
        // A write that is not contiguous with the cache restarts it.
        c.append(&[ent(9, 3, 1)], 3);
        assert_eq!(c.len(), 1);
        assert_eq!(indexes(&c.get(9, 10, None).unwrap()), [(9, 3)]);
    }

    #[test]
    fn the_byte_limit_drops_the_oldest_durable_entries_only() {
        let mut c = EntryCache::new(3 * (100 + 48));
        c.append(&(1..=5).map(|i| ent(i, 1, 100)).collect::<Vec<_>>(), 1);
        assert_eq!(c.len(), 5, "nothing is durable yet: all stay");
        c.mark_durable(1);
        assert_eq!(c.len(), 3);
        assert!(c.get(2, 3, None).is_none());
        assert_eq!(indexes(&c.get(3, 6, None).unwrap()).len(), 3);
        c.set_max_bytes(0);
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // With no room at all, staged entries still stay until durable.
        c.append(&[ent(6, 1, 1)], 2);
        assert_eq!(c.len(), 1);
        c.mark_durable(2);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn an_overwrite_stays_until_its_own_write_is_durable() {
        let mut c = EntryCache::new(0);
        c.append(&[ent(1, 1, 1), ent(2, 1, 1), ent(3, 1, 1)], 1);
        c.append(&[ent(2, 2, 1)], 2);
        c.mark_durable(1);
        // Entry 1 (write 1) may go; the new entry 2 (write 2) may not.
        assert_eq!(c.first_index(), Some(2));
        assert_eq!(indexes(&c.get(2, 3, None).unwrap()), [(2, 2)]);
        c.mark_durable(2);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn compaction_and_max_size_follow_raft_rules() {
        let mut c = EntryCache::new(1 << 20);
        c.append(&(1..=4).map(|i| ent(i, 1, 100)).collect::<Vec<_>>(), 1);
        c.compact_to(2);
        assert!(c.get(2, 3, None).is_none());
        // Always at least one entry, then stop once the total passes the limit.
        assert_eq!(c.get(3, 5, Some(1)).unwrap().len(), 1);
        let one = protobuf::Message::compute_size(&ent(3, 1, 100)) as u64;
        assert_eq!(c.get(3, 5, Some(2 * one)).unwrap().len(), 2);
        assert_eq!(c.get(3, 5, Some(2 * one - 1)).unwrap().len(), 1);
    }
}
