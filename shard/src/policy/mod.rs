//! What a server block allows before the cache looks at a query: `acl` (CoreDNS's
//! plugin/acl: allow, block, filter or drop by name, type and client address) and
//! `ratelimit` (a rate per client, in a fixed-size table per shard). The configuration types
//! are re-exported by [`crate::config`]; the engine applies them in `engine/policy.rs`.

mod acl;
mod cidr;
mod ratelimit;

pub(crate) use acl::Verdict;
pub use acl::{ACL_ZONES, AclAction, AclConfig, AclPolicy, AclRule, AclZone};
pub use cidr::Cidr;
pub(crate) use ratelimit::RateTable;
pub use ratelimit::{RateLimitAction, RateLimitConfig};
