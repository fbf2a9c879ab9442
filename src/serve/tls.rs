//! TLS from a certificate chain and a key in PEM files, read again on
//! SIGHUP (a renewed certificate needs no restart; a bad one keeps the old).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// Why the certificate or key is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("{path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// No certificate in the certificate file, or no key in the key file.
    #[error("{0}: no PEM certificate or private key in it")]
    Empty(PathBuf),
    /// rustls refused the pair.
    #[error("certificate {cert} with key {key}: {err}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        err: tokio_rustls::rustls::Error,
    },
}

/// The current TLS configuration.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the pair.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Tls {
            current: RwLock::new(config(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Reads the pair again; on failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let cfg = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TlsAcceptor::from(cfg)
    }
}

fn config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        super::config::read_settings(path).map_err(|err| TlsError::Read {
            path: path.to_owned(),
            err,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|err| TlsError::Read {
            path: cert.to_owned(),
            err,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty(cert.to_owned()));
    }
    let private = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|err| TlsError::Read {
            path: key.to_owned(),
            err,
        })?
        .ok_or_else(|| TlsError::Empty(key.to_owned()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let refused = |err| TlsError::Refused {
        cert: cert.to_owned(),
        key: key.to_owned(),
        err,
    };
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(refused)?;
    Ok(Arc::new(cfg))
}
