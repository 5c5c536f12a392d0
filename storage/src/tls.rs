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
