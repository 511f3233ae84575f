//! HTTPS on the proxy's listener: a rustls server configuration (the `ring` provider, TLS 1.2 and
//! 1.3, ALPN `h2` and `http/1.1`) whose certificate comes from the PEM files of the `tls`
//! configuration and is reloaded when they change, without a restart.
//!
//! Principal types: [`TlsConfig`] (the `tls` section), [`ServerTls`] (the acceptor with its
//! reloading certificate) and [`TlsError`].
//!
//! The certificate of each handshake is chosen by a resolver holding the current
//! [`CertifiedKey`] in an [`ArcSwap`]. At most once per [`CHECK_INTERVAL`], a handshake first
//! looks at both files' metadata (two `stat` calls: size, modification time, inode); when either
//! changed, both files are read and checked again, and the new certificate replaces the old one
//! only if it is valid and matches its key. A reload that fails (a file caught half-written, a
//! certificate renewed before its key) keeps the certificate in use; files modified in the last
//! `SETTLE_TIME` (2 s) are read again at each check (they may still be being written, and coarse
//! timestamps may hide the next write), and a failure that remains once they have settled is
//! logged as one warning, then tried again when the files change again. Nothing runs in the background: an idle
//! server checks nothing, and the first handshake after a renewal serves the new certificate, or
//! one within the next [`CHECK_INTERVAL`].
//!
//! [`ServerTls::from_config`] is what `serve` uses and what `check` runs to validate the files.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;

use serde::Deserialize;

use crate::section::values::Invalid;

/// The `tls` section: the certificate and key the proxy serves HTTPS with.
///
/// Both files are PEM and are read at start (a bad one fails `serve` and `check`, naming it) and
/// again whenever they change on disk, so a renewed certificate is picked up without a restart.
// No `default`: a `tls` section must name both files (serde reports the one missing).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain: the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// Checks the section; keys are relative to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cert_file.as_os_str().is_empty() {
            return Err(Invalid::new("cert_file", "empty path"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(Invalid::new("key_file", "empty path"));
        }
        Ok(())
    }
}

/// How often, at most, a handshake checks whether the certificate files changed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long after a file was modified its metadata is trusted to tell the next change: file
/// timestamps are coarse (a few milliseconds, two seconds on some filesystems), so a second write
/// of the same size soon after the first may leave size and time as they were.
const SETTLE_TIME: Duration = Duration::from_secs(2);

/// The ALPN protocols offered, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the TLS setting cannot be used. Every variant names the file (and the configuration key)
/// it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read, or holds no usable certificate chain.
    #[error("tls.cert_file {}: {reason}", path.display())]
    Certificate {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read, or holds no usable private key.
    #[error("tls.key_file {}: {reason}", path.display())]
    Key {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the key of the chain's first certificate.
    #[error(
        "tls.key_file {} is not the private key of the certificate in tls.cert_file {} (the \
         first certificate of the file must be the server's)",
        key_file.display(),
        cert_file.display()
    )]
    KeyMismatch {
        /// The certificate file as configured.
        cert_file: PathBuf,
        /// The key file as configured.
        key_file: PathBuf,
    },
    /// rustls refused the server configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

/// The proxy's TLS setting: the acceptor that performs handshakes with the current certificate.
pub struct ServerTls {
    acceptor: TlsAcceptor,
    certificate: Arc<ReloadingCert>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS setting of the `tls` section: `None` when there is none (plain HTTP).
    ///
    /// Reads and checks both files now, so that `serve` fails at start, and `check` fails,
    /// naming the file and the reason, when one is unreadable, not PEM, or the key does not
    /// belong to the certificate.
    pub fn from_config(config: Option<&TlsConfig>) -> Result<Option<Arc<ServerTls>>, TlsError> {
        config
            .map(|tls| ServerTls::load(tls).map(Arc::new))
            .transpose()
    }

    /// Reads the certificate chain and key of `config` and builds the server configuration.
    pub fn load(config: &TlsConfig) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadingCert::load(config, provider.clone())?);
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificate,
        })
    }

    /// The acceptor for incoming connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The certificate chain served now (the server's certificate first).
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.certificate.current.load().cert.clone()
    }

    /// Reloads the certificate now if the files changed since they were last read, whatever the
    /// time since the last check; handshakes do this on their own at most once per
    /// [`CHECK_INTERVAL`].
    pub fn reload_if_changed(&self) -> Reload {
        self.certificate.reload_if_changed()
    }
}

/// What [`ServerTls::reload_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Neither file changed since it was last read.
    Unchanged,
    /// The files changed and the new certificate is served from now on.
    Reloaded,
    /// The files changed but do not make a valid certificate; the previous one is kept.
    Failed,
}

/// The identity of a file's contents as far as metadata tells: a rewrite in place changes the
/// size or modification time, a replacement by rename (or a Kubernetes secret's symlink swap)
/// the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    /// `None` when the file cannot be looked at (absent for a moment while it is replaced).
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = fs::metadata(path).ok()?;
        Some(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }
}

/// The stamps of the certificate file and the key file.
type Stamps = (Option<FileStamp>, Option<FileStamp>);

/// The certificate resolver: the current certificate, and how to notice that its files changed.
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The reference point of `next_check`.
    epoch: Instant,
    /// Milliseconds after `epoch` before which handshakes do not look at the files.
    next_check: AtomicU64,
    /// The stamps of the files when they were last read, successfully or not; `None` when they
    /// must be read again at the next check (they had not settled).
    read: Mutex<Option<Stamps>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(config: &TlsConfig, provider: Arc<CryptoProvider>) -> Result<ReloadingCert, TlsError> {
        // Stamped before reading: a change while the files are read shows at the next check.
        let stamps = (
            FileStamp::of(&config.cert_file),
            FileStamp::of(&config.key_file),
        );
        let key = certified_key(&config.cert_file, &config.key_file, &provider)?;
        let settled = settled(&stamps.0) && settled(&stamps.1);
        Ok(ReloadingCert {
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            epoch: Instant::now(),
            next_check: AtomicU64::new(millis(CHECK_INTERVAL)),
            read: Mutex::new(settled.then_some(stamps)),
        })
    }

    /// Checks the files if [`CHECK_INTERVAL`] has passed since the last check; one handshake
    /// does, the others meanwhile go on with the current certificate.
    fn check_when_due(&self) {
        let now = millis(self.epoch.elapsed());
        let due = self.next_check.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now + millis(CHECK_INTERVAL);
        if self
            .next_check
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.reload_if_changed();
        }
    }

    fn reload_if_changed(&self) -> Reload {
        let stamps = (
            FileStamp::of(&self.cert_file),
            FileStamp::of(&self.key_file),
        );
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if read.as_ref() == Some(&stamps) {
            return Reload::Unchanged;
        }
        // A file written within the last moments may be written again within the same
        // timestamp tick and at the same size; such stamps are not trusted until they settle.
        let settled = settled(&stamps.0) && settled(&stamps.1);
        *read = settled.then_some(stamps);
        match certified_key(&self.cert_file, &self.key_file, &self.provider) {
            // Touched, or read again while settling: nothing new to serve.
            Ok(key) if key.cert == self.current.load().cert => Reload::Unchanged,
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(
                    cert_file = %self.cert_file.display(),
                    key_file = %self.key_file.display(),
                    "TLS certificate reloaded"
                );
                Reload::Reloaded
            }
            Err(error) if settled => {
                tracing::warn!(
                    %error,
                    "TLS certificate files changed but cannot be used; still serving the \
                     previous certificate"
                );
                Reload::Failed
            }
            Err(error) => {
                tracing::debug!(
                    %error,
                    "TLS certificate files are being written; still serving the previous \
                     certificate"
                );
                Reload::Failed
            }
        }
    }
}

/// Whether a file's stamp can be trusted to change with its next write: its modification time
/// is more than [`SETTLE_TIME`] away from now (or unknown, or the file is absent).
fn settled(stamp: &Option<FileStamp>) -> bool {
    let Some(modified) = stamp.as_ref().and_then(|s| s.modified) else {
        return true;
    };
    let distance = match SystemTime::now().duration_since(modified) {
        Ok(past) => past,
        Err(future) => future.duration(),
    };
    distance >= SETTLE_TIME
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.check_when_due();
        Some(self.current.load_full())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads and checks a PEM certificate chain and its PEM private key.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert_file.to_owned(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: key_file.to_owned(),
        reason,
    };

    let bytes = fs::read(cert_file).map_err(|err| cert_error(format!("cannot read: {err}")))?;
    let mut chain = Vec::new();
    for (index, der) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let der = der.map_err(|err| cert_error(format!("invalid PEM: {err}")))?;
        // The cheapest parse of X.509 that rustls offers; the first certificate is parsed
        // fully below, when its public key is compared with the private key.
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|err| {
                cert_error(format!(
                    "certificate {} is not a valid X.509 certificate: {err}",
                    index + 1
                ))
            })?;
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(cert_error(
            "no PEM certificate (BEGIN CERTIFICATE) found".to_owned(),
        ));
    }

    let bytes = fs::read(key_file).map_err(|err| key_error(format!("cannot read: {err}")))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        pem::Error::NoItemsFound => key_error(
            "no PEM private key (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE \
             KEY) found"
                .to_owned(),
        ),
        err => key_error(format!("invalid PEM: {err}")),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|err| key_error(format!("unsupported or invalid private key: {err}")))?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the provider cannot tell the key's public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert_file: cert_file.to_owned(),
                key_file: key_file.to_owned(),
            })
        }
        Err(err) => Err(cert_error(format!(
            "certificate 1 is not a valid server certificate: {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SerialNumber,
    };

    /// A CA that signs server certificates for `localhost` and 127.0.0.1.
    struct Ca {
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "mirrorgate unit test CA");
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("CA key");
            Ca {
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate (PEM) with this serial, and its key (PEM).
        fn server(&self, serial: u64) -> (String, String) {
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("server params");
            params.serial_number = Some(SerialNumber::from(serial));
            let key = KeyPair::generate().expect("server key");
            let cert = params.signed_by(&key, &self.issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        }
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        fn config(&self) -> TlsConfig {
            TlsConfig {
                cert_file: self.dir.path().join("tls.crt"),
                key_file: self.dir.path().join("tls.key"),
            }
        }

        fn write(&self, cert: &str, key: &str) {
            let config = self.config();
            fs::write(config.cert_file, cert).expect("write cert");
            fs::write(config.key_file, key).expect("write key");
        }
    }

    fn pem_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
    }

    fn error(files: &Files) -> String {
        match ServerTls::load(&files.config()) {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn valid_files_load() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, key) = ca.server(1);
        files.write(&cert, &key);
        let tls = ServerTls::load(&files.config()).expect("valid files");
        assert_eq!(tls.current_chain(), vec![pem_der(&cert)]);
    }

    #[test]
    fn no_tls_section_means_none() {
        assert!(matches!(ServerTls::from_config(None), Ok(None)));
    }

    #[test]
    fn missing_certificate_file_is_named() {
        let files = Files::new();
        let err = error(&files);
        let path = files.config().cert_file.display().to_string();
        assert!(
            err.starts_with(&format!("tls.cert_file {path}: cannot read: ")),
            "{err}"
        );
    }

    #[test]
    fn certificate_file_without_pem_is_rejected() {
        let (ca, files) = (Ca::new(), Files::new());
        let (_, key) = ca.server(1);
        files.write("not a certificate\n", &key);
        assert!(
            error(&files).ends_with(": no PEM certificate (BEGIN CERTIFICATE) found"),
            "{}",
            error(&files)
        );
    }

    #[test]
    fn garbage_certificate_is_rejected() {
        let (ca, files) = (Ca::new(), Files::new());
        let (_, key) = ca.server(1);
        files.write(
            "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
            &key,
        );
        let err = error(&files);
        assert!(
            err.contains("tls.cert_file ") && err.contains("certificate 1 is not a valid"),
            "{err}"
        );
    }

    #[test]
    fn key_file_without_key_is_rejected() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, _) = ca.server(1);
        files.write(&cert, &cert);
        let err = error(&files);
        assert!(
            err.starts_with("tls.key_file ") && err.contains("no PEM private key"),
            "{err}"
        );
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, _) = ca.server(1);
        let (_, other_key) = ca.server(2);
        files.write(&cert, &other_key);
        assert!(
            error(&files).contains("is not the private key of the certificate"),
            "{}",
            error(&files)
        );
    }

    #[test]
    fn changed_files_are_reloaded() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, key) = ca.server(1);
        files.write(&cert, &key);
        let tls = ServerTls::load(&files.config()).expect("valid files");
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);

        let (renewed, renewed_key) = ca.server(2);
        files.write(&renewed, &renewed_key);
        assert_eq!(
            (tls.reload_if_changed(), tls.current_chain()),
            (Reload::Reloaded, vec![pem_der(&renewed)])
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_until_the_files_change_again() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, key) = ca.server(1);
        files.write(&cert, &key);
        let tls = ServerTls::load(&files.config()).expect("valid files");

        // The renewed certificate is written before its key: they do not match yet.
        let (renewed, renewed_key) = ca.server(2);
        fs::write(files.config().cert_file, &renewed).expect("write cert");
        let after_cert = tls.reload_if_changed();
        let still_served = tls.current_chain();
        fs::write(files.config().key_file, &renewed_key).expect("write key");
        assert_eq!(
            (after_cert, still_served, tls.reload_if_changed()),
            (Reload::Failed, vec![pem_der(&cert)], Reload::Reloaded)
        );
        assert_eq!(tls.current_chain(), vec![pem_der(&renewed)]);
    }

    #[test]
    fn a_settled_failure_is_not_read_again_until_the_files_change() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, key) = ca.server(1);
        files.write(&cert, &key);
        let tls = ServerTls::load(&files.config()).expect("valid files");
        fs::write(files.config().cert_file, "truncated").expect("write cert");
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for path in [files.config().cert_file, files.config().key_file] {
            fs::File::options()
                .write(true)
                .open(path)
                .and_then(|file| file.set_modified(an_hour_ago))
                .expect("set mtime");
        }
        assert_eq!(
            (
                tls.reload_if_changed(),
                tls.reload_if_changed(),
                tls.current_chain()
            ),
            (Reload::Failed, Reload::Unchanged, vec![pem_der(&cert)])
        );
    }

    #[test]
    fn touched_files_are_not_a_reload() {
        let (ca, files) = (Ca::new(), Files::new());
        let (cert, key) = ca.server(1);
        files.write(&cert, &key);
        let tls = ServerTls::load(&files.config()).expect("valid files");
        files.write(&cert, &key);
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
    }
}
