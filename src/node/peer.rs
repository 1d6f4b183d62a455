//! Members reaching each other over the network: the peer service (proto/etcdc/peer.proto)
//! on each member's peer URL carries Raft's messages and client calls forwarded to the
//! leader; `PeerNetwork` is the client side, one lazily connected HTTP/2 channel per peer.
//! A peer that cannot be reached is `Unreachable` to Raft (it backs off), never a hang.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::member::{Member, Peers, REMOVED};
use super::raft::{
    pack, pack_after, unpack, Command, LeaderAppend, NodeId, Outcome, TypeConfig, MAX_SEND_BYTES,
};
use crate::error::{Error, ErrorKind, Result};
use crate::observe::{log, Level};
use crate::pb::etcdcpeer::peer_client::PeerClient;
use crate::pb::etcdcpeer::peer_server::{Peer, PeerServer};
use crate::pb::etcdcpeer::Blob;

/// A peer's answer before its member runs: nothing it was sent reached Raft.
const STARTING: &str = "the member is starting";

/// A message a stream ended before taking: it never left this member.
const UNSENT: &str = "the stream to the peer ended before the message was sent";

/// How long a forwarded client call may take at most.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);

/// How often a peer whose messages arrive is asked again whether it takes this member's
/// certificate: once it refused it, once it took it; how long a probe may take
/// (`PeerNetwork::admits`).
const PROBE_REFUSED: Duration = Duration::from_secs(1);
const PROBE_ACCEPTED: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The client side: every member's peer address, and a channel to each.
#[derive(Clone)]
pub struct PeerNetwork {
    addrs: Arc<BTreeMap<NodeId, String>>,
    /// A channel to each peer, with the address it was made for and the last TLS alert
    /// the peer sent on it.
    channels: Arc<Mutex<HashMap<NodeId, PeerChannel>>>,
    /// The member's Raft, for the addresses of members added after the start.
    raft: Arc<OnceLock<super::raft::Raft>>,
    /// The member itself, told when a peer answers that the cluster removed it.
    member: Arc<OnceLock<std::sync::Weak<Member>>>,
    /// TLS to peers at `https://` URLs (etcd's `--peer-*` flags).
    tls: Option<Arc<crate::tls::ClientTls>>,
    /// When each peer last answered a Raft message.
    contact: Arc<Mutex<HashMap<NodeId, Contact>>>,
    /// What each TLS peer last said of this member's certificate (`admits`).
    certs: Arc<Mutex<HashMap<NodeId, Cert>>>,
    /// Streams no exchange is using, by peer and kind, with the address each was opened
    /// to. openraft makes a link per peer for every leadership confirmation (each round of
    /// linearizable reads), and each forwarded batch is a call; taking an open stream spares
    /// a stream's opening and closing each time (its headers both ways, the peer's task).
    idle: Arc<Mutex<Idle>>,
    /// Peers without `CallStream` (an older build): their client calls go one per call.
    unary_calls: Arc<Mutex<std::collections::HashSet<NodeId>>>,
    /// Per peer, how far its log matches this leader's, and the AppendEntries sent to it
    /// before the leader's own sync (`send_early`).
    early: Arc<Mutex<HashMap<NodeId, Early>>>,
}

/// Idle streams by peer and kind, each with the address it was opened to.
type Idle = HashMap<(NodeId, Kind), Vec<(String, PeerStream)>>;

/// What a stream to a peer carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    AppendEntries,
    /// Client calls to the leader (`Method::tag`).
    Calls,
}

type Called = std::result::Result<Vec<u8>, Status>;

/// What `send_early` knows of one peer.
#[derive(Default)]
struct Early {
    /// The vote and last log id of the peer's last successful AppendEntries answer, and the
    /// address it came from: the peer's log holds this leader's up to there.
    matched: Option<(Vote<NodeId>, Option<LogId<NodeId>>, String)>,
    /// An AppendEntries sent early, not yet taken by openraft's request for it.
    sent: Option<EarlySent>,
    /// An early AppendEntries is on its way: no other goes meanwhile (a peer that stopped
    /// answering is not sent one per write).
    flying: bool,
}

/// An AppendEntries sent before openraft asked for it, and its answer to come.
struct EarlySent {
    vote: Vote<NodeId>,
    prev: Option<LogId<NodeId>>,
    /// The last entry it carried (entries are consecutive: with `prev`, which ones).
    last: Option<LogId<NodeId>>,
    answer: tokio::sync::oneshot::Receiver<Called>,
}

/// How long an early AppendEntries may wait for its answer (openraft's own request for the
/// same entries gives up sooner, at its heartbeat interval, and is sent again).
const EARLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The idle streams kept per peer and kind: as many as confirmation rounds, or forwarded
/// batches, overlap.
const IDLE_STREAMS: usize = 4;

type Alerts = Arc<Mutex<Option<tokio_rustls::rustls::AlertDescription>>>;

/// What `PeerNetwork::admits` answers for peer `from` given its certificate's verdict.
fn refusal(from: NodeId, cert: Option<Cert>) -> std::result::Result<(), Status> {
    match cert {
        Some(Cert::Refused { alert, .. }) => Err(Status::permission_denied(format!(
            "member {from:x} refuses this member's certificate ({}): its Raft messages \
             are not answered until it accepts it",
            go_words(alert)
        ))),
        _ => Ok(()),
    }
}

/// A channel to a peer: the address it was made for, the channel, its last TLS alert.
type PeerChannel = (String, Channel, Alerts);

/// What this member knows of a peer's reachability (etcd's `ActiveSince`).
enum Contact {
    /// It answered last, at this moment.
    Active(std::time::Instant),
    /// The last call failed; with the TLS alert the peer sent, if it sent one.
    Inactive(Option<tokio_rustls::rustls::AlertDescription>),
}

/// What a TLS peer said of this member's certificate, on the last call that told: one it
/// answered, or one it refused with a TLS alert (other failures tell nothing of it).
/// `at`: when it last told, or was last asked.
#[derive(Clone, Copy)]
enum Cert {
    Accepted {
        at: std::time::Instant,
    },
    Refused {
        alert: tokio_rustls::rustls::AlertDescription,
        at: std::time::Instant,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Vote,
    AppendEntries,
    InstallSnapshot,
    Forward,
    ReadIndex,
    LeaseTtl,
    Campaign,
    Probe,
}

impl Method {
    /// The client calls `CallStream` carries, by their number there.
    const CALLS: [Method; 4] = [
        Method::Forward,
        Method::ReadIndex,
        Method::LeaseTtl,
        Method::Campaign,
    ];

    /// A client call's number in a `CallStream` message (proto/etcdc/peer.proto).
    fn tag(self) -> u8 {
        Method::CALLS
            .iter()
            .position(|&m| m == self)
            .map_or(0, |i| i as u8 + 1)
    }
}

impl PeerNetwork {
    /// `addrs`: member id → peer URL (`http://host:port`, or `https://` with `tls`).
    pub fn new(addrs: BTreeMap<NodeId, String>, tls: Option<crate::tls::ClientTls>) -> Self {
        PeerNetwork {
            tls: tls.map(Arc::new),
            addrs: Arc::new(addrs),
            channels: Arc::default(),
            raft: Arc::default(),
            member: Arc::default(),
            contact: Arc::default(),
            certs: Arc::default(),
            idle: Arc::default(),
            unary_calls: Arc::default(),
            early: Arc::default(),
        }
    }

    /// Sends a leader's new entries, before its own sync, to each peer whose log matches up
    /// to the entry before them, unless more than one AppendEntries would carry them.
    /// openraft's own request for the same entries (same vote, previous and last entry)
    /// then takes the answer instead of sending them again (`take_early`): the followers
    /// sync while the leader does. A follower answers an AppendEntries only once what it
    /// says it holds is synced, and the leader counts its own copy only once synced, so an
    /// entry still commits only once a majority holds it on disk (the Raft thesis, 10.2.1:
    /// a leader may write its log in parallel with replicating it). The early request may
    /// carry an older commit index than openraft's; the follower learns the newer one from
    /// the next message. Not sent: what openraft would split (over `MAX_SEND_BYTES`).
    /// Whether the leader has followers it replicates to (none in a one-member cluster).
    pub fn send_early(&self, append: LeaderAppend<'_>) -> bool {
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        let followed = !early.is_empty();
        let mut payload = None;
        for (&id, peer) in early.iter_mut() {
            let Some((vote, matched, addr)) = &peer.matched else {
                continue;
            };
            if *vote != append.vote || *matched != append.prev || peer.flying {
                continue;
            }
            let payload = payload.get_or_insert_with(|| {
                let bytes = pack(&AppendEntriesRequest::<TypeConfig> {
                    vote: append.vote,
                    prev_log_id: append.prev,
                    entries: append.entries.to_vec(),
                    leader_commit: append.committed,
                });
                (bytes.len() <= MAX_SEND_BYTES).then_some(bytes)
            });
            let Some(payload) = payload.clone() else {
                return followed;
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            peer.flying = true;
            peer.sent = Some(EarlySent {
                vote: append.vote,
                prev: append.prev,
                last: append.entries.last().map(|e| e.log_id),
                answer: rx,
            });
            let (net, addr) = (self.clone(), addr.clone());
            tokio::spawn(async move {
                let called = net
                    .exchange(id, &addr, Kind::AppendEntries, None, payload, EARLY_TIMEOUT)
                    .await
                    .map(|(answer, stream)| {
                        net.put_idle(id, &addr, Kind::AppendEntries, stream);
                        answer
                    });
                {
                    let mut early = net.early.lock().unwrap_or_else(|p| p.into_inner());
                    let peer = early.entry(id).or_default();
                    peer.flying = false;
                    // Nothing more goes early until openraft's own requests get through.
                    if called.is_err() {
                        peer.matched = None;
                    }
                }
                let _ = tx.send(called);
            });
        }
        followed
    }

    /// The answer to come for an early AppendEntries that is `rpc` but for its commit
    /// index. An early one that is not `rpc` is dropped once a request with entries goes:
    /// openraft sends those in order, so it will not ask for it any more.
    fn take_early(
        &self,
        id: NodeId,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Option<tokio::sync::oneshot::Receiver<Called>> {
        if rpc.entries.is_empty() {
            return None;
        }
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        let sent = early.get_mut(&id)?.sent.take()?;
        (sent.vote == rpc.vote
            && sent.prev == rpc.prev_log_id
            && sent.last == rpc.entries.last().map(|e| e.log_id))
        .then_some(sent.answer)
    }

    /// Notes how far `id`'s log matches, from its answer to `rpc`.
    fn matched(
        &self,
        id: NodeId,
        addr: &str,
        rpc: &AppendEntriesRequest<TypeConfig>,
        answer: &std::result::Result<
            AppendEntriesResponse<NodeId>,
            RPCError<NodeId, BasicNode, RaftError<NodeId>>,
        >,
    ) {
        let matched = match answer {
            Ok(AppendEntriesResponse::Success) => {
                Some(rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id))
            }
            Ok(AppendEntriesResponse::PartialSuccess(m)) => Some(*m),
            _ => None,
        };
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        let peer = early.entry(id).or_default();
        let known = peer.matched.take().map(|(_, _, a)| a).filter(|a| a == addr);
        peer.matched = matched.map(|m| (rpc.vote, m, known.unwrap_or_else(|| addr.to_string())));
    }

    /// One exchange with `id` within `timeout`, on `stream`, an idle one of `kind`, or a
    /// new one; the stream comes back only once the exchange was answered, so no late
    /// answer is taken for another request's. A failed exchange drops `id`'s idle streams.
    /// A message the stream ended before taking is refused as `UNSENT`.
    async fn exchange(
        &self,
        id: NodeId,
        addr: &str,
        kind: Kind,
        stream: Option<PeerStream>,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<(Vec<u8>, PeerStream), Status> {
        let exchange = async {
            let mut stream = match stream.or_else(|| self.take_idle(id, addr, kind)) {
                Some(s) => s,
                None => {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let mut client = PeerClient::new(self.channel(id, addr)?)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX);
                    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
                    let rx = match kind {
                        Kind::AppendEntries => client.append_entries_stream(requests).await,
                        Kind::Calls => client.call_stream(requests).await,
                    }?
                    .into_inner();
                    PeerStream { tx, rx }
                }
            };
            stream
                .tx
                .send(Blob { data: payload })
                .await
                .map_err(|_| Status::unavailable(UNSENT))?;
            let closed = || Status::unavailable("the peer closed the stream");
            let answer = stream.rx.message().await?.ok_or_else(closed)?;
            Ok((answer.data, stream))
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("AppendEntries timed out")));
        if answer.is_err() {
            self.drop_idle(id);
        }
        answer
    }

    /// An open stream of `kind` to `id` at `addr` that nothing is using.
    fn take_idle(&self, id: NodeId, addr: &str, kind: Kind) -> Option<PeerStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let streams = idle.get_mut(&(id, kind))?;
        streams.retain(|(a, _)| a == addr);
        streams.pop().map(|(_, s)| s)
    }

    /// Keeps a stream, answered and idle, for the next exchange with `id`.
    fn put_idle(&self, id: NodeId, addr: &str, kind: Kind, stream: PeerStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let streams = idle.entry((id, kind)).or_default();
        if streams.len() < IDLE_STREAMS {
            streams.push((addr.to_string(), stream));
        }
    }

    /// Drops the idle streams to `id`: one of them failed, so its connection is gone.
    fn drop_idle(&self, id: NodeId) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(peer, _), _| *peer != id);
    }

    /// Lets the network find members added later in the membership, and tell the member
    /// when a peer says the cluster removed it.
    pub fn set_member(&self, member: &Arc<Member>) {
        let _ = self.raft.set(member.raft().clone());
        let _ = self.member.set(Arc::downgrade(member));
    }

    /// The TLS alert peer `id` last sent on its connection after a handshake (taken).
    fn alert(&self, id: NodeId) -> Option<tokio_rustls::rustls::AlertDescription> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let (_, _, alerts) = channels.get(&id)?;
        let taken = alerts.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken
    }

    /// What a call to peer `target` tells of its reachability.
    fn record(&self, target: NodeId, called: &std::result::Result<Vec<u8>, Status>) {
        // As etcd's transport: active from an answer on, inactive from a failure on.
        // Logged when it changes (and when the peer's TLS refusal does), as etcd logs a
        // peer becoming active or inactive.
        let now = match called {
            Ok(_) => Contact::Active(std::time::Instant::now()),
            Err(s) => Contact::Inactive(self.alert(target).or_else(|| tls_alert(s))),
        };
        let mut contact = self.contact.lock().unwrap_or_else(|p| p.into_inner());
        match (contact.get(&target), &now, called) {
            (Some(Contact::Inactive(_)), Contact::Active(_), _) => {
                log(Level::Info, || format!("peer {target:x} became active"))
            }
            (Some(Contact::Inactive(was)), Contact::Inactive(alert), _)
                if alert.is_none() || was == alert => {}
            (_, Contact::Inactive(alert), Err(s)) => log(Level::Warn, || {
                let why = alert.map_or_else(|| s.message().to_string(), go_words);
                format!("peer {target:x} became inactive (message send to peer failed): {why}")
            }),
            _ => {}
        }
        if self.tls.is_some() {
            let told = match &now {
                Contact::Active(at) => Some(Cert::Accepted { at: *at }),
                Contact::Inactive(Some(alert)) => Some(Cert::Refused {
                    alert: *alert,
                    at: std::time::Instant::now(),
                }),
                Contact::Inactive(None) => None,
            };
            if let Some(cert) = told {
                self.certs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(target, cert);
            }
        }
        contact.insert(target, now);
    }

    /// Whether this member answers Raft messages from peer `from`: not while `from` refuses
    /// this member's certificate. etcd answers a peer's message only over a connection it
    /// dials itself, so a member whose peers cannot reach it gets no votes nor
    /// acknowledgements; the node answers on the caller's connection, and checks the other
    /// way here instead: with peer TLS, a peer that never answered this member is probed
    /// first, and its messages are refused while the last TLS alert it sent stands. The
    /// verdict is asked again when messages arrive after `PROBE_REFUSED` (refused) or
    /// `PROBE_ACCEPTED` (accepted: a peer restarted with other flags). A probe that fails
    /// otherwise (a timeout, a refused connection) tells nothing of the certificate and
    /// keeps the verdict, or admits a peer never asked: partitions stay Raft's business.
    pub(crate) async fn admits(&self, from: NodeId) -> std::result::Result<(), Status> {
        if self.tls.is_none() {
            return Ok(());
        }
        {
            let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cert) = certs.get_mut(&from) {
                let (at, every) = match cert {
                    Cert::Accepted { at } => (at, PROBE_ACCEPTED),
                    Cert::Refused { at, .. } => (at, PROBE_REFUSED),
                };
                if at.elapsed() < every {
                    // The common case: one lock, the standing verdict.
                    return refusal(from, Some(*cert));
                }
                // Asked now: the messages meanwhile keep the last verdict.
                *at = std::time::Instant::now();
            }
        }
        let addr = self
            .addr(from)
            .map_err(|e| Status::unavailable(e.message))?;
        let called = match self
            .call(from, &addr, Method::Probe, Vec::new(), PROBE_TIMEOUT)
            .await
        {
            // A build without the probe got as far as answering.
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Vec::new()),
            called => called,
        };
        self.record(from, &called);
        let cert = self
            .certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&from)
            .copied();
        refusal(from, cert)
    }

    fn channel(&self, id: NodeId, addr: &str) -> std::result::Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.get(&id) {
            Some((a, c, _)) if a == addr => return Ok(c.clone()),
            _ => {}
        }
        let bad =
            |e: &dyn std::fmt::Display| Status::invalid_argument(format!("peer URL {addr:?}: {e}"));
        let tls = match (addr.starts_with("https://"), &self.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => return Err(bad(&"an https:// peer needs the --peer-* TLS flags")),
        };
        if let Some(path) = crate::node::launch::unix_path(addr) {
            let channel = Endpoint::from_static("http://unix.socket")
                .connect_timeout(Duration::from_millis(500))
                .connect_with_connector_lazy(UnixConnector(path.into()));
            let alerts = Alerts::default();
            channels.insert(id, (addr.to_string(), channel.clone(), alerts));
            return Ok(channel);
        }
        // TLS is the connector's, so tonic connects to the plain form of the URL.
        let alerts = Alerts::default();
        let channel = Endpoint::from_shared(addr.replacen("https://", "http://", 1))
            .map_err(|e| bad(&e))?
            .origin(addr.parse().map_err(|e| bad(&e))?)
            .connect_timeout(Duration::from_millis(500))
            .connect_with_connector_lazy(crate::tls::Connector {
                tls,
                timeout: Duration::from_millis(500),
                alerts: Some(alerts.clone()),
            });
        channels.insert(id, (addr.to_string(), channel.clone(), alerts));
        Ok(channel)
    }

    async fn call(
        &self,
        id: NodeId,
        addr: &str,
        method: Method,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<Vec<u8>, Status> {
        let mut client = PeerClient::new(self.channel(id, addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut req = Request::new(Blob { data: payload });
        req.set_timeout(timeout);
        let resp = match method {
            Method::Vote => client.vote(req).await,
            Method::AppendEntries => client.append_entries(req).await,
            Method::InstallSnapshot => client.install_snapshot(req).await,
            Method::Forward => client.forward(req).await,
            Method::ReadIndex => client.read_index(req).await,
            Method::LeaseTtl => client.lease_ttl(req).await,
            Method::Campaign => client.campaign(req).await,
            Method::Probe => client.probe(req).await,
        }?;
        Ok(resp.into_inner().data)
    }

    /// Member `id`'s peer URL: the membership's (members added or updated after the start),
    /// else the one it was started with.
    fn addr(&self, id: NodeId) -> Result<String> {
        self.raft
            .get()
            .and_then(|r| {
                let m = r.metrics().borrow().membership_config.clone();
                m.membership().get_node(&id).map(|n| n.addr.clone())
            })
            .or_else(|| self.addrs.get(&id).cloned())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("no address for member {id:x}"),
                )
            })
    }

    /// A client call on `leader` (over an idle stream of calls, or a new one): its answer,
    /// or Unavailable when it cannot be reached — NoLeader when the call provably never
    /// reached its member (the connection failed, the stream ended before taking it, or
    /// the member had not started yet), InvalidArgument when the member could not read it.
    async fn client_call<T: DeserializeOwned>(
        &self,
        leader: NodeId,
        method: Method,
        args: &impl Serialize,
    ) -> Result<T> {
        let addr = self.addr(leader)?;
        let unary = || self.unary_calls.lock().unwrap_or_else(|p| p.into_inner());
        let called = if unary().contains(&leader) {
            self.call(leader, &addr, method, pack(args), FORWARD_TIMEOUT)
                .await
        } else {
            let message = pack_after(&[method.tag()], args);
            let called = self
                .exchange(leader, &addr, Kind::Calls, None, message, FORWARD_TIMEOUT)
                .await
                .map(|(answer, stream)| {
                    self.put_idle(leader, &addr, Kind::Calls, stream);
                    answer
                });
            match called {
                // An older build: nothing was sent.
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    unary().insert(leader);
                    self.call(leader, &addr, method, pack(args), FORWARD_TIMEOUT)
                        .await
                }
                called => called,
            }
        };
        let bytes = called.map_err(|s| {
            let why = format!("member {leader:x} at {addr}: {}", s.message());
            if crate::remote::never_sent(&s) || s.message() == STARTING || s.message() == UNSENT {
                super::member::not_proposed(why)
            } else if s.code() == tonic::Code::InvalidArgument {
                // The member could not read the call (`answer_call`), so did nothing with it:
                // a build that does not know what was sent.
                Error::new(ErrorKind::InvalidArgument, why)
            } else {
                Error::new(ErrorKind::Unavailable, why)
            }
        })?;
        unpack::<std::result::Result<T, Error>>(&bytes)?
    }
}

#[async_trait::async_trait]
impl Peers for PeerNetwork {
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome> {
        self.client_call(leader, Method::Forward, &cmd).await
    }

    async fn read_index(&self, leader: NodeId) -> Result<u64> {
        self.client_call(leader, Method::ReadIndex, &()).await
    }

    async fn lease_ttl(&self, leader: NodeId, id: i64, refresh: bool) -> Result<i64> {
        self.client_call(leader, Method::LeaseTtl, &(id, refresh))
            .await
    }

    async fn campaign(&self, id: NodeId) -> Result<()> {
        self.client_call(id, Method::Campaign, &()).await
    }

    async fn reads(&self, id: NodeId) -> Result<u32> {
        let addr = self.addr(id)?;
        match self
            .call(id, &addr, Method::Probe, Vec::new(), PROBE_TIMEOUT)
            .await
        {
            // A build before entry versions answers the probe with nothing, or has none.
            Ok(answer) => Ok(unpack(&answer).unwrap_or(0)),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(0),
            Err(s) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("member {id:x} at {addr}: {}", s.message()),
            )),
        }
    }

    fn last_contact(&self, id: NodeId) -> Option<std::time::Instant> {
        let contact = self.contact.lock().unwrap_or_else(|p| p.into_inner());
        match contact.get(&id) {
            Some(Contact::Active(at)) => Some(*at),
            _ => None,
        }
    }

    async fn tell_removed(&self, id: NodeId, addr: &str) {
        let cmd = Command::Membership(super::raft::MemberChange::Removed(id));
        let _ = self
            .call(
                id,
                addr,
                Method::Forward,
                pack(&cmd),
                Duration::from_secs(2),
            )
            .await;
    }
}

/// One member's link to a peer, for Raft.
pub struct PeerLink {
    net: PeerNetwork,
    target: NodeId,
    addr: String,
    /// The open AppendEntries stream, between exchanges. An exchange takes it and puts it
    /// back only once answered, so a failed or abandoned exchange (openraft drops the call at
    /// its timeout) leaves no answer behind to be taken for the next request's.
    stream: Option<PeerStream>,
    /// The peer has no AppendEntries stream (an older build): one call per request.
    unary: bool,
}

/// A stream to a peer: requests go in through `tx`, answers come in order.
struct PeerStream {
    tx: tokio::sync::mpsc::Sender<Blob>,
    rx: Streaming<Blob>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
            stream: None,
            unary: false,
        }
    }
}

impl PeerLink {
    #[allow(clippy::result_large_err)] // openraft's error type, as the trait returns it
    async fn rpc<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> std::result::Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let called = self
            .net
            .call(
                self.target,
                &self.addr,
                method,
                pack(req),
                option.hard_ttl(),
            )
            .await;
        self.answer(called)
    }

    /// One AppendEntries exchange on the link's stream (opened on first use), within
    /// `timeout`.
    async fn exchange(&mut self, payload: Vec<u8>, timeout: Duration) -> Called {
        let stream = self.stream.take();
        let (answer, stream) = self
            .net
            .exchange(
                self.target,
                &self.addr,
                Kind::AppendEntries,
                stream,
                payload,
                timeout,
            )
            .await?;
        self.stream = Some(stream);
        Ok(answer)
    }

    /// A peer's answer to a Raft message, and what it tells of the peer's reachability.
    #[allow(clippy::result_large_err)] // openraft's error type, as the trait returns it
    fn answer<Resp, E>(
        &self,
        called: std::result::Result<Vec<u8>, Status>,
    ) -> std::result::Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.net.record(self.target, &called);
        let bytes = called.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                RPCError::Unreachable(Unreachable::new(&s))
            }
            code => {
                if code == tonic::Code::FailedPrecondition && s.message() == REMOVED {
                    if let Some(m) = self.net.member.get().and_then(|m| m.upgrade()) {
                        m.mark_removed();
                    }
                }
                RPCError::Network(NetworkError::new(&s))
            }
        })?;
        let answer: std::result::Result<Resp, E> =
            unpack(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl Drop for PeerLink {
    /// The link's stream, if its last exchange was answered, serves the next link.
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.net
                .put_idle(self.target, &self.addr, Kind::AppendEntries, stream);
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        AppendEntriesResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId>>,
    > {
        if self.unary {
            return self.rpc(Method::AppendEntries, &rpc, &option).await;
        }
        let early = match self.net.take_early(self.target, &rpc) {
            Some(answer) => answer.await.ok().and_then(|a| a.ok()),
            None => None,
        };
        let called = match early {
            Some(answer) => Ok(answer),
            None => self.exchange(pack(&rpc), option.hard_ttl()).await,
        };
        match called {
            // An older build: nothing goes to it early (it has no stream to send it on).
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                self.unary = true;
                self.rpc(Method::AppendEntries, &rpc, &option).await
            }
            called => {
                let answer = self.answer(called);
                self.net.matched(self.target, &self.addr, &rpc, &answer);
                answer
            }
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
    {
        self.rpc(Method::Vote, &rpc, &option).await
    }
}

/// The server side: answers for the member once it has started.
#[derive(Clone)]
pub struct PeerService {
    member: Arc<OnceLock<Arc<Member>>>,
    /// This member's side of the links, asked whether a peer's Raft messages are answered.
    network: Arc<PeerNetwork>,
    /// Set when the server stops: open streams end (once the request being answered is),
    /// so that the server's graceful shutdown does not wait for peers that keep them open.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl PeerService {
    pub fn new(network: PeerNetwork) -> Self {
        PeerService {
            member: Arc::default(),
            network: Arc::new(network),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl PeerService {
    /// Hands the started member to the service (peers' calls before that are Unavailable).
    pub fn set_member(&self, member: Arc<Member>) {
        let _ = self.member.set(member);
    }

    fn member(&self) -> std::result::Result<&Arc<Member>, Status> {
        self.member
            .get()
            .ok_or_else(|| Status::unavailable(STARTING))
    }

    /// A stream whose requests are answered by `answer` in turn, on the stream's own task
    /// (no hop per message). Once the server stops, the request being answered is answered
    /// and the stream ends.
    fn in_turn<F, Fut>(
        &self,
        r: Request<Streaming<Blob>>,
        answer: F,
    ) -> Response<super::grpc::BoxStream<Blob>>
    where
        F: Fn(Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, Status>> + Send + 'static,
    {
        let requests = super::grpc::Until::new(r.into_inner(), self.stopping.subscribe(), None);
        Response::new(Box::pin(requests.then(move |blob| {
            let answered = blob.map(|b| answer(b.data));
            async move {
                Ok(Blob {
                    data: answered?.await?,
                })
            }
        })))
    }

    async fn unary_call(
        &self,
        method: Method,
        r: Request<Blob>,
    ) -> std::result::Result<Response<Blob>, Status> {
        let data = answer_call(self.member()?, method, &r.into_inner().data).await?;
        Ok(Response::new(Blob { data }))
    }
}

/// The leader's answer to a client call a peer made on it (`PeerNetwork::client_call`).
async fn answer_call(
    m: &Arc<Member>,
    method: Method,
    args: &[u8],
) -> std::result::Result<Vec<u8>, Status> {
    fn args_of<T: DeserializeOwned>(args: &[u8]) -> std::result::Result<T, Status> {
        unpack(args).map_err(|e| Status::invalid_argument(e.message))
    }
    Ok(match method {
        Method::Forward => pack(&m.local_write(args_of(args)?).await),
        Method::ReadIndex => {
            let () = args_of(args)?;
            pack(&m.local_read_index().await)
        }
        Method::LeaseTtl => {
            let (id, refresh): (i64, bool) = args_of(args)?;
            pack(&m.local_lease_ttl(id, refresh).await)
        }
        Method::Campaign => {
            let () = args_of(args)?;
            pack(&m.local_campaign().await)
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "{other:?} is not a client call"
            )))
        }
    })
}

fn blob<T: Serialize>(value: &T) -> Response<Blob> {
    Response::new(Blob { data: pack(value) })
}

fn request<T: DeserializeOwned>(r: Request<Blob>) -> std::result::Result<T, Status> {
    unpack(&r.into_inner().data).map_err(|e| Status::invalid_argument(e.message))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn vote(&self, r: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        let m = self.member()?;
        let req: VoteRequest<NodeId> = request(r)?;
        self.network.admits(req.vote.leader_id.node_id).await?;
        m.refuse_removed(req.vote.leader_id.node_id)
            .await
            .map_err(|e| Status::failed_precondition(e.message))?;
        Ok(blob(&m.raft().vote(req).await))
    }

    async fn append_entries(
        &self,
        r: Request<Blob>,
    ) -> std::result::Result<Response<Blob>, Status> {
        let m = self.member()?;
        let req: AppendEntriesRequest<TypeConfig> = request(r)?;
        self.network.admits(req.vote.leader_id.node_id).await?;
        Ok(blob(&m.raft().append_entries(req).await))
    }

    type AppendEntriesStreamStream = super::grpc::BoxStream<Blob>;

    async fn append_entries_stream(
        &self,
        r: Request<Streaming<Blob>>,
    ) -> std::result::Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let m = self.member()?.clone();
        let network = self.network.clone();
        Ok(self.in_turn(r, move |data| {
            let (m, network) = (m.clone(), network.clone());
            async move {
                let req: AppendEntriesRequest<TypeConfig> =
                    unpack(&data).map_err(|e| Status::invalid_argument(e.message))?;
                network.admits(req.vote.leader_id.node_id).await?;
                Ok(pack(&m.raft().append_entries(req).await))
            }
        }))
    }

    type CallStreamStream = super::grpc::BoxStream<Blob>;

    async fn call_stream(
        &self,
        r: Request<Streaming<Blob>>,
    ) -> std::result::Result<Response<Self::CallStreamStream>, Status> {
        let m = self.member()?.clone();
        Ok(self.in_turn(r, move |data| {
            let m = m.clone();
            async move {
                let method = data
                    .first()
                    .and_then(|&tag| Method::CALLS.get(usize::from(tag).wrapping_sub(1)))
                    .ok_or_else(|| Status::invalid_argument("a call of unknown number"))?;
                answer_call(&m, *method, &data[1..]).await
            }
        }))
    }

    async fn install_snapshot(
        &self,
        r: Request<Blob>,
    ) -> std::result::Result<Response<Blob>, Status> {
        let m = self.member()?;
        let req: InstallSnapshotRequest<TypeConfig> = request(r)?;
        self.network.admits(req.vote.leader_id.node_id).await?;
        Ok(blob(&m.raft().install_snapshot(req).await))
    }

    async fn forward(&self, r: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        self.unary_call(Method::Forward, r).await
    }

    async fn read_index(&self, r: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        self.unary_call(Method::ReadIndex, r).await
    }

    async fn lease_ttl(&self, r: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        self.unary_call(Method::LeaseTtl, r).await
    }

    async fn campaign(&self, r: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        self.unary_call(Method::Campaign, r).await
    }

    /// Answered as soon as the connection carries it (`PeerNetwork::admits`), with the
    /// newest kind of log entry this build reads (`PeerNetwork::reads`).
    async fn probe(&self, _: Request<Blob>) -> std::result::Result<Response<Blob>, Status> {
        Ok(blob(&super::raft::ENTRY_VERSION))
    }
}

/// Serves the peer service on the connections of `incoming` until `shutdown` resolves.
/// Connects a channel to a peer's Unix socket (its `unix://PATH` URL).
#[derive(Clone)]
struct UnixConnector(std::path::PathBuf);

impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let conn = tokio::net::UnixStream::connect(path).await?;
            Ok(hyper_util::rt::TokioIo::new(conn))
        })
    }
}

pub async fn serve<IO>(
    service: PeerService,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>> + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()>
where
    IO: super::Connection,
{
    let stopping = service.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    tonic::transport::Server::builder()
        .add_service(
            PeerServer::new(service)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("the peer server stopped: {e}")))
}

/// The TLS alert a failed call met in its error, if any (one sent during the handshake).
fn tls_alert(s: &Status) -> Option<tokio_rustls::rustls::AlertDescription> {
    use tokio_rustls::rustls::Error as TlsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(s);
    while let Some(e) = source {
        let tls = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<TlsError>());
        if let Some(TlsError::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        source = e.source();
    }
    None
}

/// A TLS alert the peer sent, as Go's TLS words it ("remote error: tls: bad certificate",
/// which etcd's operators and tests look for).
fn go_words(alert: tokio_rustls::rustls::AlertDescription) -> String {
    use tokio_rustls::rustls::AlertDescription as A;
    let words = match alert {
        A::BadCertificate => "bad certificate".to_string(),
        A::UnknownCA => "unknown certificate authority".to_string(),
        A::CertificateRevoked => "revoked certificate".to_string(),
        A::CertificateExpired => "expired certificate".to_string(),
        A::CertificateUnknown => "unknown certificate".to_string(),
        A::CertificateRequired => "certificate required".to_string(),
        A::UnsupportedCertificate => "unsupported certificate".to_string(),
        A::AccessDenied => "access denied".to_string(),
        A::HandshakeFailure => "handshake failure".to_string(),
        other => format!("{other:?}"),
    };
    format!("remote error: tls: {words}")
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn request(prev: u64, entries: &[u64]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), prev)),
            entries: entries.iter().map(|&i| entry(i)).collect(),
            leader_commit: None,
        }
    }

    fn answered(net: &PeerNetwork, rpc: &AppendEntriesRequest<TypeConfig>) {
        let ok: std::result::Result<_, RPCError<NodeId, BasicNode, RaftError<NodeId>>> =
            Ok(AppendEntriesResponse::Success);
        net.matched(2, "http://127.0.0.1:1", rpc, &ok);
    }

    fn append(net: &PeerNetwork, prev: u64, entries: &[u64]) {
        let rpc = request(prev, entries);
        net.send_early(LeaderAppend {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            entries: &rpc.entries,
            committed: None,
        });
    }

    /// A peer server on a free loopback port, its URL, and what stops it. `refused`: it
    /// answers `CallStream` with that code (Unimplemented: as a build from before the
    /// method).
    async fn peer_server(
        refused: Option<tonic::Code>,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        peer_server_refusing("/CallStream", refused).await
    }

    /// `peer_server`, refusing the method whose path ends with `method`.
    async fn peer_server_refusing(
        method: &'static str,
        refused: Option<tonic::Code>,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        #[derive(Clone)]
        struct Older(PeerServer<PeerService>, tonic::Code, &'static str);
        impl tonic::server::NamedService for Older {
            const NAME: &'static str = "etcdcpeer.Peer";
        }
        impl tower_service::Service<http::Request<tonic::body::Body>> for Older {
            type Response = http::Response<tonic::body::Body>;
            type Error = std::convert::Infallible;
            type Future = std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = std::result::Result<Self::Response, Self::Error>,
                        > + Send,
                >,
            >;
            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn call(&mut self, r: http::Request<tonic::body::Body>) -> Self::Future {
                if r.uri().path().ends_with(self.2) {
                    let refused = Status::new(self.1, "refused").into_http();
                    return Box::pin(async move { Ok(refused) });
                }
                let mut inner = self.0.clone();
                Box::pin(async move { inner.call(r).await })
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // No member: every call is answered "the member is starting".
        let service = PeerServer::new(PeerService::new(PeerNetwork::new(BTreeMap::new(), None)));
        let mut builder = tonic::transport::Server::builder();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            if let Some(code) = refused {
                builder
                    .add_service(Older(service, code, method))
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
            } else {
                builder
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await
            }
        });
        (url, stop)
    }

    /// A forward that provably never reached the leader is NoLeader (proposed again by
    /// the caller), whatever carried it: the stream of calls, one call to a build without
    /// that stream, or no connection at all.
    #[tokio::test]
    async fn a_forward_that_never_reached_the_leader_may_be_proposed_again() {
        let forward = |url: String| async move {
            let net = PeerNetwork::new(BTreeMap::from([(2, url)]), None);
            let outcome = net.forward_write(2, Command::Batch(Vec::new())).await;
            let unary = net.unary_calls.lock().unwrap().contains(&2);
            (outcome.expect_err("no member answers").kind, unary)
        };
        let (url, _stop) = peer_server(None).await;
        assert_eq!(forward(url).await, (ErrorKind::NoLeader, false));
        // The older build refuses the stream: the call goes unary, and is remembered so.
        let (url, _stop) = peer_server(Some(tonic::Code::Unimplemented)).await;
        assert_eq!(forward(url).await, (ErrorKind::NoLeader, true));
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        assert_eq!(forward(closed).await, (ErrorKind::NoLeader, false));
        // A member that could not read the call (a build that does not know what was sent)
        // did nothing with it, and says so.
        let (url, _stop) = peer_server(Some(tonic::Code::InvalidArgument)).await;
        assert_eq!(forward(url).await, (ErrorKind::InvalidArgument, false));
    }

    /// What a peer's build reads: this build's entry version; 0 from a build without the
    /// probe; an error from a peer that cannot be reached (asked again later).
    #[tokio::test]
    async fn a_peer_tells_what_its_build_reads() {
        let reads = |url: String| async move {
            PeerNetwork::new(BTreeMap::from([(2, url)]), None)
                .reads(2)
                .await
        };
        let (url, _stop) = peer_server(None).await;
        assert_eq!(reads(url).await.unwrap(), crate::node::raft::ENTRY_VERSION);
        let (url, _stop) = peer_server_refusing("/Probe", Some(tonic::Code::Unimplemented)).await;
        assert_eq!(reads(url).await.unwrap(), 0);
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        assert_eq!(
            reads(closed).await.unwrap_err().kind,
            ErrorKind::Unavailable
        );
    }

    /// A message the stream ended before taking never left: it is refused as unsent (the
    /// forward may go again), not as an outcome unknown.
    #[tokio::test]
    async fn a_message_a_closed_stream_did_not_take_is_unsent() {
        let net = PeerNetwork::new(BTreeMap::new(), None);
        let (tx, requests) = tokio::sync::mpsc::channel(1);
        // The request side is gone, as once the stream's connection closed.
        drop(requests);
        let answers = tonic::body::Body::empty();
        let stream = PeerStream {
            tx,
            rx: Streaming::new_empty(tonic_prost::ProstDecoder::<Blob>::default(), answers),
        };
        let url = "http://127.0.0.1:1";
        let called = net
            .exchange(2, url, Kind::Calls, Some(stream), vec![1], FORWARD_TIMEOUT)
            .await;
        assert_eq!(
            called.err().map(|s| s.message().to_string()),
            Some(UNSENT.into())
        );
    }

    /// openraft's request takes an early answer only when it carries the same entries
    /// after the same entry in the same vote; any other request with entries drops it.
    #[tokio::test]
    async fn an_early_answer_serves_only_the_same_request() {
        let net = PeerNetwork::new(BTreeMap::new(), None);
        // Nothing known of the peer's log: nothing goes early.
        append(&net, 4, &[5]);
        assert!(net.take_early(2, &request(4, &[5])).is_none());

        answered(&net, &request(3, &[4]));
        append(&net, 5, &[6]); // not after what the peer holds
        assert!(net.take_early(2, &request(5, &[6])).is_none());

        // Taken by the same request only, a heartbeat or commit passing it by. The peer is
        // not listening, so the answer is an error (the link then sends the request
        // itself), and nothing more goes early until one of openraft's gets through.
        append(&net, 4, &[5]);
        assert!(net.take_early(2, &request(4, &[])).is_none());
        let answer = net.take_early(2, &request(4, &[5])).expect("taken");
        assert!(answer.await.expect("answered").is_err());
        append(&net, 4, &[5]);
        assert!(net.take_early(2, &request(4, &[5])).is_none());

        // Another request with entries drops it.
        answered(&net, &request(3, &[4]));
        append(&net, 4, &[5]);
        assert!(net.take_early(2, &request(4, &[5, 6])).is_none());
        assert!(net.take_early(2, &request(4, &[5])).is_none());
    }
}
