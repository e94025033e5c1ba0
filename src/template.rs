//! Prompt templates: the one minijinja environment orc renders `prompt:` with, and the
//! load-time check that finds syntax errors and undefined variables before any call is made.
//! Pure: no IO.

use std::ops::Range;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Names a template may read. `agents.NAME` is checked against the agent's dependencies.
pub const TEMPLATE_VARIABLES: [&str; 3] = ["input", "deps", "agents"];

/// The environment every template is compiled and rendered in: undefined variables are
/// errors, and `truncate(n)` shortens text to `n` characters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("truncate", truncate);
    env
}

/// `{{ input | truncate(2000) }}`: at most `length` characters, marked with `...` when cut.
fn truncate(text: &str, length: Option<usize>) -> String {
    let length = length.unwrap_or(255);
    if text.chars().count() <= length {
        return text.to_string();
    }
    let mut out: String = text.chars().take(length.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Something wrong with a template, with the byte range in the template text it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateProblem {
    Syntax {
        message: String,
        range: Option<Range<usize>>,
    },
    Undefined {
        variable: String,
        range: Option<Range<usize>>,
    },
    NotDependency {
        agent: String,
        range: Option<Range<usize>>,
    },
}

/// Checks `source` for syntax errors, unknown filters, undefined variables and
/// `agents.NAME` references outside `available` (the agent's ancestors).
pub fn check(source: &str, available: &[&str]) -> Vec<TemplateProblem> {
    check_with(source, &TEMPLATE_VARIABLES, &|name| {
        available.contains(&name)
    })
}

/// As `check`, for a template that may read `variables`; `available` says whether
/// `agents.NAME` may be read.
pub fn check_with(
    source: &str,
    allowed: &[&str],
    available: &dyn Fn(&str) -> bool,
) -> Vec<TemplateProblem> {
    let env = environment();
    let template = match env.template_from_str(source) {
        Ok(t) => t,
        Err(e) => {
            return vec![TemplateProblem::Syntax {
                message: e
                    .detail()
                    .map_or_else(|| e.kind().to_string(), str::to_string),
                range: e.range(),
            }];
        }
    };
    let mut problems = Vec::new();
    let mut variables: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    variables.sort();
    // The agents the template reads; only they go into the dry render below (all of an
    // agent's ancestors would make checking a long chain quadratic, issue 13).
    let mut read: Vec<String> = Vec::new();
    for variable in &variables {
        let (root, rest) = variable.split_once('.').unwrap_or((variable, ""));
        if !allowed.contains(&root) {
            problems.push(TemplateProblem::Undefined {
                range: find_word(source, root),
                variable: root.to_string(),
            });
        } else if root == "agents" && !rest.is_empty() {
            let name = rest.split('.').next().unwrap_or(rest);
            if available(name) {
                read.push(name.to_string());
            } else {
                problems.push(TemplateProblem::NotDependency {
                    agent: name.to_string(),
                    range: find_word(source, &format!("agents.{name}")),
                });
            }
        }
    }
    // Filters and tests are looked up at render time; a dry render with placeholder values
    // finds unknown ones now. Other render errors depend on real values and are not reported.
    if problems.is_empty() {
        let placeholder = |name: &str| {
            Value::from(minijinja::value::Serde(serde_json::json!({
                "name": name, "output": "", "status": "succeeded", "json": null
            })))
        };
        let deps: Vec<Value> = vec![placeholder("dep")];
        let agents: std::collections::BTreeMap<&str, Value> =
            read.iter().map(|n| (n.as_str(), placeholder(n))).collect();
        let ctx = minijinja::context! {
            input => "", deps => deps, agents => agents,
            topic => "", subtopic => "", seen => Vec::<String>::new(), batch_size => 10,
        };
        if let Err(e) = template.render(ctx) {
            if matches!(
                e.kind(),
                minijinja::ErrorKind::UnknownFilter
                    | minijinja::ErrorKind::UnknownTest
                    | minijinja::ErrorKind::UnknownFunction
            ) {
                problems.push(TemplateProblem::Syntax {
                    message: e
                        .detail()
                        .map_or_else(|| e.kind().to_string(), str::to_string),
                    range: e.range(),
                });
            }
        }
    }
    problems
}

fn find_word(source: &str, word: &str) -> Option<Range<usize>> {
    source.match_indices(word).find_map(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        (boundary(before) && boundary(after)).then(|| i..i + word.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_variables() {
        let src = "{{ input | truncate(20) }}{% for d in deps %}{{ d.name }}{{ d.output }}{% endfor %}{{ agents.a.output }}";
        assert_eq!(check(src, &["a"]), vec![]);
    }

    #[test]
    fn finds_problems() {
        assert!(matches!(
            check("{{ input ", &[])[0],
            TemplateProblem::Syntax { .. }
        ));
        assert_eq!(
            check("hi {{ inptu }}", &[]),
            vec![TemplateProblem::Undefined {
                variable: "inptu".into(),
                range: Some(6..11)
            }]
        );
        assert!(matches!(
            check("{{ agents.b.output }}", &["a"])[0],
            TemplateProblem::NotDependency { .. }
        ));
        assert!(matches!(
            check("{{ input | shout }}", &[])[0],
            TemplateProblem::Syntax { .. }
        ));
    }

    #[test]
    fn truncates_by_characters() {
        assert_eq!(truncate("héllo world", Some(8)), "héllo...");
        assert_eq!(truncate("short", Some(8)), "short");
    }
}
