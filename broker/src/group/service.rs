//! The coordinator at work: requests await their replies, and one task applies the
//! coordinator's deadlines (sessions, join and sync phases) as they come due.
//!
//! [`super::coordinator`] holds the logic and never waits; this module owns its clock
//! (wall-clock milliseconds at start plus the monotonic time since, so that it never
//! goes back and times stored in group records mean something after a restart), the waiters of JoinGroup and SyncGroup calls
//! in flight, and the ticker that wakes at [`Coordinator::next_deadline`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::coordinator::{
    Activity, Coordinator, GroupRecord, GroupSummary, JoinRequest, JoinResponse, Ms, Reply, Settings, State,
    SyncRequest, SyncResponse, Waiter,
};

/// A group's record to store (`None`: drop it), in the order the coordinator made them.
/// A group's record to store (`None`: drop it), in the order the coordinator made them,
/// and who to tell once it is written (or failed to be).
pub struct GroupChange {
    pub group: String,
    pub record: Option<GroupRecord>,
    pub written: oneshot::Sender<()>,
}

/// Groups coordinated on this node.
pub struct GroupService {
    coordinator: Mutex<Coordinator>,
    /// Where changed group records go to be written through raft.
    persist: mpsc::UnboundedSender<GroupChange>,
    waiters: Mutex<HashMap<Waiter, oneshot::Sender<Reply>>>,
    next_waiter: AtomicU64,
    started: Instant,
    started_wall_ms: Ms,
    /// Wakes the ticker when a call may have moved the next deadline earlier.
    changed: Arc<Notify>,
}

impl GroupService {
    /// Starts the service and its ticker, which stops on `shutdown`.
    pub fn start(
        settings: Settings,
        persist: mpsc::UnboundedSender<GroupChange>,
        shutdown: CancellationToken,
    ) -> Arc<GroupService> {
        let service = Arc::new(GroupService {
            coordinator: Mutex::new(Coordinator::new(settings)),
            persist,
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            started: Instant::now(),
            started_wall_ms: crate::now_ms().max(0) as Ms,
            changed: Arc::new(Notify::new()),
        });
        tokio::spawn(run_ticker(Arc::downgrade(&service), shutdown));
        service
    }

    fn now(&self) -> Ms {
        self.started_wall_ms + self.started.elapsed().as_millis() as Ms
    }

    fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a call that may change groups, and queues their changed records while still
    /// holding the coordinator, so records are written in the order they were made.
    /// Returns the call's result, and a receiver per record queued that completes once
    /// the record is written.
    fn changing<R>(&self, f: impl FnOnce(&mut Coordinator, Ms) -> R) -> (R, Vec<oneshot::Receiver<()>>) {
        let now = self.now();
        let mut c = self.coordinator();
        let result = f(&mut c, now);
        let mut written = Vec::new();
        for (group, record) in c.take_changes() {
            let (tx, rx) = oneshot::channel();
            let _ = self.persist.send(GroupChange { group, record, written: tx });
            written.push(rx);
        }
        (result, written)
    }

    /// A record could not be written: it is written again at the group's next change.
    pub fn not_written(&self, group: &str) {
        self.coordinator().forget_recorded(group);
    }

    /// Restores a group from its stored record.
    pub fn load(&self, group: &str, record: GroupRecord) {
        let now = self.now();
        self.coordinator().load(now, group, record);
    }

    /// Takes the groups of one offsets partition (those `ours` picks) as stored: restores
    /// every one of `records` and forgets the others, which were deleted meanwhile.
    pub fn reload(&self, records: Vec<(String, GroupRecord)>, ours: impl Fn(&str) -> bool) {
        let now = self.now();
        let mut c = self.coordinator();
        let kept = records.iter().map(|(g, _)| g.clone()).collect();
        c.unload_missing(ours, &kept);
        for (group, record) in records {
            c.load(now, &group, record);
        }
    }

    /// Hands replies to the calls waiting for them.
    fn deliver(&self, replies: Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for reply in replies {
            let waiter = match &reply {
                Reply::Join(w, _) | Reply::Sync(w, _) => *w,
            };
            if let Some(tx) = waiters.remove(&waiter) {
                let _ = tx.send(reply);
            }
        }
    }

    /// Registers a waiter, runs `call` with it, and waits for its reply.
    async fn call(&self, call: impl FnOnce(&mut Coordinator, Ms, Waiter) -> Vec<Reply>) -> Option<Reply> {
        let waiter = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(waiter, tx);
        let (replies, written) = self.changing(|c, now| call(c, now, waiter));
        // As Kafka, a generation's assignments reach the members only once the group's
        // record is stored, so a restart never goes back to an older generation that
        // members were already told about.
        for w in written {
            let _ = w.await;
        }
        self.deliver(replies);
        self.changed.notify_one();
        rx.await.ok()
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResponse {
        let member = req.member_id.clone();
        match self.call(|c, now, w| c.join(now, w, req)).await {
            Some(Reply::Join(_, resp)) => resp,
            _ => JoinResponse::error(ResponseError::CoordinatorNotAvailable, &member),
        }
    }

    pub async fn sync(&self, req: SyncRequest) -> SyncResponse {
        match self.call(|c, now, w| c.sync(now, w, req)).await {
            Some(Reply::Sync(_, resp)) => resp,
            _ => SyncResponse::error(ResponseError::CoordinatorNotAvailable),
        }
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        let now = self.now();
        let error = self.coordinator().heartbeat(now, group, member, instance, generation);
        self.changed.notify_one();
        error
    }

    pub fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<Option<ResponseError>> {
        let ((errors, replies), _) = self.changing(|c, now| c.leave(now, group, members));
        self.deliver(replies);
        self.changed.notify_one();
        errors
    }

    pub fn check_commit(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        self.coordinator().check_commit(group, member, instance, generation)
    }

    pub fn describe(&self, group: &str) -> Option<GroupSummary> {
        self.coordinator().describe(group)
    }

    pub fn list(&self) -> Vec<(String, State, String)> {
        self.coordinator().list()
    }

    /// Whether a group has members, or since when (wall-clock milliseconds) it has none.
    pub fn activity(&self, group: &str) -> Activity {
        self.coordinator().activity(group)
    }

    pub fn subscribed_topics(&self, group: &str) -> std::collections::BTreeSet<String> {
        self.coordinator().subscribed_topics(group)
    }

    pub fn delete(&self, group: &str) -> Result<(), ResponseError> {
        self.changing(|c, _| c.delete(group)).0
    }
}

/// Applies deadlines as they come due, until shutdown or the service is gone.
async fn run_ticker(service: std::sync::Weak<GroupService>, shutdown: CancellationToken) {
    loop {
        let Some(s) = service.upgrade() else { return };
        let now = s.now();
        let (replies, _) = s.changing(|c, now| c.tick(now));
        s.deliver(replies);
        // At most a second between ticks, so a deadline is never missed for long.
        let next = s.coordinator().next_deadline().unwrap_or(now + 1000).min(now + 1000);
        let wait = Duration::from_millis(next.saturating_sub(now).max(1));
        // Not holding the service while asleep; a wake-up sent meanwhile is kept as a permit.
        let changed = s.changed.clone();
        drop(s);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn join_req(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 2000,
            protocol_type: "consumer".into(),
            protocols: vec![super::super::coordinator::Protocol { name: "range".into(), metadata: Bytes::new() }],
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    #[tokio::test]
    async fn joins_wait_for_each_other_and_the_ticker_ends_a_rebalance_on_time() {
        let shutdown = CancellationToken::new();
        let (persist, mut changes) = mpsc::unbounded_channel::<GroupChange>();
        // The store: records what it is given and acknowledges it, as the node's does
        // after the raft write. Syncs are answered only after that.
        let stored = Arc::new(Mutex::new(Vec::new()));
        let store = stored.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                store.lock().unwrap().push((change.group, change.record));
                let _ = change.written.send(());
            }
        });
        let service = GroupService::start(
            Settings { initial_rebalance_delay_ms: 50, ..Settings::default() },
            persist,
            shutdown.clone(),
        );
        let a = service.join(join_req("")).await.member_id;
        let b = service.join(join_req("")).await.member_id;
        // Both join; the first generation starts after the initial delay, by the ticker.
        let (ra, rb) = tokio::join!(service.join(join_req(&a)), service.join(join_req(&b)));
        assert_eq!((ra.error, rb.error), (None, None));
        assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
        assert_eq!(ra.leader, rb.leader);

        let (leader, follower) = if ra.leader == a { (a, b) } else { (b, a) };
        let sync = |member: &str, assignments: Vec<(String, Bytes)>| SyncRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments,
        };
        let (sf, sl) = tokio::join!(
            service.sync(sync(&follower, vec![])),
            service.sync(sync(&leader, vec![(follower.clone(), Bytes::from("f")), (leader.clone(), Bytes::from("l"))]))
        );
        assert_eq!((sf.assignment, sl.assignment), (Bytes::from("f"), Bytes::from("l")));
        // The stable generation's record was queued for storage.
        let records = stored.lock().unwrap().clone();
        assert_eq!(records.len(), 1, "one record, once stable");
        let (group, record) = records[0].clone();
        let record = record.expect("group exists");
        assert_eq!((group.as_str(), record.generation, record.members.len()), ("g", 1, 2));
        assert!(record.members.iter().any(|m| m.assignment == b"f"));

        // The leader rejoins; the follower never does, nor heartbeats: the ticker ends the
        // join phase at the rebalance timeout without it.
        let again = service.join(join_req(&leader)).await;
        assert_eq!(again.generation_id, 2);
        assert_eq!(again.members.len(), 1);
        assert_eq!(service.heartbeat("g", &follower, None, 1), Some(ResponseError::UnknownMemberId));
        shutdown.cancel();
    }
}
