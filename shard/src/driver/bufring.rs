//! Memory the kernel reads or writes behind our back for the io_uring driver: anonymous
//! mappings, provided buffer rings (the receive side) and the pool of send slots (each a
//! `msghdr`, its iovec, the destination address and a [`MAX_MESSAGE`]-byte buffer, kept alive
//! and unmoved until the send's completion arrives).

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

use super::sys::{empty_msghdr, empty_storage, sockaddr_to_storage};
use crate::handler::MAX_MESSAGE;

/// An anonymous private mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    /// Maps `len` zeroed, page-aligned bytes.
    pub(crate) fn new(len: usize) -> io::Result<Mmap> {
        // SAFETY: an anonymous private mapping with a null hint touches no existing memory;
        // the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns; no
        // reference into it outlives `self` (borrows of it are tied to `&self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The kernel ABI of one buffer ring entry (`struct io_uring_buf`); entry 0's `resv` is the
/// ring's tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(size_of::<RawBuf>() == size_of::<BufRingEntry>());

/// A provided buffer ring registered under buffer group `bgid`: `entries` buffers of
/// `stride` bytes. Buffers taken by the kernel come back through [`BufRing::recycle`] and
/// become visible to the kernel again at [`BufRing::publish`].
#[derive(Debug)]
pub(crate) struct BufRing {
    ring: Mmap,
    bufs: Mmap,
    mask: u16,
    stride: usize,
    bgid: u16,
    tail: u16,
}

impl BufRing {
    /// Maps the ring and its buffers, registers them and hands every buffer to the kernel.
    /// `entries` must be a power of two.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        stride: usize,
        bgid: u16,
    ) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        let ring = Mmap::new(usize::from(entries) * size_of::<RawBuf>())?;
        let bufs = Mmap::new(usize::from(entries) * stride)?;
        // SAFETY: `ring` is a page-aligned mapping of `entries` entries that lives in this
        // BufRing; the driver unregisters the group (or drops the io_uring) before dropping it.
        unsafe { submitter.register_buf_ring_with_flags(ring.ptr() as u64, entries, bgid, 0)? };
        let mut br = BufRing {
            ring,
            bufs,
            mask: entries - 1,
            stride,
            bgid,
            tail: 0,
        };
        for bid in 0..entries {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The buffer group id.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has handed back to us.
    pub(crate) fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid & self.mask);
        let len = len.min(self.stride);
        // SAFETY: buffer `bid` lies inside `bufs` (bid <= mask, `len` <= stride). The kernel
        // returned it in a completion and does not touch it again until `recycle` re-adds it,
        // which needs `&mut self`, so it cannot happen while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.bufs.ptr().add(bid * self.stride), len) }
    }

    /// Gives buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    pub(crate) fn recycle(&mut self, bid: u16) {
        let bid = bid & self.mask;
        let idx = usize::from(self.tail & self.mask);
        let addr = self.bufs.ptr().wrapping_add(usize::from(bid) * self.stride) as u64;
        // SAFETY: `idx` <= mask indexes an entry inside `ring`. The kernel reads entries only
        // below the published tail, and at most `entries` buffers are ever outstanding, so this
        // slot is not being read. Only addr/len/bid are written, never entry 0's tail field.
        unsafe {
            let e = self.ring.ptr().cast::<RawBuf>().add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.stride as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel (a release store of the tail).
    pub(crate) fn publish(&self) {
        // SAFETY: the tail is the u16 `resv` field of entry 0 (offset 14, 2-byte aligned inside
        // a page-aligned mapping); the kernel reads it concurrently, so it is only accessed
        // atomically, and the mapping outlives this call.
        let tail = unsafe {
            AtomicU16::from_ptr(std::ptr::addr_of_mut!(
                (*self.ring.ptr().cast::<RawBuf>()).resv
            ))
        };
        tail.store(self.tail, Ordering::Release);
    }
}

/// One in-flight (or free) send: the `msghdr` the SQE points at, and what it points at.
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

/// A fixed pool of send slots with [`MAX_MESSAGE`]-byte buffers.
pub(crate) struct SendPool {
    slots: Box<[SendSlot]>,
    bufs: Mmap,
    free: Vec<u16>,
}

impl std::fmt::Debug for SendPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPool")
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Bytes per send buffer.
const SEND_STRIDE: usize = MAX_MESSAGE + 1;

impl SendPool {
    /// A pool of `n` slots (at most 65536).
    pub(crate) fn new(n: usize) -> io::Result<SendPool> {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let slots = (0..n)
            .map(|_| SendSlot {
                hdr: empty_msghdr(),
                iov,
                addr: empty_storage(),
            })
            .collect();
        Ok(SendPool {
            slots,
            bufs: Mmap::new(n * SEND_STRIDE)?,
            free: (0..n as u16).rev().collect(),
        })
    }

    /// Takes a free slot.
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        self.free.pop()
    }

    /// Returns a slot (its send completed, or it was never submitted).
    pub(crate) fn release(&mut self, slot: u16) {
        if usize::from(slot) < self.slots.len() {
            self.free.push(slot);
        }
    }

    /// Slots currently submitted.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The buffer of a slot taken with [`SendPool::alloc`] and not yet submitted.
    pub(crate) fn buf_mut(&mut self, slot: u16) -> &mut [u8] {
        let i = usize::from(slot).min(self.slots.len() - 1);
        // SAFETY: slot `i`'s buffer lies inside `bufs`. A slot handed out by `alloc` is not
        // submitted, so the kernel does not access it, and `&mut self` rules out any other
        // Rust borrow of it.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr().add(i * SEND_STRIDE), SEND_STRIDE) }
    }

    /// Fills slot `slot`'s `msghdr` for `len` bytes of its buffer to `peer`; returns the
    /// pointer to pass to `SendMsg`. The slot must stay allocated until the completion.
    pub(crate) fn prepare(
        &mut self,
        slot: u16,
        len: usize,
        peer: &SocketAddr,
    ) -> *const libc::msghdr {
        let i = usize::from(slot).min(self.slots.len() - 1);
        let base = self.bufs.ptr().wrapping_add(i * SEND_STRIDE);
        let s = &mut self.slots[i];
        s.iov = libc::iovec {
            iov_base: base.cast(),
            iov_len: len.min(SEND_STRIDE),
        };
        let namelen = sockaddr_to_storage(peer, &mut s.addr);
        s.hdr = empty_msghdr();
        s.hdr.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
        s.hdr.msg_namelen = namelen;
        s.hdr.msg_iov = &mut s.iov;
        s.hdr.msg_iovlen = 1;
        &s.hdr
    }
}
