//! A `generate` node spread over workers: one job per producer, all sharing the node's
//! tracker, feedback sample and counters in Redis (`node.rs`), gathered back here into
//! the node's one report. The items are read from Redis, where each was accepted exactly
//! once, in discovery order: a part whose worker died still contributed what it accepted,
//! and a part that ran twice never accepted anything twice. The node's calls, tokens and
//! cost are Redis's counters (every recorded call, of every part, once); the per-profile,
//! per-producer and call-log metrics are the parts' own, merged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::executor::{Coordinator, RunEntry, forward, report_for};
use super::keys;
use super::node::{NodeKeys, NodeState, parse_stop, subtopic_name};
use super::protocol::{Part, now_ms};
use crate::config::{GenerateSettings, NodeKind};
use crate::exec::{AgentError, AgentStatus, AgentTx, Job, Report, RunCtx, Work};
use crate::nodes::generate::{Item, Metrics, Resume, StopReason, Tally};
use crate::nodes::normalize::normalize;
use crate::nodes::tracker::TrackerStats;
use crate::plan::Plan;
use crate::providers::Usage;

/// Calls and decisions kept in the gathered metrics, as one process keeps them.
const KEPT: usize = 1000;

/// Whether a job is a `generate` node worth spreading: several producers.
pub(super) fn is_spread(plan: &Plan, job: &Job) -> bool {
    matches!(
        (&plan.ensemble.agents[job.agent].node, &job.work),
        (NodeKind::Generate(g), Work::Topic(_)) if g.producers > 1
    )
}

pub(super) async fn run(
    coord: Arc<Coordinator>,
    run: Arc<RunCtx>,
    entry: Arc<RunEntry>,
    plan: Arc<Plan>,
    job: Job,
    tx: AgentTx,
) {
    let agent = &plan.ensemble.agents[job.agent];
    let NodeKind::Generate(settings) = &agent.node else {
        unreachable!("only generate nodes are spread")
    };
    let node = NodeKeys {
        id: format!("{}:{}:{}", entry.key, job.agent, coord.next_id()),
    };
    let started_ms = now_ms();
    let resume = job.resume.clone().unwrap_or_default();
    if !resume.items.is_empty() || resume.calls > 0 {
        if let Err(e) = seed(&coord, &node, &resume, settings).await {
            tx.done(report_for(agent, AgentError::new("redis", e)));
            return;
        }
    }
    let parts = (1..=settings.producers).map(|p| {
        let mut part_job = job.clone();
        part_job.resume = Some(Resume {
            items: Vec::new(),
            producer_calls: resume
                .producer_calls
                .get(&p)
                .map(|&n| BTreeMap::from([(p, n)]))
                .unwrap_or_default(),
            calls: 0,
            usage: Usage::default(),
            cost_usd: Some(0.0),
        });
        let part = Part {
            node: node.id.clone(),
            producer: p,
            started_ms,
        };
        let (coord, run, entry, plan, tx) = (&coord, &run, &entry, &plan, &tx);
        async move {
            coord
                .dispatch(run, entry, plan, part_job, Some(part), |e| forward(tx, e))
                .await
        }
    });
    let reports = futures_util::future::join_all(parts).await;
    let report = match read_node(&coord, &node).await {
        Ok(state) => {
            let parts = Parts {
                reports,
                started_ms,
            };
            gather(&run, &plan, &job, settings, &resume, parts, state).await
        }
        Err(e) => report_for(agent, AgentError::new("redis", e)),
    };
    forget(&coord, &node).await;
    tx.done(report);
}

/// A resumed node: what it had found goes into the shared tracker and counters first.
async fn seed(
    coord: &Coordinator,
    node: &NodeKeys,
    resume: &Resume,
    settings: &GenerateSettings,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for item in &resume.items {
        let key = normalize(&item.text, settings.normalize);
        let sub = subtopic_name(item.subtopic.as_deref());
        pipe.cmd("SADD")
            .arg(node.seen())
            .arg(&key)
            .ignore()
            .cmd("RPUSH")
            .arg(node.items())
            .arg(serde_json::to_string(item).expect("items serialize"))
            .ignore()
            .cmd("LPUSH")
            .arg(node.recent(item.subtopic.as_deref()))
            .arg(&item.text)
            .ignore()
            .cmd("SADD")
            .arg(node.subs())
            .arg(sub)
            .ignore();
    }
    pipe.cmd("HSET")
        .arg(node.counters())
        .arg("started")
        .arg(resume.calls)
        .arg("finished")
        .arg(resume.calls)
        .arg("input_tokens")
        .arg(resume.usage.input_tokens)
        .arg("output_tokens")
        .arg(resume.usage.output_tokens)
        .arg("reasoning_tokens")
        .arg(resume.usage.reasoning_tokens)
        .arg("cached_input_tokens")
        .arg(resume.usage.cached_input_tokens)
        .arg("cost")
        .arg(resume.cost_usd.unwrap_or(0.0))
        .arg("cost_unknown")
        .arg(u8::from(resume.cost_usd.is_none() && resume.calls > 0))
        .ignore();
    for key in node.all(&[]) {
        pipe.cmd("EXPIRE")
            .arg(key)
            .arg(keys::STATE_TTL_SECS)
            .ignore();
    }
    coord
        .retry(|mut conn| {
            let pipe = pipe.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        })
        .await
}

async fn read_node(coord: &Coordinator, node: &NodeKeys) -> Result<NodeState, String> {
    let (items, counters, stop): (
        Vec<String>,
        std::collections::HashMap<String, String>,
        Option<String>,
    ) = coord
        .retry(|mut conn| async move {
            redis::pipe()
                .cmd("LRANGE")
                .arg(node.items())
                .arg(0)
                .arg(-1)
                .cmd("HGETALL")
                .arg(node.counters())
                .cmd("GET")
                .arg(node.stop())
                .query_async(&mut conn)
                .await
        })
        .await?;
    let items = items
        .iter()
        .filter_map(|json| serde_json::from_str::<Item>(json).ok())
        .collect();
    Ok(NodeState {
        items,
        counters,
        stop: stop.as_deref().and_then(parse_stop),
    })
}

/// Deletes the node's state (it is in the report now).
async fn forget(coord: &Coordinator, node: &NodeKeys) {
    let subs: Vec<String> = coord
        .retry(|mut conn| async move {
            redis::cmd("SMEMBERS")
                .arg(node.subs())
                .query_async(&mut conn)
                .await
        })
        .await
        .unwrap_or_default();
    let all = node.all(&subs);
    let _ = coord
        .retry(|mut conn| {
            let all = all.clone();
            async move {
                redis::cmd("DEL")
                    .arg(&all)
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await;
}

/// What the parts reported, and when the node started (ms since the epoch).
struct Parts {
    reports: Vec<Report>,
    started_ms: u64,
}

/// The node's report from its parts' reports and its shared state.
async fn gather(
    run: &RunCtx,
    plan: &Plan,
    job: &Job,
    settings: &GenerateSettings,
    resume: &Resume,
    parts: Parts,
    mut state: NodeState,
) -> Report {
    let Parts {
        reports,
        started_ms,
    } = parts;
    let agent = &plan.ensemble.agents[job.agent];
    let first = &settings.profiles[0];
    let parts: Vec<Metrics> = reports
        .iter()
        .filter_map(|r| r.metrics.clone())
        .filter_map(|m| serde_json::from_value(m).ok())
        .collect();
    let items = std::mem::take(&mut state.items);
    let unique = items.len() as u64;
    let resumed_items = resume.items.len() as u64;
    let usage = Usage {
        input_tokens: state.get("input_tokens"),
        output_tokens: state.get("output_tokens"),
        reasoning_tokens: state.get("reasoning_tokens"),
        cached_input_tokens: state.get("cached_input_tokens"),
        estimated: state.get::<u8>("estimated") == 1,
        unknown: state.get::<u8>("usage_unknown") == 1,
    };
    let cost = (state.get::<u8>("cost_unknown") == 0).then(|| state.get::<f64>("cost"));
    let calls: u64 = state.get("finished");
    let candidates: u64 = state.get("candidates");
    let cancelled = run.cancel.is_cancelled()
        || reports
            .iter()
            .any(|r| r.status == AgentStatus::Cancelled && !run.stop.is_cancelled());
    let stop_reason = if cancelled {
        StopReason::Cancelled
    } else {
        state.stop.unwrap_or(StopReason::Iterations)
    };
    let elapsed_ms = parts
        .iter()
        .map(|m| m.elapsed_ms)
        .max()
        .unwrap_or_else(|| now_ms().saturating_sub(started_ms));
    let minutes = (elapsed_ms as f64 / 60_000.0).max(1e-9);
    let mut per_profile: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_producer: BTreeMap<String, Tally> = BTreeMap::new();
    let mut calls_log: Vec<_> = Vec::new();
    let mut decisions: Vec<_> = Vec::new();
    let mut dropped = 0u64;
    let mut calls_saved = 0u64;
    let mut subtopics: Vec<String> = Vec::new();
    for m in &parts {
        for (name, tally) in &m.per_profile {
            per_profile.entry(name.clone()).or_default().merge(tally);
        }
        for (name, tally) in &m.per_producer {
            per_producer.entry(name.clone()).or_default().merge(tally);
        }
        calls_log.extend(m.calls_log.iter().cloned());
        decisions.extend(m.optimizer_decisions.iter().cloned());
        dropped += m.calls_log_dropped;
        calls_saved += m.calls_saved;
        if subtopics.is_empty() {
            subtopics.clone_from(&m.subtopics);
        }
    }
    calls_log.sort_by_key(|c| c.call);
    decisions.sort_by_key(|d| d.call);
    let new_per_call: Vec<u64> = if dropped == 0 {
        calls_log
            .iter()
            .filter(|c| c.purpose.is_none())
            .map(|c| c.new)
            .collect()
    } else {
        parts.iter().flat_map(|m| m.new_per_call.clone()).collect()
    };
    let overflow = calls_log.len().saturating_sub(KEPT);
    let calls_log: VecDeque<_> = calls_log.into_iter().skip(overflow).collect();
    let decisions: VecDeque<_> = decisions.into_iter().rev().take(KEPT).rev().collect();
    let new_unique = unique.saturating_sub(resumed_items);
    let metrics = Metrics {
        uam: round(new_unique as f64 / minutes, 2),
        unique,
        candidates,
        uniqueness_ratio: if candidates == 0 {
            0.0
        } else {
            round(new_unique as f64 / candidates as f64, 4)
        },
        calls,
        failed_calls: state.get("failed"),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd: cost,
        cost_per_minute: cost.map(|c| c / minutes),
        elapsed_ms,
        new_per_call,
        per_profile,
        per_producer,
        stop_reason,
        subtopics,
        tracker: TrackerStats {
            unique,
            duplicates: state.get("duplicates"),
            // The shared tracker is an exact set in Redis: no filter, no false positives.
            ..TrackerStats::default()
        },
        calls_log,
        calls_log_dropped: dropped + overflow as u64,
        optimizer_decisions: decisions,
        calls_saved,
        resumed_items,
    };
    if let Some(path) = &settings.output {
        if let Err(e) = write_items(run, path, settings.append, &items).await {
            return report_for(agent, AgentError::new("generate", e));
        }
    }
    let mut report = Report::new(
        AgentStatus::Succeeded,
        &first.name,
        &first.model,
        first.provider.as_str(),
    );
    report.output = Some(
        items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    report.attempts = calls as u32;
    report.usage = usage;
    report.cost_usd = cost;
    report.calls_saved = calls_saved as u32;
    report.items = Some(serde_json::to_value(&items).expect("items serialize"));
    report.metrics = Some(serde_json::to_value(&metrics).expect("metrics serialize"));
    if cancelled {
        return report.failed(AgentError::cancelled());
    }
    // A part that failed for another reason than the node's stop (its shared state was
    // unreachable, every call failed) fails the node, with the first such error.
    let failure = reports
        .iter()
        .filter(|r| r.status == AgentStatus::Failed)
        .find_map(|r| r.error.clone());
    match (stop_reason, failure) {
        (_, Some(e)) => report.failed(e),
        (StopReason::AllCallsFailed, None) => {
            report.failed(AgentError::new("provider", "every call failed"))
        }
        _ => report,
    }
}

async fn write_items(
    run: &RunCtx,
    path: &std::path::Path,
    append: bool,
    items: &[Item],
) -> Result<(), String> {
    let out = run
        .engine
        .files
        .open(path, append)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    for item in items {
        out.write_line(serde_json::to_string(item).expect("items serialize"));
    }
    out.finish()
        .await
        .map_err(|e| format!("cannot write the items file: {e}"))
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
