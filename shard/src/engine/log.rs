//! The `log` directive: one line per answered query, in CoreDNS's default format
//! (`{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode}
//! {>rflags} {rsize} {duration}`), e.g.
//! `127.0.0.1:52953 - 20417 "A IN example.org. udp 41 false 4096" NOERROR qr,rd,ra 68
//! 0.000208s`. Without `log` in any block, a query pays one load and branch.

use std::fmt::{self, Write};

use shardns_wire::{Header, Rcode};

use super::Engine;
use crate::names::{in_zone, to_text, type_name};
use crate::{Client, Protocol};

/// A query as the log line shows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoggedQuery<'a> {
    pub(super) client: &'a Client,
    pub(super) id: u16,
    pub(super) qtype: u16,
    /// The name as the client wrote it (uncompressed wire form).
    pub(super) qname: &'a [u8],
    pub(super) query_len: usize,
    /// `Some((UDP payload size, DO))` when the query had an OPT record.
    pub(super) edns: Option<(u16, bool)>,
    /// From its arrival to its reply.
    pub(super) micros: u64,
}

impl Engine {
    /// Whether server block `server` logs queries for `qname`: one load and branch when no
    /// block has `log` (the hit path pays nothing more).
    #[inline(always)]
    pub(super) fn logs(&self, server: usize, qname: &[u8]) -> bool {
        self.logging && self.block_logs(server, qname)
    }

    /// [`Engine::logs`] once some block has `log`.
    #[inline(never)]
    fn block_logs(&self, server: usize, qname: &[u8]) -> bool {
        match &self.config.servers[server].log_queries {
            None => false,
            Some(zones) => zones.is_empty() || zones.iter().any(|zone| in_zone(qname, zone)),
        }
    }

    /// Writes the line of `query`, answered with `reply`.
    pub(super) fn log_query(&self, query: &LoggedQuery<'_>, reply: &[u8]) {
        let mut line = String::with_capacity(160);
        let _ = write_line(&mut line, query, reply);
        tracing::info!(target: "plugin/log", "{line}");
    }
}

/// CoreDNS's default log line.
fn write_line(out: &mut String, query: &LoggedQuery<'_>, reply: &[u8]) -> fmt::Result {
    let protocol = match query.client.protocol {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
    };
    // CoreDNS's `{>bufsize}`: the EDNS payload size, 512 without EDNS, 64 KiB over TCP.
    let bufsize = match (query.client.protocol, query.edns) {
        (Protocol::Tcp, _) => 65535,
        (Protocol::Udp, Some((payload, _))) => payload.max(512),
        (Protocol::Udp, None) => 512,
    };
    let dnssec_ok = query.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok);
    write!(
        out,
        "{} - {} \"{} IN {} {protocol} {} {dnssec_ok} {bufsize}\" ",
        query.client.peer,
        query.id,
        type_name(query.qtype),
        to_text(query.qname),
        query.query_len,
    )?;
    match Header::parse(reply) {
        Ok(header) => {
            write!(out, "{} ", Rcode::from_parts((header.flags & 0xf) as u8, 0))?;
            let mut first = true;
            for (set, name) in [
                (header.qr(), "qr"),
                (header.aa(), "aa"),
                (header.tc(), "tc"),
                (header.rd(), "rd"),
                (header.ra(), "ra"),
                (header.ad(), "ad"),
                (header.cd(), "cd"),
            ] {
                if set {
                    if !first {
                        out.push(',');
                    }
                    out.push_str(name);
                    first = false;
                }
            }
            if first {
                out.push('-');
            }
        }
        Err(_) => out.push_str("- -"),
    }
    write!(out, " {} {}s", reply.len(), query.micros as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coredns_default_format() {
        let client = Client {
            listener: 0,
            protocol: Protocol::Udp,
            peer: "127.0.0.1:52953".parse().unwrap(),
            conn: 0,
        };
        let query = LoggedQuery {
            client: &client,
            id: 20417,
            qtype: 1,
            qname: b"\x07example\x03org\x00",
            query_len: 41,
            edns: Some((4096, false)),
            micros: 208,
        };
        let mut reply = vec![0x4f, 0xc1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        reply.resize(68, 0);
        let mut line = String::new();
        write_line(&mut line, &query, &reply).unwrap();
        assert_eq!(
            line,
            "127.0.0.1:52953 - 20417 \"A IN example.org. udp 41 false 4096\" NOERROR qr,rd,ra \
             68 0.000208s"
        );
        let tcp = Client {
            protocol: Protocol::Tcp,
            peer: "[::1]:4000".parse().unwrap(),
            ..client
        };
        let mut nxdomain = vec![0, 1, 0x85, 0x83];
        nxdomain.resize(30, 0);
        line.clear();
        let query = LoggedQuery {
            client: &tcp,
            edns: None,
            qtype: 28,
            micros: 0,
            ..query
        };
        write_line(&mut line, &query, &nxdomain).unwrap();
        assert_eq!(
            line,
            "[::1]:4000 - 20417 \"AAAA IN example.org. tcp 41 false 65535\" NXDOMAIN \
             qr,aa,rd,ra 30 0s"
        );
    }
}
