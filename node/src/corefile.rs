//! The Corefile node-cache writes to `-conf`, from its inputs: the settings its flags give
//! ([`CorefileSettings`]), the environment (read once, as `NewCacheApp` does), the current
//! kube-dns ConfigMap and the base Corefile's text ([`CorefileGenerator`]); and writing it
//! atomically ([`write_atomically`]). The watch loop that regenerates it on a change is
//! [`crate::watch`].

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::kubedns::KubeDnsConfig;
use crate::setup_errors::SetupErrorType;
use crate::template::{self, TemplateError, TemplateValues};

/// node-cache's `-basecorefile` default.
pub const DEFAULT_BASE_COREFILE: &str = "/etc/coredns/Corefile.base";

/// node-cache's `-upstreamsvc` default.
pub const DEFAULT_UPSTREAM_SERVICE: &str = "kube-dns";

/// The resolv.conf node-cache forwards to when the ConfigMap names no upstream.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port (CoreDNS's `-dns.port` default).
pub const DEFAULT_DNS_PORT: u16 = 53;

/// The inputs node-cache's flags give the Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorefileSettings {
    /// `-localip`: the addresses to bind, all of one family.
    pub local_ips: Vec<IpAddr>,
    /// `-dns.port`.
    pub dns_port: u16,
    /// `-upstreamsvc`: the service whose ClusterIP fills `__PILLAR__CLUSTER__DNS__`.
    pub upstream_service: String,
    /// `-basecorefile`: the template; its directory is watched.
    pub base_corefile: PathBuf,
    /// The kube-dns ConfigMap directory, if any ([`crate::kubedns::kube_dns_directory`] of
    /// `-kubednscm`).
    pub kube_dns_directory: Option<PathBuf>,
    /// The resolv.conf forwarded to with no ConfigMap upstreams (node-cache: always
    /// `/etc/resolv.conf`; a setting here for tests).
    pub resolv_conf: PathBuf,
}

impl CorefileSettings {
    /// node-cache's defaults for `local_ips` and no ConfigMap directory.
    pub fn new(local_ips: Vec<IpAddr>) -> Self {
        CorefileSettings {
            local_ips,
            dns_port: DEFAULT_DNS_PORT,
            upstream_service: DEFAULT_UPSTREAM_SERVICE.to_owned(),
            base_corefile: PathBuf::from(DEFAULT_BASE_COREFILE),
            kube_dns_directory: None,
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
        }
    }

    /// The directory node-cache watches for the base Corefile (Go's `path.Dir`).
    pub fn base_corefile_directory(&self) -> PathBuf {
        match self.base_corefile.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// Settings from which no Corefile can be made.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorefileError {
    /// The upstream service's address is not in the environment.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// No `-localip` (node-cache refuses an empty one as `invalid localip specified - ""`).
    #[error("no local IP to bind (expected at least one -localip)")]
    NoLocalIp,
    /// Local IPs of both families (node-cache: `unexpected IP Family for localIP`).
    #[error(
        "local IP {address} is not of the same family as {first} (expected all -localip of one family)"
    )]
    MixedLocalIpFamilies {
        /// The first local IP.
        first: IpAddr,
        /// The first one of the other family.
        address: IpAddr,
    },
    /// A resolv.conf path that cannot be one word of a Corefile.
    #[error(
        "resolv.conf path {path:?} cannot be written in a Corefile (expected UTF-8 without \
         spaces, quotes, braces or #)"
    )]
    ResolvConfPath {
        /// The path.
        path: PathBuf,
    },
}

/// The Corefile text from the settings, the environment and the current kube-dns ConfigMap.
#[derive(Debug, Clone)]
pub struct CorefileGenerator {
    settings: CorefileSettings,
    cluster_dns: IpAddr,
    resolv_conf: String,
    kube_dns: KubeDnsConfig,
}

impl CorefileGenerator {
    /// Checks `settings` and reads the upstream service's address from `environment` (a
    /// variable's value by name). The ConfigMap starts empty.
    pub fn new(
        settings: CorefileSettings,
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CorefileError> {
        let first = *settings.local_ips.first().ok_or(CorefileError::NoLocalIp)?;
        if let Some(address) = settings
            .local_ips
            .iter()
            .find(|ip| ip.is_ipv6() != first.is_ipv6())
        {
            let address = *address;
            return Err(CorefileError::MixedLocalIpFamilies { first, address });
        }
        let resolv_conf =
            corefile_word(&settings.resolv_conf).ok_or_else(|| CorefileError::ResolvConfPath {
                path: settings.resolv_conf.clone(),
            })?;
        let cluster_dns = template::cluster_dns_address(&settings.upstream_service, environment)?;
        Ok(CorefileGenerator {
            settings,
            cluster_dns,
            resolv_conf,
            kube_dns: KubeDnsConfig::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &CorefileSettings {
        &self.settings
    }

    /// The upstream service's address, as read at start-up.
    pub fn cluster_dns(&self) -> IpAddr {
        self.cluster_dns
    }

    /// The kube-dns ConfigMap in use.
    pub fn kube_dns(&self) -> &KubeDnsConfig {
        &self.kube_dns
    }

    /// Uses `kube_dns` from now on.
    pub fn set_kube_dns(&mut self, kube_dns: KubeDnsConfig) {
        self.kube_dns = kube_dns;
    }

    /// The Corefile from the base Corefile's text.
    pub fn render(&self, base: &str) -> String {
        let values = TemplateValues {
            local_ips: &self.settings.local_ips,
            dns_port: self.settings.dns_port,
            cluster_dns: self.cluster_dns,
            resolv_conf: &self.resolv_conf,
        };
        template::fill_template(base, &values, &self.kube_dns)
    }
}

/// `path` as one Corefile word, if it can be one.
fn corefile_word(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    let special =
        |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '{' | '}' | '#' | ';');
    (!text.is_empty() && !text.contains(special)).then(|| text.to_owned())
}

/// The Corefile could not be written.
#[derive(Debug, Error)]
#[error("cannot write the Corefile {}: {source}", path.display())]
pub struct WriteError {
    /// The Corefile's path (`-conf`).
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// node-cache counts a failed write as a `configmap` setup error.
    pub fn setup_error_type(&self) -> SetupErrorType {
        SetupErrorType::Configmap
    }
}

/// Tells apart the temporary files of one process.
static TEMPORARY_FILES: AtomicU64 = AtomicU64::new(0);

/// Writes `text` to the Corefile `path` so that a reader sees the old file or the new one,
/// never a part ([`replace_file`]). node-cache writes in place (`os.WriteFile`, mode 0666
/// before the umask); the mode is the same here.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), WriteError> {
    replace_file(path, text.as_bytes()).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part:
/// a temporary file beside it (hidden, so a watched directory ignores it; mode 0666 before
/// the umask), synced, renamed over `path`, then the directory synced. On failure the
/// temporary file is removed and `path` is as it was.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let sequence = TEMPORARY_FILES.fetch_add(1, Ordering::Relaxed);
    let temporary = directory.join(format!(
        ".{}.{}.{sequence}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o666)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    // The rename is done; syncing the directory only makes it durable sooner.
    if let Err(error) = fs::File::open(directory).and_then(|directory| directory.sync_all()) {
        tracing::debug!(directory = %directory.display(), %error, "cannot sync the directory of a replaced file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10));

    fn environment(variable: &str) -> Option<String> {
        (variable == "KUBE_DNS_SERVICE_HOST").then(|| "10.96.0.10".to_owned())
    }

    #[test]
    fn node_cache_defaults() {
        let settings = CorefileSettings::new(vec![LOCAL]);
        assert_eq!(
            settings.base_corefile,
            Path::new("/etc/coredns/Corefile.base")
        );
        assert_eq!(
            settings.base_corefile_directory(),
            Path::new("/etc/coredns")
        );
        assert_eq!(settings.upstream_service, "kube-dns");
        assert_eq!(settings.resolv_conf, Path::new("/etc/resolv.conf"));
        assert_eq!(settings.dns_port, 53);
        let relative = CorefileSettings {
            base_corefile: "Corefile.base".into(),
            ..settings
        };
        assert_eq!(relative.base_corefile_directory(), Path::new("."));
    }

    #[test]
    fn the_generator_renders_with_the_current_configmap() {
        let mut generator =
            CorefileGenerator::new(CorefileSettings::new(vec![LOCAL]), environment).unwrap();
        assert_eq!(
            generator.cluster_dns(),
            IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))
        );
        let base = "a {\n    forward . __PILLAR__CLUSTER__DNS__\n}\n.:53 {\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n";
        let expected = "a {\n    forward . 10.96.0.10\n}\n.:53 {\n    bind 169.254.20.10\n    forward . /etc/resolv.conf\n}\n";
        assert_eq!(generator.render(base), expected);

        let files = [("upstreamNameservers".to_owned(), "[\"8.8.8.8\"]".to_owned())].into();
        let kube_dns = KubeDnsConfig::from_files(Path::new("/etc/kube-dns"), &files).unwrap();
        generator.set_kube_dns(kube_dns);
        assert!(generator.render(base).contains("    forward . 8.8.8.8\n"));
    }

    #[test]
    fn settings_that_make_no_corefile() {
        let missing =
            CorefileGenerator::new(CorefileSettings::new(vec![LOCAL]), |_| None).unwrap_err();
        assert!(matches!(
            missing,
            CorefileError::Template(TemplateError::MissingEnvironmentVariable { .. })
        ));
        assert!(
            missing.to_string().contains("KUBE_DNS_SERVICE_HOST"),
            "{missing}"
        );

        let none = CorefileGenerator::new(CorefileSettings::new(Vec::new()), environment);
        assert_eq!(none.unwrap_err(), CorefileError::NoLocalIp);

        let mixed = CorefileSettings::new(vec![LOCAL, "fd00::10".parse().unwrap()]);
        let error = CorefileGenerator::new(mixed, environment).unwrap_err();
        assert!(
            matches!(error, CorefileError::MixedLocalIpFamilies { .. }),
            "{error}"
        );

        for path in ["/etc/resolv conf", "", "/etc/{resolv}", "/etc/#resolv"] {
            let settings = CorefileSettings {
                resolv_conf: path.into(),
                ..CorefileSettings::new(vec![LOCAL])
            };
            let error = CorefileGenerator::new(settings, environment).unwrap_err();
            assert!(
                matches!(error, CorefileError::ResolvConfPath { .. }),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn writes_atomically() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("Corefile");
        write_atomically(&path, "first\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
        write_atomically(&path, "second\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["Corefile"], "no temporary file is left");
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("missing/Corefile");
        let error = write_atomically(&path, "text").unwrap_err();
        assert_eq!(error.path, path);
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot write the Corefile {}:", path.display()))
        );
        assert_eq!(error.setup_error_type(), SetupErrorType::Configmap);

        // The target is a directory: the rename fails and the temporary file is removed.
        let target = directory.path().join("Corefile");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "").unwrap();
        assert!(write_atomically(&target, "text").is_err());
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["Corefile"]);
    }
}
