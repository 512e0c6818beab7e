//! Work done off the schedulers by one background thread: freeing the pages
//! of large segments that go away (closing the last descriptor or mapping of
//! a 256 MiB segment frees 65,536 pages: milliseconds), and telling processes
//! that wait for a segment that their turn came when the turn is passed on
//! outside a NIF call (a destructor, the Rust API): a message can only be
//! sent from a scheduler thread with a NIF call's own environment.
//!
//! Owns the thread and its queue; knows nothing of what the jobs do.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;

/// Something to do in the background.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

struct Worker {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Whether the thread waits for work: waking it is a system call, only
    /// worth making when it sleeps.
    asleep: bool,
    /// Jobs taken but not finished.
    running: usize,
}

/// Runs `job` on the background thread; gives it back if there is none (it
/// could not be started).
pub(crate) fn run(job: Job) -> Result<(), Job> {
    let Some(worker) = worker() else {
        return Err(job);
    };
    let mut state = worker.lock();
    state.jobs.push_back(job);
    if state.asleep {
        state.asleep = false;
        drop(state);
        worker.wake.notify_one();
    }
    Ok(())
}

/// Runs `job` on the background thread, or here if there is none.
pub(crate) fn run_or_here(job: Job) {
    if let Err(job) = run(job) {
        job();
    }
}

/// Whether the background thread runs.
#[cfg_attr(not(feature = "nif"), allow(dead_code))] // parking is for NIF calls
pub(crate) fn available() -> bool {
    worker().is_some()
}

/// How many jobs wait or run.
pub(crate) fn pending() -> usize {
    worker().map_or(0, |worker| {
        let state = worker.lock();
        state.jobs.len() + state.running
    })
}

/// The worker, started on first use; `None` if its thread cannot run.
fn worker() -> Option<&'static Worker> {
    static WORKER: OnceLock<Option<&'static Worker>> = OnceLock::new();
    *WORKER.get_or_init(|| {
        let worker: &'static Worker = Box::leak(Box::new(Worker {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }));
        thread::Builder::new()
            .name("shmex-background".into())
            .spawn(move || worker.work())
            .ok()
            .map(|_| worker)
    })
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only plain bookkeeping is done under the lock: it cannot be left
        // inconsistent by a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            match state.jobs.pop_front() {
                Some(job) => {
                    state.running += 1;
                    drop(state);
                    // A job that panics is dropped; the thread goes on.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                    state = self.lock();
                    state.running -= 1;
                }
                None => {
                    state.asleep = true;
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_in_order_off_the_calling_thread() {
        let (sender, receiver) = mpsc::channel();
        let caller = thread::current().id();
        for i in 0..3 {
            let sender = sender.clone();
            run(Box::new(move || {
                sender.send((i, thread::current().id())).unwrap();
            }))
            .unwrap_or_else(|_| panic!("the background thread runs"));
        }
        let seen: Vec<_> = (0..3)
            .map(|_| receiver.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(seen.iter().all(|(_, thread)| *thread != caller));
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_thread() {
        run_or_here(Box::new(|| panic!("a job fails")));
        let (sender, receiver) = mpsc::channel();
        run_or_here(Box::new(move || sender.send(()).unwrap()));
        assert!(receiver.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
