//! The mock's generation vocabulary: for a topic, a large deterministic list of plausible
//! items ("matte ceramic handle"), drawn with a Zipf-like skew so repeats are common early
//! and rarer items keep appearing, as with real models.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use xxhash_rust::xxh3::xxh3_64_with_seed;

const QUALITIES: [&str; 40] = [
    "compact",
    "durable",
    "lightweight",
    "modular",
    "matte",
    "glossy",
    "foldable",
    "waterproof",
    "heated",
    "insulated",
    "rechargeable",
    "handheld",
    "wireless",
    "adjustable",
    "stackable",
    "reusable",
    "transparent",
    "textured",
    "weighted",
    "magnetic",
    "scented",
    "silent",
    "portable",
    "ergonomic",
    "vintage",
    "minimalist",
    "solar",
    "smart",
    "hand-made",
    "recycled",
    "reinforced",
    "collapsible",
    "non-slip",
    "child-safe",
    "low-cost",
    "premium",
    "seasonal",
    "industrial",
    "decorative",
    "modern",
];

const MATERIALS: [&str; 40] = [
    "ceramic",
    "bamboo",
    "steel",
    "copper",
    "oak",
    "glass",
    "silicone",
    "leather",
    "linen",
    "wool",
    "cork",
    "marble",
    "aluminium",
    "titanium",
    "rubber",
    "canvas",
    "walnut",
    "brass",
    "felt",
    "paper",
    "carbon",
    "granite",
    "hemp",
    "nylon",
    "porcelain",
    "resin",
    "slate",
    "velvet",
    "wicker",
    "zinc",
    "clay",
    "concrete",
    "denim",
    "enamel",
    "jute",
    "maple",
    "pewter",
    "quartz",
    "rattan",
    "teak",
];

const PARTS: [&str; 40] = [
    "handle", "lid", "base", "grip", "strap", "hinge", "frame", "panel", "cover", "stand",
    "sleeve", "edge", "clasp", "dial", "rim", "spout", "tray", "shell", "cushion", "filter",
    "mount", "blade", "knob", "pocket", "vent", "seal", "coating", "lining", "finish", "pattern",
    "label", "cord", "latch", "wheel", "stopper", "holder", "case", "bracket", "insert", "trim",
];

/// Facets for partitioning a topic.
pub(super) const FACETS: [&str; 12] = [
    "materials",
    "uses",
    "users",
    "places",
    "shapes",
    "colours",
    "sizes",
    "features",
    "problems",
    "accessories",
    "styles",
    "seasons",
];

/// Vocabularies by (topic, size, Zipf exponent bits).
type VocabularyCache = HashMap<(String, u32, u64), Arc<Vocabulary>>;

/// The items of one (topic, subtopic) and the cumulative Zipf weights to draw them with.
pub(super) struct Vocabulary {
    items: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    /// Deterministic for its arguments; cached, since producers ask for the same one often.
    pub(super) fn get(topic: &str, size: u32, zipf: f64) -> Arc<Vocabulary> {
        static CACHE: OnceLock<Mutex<VocabularyCache>> = OnceLock::new();
        let key = (topic.to_string(), size, zipf.to_bits());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(v) = cache.lock().expect("not poisoned").get(&key) {
            return Arc::clone(v);
        }
        let v = Arc::new(Vocabulary::build(topic, size, zipf));
        cache
            .lock()
            .expect("not poisoned")
            .insert(key, Arc::clone(&v));
        v
    }

    fn build(topic: &str, size: u32, zipf: f64) -> Vocabulary {
        let size = size.clamp(1, 64_000) as u64;
        let seed = xxh3_64_with_seed(topic.as_bytes(), 0x0076_6f63_6162);
        // A permutation of the 64,000 combinations by an affine map with an odd multiplier
        // modulo 64,000 (odd and not a multiple of 5 keeps it a bijection).
        let total = 64_000u64;
        let mut mul = (seed % total) | 1;
        while mul.is_multiple_of(5) {
            mul += 2;
        }
        let add = (seed >> 20) % total;
        let items = (0..size)
            .map(|r| {
                let c = (r * mul + add) % total;
                let (q, m, p) = (
                    (c / 1600) as usize,
                    ((c / 40) % 40) as usize,
                    (c % 40) as usize,
                );
                format!("{} {} {}", QUALITIES[q], MATERIALS[m], PARTS[p])
            })
            .collect();
        let mut cdf = Vec::with_capacity(size as usize);
        let mut sum = 0.0;
        for r in 1..=size {
            sum += 1.0 / (r as f64).powf(zipf);
            cdf.push(sum);
        }
        Vocabulary { items, cdf }
    }

    /// Draws one item by rank, with `u` uniform in [0, 1).
    pub(super) fn draw(&self, u: f64) -> &str {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let target = u * total;
        let i = self
            .cdf
            .partition_point(|&c| c < target)
            .min(self.items.len() - 1);
        &self.items[i]
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_distinct_and_skewed() {
        let v = Vocabulary::get("kitchen", 2000, 1.0);
        let w = Vocabulary::get("kitchen", 2000, 1.0);
        assert_eq!(v.draw(0.5), w.draw(0.5));
        let distinct: std::collections::HashSet<&String> = v.items.iter().collect();
        assert_eq!(distinct.len(), 2000);
        // The top item is drawn far more often than a rare one.
        let mut rng = fastrand::Rng::with_seed(1);
        let top = &v.items[0];
        let hits = (0..10_000).filter(|_| v.draw(rng.f64()) == top).count();
        assert!(hits > 500, "{hits}");
        assert_ne!(Vocabulary::get("garden", 2000, 1.0).items[0], v.items[0]);
    }
}
