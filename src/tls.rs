//! Which certificates the router and the orchestrator trust when a server's
//! url is `https://`: the public roots (webpki-roots), and the certificates of
//! a private CA when one is given (`--server-ca`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// CA certificates trusted for `https://` servers besides the public roots.
#[derive(Debug, Clone)]
pub struct ServerRoots {
    certs: Arc<[CertificateDer<'static>]>,
    /// The TLS client configuration trusting the public roots and these.
    config: Arc<rustls::ClientConfig>,
}

impl ServerRoots {
    /// The certificates in a PEM bundle; an error says what is wrong with it.
    pub fn from_pem(pem: &[u8]) -> Result<ServerRoots, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for (n, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| format!("certificate {} is not usable as a CA: {e}", n + 1))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // What the tenement API client is built with: checked here, where an
        // error stops the start, rather than when the client is built.
        reqwest::Client::builder()
            .use_preconfigured_tls(config.clone())
            .build()
            .map_err(|e| format!("its TLS configuration is refused: {e}"))?;
        Ok(ServerRoots {
            certs: certs.into(),
            config: Arc::new(config),
        })
    }

    /// The certificates in the PEM file at `path`.
    pub fn load(path: &Path) -> Result<ServerRoots, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        ServerRoots::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// A TLS client configuration trusting the public roots and these.
    pub(crate) fn client_config(&self) -> rustls::ClientConfig {
        (*self.config).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_read_whole_and_bad_ones_say_why() {
        let pem = include_bytes!("../tests/fixtures/server-ca.pem");
        let roots = ServerRoots::from_pem(pem).unwrap();
        assert_eq!(roots.certificates().len(), 1);
        let e = ServerRoots::from_pem(b"").unwrap_err();
        assert_eq!(e, "no certificate in it");
        let e = ServerRoots::from_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(e.starts_with("not a PEM certificate bundle"), "{e}");
        let e = ServerRoots::load(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/ca.pem"), "{e}");
    }
}
