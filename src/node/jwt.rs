//! etcd's JWT auth tokens (`--auth-token jwt,pub-key=FILE,priv-key=FILE,sign-method=ES256,
//! ttl=5m`): a token is `header.claims.signature` (base64url), the claims etcd's —
//! `{"exp":…,"revision":…,"username":…}` — signed with the member's key, so any member (or
//! etcd with the same keys) verifies it without having seen it. It names the auth revision
//! it was issued at: once users or roles change, an older token is refused ("revision of
//! auth store is old") and clients authenticate again. With only `pub-key`, a member
//! verifies tokens but issues none (etcd's verify-only mode). RSA (RS*, PS*), ECDSA (ES256,
//! ES384) and HMAC (HS*, the key file's bytes as the secret), as etcd 3.4 takes them.

use std::time::{Duration, SystemTime};

use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey};
use ring::{hmac, rand::SystemRandom};
use tokio_rustls::rustls::pki_types::pem::{PemObject, SectionKind};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;

use crate::tls::der_element;

/// The signing methods: etcd's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Rs(Hash),
    Ps(Hash),
    Es256,
    Es384,
    Hs(Hash),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// etcd's names of the methods.
const METHODS: [(&str, Method); 11] = [
    ("RS256", Method::Rs(Hash::Sha256)),
    ("RS384", Method::Rs(Hash::Sha384)),
    ("RS512", Method::Rs(Hash::Sha512)),
    ("PS256", Method::Ps(Hash::Sha256)),
    ("PS384", Method::Ps(Hash::Sha384)),
    ("PS512", Method::Ps(Hash::Sha512)),
    ("ES256", Method::Es256),
    ("ES384", Method::Es384),
    ("HS256", Method::Hs(Hash::Sha256)),
    ("HS384", Method::Hs(Hash::Sha384)),
    ("HS512", Method::Hs(Hash::Sha512)),
];

impl Method {
    fn parse(name: &str) -> Option<Method> {
        METHODS.iter().find(|(n, _)| *n == name).map(|&(_, m)| m)
    }

    fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |&(n, _)| n)
    }

    fn rsa_signing(self) -> &'static dyn signature::RsaEncoding {
        use Hash::*;
        match self {
            Method::Rs(Sha256) => &signature::RSA_PKCS1_SHA256,
            Method::Rs(Sha384) => &signature::RSA_PKCS1_SHA384,
            Method::Rs(Sha512) => &signature::RSA_PKCS1_SHA512,
            Method::Ps(Sha256) => &signature::RSA_PSS_SHA256,
            Method::Ps(Sha384) => &signature::RSA_PSS_SHA384,
            _ => &signature::RSA_PSS_SHA512,
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        use Hash::*;
        match self {
            Method::Rs(Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            Method::Rs(Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            Method::Rs(Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            Method::Ps(Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
            Method::Ps(Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
            Method::Ps(Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
            Method::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            _ => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }

    fn ecdsa_signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Method::Es256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            _ => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Method::Hs(Hash::Sha384) => hmac::HMAC_SHA384,
            Method::Hs(Hash::Sha512) => hmac::HMAC_SHA512,
            _ => hmac::HMAC_SHA256,
        }
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Hmac(hmac::Key),
}

/// A member's JWT settings and keys.
pub struct Jwt {
    method: Method,
    /// None: verify-only (a public key alone).
    signer: Option<Signer>,
    /// The public key as ring takes it (PKCS#1 RSAPublicKey, or the EC point); empty for
    /// HMAC.
    public: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("method", &self.method.name())
            .field("verify_only", &self.signer.is_none())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Invalid,
}

impl Jwt {
    /// From `--auth-token`'s options after `jwt,`: `pub-key=FILE`, `priv-key=FILE`,
    /// `sign-method=NAME` (required), `ttl=DURATION` (default 5m).
    pub fn from_options(options: &str) -> Result<Jwt, String> {
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, None);
        for item in options.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("JWT option {item:?} is not key=value"))?;
            let read = |what: &str| {
                std::fs::read(value)
                    .map_err(|e| format!("cannot read the JWT {what} {value:?}: {e}"))
            };
            match key {
                "pub-key" => public = Some(read("public key")?),
                "priv-key" => private = Some(read("private key")?),
                "sign-method" => {
                    method = Some(Method::parse(value).ok_or_else(|| {
                        let names: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
                        format!(
                            "JWT sign-method {value:?} is not supported: one of {}",
                            names.join(", ")
                        )
                    })?)
                }
                "ttl" => {
                    ttl = Some(super::flags::go_duration(value).ok_or_else(|| {
                        format!("JWT ttl is a duration such as 5m, not {value:?}")
                    })?)
                }
                other => {
                    return Err(format!(
                        "unknown JWT option {other:?}: pub-key, priv-key, sign-method and ttl"
                    ))
                }
            }
        }
        let method = method.ok_or("the JWT options need sign-method (RS256, ES256, ...)")?;
        let (signer, derived) = match private {
            Some(pem) => {
                let (signer, public) = signer(method, &pem)?;
                (Some(signer), public)
            }
            None => (None, Vec::new()),
        };
        let public = match (public, method) {
            (_, Method::Hs(_)) if signer.is_none() => {
                return Err("JWT HMAC methods need priv-key (the shared secret)".into())
            }
            (_, Method::Hs(_)) => Vec::new(),
            (Some(pem), _) => {
                let given = public_key(&pem)?;
                if signer.is_some() && given != derived {
                    return Err("the JWT pub-key is not the public key of priv-key".into());
                }
                given
            }
            (None, _) if signer.is_some() => derived,
            (None, _) => return Err("the JWT options need priv-key or pub-key".into()),
        };
        Ok(Jwt {
            method,
            signer,
            public,
            ttl: ttl.unwrap_or(Duration::from_secs(300)),
        })
    }

    /// Whether this member issues tokens (it has the private key).
    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// A token for `user` at auth revision `revision`, good for the TTL.
    pub fn sign(&self, user: &str, revision: u64) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + self.ttl.as_secs();
        // Go's encoding/json writes a map's keys sorted, as serde_json's object does.
        let header = serde_json::json!({"alg": self.method.name(), "typ": "JWT"});
        let claims = serde_json::json!({"exp": exp, "revision": revision, "username": user});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = match signer {
            Signer::Rsa(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(
                    self.method.rsa_signing(),
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .ok()?;
                sig
            }
            Signer::Ecdsa(key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .ok()?
                .as_ref()
                .to_vec(),
            Signer::Hmac(key) => hmac::sign(key, input.as_bytes()).as_ref().to_vec(),
        };
        Some(format!("{input}.{}", b64(sig)))
    }

    /// The user and auth revision of a token this cluster's key signed, not expired.
    pub fn verify(&self, token: &str) -> Result<(String, u64), Refused> {
        use base64::Engine;
        let decode = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| Refused::Invalid)
        };
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Invalid);
        };
        let header: serde_json::Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| Refused::Invalid)?;
        if header["alg"].as_str() != Some(self.method.name()) {
            return Err(Refused::Invalid);
        }
        let input = &token[..h.len() + 1 + c.len()];
        let sig = decode(s)?;
        let verified = match &self.signer {
            Some(Signer::Hmac(key)) => hmac::verify(key, input.as_bytes(), &sig).is_ok(),
            _ => UnparsedPublicKey::new(self.method.verification(), &self.public)
                .verify(input.as_bytes(), &sig)
                .is_ok(),
        };
        if !verified {
            return Err(Refused::Invalid);
        }
        let claims: serde_json::Value =
            serde_json::from_slice(&decode(c)?).map_err(|_| Refused::Invalid)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // As jwt-go's MapClaims: exp, iat and nbf are checked when present.
        let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_f64);
        if time("exp").is_some_and(|exp| now > exp)
            || time("iat").is_some_and(|iat| now < iat)
            || time("nbf").is_some_and(|nbf| now < nbf)
        {
            return Err(Refused::Invalid);
        }
        match (claims["username"].as_str(), claims["revision"].as_f64()) {
            (Some(user), Some(revision)) if revision >= 0.0 => {
                Ok((user.to_string(), revision as u64))
            }
            _ => Err(Refused::Invalid),
        }
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing key of `pem` for `method`, and its public key as `verify` takes it.
fn signer(method: Method, pem: &[u8]) -> Result<(Signer, Vec<u8>), String> {
    if let Method::Hs(_) = method {
        // etcd takes the file's bytes as they are as the secret.
        return Ok((Signer::Hmac(hmac::Key::new(method.hmac(), pem)), Vec::new()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("the JWT priv-key is not a PEM private key: {e}"))?;
    let kind = match method {
        Method::Es256 => "an ECDSA P-256",
        Method::Es384 => "an ECDSA P-384",
        _ => "an RSA",
    };
    let bad = |e: &dyn std::fmt::Display| {
        format!(
            "the JWT priv-key for {} must be {kind} private key: {e}",
            method.name()
        )
    };
    match (method, key) {
        (Method::Rs(_) | Method::Ps(_), PrivateKeyDer::Pkcs1(der)) => {
            let key = RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|e| bad(&e))?;
            let public = key.public().as_ref().to_vec();
            Ok((Signer::Rsa(key), public))
        }
        (Method::Rs(_) | Method::Ps(_), PrivateKeyDer::Pkcs8(der)) => {
            let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| bad(&e))?;
            let public = key.public().as_ref().to_vec();
            Ok((Signer::Rsa(key), public))
        }
        (Method::Es256 | Method::Es384, PrivateKeyDer::Pkcs8(der)) => {
            let key = EcdsaKeyPair::from_pkcs8(
                method.ecdsa_signing(),
                der.secret_pkcs8_der(),
                &SystemRandom::new(),
            )
            .map_err(|e| bad(&e))?;
            let public = signature::KeyPair::public_key(&key).as_ref().to_vec();
            Ok((Signer::Ecdsa(key), public))
        }
        (Method::Es256 | Method::Es384, PrivateKeyDer::Sec1(der)) => {
            // SEC1 (`openssl ecparam -genkey`): version, the private key, [0] the curve,
            // [1] the public point, which ring needs beside the private key.
            let bad_sec1 = || bad(&"not a SEC1 EC private key with its public key");
            let (_, key, _) = der_element(der.secret_sec1_der()).ok_or_else(bad_sec1)?;
            let (_, _version, rest) = der_element(key).ok_or_else(bad_sec1)?;
            let (_, private, mut rest) = der_element(rest).ok_or_else(bad_sec1)?;
            let mut point = None;
            while let Some((tag, content, next)) = der_element(rest) {
                if tag == 0xa1 {
                    point = der_element(content).and_then(|(_, bits, _)| bits.get(1..));
                }
                rest = next;
            }
            let point = point.ok_or_else(bad_sec1)?;
            let key = EcdsaKeyPair::from_private_key_and_public_key(
                method.ecdsa_signing(),
                private,
                point,
                &SystemRandom::new(),
            )
            .map_err(|e| bad(&e))?;
            Ok((Signer::Ecdsa(key), point.to_vec()))
        }
        _ => Err(bad(&"it is of another kind")),
    }
}

/// A PEM public key as `verify` takes it (the BIT STRING of its SubjectPublicKeyInfo):
/// `PUBLIC KEY` (what `openssl rsa -pubout` and `openssl ec -pubout` write) or, as etcd
/// takes it too, a `CERTIFICATE`'s key.
fn public_key(pem: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || {
        "the JWT pub-key is not a PEM public key or certificate (\"BEGIN PUBLIC KEY\")".to_string()
    };
    let mut sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(pem);
    let (kind, der) = sections.next().ok_or_else(bad)?.map_err(|_| bad())?;
    let info = match kind {
        SectionKind::PublicKey => der_element(&der).ok_or_else(bad)?.1,
        SectionKind::Certificate => crate::tls::public_key_info(&der).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let (_, _algorithm, rest) = der_element(info).ok_or_else(bad)?;
    let (tag, bits, _) = der_element(rest).ok_or_else(bad)?;
    // A BIT STRING: its first byte counts the unused bits (0).
    match (tag, bits.split_first()) {
        (0x03, Some((0, key))) => Ok(key.to_vec()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn tokens_sign_and_verify_and_are_refused_when_altered() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256, PKCS#8
        let private = write(dir.path(), "k.pem", &key.serialize_pem());
        let public = write(dir.path(), "k.pub", &key.public_key_pem());
        let jwt = Jwt::from_options(&format!(
            "priv-key={private},pub-key={public},sign-method=ES256,ttl=1m"
        ))
        .unwrap();
        let token = jwt.sign("root", 7).unwrap();
        assert_eq!(jwt.verify(&token), Ok(("root".into(), 7)));
        let claims = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["username"], "root");
        assert_eq!(claims["revision"], 7);
        // Another user's claims under this signature, or no signature at all: refused.
        let forged = token.replacen(
            token.split('.').nth(1).unwrap(),
            &b64(r#"{"exp":9999999999,"revision":7,"username":"admin"}"#),
            1,
        );
        assert_eq!(jwt.verify(&forged), Err(Refused::Invalid));
        assert_eq!(jwt.verify("a.b"), Err(Refused::Invalid));
        // A member with the public key alone verifies, and signs nothing.
        let verifier = Jwt::from_options(&format!("pub-key={public},sign-method=ES256")).unwrap();
        assert!(!verifier.signs() && verifier.sign("root", 7).is_none());
        assert_eq!(verifier.verify(&token), Ok(("root".into(), 7)));
        // Another method's token is refused; an expired one too.
        let hs = write(dir.path(), "secret", "s3cret");
        let hmac = Jwt::from_options(&format!("priv-key={hs},sign-method=HS256")).unwrap();
        assert_eq!(hmac.verify(&token), Err(Refused::Invalid));
        let hmac_token = hmac.sign("app", 1).unwrap();
        assert_eq!(hmac.verify(&hmac_token), Ok(("app".into(), 1)));
        let expired = Jwt::from_options(&format!("priv-key={hs},sign-method=HS256,ttl=0s"))
            .unwrap()
            .sign("app", 1)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(hmac.verify(&expired), Err(Refused::Invalid));
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let private = write(dir.path(), "k.pem", &key.serialize_pem());
        let wrong = write(dir.path(), "o.pub", &other.public_key_pem());
        for (options, refusal) in [
            (format!("priv-key={private}"), "need sign-method"),
            (
                format!("priv-key={private},sign-method=XX1"),
                "not supported",
            ),
            (
                format!("priv-key={private},sign-method=RS256"),
                "must be an RSA private key",
            ),
            ("sign-method=ES256".to_string(), "priv-key or pub-key"),
            (
                format!("pub-key={wrong},priv-key={private},sign-method=ES256"),
                "not the public key",
            ),
            (
                format!("priv-key={private},sign-method=ES256,colour=red"),
                "unknown JWT option",
            ),
            (
                "priv-key=/nonexistent,sign-method=ES256".to_string(),
                "cannot read",
            ),
        ] {
            let e = Jwt::from_options(&options).unwrap_err();
            assert!(e.contains(refusal), "{options}: {e}");
        }
    }
}
