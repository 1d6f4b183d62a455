//! `etcdc_client`: a connection to an etcd cluster, and its options.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::completion::{begin, etcdc_cq, etcdc_op, Answer, Runner, Then};
use super::guard::{bytes, c_str, free_box, guard, new_boxed, opt_c_str, opts_or, out, set};
use super::handle::Table;
use super::status::etcdc_status;
use crate::api::{deadline_in, Deadline};
use crate::error::{Error, Result};
use crate::remote::{parse_endpoints, ClientTls, Credentials, Identity, Pem, Remote, RemoteConfig};
use crate::Etcd;

/// A client of an etcd cluster. Safe to use from any thread. Free with `etcdc_client_free`.
pub struct etcdc_client {
    _opaque: [u8; 0],
}

/// Options for `etcdc_client_connect`. Create with `etcdc_client_options_new`.
pub struct etcdc_client_options {
    connect_timeout: Duration,
    timeout: Duration,
    tls: Option<ClientTls>,
    credentials: Option<Credentials>,
}

impl Default for etcdc_client_options {
    fn default() -> Self {
        etcdc_client_options {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
        }
    }
}

fn pem_file(p: *const c_char, name: &str) -> Result<Option<Pem>> {
    Ok(opt_c_str(p, name)?.map(|f| Pem::File(f.into())))
}

fn pem_text(p: *const u8, len: usize, name: &str) -> Result<Option<Pem>> {
    (!p.is_null())
        .then(|| bytes(p, len, name).map(|b| Pem::Text(b.to_vec())))
        .transpose()
}

fn identity(cert: Option<Pem>, key: Option<Pem>) -> Result<Option<Identity>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(Identity { cert, key })),
        (None, None) => Ok(None),
        _ => Err(Error::invalid(
            "a client certificate and its key go together: give both or neither",
        )),
    }
}

impl etcdc_client_options {
    /// The default deadline of a call.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.timeout
    }
}

pub(crate) struct Client {
    pub etcd: Arc<dyn Etcd>,
    pub timeout: Duration,
    pub rt: Handle,
    /// Asynchronous operations in flight, canceled when the client is freed.
    pub inflight: Arc<super::completion::Inflight>,
    /// A remote client's settings, for the connection a driven queue makes of its own; None
    /// for a client of the embedded node.
    pub remote: Option<RemoteConfig>,
}

pub(crate) static CLIENTS: Table<Client> = Table::new(1, "client");

impl Client {
    /// Runs a call on the runtime from the calling (non-runtime) thread.
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The deadline for a call: `timeout_ms` from now, or the client's default for 0.
    pub fn deadline(&self, timeout_ms: i64) -> Result<Deadline> {
        let timeout = match timeout_ms {
            0 => self.timeout,
            ms if ms > 0 => Duration::from_millis(ms as u64),
            ms => {
                return Err(Error::invalid(format!(
                    "timeout_ms must not be negative, got {ms}"
                )))
            }
        };
        Ok(deadline_in(timeout))
    }

    /// The deadline for a call that waits for others (a lock, a campaign, a dequeue):
    /// as `deadline`, and a negative `timeout_ms` waits without limit.
    pub fn wait_deadline(&self, timeout_ms: i64) -> Result<Deadline> {
        if timeout_ms < 0 {
            return Ok(deadline_in(Duration::from_secs(100 * 365 * 24 * 3600)));
        }
        self.deadline(timeout_ms)
    }
}

fn positive_ms(ms: i64, what: &str) -> Result<Duration> {
    if ms <= 0 {
        return Err(Error::invalid(format!(
            "{what} must be positive, got {ms} ms"
        )));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// New client options: connect timeout 2 s, call timeout 5 s. Free with
/// `etcdc_client_options_free`.
#[no_mangle]
pub extern "C" fn etcdc_client_options_new() -> *mut etcdc_client_options {
    new_boxed()
}

/// Frees client options. NULL does nothing.
#[no_mangle]
pub extern "C" fn etcdc_client_options_free(opts: *mut etcdc_client_options) {
    free_box(opts)
}

/// How long to wait for a TCP connection to one member before trying the next (ms, > 0).
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_connect_timeout_ms(
    opts: *mut etcdc_client_options,
    timeout_ms: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.connect_timeout = positive_ms(timeout_ms, "connect timeout")?;
        Ok(())
    })
}

/// The deadline of every call that does not set its own (ms, > 0). Retries and failover to
/// other members happen within it.
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_timeout_ms(
    opts: *mut etcdc_client_options,
    timeout_ms: i64,
) -> etcdc_status {
    set(opts, |o| {
        o.timeout = positive_ms(timeout_ms, "call timeout")?;
        Ok(())
    })
}

/// TLS from files, read for every new connection (so a rotated certificate is picked up
/// without a new client; checked when the client is created): `ca_file` verifies the servers (NULL: the system's roots); `cert_file`
/// and `key_file` (both or neither) are the client's certificate and key for servers that
/// ask for one (etcd's `--client-cert-auth`). All PEM. Needs `https://` endpoints.
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_tls_files(
    opts: *mut etcdc_client_options,
    ca_file: *const c_char,
    cert_file: *const c_char,
    key_file: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        let identity = identity(
            pem_file(cert_file, "cert_file")?,
            pem_file(key_file, "key_file")?,
        )?;
        let tls = o.tls.get_or_insert_with(ClientTls::default);
        tls.ca = pem_file(ca_file, "ca_file")?;
        tls.identity = identity;
        Ok(())
    })
}

/// TLS from PEM text in memory (copied), as `etcdc_client_options_set_tls_files`: NULL for
/// what is not given.
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_tls_pem(
    opts: *mut etcdc_client_options,
    ca: *const u8,
    ca_len: usize,
    cert: *const u8,
    cert_len: usize,
    key: *const u8,
    key_len: usize,
) -> etcdc_status {
    set(opts, |o| {
        let identity = identity(
            pem_text(cert, cert_len, "cert")?,
            pem_text(key, key_len, "key")?,
        )?;
        let tls = o.tls.get_or_insert_with(ClientTls::default);
        tls.ca = pem_text(ca, ca_len, "ca")?;
        tls.identity = identity;
        Ok(())
    })
}

/// The name the servers' certificates must carry when it is not the endpoints' host (an
/// endpoint given by IP address whose certificate names a host). NULL: the endpoint's host.
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_tls_server_name(
    opts: *mut etcdc_client_options,
    name: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.tls.get_or_insert_with(ClientTls::default).server_name =
            opt_c_str(name, "name")?.map(str::to_string);
        Ok(())
    })
}

/// The user for a cluster with authentication on (etcd's `--user name:password`): the
/// client exchanges them for a token before its first call and renews the token whenever
/// the cluster stops taking it. A wrong password fails calls with `ETCDC_ERR_AUTH`; a key
/// the user may not touch, with `ETCDC_ERR_PERMISSION`. A cluster with authentication off
/// takes the calls as they are. NULL `user` forgets a user set before. Without a user, a
/// cluster with `--client-cert-auth` takes the user from the client certificate's common name.
#[no_mangle]
pub extern "C" fn etcdc_client_options_set_user(
    opts: *mut etcdc_client_options,
    user: *const c_char,
    password: *const c_char,
) -> etcdc_status {
    set(opts, |o| {
        o.credentials = match opt_c_str(user, "user")? {
            None => None,
            Some("") => return Err(Error::invalid("user must not be empty")),
            Some(user) => Some(Credentials {
                user: user.to_string(),
                password: c_str(password, "password")?.to_string(),
            }),
        };
        Ok(())
    })
}

/// Creates a client of the etcd cluster at `endpoints`: "http://host:port" entries separated
/// by commas ("https://" for TLS, with `etcdc_client_options_set_tls_*` or the system's
/// roots). `opts` may be NULL for the defaults; it is not consumed. Connections are made
/// lazily: an unreachable cluster is reported by the first call (`ETCDC_ERR_UNAVAILABLE`
/// within that call's deadline), so a service may start before etcd does.
#[no_mangle]
pub extern "C" fn etcdc_client_connect(
    endpoints: *const c_char,
    opts: *const etcdc_client_options,
    client_out: *mut *mut etcdc_client,
) -> etcdc_status {
    guard(|| {
        let out = out(client_out, "client_out")?;
        let endpoints = parse_endpoints(c_str(endpoints, "endpoints")?)?;
        let defaults = etcdc_client_options::default();
        let opts = opts_or(opts, &defaults);
        let rt = crate::runtime::handle()?;
        let config = RemoteConfig {
            endpoints,
            connect_timeout: opts.connect_timeout,
            tls: opts.tls.clone(),
            credentials: opts.credentials.clone(),
        };
        let remote = crate::runtime::within(&rt, || Remote::new(config.clone()))?;
        out.write(CLIENTS.insert(Client {
            etcd: Arc::new(remote),
            timeout: opts.timeout,
            rt,
            inflight: Arc::default(),
            remote: Some(config),
        }));
        Ok(())
    })
}

/// Frees a client. Its asynchronous operations still in flight complete with
/// `ETCDC_ERR_CANCELED`. Watches and lease keepers started from it keep working until they
/// are freed themselves. NULL does nothing; a handle already freed gives
/// `ETCDC_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn etcdc_client_free(client: *mut etcdc_client) -> etcdc_status {
    if client.is_null() {
        return etcdc_status::ETCDC_OK;
    }
    guard(|| {
        CLIENTS.remove(client)?.inflight.cancel_all();
        Ok(())
    })
}

/// What a client counts (`ETCDC_COUNTER_*`).
pub type etcdc_counter = u32;
/// Watch and keep-alive streams opened again after they broke.
pub const ETCDC_COUNTER_RECONNECTS: etcdc_counter = 0;
/// Watches re-created from their next revision on a new stream.
pub const ETCDC_COUNTER_WATCH_RESUMES: etcdc_counter = 1;
/// Keep-alive streams that broke.
pub const ETCDC_COUNTER_KEEPALIVE_FAILURES: etcdc_counter = 2;
/// Calls sent again to another member.
pub const ETCDC_COUNTER_RETRIES: etcdc_counter = 3;

/// The client's count of `which` since it was created; 0 for a bad handle or a client of
/// the embedded node (it has no connections to lose).
#[no_mangle]
pub extern "C" fn etcdc_client_counter(client: *const etcdc_client, which: etcdc_counter) -> u64 {
    super::guard::value(0, || {
        let Ok(c) = CLIENTS.get(client) else {
            return 0;
        };
        let s = c.etcd.counters();
        match which {
            ETCDC_COUNTER_RECONNECTS => s.reconnects,
            ETCDC_COUNTER_WATCH_RESUMES => s.watch_resumes,
            ETCDC_COUNTER_KEEPALIVE_FAILURES => s.keepalive_failures,
            ETCDC_COUNTER_RETRIES => s.retries,
            _ => 0,
        }
    })
}

/// Where an `_async` call completes: the queue, the caller's tag and the optional handle
/// out-pointer, as every `_async` export takes them.
pub(crate) struct Queued {
    pub cq: *const etcdc_cq,
    pub tag: *mut c_void,
    pub op_out: *mut *mut etcdc_op,
}

impl Queued {
    /// Starts `call` on the client's runtime, completing into `cq` with `tag`; the
    /// operation's handle goes to `op_out` when that is not NULL. Everything about the
    /// arguments was checked before: from here on, the only outcome is the completion.
    pub fn start<F>(self, c: &Client, call: F) -> Result<()>
    where
        F: Future<Output = Result<Answer>> + Send + 'static,
    {
        self.start_with(Runner::Runtime(&c.rt), c, call)
    }

    /// `start` with `runner`.
    fn start_with<F>(self, runner: Runner<'_>, c: &Client, call: F) -> Result<()>
    where
        F: Future<Output = Result<Answer>> + Send + 'static,
    {
        begin(
            runner,
            Some(&c.inflight),
            self.cq,
            self.tag,
            self.op_out,
            |running| Then::new(call, move |result| running.complete(result)),
        )
    }
}

/// Every `_async` export: `prepare` checks the arguments and builds the call on the caller's
/// thread (its error is the export's status, and then nothing completes); the call then runs
/// on the runtime — a driven queue's own, over its own connection, for a remote client — and
/// completes into `cq` with `tag`, its result the completion's answer.
/// The blocking twin runs the same `prepare` through `wait`.
pub(crate) fn launch<P, Fut, R>(
    client: *const etcdc_client,
    cq: *const etcdc_cq,
    tag: *mut c_void,
    op_out: *mut *mut etcdc_op,
    prepare: P,
) -> etcdc_status
where
    P: FnOnce(&Client, Arc<dyn crate::api::Etcd>) -> Result<Fut>,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: std::any::Any + Send,
{
    guard(|| {
        let c = CLIENTS.get(client)?;
        let driver = super::completion::driver(cq)?;
        let local = match &driver {
            Some(driver) => driver.local(&c)?.map(|etcd| (Runner::Driven(driver), etcd)),
            None => None,
        };
        let (runner, etcd) = local.unwrap_or((Runner::Runtime(&c.rt), c.etcd.clone()));
        let call = prepare(&c, etcd)?;
        Queued { cq, tag, op_out }.start_with(
            runner,
            &c,
            Then::new(call, |result: Result<R>| result.map(Answer::new)),
        )
    })
}

/// Every blocking export with an `_async` twin: the same `prepare`, waited for on this thread.
pub(crate) fn wait<P, Fut, R>(client: *const etcdc_client, prepare: P) -> Result<R>
where
    P: FnOnce(&Client, Arc<dyn crate::api::Etcd>) -> Result<Fut>,
    Fut: Future<Output = Result<R>>,
{
    let c = CLIENTS.get(client)?;
    let call = prepare(&c, c.etcd.clone())?;
    c.block(call)
}
