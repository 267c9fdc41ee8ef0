//! The local development PKI: a CA and a `localhost` certificate, generated on first
//! run when missing, so `gateway run` serves HTTPS out of the box.
//!
//! Nothing here is for production: operators pass `--tls-cert`/`--tls-key`, or put
//! certificates in the config. No private key is ever committed; `certs/` holds only
//! a README and the generated files are git-ignored.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Paths of the generated development files.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The CA certificate clients should trust (`dev-ca.pem`).
    pub ca_cert: PathBuf,
    /// The `localhost` certificate chain (`localhost.pem`).
    pub cert: PathBuf,
    /// The `localhost` private key (`localhost-key.pem`, mode 0600).
    pub key: PathBuf,
}

impl DevPki {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> DevPki {
        DevPki {
            ca_cert: dir.join("dev-ca.pem"),
            cert: dir.join("localhost.pem"),
            key: dir.join("localhost-key.pem"),
        }
    }
}

/// Makes sure the development CA and `localhost` certificate exist in `dir`.
///
/// Runs at start-up when no `--tls-cert` was given. Returns the paths; generates a
/// fresh CA and certificate (for `localhost`, `127.0.0.1` and `::1`) when any file is
/// missing.
pub fn ensure_dev_pki(dir: &Path) -> anyhow::Result<DevPki> {
    let pki = DevPki::in_dir(dir);
    if pki.ca_cert.exists() && pki.cert.exists() && pki.key.exists() {
        return Ok(pki);
    }
    fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        DnType::CommonName,
        "Gateway Development CA (do not trust in production)",
    );
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key)?;

    fs::write(&pki.ca_cert, ca.pem())?;
    fs::write(&pki.cert, format!("{}{}", cert.pem(), ca.pem()))?;
    write_private(&pki.key, &key.serialize_pem())?;
    // The CA key is not kept: nothing else can be signed with it later.
    tracing::info!(ca = %pki.ca_cert.display(), "generated a development CA and localhost certificate");
    Ok(pki)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_the_pair_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path()).unwrap();
        let cert = fs::read_to_string(&pki.cert).unwrap();
        let key = fs::read_to_string(&pki.key).unwrap();
        crate::tls::check_pem_pair(&cert, &key).unwrap();
        let again = ensure_dev_pki(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&again.cert).unwrap(), cert);
    }
}
