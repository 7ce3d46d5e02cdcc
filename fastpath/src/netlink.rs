//! What else is attached to an interface, asked over rtnetlink (safe wrappers of `nix`): the
//! `bpf` filters of its ingress and egress (`tc` on a `clsact` or `ingress` qdisc, the way
//! Calico's eBPF dataplane and Cilium before tcx attach) and its XDP program. tcx programs are
//! listed by aya ([`crate::Fastpath::tcx_programs`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::Error;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const HEADER: usize = 16;
/// `TCA_KIND`, `TCA_OPTIONS`; in the options of a `bpf` filter, `TCA_BPF_NAME`, `TCA_BPF_ID`.
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
/// `IFLA_XDP` and, nested, `IFLA_XDP_ATTACHED`, `IFLA_XDP_PROG_ID`.
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
/// How long a reply is waited for at most.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Filter parents: the `clsact` qdisc's ingress and egress hooks, and the `ingress` qdisc.
const PARENTS: [u32; 3] = [0xffff_fff2, 0xffff_fff3, 0xffff_0000];

/// The `bpf` filters on `ifindex`'s ingress and egress, and its XDP program: each by name
/// (`name` as the loader gave it, or `id N`).
pub(crate) fn other_programs(ifindex: u32) -> Result<Vec<String>, Error> {
    let socket = open().map_err(|errno| Error::Namespace(errno.into()))?;
    let mut found = Vec::new();
    for parent in PARENTS {
        let mut request = Vec::with_capacity(HEADER + 20);
        header(&mut request, RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP);
        request.extend_from_slice(&[0, 0, 0, 0]); // family, padding
        request.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes()); // handle
        request.extend_from_slice(&parent.to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes()); // info
        for message in exchange(&socket, request)? {
            if message.kind == RTM_NEWTFILTER && message.body.len() >= 20 {
                found.extend(bpf_filter(&message.body[20..]));
            }
        }
    }
    let mut request = Vec::with_capacity(HEADER + 16);
    header(&mut request, RTM_GETLINK, NLM_F_REQUEST);
    request.extend_from_slice(&[0, 0, 0, 0]); // family, padding, type
    request.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    request.extend_from_slice(&[0; 8]); // flags, change
    for message in exchange(&socket, request)? {
        if message.kind == RTM_NEWLINK && message.body.len() >= 16 {
            found.extend(xdp_program(&message.body[16..]));
        }
    }
    Ok(found)
}

fn open() -> nix::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    let timeout = TimeVal::new(TIMEOUT.as_secs() as _, 0);
    setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)?;
    Ok(socket)
}

/// An `nlmsghdr` (its length filled in by [`exchange`]).
fn header(out: &mut Vec<u8>, kind: u16, flags: u16) {
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
}

/// One message of a reply.
struct Message {
    kind: u16,
    body: Vec<u8>,
}

/// Sends `request` and reads the reply's messages up to the end of the dump (or the one
/// reply). An error message for a missing qdisc or filter chain is an empty answer.
fn exchange(socket: &OwnedFd, mut request: Vec<u8>) -> Result<Vec<Message>, Error> {
    let len = request.len() as u32;
    request[..4].copy_from_slice(&len.to_ne_bytes());
    let dump = u16::from_ne_bytes([request[6], request[7]]) & NLM_F_DUMP != 0;
    send(socket.as_raw_fd(), &request, MsgFlags::empty())
        .map_err(|errno| Error::Namespace(errno.into()))?;
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    // A dump ends with NLMSG_DONE; bounded however the kernel answers.
    for _ in 0..1024 {
        let got = recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|errno| Error::Namespace(errno.into()))?;
        let mut at = 0;
        while at + HEADER <= got {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < HEADER || at + len > got {
                return Ok(messages);
            }
            match kind {
                NLMSG_DONE | NLMSG_ERROR => return Ok(messages),
                _ => messages.push(Message {
                    kind,
                    body: buf[at + HEADER..at + len].to_vec(),
                }),
            }
            at += align(len);
        }
        if !dump {
            return Ok(messages);
        }
    }
    Ok(messages)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes of `bytes`: (type, payload).
fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > bytes.len() {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[at], bytes[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & 0x3fff;
        if len < 4 || at + len > bytes.len() {
            return None;
        }
        let payload = &bytes[at + 4..at + len];
        at += align(len);
        Some((kind, payload))
    })
}

/// A filter's program, when it is a `bpf` filter: its name, else its id.
fn bpf_filter(attrs: &[u8]) -> Option<String> {
    let kind = attributes(attrs).find(|(kind, _)| *kind == TCA_KIND)?.1;
    if kind.split(|&b| b == 0).next() != Some(b"bpf") {
        return None;
    }
    let options = attributes(attrs).find(|(kind, _)| *kind == TCA_OPTIONS)?.1;
    let name = attributes(options)
        .find(|(kind, _)| *kind == TCA_BPF_NAME)
        .map(|(_, name)| {
            String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        });
    let id = attributes(options)
        .find(|(kind, payload)| *kind == TCA_BPF_ID && payload.len() >= 4)
        .map(|(_, id)| format!("id {}", u32::from_ne_bytes(id[..4].try_into().expect("4"))));
    name.filter(|name| !name.is_empty())
        .or(id)
        .or(Some("bpf filter".into()))
}

/// The interface's XDP program, if one is attached: `xdp NAME` (or `xdp id N`).
fn xdp_program(attrs: &[u8]) -> Option<String> {
    let xdp = attributes(attrs).find(|(kind, _)| *kind == IFLA_XDP)?.1;
    let attached = attributes(xdp)
        .find(|(kind, payload)| *kind == IFLA_XDP_ATTACHED && !payload.is_empty())
        .is_some_and(|(_, mode)| mode[0] != 0);
    if !attached {
        return None;
    }
    let id = attributes(xdp)
        .find(|(kind, payload)| *kind == IFLA_XDP_PROG_ID && payload.len() >= 4)
        .map(|(_, id)| u32::from_ne_bytes(id[..4].try_into().expect("4")));
    let name = id.and_then(|id| {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|program| program.id() == id)
            .and_then(|program| program.name_as_str().map(str::to_string))
            .filter(|name| !name.is_empty())
    });
    Some(match (name, id) {
        (Some(name), _) => format!("xdp {name}"),
        (None, Some(id)) => format!("xdp id {id}"),
        (None, None) => "xdp".to_string(),
    })
}

/// rtnetlink's link group (`RTMGRP_LINK`): a message whenever an interface is added,
/// changed or removed.
const RTMGRP_LINK: u32 = 1;

/// A subscription to the interfaces' changes in the calling thread's network namespace, so
/// that a new pod's veth is attached as it appears rather than at the next rescan.
#[derive(Debug)]
pub struct LinkEvents {
    socket: OwnedFd,
}

impl LinkEvents {
    /// Subscribes (a non-blocking netlink socket in the link group).
    pub fn open() -> Result<LinkEvents, Error> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|errno| Error::Namespace(errno.into()))?;
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, RTMGRP_LINK))
            .map_err(|errno| Error::Namespace(errno.into()))?;
        Ok(LinkEvents { socket })
    }

    /// Whether anything changed since the last call: reads every message waiting, without
    /// blocking. A lost message (the socket's buffer overran: ENOBUFS) counts as a change.
    pub fn changed(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        // Bounded: a namespace creating interfaces without end cannot hold the caller.
        for _ in 0..256 {
            match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => break,
                Ok(_) => changed = true,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => return true,
            }
        }
        changed
    }
}
