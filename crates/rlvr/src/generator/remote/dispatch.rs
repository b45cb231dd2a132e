//! Spreading prompt groups over several engines. All samples of a group go to one engine (they
//! share a prompt, which that engine can cache); engines pull groups from one queue, so a faster
//! engine takes more. When an engine goes down, the group it held goes back to the queue and the
//! others finish the batch; results come back in group order whatever engine produced them.

use super::engine::{CallError, RemoteEngine};
use anyhow::{bail, Result};
use rlvr_model::engine::{Completion, Request};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// One prompt group: its requests (one per sample).
pub struct GroupJob {
    pub requests: Vec<Request>,
}

struct Board {
    pending: VecDeque<usize>,
    results: Vec<Option<Vec<Completion>>>,
    remaining: usize,
    alive: Vec<bool>,
    error: Option<String>,
    last_down: Option<String>,
}

/// Runs every group on the engines marked alive, `workers_per_engine` groups at a time on each.
/// Engines found down are marked dead in `alive`. Fails when an engine rejects a request, or when
/// no engine is left.
pub fn run(
    engines: &[RemoteEngine],
    alive: &mut [bool],
    jobs: &[GroupJob],
    workers_per_engine: usize,
) -> Result<Vec<Vec<Completion>>> {
    if !alive.iter().any(|&a| a) {
        bail!("no inference engine is available");
    }
    let board = Mutex::new(Board {
        pending: (0..jobs.len()).collect(),
        results: (0..jobs.len()).map(|_| None).collect(),
        remaining: jobs.len(),
        alive: alive.to_vec(),
        error: None,
        last_down: None,
    });
    let changed = Condvar::new();
    std::thread::scope(|s| {
        for (e, engine) in engines.iter().enumerate() {
            if !alive[e] {
                continue;
            }
            let workers = workers_per_engine.max(1).min(jobs.len().max(1));
            for _ in 0..workers {
                let (board, changed) = (&board, &changed);
                s.spawn(move || worker(e, engine, jobs, board, changed));
            }
        }
    });
    let board = board.into_inner().expect("not poisoned");
    alive.copy_from_slice(&board.alive);
    if let Some(e) = board.error {
        bail!(e);
    }
    if board.remaining > 0 {
        bail!(
            "every inference engine failed; {} of {} prompt groups were not generated (last error: {})",
            board.remaining,
            jobs.len(),
            board.last_down.unwrap_or_default()
        );
    }
    Ok(board
        .results
        .into_iter()
        .map(|r| r.expect("every group finished"))
        .collect())
}

fn worker(
    e: usize,
    engine: &RemoteEngine,
    jobs: &[GroupJob],
    board: &Mutex<Board>,
    changed: &Condvar,
) {
    loop {
        let g = {
            let mut b = board.lock().expect("not poisoned");
            loop {
                if b.error.is_some() || b.remaining == 0 || !b.alive[e] {
                    return;
                }
                if let Some(g) = b.pending.pop_front() {
                    break g;
                }
                // Another engine holds the rest; wait in case it fails and hands a group back.
                b = changed.wait(b).expect("not poisoned");
            }
        };
        let outcome = run_group(engine, &jobs[g]);
        let mut b = board.lock().expect("not poisoned");
        match outcome {
            Ok(done) => {
                b.results[g] = Some(done);
                b.remaining -= 1;
            }
            Err(CallError::Down(msg)) => {
                b.pending.push_front(g);
                if b.alive[e] {
                    b.alive[e] = false;
                    tracing::warn!(
                        "inference engine {} is down ({msg}); its prompt groups go to the others",
                        engine.url
                    );
                }
                b.last_down = Some(msg);
                if !b.alive.iter().any(|&a| a) {
                    changed.notify_all();
                    return;
                }
            }
            Err(CallError::Rejected(msg)) => {
                b.error.get_or_insert(msg);
            }
        }
        changed.notify_all();
    }
}

/// All samples of one group, sent at once so the server batches them.
fn run_group(engine: &RemoteEngine, job: &GroupJob) -> Result<Vec<Completion>, CallError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = job
            .requests
            .iter()
            .map(|r| s.spawn(move || engine.generate(&r.prompt, &r.params)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread panicked"))
            .collect()
    })
}
