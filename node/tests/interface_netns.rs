//! Root only: the local interface over netlink, inside a network namespace each test creates
//! and always removes. The code under test runs on a thread moved into that namespace
//! (`setns`), so its netlink socket only sees the namespace's links.

mod common;

use std::fs::File;
use std::net::IpAddr;
use std::sync::Arc;

use common::{NetworkNamespace, skip_reason};
use nix::sched::{CloneFlags, setns};
use shardns_node::{
    DEFAULT_INTERFACE_NAME, InterfaceError, InterfaceState, LocalInterface, SetupErrorType,
    SetupErrors,
};

const LOCAL_IPS: [&str; 3] = ["169.254.20.10", "10.96.0.10", "fd00::a"];

fn local_ips() -> Vec<IpAddr> {
    LOCAL_IPS.iter().map(|text| text.parse().unwrap()).collect()
}

/// Runs `work` on a thread inside `namespace`'s network namespace.
fn in_namespace<T: Send>(namespace: &NetworkNamespace, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = File::open(format!("/run/netns/{}", namespace.name())).unwrap();
                setns(&handle, CloneFlags::CLONE_NEWNET).unwrap();
                work()
            })
            .join()
            .unwrap()
    })
}

/// The addresses on the link, as `ip -o addr show` prints them (`169.254.20.10/32`).
fn addresses(namespace: &NetworkNamespace) -> Vec<String> {
    let output = namespace.run_ok("ip", &["-o", "addr", "show", "dev", DEFAULT_INTERFACE_NAME]);
    let mut found: Vec<String> = output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet" || *word == "inet6")?;
            words.next().map(str::to_string)
        })
        .collect();
    found.sort();
    found
}

fn expected_addresses() -> Vec<String> {
    let mut expected = vec!["169.254.20.10/32", "10.96.0.10/32", "fd00::a/128"];
    expected.sort();
    expected.into_iter().map(str::to_string).collect()
}

fn link_exists(namespace: &NetworkNamespace) -> bool {
    namespace
        .run("ip", &["link", "show", "dev", DEFAULT_INTERFACE_NAME])
        .status
        .success()
}

/// Whether this kernel has the dummy link type (tried in the test's own namespace).
fn dummy_supported(namespace: &NetworkNamespace) -> bool {
    let added = namespace
        .run("ip", &["link", "add", "probe0", "type", "dummy"])
        .status
        .success();
    if added {
        namespace.run_ok("ip", &["link", "del", "probe0"]);
    }
    added
}

fn namespace_for(label: &str) -> Option<NetworkNamespace> {
    if let Some(reason) = skip_reason(&[]) {
        println!("skipping: {reason}");
        return None;
    }
    Some(NetworkNamespace::create(label).unwrap())
}

/// Creating the link: where the kernel has the dummy type, create / check / delete; where it
/// has not, the error that names `-setupinterface=false`.
#[test]
fn dummy_link_is_created_checked_and_deleted_or_clearly_refused() {
    let Some(namespace) = namespace_for("link") else {
        return;
    };
    let errors = Arc::new(SetupErrors::new());
    let interface = LocalInterface::new(DEFAULT_INTERFACE_NAME, local_ips(), Arc::clone(&errors));
    if !dummy_supported(&namespace) {
        println!("this kernel has no dummy link type: checking the -setupinterface=false error");
        let error = in_namespace(&namespace, || interface.ensure()).unwrap_err();
        assert!(
            matches!(error, InterfaceError::DummyUnsupported { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("-setupinterface=false"), "{message}");
        assert!(message.contains(DEFAULT_INTERFACE_NAME), "{message}");
        assert_eq!(errors.count(SetupErrorType::InterfaceAdd), 1);
        assert_eq!(errors.count(SetupErrorType::InterfaceCheck), 0);
        assert!(!link_exists(&namespace));
        assert!(!in_namespace(&namespace, || interface.remove()).unwrap());
        return;
    }
    println!("this kernel has the dummy link type: checking create, check and delete");
    let state = in_namespace(&namespace, || interface.ensure()).unwrap();
    assert_eq!(state, InterfaceState::Created);
    let details = namespace.run_ok("ip", &["-d", "link", "show", "dev", DEFAULT_INTERFACE_NAME]);
    assert!(details.contains("dummy"), "{details}");
    assert_eq!(addresses(&namespace), expected_addresses());

    namespace.run_ok(
        "ip",
        &[
            "addr",
            "del",
            "10.96.0.10/32",
            "dev",
            DEFAULT_INTERFACE_NAME,
        ],
    );
    let state = in_namespace(&namespace, || interface.ensure()).unwrap();
    assert_eq!(state, InterfaceState::Present { restored: 1 });
    assert_eq!(addresses(&namespace), expected_addresses());

    namespace.run_ok("ip", &["link", "del", DEFAULT_INTERFACE_NAME]);
    let state = in_namespace(&namespace, || interface.ensure()).unwrap();
    assert_eq!(state, InterfaceState::Created);
    assert_eq!(addresses(&namespace), expected_addresses());

    assert!(in_namespace(&namespace, || interface.remove()).unwrap());
    assert!(!link_exists(&namespace));
    assert!(!in_namespace(&namespace, || interface.remove()).unwrap());
    assert_eq!(errors.total(), 0);
}

/// The check of an existing link, on any kernel: the link is made beforehand by the test
/// (`ip link add`, as a dummy where the kernel has the type, else as a bridge), holding one
/// address; `ensure` adds the others back over netlink and `remove` deletes the link.
#[test]
fn check_restores_addresses_on_an_existing_link_and_remove_deletes_it() {
    let Some(namespace) = namespace_for("check") else {
        return;
    };
    let kind = if dummy_supported(&namespace) {
        "dummy"
    } else {
        "bridge"
    };
    println!("the link is made beforehand as a {kind}");
    namespace.run_ok("ip", &["link", "add", DEFAULT_INTERFACE_NAME, "type", kind]);
    namespace.run_ok(
        "ip",
        &[
            "addr",
            "add",
            "169.254.20.10/32",
            "dev",
            DEFAULT_INTERFACE_NAME,
        ],
    );
    let errors = Arc::new(SetupErrors::new());
    let interface = LocalInterface::new(DEFAULT_INTERFACE_NAME, local_ips(), Arc::clone(&errors));

    let state = in_namespace(&namespace, || interface.ensure()).unwrap();
    assert_eq!(state, InterfaceState::Present { restored: 2 });
    assert_eq!(addresses(&namespace), expected_addresses());
    let state = in_namespace(&namespace, || interface.ensure()).unwrap();
    assert_eq!(state, InterfaceState::Present { restored: 0 });

    assert!(in_namespace(&namespace, || interface.remove()).unwrap());
    assert!(!link_exists(&namespace));
    assert_eq!(errors.total(), 0);
}

/// A failure to restore an address on an existing link is counted as `interface_check`.
#[test]
fn a_failed_address_restore_is_counted_as_interface_check() {
    let Some(namespace) = namespace_for("fail") else {
        return;
    };
    namespace.run_ok(
        "ip",
        &["link", "add", DEFAULT_INTERFACE_NAME, "type", "bridge"],
    );
    // With IPv6 disabled on the link, adding the IPv6 address fails.
    namespace.run_ok(
        "sysctl",
        &[
            "-q",
            "-w",
            &format!("net.ipv6.conf.{DEFAULT_INTERFACE_NAME}.disable_ipv6=1"),
        ],
    );
    let errors = Arc::new(SetupErrors::new());
    let interface = LocalInterface::new(DEFAULT_INTERFACE_NAME, local_ips(), Arc::clone(&errors));
    let error = in_namespace(&namespace, || interface.ensure()).unwrap_err();
    assert!(
        matches!(error, InterfaceError::AddAddress { address, .. } if address == local_ips()[2]),
        "{error:?}"
    );
    assert_eq!(errors.count(SetupErrorType::InterfaceCheck), 1);
    assert_eq!(errors.count(SetupErrorType::InterfaceAdd), 0);
}
