//! TLS to PostgreSQL: `sslmode` and `sslrootcert` of `db_url`, read as libpq reads them, on
//! rustls (the `ring` provider orch already uses).
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | no | – |
//! | `prefer` (default) | when the server offers TLS | no |
//! | `require` | yes, else the connection fails | no; the chain when `sslrootcert` is set |
//! | `verify-ca` | yes | the chain, against `sslrootcert` or the system roots |
//! | `verify-full` | yes | the chain and the host name |
//!
//! tokio-postgres knows `disable`, `prefer` and `require` only and no `sslrootcert`, so both
//! are taken off the URL here and it is handed `require` for the `verify-*` modes.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What `db_url` asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) mode: Mode,
    /// `sslrootcert`: a PEM file of the certificates to trust instead of the system's.
    pub(crate) root_cert: Option<PathBuf>,
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` off `url` (`postgres://…?…` or `key=value …`): the
    /// URL for tokio-postgres, and the settings.
    pub(crate) fn split(url: &str) -> Result<(String, Tls), StoreError> {
        let mut tls = Tls {
            mode: Mode::Prefer,
            root_cert: None,
        };
        let mut take = |key: &str, value: &str| -> Result<bool, StoreError> {
            match key {
                "sslmode" => {
                    tls.mode = match value {
                        "disable" => Mode::Disable,
                        "prefer" | "allow" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        other => {
                            return Err(StoreError::Url(format!(
                                "sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                            )));
                        }
                    };
                    Ok(true)
                }
                "sslrootcert" => {
                    tls.root_cert = Some(PathBuf::from(value));
                    Ok(true)
                }
                _ => Ok(false),
            }
        };
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(k, &percent_encoding::percent_decode_str(v).decode_utf8_lossy())? {
                    kept.push(pair);
                }
            }
            kept.push(tls.mode.for_tokio_postgres_url());
            format!("{base}?{}", kept.join("&"))
        } else {
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                let (k, v) = word.split_once('=').unwrap_or((word, ""));
                if !take(k.trim(), v.trim().trim_matches('\''))? {
                    kept.push(word);
                }
            }
            kept.push(tls.mode.for_tokio_postgres_url());
            kept.join(" ")
        };
        if tls.root_cert.is_some() && tls.mode == Mode::Disable {
            return Err(StoreError::Url(
                "sslrootcert is set but sslmode=disable turns TLS off".into(),
            ));
        }
        Ok((rest, tls))
    }

    /// The rustls connector, or `None` for plain TCP (`sslmode=disable`).
    pub(crate) fn connector(&self) -> Result<Option<MakeRustlsConnect>, StoreError> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
        let checks_chain = matches!(self.mode, Mode::VerifyCa | Mode::VerifyFull)
            || (self.mode == Mode::Require && self.root_cert.is_some());
        let config = if !checks_chain {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth()
        } else if self.mode == Mode::VerifyFull {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        } else {
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider)
                .build()
                .map_err(|e| StoreError::Url(format!("TLS: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
                .with_no_client_auth()
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let shown = path.display();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| StoreError::Url(format!("sslrootcert {shown}: {e}")))?
                {
                    let cert =
                        cert.map_err(|e| StoreError::Url(format!("sslrootcert {shown}: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| StoreError::Url(format!("sslrootcert {shown}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(StoreError::Url(format!(
                        "sslrootcert {shown} holds no PEM certificate"
                    )));
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    return Err(StoreError::Url(
                        "TLS: no system root certificates found; name a CA file with sslrootcert"
                            .into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

impl Mode {
    fn for_tokio_postgres_url(self) -> &'static str {
        match self {
            Mode::Disable => "sslmode=disable",
            Mode::Prefer => "sslmode=prefer",
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => "sslmode=require",
        }
    }
}


/// `prefer` and `require` without `sslrootcert`: encrypted, any certificate (as libpq). The
/// handshake's signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with `sslrootcert`): the chain must lead to a trusted root; the
/// name in the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_off_the_url() {
        let (url, tls) =
            Tls::split("postgres://u:p@db:5432/orch?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a")
                .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/orch?application_name=a&sslmode=require");
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        let (url, tls) = Tls::split("postgres://db/orch").unwrap();
        assert_eq!(url, "postgres://db/orch?sslmode=prefer");
        assert_eq!(tls.mode, Mode::Prefer);
        let (url, tls) = Tls::split("host=db dbname=orch sslmode=disable").unwrap();
        assert_eq!(url, "host=db dbname=orch sslmode=disable");
        assert_eq!(tls.mode, Mode::Disable);
        assert!(tls.connector().unwrap().is_none(), "plain TCP");
    }

    #[test]
    fn an_unknown_sslmode_or_a_missing_ca_file_is_named() {
        let err = Tls::split("postgres://db/orch?sslmode=verify_full").unwrap_err();
        assert!(err.to_string().contains("sslmode \"verify_full\""), "{err}");
        let (_, tls) =
            Tls::split("postgres://db/orch?sslmode=verify-ca&sslrootcert=/no/such/ca.pem").unwrap();
        let err = tls.connector().err().unwrap().to_string();
        assert!(err.contains("sslrootcert /no/such/ca.pem"), "{err}");
        let err = Tls::split("postgres://db/orch?sslmode=disable&sslrootcert=/ca.pem").unwrap_err();
        assert!(err.to_string().contains("sslmode=disable"), "{err}");
    }
}
