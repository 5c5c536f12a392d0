//! Clients of TLS peers: HTTP over rustls (ring), trusting the system's
//! certificate store plus, where a destination has its own CA (a private
//! PKI), the certificates of a PEM file.

use std::path::Path;
use std::time::Duration;

/// An HTTP client with `timeout` per request, trusting the system's roots
/// and those in `ca_file`; the error says what is wrong with the file.
pub fn http_client(
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            ));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// `error` with its chain of causes: a client error's own text rarely
/// says why ("error sending request"), its sources do ("invalid peer
/// certificate: UnknownIssuer").
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How a PostgreSQL connection is secured, from its `sslmode` (libpq's
/// names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: plain text.
    Disable,
    /// `prefer` (the default) or `require`: encrypted (required or when
    /// the server offers it), the server not authenticated — libpq's
    /// meaning of these modes.
    Encrypt,
    /// `verify-ca` or `verify-full`: encrypted, and the server's
    /// certificate must chain to a trusted root and name the host.
    Verify,
}

/// The `sslmode` of a libpq connection string or URL, and the string
/// as the PostgreSQL client reads it (which knows `disable`, `prefer`
/// and `require`: a verifying mode becomes `require`, verified here).
pub fn postgres_sslmode(url: &str) -> Result<(SslMode, String), String> {
    let Some(at) = url.find("sslmode=") else {
        return Ok((SslMode::Encrypt, url.to_owned()));
    };
    let value_at = at + "sslmode=".len();
    let end = url[value_at..]
        .find(|c: char| c == '&' || c.is_whitespace())
        .map_or(url.len(), |n| value_at + n);
    let (mode, as_read) = match &url[value_at..end] {
        "disable" => (SslMode::Disable, "disable"),
        "allow" | "prefer" => (SslMode::Encrypt, "prefer"),
        "require" => (SslMode::Encrypt, "require"),
        "verify-ca" | "verify-full" => (SslMode::Verify, "require"),
        other => return Err(format!("unknown sslmode {other:?}")),
    };
    Ok((
        mode,
        format!("{}{as_read}{}", &url[..value_at], &url[end..]),
    ))
}

/// The TLS set-up of a PostgreSQL client in `mode`, trusting the system's
/// roots and `ca_file`'s when it verifies.
pub fn postgres_tls(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match mode {
        SslMode::Verify => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if let Some(path) = ca_file {
                let certificates = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                if certificates.is_empty() {
                    return Err(format!(
                        "CA file {} holds no PEM certificate",
                        path.display()
                    ));
                }
                roots.add_parsable_certificates(certificates);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        SslMode::Disable | SslMode::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Accepts any server certificate but checks the handshake signatures:
/// encryption without authentication, libpq's `prefer` and `require`.
#[derive(Debug)]
struct EncryptOnly(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_from_key_value_strings_and_urls() {
        let cases = [
            ("host=db user=w", SslMode::Encrypt, "host=db user=w"),
            (
                "host=db sslmode=disable user=w",
                SslMode::Disable,
                "host=db sslmode=disable user=w",
            ),
            (
                "host=db sslmode=verify-full",
                SslMode::Verify,
                "host=db sslmode=require",
            ),
            (
                "postgresql://w@db/x?sslmode=verify-ca&connect_timeout=5",
                SslMode::Verify,
                "postgresql://w@db/x?sslmode=require&connect_timeout=5",
            ),
            (
                "host=db sslmode=require",
                SslMode::Encrypt,
                "host=db sslmode=require",
            ),
        ];
        for (url, mode, read) in cases {
            assert_eq!(
                postgres_sslmode(url).unwrap(),
                (mode, read.to_owned()),
                "{url}"
            );
        }
        assert!(postgres_sslmode("host=db sslmode=sometimes").is_err());
    }
}
