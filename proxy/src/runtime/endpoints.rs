//! Which HTTP routes each listening address serves: the Corefile's `prometheus`, `health` and
//! `ready` addresses, and in node-local mode node-cache's `-metrics-listen-address`. Blocks
//! (and flags) naming one address share its endpoint, with the union of their routes.
//! `/ready` is served on every `health` address too, so that the stock node-local-dns
//! Corefile, which has `health` and no `ready`, gets readiness without an edit.

use std::net::SocketAddr;

use crate::corefile::ProcessConfig;

/// One listening address and the routes it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointPlan {
    /// The address as configured (port 0 allowed; `0.0.0.0` is every address).
    pub addr: SocketAddr,
    /// `/metrics`.
    pub metrics: bool,
    /// `/health`.
    pub health: bool,
    /// `/ready`.
    pub ready: bool,
}

/// Every endpoint of `process`, plus `extra_metrics` (node-cache's own metrics address), in
/// order of first appearance: prometheus, health, ready, then the extra one.
pub(crate) fn plan(
    process: &ProcessConfig,
    extra_metrics: Option<SocketAddr>,
) -> Vec<EndpointPlan> {
    let mut plans: Vec<EndpointPlan> = Vec::new();
    let mut add = |addr: SocketAddr, set: fn(&mut EndpointPlan)| {
        let index = match plans.iter().position(|plan| plan.addr == addr) {
            Some(index) => index,
            None => {
                plans.push(EndpointPlan {
                    addr,
                    metrics: false,
                    health: false,
                    ready: false,
                });
                plans.len() - 1
            }
        };
        set(&mut plans[index]);
    };
    for &addr in &process.metrics {
        add(addr, |plan| plan.metrics = true);
    }
    for &addr in &process.health {
        add(addr, |plan| {
            plan.health = true;
            plan.ready = true;
        });
    }
    for &addr in &process.ready {
        add(addr, |plan| plan.ready = true);
    }
    if let Some(addr) = extra_metrics {
        add(addr, |plan| plan.metrics = true);
    }
    plans
}

impl EndpointPlan {
    /// The routes, for the start-up log: `/metrics /health /ready`.
    pub(crate) fn paths(&self) -> String {
        let mut paths = Vec::new();
        if self.metrics {
            paths.push("/metrics");
        }
        if self.health {
            paths.push("/health");
        }
        if self.ready {
            paths.push("/ready");
        }
        paths.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_addresses_share_one_endpoint() {
        let corefile = "a.:53 {\n prometheus :9253\n health 127.0.0.1:8080\n}\n\
                        b.:53 {\n prometheus :9253\n ready 127.0.0.1:8181\n}\n\
                        c.:53 {\n prometheus 127.0.0.1:8080\n}\n";
        let process = crate::corefile::build_process("Corefile", corefile).unwrap();
        let plans = plan(&process, Some("0.0.0.0:9353".parse().unwrap()));
        let shown: Vec<(String, String)> = plans
            .iter()
            .map(|plan| (plan.addr.to_string(), plan.paths()))
            .collect();
        assert_eq!(
            shown,
            [
                ("0.0.0.0:9253".to_string(), "/metrics".to_string()),
                (
                    "127.0.0.1:8080".to_string(),
                    "/metrics /health /ready".to_string()
                ),
                ("127.0.0.1:8181".to_string(), "/ready".to_string()),
                ("0.0.0.0:9353".to_string(), "/metrics".to_string()),
            ]
        );
        // Without node-cache's address, and the extra one on an address already there.
        assert_eq!(plan(&process, None).len(), 3);
        assert_eq!(
            plan(&process, Some("0.0.0.0:9253".parse().unwrap())).len(),
            3
        );
    }
}
