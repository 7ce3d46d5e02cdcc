//! Why a query failed, kept as a value until it is logged: the last upstream attempt's
//! failure (a timeout, or what the driver saw when the link failed), or a fixed reason. The
//! `errors` log writes it as CoreDNS does, in Go's words (`read udp 10.96.0.10:53: i/o
//! timeout`), so that the lines operators grep for stay the same.

use std::fmt;
use std::net::SocketAddr;

use crate::config::UpstreamConfig;
use crate::{LinkError, Protocol};

/// How one upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptFailure {
    /// Index into [`crate::Config::upstreams`].
    pub(crate) upstream: u16,
    pub(crate) protocol: Protocol,
    /// What the driver saw; `None`: no reply in time.
    pub(crate) error: Option<LinkError>,
}

/// Why a query's clients got an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureReason {
    /// The last upstream attempt failed like this.
    Attempt(AttemptFailure),
    /// Anything else, in words.
    Text(&'static str),
}

impl FailureReason {
    /// The reason as the `errors` log writes it, with the upstream's address from
    /// `upstreams`.
    pub(crate) fn describe<'a>(&'a self, upstreams: &'a [UpstreamConfig]) -> Described<'a> {
        Described {
            reason: self,
            upstreams,
        }
    }
}

/// A [`FailureReason`] with the addresses to write it.
#[derive(Debug)]
pub(crate) struct Described<'a> {
    reason: &'a FailureReason,
    upstreams: &'a [UpstreamConfig],
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = match self.reason {
            FailureReason::Text(text) => return f.write_str(text),
            FailureReason::Attempt(failure) => failure,
        };
        let protocol = match failure.protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        };
        let addr: Option<SocketAddr> = self
            .upstreams
            .get(usize::from(failure.upstream))
            .map(|upstream| upstream.addr);
        let addr = addr.map_or_else(|| "?".to_string(), |addr| addr.to_string());
        match failure.error {
            None => write!(f, "read {protocol} {addr}: i/o timeout"),
            Some(error) => write!(f, "{} {protocol} {addr}: {error}", error.operation),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn reasons_in_go_words() {
        let upstreams = [UpstreamConfig {
            addr: "10.96.0.10:53".parse().unwrap(),
        }];
        let attempt = |protocol, error| {
            FailureReason::Attempt(AttemptFailure {
                upstream: 0,
                protocol,
                error,
            })
        };
        let cases = [
            (
                attempt(Protocol::Udp, None),
                "read udp 10.96.0.10:53: i/o timeout",
            ),
            (
                attempt(
                    Protocol::Tcp,
                    Some(LinkError::dial(io::ErrorKind::ConnectionRefused)),
                ),
                "dial tcp 10.96.0.10:53: connect: connection refused",
            ),
            (
                attempt(
                    Protocol::Tcp,
                    Some(LinkError::read(io::ErrorKind::UnexpectedEof)),
                ),
                "read tcp 10.96.0.10:53: EOF",
            ),
            (
                attempt(
                    Protocol::Tcp,
                    Some(LinkError::read(io::ErrorKind::ConnectionReset)),
                ),
                "read tcp 10.96.0.10:53: connection reset by peer",
            ),
            (FailureReason::Text("no upstream"), "no upstream"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.describe(&upstreams).to_string(), text);
        }
    }
}
