//! Hostile input (issue 13): thousands of mutated ensembles, every number at its bounds,
//! YAML bombs under a memory limit, special files, paths to files that are not ensembles,
//! output files that exist, and a corrupt or booby-trapped key store. Nothing may panic,
//! every refusal must point into the file, and what `validate` accepts must plan.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use orc::config::{
    ConfigErrorKind, ConfigReport, Origin, PriceTable, ProfileSet, SourceFile, load_ensemble,
};
use orc::diagnostics::Renderer;
use orc::plan::{Plan, PlanFormat, render};

use crate::support::{ENSEMBLE, ORC, Test, wait_with_limit};

/// The shipped ensembles, by file name.
fn shipped() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ensembles");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("ensembles/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("read a shipped ensemble"),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "found the shipped ensembles");
    files
}

/// A copy of `ensembles/` (files and scripts), so that mutants next to them resolve their
/// nested ensembles and scripts as the originals do.
fn shipped_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("ensembles");
    for (name, text) in shipped() {
        std::fs::write(dir.path().join(name), text).expect("copy an ensemble");
    }
    std::fs::create_dir_all(dir.path().join("scripts")).expect("scripts dir");
    for entry in std::fs::read_dir(source.join("scripts")).expect("ensembles/scripts") {
        let path = entry.expect("a script").path();
        std::fs::copy(
            &path,
            dir.path().join("scripts").join(path.file_name().unwrap()),
        )
        .expect("copy a script");
    }
    dir
}

/// Numbers that broke orc once or might: negative, zero, past 32 and 64 bits, past any
/// duration, not finite, integral floats, tiny.
const HOSTILE_NUMBERS: [&str; 14] = [
    "-1",
    "0",
    "4294967296",
    "5000000000",
    "1e18",
    "18446744073709551616",
    "1e300",
    ".inf",
    "-.inf",
    ".nan",
    "3.",
    "2.5",
    "0.0000001",
    "-0",
];

/// Scalars that are not what a key expects, or are YAML oddities.
const HOSTILE_TOKENS: [&str; 16] = [
    "~",
    "[]",
    "{}",
    "&a x",
    "*a",
    "*nope",
    "!!binary aGk=",
    "!custom {a: 1}",
    "\"\\u0000\"",
    "yes",
    "'",
    "[[[[[[[[",
    "- x",
    ": x",
    "? x",
    "\"{{ nope }}\"",
];

/// Keys with numbers, inserted where they may or may not belong.
const NUMERIC_KEYS: [&str; 22] = [
    "timeout_seconds",
    "retries",
    "retry_backoff_ms",
    "max_tokens",
    "temperature",
    "producers",
    "batch_size",
    "feedback",
    "stop: {seconds: $}",
    "stop: {iterations: $}",
    "stop: {unique: $}",
    "tracker: {expected_items: $}",
    "tracker: {false_positive_rate: $}",
    "budget: {max_cost_usd: $}",
    "near_duplicates",
    "latency_ms",
    "cool_down_seconds",
    "circuit_breaker: {cool_down_seconds: $}",
    "limits: {max_concurrency: $}",
    "price: {input_per_mtok: $, output_per_mtok: 1}",
    "first_byte_timeout_seconds",
    "vocabulary",
];

/// One random change to YAML text: bytes, numbers, tokens, lines or indentation.
fn mutate_once(rng: &mut fastrand::Rng, text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let pick_line = |rng: &mut fastrand::Rng| rng.usize(..lines.len().max(1));
    match rng.u8(..10) {
        // A byte becomes another, sometimes not UTF-8.
        0 => {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.is_empty() {
                return text.to_string();
            }
            let at = rng.usize(..bytes.len());
            const BYTES: &[u8] = b":-[]{},&*!#'\"|>?%@` \t\n\r\x00\x01\x7f\xff\xc3\xe2a0.";
            bytes[at] = BYTES[rng.usize(..BYTES.len())];
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // A number becomes a hostile one.
        1 | 2 => {
            let numbers: Vec<(usize, usize)> = number_spans(text);
            if numbers.is_empty() {
                return text.to_string();
            }
            let (start, end) = numbers[rng.usize(..numbers.len())];
            let with = HOSTILE_NUMBERS[rng.usize(..HOSTILE_NUMBERS.len())];
            format!("{}{}{}", &text[..start], with, &text[end..])
        }
        // A value becomes a hostile token.
        3 => {
            let i = pick_line(rng);
            let Some(line) = lines.get(i) else {
                return text.to_string();
            };
            let Some(colon) = line.find(": ") else {
                return text.to_string();
            };
            let token = HOSTILE_TOKENS[rng.usize(..HOSTILE_TOKENS.len())];
            let mut out: String = lines[..i].concat();
            out.push_str(&line[..colon + 2]);
            out.push_str(token);
            out.push('\n');
            out.push_str(&lines[i + 1..].concat());
            out
        }
        // A numeric key is added at the indentation of some line.
        4 | 5 => {
            let i = pick_line(rng);
            let indent: String = lines
                .get(i)
                .map(|l| l.chars().take_while(|c| *c == ' ').collect())
                .unwrap_or_default();
            let key = NUMERIC_KEYS[rng.usize(..NUMERIC_KEYS.len())];
            let number = HOSTILE_NUMBERS[rng.usize(..HOSTILE_NUMBERS.len())];
            let entry = if key.contains('$') {
                key.replace('$', number)
            } else {
                format!("{key}: {number}")
            };
            let mut out: String = lines[..i].concat();
            out.push_str(&format!("{indent}{entry}\n"));
            out.push_str(&lines[i..].concat());
            out
        }
        // A line is repeated or removed.
        6 => {
            let i = pick_line(rng);
            let mut out: Vec<&str> = lines.clone();
            if rng.bool() && !out.is_empty() {
                out.remove(i.min(out.len() - 1));
            } else if let Some(line) = lines.get(i) {
                out.insert(i, line);
            }
            out.concat()
        }
        // Indentation grows or shrinks, or gains a tab.
        7 => {
            let i = pick_line(rng);
            let Some(line) = lines.get(i) else {
                return text.to_string();
            };
            let changed = match rng.u8(..3) {
                0 => format!("  {line}"),
                1 => line.strip_prefix("  ").unwrap_or(line).to_string(),
                _ => format!("\t{line}"),
            };
            let mut out: String = lines[..i].concat();
            out.push_str(&changed);
            out.push_str(&lines[i + 1..].concat());
            out
        }
        // Two lines swap.
        8 => {
            let (a, b) = (pick_line(rng), pick_line(rng));
            let mut out: Vec<&str> = lines.clone();
            if a < out.len() && b < out.len() {
                out.swap(a, b);
            }
            out.concat()
        }
        // The text is cut short.
        _ => {
            let mut at = rng.usize(..=text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text[..at].to_string()
        }
    }
}

/// Byte ranges of the numbers in a text.
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if starts {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if i == bytes.len() || !bytes[i].is_ascii_alphabetic() {
                spans.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    spans
}

fn mutate(rng: &mut fastrand::Rng, text: &str) -> String {
    let mut out = text.to_string();
    for _ in 0..rng.usize(1..=3) {
        out = mutate_once(rng, &out);
    }
    out
}

/// What must hold for any file: every diagnostic renders and points into a file (an empty
/// file has nothing to point at), a refusal comes with an error, and what loads plans.
fn check_loaded(
    ensemble: Option<orc::config::Ensemble>,
    report: &ConfigReport,
    renderer: &Renderer,
    expects_ensemble: bool,
) -> Result<(), String> {
    for (i, d) in report.diagnostics.iter().enumerate() {
        // Rendering is the slow part; the first few show any panic as well as all would.
        if i < 4 {
            let _ = renderer.render(d);
        }
        if d.span.is_none() && !matches!(d.kind, ConfigErrorKind::Empty) {
            return Err(format!("no location: {d}"));
        }
    }
    match ensemble {
        None if !report.has_errors() && expects_ensemble => Err("refused without an error".into()),
        None => Ok(()),
        Some(_) if report.has_errors() => Err("loaded despite errors".into()),
        Some(ensemble) => {
            let plan = Plan::new(ensemble);
            for format in [
                PlanFormat::Text,
                PlanFormat::Json,
                PlanFormat::Dot,
                PlanFormat::Mermaid,
            ] {
                let _ = render(&plan, format);
            }
            Ok(())
        }
    }
}

/// Runs `f`, turning a panic into an error with its message.
fn no_panic(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Issue 13: a seeded mutation test over the shipped ensembles, through the same load and
/// plan as `orc validate` and `orc plan`. Two threads, each with its own seeded sequence, so
/// the mutants are the same on every run.
#[test]
fn mutated_ensembles_never_panic_and_every_refusal_is_located() {
    const SEED: u64 = 13;
    const THREADS: u64 = 2;
    const MUTANTS_PER_THREAD: usize = 1200;
    let originals = shipped();
    let dir = shipped_dir();
    let results: Vec<(Vec<String>, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let originals = &originals;
                let dir = dir.path();
                scope.spawn(move || {
                    let profiles = ProfileSet::builtin();
                    let renderer = Renderer::new(false);
                    let mut rng = fastrand::Rng::with_seed(SEED + t);
                    let path = dir.join(format!("mutant-{t}.yaml"));
                    let mut failures = Vec::new();
                    let mut refused = 0;
                    for n in 0..MUTANTS_PER_THREAD {
                        let (name, text) = &originals[rng.usize(..originals.len())];
                        let mutant = mutate(&mut rng, text);
                        std::fs::write(&path, &mutant).expect("write the mutant");
                        let result = no_panic(|| {
                            let (ensemble, report) = load_ensemble(&path, &profiles);
                            if report.has_errors() {
                                refused += 1;
                            }
                            check_loaded(ensemble, &report, &renderer, true)
                        });
                        if let Err(problem) = result {
                            failures.push(format!(
                                "thread {t}, mutant {n} of {name}: {problem}\n--- mutant ---\n{mutant}"
                            ));
                        }
                    }
                    (failures, refused)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker thread"))
            .collect()
    });
    let total = THREADS as usize * MUTANTS_PER_THREAD;
    let refused: usize = results.iter().map(|(_, r)| r).sum();
    let failures: Vec<String> = results.into_iter().flat_map(|(f, _)| f).collect();
    let mut kinds: Vec<String> = failures
        .iter()
        .filter_map(|f| f.lines().next())
        .filter_map(|l| l.split_once(": ").map(|(_, k)| k.to_string()))
        .collect();
    kinds.sort();
    kinds.dedup();
    assert!(
        failures.is_empty(),
        "{} of {total} mutants failed ({kinds:#?}); the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
    // The mutator must actually break files, or the test shows nothing.
    assert!(
        refused > total / 4 && refused < total,
        "{refused} of {total} mutants were refused"
    );
}

/// The binary agrees with itself: for a sample of mutants, `validate` and `plan` exit alike,
/// and a refusal always says why.
#[test]
fn validate_and_plan_agree_on_mutants() {
    let originals = shipped();
    let mut rng = fastrand::Rng::with_seed(1313);
    for n in 0..24 {
        let (name, text) = &originals[rng.usize(..originals.len())];
        let mutant = mutate(&mut rng, text);
        let run = |command: &str| {
            let mut test = Test::new();
            for (file, original) in &originals {
                test = test.file(file, original);
            }
            test.file(ENSEMBLE, &mutant).args([command, ENSEMBLE]).run()
        };
        let validated = run("validate");
        let planned = run("plan");
        let context = format!(
            "mutant {n} of {name}:\n{mutant}\n--- validate ---\n{}\n--- plan ---\n{}",
            validated.stderr, planned.stderr
        );
        assert_eq!(validated.code, planned.code, "{context}");
        assert!(
            matches!(validated.code, Some(0 | 2)),
            "exit {:?}: {context}",
            validated.code
        );
        for out in [&validated, &planned] {
            assert!(!out.stderr.contains("panicked"), "{context}");
            if out.code == Some(2) {
                assert!(out.stderr.contains('×'), "refused in silence: {context}");
            }
        }
    }
}

/// Where a number goes: a file template with `$` for the value, and whether it is a whole
/// number (so `3.` must be refused).
struct Knob {
    name: &'static str,
    template: &'static str,
    whole: bool,
}

const fn knob(name: &'static str, template: &'static str, whole: bool) -> Knob {
    Knob {
        name,
        template,
        whole,
    }
}

/// Every number of an ensemble file.
const ENSEMBLE_KNOBS: &[Knob] = &[
    knob(
        "timeout_seconds",
        "name: t\nagents:\n  - name: a\n    timeout_seconds: $\n",
        false,
    ),
    knob(
        "retries",
        "name: t\nagents:\n  - name: a\n    retries: $\n",
        true,
    ),
    knob(
        "retry_backoff_ms",
        "name: t\nagents:\n  - name: a\n    retry_backoff_ms: $\n",
        true,
    ),
    knob(
        "temperature",
        "name: t\nagents:\n  - name: a\n    temperature: $\n",
        false,
    ),
    knob(
        "max_tokens",
        "name: t\nagents:\n  - name: a\n    max_tokens: $\n",
        true,
    ),
    knob(
        "defaults.timeout_seconds",
        "name: t\ndefaults:\n  timeout_seconds: $\nagents:\n  - name: a\n",
        false,
    ),
    knob(
        "defaults.retries",
        "name: t\ndefaults:\n  retries: $\nagents:\n  - name: a\n",
        true,
    ),
    knob(
        "defaults.retry_backoff_ms",
        "name: t\ndefaults:\n  retry_backoff_ms: $\nagents:\n  - name: a\n",
        true,
    ),
    knob(
        "defaults.temperature",
        "name: t\ndefaults:\n  temperature: $\nagents:\n  - name: a\n",
        false,
    ),
    knob(
        "defaults.max_tokens",
        "name: t\ndefaults:\n  max_tokens: $\nagents:\n  - name: a\n",
        true,
    ),
    knob(
        "budget.max_cost_usd",
        "name: t\nbudget:\n  max_cost_usd: $\nagents:\n  - name: a\n",
        false,
    ),
    knob(
        "producers",
        "name: t\nagents:\n  - name: g\n    type: generate\n    producers: $\n",
        true,
    ),
    knob(
        "batch_size",
        "name: t\nagents:\n  - name: g\n    type: generate\n    batch_size: $\n",
        true,
    ),
    knob(
        "feedback",
        "name: t\nagents:\n  - name: g\n    type: generate\n    feedback: $\n",
        true,
    ),
    knob(
        "stop.iterations",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      iterations: $\n",
        true,
    ),
    knob(
        "stop.unique",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      unique: $\n",
        true,
    ),
    knob(
        "stop.seconds",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      seconds: $\n",
        false,
    ),
    knob(
        "stop.cost_usd",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      cost_usd: $\n",
        false,
    ),
    knob(
        "stop.min_new_per_call",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      min_new_per_call: $\n",
        false,
    ),
    knob(
        "stop.patience",
        "name: t\nagents:\n  - name: g\n    type: generate\n    stop:\n      min_new_per_call: 1\n      patience: $\n",
        true,
    ),
    knob(
        "tracker.expected_items",
        "name: t\nagents:\n  - name: g\n    type: generate\n    tracker:\n      expected_items: $\n",
        true,
    ),
    knob(
        "tracker.false_positive_rate",
        "name: t\nagents:\n  - name: g\n    type: generate\n    tracker:\n      false_positive_rate: $\n",
        false,
    ),
    knob(
        "optimizer.weights",
        "name: t\nagents:\n  - name: g\n    type: generate\n    profiles: [mock, mock-fast]\n    optimizer:\n      strategy: weighted\n      weights:\n        uam: $\n",
        false,
    ),
    knob(
        "near_duplicates",
        "name: t\nagents:\n  - name: a\n  - name: d\n    type: dedup\n    depends_on: [a]\n    near_duplicates: $\n",
        false,
    ),
    knob(
        "tests.seed",
        "name: t\nagents:\n  - name: a\ntests:\n  - name: x\n    input: hi\n    seed: $\n    expect: [{agent: a, status: succeeded}]\n",
        true,
    ),
    knob(
        "tests.max_cost_usd",
        "name: t\nagents:\n  - name: a\ntests:\n  - name: x\n    input: hi\n    expect:\n      - max_cost_usd: $\n",
        false,
    ),
    knob(
        "tests.max_tokens",
        "name: t\nagents:\n  - name: a\ntests:\n  - name: x\n    input: hi\n    expect:\n      - max_tokens: $\n",
        true,
    ),
];

/// Every number of a profile, as written under `model_profiles:` (in an ensemble or a
/// profiles file): the key line, indented under the profile.
const PROFILE_KNOBS: &[Knob] = &[
    knob("max_tokens", "max_tokens: $", true),
    knob("temperature", "temperature: $", false),
    knob("timeout_seconds", "timeout_seconds: $", false),
    knob(
        "first_byte_timeout_seconds",
        "first_byte_timeout_seconds: $",
        false,
    ),
    knob(
        "limits.requests_per_minute",
        "limits:\n      requests_per_minute: $",
        true,
    ),
    knob(
        "limits.tokens_per_minute",
        "limits:\n      tokens_per_minute: $",
        true,
    ),
    knob(
        "limits.max_concurrency",
        "limits:\n      max_concurrency: $",
        true,
    ),
    knob(
        "circuit_breaker.failures",
        "circuit_breaker:\n      failures: $",
        true,
    ),
    knob(
        "circuit_breaker.cool_down_seconds",
        "circuit_breaker:\n      cool_down_seconds: $",
        false,
    ),
    knob(
        "price.input_per_mtok",
        "price:\n      output_per_mtok: 1\n      input_per_mtok: $",
        false,
    ),
    knob(
        "price.output_per_mtok",
        "price:\n      input_per_mtok: 1\n      output_per_mtok: $",
        false,
    ),
    knob(
        "price.cached_input_per_mtok",
        "price:\n      input_per_mtok: 1\n      output_per_mtok: 1\n      cached_input_per_mtok: $",
        false,
    ),
    knob("latency_ms", "latency_ms: $", true),
    knob("jitter_ms", "jitter_ms: $", true),
    knob("fail_rate", "fail_rate: $", false),
    knob("fail_attempts", "fail_attempts: $", true),
    knob("invalid_json_attempts", "invalid_json_attempts: $", true),
    knob("vocabulary", "vocabulary: $", true),
    knob("zipf", "zipf: $", false),
    knob("yield", "yield: $", false),
    knob("feedback_adherence", "feedback_adherence: $", false),
];

/// Values every knob must refuse: none takes a negative, infinite, undefined or absurd
/// number.
const ALWAYS_REFUSED: [&str; 5] = ["-1", "1e300", ".inf", "-.inf", ".nan"];
/// The boundary values of issue 13, and a few more.
const BOUNDARY: [&str; 10] = [
    "-1",
    "0",
    "4294967296",
    "1e300",
    ".inf",
    "-.inf",
    ".nan",
    "3.",
    "1",
    "0.5",
];

/// Checks one file with a number in it: no panic, located refusals, a refusal where one is
/// due, and an error on the value's own line.
fn check_knob(
    name: &str,
    value: &str,
    whole: bool,
    text: &str,
    load: &dyn Fn(SourceFile) -> (Option<orc::config::Ensemble>, ConfigReport),
    expects_ensemble: bool,
) -> Result<(), String> {
    let renderer = Renderer::new(false);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines
        .iter()
        .rposition(|l| l.ends_with(&format!(": {value}")))
        .map(|i| i + 1)
        .expect("the value is on a line of its own");
    no_panic(|| {
        let file = SourceFile::new(PathBuf::from("knob.yaml"), "knob.yaml".into(), text);
        let (ensemble, report) = load(file.clone());
        let accepted = !report.has_errors();
        check_loaded(ensemble, &report, &renderer, expects_ensemble)?;
        let must_refuse = ALWAYS_REFUSED.contains(&value) || (whole && value == "3.");
        if must_refuse && accepted {
            return Err("accepted".into());
        }
        if !accepted {
            let on_line = report.diagnostics.iter().any(|d| {
                !d.kind.is_warning() && d.span.is_some_and(|s| file.line_of(s.offset()) == line)
            });
            if !on_line {
                let shown: Vec<String> = report.diagnostics.iter().map(|d| d.to_string()).collect();
                return Err(format!("no error on line {line}: {shown:?}"));
            }
        }
        Ok(())
    })
    .map_err(|e| format!("`{name}: {value}`: {e}\n{text}"))
}

/// Issue 13: every number in every file, at its boundaries, is either accepted (and plans)
/// or refused with an error on its own line; never a panic, never a silent refusal.
#[test]
fn every_numeric_knob_at_its_boundaries() {
    let profiles = ProfileSet::builtin();
    let mut failures = Vec::new();
    let load_ensemble_text = |file: SourceFile| orc::config::load_ensemble_source(file, &profiles);
    let load_profiles_file = |file: SourceFile| {
        let mut set = ProfileSet::default();
        (None, set.merge_file(file, &|_| Origin::Builtin))
    };
    for value in BOUNDARY {
        for k in ENSEMBLE_KNOBS {
            let text = k.template.replace('$', value);
            if let Err(e) = check_knob(k.name, value, k.whole, &text, &load_ensemble_text, true) {
                failures.push(e);
            }
        }
        for k in PROFILE_KNOBS {
            let key = k.template.replace('$', value);
            // Inside an ensemble ...
            let text = format!(
                "name: t\nmodel_profiles:\n  p:\n    provider: mock\n    {key}\nagents:\n  - name: a\n    model_profile: p\n"
            );
            if let Err(e) = check_knob(k.name, value, k.whole, &text, &load_ensemble_text, true) {
                failures.push(e);
            }
            // ... and in a profiles file, which loads into no ensemble.
            let text = format!("model_profiles:\n  p:\n    provider: mock\n    {key}\n");
            if let Err(e) = check_knob(k.name, value, k.whole, &text, &load_profiles_file, false) {
                failures.push(e);
            }
        }
        // The price table.
        let text = format!(
            "prices:\n  - provider: openai\n    model: m\n    output_per_mtok: 1\n    as_of: 2025-01-01\n    source: test\n    input_per_mtok: {value}\n"
        );
        let load_prices = |file| (None, PriceTable::default().merge_file(file));
        if let Err(e) = check_knob(
            "prices.input_per_mtok",
            value,
            false,
            &text,
            &load_prices,
            false,
        ) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

/// The binary says the same as the library for the values of the issue.
#[test]
fn boundary_values_are_refused_by_validate_plan_and_invoke_alike() {
    for text in [
        "name: t\nagents:\n  - name: a\n    max_tokens: 5000000000\n",
        "name: t\nagents:\n  - name: g\n    type: generate\n    producers: 3.\n",
        "name: t\nagents:\n  - name: a\n    retry_backoff_ms: 1e18\n",
        "name: t\nagents:\n  - name: a\n    timeout_seconds: -1\n",
        "name: t\nagents:\n  - name: a\n    timeout_seconds: 1e300\n",
        "name: t\nagents:\n  - name: g\n    type: generate\n    tracker: {expected_items: 1e12}\n",
        "name: t\nagents:\n  - name: g\n    type: generate\n    producers: 4294967295\n",
    ] {
        let validated = Test::new()
            .ensemble(text)
            .args(["validate", ENSEMBLE])
            .run()
            .invalid();
        assert!(
            validated.stderr.contains("─[ensemble.yaml:"),
            "{}",
            validated.stderr
        );
        for command in [vec!["plan", ENSEMBLE], vec!["invoke", ENSEMBLE, "x"]] {
            let out = Test::new().ensemble(text).args(command).run().invalid();
            assert!(
                validated.stderr.starts_with(&out.stderr),
                "{text}\n--- validate ---\n{}\n--- other ---\n{}",
                validated.stderr,
                out.stderr
            );
        }
    }
}

/// A negative cool-down in a user profile file used to panic every command.
#[test]
fn a_bad_number_in_a_profiles_file_is_located_for_every_command() {
    for command in [
        vec!["profiles"],
        vec!["validate", ENSEMBLE],
        vec!["plan", ENSEMBLE],
    ] {
        Test::new()
            .file(
                "xdg/orc/profiles/mine.yaml",
                "model_profiles:\n  mine:\n    provider: mock\n    circuit_breaker: {cool_down_seconds: -1}\n",
            )
            .ensemble("name: t\nagents:\n  - name: a\n")
            .args(command)
            .run()
            .invalid()
            .stderr_contains("`cool_down_seconds` must be at least 0")
            .stderr_contains("─[");
    }
}

/// A located error far out on a very long line (a minified ensemble) renders, clipped
/// around the error; miette used to panic past column 65,535.
#[test]
fn errors_on_a_100_kb_line_render_clipped() {
    let agents: Vec<String> = (0..1500)
        .map(|i| {
            format!("{{name: a{i}, system_prompt: \"review part {i} of the input carefully\"}}")
        })
        .collect();
    let text = format!(
        "{{name: mini, agents: [{}, {{name: last, retries: many}}]}}\n",
        agents.join(", ")
    );
    assert!(text.len() > 100_000);
    let out = Test::new()
        .ensemble(&text)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    let column = text.find("many").unwrap() + 1;
    assert!(
        out.stderr.contains(&format!("[ensemble.yaml:1:{column}]")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("…"), "{}", out.stderr);
    assert!(out.stderr.contains("retries: many"), "{}", out.stderr);
    assert!(out.stderr.len() < 2000, "{}", out.stderr);
}

/// Whether `prlimit` (util-linux) can run here; tests that need it say so when it cannot.
fn prlimit() -> bool {
    let ok = Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: `prlimit` (util-linux) is not installed");
    }
    ok
}

/// Runs `orc --color never validate FILE` in `dir` with at most 256 MiB of address space.
fn validate_in_256_mib(dir: &Path, file: &str) -> (Option<i32>, String) {
    let child = Command::new("prlimit")
        .arg(format!("--as={}", 256 * 1024 * 1024))
        .arg("--")
        .arg(ORC)
        .args(["--color", "never", "validate", file])
        .env_clear()
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prlimit");
    let (code, _, stderr) = wait_with_limit(child, Duration::from_secs(60));
    (code, stderr)
}

/// Anchors over wide lists, over deep nesting, and nested aliases ("billion laughs"),
/// grown to about `size` bytes.
fn bombs(size: usize) -> Vec<(String, String)> {
    let head = "name: bomb\nagents:\n  - name: a\n";
    let wide = {
        let n = size / 8;
        format!(
            "{head}big: &big [{}]\nrefs: [{}]\n",
            vec!["ab"; n].join(", "),
            vec!["*big"; n].join(", ")
        )
    };
    let deep = {
        let mut t = format!(
            "{head}d: &d {}{}{}\n",
            "[".repeat(100),
            vec!["x"; 50].join(", "),
            "]".repeat(100)
        );
        let n = size.saturating_sub(t.len()) / 4;
        t.push_str(&format!("r: [{}]\n", vec!["*d"; n].join(", ")));
        t
    };
    let laughs = {
        let width = (size / 400).max(9);
        let mut t = format!("{head}x0: &x0 [{}]\n", vec!["lol"; width].join(", "));
        let mut i = 1;
        while t.len() < size {
            let refs = vec![format!("*x{}", i - 1); width].join(", ");
            t.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
            i += 1;
        }
        t
    };
    let nested_block = format!("{head}deep:\n{}x\n", "  - ".repeat(size / 4));
    let nested_flow = format!(
        "{head}deep: {}{}\n",
        "[".repeat(size / 2),
        "]".repeat(size / 2)
    );
    vec![
        ("wide".into(), wide),
        ("deep anchors".into(), deep),
        ("laughs".into(), laughs),
        ("block nesting".into(), nested_block),
        ("flow nesting".into(), nested_flow),
    ]
}

/// Issue 13: a 20 KB file of anchors and nesting took 2.9 GB to refuse, 200 KB more than
/// the machine had. Under a 256 MiB limit both are refused, located, with exit code 2.
#[test]
fn yaml_bombs_are_refused_within_256_mib() {
    if !prlimit() {
        return;
    }
    for size in [20_000, 200_000] {
        for (what, text) in bombs(size) {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("bomb.yaml"), &text).expect("write the bomb");
            let (code, stderr) = validate_in_256_mib(dir.path(), "bomb.yaml");
            let context = format!("{what}, {} bytes:\n{stderr}", text.len());
            assert_eq!(code, Some(2), "{context}");
            assert!(
                stderr.contains("YAML too large or too deeply nested"),
                "{context}"
            );
            assert!(stderr.contains("─[bomb.yaml:"), "{context}");
        }
    }
}

/// `orc validate /dev/zero` read forever and a FIFO blocked forever; both are refused at
/// once, also under a memory limit.
#[cfg(unix)]
#[test]
fn special_files_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo");
    let cases = [
        ("/dev/zero", "it is a character device, not a regular file"),
        ("fifo.yaml", "it is a FIFO (named pipe), not a regular file"),
    ];
    for (file, expected) in cases {
        let (code, stderr) = if prlimit() {
            validate_in_256_mib(dir.path(), file)
        } else {
            let child = Command::new(ORC)
                .args(["--color", "never", "validate", file])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn orc");
            let (code, _, stderr) = wait_with_limit(child, Duration::from_secs(60));
            (code, stderr)
        };
        assert_eq!(code, Some(2), "{file}: {stderr}");
        assert!(stderr.contains(expected), "{file}: {stderr}");
    }
}

/// Issue 13: `ensemble: /proc/self/environ` printed the environment, and any path's lines
/// were shown in the error. A nested file that is not an ensemble is named, never quoted.
#[cfg(target_os = "linux")]
#[test]
fn nested_paths_to_files_that_are_not_ensembles_are_never_quoted() {
    const CANARY: &str = "canary-sk-1313";
    let cases = [
        ("/proc/self/environ", "it is not a `.yaml` or `.yml` file"),
        ("/etc/passwd", "it is not a `.yaml` or `.yml` file"),
        ("environ.yaml", "it is not valid YAML"),
        ("passwd.yaml", "it is not a YAML mapping"),
        ("secret.yaml", "it has no `name:` and `agents:`"),
        (
            "../../../../etc/hostname",
            "it is not a `.yaml` or `.yml` file",
        ),
    ];
    for (reference, expected) in cases {
        let test = Test::new()
            .file("secret.yaml", format!("api_key: {CANARY}\n"))
            .ensemble(&format!(
                "name: n\nagents:\n  - name: a\n    ensemble: {reference}\n"
            ))
            .env("SOME_API_KEY", CANARY);
        std::os::unix::fs::symlink("/proc/self/environ", test.path().join("environ.yaml"))
            .expect("symlink");
        std::os::unix::fs::symlink("/etc/passwd", test.path().join("passwd.yaml"))
            .expect("symlink");
        let out = test.args(["validate", ENSEMBLE]).run().invalid();
        assert!(
            unwrapped(&out.stderr).contains(expected),
            "{reference}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("─[{ENSEMBLE}:4:15]")),
            "{reference}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains(CANARY), "{reference}: {}", out.stderr);
        assert!(!out.stderr.contains("root:"), "{reference}: {}", out.stderr);
        // The only text shown is the ensemble's own.
        assert!(
            out.stderr
                .match_indices("─[")
                .all(|(i, _)| out.stderr[i..].starts_with(&format!("─[{ENSEMBLE}:"))),
            "{reference}: {}",
            out.stderr
        );
    }
}

/// A diagnostic's words without the line breaks and gutters that wrapping adds.
fn unwrapped(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

fn generate_with_output(extra: &str) -> String {
    format!(
        "name: g\nagents:\n  - name: gen\n    type: generate\n    topic: kitchen tools\n    stop: {{iterations: 1}}\n    output: items.jsonl\n{extra}"
    )
}

/// Issue 13: `output:` truncated any existing file without a word. Now an existing file is
/// refused at load unless the agent says `overwrite: true` or `append: true`.
#[test]
fn generate_output_never_replaces_a_file_unasked() {
    let old = "{\"text\": \"from before\"}\n";
    let out = Test::new()
        .ensemble(&generate_with_output(""))
        .file("items.jsonl", old)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("`output` of agent `gen` is `items.jsonl`, which already exists")
        .stderr_contains("─[ensemble.yaml:7:13]");
    assert_eq!(
        std::fs::read_to_string(out.test.path().join("items.jsonl")).unwrap(),
        old
    );
    Test::new()
        .ensemble(&generate_with_output(
            "    overwrite: true\n    append: true\n",
        ))
        .args(["validate", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("sets both `overwrite` and `append`");

    let replaced = Test::new()
        .ensemble(&generate_with_output("    overwrite: true\n"))
        .file("items.jsonl", old)
        // The topic is fixed; an empty input must be given explicitly (#12).
        .args(["invoke", ENSEMBLE, "", "-q"])
        .run()
        .success();
    let text = std::fs::read_to_string(replaced.test.path().join("items.jsonl")).unwrap();
    assert!(!text.contains("from before") && !text.is_empty(), "{text}");

    let appended = Test::new()
        .ensemble(&generate_with_output("    append: true\n"))
        .file("items.jsonl", old)
        // The topic is fixed; an empty input must be given explicitly (#12).
        .args(["invoke", ENSEMBLE, "", "-q"])
        .run()
        .success();
    let text = std::fs::read_to_string(appended.test.path().join("items.jsonl")).unwrap();
    assert!(text.starts_with(old) && text.len() > old.len(), "{text}");

    // Without a file there, nothing needs saying.
    Test::new()
        .ensemble(&generate_with_output(""))
        .args(["validate", ENSEMBLE])
        .run()
        .success();
}

/// Issue 13: `orc auth set` replaced a corrupt key store, dropping the other keys.
#[test]
fn a_corrupt_key_store_is_named_and_left_alone() {
    let corrupt = "{\"anthropic\": \"sk-ant-keep\",";
    let out = Test::new()
        .file("xdg/orc/credentials.json", corrupt)
        .args(["auth", "set", "openai"])
        .stdin("sk-new\n")
        .run()
        .invalid();
    let store = out.test.path().join("xdg/orc/credentials.json");
    assert!(
        out.stderr.contains(&store.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("sk-ant-keep"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&store).unwrap(), corrupt);
    for command in [vec!["auth", "remove", "anthropic"], vec!["auth", "list"]] {
        Test::new()
            .file("xdg/orc/credentials.json", corrupt)
            .args(command)
            .run()
            .invalid()
            .stderr_contains("credentials.json");
    }
}

/// The key store is written through a new temporary file: one planted at its name (a
/// symlink to a file of the attacker's choosing) is replaced, never written through.
#[cfg(unix)]
#[test]
fn a_symlink_at_the_temporary_key_store_is_not_followed() {
    let test = Test::new().file("victim.txt", "precious").file(
        "xdg/orc/credentials.json",
        "{\"anthropic\": \"sk-ant-keep\"}",
    );
    let victim = test.path().join("victim.txt");
    let store = test.path().join("xdg/orc/credentials.json");
    std::os::unix::fs::symlink(&victim, store.with_extension("json.tmp")).expect("symlink");
    let out = test
        .args(["auth", "set", "openai"])
        .stdin("sk-new\n")
        .run()
        .success();
    let _ = out;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    assert_eq!(stored["openai"], "sk-new");
    assert_eq!(stored["anthropic"], "sk-ant-keep");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
