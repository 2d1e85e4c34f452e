//! HTTPS and WSS served by the manager itself: the `tls_cert` and `tls_key` PEM files
//! turned, once at startup, into the rustls acceptor that [`crate::http::serve`] wraps each
//! connection in.
//!
//! The crypto provider is ring, named here rather than looked up process-wide, so rustls
//! never has to choose one. Only HTTP/1.1 is offered over ALPN: the server speaks nothing
//! else, and WebSockets upgrade from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::Settings;

/// Why the certificate or key cannot be used. Each message is one line naming the setting
/// and the file, since it is the whole of a failed startup's output.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{given} is set but {missing} is not: HTTPS needs both the certificate and its key")]
    Incomplete { given: &'static str, missing: &'static str },
    #[error("cannot read {key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {} holds no PEM {what}", path.display())]
    Missing {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{key} {} is not valid PEM: {reason}", path.display())]
    Malformed {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls_cert {} and tls_key {} cannot be used together: {reason}", cert.display(), key.display())]
    Refused {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The acceptor for the configured certificate, or `None` to serve plain HTTP.
pub fn acceptor(settings: &Settings) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                given: "tls_cert",
                missing: "tls_key",
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::Incomplete {
                given: "tls_key",
                missing: "tls_cert",
            });
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let chain = certificates(cert)?;
    let private_key = private_key(key)?;
    let refused = |e: rustls::Error| TlsError::Refused {
        cert: cert.clone(),
        key: key.clone(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        // Also checks that the key belongs to the first certificate.
        .with_single_cert(chain, private_key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read("tls_cert", path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            key: "tls_cert",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            key: "tls_cert",
            path: path.to_owned(),
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Missing {
            key: "tls_key",
            path: path.to_owned(),
            what: "private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        },
        // Never the key's text: only what was wrong with it.
        other => TlsError::Malformed {
            key: "tls_key",
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    /// A self-signed certificate and its key, written to files.
    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        Files { _dir: dir, cert, key }
    }

    fn settings(cert: &Path, key: &Path) -> Settings {
        Settings {
            tls_cert: Some(cert.to_owned()),
            tls_key: Some(key.to_owned()),
            ..Settings::default()
        }
    }

    /// The error `settings` are refused with (the acceptor has no `Debug`, hence no
    /// `expect_err`).
    fn refusal(settings: &Settings) -> String {
        match acceptor(settings) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn error(cert: &Path, key: &Path) -> String {
        let message = refusal(&settings(cert, key));
        assert!(!message.contains('\n'), "one line: {message}");
        message
    }

    #[test]
    fn no_certificate_means_plain_http() {
        assert!(acceptor(&Settings::default()).unwrap().is_none());
    }

    #[test]
    fn a_certificate_and_its_key_make_an_acceptor() {
        let f = files();
        assert!(acceptor(&settings(&f.cert, &f.key)).unwrap().is_some());
    }

    #[test]
    fn half_a_configuration_is_refused() {
        let f = files();
        let only_cert = Settings {
            tls_cert: Some(f.cert.clone()),
            ..Settings::default()
        };
        let message = refusal(&only_cert);
        assert!(message.starts_with("tls_cert is set but tls_key is not"), "{message}");
    }

    #[test]
    fn unreadable_and_invalid_files_are_named() {
        let f = files();
        let missing = f.cert.with_file_name("absent.pem");
        let message = error(&missing, &f.key);
        assert!(
            message.starts_with("cannot read tls_cert ") && message.contains("absent.pem"),
            "{message}"
        );

        // The files swapped: no certificate in the key file, no key in the certificate file.
        let message = error(&f.key, &f.key);
        assert!(message.contains("holds no PEM certificate"), "{message}");
        let message = error(&f.cert, &f.cert);
        assert!(
            message.contains("tls_key") && message.contains("holds no PEM private key"),
            "{message}"
        );

        let garbage = f.cert.with_file_name("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let message = error(&garbage, &f.key);
        assert!(message.contains("is not valid PEM"), "{message}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (a, b) = (files(), files());
        let message = error(&a.cert, &b.key);
        assert!(message.contains("cannot be used together"), "{message}");
    }
}
