//! Workers: agents run on many machines through Redis Streams (issue 10).
//!
//! Two sides share one Redis. The coordinator (`orc invoke --redis`, `orc serve --redis`)
//! runs the engine as always, with a `RedisExecutor` (`executor.rs`) in place of the local
//! one: each ready agent's `Job` is added to the `orc:jobs` stream, and its events and
//! report come back on the coordinator's reply stream. `orc worker` processes (`worker.rs`)
//! read jobs through one consumer group, run them with `Engine::run_job_with` (the same
//! provider code, limits and policies as a local run, with the worker's own profiles and
//! keys), and answer. What the workers must hold together goes through the same Redis with
//! atomic scripts (`scripts.rs`): per-profile limits (`limits.rs`), the run's budget, and a
//! spread `generate` node's tracker and feedback sample (`node.rs`, gathered by
//! `spread.rs`).
//!
//! Reliability, in short (the protocol is described where it is implemented): a worker
//! acknowledges a job in the same atomic step that stores its result on the reply stream;
//! while it runs a job it heart-beats the entry (`XCLAIM` to itself), and a job whose holder
//! stopped heart-beating for the visibility timeout is claimed by another worker
//! (`XAUTOCLAIM`); the coordinator takes the first report of a job and drops any later one;
//! a job delivered more than `--max-crashes` times fails with a clear error. Both sides ride
//! out a Redis restart with the `redis` crate's connection manager and backoff; after
//! `--redis-timeout` without Redis the coordinator fails what is outstanding, and the run
//! ends with everything completed kept in the store (resumable).

mod bundle;
mod conn;
mod executor;
mod keys;
mod limits;
mod node;
mod protocol;
mod scripts;
mod spread;
#[allow(clippy::module_inception)]
mod worker;

pub use conn::{RedisError, RedisUrl};
pub use executor::{RedisExecutor, RedisSettings};
pub use limits::RedisLimits;
pub use worker::{Worker, WorkerSettings};

/// An engine whose jobs run on workers through the Redis of `settings` (`orc serve
/// --redis`, `orc invoke --redis`): `config` as for any engine, its executor replaced.
/// Keep the returned executor to `close` it when the engine is done.
pub async fn remote_engine(
    mut config: crate::exec::EngineConfig,
    settings: RedisSettings,
) -> Result<(crate::exec::Engine, std::sync::Arc<RedisExecutor>), RedisError> {
    let executor = std::sync::Arc::new(RedisExecutor::connect(settings).await?);
    config.executor =
        Some(std::sync::Arc::clone(&executor) as std::sync::Arc<dyn crate::exec::Executor>);
    Ok((crate::exec::Engine::new(config), executor))
}
