//! TLS for both backends, with rustls (no OpenSSL): the client side of every connection
//! etcdc makes (the remote client to etcd, a member to its peers) and the server side of a
//! member's listeners. Certificates given as files are read again for each new connection
//! (a client) or handshake (a server, as etcd does), so operators rotate them without a
//! restart; PEM is checked once up front, so a bad file is a start-up error naming it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::Uri;

use crate::error::{Error, ErrorKind, Result};

/// PEM text in memory, or a file read each time it is needed.
#[derive(Clone, Debug)]
pub enum Pem {
    File(PathBuf),
    Text(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::Text(t) => Ok(t.clone()),
            Pem::File(f) => std::fs::read(f).map_err(|e| {
                Error::invalid(format!("cannot read {what} file {}: {e}", f.display()))
            }),
        }
    }

    /// When the file last changed (None for text): what the server side caches on.
    fn stamp(&self) -> Option<SystemTime> {
        match self {
            Pem::File(f) => std::fs::metadata(f).and_then(|m| m.modified()).ok(),
            Pem::Text(_) => None,
        }
    }

    fn certs(&self, what: &str) -> Result<Vec<CertificateDer<'static>>> {
        let pem = self.read(what)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("{what} is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(format!(
                "{what} is not PEM (no \"-----BEGIN CERTIFICATE-----\" block)"
            )));
        }
        Ok(certs)
    }

    fn key(&self, what: &str) -> Result<PrivateKeyDer<'static>> {
        let pem = self.read(what)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            Error::invalid(format!(
                "{what} is not PEM (no \"-----BEGIN ...PRIVATE KEY-----\" block): {e}"
            ))
        })
    }

    fn roots(&self, what: &str) -> Result<RootCertStore> {
        root_store(self.certs(what)?, what)
    }
}

/// `certs` as trust anchors.
fn root_store(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// A certificate (chain) and its private key.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert: Pem,
    pub key: Pem,
}

impl Identity {
    fn load(&self, what: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        Ok((
            self.cert.certs(&format!("the {what} certificate"))?,
            self.key.key(&format!("the {what} key"))?,
        ))
    }
}

/// The crypto provider, with etcd's `--cipher-suites` (Go's names) limiting TLS 1.2's
/// suites; TLS 1.3's are not configurable, in etcd (Go) as here.
pub fn provider(cipher_suites: &[String]) -> Result<Arc<CryptoProvider>> {
    let mut p = ring::default_provider();
    if !cipher_suites.is_empty() {
        let tls13 = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13);
        let mut chosen: Vec<_> = tls13.copied().collect();
        for name in cipher_suites {
            let suite = p.cipher_suites.iter().find(|s| {
                let ours = s.suite().as_str().unwrap_or("");
                // Go names the ChaCha20 suites without their hash.
                ours == name || ours == format!("{name}_SHA256")
            });
            match suite {
                Some(s) => chosen.push(*s),
                None => {
                    let known: Vec<&str> = p
                        .cipher_suites
                        .iter()
                        .filter(|s| s.version() != &rustls::version::TLS13)
                        .filter_map(|s| s.suite().as_str())
                        .collect();
                    return Err(Error::invalid(format!(
                        "cipher suite {name:?} is not supported; supported: {}",
                        known.join(", ")
                    )));
                }
            }
        }
        p.cipher_suites = chosen;
    }
    Ok(Arc::new(p))
}

/// How a client verifies servers and proves who it is.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CAs that verify the servers; None: the system's roots.
    pub ca: Option<Pem>,
    /// For servers that ask for a client certificate.
    pub identity: Option<Identity>,
    /// The name the servers' certificates must carry, when not the host connected to.
    pub server_name: Option<String>,
    /// No verification of the servers at all (etcd's `--peer-auto-tls` peers, whose
    /// certificates are self-signed).
    pub insecure: bool,
}

impl ClientTls {
    /// Reads and checks everything once: a bad file is the caller's error now, not every
    /// connection's later.
    pub fn check(&self) -> Result<()> {
        self.config().map(drop)
    }

    /// A rustls client config from the files as they are now.
    fn config(&self) -> Result<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider(&[])?)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider(&[])?)))
        } else {
            let roots = match &self.ca {
                Some(ca) => ca.roots("the CA")?,
                None => native_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some(id) => {
                let (certs, key) = id.load("client")?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| Error::invalid(format!("the client certificate and key: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn native_roots() -> Result<RootCertStore> {
    static ROOTS: OnceLock<std::result::Result<RootCertStore, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(format!(
                    "no CA given and the system has no CA certificates: {:?}",
                    found.errors
                ));
            }
            Ok(roots)
        })
        .clone()
        .map_err(Error::invalid)
}

/// Accepts any server certificate (still checking the handshake's signatures).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// A connection, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Makes the connections of a tonic channel: TCP (Nagle off) within `timeout`, then TLS
/// with the settings as the files are now, when there are settings.
#[derive(Clone)]
pub(crate) struct Connector {
    pub tls: Option<Arc<ClientTls>>,
    pub timeout: Duration,
    /// Where to keep the last TLS alert the server sent after the handshake: with TLS 1.3
    /// a server refuses a client certificate only once the client has finished, so the
    /// alert comes on the first read and the call that fails sees only a closed connection.
    pub alerts: Option<Arc<Mutex<Option<rustls::AlertDescription>>>>,
}

/// A TLS stream that keeps the alert a read met in `slot`.
struct Alerting<S> {
    inner: S,
    slot: Arc<Mutex<Option<rustls::AlertDescription>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Alerting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            if let Some(rustls::Error::AlertReceived(alert)) =
                e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(*alert);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Alerting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `host`'s addresses: an IP address's at once, a name's resolved on a blocking thread (as
/// tokio would), which tells a driven queue's descriptor once the answer is in.
async fn addresses(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let afar = crate::runtime::Afar::here();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.to_string();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        afar.answered();
    });
    rx.await
        .map_err(|_| io::Error::other(format!("resolving {host:?} was abandoned")))?
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<Box<dyn Io>>>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let connect = async { TcpStream::connect(&addresses(&host, port).await?[..]).await };
            let tcp = crate::runtime::timeout(this.timeout, connect)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "tcp connect error: timed out")
                })??;
            tcp.set_nodelay(true)?;
            crate::runtime::connected(&tcp);
            let Some(tls) = this.tls else {
                return Ok(TokioIo::new(Box::new(tcp) as Box<dyn Io>));
            };
            let config = tls.config().map_err(io::Error::other)?;
            let name = tls.server_name.clone().unwrap_or(host);
            let name = ServerName::try_from(name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = crate::runtime::timeout(
                this.timeout.max(Duration::from_secs(3)),
                tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Ok(TokioIo::new(match this.alerts {
                Some(slot) => Box::new(Alerting {
                    inner: stream,
                    slot,
                }) as Box<dyn Io>,
                None => Box::new(stream),
            }))
        })
    }
}

/// etcd's TLS flags for one kind of listener (clients' or peers').
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// A self-signed certificate made at start (kept in the data dir) when no files given.
    pub auto_tls: bool,
    /// A certificate revocation list (PEM or DER): a client certificate it revokes is
    /// refused (etcd's `--client-crl-file`, `--peer-crl-file`).
    pub crl_file: Option<PathBuf>,
    /// Only client certificates with this subject common name (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// Only client certificates valid for this host name (`--*-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

impl ServerTls {
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.auto_tls
    }

    /// The rustls server config of a listener: `flag` names the flags in errors ("" for the
    /// client flags, "peer-" for the peer ones); `auto_dir` keeps an `--auto-tls`
    /// certificate for `hosts`.
    pub fn config(
        &self,
        flag: &str,
        cipher_suites: &[String],
        auto_dir: &Path,
        hosts: &[String],
    ) -> Result<Arc<ServerConfig>> {
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Identity {
                cert: Pem::File(c.clone()),
                key: Pem::File(k.clone()),
            },
            (None, None) if self.auto_tls => self_signed(auto_dir, hosts)?,
            _ => {
                return Err(Error::invalid(format!(
                    "--{flag}cert-file and --{flag}key-file go together (or --{flag}auto-tls)"
                )))
            }
        };
        let provider = provider(cipher_suites)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let builder = if self.client_cert_auth {
            let ca = self.trusted_ca_file.as_ref().ok_or_else(|| {
                Error::invalid(format!(
                    "--{flag}client-cert-auth needs --{flag}trusted-ca-file"
                ))
            })?;
            let what = format!("--{flag}trusted-ca-file");
            let trusted = Pem::File(ca.clone()).certs(&what)?;
            let roots = root_store(trusted.clone(), &what)?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if let Some(file) = &self.crl_file {
                // As etcd: the serials the list revokes are refused; a certificate whose
                // issuer the list does not cover is not.
                verifier = verifier
                    .with_crls(read_crls(file, &format!("--{flag}crl-file"))?)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let verifier = verifier
                .build()
                .map_err(|e| Error::invalid(format!("--{flag}trusted-ca-file: {e}")))?;
            let hostname = match &self.allowed_hostname {
                Some(h) => Some(ServerName::try_from(h.clone()).map_err(|e| {
                    let flag = if flag.is_empty() { "client-" } else { flag };
                    Error::invalid(format!("--{flag}cert-allowed-hostname {h:?}: {e}"))
                })?),
                None => None,
            };
            builder.with_client_cert_verifier(Arc::new(ClientVerifier {
                inner: verifier,
                trusted,
                cn: self.allowed_cn.clone(),
                hostname,
                logged: Default::default(),
            }))
        } else {
            builder.with_no_client_auth()
        };
        let files = Files {
            identity,
            provider,
            loaded: Mutex::new(None),
        };
        files.load()?;
        let mut config = builder.with_cert_resolver(Arc::new(files));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The revocation lists of a CRL file, PEM or DER.
fn read_crls(
    file: &Path,
    flag: &str,
) -> Result<Vec<tokio_rustls::rustls::pki_types::CertificateRevocationListDer<'static>>> {
    use tokio_rustls::rustls::pki_types::CertificateRevocationListDer;
    let bytes = std::fs::read(file)
        .map_err(|e| Error::invalid(format!("{flag} {}: {e}", file.display())))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("{flag} {}: {e}", file.display())))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// How etcd (Go's x509) verifies client certificates, around webpki's verifier: a
/// certificate of the trusted CA file itself, presented as the client's own, is a chain of
/// one and accepted while it is valid (webpki refuses a CA as an end entity; etcd's tests
/// use such a self-signed certificate as CA, server and client certificate at once). And
/// etcd's allowed common name or host name: a certificate without them is refused as a bad
/// certificate (the alert Go's etcd sends).
#[derive(Debug)]
struct ClientVerifier {
    inner: Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>,
    /// The certificates of the trusted CA file.
    trusted: Vec<CertificateDer<'static>>,
    cn: Option<String>,
    hostname: Option<ServerName<'static>>,
    /// When a refusal was last logged (seconds since the epoch): at most one a second.
    logged: std::sync::atomic::AtomicU64,
}

impl ClientVerifier {
    /// Refuses a certificate as a bad one, with etcd's words in the log.
    fn refuse(&self, why: &str) -> tokio_rustls::rustls::Error {
        use std::sync::atomic::Ordering;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.logged.swap(now, Ordering::Relaxed) != now {
            crate::observe::log(crate::observe::Level::Warn, || {
                format!("rejected connection (error \"{why}\")")
            });
        }
        tokio_rustls::rustls::Error::InvalidCertificate(
            tokio_rustls::rustls::CertificateError::NotValidForName,
        )
    }
}

impl tokio_rustls::rustls::server::danger::ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[tokio_rustls::rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> std::result::Result<
        tokio_rustls::rustls::server::danger::ClientCertVerified,
        tokio_rustls::rustls::Error,
    > {
        use tokio_rustls::rustls::server::danger::ClientCertVerified;
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => verified,
            Err(
                e @ tokio_rustls::rustls::Error::InvalidCertificate(
                    tokio_rustls::rustls::CertificateError::Revoked,
                ),
            ) => return Err(e),
            Err(e) => {
                let root = self
                    .trusted
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref());
                if !root || !valid_at(end_entity, now.as_secs()) {
                    return Err(e);
                }
                ClientCertVerified::assertion()
            }
        };
        if let Some(cn) = &self.cn {
            if common_name(end_entity).as_deref() != Some(cn.as_str()) {
                return Err(self.refuse("CommonName authentication failed"));
            }
        }
        if let Some(name) = &self.hostname {
            let parsed = tokio_rustls::rustls::server::ParsedCertificate::try_from(end_entity)?;
            tokio_rustls::rustls::client::verify_server_name(&parsed, name)
                .map_err(|_| self.refuse("client certificate authentication failed"))?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> std::result::Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> std::result::Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `--auto-tls`: a self-signed certificate for `hosts`, made once and kept in `dir`
/// (etcd keeps its own in the data dir's `fixtures/`).
fn self_signed(dir: &Path, hosts: &[String]) -> Result<Identity> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if !cert.exists() || !key.exists() {
        let io = |e: io::Error| {
            Error::new(
                ErrorKind::Internal,
                format!("--auto-tls in {}: {e}", dir.display()),
            )
        };
        let made = (|| {
            let pair = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "etcd");
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
            let signed = params.self_signed(&pair)?;
            Ok::<_, rcgen::Error>((signed.pem(), pair.serialize_pem()))
        })()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("--auto-tls: {e}")))?;
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(&key, made.1).map_err(io)?;
        std::fs::write(&cert, made.0).map_err(io)?;
    }
    Ok(Identity {
        cert: Pem::File(cert),
        key: Pem::File(key),
    })
}

/// A server's certificate, read again when its files change.
struct Files {
    identity: Identity,
    provider: Arc<CryptoProvider>,
    /// The key last loaded, and when its two files had last changed then.
    loaded: Mutex<Option<(Stamps, Arc<CertifiedKey>)>>,
}

type Stamps = (Option<SystemTime>, Option<SystemTime>);

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("identity", &self.identity)
            .finish()
    }
}

impl Files {
    fn load(&self) -> Result<Arc<CertifiedKey>> {
        let stamps = (self.identity.cert.stamp(), self.identity.key.stamp());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, key)) = &*loaded {
            if *at == stamps {
                return Ok(key.clone());
            }
        }
        let (certs, key) = self.identity.load("server")?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| Error::invalid(format!("the server key: {e}")))?;
        let key = Arc::new(CertifiedKey::new(certs, signing));
        *loaded = Some((stamps, key.clone()));
        Ok(key)
    }
}

impl ResolvesServerCert for Files {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.load() {
            Ok(key) => Some(key),
            Err(e) => {
                crate::observe::log(crate::observe::Level::Warn, || {
                    format!("TLS handshake refused: {e}")
                });
                None
            }
        }
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections accepted on `listener`, each handshake on a task of its own (a slow
/// or silent client holds up no one). Failed handshakes are dropped, not reported: tonic
/// would end the server on an error. Stops accepting when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl tokio_stream::Stream<Item = io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let conn = match accepted {
                Ok((conn, _)) => conn,
                Err(_) => {
                    // Out of descriptors, most often: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = conn.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let accept = acceptor.accept(conn).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err((e, conn))) => {
                        crate::observe::log(crate::observe::Level::Debug, || {
                            format!("TLS handshake failed: {e}")
                        });
                        close_after_alert(conn).await;
                    }
                    Err(_) => crate::observe::log(crate::observe::Level::Debug, || {
                        "TLS handshake timed out".to_string()
                    }),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Closes a connection whose handshake failed, after the alert that says why: its write
/// side first, then what the client sent meanwhile is read and dropped (for at most a
/// second). Dropped with unread data, the socket would be reset, and a TLS 1.3 client —
/// which sends its first request before it learns that its certificate was refused —
/// would then often see the reset instead of the alert ("bad certificate").
async fn close_after_alert(mut conn: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if conn.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// One DER element: (tag, content, what follows it).
pub(crate) fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &d| (acc << 8) | d as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The fields of a DER certificate that etcd looks at: the contents of its validity, its
/// subject and its subject public key info.
struct Fields<'a> {
    validity: &'a [u8],
    subject: &'a [u8],
    public_key_info: &'a [u8],
}

fn fields(der: &[u8]) -> Option<Fields<'_>> {
    const SEQUENCE: u8 = 0x30;
    let (_, cert, _) = der_element(der).filter(|t| t.0 == SEQUENCE)?;
    let (_, tbs, _) = der_element(cert).filter(|t| t.0 == SEQUENCE)?;
    // version [0] (optional), serial, signature, issuer, validity, subject, key info.
    let mut rest = tbs;
    let mut next = || {
        let (tag, content, after) = der_element(rest)?;
        rest = after;
        Some((tag, content))
    };
    let mut field = next()?;
    if field.0 == 0xa0 {
        field = next()?;
    }
    let _serial = field;
    let (_signature, _issuer, (_, validity)) = (next()?, next()?, next()?);
    let (_, subject) = next()?;
    let (_, public_key_info) = next()?;
    Some(Fields {
        validity,
        subject,
        public_key_info,
    })
}

/// The contents of a DER certificate's SubjectPublicKeyInfo.
pub(crate) fn public_key_info(der: &[u8]) -> Option<&[u8]> {
    fields(der).map(|f| f.public_key_info)
}

/// Whether `now` (seconds since the epoch) is within a DER certificate's validity.
fn valid_at(der: &[u8], now: u64) -> bool {
    let times = || {
        let (tag, before, rest) = der_element(fields(der)?.validity)?;
        let before = der_time(tag, before)?;
        let (tag, after, _) = der_element(rest)?;
        Some((before, der_time(tag, after)?))
    };
    times().is_some_and(|(before, after)| before <= now && now <= after)
}

/// A DER UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as seconds
/// since the epoch.
fn der_time(tag: u8, text: &[u8]) -> Option<u64> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()
}

/// The subject's common name of a DER certificate (what etcd takes as the user with
/// `--client-cert-auth`); None when it has none or is not DER.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = fields(der)?.subject;
    while let Some((_, set, rest)) = der_element(rdns) {
        rdns = rest;
        let mut attrs = set;
        while let Some((_, attr, rest)) = der_element(attrs) {
            attrs = rest;
            let (_, oid, value) = der_element(attr)?;
            if oid == CN {
                let (_, text, _) = der_element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_name_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "etcd");
        p.distinguished_name.push(rcgen::DnType::CommonName, "app");
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(super::common_name(cert.der()).as_deref(), Some("app"));
        assert_eq!(super::common_name(b"not a certificate"), None);
    }

    #[test]
    fn validity_of_a_certificate() {
        // 1 January 2000 and 2050 (GeneralizedTime from 2050 on, UTCTime before).
        const Y2000: u64 = 946_684_800;
        const Y2050: u64 = 2_524_608_000;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2050, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        assert!(super::valid_at(cert.der(), Y2000));
        assert!(super::valid_at(cert.der(), Y2050));
        assert!(!super::valid_at(cert.der(), Y2000 - 1));
        assert!(!super::valid_at(cert.der(), Y2050 + 1));
        assert!(!super::valid_at(b"not a certificate", Y2000));
        assert_eq!(super::der_time(0x17, b"000229120000Z"), Some(951_825_600));
        assert_eq!(super::der_time(0x18, b"19700101000001Z"), Some(1));
        assert_eq!(super::der_time(0x17, b"7001010000Z"), None);
    }
}
