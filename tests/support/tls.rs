//! Certificates made by the tests themselves (rcgen): a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates for the users `root` and `app` (their common
//! names), a second CA that signed none of them but `stranger` (common name root), and
//! `crl.pem`: the CA's revocation list, which revokes `app`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// PEM files in a temp dir.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = make_ca(dir.path(), "ca", "etcdc test CA");
        let other = make_ca(dir.path(), "other-ca", "a CA nobody trusts");
        let leaf_of = |ca: &Issuer<'static, KeyPair>, name: &str, cn: &str, sans: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(sans).expect("params");
            p.serial_number = Some(serial(name));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, ca).expect("sign");
            write(dir.path(), name, &cert.pem(), &key.serialize_pem());
        };
        let leaf = |name: &str, cn: &str, sans: Vec<String>| leaf_of(&ca, name, cn, sans);
        leaf(
            "server",
            "etcd",
            vec!["127.0.0.1".into(), "localhost".into()],
        );
        leaf("client", "root", vec![]);
        leaf("app", "app", vec![]);
        leaf_of(&other, "stranger", "root", vec![]);
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![rcgen::RevokedCertParams {
                serial_number: serial("app"),
                revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .expect("sign the CRL");
        std::fs::write(dir.path().join("crl.pem"), crl.pem().expect("CRL PEM")).expect("write");
        Certs { dir }
    }

    /// `name.pem` (certificate) or `name-key.pem`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn pem(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("pem")
    }

    /// etcd's flags for a TLS client port; with `client_cert_auth`, clients must present a
    /// certificate the CA signed.
    pub fn server_flags(&self, client_cert_auth: bool) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        let mut flags = vec![
            "--cert-file".into(),
            p("server.pem"),
            "--key-file".into(),
            p("server-key.pem"),
        ];
        if client_cert_auth {
            flags.extend([
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                p("ca.pem"),
            ]);
        }
        flags
    }

    /// etcdctl's flags to talk to such a server.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        vec![
            "--cacert".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client-key.pem"),
        ]
    }
}

fn make_ca(dir: &Path, name: &str, cn: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.self_signed(&key).expect("self-sign");
    write(dir, name, &cert.pem(), &key.serialize_pem());
    Issuer::new(p, key)
}

/// A leaf's serial number, from its name.
fn serial(name: &str) -> rcgen::SerialNumber {
    let mut bytes = vec![1u8];
    bytes.extend(name.bytes());
    rcgen::SerialNumber::from_slice(&bytes)
}

fn write(dir: &Path, name: &str, cert: &str, key: &str) {
    std::fs::write(dir.join(format!("{name}.pem")), cert).expect("write");
    std::fs::write(dir.join(format!("{name}-key.pem")), key).expect("write");
}
