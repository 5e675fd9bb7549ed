//! Certificates for tests of mutual TLS between nodes.

/// A CA, and certificates it signs for node names (both server and client use: links are
/// mutual TLS), written as PEM files under `dir`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// Writes `node`'s certificate, key and this CA under `dir`; the TLS variables for them.
    pub fn node_files(&self, dir: &std::path::Path, node: &str) -> Vec<(String, String)> {
        let mut params = rcgen::CertificateParams::new(vec![node.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let write = |name: String, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        vec![
            (
                "PLAYHOUSE_CLUSTER__TLS__CERT".into(),
                write(format!("{node}.crt"), &cert.pem()),
            ),
            (
                "PLAYHOUSE_CLUSTER__TLS__KEY".into(),
                write(format!("{node}.key"), &key.serialize_pem()),
            ),
            (
                "PLAYHOUSE_CLUSTER__TLS__CA".into(),
                write(format!("ca-of-{node}.crt"), &self.ca_pem),
            ),
        ]
    }
}
