//! Command-line arguments (clap derive). Lowered into each command's own settings before
//! any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::SchemaKind;
use crate::plan::PlanFormat;

// Every line of these blocks fits in 80 columns, so clap (`wrap_help`) never rewraps
// them into unindented pieces (#12); a test checks every command's help at COLUMNS=80.
const AFTER_HELP: &str = "\
Examples:
  # run an ensemble file on piped input
  git diff | orc invoke review.yaml
  # run one by name, from .orc/ensembles, .llm-orc/ensembles or ~/.config/orc
  orc invoke review \"is this safe?\"
  orc invoke review.yaml --output json | jq .agents
  cat topics.txt | orc invoke explore.yaml --each-line --output jsonl
  orc plan review.yaml --format mermaid
  # check every ensemble on the search path
  orc validate

Exit codes:
  0    every agent succeeded
  1    some agent failed, was skipped or was cancelled (--timeout and budget
       stops too)
  2    invalid usage, configuration or ensemble
  130  interrupted (Ctrl-C); completed results are still printed";

const EXPLORE_HELP: &str = "\
Examples:
  orc explore \"kitchen tools\" --producers 4 --iterations 10 --profile mock
  orc explore \"board games\" --profile mock-fast --profile mock \\
      --optimizer maximize_uam --save items.jsonl
  cat topics.txt | orc explore --each-line --output jsonl";

const WORKER_HELP: &str = "\
Examples:
  orc worker --redis redis://10.0.0.5:6379 --concurrency 32
  ORC_REDIS_URL=redis://:secret@redis:6379 orc worker --name gpu-box-1

The first SIGINT/SIGTERM stops taking jobs and lets the running ones finish; a
second one exits at once (other workers claim what was left).";

const SERVE_HELP: &str = "\
Examples:
  # the ensembles on the search path, at http://127.0.0.1:8080
  orc serve
  # a folder of ensembles, on a free port
  orc serve ensembles/ --bind 127.0.0.1:0
  ORC_TOKEN=secret orc serve --bind 0.0.0.0:8080

Binding to anything but loopback needs a token (--token or ORC_TOKEN); with
one, every route but /healthz and the dashboard's files needs
`Authorization: Bearer TOKEN`. SIGINT/SIGTERM stop it gracefully: running runs
are stored as interrupted (resumable).";

#[derive(Debug, Parser)]
#[command(
    name = "orc",
    version,
    about = "Run YAML-declared LLM ensembles: agents, model profiles and depends_on edges",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// When to use colors on stderr (`NO_COLOR` is honoured by `auto`).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true, env = "ORC_COLOR")]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an ensemble on input from the argument, --input, --input-file or stdin.
    #[command(after_help = AFTER_HELP)]
    Invoke(InvokeArgs),
    /// Explore a topic with a one-node `generate` ensemble: unique items, one per line.
    #[command(after_help = EXPLORE_HELP)]
    Explore(ExploreArgs),
    /// Check ensemble and profile files; all ensembles on the search path when none given.
    Validate {
        /// Files or directories to check.
        paths: Vec<PathBuf>,
    },
    /// Show the phases of an ensemble, or export its graph.
    Plan {
        /// Ensemble file, or the name of one in `.orc/ensembles`, `.llm-orc/ensembles` (subfolders too) or `~/.config/orc/ensembles`.
        ensemble: String,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// List the ensembles on the search path and where each comes from.
    List,
    /// List the model profiles in effect (built-in, user, project) and their origin.
    Profiles {
        #[command(subcommand)]
        action: Option<ProfilesAction>,
    },
    /// Manage stored API keys (kept in the user config dir with 0600 permissions).
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Print the JSON Schema of ensemble or profile files (for editors).
    Schema {
        /// Which file format.
        #[arg(value_enum, default_value_t = SchemaKind::Ensemble)]
        kind: SchemaKind,
    },
    /// Run the `tests:` of ensemble files (all ensembles found when none given).
    Test(TestArgs),
    /// List, show, export and remove recorded runs (the run store).
    Runs {
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Output format of `orc runs` (the list).
        #[arg(long, short, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
    /// Continue an interrupted, timed-out or failed run: completed agents and completed
    /// provider calls are not run or paid for again.
    Resume(ResumeArgs),
    /// Serve the ensembles as MCP tools over stdio (Claude Desktop, Claude Code and other
    /// MCP clients start it); runs are recorded in the run store.
    Mcp(McpArgs),
    /// Take agent jobs from Redis Streams and run them (`orc invoke --redis` and
    /// `orc serve --redis` send them), with this machine's profiles and keys.
    #[command(after_help = WORKER_HELP)]
    Worker(WorkerArgs),
    /// Serve the ensembles over HTTP: a JSON API with live events (SSE), an
    /// OpenAI-compatible `/v1`, Prometheus `/metrics` and a dashboard at `/`.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Create `.orc/` in the current directory with a config and an example ensemble.
    Init {
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The output of the final agent(s).
    Text,
    /// One JSON document with every agent's status, output, usage and cost.
    Json,
    /// A stream of JSON events (with --each-line: one JSON line per input).
    Jsonl,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Ensemble file, or the name of one in `.orc/ensembles`, `.llm-orc/ensembles` (subfolders too) or `~/.config/orc/ensembles`.
    pub ensemble: String,
    /// Input text (else --input, --input-file, or stdin when it is not a terminal).
    #[arg(conflicts_with_all = ["input", "input_file"])]
    pub input_arg: Option<String>,
    /// Input text.
    #[arg(long, short, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input from this file (a regular file or a pipe).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Largest input read from --input-file or stdin, and longest line with --each-line
    /// (bytes, or `64MiB`, `1GiB`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = super::input::parse_bytes, env = "ORC_MAX_INPUT_BYTES")]
    pub max_input_bytes: u64,
    /// Output format on stdout.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Ask providers to stream; with text output (one final agent), print its text on stdout
    /// as it arrives.
    #[arg(long, conflicts_with = "each_line")]
    pub stream: bool,
    /// Treat every line of stdin as one run; runs go concurrently within the limits.
    #[arg(long, conflicts_with_all = ["input_arg", "input", "input_file"])]
    pub each_line: bool,
    /// Most provider calls in flight at once, across all agents (and all runs of --each-line).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "ORC_MAX_CONCURRENCY")]
    pub max_concurrency: u32,
    /// Stop the run after this many seconds; completed results are kept.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// Seed for the mock provider and retry jitter; the same seed gives the same run.
    #[arg(long, default_value_t = 0, env = "ORC_SEED")]
    pub seed: u64,
    /// No progress or summary on stderr (errors are still shown).
    #[arg(long, short)]
    pub quiet: bool,
    /// Resolve profile OLD as profile NEW (repeatable), e.g. to run an llm-orc ensemble's
    /// `default-local` on `mock` or on one of your profiles.
    #[arg(long = "profile-map", value_name = "OLD=NEW")]
    pub profile_map: Vec<String>,
    /// Record every provider response, keyed by the exact request, to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every provider request from a recording; a request not in it fails its agent.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Do not record this run in the run store (also `ORC_STORE=off`).
    #[arg(long)]
    pub no_store: bool,
    /// Send every request, even for agents and profiles with `cache:`.
    #[arg(long)]
    pub no_cache: bool,
    /// Run the agents on `orc worker`s through this Redis (e.g. `redis://127.0.0.1:6379`)
    /// instead of in this process.
    #[arg(long, value_name = "URL", conflicts_with_all = ["record", "replay"])]
    pub redis: Option<String>,
    /// With --redis: fail outstanding agents after Redis has been unreachable this long,
    /// and an agent no worker can serve (missing profile or key) after waiting this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds, requires = "redis")]
    pub redis_timeout: f64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The Redis to take jobs from (e.g. `redis://127.0.0.1:6379`).
    #[arg(long, value_name = "URL", env = "ORC_REDIS_URL")]
    pub redis: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..), env = "ORC_WORKER_CONCURRENCY")]
    pub concurrency: u32,
    /// This worker's name among the workers (default: host and process id).
    #[arg(long, env = "ORC_WORKER_NAME")]
    pub name: Option<String>,
    /// A job whose worker has not heart-beaten for this long is taken over by another.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = parse_seconds)]
    pub visibility_timeout: f64,
    /// A job taken by this many workers that stopped without finishing it (crashed,
    /// killed) fails instead of running again.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_crashes: u32,
    /// No lifecycle lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Ensemble files or directories to serve (default: every ensemble on the search path).
    pub paths: Vec<PathBuf>,
    /// Most provider calls in flight at once, across all runs.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "ORC_MAX_CONCURRENCY")]
    pub max_concurrency: u32,
    /// Resolve profile OLD as profile NEW (repeatable).
    #[arg(long = "profile-map", value_name = "OLD=NEW")]
    pub profile_map: Vec<String>,
    /// Do not record runs in the run store (also `ORC_STORE=off`); the runs tools then have
    /// nothing to show.
    #[arg(long)]
    pub no_store: bool,
    /// Send every request, even for agents and profiles with `cache:`.
    #[arg(long)]
    pub no_cache: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    // Bounded so that turning it into a `Duration` cannot panic (issue 13).
    let max = crate::config::bounds::MAX_RUN_SECONDS;
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= max => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds above 0 and at most {}",
            crate::config::bounds::show(max)
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum ProfilesAction {
    /// Reach each profile's endpoint with a 1-token call and report what works.
    Check {
        /// Only this profile.
        name: Option<String>,
        /// Seconds to wait for each endpoint.
        #[arg(long, default_value_t = 20.0, value_parser = parse_seconds)]
        timeout: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthAction {
    /// Store a key for a provider, read from a hidden prompt or from stdin (never from an
    /// argument, which would land in shell history).
    Set {
        /// `openai`, `anthropic`, `gemini`, `ollama` or `openai-compatible`.
        provider: String,
    },
    /// Show where each provider's key comes from (never the key).
    List,
    /// Delete a stored key.
    Remove {
        /// The provider whose stored key to delete.
        provider: String,
    },
}

#[derive(Debug, Args)]
pub struct ExploreArgs {
    /// The topic (else each stdin line with --each-line, or all of stdin).
    pub topic: Option<String>,
    /// Concurrent producer loops.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub producers: u32,
    /// Calls per producer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Items asked for per call.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Candidate profile; repeat for several (default `mock`).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// How calls are routed among several profiles.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// How the topic is split among producers.
    #[arg(long, value_enum, default_value_t = PartitionArg::None)]
    pub partition: PartitionArg,
    /// Accepted items fed back per prompt (0 turns feedback off).
    #[arg(long, default_value_t = 20)]
    pub feedback: u32,
    /// Stop at this many unique items.
    #[arg(long)]
    pub unique: Option<u64>,
    /// Also write the items as JSON lines to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    pub save: Option<PathBuf>,
    /// Output format on stdout (text: one item per line).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Explore one topic per stdin line.
    #[arg(long, conflicts_with = "topic")]
    pub each_line: bool,
    /// Largest topic read from stdin, and longest line with --each-line (bytes, or
    /// `64MiB`, `1GiB`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = super::input::parse_bytes, env = "ORC_MAX_INPUT_BYTES")]
    pub max_input_bytes: u64,
    /// Most provider calls in flight at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: u32,
    /// Stop after this many seconds; items found so far are kept.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// Seed for the mock provider.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress or summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

// Every multi-word value is also accepted as spelled in YAML and the README
// (`maximize_uam`), besides clap's kebab-case (#12); a test below checks every enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    #[value(alias = "maximize_uam")]
    MaximizeUam,
    #[value(alias = "minimize_cost")]
    MinimizeCost,
    #[value(alias = "maximize_efficiency")]
    MaximizeEfficiency,
    Weighted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartitionArg {
    None,
    Semantic,
    #[value(alias = "attribute_type")]
    AttributeType,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Ensemble files or directories.
    pub paths: Vec<PathBuf>,
    /// Resolve profile OLD as profile NEW (repeatable).
    #[arg(long = "profile-map", value_name = "OLD=NEW")]
    pub profile_map: Vec<String>,
    /// Record every provider response to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every provider request from this recording; no provider is called.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Only tests whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Do not record the test runs in the run store.
    #[arg(long)]
    pub no_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// A table for people.
    Text,
    /// JSON for programs.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The run document with its calls and events.
    Json,
    /// The event log, one JSON object per line.
    Jsonl,
    /// One row per provider call.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// Recorded runs, newest first.
    List {
        /// Only runs of this ensemble.
        #[arg(long)]
        ensemble: Option<String>,
        /// Only runs with this status (`succeeded`, `failed`, `interrupted`, `running`, ...).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, short, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
    /// One run: its result document (`--output json`) with its calls, or `--events`.
    Show {
        /// Run id, or a unique prefix of one.
        run: String,
        /// Print the event log instead, one JSON object per line.
        #[arg(long)]
        events: bool,
        #[arg(long, short, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
    /// Write a run out as JSON, JSON lines (its events) or CSV (its calls).
    Export {
        /// Run id, or a unique prefix of one.
        run: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
    },
    /// Delete a run and everything recorded about it.
    Rm {
        /// Run ids, or unique prefixes.
        #[arg(required = true)]
        runs: Vec<String>,
        #[arg(long, short, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
    /// Delete finished runs older than an age (`30d`, `12h`, `1w`).
    Gc {
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: std::time::Duration,
        #[arg(long, short, value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not an age; write it like `30d`, `12h` or `1w`"))
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id, or a unique prefix of one (see `orc runs`).
    pub run: String,
    /// Resume even if the ensemble file changed in a way that touches unfinished agents.
    #[arg(long)]
    pub force: bool,
    /// Output format on stdout.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print the final agent's text on stdout as it arrives.
    #[arg(long)]
    pub stream: bool,
    /// Most provider calls in flight at once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "ORC_MAX_CONCURRENCY")]
    pub max_concurrency: u32,
    /// Stop after this many seconds; completed results are kept.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// No progress or summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Resolve profile OLD as profile NEW (repeatable), as the run was invoked.
    #[arg(long = "profile-map", value_name = "OLD=NEW")]
    pub profile_map: Vec<String>,
    /// Send every request, even for agents and profiles with `cache:`.
    #[arg(long)]
    pub no_cache: bool,
    /// Run the remaining agents on `orc worker`s through this Redis (as `invoke --redis`;
    /// a run invoked with --redis may be resumed without it, and the other way round).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With --redis: fail outstanding agents after Redis has been unreachable this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds, requires = "redis")]
    pub redis_timeout: f64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Ensemble files or folders to serve besides those on the search path (their names are
    /// the file stems; they win over the search path).
    pub paths: Vec<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080", env = "ORC_BIND")]
    pub bind: String,
    /// Required as `Authorization: Bearer TOKEN` on every route but /healthz and the
    /// dashboard's files; needed to listen on anything but loopback.
    #[arg(long, env = "ORC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Most provider calls in flight at once, across all runs.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..), env = "ORC_MAX_CONCURRENCY")]
    pub max_concurrency: u32,
    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_body: u64,
    /// Send every request, even for agents and profiles with `cache:`.
    #[arg(long)]
    pub no_cache: bool,
    /// Run the agents on `orc worker`s through this Redis (e.g. `redis://127.0.0.1:6379`)
    /// instead of in this process.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With --redis: fail outstanding agents after Redis has been unreachable this long, or
    /// when no worker can serve them for this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, value_parser = parse_seconds, requires = "redis")]
    pub redis_timeout: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of every enum flag parses in snake_case too, as YAML and the README
    /// spell it (#12).
    fn accepts_snake_case<E: ValueEnum + PartialEq + std::fmt::Debug>() {
        for variant in E::value_variants() {
            let name = variant
                .to_possible_value()
                .expect("no variant is skipped")
                .get_name()
                .to_string();
            let snake = name.replace('-', "_");
            assert_eq!(
                E::from_str(&snake, false).as_ref(),
                Ok(variant),
                "`{snake}` is not accepted for `{name}`"
            );
        }
    }

    #[test]
    fn every_enum_flag_accepts_snake_case() {
        accepts_snake_case::<ColorChoice>();
        accepts_snake_case::<OutputFormat>();
        accepts_snake_case::<OptimizerArg>();
        accepts_snake_case::<PartitionArg>();
        accepts_snake_case::<ListFormat>();
        accepts_snake_case::<ExportFormat>();
        accepts_snake_case::<PlanFormat>();
        accepts_snake_case::<SchemaKind>();
    }
}
