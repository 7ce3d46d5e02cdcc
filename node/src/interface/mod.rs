//! The local interface: a dummy link (`nodelocaldns` by default) holding every local IP as a
//! host address (/32 or /128), so the proxy can bind them and the node delivers them locally.
//!
//! node-cache (`pkg/netif/netif.go`, `EnsureDummyDevice` / `RemoveDummyDevice`) creates the
//! link over netlink with its addresses, re-checks it every sync interval (re-creating it when
//! it is missing, re-adding its addresses when it exists) and deletes it at teardown; it never
//! sets the link up. [`LocalInterface`] does the same over netlink (`netlink-packet-route` +
//! `netlink-sys`), synchronously, with no `ip` command. A kernel without the dummy link type
//! (`CONFIG_DUMMY` off) gets [`InterfaceError::DummyUnsupported`], which tells the operator to
//! run with `-setupinterface=false` and provide the addresses another way.
//!
//! Failures are logged and counted in [`SetupErrors`] (`interface_add` when creating the link
//! or giving a new link its addresses fails, `interface_check` when looking it up or restoring
//! an address on it fails) and returned; none is fatal.

mod netlink;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use thiserror::Error;

use self::netlink::RouteSocket;
use crate::setup_errors::{SetupErrorType, SetupErrors};

/// node-cache's `-interfacename` default.
pub const DEFAULT_INTERFACE_NAME: &str = "nodelocaldns";

/// A failed interface operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InterfaceError {
    /// The kernel has no `dummy` link type.
    #[error(
        "cannot create interface {name}: this kernel has no dummy link type (CONFIG_DUMMY); \
         run with -setupinterface=false and put the local IPs on the node another way"
    )]
    DummyUnsupported {
        /// The interface's name.
        name: String,
    },
    /// No netlink socket could be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// Looking the link up failed.
    #[error("looking up interface {name}: {source}")]
    Lookup {
        /// The interface's name.
        name: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Creating the link failed.
    #[error("creating interface {name}: {source}")]
    Create {
        /// The interface's name.
        name: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Adding one of the addresses failed.
    #[error("adding {address} to interface {name}: {source}")]
    AddAddress {
        /// The interface's name.
        name: String,
        /// The address.
        address: IpAddr,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Deleting the link failed.
    #[error("deleting interface {name}: {source}")]
    Delete {
        /// The interface's name.
        name: String,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// What [`LocalInterface::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceState {
    /// The link was missing and was created with every address.
    Created,
    /// The link existed; `restored` addresses were missing and were added back.
    Present {
        /// How many addresses were added back.
        restored: usize,
    },
}

/// The local interface: its name, the addresses it holds and the error counters.
#[derive(Debug, Clone)]
pub struct LocalInterface {
    name: String,
    addresses: Vec<IpAddr>,
    errors: Arc<SetupErrors>,
}

impl LocalInterface {
    /// The link `name` holding `addresses`; failures are counted in `errors`. Nothing is done
    /// until [`LocalInterface::ensure`].
    pub fn new(name: &str, addresses: Vec<IpAddr>, errors: Arc<SetupErrors>) -> Self {
        Self {
            name: name.to_string(),
            addresses,
            errors,
        }
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes sure the link exists with every address: creates it (with its addresses) when it
    /// is missing, else adds back any address that was removed. Run at start-up and every
    /// sync interval, in the network namespace of the calling thread.
    pub fn ensure(&self) -> Result<InterfaceState, InterfaceError> {
        let result = self.ensure_uncounted();
        if let Err((error_type, error)) = &result {
            tracing::warn!(interface = %self.name, %error, "setting up the local interface failed");
            self.errors.record(*error_type);
        }
        result.map_err(|(_, error)| error)
    }

    fn ensure_uncounted(&self) -> Result<InterfaceState, (SetupErrorType, InterfaceError)> {
        let check = SetupErrorType::InterfaceCheck;
        let mut socket =
            RouteSocket::open().map_err(|source| (check, InterfaceError::Socket(source)))?;
        match self.lookup(&mut socket).map_err(|error| (check, error))? {
            Some(index) => {
                let restored = self
                    .add_addresses(&mut socket, index)
                    .map_err(|error| (check, error))?;
                if restored > 0 {
                    tracing::info!(interface = %self.name, restored, "added back local addresses");
                }
                Ok(InterfaceState::Present { restored })
            }
            None => {
                self.create(&mut socket)
                    .map_err(|error| (SetupErrorType::InterfaceAdd, error))?;
                tracing::info!(interface = %self.name, addresses = ?self.addresses, "added interface");
                Ok(InterfaceState::Created)
            }
        }
    }

    /// Deletes the link. `Ok(false)` if there was none. Run at teardown, after the rules.
    pub fn remove(&self) -> Result<bool, InterfaceError> {
        let mut socket = RouteSocket::open().map_err(InterfaceError::Socket)?;
        let Some(index) = self.lookup(&mut socket)? else {
            return Ok(false);
        };
        socket
            .delete_link(index)
            .map_err(|source| InterfaceError::Delete {
                name: self.name.clone(),
                source,
            })?;
        tracing::info!(interface = %self.name, "deleted interface");
        Ok(true)
    }

    fn lookup(&self, socket: &mut RouteSocket) -> Result<Option<u32>, InterfaceError> {
        socket
            .link_index(&self.name)
            .map_err(|source| InterfaceError::Lookup {
                name: self.name.clone(),
                source,
            })
    }

    fn create(&self, socket: &mut RouteSocket) -> Result<(), InterfaceError> {
        socket.add_dummy_link(&self.name).map_err(|source| {
            if source.raw_os_error() == Some(libc::EOPNOTSUPP) {
                InterfaceError::DummyUnsupported {
                    name: self.name.clone(),
                }
            } else {
                InterfaceError::Create {
                    name: self.name.clone(),
                    source,
                }
            }
        })?;
        let index = self.lookup(socket)?.ok_or_else(|| InterfaceError::Create {
            name: self.name.clone(),
            source: io::Error::other("the link was created but is not found"),
        })?;
        self.add_addresses(socket, index).map(drop)
    }

    /// Adds every address; one already there is fine. Returns how many were added, or the
    /// first failure once every address was tried.
    fn add_addresses(&self, socket: &mut RouteSocket, index: u32) -> Result<usize, InterfaceError> {
        let mut added = 0;
        let mut first_failure = None;
        for &address in &self.addresses {
            match socket.add_host_address(index, address) {
                Ok(()) => added += 1,
                Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    let name = self.name.clone();
                    first_failure.get_or_insert(InterfaceError::AddAddress {
                        name,
                        address,
                        source,
                    });
                }
            }
        }
        first_failure.map_or(Ok(added), Err)
    }
}
