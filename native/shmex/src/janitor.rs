//! Creating and removing segments off the schedulers.
//!
//! Creating a tmpfs file costs several microseconds of kernel time, and so
//! does removing one, plus freeing every page of it: for a large segment
//! collected by the garbage collector that is milliseconds on whichever
//! scheduler happens to run the collection. So a background thread does both:
//! it keeps a few empty segments ready for [`take_ready`], and it unlinks,
//! unmaps and closes the segments handed to [`discard`].
//!
//! When the thread cannot be started, both happen on the caller's thread.
//! At exit (or when the NIF library is unloaded) the thread is stopped and
//! whatever it holds is unlinked, so nothing it made outlives the process.

use std::mem;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};

use crate::error::Result;
use crate::guard::Kept;
use crate::name::ShmName;
use crate::segment::{self, Segment};

/// How many empty segments are kept ready.
const READY: usize = 32;

struct Janitor {
    state: Mutex<State>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    ready: Vec<(ShmName, Segment)>,
    doomed: Vec<(ShmName, Option<Kept>)>,
    refill_wanted: bool,
    closing: bool,
    /// Whether the thread waits for work: waking it is a system call, only
    /// worth making when it sleeps.
    asleep: bool,
}

static JANITOR: Janitor = Janitor {
    state: Mutex::new(State {
        ready: Vec::new(),
        doomed: Vec::new(),
        refill_wanted: true,
        closing: false,
        asleep: false,
    }),
    wake: Condvar::new(),
    thread: Mutex::new(None),
};

/// A segment of `len` zero bytes under a fresh name: one made ahead of time
/// when there is one ready, else made now.
pub(crate) fn create_unique(len: u64) -> Result<(ShmName, Segment)> {
    let Some((name, mut segment)) = take_ready() else {
        return Segment::create_unique(len);
    };
    match segment.resize(len) {
        Ok(()) => Ok((name, segment)),
        Err(error) => {
            segment::unlink(&name);
            Err(error)
        }
    }
}

/// An empty segment under a fresh name, made earlier; `None` when none is ready.
fn take_ready() -> Option<(ShmName, Segment)> {
    let janitor = janitor()?;
    let mut state = janitor.lock();
    let taken = state.ready.pop();
    if !state.closing {
        state.refill_wanted = true;
        janitor.wake_up(state);
    }
    taken
}

/// Unlinks `name` and closes `kept`, in the background if it can.
pub(crate) fn discard(name: ShmName, kept: Option<Kept>) {
    if let Some(janitor) = janitor() {
        let mut state = janitor.lock();
        if !state.closing {
            state.doomed.push((name, kept));
            janitor.wake_up(state);
            return;
        }
    }
    segment::unlink(&name);
    drop(kept);
}

/// Starts the background thread, so that segments are ready before the
/// first call asks for one.
pub fn start() {
    janitor();
}

/// How many empty segments are ready, and how many await removal.
pub fn backlog() -> (usize, usize) {
    let state = JANITOR.lock();
    (state.ready.len(), state.doomed.len())
}

/// The janitor, started on first use; `None` if its thread cannot run.
fn janitor() -> Option<&'static Janitor> {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    RUNNING.get_or_init(|| JANITOR.start()).then_some(&JANITOR)
}

impl Janitor {
    fn start(&'static self) -> bool {
        let spawned = thread::Builder::new()
            .name("shmex-janitor".into())
            .spawn(|| self.work());
        let Ok(handle) = spawned else { return false };
        *self.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        segment::at_exit(stop_at_exit);
        true
    }

    fn wake_up(&self, state: MutexGuard<'_, State>) {
        if state.asleep {
            drop(state);
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work(&self) {
        loop {
            let (doomed, missing, closing) = {
                let mut state = self.lock();
                while !state.closing && state.doomed.is_empty() && !state.refill_wanted {
                    state.asleep = true;
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.asleep = false;
                }
                let missing = if mem::take(&mut state.refill_wanted) && !state.closing {
                    READY.saturating_sub(state.ready.len())
                } else {
                    0
                };
                (mem::take(&mut state.doomed), missing, state.closing)
            };
            // Refill first: a caller may be about to want a ready segment,
            // nobody waits for a removal.
            for _ in 0..missing {
                // A failure (out of descriptors, say) is retried on the next take.
                let Ok(fresh) = Segment::create_unique(0) else {
                    break;
                };
                self.lock().ready.push(fresh);
            }
            for (name, kept) in doomed {
                segment::unlink(&name);
                drop(kept);
            }
            if closing {
                return;
            }
        }
    }

    /// Stops the thread and unlinks everything it still holds.
    fn stop(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let mut state = self.lock();
        for (name, _) in state.ready.drain(..) {
            segment::unlink(&name);
        }
        for (name, _) in state.doomed.drain(..) {
            segment::unlink(&name);
        }
    }
}

extern "C" fn stop_at_exit() {
    JANITOR.stop();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Whether `condition` holds within a second.
    fn soon(condition: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            if condition() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    fn idle() -> bool {
        let state = JANITOR.lock();
        state.asleep && state.doomed.is_empty()
    }

    #[test]
    fn an_idle_janitor_wakes_up_to_remove_and_to_refill() {
        start();
        assert!(soon(idle));
        let (name, segment) = create_unique(10).unwrap();
        assert!(
            soon(|| backlog().0 == READY),
            "the taken segment is replaced"
        );

        discard(name.clone(), None);
        drop(segment);
        assert!(
            soon(|| Segment::open(&name).is_err()),
            "the segment is removed"
        );
    }

    #[test]
    fn segments_made_ahead_come_sized_and_distinct() {
        let made: Vec<_> = (0..2 * READY)
            .map(|i| create_unique(i as u64).unwrap())
            .collect();
        for (i, (name, segment)) in made.iter().enumerate() {
            assert_eq!(segment.len(), i as u64);
            assert_eq!(Segment::open(name).unwrap().len(), i as u64);
        }
        let names: std::collections::HashSet<_> = made.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), 2 * READY);
        for (name, _) in made {
            segment::unlink(&name);
        }
    }
}
