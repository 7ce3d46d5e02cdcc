//! Loading the program and its maps, attaching it to interfaces, filling the answers map.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, SchedClassifier, tc};
use aya::sys::SyscallError;
use aya::util::KernelVersion;
use nix::sched::{CloneFlags, setns};

use crate::Error;
use crate::layout::{Answer, AnswerKey, KEY_LEN, MAX_ENTRIES, VALUE_LEN, VALUE_SLOT};

/// The compiled program (clang `-O2 -g -target bpf`), when built with the `bpf` feature.
#[cfg(feature = "bpf")]
pub const OBJECT: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o")));
/// The compiled program (clang `-O2 -g -target bpf`), when built with the `bpf` feature.
#[cfg(not(feature = "bpf"))]
pub const OBJECT: Option<&[u8]> = None;

/// A program (`cni_stand_in`, a TC classifier that passes everything) the tests attach to
/// stand for another program, a CNI's; with the `bpf` feature.
#[cfg(feature = "bpf")]
pub const STAND_IN_OBJECT: Option<&[u8]> =
    Some(include_bytes!(concat!(env!("OUT_DIR"), "/stand_in.bpf.o")));
/// A program (`cni_stand_in`, a TC classifier that passes everything) the tests attach to
/// stand for another program, a CNI's; with the `bpf` feature.
#[cfg(not(feature = "bpf"))]
pub const STAND_IN_OBJECT: Option<&[u8]> = None;

const PROGRAM: &str = "shardns_fastpath";
const ANSWERS: &str = "FP_ANSWERS";
const ADDRESSES: &str = "FP_ADDRS";
const STATS: &str = "FP_STATS";
const HITS: &str = "FP_HITS";

/// An entry's hit counter in `FP_HITS`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    index: u32,
    /// The counter's sum when the slot was given the entry (slots are reused).
    baseline: u64,
}

/// The program's counters, summed over CPUs (indices as `STAT_*` in the C source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Queries answered.
    pub hits: u64,
    /// Queries it could answer with no entry for their key.
    pub misses: u64,
    /// Queries whose entry had expired.
    pub expired: u64,
    /// Queries whose answer is over the client's UDP limit (the socket path truncates).
    pub too_big: u64,
    /// Rewrites a helper failed in.
    pub errors: u64,
}

/// The loaded program and its maps. Attachments last until [`Fastpath::detach`] or drop
/// (which detaches from every interface, each in the network namespace it was attached in).
///
/// On kernels before 6.6 (and with [`Fastpath::attach_netlink`]) the attachment is a `tc`
/// filter, which outlives a process that is killed: the program then answers from a map
/// nobody updates, until each entry's expiry (after which everything passes).
pub struct Fastpath {
    answers: HashMap<MapData, [u8; KEY_LEN], [u8; VALUE_LEN]>,
    addresses: HashMap<MapData, [u8; 20], u8>,
    stats: PerCpuArray<MapData, u64>,
    hits: PerCpuArray<MapData, u64>,
    /// Each entry's hit counter slot, and the slot's count when it was given the entry.
    slots: std::collections::HashMap<[u8; KEY_LEN], Slot>,
    /// Slots no entry holds.
    free_slots: Vec<u32>,
    attached: Vec<Attachment>,
    // Last: dropping it closes the program (a tcx link goes with it; a netlink filter does
    // not, hence the Drop impl).
    ebpf: Ebpf,
}

/// One interface the program is attached to.
#[derive(Debug)]
struct Attachment {
    interface: String,
    link: SchedClassifierLinkId,
    /// The network namespace it was attached in: a netlink detach must run there.
    netns: File,
}

impl std::fmt::Debug for Fastpath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let interfaces: Vec<&str> = self
            .attached
            .iter()
            .map(|attachment| attachment.interface.as_str())
            .collect();
        f.debug_struct("Fastpath")
            .field("attached", &interfaces)
            .finish_non_exhaustive()
    }
}

impl Fastpath {
    /// Loads the embedded program ([`OBJECT`]) through the verifier. Needs CAP_BPF (and
    /// CAP_PERFMON, CAP_NET_ADMIN to attach).
    pub fn load() -> Result<Fastpath, Error> {
        Fastpath::load_object(OBJECT.ok_or(Error::NoObject)?)
    }

    /// Loads `object`, an ELF file built from `bpf/fastpath.bpf.c`.
    pub fn load_object(object: &[u8]) -> Result<Fastpath, Error> {
        let mut ebpf = Ebpf::load(object)?;
        let answers = HashMap::try_from(ebpf.take_map(ANSWERS).ok_or(Error::Missing(ANSWERS))?)?;
        let addresses =
            HashMap::try_from(ebpf.take_map(ADDRESSES).ok_or(Error::Missing(ADDRESSES))?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map(STATS).ok_or(Error::Missing(STATS))?)?;
        let hits = PerCpuArray::try_from(ebpf.take_map(HITS).ok_or(Error::Missing(HITS))?)?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()?;
        program.load()?;
        Ok(Fastpath {
            answers,
            addresses,
            stats,
            hits,
            slots: std::collections::HashMap::new(),
            free_slots: (0..MAX_ENTRIES).rev().collect(),
            attached: Vec::new(),
            ebpf,
        })
    }

    /// Attaches the program to `interface`'s ingress, in the calling thread's network
    /// namespace: tcx on kernels ≥ 6.6 (after the programs already there), else a `clsact`
    /// qdisc (added when missing) and a filter. Refuses ([`Error::Occupied`]) where another
    /// program is attached through tcx (a CNI's, such as Cilium's): hits answered here would
    /// skip it, and where a `bpf` filter or an XDP program is ([`Fastpath::other_programs`]).
    /// Another shardns's program (an upgrade's predecessor, same name) is not counted. [`Fastpath::attach_anyway`] attaches all the same.
    pub fn attach(&mut self, interface: &str) -> Result<(), Error> {
        // Another shardns's program (an upgrade's predecessor) is not a CNI's.
        let mut others = Fastpath::tcx_programs(interface)?;
        // The kernel keeps 15 bytes of a program's name.
        let ours = &PROGRAM[..PROGRAM.len().min(15)];
        others.retain(|name| name != ours);
        others.extend(
            Fastpath::other_programs(interface)?
                .into_iter()
                .filter(|name| name != PROGRAM),
        );
        if !others.is_empty() {
            return Err(Error::Occupied {
                interface: interface.to_string(),
                programs: others,
            });
        }
        self.attach_anyway(interface)
    }

    /// [`Fastpath::attach`] without looking for other programs first.
    pub fn attach_anyway(&mut self, interface: &str) -> Result<(), Error> {
        self.attach_as(interface, !tcx_kernel())
    }

    /// Attaches as on kernels before 6.6, whatever this one supports: a `clsact` qdisc
    /// (added when missing; left in place on detach) and a netlink filter. For the tests of
    /// that path on a newer kernel, and for an explicit choice.
    pub fn attach_netlink(&mut self, interface: &str) -> Result<(), Error> {
        self.attach_as(interface, true)
    }

    fn attach_as(&mut self, interface: &str, netlink: bool) -> Result<(), Error> {
        let options = if netlink {
            // An interface that already has the qdisc answers EEXIST: not an error here.
            match tc::qdisc_add_clsact(interface) {
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc_eexist()) => {}
                Err(error) => return Err(Error::Program(error.into())),
                Ok(()) => {}
            }
            TcAttachOptions::Netlink(NlOptions::default())
        } else {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        };
        let link =
            self.program()?
                .attach_with_options(interface, TcAttachType::Ingress, options)?;
        let netns = File::open("/proc/thread-self/ns/net").map_err(Error::Namespace)?;
        self.attached.push(Attachment {
            interface: interface.to_string(),
            link,
            netns,
        });
        Ok(())
    }

    /// The programs attached to `interface` through tcx, ingress and egress (names, or ids
    /// where a program has no name). Empty on kernels without tcx: legacy `tc` filters and
    /// XDP programs are not looked for yet.
    pub fn tcx_programs(interface: &str) -> Result<Vec<String>, Error> {
        if !tcx_kernel() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for direction in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, programs) = SchedClassifier::query_tcx(interface, direction)?;
            names.extend(programs.iter().map(|program| {
                match program.name_as_str().filter(|name| !name.is_empty()) {
                    Some(name) => name.to_string(),
                    None => format!("id {}", program.id()),
                }
            }));
        }
        Ok(names)
    }

    /// The other eBPF programs on `interface`, in the calling thread's network namespace:
    /// `bpf` filters on its ingress and egress (a `clsact` or `ingress` qdisc: how Calico's
    /// eBPF dataplane and Cilium before tcx attach), by the name their loader gave, and its
    /// XDP program (`xdp NAME`). Programs attached through tcx: [`Fastpath::tcx_programs`].
    pub fn other_programs(interface: &str) -> Result<Vec<String>, Error> {
        let index = nix::net::if_::if_nametoindex(interface)
            .map_err(|errno| Error::Namespace(errno.into()))?;
        crate::netlink::other_programs(index)
    }

    /// Removes the `tc` filters of this program (by its name) that a process killed before it
    /// could detach left on `interface`'s ingress (kernels before 6.6, or
    /// [`Fastpath::attach_netlink`]; a tcx link goes with its process), in the calling
    /// thread's network namespace. Also removes this process's own netlink attachments
    /// there: call it before attaching, and never while another live process (an upgrade's
    /// predecessor) serves through such a filter. `false` when there was none.
    pub fn remove_leftovers(interface: &str) -> Result<bool, Error> {
        match tc::qdisc_detach_program(interface, TcAttachType::Ingress, PROGRAM) {
            Ok(()) => Ok(true),
            Err(tc::TcError::IoError(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(false)
            }
            // No clsact qdisc on the interface: nothing can be attached there.
            Err(tc::TcError::NetlinkError(error)) if matches!(error.raw_os_error(), Some(code) if code == libc_einval() || code == libc_enoent()) => {
                Ok(false)
            }
            Err(error) => Err(Error::Program(error.into())),
        }
    }

    /// Detaches the program from `interface`.
    pub fn detach(&mut self, interface: &str) -> Result<(), Error> {
        let at = self
            .attached
            .iter()
            .position(|attachment| attachment.interface == interface)
            .ok_or_else(|| Error::NotAttached(interface.to_string()))?;
        let attachment = self.attached.remove(at);
        self.detach_from(attachment)
    }

    /// Detaches `attachment`, on a thread in the network namespace it was made in.
    fn detach_from(&mut self, attachment: Attachment) -> Result<(), Error> {
        let program = self.program()?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&attachment.netns, CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| Error::Namespace(errno.into()))?;
                    program.detach(attachment.link)?;
                    Ok(())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached
            .iter()
            .map(|attachment| attachment.interface.as_str())
    }

    /// Answers UDP queries to `address` from now on, from the entries of server block
    /// `block` (a number the caller chooses: the first argument of [`AnswerKey::new`]).
    /// IPv4 or IPv6 (a `SocketAddrV4` or `SocketAddrV6` converts).
    pub fn serve(&mut self, address: impl Into<SocketAddr>, block: u8) -> Result<(), Error> {
        self.addresses.insert(served(address.into()), block, 0)?;
        Ok(())
    }

    /// Stops answering queries to `address`.
    pub fn unserve(&mut self, address: impl Into<SocketAddr>) -> Result<(), Error> {
        self.addresses.remove(&served(address.into()))?;
        Ok(())
    }

    /// Puts (or replaces) the answer for `key`. A new entry gets a hit counter slot of its
    /// own (a replaced one keeps its slot and count); [`Error::Full`] when all
    /// [`MAX_ENTRIES`] are taken.
    pub fn insert(&mut self, key: &AnswerKey, answer: &Answer) -> Result<(), Error> {
        let existing = self.slots.get(key.bytes()).copied();
        let slot = match existing {
            Some(slot) => slot,
            None => {
                let index = self.free_slots.pop().ok_or(Error::Full)?;
                match self.hit_count(index) {
                    Ok(baseline) => Slot { index, baseline },
                    Err(error) => {
                        self.free_slots.push(index);
                        return Err(error);
                    }
                }
            }
        };
        let mut value = *answer.bytes();
        value[VALUE_SLOT].copy_from_slice(&slot.index.to_ne_bytes());
        if let Err(error) = self.answers.insert(key.bytes(), value, 0) {
            if existing.is_none() {
                self.free_slots.push(slot.index);
            }
            return Err(error.into());
        }
        self.slots.insert(*key.bytes(), slot);
        Ok(())
    }

    /// Removes the answer for `key`; `false` when there was none.
    pub fn remove(&mut self, key: &AnswerKey) -> Result<bool, Error> {
        let removed = match self.answers.remove(key.bytes()) {
            Ok(()) => true,
            Err(MapError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                false
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(slot) = self.slots.remove(key.bytes()) {
            self.free_slots.push(slot.index);
        }
        Ok(removed)
    }

    /// How many queries the entry for `key` has answered since it was inserted (replacing
    /// it keeps the count); `None` when there is no entry.
    pub fn hits(&self, key: &AnswerKey) -> Result<Option<u64>, Error> {
        let Some(slot) = self.slots.get(key.bytes()) else {
            return Ok(None);
        };
        Ok(Some(
            self.hit_count(slot.index)?.wrapping_sub(slot.baseline),
        ))
    }

    /// A slot's counter summed over CPUs.
    fn hit_count(&self, index: u32) -> Result<u64, Error> {
        Ok(self
            .hits
            .get(&index, 0)?
            .iter()
            .copied()
            .fold(0, u64::wrapping_add))
    }

    /// The counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, Error> {
        let sum =
            |index: u32| -> Result<u64, Error> { Ok(self.stats.get(&index, 0)?.iter().sum()) };
        Ok(Stats {
            hits: sum(0)?,
            misses: sum(1)?,
            expired: sum(2)?,
            too_big: sum(3)?,
            errors: sum(4)?,
        })
    }

    fn program(&mut self) -> Result<&mut SchedClassifier, Error> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(Error::Missing(PROGRAM))?
            .try_into()?)
    }
}

/// EINVAL, which netlink answers for filters of an interface without a `clsact` qdisc.
fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// ENOENT.
fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

/// EEXIST, which netlink answers when the interface already has a `clsact` qdisc.
fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

/// The key of `struct fp_addr`: the address (IPv4 as IPv4-mapped IPv6) and the port in
/// network order, 2 bytes of padding.
fn served(address: SocketAddr) -> [u8; 20] {
    let mut key = [0u8; 20];
    let octets = match address.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    key[..16].copy_from_slice(&octets);
    key[16..18].copy_from_slice(&address.port().to_be_bytes());
    key
}

/// Whether this kernel attaches TC programs through tcx (≥ 6.6), as aya does.
impl Drop for Fastpath {
    fn drop(&mut self) {
        for attachment in std::mem::take(&mut self.attached) {
            let interface = attachment.interface.clone();
            if let Err(error) = self.detach_from(attachment) {
                eprintln!("shardns-fastpath: detaching from {interface}: {error}");
            }
        }
    }
}

fn tcx_kernel() -> bool {
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}
