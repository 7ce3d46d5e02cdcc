//! Passing open descriptors between processes over a Unix stream socket (`SCM_RIGHTS`), as a
//! hand-off gives its listening sockets to the process that takes over: safe functions over
//! `sendmsg`/`recvmsg`, the only `unsafe` they need kept here with the drivers'.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;

/// Bytes of control data for `n` descriptors.
fn space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) as usize }
}

/// Sends `data` (at least one byte) on `stream` with `fds` attached (at most [`MAX_FDS`]).
/// The descriptors stay open here; the receiver gets duplicates.
pub fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at least one byte and at most 250 descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut sent = 0;
    while sent < data.len() {
        // The descriptors go with the first bytes; the rest, if any, goes plain.
        let attach = sent == 0 && !raw.is_empty();
        // u64 elements keep the buffer aligned for cmsghdr.
        let mut control = vec![0u64; space(raw.len()).div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: data[sent..].as_ptr() as *mut libc::c_void,
            iov_len: data.len() - sent,
        };
        // SAFETY: an all-zero msghdr is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if attach {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space(raw.len()) as _;
            // SAFETY: `msg` points at `control`, which holds CMSG_SPACE(len) bytes, so the
            // first header and its data (CMSG_LEN(len) bytes) fit; CMSG_FIRSTHDR returns it
            // (not null, since msg_controllen >= size_of::<cmsghdr>()), CMSG_DATA its data.
            unsafe {
                let header = libc::CMSG_FIRSTHDR(&msg);
                (*header).cmsg_level = libc::SOL_SOCKET;
                (*header).cmsg_type = libc::SCM_RIGHTS;
                (*header).cmsg_len = libc::CMSG_LEN((raw.len() * size_of::<RawFd>()) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    raw.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(header),
                    raw.len() * size_of::<RawFd>(),
                );
            }
        }
        // SAFETY: `msg` points at `iov` (over the rest of `data`) and `control`, both alive
        // for the call; the kernel only reads them.
        let rc = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        sent += rc as usize;
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes from `stream` with the descriptors attached to them
/// (close-on-exec), which the caller then owns. `Ok((0, _))`: the peer closed.
pub fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u64; space(MAX_FDS).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space(MAX_FDS) as _;
    let received = loop {
        // SAFETY: `msg` points at `iov` (over `buf`, writable) and `control` (writable,
        // msg_controllen bytes), both alive for the call.
        let rc = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if rc >= 0 {
            break rc as usize;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg`'s control buffer; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen and return null at its end. Each SCM_RIGHTS header holds cmsg_len -
    // CMSG_LEN(0) bytes of descriptors, read unaligned; every descriptor is new to this
    // process (the kernel installed it) and owned by nothing else, so it becomes an OwnedFd.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were cut off (more than 250 in one message)",
        ));
    }
    Ok((received, fds))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn sockets_cross_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        send_with_fds(&a, b"hello", &[udp.as_fd(), other.as_fd()]).unwrap();
        send_with_fds(&a, b"plain", &[]).unwrap();
        let mut buf = [0u8; 5];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"hello"[..], 2));
        let received = UdpSocket::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), addr, "the same socket");
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"plain"[..], 0));
        drop(a);
        let mut rest = Vec::new();
        (&b).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(send_with_fds(&b, b"", &[]).is_err());
    }
}
