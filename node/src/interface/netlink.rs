//! The few rtnetlink requests the local interface needs, sent synchronously over a
//! `NETLINK_ROUTE` socket (`netlink-sys`) with messages built by `netlink-packet-route`.
//!
//! Each request asks for an acknowledgement (`NLM_F_ACK`), so the kernel always answers with
//! an error message (code 0 for success) after any reply; a non-zero code becomes the
//! corresponding [`io::Error`] (`EEXIST`, `ENODEV`, `EOPNOTSUPP`, ...). A socket belongs to
//! the network namespace of the thread that opened it.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// Large enough for any single answer to the requests made here.
const RECEIVE_BUFFER_BYTES: usize = 64 * 1024;

/// An open `NETLINK_ROUTE` socket.
pub(super) struct RouteSocket {
    socket: Socket,
    sequence: u32,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// The index of the link called `name`, or `None` if there is none.
    pub(super) fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        let answers = match self.request(RouteNetlinkMessage::GetLink(request), 0) {
            Ok(answers) => answers,
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(error) => return Err(error),
        };
        answers
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(Some(link.header.index)),
                _ => None,
            })
            .ok_or_else(|| io::Error::other(format!("the kernel sent no link for {name}")))
    }

    /// Creates a link of kind `dummy` called `name` (left down, as node-cache leaves it).
    pub(super) fn add_dummy_link(&mut self, name: &str) -> io::Result<()> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_string()));
        request
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(request),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Adds `address` as a host address (/32 or /128) to link `index`.
    pub(super) fn add_host_address(&mut self, index: u32, address: IpAddr) -> io::Result<()> {
        let mut request = AddressMessage::default();
        request.header.index = index;
        (request.header.family, request.header.prefix_len) = match address {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        request.attributes.push(AddressAttribute::Local(address));
        request.attributes.push(AddressAttribute::Address(address));
        self.request(
            RouteNetlinkMessage::NewAddress(request),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes link `index`.
    pub(super) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(request), 0)
            .map(drop)
    }

    /// Sends one request and collects the messages answering it up to its acknowledgement.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut answers = Vec::new();
        loop {
            let mut buffer = Vec::with_capacity(RECEIVE_BUFFER_BYTES);
            self.socket.recv(&mut buffer, 0)?;
            let mut rest = &buffer[..];
            while !rest.is_empty() {
                let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                let length = answer.header.length as usize;
                if length == 0 || length > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message with a bad length",
                    ));
                }
                // Netlink messages are 4-byte aligned within a datagram.
                rest = rest.get(length.next_multiple_of(4)..).unwrap_or(&[]);
                if answer.header.sequence_number != self.sequence {
                    continue;
                }
                match answer.payload {
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io());
                    }
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }
}
