//! The counters of `acl` and `ratelimit`, per request slot (listening address and server
//! block, as the request metrics): CoreDNS's `coredns_acl_*_requests_total` and shardns's
//! `shardns_ratelimited_total`.

use super::Counter;
use crate::policy::ACL_ZONES;

/// What `acl` and `ratelimit` did in one request slot of one shard.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// `coredns_acl_allowed_requests_total`: queries `acl` let through.
    pub acl_allowed: Counter,
    /// `coredns_acl_{blocked,filtered,dropped}_requests_total`, by the zone the deciding rule
    /// applied through (an index into the block's [`crate::config::AclConfig::zones`]) and
    /// action (block 0, filter 1, drop 2: [`crate::config::AclAction::denial_slot`]).
    pub acl_denied: [[Counter; 3]; ACL_ZONES],
    /// `shardns_ratelimited_total`: queries over their client's rate, by action
    /// ([`crate::config::RateLimitAction::slot`]).
    pub ratelimited: [Counter; 3],
}
