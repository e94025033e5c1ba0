//! What an agent receives: the default plain-text layout of input plus dependency outputs,
//! or the agent's own `prompt:` template.
//!
//! Default layout (documented in the README):
//!
//! ```text
//! <run input>
//!
//! Output of `security`:
//! <output of security>
//!
//! Output of `performance`:
//! <output of performance>
//! ```
//!
//! A dependency that failed or was skipped appears as `(no output: failed)` when the agent
//! runs anyway (`on_dependency_failure: run`).

use serde::Serialize;

use super::outcome::AgentStatus;
use crate::template;

pub use crate::providers::DEPENDENCY_HEADER;

/// A finished dependency as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct DepView<'a> {
    pub name: &'a str,
    pub output: &'a str,
    /// The output parsed as JSON, when it is JSON.
    pub json: Option<serde_json::Value>,
    pub status: AgentStatus,
    /// Skipped by its own condition: left out of the default layout.
    #[serde(skip)]
    pub neutral: bool,
}

/// The user message of an agent without a template.
pub fn default_prompt(input: &str, deps: &[DepView<'_>]) -> String {
    let mut out = String::from(input);
    for dep in deps.iter().filter(|d| !d.neutral) {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(DEPENDENCY_HEADER);
        out.push_str(dep.name);
        out.push_str("`:\n");
        if dep.status == AgentStatus::Succeeded {
            out.push_str(dep.output);
        } else {
            out.push_str(&format!("(no output: {})", dep.status.as_str()));
        }
    }
    out
}

/// Renders an agent's `prompt:` template. `ancestors` are all finished ancestors
/// (`agents.NAME`); `deps` the direct dependencies in `depends_on` order.
pub fn render_prompt(
    source: &str,
    input: &str,
    deps: &[DepView<'_>],
    ancestors: &[DepView<'_>],
) -> Result<String, String> {
    let env = template::environment();
    let tmpl = env.template_from_str(source).map_err(|e| e.to_string())?;
    let agents: std::collections::BTreeMap<&str, &DepView<'_>> =
        ancestors.iter().map(|d| (d.name, d)).collect();
    let ctx = minijinja::context! {
        input => input,
        deps => minijinja::Value::from(minijinja::value::Serde(deps)),
        agents => minijinja::Value::from(minijinja::value::Serde(&agents)),
    };
    tmpl.render(ctx).map_err(|e| {
        let mut msg = e.to_string();
        if let Some(detail) = e.detail() {
            if !msg.contains(detail) {
                msg = format!("{msg}: {detail}");
            }
        }
        msg
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep<'a>(name: &'a str, output: &'a str) -> DepView<'a> {
        DepView {
            name,
            output,
            json: None,
            status: AgentStatus::Succeeded,
            neutral: false,
        }
    }

    #[test]
    fn default_layout() {
        let deps = [dep("a", "one"), dep("b", "two")];
        assert_eq!(
            default_prompt("in", &deps),
            "in\n\nOutput of `a`:\none\n\nOutput of `b`:\ntwo"
        );
        assert_eq!(default_prompt("in", &[]), "in");
    }

    #[test]
    fn templates_see_input_deps_and_agents() {
        let deps = [dep("a", "one")];
        let out = render_prompt(
            "{{ input }}|{% for d in deps %}{{ d.name }}={{ d.output }}{% endfor %}|{{ agents.a.output }}",
            "in",
            &deps,
            &deps,
        )
        .unwrap();
        assert_eq!(out, "in|a=one|one");
        assert!(render_prompt("{{ nope }}", "", &[], &[]).is_err());
    }
}
