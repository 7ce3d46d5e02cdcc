//! Which servers a `compare` run starts, how, and the words that describe the run.

use std::path::{Path, PathBuf};

use super::servers::{self, Role, Server, Spec, find_on_path, version_line};
use super::{Args, Io, Kind};

/// The shardns binary: `--shardns`, else `release/shardns` in the target directory this
/// binary was built in, else `shardns` beside this binary, else PATH.
pub fn shardns_binary(args: &Args, exe: &Path) -> Option<PathBuf> {
    if let Some(path) = &args.shardns {
        return Some(path.clone());
    }
    let dir = exe.parent()?;
    // `target/debug/shardns-bench` or `target/debug/deps/...` (tests): look up to two levels.
    let candidates = [
        dir.join("../release/shardns"),
        dir.join("../../release/shardns"),
        dir.join("shardns"),
        dir.join("../shardns"),
    ];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| find_on_path("shardns"))
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// The servers to start, in table order; missing programs go to `skipped`.
/// Config files are left empty until [`bind`] knows the port.
pub fn specs(args: &Args, exe: &Path, work: &Path, skipped: &mut Vec<String>) -> Vec<Spec> {
    let mut specs = Vec::new();
    for kind in &args.servers {
        match kind {
            Kind::Shardns => match shardns_binary(args, exe) {
                None => skipped.push(
                    "shardns: no binary (cargo build --release -p shardns, or --shardns PATH)"
                        .into(),
                ),
                Some(bin) => {
                    for &shards in &args.shards {
                        for &io in &args.io {
                            specs.push(shardns_spec(&bin, io, shards, work));
                        }
                    }
                }
            },
            Kind::Dnsdist => match find_on_path("dnsdist") {
                None => skipped.push("dnsdist: not on PATH".into()),
                Some(program) => {
                    let conf = work.join("dnsdist.conf");
                    specs.push(Spec {
                        label: format!(
                            "dnsdist {}, packet cache",
                            version(&program, "dnsdist").unwrap_or_default()
                        ),
                        role: Role::Peer,
                        program,
                        args: vec![
                            "--supervised".into(),
                            "--disable-syslog".into(),
                            "-C".into(),
                            conf.display().to_string(),
                        ],
                        files: vec![(conf, String::new())],
                        answers: true,
                    });
                }
            },
            Kind::Unbound => match find_on_path("unbound") {
                None => skipped.push("unbound: not on PATH".into()),
                Some(program) => {
                    let conf = work.join("unbound-peer.conf");
                    specs.push(Spec {
                        label: format!(
                            "unbound {}, caching forwarder",
                            version(&program, "unbound").unwrap_or_default()
                        ),
                        role: Role::Peer,
                        program,
                        args: vec!["-d".into(), "-c".into(), conf.display().to_string()],
                        files: vec![(conf, String::new())],
                        answers: true,
                    });
                }
            },
            Kind::Dnsmasq => match find_on_path("dnsmasq") {
                None => skipped.push("dnsmasq: not on PATH (apt-get install dnsmasq-base)".into()),
                Some(program) => specs.push(Spec {
                    label: format!(
                        "dnsmasq {}",
                        version(&program, "dnsmasq").unwrap_or_default()
                    ),
                    role: Role::Peer,
                    program,
                    args: Vec::new(),
                    files: Vec::new(),
                    answers: true,
                }),
            },
            Kind::Reflector => specs.push(Spec {
                label: "reflector (kernel floor)".into(),
                role: Role::Reflector,
                program: exe.to_owned(),
                args: vec!["reflect".into()],
                files: Vec::new(),
                answers: false,
            }),
        }
    }
    specs
}

fn shardns_spec(bin: &Path, io: Io, shards: u32, work: &Path) -> Spec {
    let io = match io {
        Io::Uring => "uring",
        Io::Epoll => "epoll",
    };
    let conf = work.join(format!("Corefile-{io}-{shards}"));
    let plural = if shards == 1 { "" } else { "s" };
    Spec {
        label: format!("shardns --io {io}, {shards} shard{plural}"),
        role: Role::Shardns,
        program: bin.to_owned(),
        args: vec![
            "--conf".into(),
            conf.display().to_string(),
            "--shards".into(),
            shards.to_string(),
            "--io".into(),
            io.into(),
        ],
        files: vec![(conf, String::new())],
        answers: true,
    }
}

/// Fills in what depends on the port a server gets: config files and listen arguments.
pub fn bind(spec: &mut Spec, port: u16, upstream: u16, work: &Path) {
    match spec.role {
        Role::Reflector => spec.args.push(format!("127.0.0.1:{port}")),
        _ if spec.label.starts_with("shardns") => {
            spec.files[0].1 = servers::shardns_corefile(port, upstream)
        }
        _ if spec.label.starts_with("dnsdist") => {
            spec.files[0].1 = servers::dnsdist_conf(port, upstream)
        }
        _ if spec.label.starts_with("unbound") => {
            spec.files[0].1 = servers::unbound_forwarder_conf(port, upstream, work)
        }
        _ if spec.label.starts_with("dnsmasq") => spec.args = servers::dnsmasq_args(port, upstream),
        _ => {}
    }
}

/// The version number a program reports, e.g. `1.17.1`.
fn version(program: &Path, name: &str) -> Option<String> {
    let (args, key): (&[&str], &str) = match name {
        "unbound" => (&["-V"], "Version "),
        "dnsdist" => (&["--version"], "dnsdist "),
        "dnsmasq" => (&["--version"], "Dnsmasq version "),
        "dnsperf" => (&["-h"], "Version "),
        _ => (&["--version"], ""),
    };
    let line = version_line(program, args, |l| l.starts_with(key))?;
    line[key.len()..]
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

/// `name: version` of shardns, the peers, the clients and perf, for the report.
pub fn versions(running: &[Server], args: &Args) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(s) = running.iter().find(|s| s.spec.role == Role::Shardns) {
        let v =
            version_line(&s.spec.program, &["--version"], |l| !l.is_empty()).unwrap_or_default();
        out.push((
            "shardns".into(),
            format!("{v} ({})", s.spec.program.display()),
        ));
    }
    for name in ["dnsdist", "unbound", "dnsmasq", "dnsperf"] {
        let used = name == "dnsperf" && args.client != super::ClientChoice::Load
            || running.iter().any(|s| s.spec.label.starts_with(name));
        if let (true, Some(program)) = (used, find_on_path(name)) {
            out.push((
                name.into(),
                version(&program, name).unwrap_or_else(|| "unknown".into()),
            ));
        }
    }
    if let Some(perf) = find_on_path("perf") {
        out.push((
            "perf".into(),
            version_line(&perf, &["--version"], |l| !l.is_empty()).unwrap_or_default(),
        ));
    }
    out
}

/// The method paragraph of the report.
pub fn method(args: &Args, perf: bool) -> String {
    format!(
        "Cache hits: one Unbound upstream on loopback serves {} names from static local data \
         (everything else refused; nothing leaves the machine), pinned to CPU {load}. Every server \
         runs at once on its own port pinned to CPU {server} (taskset), warmed with one query per \
         name; the client, pinned to CPU {load}, drives one server at a time for {secs} s \
         (after {warmup} s of unmeasured load on it), and {rounds} round(s) interleave the servers. q/CPU-s = answered queries ÷ the server \
         process's utime+stime (/proc/PID/stat). Ratios divide by the reflector's or the best \
         peer's q/CPU-s from the same round (same client). Each cell: median (range over \
         rounds).{perf}",
        servers::NAMES.len(),
        load = args.load_cpu,
        server = args.server_cpu,
        secs = args.seconds,
        warmup = args.warmup,
        rounds = args.rounds,
        perf = if perf {
            " Instructions and cycles per query: `perf stat -e instructions,cycles -p PID` over \
             the run (user + kernel), ÷ answered queries."
        } else {
            ""
        },
    )
}
