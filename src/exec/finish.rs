//! What the end of an answer says about it (#12): whether a `response_format` answer was cut
//! off (and so must be retried), and the warnings and token summary the CLI prints. Pure
//! functions over provider and outcome types: no IO, no run state.

use super::outcome::{AgentStatus, RunOutcome};
use crate::config::ResponseFormat;
use crate::providers::{Completion, Usage};

/// Checks an answer against the agent's `response_format`. A cut-off answer cannot be the
/// whole JSON, so it is rejected like invalid JSON (and retried the same way) even when what
/// arrived happens to parse. On rejection: why (in words a model can act on), and the usage
/// the rejected call spent.
pub(crate) fn check_answer(
    format: Option<&ResponseFormat>,
    completion: Completion,
) -> Result<Completion, (String, Usage)> {
    let Some(format) = format else {
        return Ok(completion);
    };
    if let Some(f) = completion
        .finish_reason
        .as_ref()
        .filter(|f| f.is_truncated())
    {
        return Err((
            format!(
                "it was cut off at the token limit (finish reason `{}`); answer with shorter JSON",
                f.raw
            ),
            completion.usage,
        ));
    }
    match format.check(&completion.text) {
        Ok(text) => Ok(Completion { text, ..completion }),
        Err(why) => Err((why, completion.usage)),
    }
}

/// Lines for stderr about answers that succeeded but are not whole: cut off at the token
/// limit, or stopped by a safety filter.
pub fn warnings(outcome: &RunOutcome) -> Vec<String> {
    outcome
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Succeeded)
        .filter_map(|a| {
            let raw = a.finish_reason_raw.as_deref().unwrap_or("");
            if a.truncated {
                Some(format!(
                    "warning: the answer of agent `{}` was cut off at the token limit (finish reason `{raw}`); raise its `max_tokens` for a whole answer",
                    a.name
                ))
            } else if a.finish_reason == Some(crate::providers::FinishKind::ContentFilter) {
                Some(format!(
                    "warning: the answer of agent `{}` was stopped by the provider's content filter (finish reason `{raw}`); it may be incomplete",
                    a.name
                ))
            } else {
                None
            }
        })
        .collect()
}

/// The token part of the summary line: unknown usage is said, never counted as zero.
pub fn tokens_summary(outcome: &RunOutcome) -> String {
    let t = &outcome.totals;
    let (input, output) = (
        t.usage.input_tokens,
        t.usage.output_tokens + t.usage.reasoning_tokens,
    );
    let agents = |n: usize| format!("{n} agent{}", if n == 1 { "" } else { "s" });
    match t.usage_unknown_agents {
        0 => format!("{input} tokens in, {output} out"),
        n if input + output == 0 => format!("tokens unknown (usage unknown for {})", agents(n)),
        n => format!(
            "{input} tokens in, {output} out, plus the unknown usage of {}",
            agents(n)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{FinishKind, FinishReason};

    fn completion(text: &str, kind: FinishKind, raw: &str) -> Completion {
        Completion {
            text: text.into(),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 1,
                ..Usage::default()
            },
            finish_reason: Some(FinishReason::new(kind, raw)),
        }
    }

    #[test]
    fn a_cut_off_answer_is_rejected_for_response_format() {
        let format = ResponseFormat::json();
        let (why, usage) = check_answer(
            Some(&format),
            completion("{\"a\": 1}", FinishKind::Length, "MAX_TOKENS"),
        )
        .unwrap_err();
        assert!(
            why.contains("cut off") && why.contains("MAX_TOKENS"),
            "{why}"
        );
        assert_eq!(usage.input_tokens, 3);
        let ok = check_answer(
            Some(&format),
            completion("{\"a\": 1}", FinishKind::Stop, "STOP"),
        );
        assert_eq!(ok.unwrap().text, "{\"a\":1}");
        // Without a response_format a cut-off answer is kept (and flagged).
        assert!(check_answer(None, completion("{\"", FinishKind::Length, "length")).is_ok());
    }
}
