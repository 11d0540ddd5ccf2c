//! The raft network between nodes: one TCP connection per pair of nodes carries every
//! raft group's messages, and the few node-level requests (controller writes forwarded
//! to its leader).
//!
//! ```text
//!  Raft<C> (group g) ──RaftNetworkFactory──► GroupClient{peer, g} ──► Link(peer) ══ TCP ══► serve ──► Handler::handle(g, rpc)
//!                                                                      one per peer          (the Node: raft[g].append_entries, ...)
//! ```
//!
//! Of each pair, the node with the lower id dials and redials; the other accepts. Both
//! send requests over the one connection, told apart by id. The peers are those
//! configured and those registered in cluster metadata ([`Peers::add`] as they join,
//! [`Peers::remove`] once decommissioned). A node joining knows none of them: it dials
//! a node it was told of with a `joining` hello, asks to join over that one connection
//! ([`Peers::call`]), and learns the others from the answer. A frame is a u32 length and
//! a bincode [`Message`]; payloads are bincode of openraft's own request and response
//! types, decoded by the group that receives them. Payloads are `Bytes`, which bincode
//! copies whole (a `Vec<u8>` would go byte by byte, through serde's sequence path:
//! that once capped replication at about 100 MB/s). While a peer is not connected its
//! requests fail at once as unreachable: raft retries on its own schedule.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use storage::GroupId;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Largest frame accepted (a raft entry carries at most a few MB of batches).
const MAX_FRAME: usize = 256 << 20;
/// How long a dialer waits before dialing a peer again.
const REDIAL: Duration = Duration::from_millis(200);

/// What one node asks of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rpc {
    AppendEntries(Bytes),
    Vote(Bytes),
    InstallSnapshot(Bytes),
    /// A controller command for the controller's leader to write (bincode of the command).
    ControllerWrite(Bytes),
    /// Stored batches of a partition from the one holding `from` up to `to`, about
    /// `max_bytes` of them: a replica installing a snapshot copies what it lacks.
    ReadBatches {
        from: i64,
        to: i64,
        max_bytes: u32,
    },
    /// The partitions the sender leads (bincode of `(group, Leadership)` pairs).
    Leaders(Bytes),
    /// The group's leader stopped sending heartbeats to hand leadership over: the
    /// receiver stands for election once the leader's lease has run out.
    TakeLeadership,
    /// A follower of a quiet group has not learned that the leader's last entries are
    /// committed (it missed the heartbeat that said so): the leader heartbeats again.
    Wake,
    /// A new node asks to join the cluster (bincode of its id and `BrokerMeta`); the
    /// answer is every node's raft address once it is registered.
    Join(Bytes),
}

impl Rpc {
    fn name(&self) -> &'static str {
        match self {
            Rpc::AppendEntries(_) => "append_entries",
            Rpc::Vote(_) => "vote",
            Rpc::InstallSnapshot(_) => "install_snapshot",
            Rpc::ControllerWrite(_) => "controller_write",
            Rpc::ReadBatches { .. } => "read_batches",
            Rpc::Leaders(_) => "leaders",
            Rpc::TakeLeadership => "take_leadership",
            Rpc::Wake => "wake",
            Rpc::Join(_) => "join",
        }
    }
}

/// One frame on a connection between nodes.
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// First frame of a connection, from the dialer.
    Hello {
        cluster: String,
        node: u64,
        /// The sender is not a peer yet and only asks to join: the connection answers its
        /// requests and is not the link to it.
        joining: bool,
    },
    Request {
        id: u64,
        group: GroupId,
        rpc: Rpc,
    },
    /// The bincode of the answer, or why there is none.
    Response {
        id: u64,
        body: Result<Bytes, String>,
    },
}

/// What answers requests from other nodes (the node itself).
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers `rpc` for `group`, from node `from`: the bincode of the answer.
    async fn handle(&self, from: u64, group: GroupId, rpc: Rpc) -> Result<Bytes, String>;
}

/// This node's links to every other node of the cluster.
pub struct Peers {
    pub node_id: u64,
    cluster: String,
    links: std::sync::RwLock<BTreeMap<u64, Arc<Link>>>,
    own_address: Option<String>,
    /// Set by [`Peers::start`]: links added later dial with it.
    running: OnceLock<CancellationToken>,
    handler: OnceLock<Weak<dyn Handler>>,
    /// Test hook: while set, nothing is sent or answered (as if the network were cut).
    isolated: AtomicBool,
    /// Raft messages (append entries, heartbeats included, and votes) sent for groups
    /// other than group 0, the controller: what quiescence saves.
    partition_messages: AtomicU64,
}

/// The connection to one peer, and the requests waiting for its answers.
pub struct Link {
    pub peer: u64,
    pub addr: String,
    out: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, String>>>>,
    next_id: AtomicU64,
    /// Bumped for every new connection, so an old connection's end does not clear a new one.
    generation: AtomicU64,
    /// Cancelled when the peer is removed: its connection closes and is not redialed.
    removed: CancellationToken,
    /// The connection of a node not a peer (yet), made to join: it is answered `Join`
    /// and nothing else.
    joining: bool,
}

impl Link {
    fn new(peer: u64, addr: &str) -> Link {
        Link {
            peer,
            addr: addr.to_string(),
            out: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            removed: CancellationToken::new(),
            joining: false,
        }
    }

    /// The connection of a node joining (or, on its side, of the node it joins through).
    fn joining(peer: u64, addr: &str) -> Link {
        Link { joining: true, ..Link::new(peer, addr) }
    }

    /// Sends `rpc` for `group` over this link and waits (at most `timeout`) for the answer.
    async fn request(&self, group: GroupId, rpc: Rpc, timeout: Duration) -> Result<Bytes, Failure> {
        let peer = self.peer;
        let kind = rpc.name();
        metrics::counter!("quarry_node_requests_sent_total", "kind" => kind).increment(1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("link lock").insert(id, tx);
        let sent = match self.out.lock().expect("link lock").as_ref() {
            Some(out) => out.send(Message::Request { id, group, rpc }).is_ok(),
            None => false,
        };
        if !sent {
            self.pending.lock().expect("link lock").remove(&id);
            return Err(Failure::Unreachable(format!("no connection to node {peer}")));
        }
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(timeout, rx).await;
        metrics::histogram!("quarry_node_request_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(e))) => Err(Failure::Remote(e)),
            Ok(Err(_)) => Err(Failure::Network(format!("connection to node {peer} closed"))),
            Err(_) => {
                self.pending.lock().expect("link lock").remove(&id);
                Err(Failure::Network(format!("node {peer} did not answer within {timeout:?}")))
            }
        }
    }
}

impl Peers {
    /// Links to every node of `peers` (node id → raft address) but this one, which other
    /// nodes reach at `own_address`.
    pub fn new(node_id: u64, cluster: &str, peers: &BTreeMap<u64, String>, own_address: Option<String>) -> Arc<Peers> {
        let links = peers
            .iter()
            .filter(|(id, _)| **id != node_id)
            .map(|(id, addr)| (*id, Arc::new(Link::new(*id, addr))))
            .collect();
        Arc::new(Peers {
            node_id,
            cluster: cluster.to_string(),
            links: std::sync::RwLock::new(links),
            own_address: peers.get(&node_id).cloned().or(own_address),
            running: OnceLock::new(),
            handler: OnceLock::new(),
            isolated: AtomicBool::new(false),
            partition_messages: AtomicU64::new(0),
        })
    }

    /// Sets who answers requests; before that, requests are refused.
    pub fn set_handler(&self, handler: Weak<dyn Handler>) {
        let _ = self.handler.set(handler);
    }

    /// Cuts (or restores) this node off from every other, both ways.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::SeqCst);
    }

    fn isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// Raft messages sent so far for partition groups (all but group 0).
    pub fn partition_messages(&self) -> u64 {
        self.partition_messages.load(Ordering::Relaxed)
    }

    /// The ids of the other nodes.
    pub fn ids(&self) -> Vec<u64> {
        self.links.read().expect("links lock").keys().copied().collect()
    }

    /// The raft address of `node` (this one's own included).
    pub fn address(&self, node: u64) -> Option<String> {
        if node == self.node_id {
            return self.own_address.clone();
        }
        self.link(node).map(|l| l.addr.clone())
    }

    pub fn link(&self, peer: u64) -> Option<Arc<Link>> {
        self.links.read().expect("links lock").get(&peer).cloned()
    }

    /// Links to `peer` at `addr` from now on (a node that joined, or one registered
    /// before this one started); dials it if its id is the higher. A known peer keeps
    /// its link.
    pub fn add(self: &Arc<Self>, peer: u64, addr: &str) {
        if peer == self.node_id {
            return;
        }
        let link = {
            let mut links = self.links.write().expect("links lock");
            if links.contains_key(&peer) {
                return;
            }
            let link = Arc::new(Link::new(peer, addr));
            links.insert(peer, link.clone());
            link
        };
        tracing::info!(peer, addr, "raft peer added");
        if let Some(shutdown) = self.running.get() {
            if peer > self.node_id {
                tokio::spawn(dial(self.clone(), link, shutdown.clone()));
            }
        }
    }

    /// Forgets `peer` (decommissioned): its connection closes and is not made again.
    pub fn remove(&self, peer: u64) {
        if let Some(link) = self.links.write().expect("links lock").remove(&peer) {
            link.removed.cancel();
            tracing::info!(peer, "raft peer removed");
        }
    }

    /// Sends `rpc` for `group` to `peer` and waits (at most `timeout`) for the answer.
    pub async fn request(&self, peer: u64, group: GroupId, rpc: Rpc, timeout: Duration) -> Result<Bytes, Failure> {
        let link = self.link(peer).ok_or_else(|| Failure::Unreachable(format!("node {peer} is not a peer")))?;
        if self.isolated() {
            return Err(Failure::Unreachable(format!("node {} is isolated", self.node_id)));
        }
        if group != 0 && matches!(rpc, Rpc::AppendEntries(_) | Rpc::Vote(_)) {
            self.partition_messages.fetch_add(1, Ordering::Relaxed);
        }
        link.request(group, rpc, timeout).await
    }

    /// Sends one request to the node at `addr`, which need not be a peer, over a
    /// connection of its own (a node joining asks this way): the answer, or why none.
    pub async fn call(
        self: &Arc<Self>,
        addr: &str,
        group: GroupId,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Bytes, Failure> {
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Unreachable(format!("{addr} did not accept within {timeout:?}")))?
            .map_err(|e| Failure::Unreachable(format!("cannot reach {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let hello = Message::Hello { cluster: self.cluster.clone(), node: self.node_id, joining: true };
        write_frame(&mut stream, &hello).await.map_err(|e| Failure::Unreachable(format!("{addr}: {e}")))?;
        let link = Arc::new(Link::joining(0, addr));
        tokio::select! {
            // First, so that the connection is the link's way out before the request.
            biased;
            _ = run(self.clone(), link.clone(), stream) => Err(Failure::Network(format!("connection to {addr} closed"))),
            answer = link.request(group, rpc, timeout) => answer,
        }
    }

    /// Dials the peers with higher ids (and keeps redialing), and accepts connections from
    /// the others on `listener`, until `shutdown`.
    pub fn start(self: &Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let _ = self.running.set(shutdown.clone());
        let links: Vec<Arc<Link>> = self.links.read().expect("links lock").values().cloned().collect();
        for link in links.into_iter().filter(|l| l.peer > self.node_id) {
            tokio::spawn(dial(self.clone(), link, shutdown.clone()));
        }
        tokio::spawn(accept(self.clone(), listener, shutdown));
    }
}

/// Why a request to a peer has no answer.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Not sent: no connection.
    Unreachable(String),
    /// Sent, but the connection failed or the answer did not come in time.
    Network(String),
    /// The peer answered with an error.
    Remote(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(e) | Failure::Network(e) | Failure::Remote(e) => f.write_str(e),
        }
    }
}

async fn dial(peers: Arc<Peers>, link: Arc<Link>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() && !link.removed.is_cancelled() {
        match TcpStream::connect(&link.addr).await {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                let hello = Message::Hello { cluster: peers.cluster.clone(), node: peers.node_id, joining: false };
                if write_frame(&mut stream, &hello).await.is_ok() {
                    tokio::select! {
                        _ = run(peers.clone(), link.clone(), stream) => {}
                        _ = shutdown.cancelled() => return,
                        _ = link.removed.cancelled() => return,
                    }
                }
            }
            Err(e) => tracing::trace!(peer = link.peer, addr = %link.addr, error = %e, "cannot reach peer"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REDIAL) => {}
            _ = shutdown.cancelled() => return,
            _ = link.removed.cancelled() => return,
        }
    }
}

async fn accept(peers: Arc<Peers>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (mut stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "raft listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let peers = peers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let hello = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream)).await;
            let link = match hello {
                Ok(Ok(Message::Hello { cluster, node, joining })) if cluster == peers.cluster => {
                    match peers.link(node) {
                        Some(link) if !joining => link,
                        // Answers its requests; not the link to it (it has none yet).
                        _ if joining => Arc::new(Link::joining(node, &addr.to_string())),
                        _ => {
                            // A node registered moments ago: known once metadata here has it.
                            tracing::debug!(%addr, node, "connection from a node that is not a peer (yet) refused");
                            return;
                        }
                    }
                }
                Ok(Ok(Message::Hello { cluster, node, .. })) => {
                    tracing::warn!(%addr, node, cluster, "connection from another cluster refused");
                    return;
                }
                _ => {
                    tracing::debug!(%addr, "raft connection without a hello closed");
                    return;
                }
            };
            let removed = link.removed.clone();
            tokio::select! {
                _ = run(peers, link, stream) => {}
                _ = shutdown.cancelled() => {}
                _ = removed.cancelled() => {}
            }
        });
    }
}

/// Serves one connection to `link`'s peer until it fails: becomes the link's way out,
/// answers the peer's requests, and hands answers to the requests waiting for them.
async fn run(peers: Arc<Peers>, link: Arc<Link>, stream: TcpStream) {
    let (mut reader, writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let generation = link.generation.fetch_add(1, Ordering::SeqCst) + 1;
    *link.out.lock().expect("link lock") = Some(tx.clone());
    tracing::info!(peer = link.peer, "raft connection up");
    let write = async move {
        let mut w = BufWriter::with_capacity(256 << 10, writer);
        while let Some(m) = rx.recv().await {
            write_frame(&mut w, &m).await?;
            // Frames queued meanwhile go out in the same write.
            while let Ok(m) = rx.try_recv() {
                write_frame(&mut w, &m).await?;
            }
            w.flush().await?;
        }
        anyhow::Ok(())
    };
    let read = async {
        loop {
            let message = read_frame(&mut reader).await?;
            if peers.isolated() {
                continue;
            }
            match message {
                Message::Request { id, rpc, .. } if link.joining && !matches!(rpc, Rpc::Join(_)) => {
                    let _ = tx.send(Message::Response { id, body: Err("not a peer: only Join is answered".into()) });
                }
                Message::Request { id, group, rpc } => {
                    let handler = peers.handler.get().and_then(|h| h.upgrade());
                    let tx = tx.clone();
                    let from = link.peer;
                    tokio::spawn(async move {
                        let kind = rpc.name();
                        let started = std::time::Instant::now();
                        let body = match handler {
                            Some(h) => h.handle(from, group, rpc).await,
                            None => Err("node is starting".to_string()),
                        };
                        metrics::histogram!("quarry_node_answer_seconds", "kind" => kind)
                            .record(started.elapsed().as_secs_f64());
                        if let Err(e) = &body {
                            tracing::trace!(from, group, kind, error = %e, "raft request failed");
                        }
                        let _ = tx.send(Message::Response { id, body });
                    });
                }
                Message::Response { id, body } => {
                    if let Some(waiting) = link.pending.lock().expect("link lock").remove(&id) {
                        let _ = waiting.send(body);
                    }
                }
                Message::Hello { .. } => anyhow::bail!("unexpected hello"),
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = write => r,
        r = read => r,
    };
    if link.generation.load(Ordering::SeqCst) == generation {
        *link.out.lock().expect("link lock") = None;
        // Requests sent on this connection will not be answered.
        link.pending.lock().expect("link lock").clear();
    }
    match result {
        Ok(()) => tracing::info!(peer = link.peer, "raft connection down"),
        Err(e) => tracing::info!(peer = link.peer, reason = %e, "raft connection down"),
    }
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, m: &Message) -> anyhow::Result<()> {
    let body = bincode::serialize(m)?;
    w.write_u32(body.len() as u32).await?;
    w.write_all(&body).await?;
    Ok(())
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> anyhow::Result<Message> {
    let len = r.read_u32().await? as usize;
    anyhow::ensure!(len <= MAX_FRAME, "frame of {len} bytes is too large");
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    bincode::deserialize(&body).context("undecodable frame")
}

/// Bincode of an answer, as a handler returns it.
pub fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    bincode::serialize(v).map(Bytes::from).map_err(|e| e.to_string())
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    bincode::deserialize(b).map_err(|e| e.to_string())
}

/// The raft network of one group: its messages go over the node's [`Peers`].
#[derive(Clone)]
pub struct GroupNetwork {
    pub peers: Arc<Peers>,
    pub group: GroupId,
}

/// The network of one group to one peer.
pub struct GroupClient {
    peers: Arc<Peers>,
    group: GroupId,
    target: u64,
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetworkFactory<C> for GroupNetwork
where
    C::D: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        GroupClient { peers: self.peers.clone(), group: self.group, target }
    }
}

impl GroupClient {
    async fn call<Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>> {
        let body = self.peers.request(self.target, self.group, rpc, option.hard_ttl()).await.map_err(|f| match f {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))),
            Failure::Network(e) | Failure::Remote(e) => RPCError::Network(NetworkError::new(&std::io::Error::other(e))),
        })?;
        let answer: Result<Resp, E> =
            decode(&body).map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn request_bytes<T: Serialize, E: std::error::Error>(v: &T) -> Result<Bytes, RPCError<u64, BasicNode, E>> {
    bincode::serialize(v)
        .map(Bytes::from)
        .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e.to_string()))))
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetwork<C> for GroupClient
where
    C::D: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let bytes = request_bytes(&rpc)?;
        self.call(Rpc::AppendEntries(bytes), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        let bytes = request_bytes(&rpc)?;
        self.call(Rpc::InstallSnapshot(bytes), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let bytes = request_bytes(&rpc)?;
        self.call(Rpc::Vote(bytes), &option).await
    }
}

/// Answers one raft message for `raft` (a group hosted here): decodes the request,
/// hands it to raft, encodes the answer (errors included, for the sender's raft).
pub async fn answer<C>(raft: &openraft::Raft<C>, rpc: Rpc) -> Result<Bytes, String>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, SnapshotData = std::io::Cursor<Vec<u8>>>,
    C::D: Serialize + DeserializeOwned,
    C::Entry: Serialize + DeserializeOwned,
{
    match rpc {
        Rpc::AppendEntries(b) => encode(&raft.append_entries(decode::<AppendEntriesRequest<C>>(&b)?).await),
        Rpc::Vote(b) => encode(&raft.vote(decode::<VoteRequest<u64>>(&b)?).await),
        Rpc::InstallSnapshot(b) => encode(&raft.install_snapshot(decode::<InstallSnapshotRequest<C>>(&b)?).await),
        Rpc::ControllerWrite(_)
        | Rpc::ReadBatches { .. }
        | Rpc::Leaders(_)
        | Rpc::TakeLeadership
        | Rpc::Wake
        | Rpc::Join(_) => Err("not a raft message".into()),
    }
}
