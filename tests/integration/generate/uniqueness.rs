//! Every item kept exactly once: the normaliser, the Bloom filter in front of the exact set,
//! and feedback of found items to the producers.

use pretty_assertions::assert_eq;

use super::fake::{Fake, Reply};
use super::{
    answer, assert_distinct_after_normalising, ensemble, fake_profile, float, num, run_gen, texts,
};

/// A mock with a topic of 300 items and no latency (a deterministic run).
const SMALL: (&str, &str) = ("small", "{provider: mock, vocabulary: 300}");

#[test]
fn no_two_items_are_equal_after_normalising() {
    let yaml = ensemble(
        &[SMALL],
        &["producers: 4", "batch_size: 10", "stop: {iterations: 10}"],
    );
    let node = run_gen(&yaml, &[]);
    let items = texts(&node);
    assert!(items.len() > 100, "{} items", items.len());
    assert_distinct_after_normalising(&items);
    // Most of the 400 candidates of a 300-item topic were repeats, and were dropped.
    let m = &node["metrics"];
    assert_eq!(num(m, "candidates"), 400);
    assert!(num(m, "unique") < 300, "{m:#}");
    assert_eq!(
        num(&m["tracker"], "duplicates"),
        num(m, "candidates") - num(m, "unique"),
        "{m:#}"
    );
}

/// A model that answers with the same item in many spellings: numbered, bulleted, quoted,
/// in bold, in other cases, with extra spaces and punctuation, in the plural.
#[test]
fn spellings_of_one_item_are_one_item() {
    let fake = Fake::always(Reply::json(answer(
        "Here are the attributes:\n\
         1. Red Apples!\n\
         2. red apple\n\
         3. **RED APPLE**\n\
         - Green pear.\n\
         * green   pears\n\
         \"Ripe Banana\"\n\
         ripe bananas\n\
         Boxes\n\
         box\n\
         Batteries\n\
         the battery",
    )));
    let yaml = ensemble(
        &[("model", &fake_profile(&fake, ""))],
        &["producers: 2", "batch_size: 10", "stop: {iterations: 2}"],
    );
    let node = run_gen(&yaml, &[]);
    let items = texts(&node);
    assert_eq!(
        items,
        [
            "Red Apples!",
            "Green pear",
            "Ripe Banana",
            "Boxes",
            "Batteries",
            "the battery"
        ],
        "the first spelling of each item, in order"
    );
    assert_distinct_after_normalising(&items);
    let m = &node["metrics"];
    assert_eq!(num(m, "calls"), 4);
    // The preamble is not an item; the other 11 lines of each answer are candidates.
    assert_eq!(num(m, "candidates"), 44, "{m:#}");
    assert_eq!(m["new_per_call"], serde_json::json!([6, 0, 0, 0]));
}

#[test]
fn normalize_false_compares_the_text_as_it_is() {
    let fake = Fake::always(Reply::json(answer(
        "Red Apple\nred apple\nred apple\n  red apple  ",
    )));
    let yaml = ensemble(
        &[("model", &fake_profile(&fake, ""))],
        &[
            "producers: 1",
            "batch_size: 4",
            "normalize: false",
            "stop: {iterations: 1}",
        ],
    );
    let node = run_gen(&yaml, &[]);
    assert_eq!(texts(&node), ["Red Apple", "red apple"]);
}

/// The items of `node` with where they came from, but not when.
fn provenance(node: &serde_json::Value) -> Vec<serde_json::Value> {
    node["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut i = i.clone();
            i.as_object_mut().unwrap().remove("at");
            i
        })
        .collect()
}

/// A filter sized for 10 items at a 50% false-positive rate, given hundreds: it answers
/// "maybe seen" for most new items, and the exact set behind it keeps every one of them.
#[test]
fn a_tiny_bloom_filter_loses_nothing() {
    let keys = ["producers: 4", "batch_size: 10", "stop: {iterations: 10}"];
    let mock = ("wide", "{provider: mock, vocabulary: 3000}");
    let default = run_gen(&ensemble(&[mock], &keys), &["--seed", "7"]);
    let mut tiny_keys = keys.to_vec();
    tiny_keys.push("tracker: {expected_items: 10, false_positive_rate: 0.5}");
    let tiny = run_gen(&ensemble(&[mock], &tiny_keys), &["--seed", "7"]);

    assert_eq!(
        provenance(&tiny),
        provenance(&default),
        "items lost or changed"
    );
    assert_eq!(tiny["output"], default["output"]);
    assert_eq!(tiny["metrics"]["unique"], default["metrics"]["unique"]);
    assert_eq!(
        tiny["metrics"]["new_per_call"],
        default["metrics"]["new_per_call"]
    );

    let small = &tiny["metrics"]["tracker"];
    let large = &default["metrics"]["tracker"];
    assert!(
        num(small, "bloom_bits") < num(large, "bloom_bits"),
        "{small:#}\n{large:#}"
    );
    assert_eq!(float(small, "configured_false_positive_rate"), 0.5);
    assert_eq!(float(large, "configured_false_positive_rate"), 0.01);
    assert!(
        num(small, "false_positives_caught") > 50,
        "the tiny filter was wrong about many new items: {small:#}"
    );
    assert!(
        float(small, "observed_false_positive_rate") > 0.25,
        "{small:#}"
    );
    assert!(
        float(large, "observed_false_positive_rate") < 0.05,
        "{large:#}"
    );
    assert_eq!(small["duplicates"], large["duplicates"]);
    assert_eq!(small["unique"], tiny["metrics"]["unique"]);
}

/// Feedback shows producers what was found and the mock avoids most of it, so fewer
/// candidates are repeats. Compared seed by seed on a 1,000-item topic.
#[test]
fn feedback_lowers_the_duplicate_rate() {
    let mock = ("m", "{provider: mock, vocabulary: 1000}");
    let run = |feedback: u32, seed: u32| {
        let yaml = ensemble(
            &[mock],
            &[
                "producers: 4",
                "batch_size: 10",
                &format!("feedback: {feedback}"),
                "stop: {iterations: 5}",
            ],
        );
        run_gen(&yaml, &["--seed", &seed.to_string()])["metrics"].clone()
    };
    let (mut off_dup, mut on_dup, mut candidates) = (0, 0, 0);
    for seed in 1..=4 {
        let off = run(0, seed);
        let on = run(50, seed);
        assert_eq!(num(&off, "candidates"), num(&on, "candidates"));
        let duplicates = |m: &serde_json::Value| num(m, "candidates") - num(m, "unique");
        assert!(
            duplicates(&on) < duplicates(&off),
            "seed {seed}: {} duplicates with feedback, {} without",
            duplicates(&on),
            duplicates(&off)
        );
        // The prompts really carried the found items.
        assert!(
            num(&on, "input_tokens") > 2 * num(&off, "input_tokens"),
            "seed {seed}: prompts with feedback are no longer: {} vs {} tokens",
            on["input_tokens"],
            off["input_tokens"]
        );
        off_dup += duplicates(&off);
        on_dup += duplicates(&on);
        candidates += num(&on, "candidates");
    }
    let (off_rate, on_rate) = (
        off_dup as f64 / candidates as f64,
        on_dup as f64 / candidates as f64,
    );
    assert!(
        on_rate < off_rate - 0.04,
        "duplicate rate {on_rate:.3} with feedback, {off_rate:.3} without"
    );
}
