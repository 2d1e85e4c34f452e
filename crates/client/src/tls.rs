//! Which servers the client trusts: the public web PKI roots and, optionally, the CA
//! certificates of a PEM file (a company CA, or the CA a test made for its manager).
//!
//! One rustls [`ClientConfig`] is built per [`Tls`] and serves both HTTP (reqwest) and
//! the delegate socket (tokio-tungstenite), so the two can never disagree about a
//! certificate. Its crypto is ring's, named here rather than looked up process-wide, so
//! rustls never has to choose a provider (and never panics for want of one).

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// How long an idle pooled HTTP connection is kept for reuse (see [`Tls::http_client`]).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The trust of a client: cheap to clone (the config is shared).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// The extra CA file, kept to say which one is in use.
    ca_file: Option<PathBuf>,
}

/// The public roots alone, built once: every client without a custom CA shares it.
static PUBLIC: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| Arc::new(config(public_roots())));

/// Trusts the public web PKI roots only.
impl Default for Tls {
    fn default() -> Self {
        Tls {
            config: Arc::clone(&PUBLIC),
            ca_file: None,
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Why a CA file cannot be used. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA certificate file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the CA certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the CA certificate file {} is not usable: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Tls {
    /// Trusts the public roots and every certificate in the PEM file at `path`.
    pub fn with_ca_file(path: &Path) -> Result<Tls, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| TlsError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mut roots = public_roots();
        let mut added = 0usize;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate = certificate.map_err(|e| invalid(e.to_string()))?;
            roots.add(certificate).map_err(|e| invalid(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::NoCertificate { path: path.to_owned() });
        }
        Ok(Tls {
            config: Arc::new(config(roots)),
            ca_file: Some(path.to_owned()),
        })
    }

    /// [`Tls::with_ca_file`] when a file is given, else [`Tls::default`]: what a
    /// `--ca-cert` option turns into.
    pub fn from_ca_file(path: Option<&Path>) -> Result<Tls, TlsError> {
        path.map_or_else(|| Ok(Tls::default()), Tls::with_ca_file)
    }

    /// The extra CA file trusted, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// A reqwest builder that trusts what this does (and nothing else); add timeouts or
    /// a redirect policy, then build.
    ///
    /// Pooled connections idle for [`POOL_IDLE_TIMEOUT`] are not reused: the manager
    /// closes a connection that sends no request within its `header_read_timeout` (10s by
    /// default), and a request sent just as it does so would fail.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_preconfigured_tls(ClientConfig::clone(&self.config))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
    }

    /// The rustls configuration itself, for connections made without reqwest.
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// What tokio-tungstenite uses for `wss://` (plain `ws://` ignores it).
    pub(crate) fn connector(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.rustls_config())
    }
}

/// Whether `error`, or anything in its chain of sources, is a server certificate that
/// was not trusted (unknown issuer, wrong name, expired): the failure a missing
/// `--ca-cert` causes, which callers can then suggest.
pub fn is_certificate_error(error: &(dyn StdError + 'static)) -> bool {
    certificate_error(error).is_some()
}

/// What was wrong with the server's certificate (`invalid peer certificate:
/// UnknownIssuer`), if that is why `error` happened.
pub fn certificate_error(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut pending = vec![error];
    while let Some(e) = pending.pop() {
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        pending.extend(e.source());
        // reqwest and tokio-tungstenite wrap it in `io::Error`s (sometimes one in another),
        // whose `source` skips the wrapped error itself: look inside with `get_ref`.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            pending.push(inner);
        }
    }
    None
}

fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        // Only fails when the provider lacks both TLS 1.2 and 1.3; ring has both.
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_default_trusts_the_public_roots() {
        let tls = Tls::default();
        assert!(tls.ca_file().is_none());
        assert!(tls.http_client().build().is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let msg = Tls::with_ca_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = write("just some text\n");
        let err = Tls::with_ca_file(file.path()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn a_mangled_certificate_is_refused() {
        let file = write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
        let err = Tls::with_ca_file(file.path()).unwrap_err();
        assert!(matches!(err, TlsError::Invalid { .. }), "{err}");
    }
}
