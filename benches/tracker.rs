//! Throughput and memory of the run-wide uniqueness tracker (`orc::nodes::tracker::Tracker`:
//! a Bloom filter in front of an exact set), on one core.
//!
//!     cargo bench --bench tracker                 # 10 million checks, fp 0.01
//!     cargo bench --bench tracker -- --items 2000000 --fp 0.001 --json
//!
//! No benchmark framework (`harness = false`): every phase runs once over 10 million checks,
//! which is long enough (seconds) for a stable figure. The checks are 90 % new items and
//! 10 % repeats of an earlier item picked uniformly (the harder case for caches than recent
//! repeats), with item texts shaped like generated attributes
//! ("Matte ceramic handles (3f9a2c71b)", ~30 characters).
//!
//! Phases, each on a fresh tracker sized for the number of distinct items:
//! 1. key generation only (the cost of the benchmark's own loop, subtracted below);
//! 2. `insert` of already-normal keys: checks per second and memory per million unique items
//!    (growth of VmRSS from /proc/self/status, and an estimate from the tracker's sizes);
//! 3. `insert(normalize(raw, true))`: the path `generate` takes for every candidate;
//! 4. on the full tracker of phase 2, a fifth as many checks (2 million) of items already
//!    present, picked uniformly (the late-run case, where most candidates are duplicates and every Bloom "maybe" goes to the
//!    exact set).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use orc::nodes::normalize::normalize;
use orc::nodes::tracker::Tracker;

const QUALITIES: [&str; 8] = [
    "Compact",
    "Durable",
    "Matte",
    "Glossy",
    "Foldable",
    "Heated",
    "Wireless",
    "Ergonomic",
];
const MATERIALS: [&str; 8] = [
    "ceramic", "bamboo", "steel", "copper", "oak", "glass", "silicone", "leather",
];
const PARTS: [&str; 8] = [
    "handles", "lids", "hinges", "bases", "straps", "knobs", "panels", "spouts",
];

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`-th distinct item: raw text (as a model would write it) and its normal form.
/// The hexadecimal suffix is a bijection of `n` modulo 2^40, so items never collide.
fn raw_item(n: u64, buf: &mut String) {
    let h = splitmix(n);
    let id = n.wrapping_mul(0x5851_f42d_4c95_7f2d) & ((1 << 40) - 1);
    buf.clear();
    let _ = write!(
        buf,
        "{} {} {} ({id:x})",
        QUALITIES[(h % 8) as usize],
        MATERIALS[((h >> 8) % 8) as usize],
        PARTS[((h >> 16) % 8) as usize],
    );
}

fn normal_item(n: u64, buf: &mut String) {
    let h = splitmix(n);
    let id = n.wrapping_mul(0x5851_f42d_4c95_7f2d) & ((1 << 40) - 1);
    buf.clear();
    let q = QUALITIES[(h % 8) as usize];
    let p = PARTS[((h >> 16) % 8) as usize];
    for c in q.chars() {
        buf.push(c.to_ascii_lowercase());
    }
    let _ = write!(
        buf,
        " {} {} {id:x}",
        MATERIALS[((h >> 8) % 8) as usize],
        &p[..p.len() - 1],
    );
}

/// The sequence of checks: item numbers, 90 % new (in order) and 10 % repeats.
struct Checks {
    i: u64,
    next_new: u64,
    rng: u64,
}

impl Checks {
    fn new() -> Checks {
        Checks {
            i: 0,
            next_new: 0,
            rng: 0x0bad_5eed,
        }
    }

    fn next(&mut self) -> u64 {
        self.i += 1;
        if self.i.is_multiple_of(10) && self.next_new > 0 {
            self.rng = splitmix(self.rng);
            self.rng % self.next_new
        } else {
            self.next_new += 1;
            self.next_new - 1
        }
    }
}

fn distinct_in(checks: u64) -> u64 {
    checks - checks / 10
}

/// Resident set size of this process in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

struct Phase {
    name: &'static str,
    checks: u64,
    secs: f64,
    new: u64,
}

impl Phase {
    fn ns_per_check(&self) -> f64 {
        self.secs * 1e9 / self.checks as f64
    }
    fn per_sec(&self) -> f64 {
        self.checks as f64 / self.secs
    }
}

fn main() {
    let mut items: u64 = 10_000_000;
    let mut fp = 0.01;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--items" => items = args.next().and_then(|v| v.parse().ok()).expect("--items N"),
            "--fp" => fp = args.next().and_then(|v| v.parse().ok()).expect("--fp RATE"),
            "--json" => json = true,
            // `cargo bench` passes `--bench`; a filter string is accepted and ignored.
            _ => {}
        }
    }
    let distinct = distinct_in(items);
    eprintln!(
        "tracker benchmark: {items} checks ({distinct} distinct, {} repeats), fp {fp}, one thread",
        items - distinct
    );
    let mut buf = String::with_capacity(64);

    // 1. The loop without the tracker.
    let t = Instant::now();
    let mut checks = Checks::new();
    let mut sink = 0usize;
    for _ in 0..items {
        normal_item(checks.next(), &mut buf);
        sink = sink.wrapping_add(black_box(&buf).len());
    }
    let keygen = t.elapsed().as_secs_f64();
    black_box(sink);
    let keygen_ns = keygen * 1e9 / items as f64;

    // 2. insert of normal forms; memory.
    let rss0 = rss_bytes();
    let mut tracker = Tracker::new(distinct as usize, fp);
    let mut checks = Checks::new();
    let mut new = 0u64;
    let t = Instant::now();
    for _ in 0..items {
        normal_item(checks.next(), &mut buf);
        new += u64::from(tracker.insert(&buf));
    }
    let insert = Phase {
        name: "insert (normal forms)",
        checks: items,
        secs: t.elapsed().as_secs_f64(),
        new,
    };
    let rss1 = rss_bytes();
    assert_eq!(new, distinct, "every distinct item is new exactly once");
    let stats = tracker.stats();
    let unique_m = stats.unique as f64 / 1e6;
    let rss_per_m = (rss1.saturating_sub(rss0)) as f64 / unique_m;
    // Estimate from sizes: the filter's bits, plus the exact set's table (hashbrown: buckets a
    // power of two >= 8/7 of the items, one control byte and a 24-byte `String` each) and
    // every key's heap block (glibc: length + 8 rounded up to 16, minimum 32).
    let buckets = (stats.unique * 8 / 7).next_power_of_two();
    let mut key_bytes = 0u64;
    let mut sample = Checks::new();
    let sample_n = 100_000.min(distinct);
    for _ in 0..sample_n {
        normal_item(sample.next_new, &mut buf);
        sample.next_new += 1;
        key_bytes += (buf.len() as u64 + 8).div_ceil(16).max(2) * 16;
    }
    let key_heap = key_bytes as f64 / sample_n as f64 * stats.unique as f64;
    let bloom_bytes = stats.bloom_bits as f64 / 8.0;
    let est = bloom_bytes + buckets as f64 * 25.0 + key_heap;

    // 4. repeat checks on the full tracker (before dropping it).
    let repeats = (items / 5).max(1);
    let mut rng = 0x00c0_ffee_u64;
    let mut dup = 0u64;
    let t = Instant::now();
    for _ in 0..repeats {
        rng = splitmix(rng);
        normal_item(rng % distinct, &mut buf);
        dup += u64::from(!tracker.insert(&buf));
    }
    let repeat = Phase {
        name: "insert, all repeats (full tracker)",
        checks: repeats,
        secs: t.elapsed().as_secs_f64(),
        new: repeats - dup,
    };
    assert_eq!(dup, repeats);
    drop(tracker);

    // 3. insert(normalize(raw)).
    let mut tracker = Tracker::new(distinct as usize, fp);
    let mut checks = Checks::new();
    let mut new = 0u64;
    let t = Instant::now();
    for _ in 0..items {
        raw_item(checks.next(), &mut buf);
        new += u64::from(tracker.insert(&normalize(&buf, true)));
    }
    let with_norm = Phase {
        name: "normalize + insert (raw text)",
        checks: items,
        secs: t.elapsed().as_secs_f64(),
        new,
    };
    assert_eq!(
        new, distinct,
        "the normaliser maps raw and normal forms alike"
    );
    // Raw key generation, to separate the normaliser's own cost.
    let mut checks = Checks::new();
    let t = Instant::now();
    for _ in 0..items {
        raw_item(checks.next(), &mut buf);
        sink = sink.wrapping_add(black_box(&buf).len());
    }
    let raw_keygen_ns = t.elapsed().as_secs_f64() * 1e9 / items as f64;
    black_box(sink);
    let mut checks = Checks::new();
    let t = Instant::now();
    for _ in 0..items {
        raw_item(checks.next(), &mut buf);
        sink = sink.wrapping_add(normalize(black_box(&buf), true).len());
    }
    let norm_only_ns = t.elapsed().as_secs_f64() * 1e9 / items as f64 - raw_keygen_ns;
    black_box(sink);

    let mib = 1024.0 * 1024.0;
    println!();
    println!(
        "{:<38} {:>10} {:>12} {:>14} {:>12}",
        "phase", "time", "ns/check", "checks/s", "new"
    );
    for (p, gen_ns) in [
        (&insert, keygen_ns),
        (&with_norm, raw_keygen_ns),
        (&repeat, keygen_ns),
    ] {
        println!(
            "{:<38} {:>8.2} s {:>12.1} {:>14} {:>12}",
            p.name,
            p.secs,
            p.ns_per_check(),
            format!("{:.2} M", p.per_sec() / 1e6),
            p.new
        );
        println!(
            "{:<38} {:>10} {:>12.1} {:>14}",
            "  minus key generation",
            "",
            p.ns_per_check() - gen_ns,
            format!("{:.2} M", 1e3 / (p.ns_per_check() - gen_ns)),
        );
    }
    println!(
        "key generation: {keygen_ns:.1} ns (normal) / {raw_keygen_ns:.1} ns (raw); \
         normalize alone: {norm_only_ns:.1} ns an item"
    );
    println!();
    println!(
        "tracker: {} unique, Bloom {} bits ({:.1} MiB), {} hashes, fp configured {} observed {:.4} \
         ({} caught by the exact set)",
        stats.unique,
        stats.bloom_bits,
        bloom_bytes / mib,
        stats.bloom_hashes,
        stats.configured_false_positive_rate,
        stats.observed_false_positive_rate,
        stats.false_positives_caught
    );
    println!(
        "memory per million unique items: {:.1} MiB measured (VmRSS +{:.0} MiB), {:.1} MiB \
         estimated (Bloom {:.1} + table {:.1} + keys {:.1})",
        rss_per_m / mib,
        (rss1.saturating_sub(rss0)) as f64 / mib,
        est / unique_m / mib,
        bloom_bytes / unique_m / mib,
        buckets as f64 * 25.0 / unique_m / mib,
        key_heap / unique_m / mib,
    );
    if json {
        let phase = |p: &Phase| {
            format!(
                "{{\"checks\": {}, \"secs\": {:.4}, \"ns_per_check\": {:.2}, \"checks_per_sec\": {:.0}, \"new\": {}}}",
                p.checks,
                p.secs,
                p.ns_per_check(),
                p.per_sec(),
                p.new
            )
        };
        println!(
            "{{\"items\": {items}, \"distinct\": {distinct}, \"fp\": {fp}, \
             \"insert\": {}, \"normalize_insert\": {}, \"repeat\": {}, \
             \"keygen_ns\": {keygen_ns:.2}, \"raw_keygen_ns\": {raw_keygen_ns:.2}, \
             \"normalize_ns\": {norm_only_ns:.2}, \"bloom_bits\": {}, \"bloom_hashes\": {}, \
             \"observed_fp\": {}, \"rss_growth_bytes\": {}, \"mib_per_million_measured\": {:.2}, \
             \"mib_per_million_estimated\": {:.2}}}",
            phase(&insert),
            phase(&with_norm),
            phase(&repeat),
            stats.bloom_bits,
            stats.bloom_hashes,
            stats.observed_false_positive_rate,
            rss1.saturating_sub(rss0),
            rss_per_m / mib,
            est / unique_m / mib,
        );
    }
}
