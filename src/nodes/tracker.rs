//! The run-wide uniqueness tracker: a fastbloom filter in front of an exact set. The filter
//! answers "certainly new" cheaply; its "maybe seen" is always checked against the exact set,
//! so a false positive never drops a good item. The observed false-positive rate is counted
//! so the configured one can be checked.

use std::collections::HashSet;

use fastbloom::BloomFilter;
use serde::{Deserialize, Serialize};

pub struct Tracker {
    bloom: BloomFilter,
    exact: HashSet<String>,
    configured_fp: f64,
    /// Items that were new (the filter was asked about each).
    new_checks: u64,
    /// Of those, how many the filter wrongly called "maybe seen".
    false_positives: u64,
    duplicates: u64,
}

/// Filter statistics, for the metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackerStats {
    pub unique: u64,
    pub duplicates: u64,
    pub bloom_bits: usize,
    pub bloom_hashes: u32,
    pub configured_false_positive_rate: f64,
    /// False positives among new items; each was caught by the exact set.
    pub observed_false_positive_rate: f64,
    pub false_positives_caught: u64,
}

impl Tracker {
    /// Sized for `expected` items at false-positive rate `fp`.
    pub fn new(expected: usize, fp: f64) -> Tracker {
        let fp = fp.clamp(1e-9, 0.99);
        Tracker {
            bloom: BloomFilter::with_false_pos(fp)
                .seed(&0x006f_7263_5f74_7261_636b_6572_u128)
                .expected_items(expected.max(1)),
            exact: HashSet::with_capacity(expected.min(1 << 20)),
            configured_fp: fp,
            new_checks: 0,
            false_positives: 0,
            duplicates: 0,
        }
    }

    /// Records `key` (a normal form); true when it was not seen before.
    pub fn insert(&mut self, key: &str) -> bool {
        if self.bloom.contains(key) {
            if self.exact.contains(key) {
                self.duplicates += 1;
                return false;
            }
            self.false_positives += 1;
        } else {
            self.bloom.insert(key);
        }
        self.new_checks += 1;
        self.exact.insert(key.to_string());
        true
    }

    pub fn contains(&self, key: &str) -> bool {
        self.bloom.contains(key) && self.exact.contains(key)
    }

    pub fn len(&self) -> usize {
        self.exact.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            unique: self.exact.len() as u64,
            duplicates: self.duplicates,
            bloom_bits: self.bloom.num_bits(),
            bloom_hashes: self.bloom.num_hashes(),
            configured_false_positive_rate: self.configured_fp,
            observed_false_positive_rate: if self.new_checks == 0 {
                0.0
            } else {
                self.false_positives as f64 / self.new_checks as f64
            },
            false_positives_caught: self.false_positives,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_filter_loses_nothing() {
        // A filter sized for 10 items with a 50% false-positive rate, given 5,000 items.
        let mut tiny = Tracker::new(10, 0.5);
        let mut exact = HashSet::new();
        for i in 0..5000 {
            let key = format!("item {}", i % 3000);
            assert_eq!(tiny.insert(&key), exact.insert(key.clone()), "{key}");
        }
        assert_eq!(tiny.len(), 3000);
        let stats = tiny.stats();
        assert!(stats.false_positives_caught > 0);
        assert!(stats.observed_false_positive_rate > 0.1);
    }

    #[test]
    fn a_well_sized_filter_is_near_its_rate() {
        let mut t = Tracker::new(100_000, 0.01);
        for i in 0..100_000 {
            t.insert(&format!("k{i}"));
        }
        assert!(
            t.stats().observed_false_positive_rate < 0.03,
            "{:?}",
            t.stats()
        );
    }
}
