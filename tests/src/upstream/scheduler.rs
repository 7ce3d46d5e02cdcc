//! The scheduler: sends delayed answers, in (due, arrival) order, on its own thread.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use super::{Inner, POLL, lock};

pub(super) struct Job {
    due: Instant,
    seq: u64,
    run: Box<dyn FnOnce() + Send>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
pub(super) struct Scheduler {
    pub(super) heap: Mutex<BinaryHeap<Reverse<Job>>>,
    pub(super) cv: Condvar,
    seq: AtomicU64,
}

impl Scheduler {
    pub(super) fn schedule(&self, due: Instant, run: Box<dyn FnOnce() + Send>) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        lock(&self.heap).push(Reverse(Job { due, seq, run }));
        self.cv.notify_all();
    }
}

pub(super) fn run_scheduler(inner: &Inner) {
    let sched = &inner.sched;
    let mut heap = lock(&sched.heap);
    loop {
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let wait = match heap.peek() {
            Some(Reverse(j)) if j.due <= now => {
                if let Some(Reverse(job)) = heap.pop() {
                    drop(heap);
                    (job.run)();
                    heap = lock(&sched.heap);
                }
                continue;
            }
            Some(Reverse(j)) => (j.due - now).min(POLL),
            None => POLL,
        };
        heap = sched
            .cv
            .wait_timeout(heap, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}
