//! The io_uring driver's submissions: what each one is for ([`Token`], carried in its
//! `user_data`), and a queue that never drops one. An entry that does not fit in the
//! submission ring waits in a backlog (after the io-uring crate's `tcp_echo` example) and goes
//! in, in order, before the driver next waits for completions; a failed submit leaves the
//! entries where they are for the next round. A multishot receive whose re-arm was dropped
//! would leave its listener deaf for good, and a dropped send would lose its slot.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{IoUring, squeue};
use tracing::debug;

/// What a submission is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// The multishot receive of UDP listener `.0` (its index in the driver's list).
    Receive(u16),
    /// The reply in send slot `.0`.
    Send(u16),
    /// The multishot poll on the reactor's epoll descriptor.
    ReactorPoll,
    /// The cancellation of everything in flight, at teardown.
    Cancel,
}

impl Token {
    const KIND_SHIFT: u32 = 32;
    const RECEIVE: u64 = 1;
    const SEND: u64 = 2;
    const REACTOR_POLL: u64 = 3;
    const CANCEL: u64 = 4;

    /// The `user_data` of a submission for this.
    pub(super) fn user_data(self) -> u64 {
        let (kind, index) = match self {
            Token::Receive(listener) => (Token::RECEIVE, listener),
            Token::Send(slot) => (Token::SEND, slot),
            Token::ReactorPoll => (Token::REACTOR_POLL, 0),
            Token::Cancel => (Token::CANCEL, 0),
        };
        kind << Token::KIND_SHIFT | u64::from(index)
    }

    /// What a completion's `user_data` was for (`None`: not one of ours).
    pub(super) fn of(user_data: u64) -> Option<Token> {
        let index = u16::try_from(user_data & ((1 << Token::KIND_SHIFT) - 1)).ok()?;
        Some(match user_data >> Token::KIND_SHIFT {
            Token::RECEIVE => Token::Receive(index),
            Token::SEND => Token::Send(index),
            Token::REACTOR_POLL if index == 0 => Token::ReactorPoll,
            Token::CANCEL if index == 0 => Token::Cancel,
            _ => return None,
        })
    }
}

/// The ring with a backlog for entries that do not fit.
pub(super) struct Queue {
    pub(super) ring: IoUring,
    backlog: VecDeque<squeue::Entry>,
    /// Submits still to fail (tests force a queue that cannot drain).
    #[cfg(test)]
    pub(super) fail_submits: usize,
}

impl Queue {
    pub(super) fn new(ring: IoUring) -> Queue {
        Queue {
            ring,
            backlog: VecDeque::new(),
            #[cfg(test)]
            fail_submits: 0,
        }
    }

    /// Queues `entry`: into the submission ring if it has room and nothing waits before it,
    /// else into the backlog. Never submits, never drops.
    ///
    /// # Safety
    ///
    /// Everything `entry` points at must stay valid and unmoved until its completion
    /// arrives (or until the queue is dropped without submitting it).
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: the caller guarantees what the entry points at outlives its completion.
            match unsafe { self.ring.submission().push(&entry) } {
                Ok(()) => return,
                Err(_) => debug!("submission ring full; entry kept in the backlog"),
            }
        }
        self.backlog.push_back(entry);
    }

    /// Entries waiting for room in the submission ring.
    pub(super) fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Moves the backlog into the submission ring, submitting to make room, until it is
    /// empty or a submit fails (the rest waits for the next round).
    fn drain_backlog(&mut self) {
        loop {
            while let Some(entry) = self.backlog.front() {
                // SAFETY: `entry` was accepted by `push`, whose caller guaranteed that what
                // it points at stays valid until its completion.
                if unsafe { self.ring.submission().push(entry) }.is_err() {
                    break;
                }
                self.backlog.pop_front();
            }
            if self.backlog.is_empty() {
                return;
            }
            if let Err(error) = self.submit() {
                debug!(
                    "io_uring submit: {error}; {} entries wait",
                    self.backlog.len()
                );
                return;
            }
        }
    }

    /// Submits what the submission ring holds.
    fn submit(&mut self) -> io::Result<usize> {
        #[cfg(test)]
        if self.fail_submits > 0 {
            self.fail_submits -= 1;
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.ring.submit()
    }

    /// Submits everything queued (the backlog first) and waits up to `timeout` for a
    /// completion; does not wait while entries remain in the backlog.
    pub(super) fn enter(&mut self, timeout: Duration) -> io::Result<()> {
        self.drain_backlog();
        let timeout = if self.backlog.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        #[cfg(test)]
        if self.fail_submits > 0 {
            self.fail_submits -= 1;
            return Ok(());
        }
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::EBADR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the backlog without submitting it (teardown: the kernel never saw it).
    pub(super) fn take_backlog(&mut self) -> VecDeque<squeue::Entry> {
        std::mem::take(&mut self.backlog)
    }
}

#[cfg(test)]
mod tests {
    use io_uring::opcode;

    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token::Receive(0),
            Token::Receive(u16::MAX),
            Token::Send(1023),
            Token::ReactorPoll,
            Token::Cancel,
        ] {
            assert_eq!(Token::of(token.user_data()), Some(token));
        }
        assert_eq!(Token::of(0), None);
        assert_eq!(Token::of(9 << 32), None);
        assert_eq!(Token::of(3 << 32 | 1), None);
        assert_eq!(Token::of(1 << 32 | 1 << 20), None);
    }

    /// A submission ring of 4 entries, 40 entries queued while submits fail: all are kept,
    /// in order, and all complete once submits succeed again.
    #[test]
    fn a_full_ring_keeps_every_entry() {
        if let Err(why) = super::super::probe() {
            println!("skipping: {why}");
            return;
        }
        let ring = IoUring::builder().setup_cqsize(64).build(4).expect("ring");
        let mut queue = Queue::new(ring);
        queue.fail_submits = 25;
        for n in 0..40u16 {
            let nop = opcode::Nop::new()
                .build()
                .user_data(Token::Send(n).user_data());
            // SAFETY: a NOP points at nothing.
            unsafe { queue.push(nop) };
        }
        assert_eq!(queue.backlog(), 36, "4 fit, the rest wait");
        let mut done = Vec::new();
        for _ in 0..100 {
            queue.enter(Duration::from_millis(10)).expect("enter");
            done.extend(
                queue
                    .ring
                    .completion()
                    .map(|cqe| Token::of(cqe.user_data())),
            );
            if done.len() == 40 {
                break;
            }
        }
        let expected: Vec<_> = (0..40).map(|n| Some(Token::Send(n))).collect();
        assert_eq!(done, expected, "every entry, in order");
        assert_eq!(queue.backlog(), 0);
    }
}
