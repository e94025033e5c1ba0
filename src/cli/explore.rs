//! `orc explore`: the common case of topic exploration without writing a file. Builds a
//! one-node `generate` ensemble as YAML text and runs it through the same loader and
//! executor as `orc invoke`, so validation and output are identical.

use std::path::{Path, PathBuf};

use super::Context;
use super::args::{ExploreArgs, InvokeArgs, OptimizerArg, PartitionArg};
use crate::config::{self, SourceFile};
use crate::diagnostics::Exit;

pub(crate) fn explore(ctx: &Context, args: ExploreArgs) -> Exit {
    let yaml = ensemble_yaml(&args);
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(e) => return e,
    };
    // The ensemble is generated, so its errors are reported in terms of the flags.
    for name in &args.profiles {
        if profiles.get(name).is_none() {
            ctx.error(&format!("unknown profile `{name}` (--profile)"));
            match crate::suggest::closest(name, profiles.names()) {
                Some(s) => errln!("  help: did you mean `{s}`?"),
                None => errln!("  help: `orc profiles` lists the profiles in effect"),
            }
            return Exit::Invalid;
        }
    }
    let file = SourceFile::new(PathBuf::from("<orc explore>"), "<orc explore>".into(), yaml);
    let (ensemble, report) = config::load_ensemble_source(file, &profiles);
    ctx.print_report(&report);
    let Some(ensemble) = ensemble else {
        return Exit::Invalid;
    };
    let invoke = InvokeArgs {
        ensemble: String::new(),
        input_arg: args.topic.clone(),
        input: None,
        input_file: None,
        output: args.output,
        stream: false,
        each_line: args.each_line,
        max_input_bytes: args.max_input_bytes,
        max_concurrency: args.max_concurrency,
        timeout: args.timeout,
        seed: args.seed,
        quiet: args.quiet,
        profile_map: Vec::new(),
        record: None,
        replay: None,
        no_store: false,
        no_cache: false,
        redis: None,
        redis_timeout: 60.0,
    };
    super::invoke::run_loaded(ctx, ensemble, &report, invoke)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn ensemble_yaml(args: &ExploreArgs) -> String {
    let profiles: Vec<String> = if args.profiles.is_empty() {
        vec!["mock".into()]
    } else {
        args.profiles.clone()
    };
    let mut y = String::from("name: explore\nagents:\n  - name: explore\n    type: generate\n");
    y.push_str(&format!(
        "    profiles: [{}]\n",
        profiles
            .iter()
            .map(|p| quote(p))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    y.push_str(&format!("    model_profile: {}\n", quote(&profiles[0])));
    y.push_str(&format!(
        "    producers: {}\n    batch_size: {}\n    feedback: {}\n",
        args.producers, args.batch_size, args.feedback
    ));
    let partition = match args.partition {
        PartitionArg::None => "none",
        PartitionArg::Semantic => "semantic",
        PartitionArg::AttributeType => "attribute_type",
    };
    y.push_str(&format!("    partition: {partition}\n"));
    y.push_str(&format!("    stop: {{ iterations: {}", args.iterations));
    if let Some(u) = args.unique {
        y.push_str(&format!(", unique: {u}"));
    }
    y.push_str(" }\n");
    if let Some(o) = args.optimizer {
        let s = match o {
            OptimizerArg::MaximizeUam => "maximize_uam",
            OptimizerArg::MinimizeCost => "minimize_cost",
            OptimizerArg::MaximizeEfficiency => "maximize_efficiency",
            OptimizerArg::Weighted => "weighted",
        };
        y.push_str(&format!("    optimizer: {{ strategy: {s} }}\n"));
    }
    if let Some(path) = &args.save {
        // Named on the command line, so replacing it is what was asked for (an ensemble's
        // `output:` must say so itself).
        y.push_str(&format!(
            "    output: {}\n    overwrite: true\n",
            quote(&path_text(path))
        ));
    }
    y
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
