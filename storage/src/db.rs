//! The node's one RocksDB, and group commit.
//!
//! Raft appends are written without sync and become readable at once; their callbacks
//! queue on one syncer thread, which makes everything queued durable at once and then
//! completes the callbacks: the segment files written to (partition groups, see
//! [`crate::segments`]) and the WAL if a queued write needs it (the controller's log,
//! votes). Many produce requests on many partitions thus share one sync: see
//! `sync_all` for how it is made.
//!
//! State machine writes skip the WAL ([`Durability::Replayable`]): the raft log is their
//! durable copy and applying is deterministic, so after a crash the state machine replays
//! from the last applied index that reached an SST. `atomic_flush` keeps the column
//! families of one write batch flushed together, and [`Db::flush_memtables`] runs before
//! any raft log prefix is purged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, FlushOptions, Options, WriteBatch, WriteOptions, DB};

use crate::Error;

/// The column families, one per kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// `(group, index)` -> raft entry.
    RaftLog,
    /// `(group, tag)` -> vote, committed, last purged.
    RaftMeta,
    /// `(group, base_offset)` -> record batch as stored.
    PartitionLog,
    /// `(group, max_timestamp, base_offset)` -> nothing: the sparse timestamp index.
    TimeIndex,
    /// `(group, tag)` -> state machine values.
    State,
    /// `(group, consumer group, topic, partition)` -> committed offset.
    Offsets,
}

impl Cf {
    pub const ALL: [Cf; 6] = [Cf::RaftLog, Cf::RaftMeta, Cf::PartitionLog, Cf::TimeIndex, Cf::State, Cf::Offsets];
    /// The column families state machines write with [`Durability::Replayable`].
    pub const REPLAYABLE: [Cf; 4] = [Cf::PartitionLog, Cf::TimeIndex, Cf::State, Cf::Offsets];

    pub fn name(self) -> &'static str {
        match self {
            Cf::RaftLog => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::PartitionLog => "partition_log",
            Cf::TimeIndex => "time_index",
            Cf::State => "state",
            Cf::Offsets => "offsets",
        }
    }
}

/// How a write is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Through the WAL; durable once a sync covers it.
    Wal,
    /// Memtable only; lost on a crash unless flushed, and rebuilt by raft replay.
    Replayable,
}

type SyncCallback = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// A callback waiting for the next group sync, and the segment files it needs synced.
struct SyncJob {
    files: Vec<Arc<std::fs::File>>,
    wal: bool,
    callback: SyncCallback,
}

/// The node's database.
pub struct Db {
    rocks: Arc<DB>,
    /// `None` only while dropping.
    syncer: Option<mpsc::Sender<SyncJob>>,
    dir: std::path::PathBuf,
    syncer_thread: Option<std::thread::JoinHandle<()>>,
    wal_opts: WriteOptions,
    replay_opts: WriteOptions,
    /// Number of [`Db::flush_memtables`] calls that have started, and the lock that
    /// serialises them (holding the number of the last one that completed).
    flushes_started: std::sync::atomic::AtomicU64,
    flush_lock: std::sync::Mutex<u64>,
    /// Dropped last, after the database has closed: see [`Db::closed`].
    closed: tokio::sync::watch::Sender<()>,
}

impl Db {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Db>, Error> {
        let open_err = |source| Error::Open { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        // Fail early, with the path in the message, on a directory we cannot write.
        let probe = dir.join(".write-probe");
        std::fs::write(&probe, b"").map_err(open_err)?;
        std::fs::remove_file(&probe).map_err(open_err)?;

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        opts.set_db_write_buffer_size(512 << 20);
        opts.set_max_total_wal_size(1 << 30);
        opts.set_bytes_per_sync(4 << 20);
        // Written back in the background as it grows, so a group sync has little left to flush.
        opts.set_wal_bytes_per_sync(1 << 20);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            o.set_write_buffer_size(128 << 20);
            o.set_max_write_buffer_number(4);
            if *cf == Cf::PartitionLog {
                o.set_target_file_size_base(128 << 20);
                // Producers compress their batches; compressing again costs CPU for little.
                o.set_compression_type(rocksdb::DBCompressionType::None);
            } else {
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let rocks = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);
        for cf in Cf::ALL {
            if rocks.cf_handle(cf.name()).is_none() {
                return Err(Error::Io(std::io::Error::other(format!("column family {} missing", cf.name()))));
            }
        }

        let (tx, rx) = mpsc::channel::<SyncJob>();
        let syncer_db = rocks.clone();
        let dir_handle = std::fs::File::open(dir).map_err(open_err)?;
        let syncer_thread = std::thread::Builder::new()
            .name("wal-syncer".into())
            .spawn(move || run_syncer(&syncer_db, dir_handle, rx))?;

        let wal_opts = WriteOptions::default();
        let mut replay_opts = WriteOptions::default();
        replay_opts.disable_wal(true);
        Ok(Arc::new(Db {
            rocks,
            syncer: Some(tx),
            dir: dir.to_path_buf(),
            syncer_thread: Some(syncer_thread),
            wal_opts,
            replay_opts,
            flushes_started: Default::default(),
            flush_lock: Default::default(),
            closed: tokio::sync::watch::channel(()).0,
        }))
    }

    /// A receiver whose `changed()` fails once the database is closed and its lock
    /// released (the last handle dropped, the syncer stopped).
    pub fn closed(&self) -> tokio::sync::watch::Receiver<()> {
        self.closed.subscribe()
    }

    /// The raw database, for reads and iterators.
    pub fn rocks(&self) -> &DB {
        &self.rocks
    }

    /// The handle of a column family; all exist from [`Db::open`] on.
    pub fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.rocks.cf_handle(cf.name()).expect("column families are checked at open")
    }

    /// Writes a batch atomically, without waiting for a sync.
    pub fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), Error> {
        let opts = match durability {
            Durability::Wal => &self.wal_opts,
            Durability::Replayable => &self.replay_opts,
        };
        Ok(self.rocks.write_opt(batch, opts)?)
    }

    /// Queues `callback` for the next group sync; it runs once every WAL write made before
    /// this call is on disk.
    pub fn after_sync(&self, callback: impl FnOnce(Result<(), std::io::Error>) + Send + 'static) {
        self.after_sync_files(Vec::new(), true, callback)
    }

    /// Queues `callback` for the next group sync, which covers everything written to
    /// `files` before this call (segment files, see [`crate::segments`]), and the WAL too
    /// if `wal`.
    pub fn after_sync_files(
        &self,
        files: Vec<Arc<std::fs::File>>,
        wal: bool,
        callback: impl FnOnce(Result<(), std::io::Error>) + Send + 'static,
    ) {
        let Some(syncer) = &self.syncer else {
            return callback(Err(std::io::Error::other("wal syncer stopped")));
        };
        if let Err(mpsc::SendError(job)) = syncer.send(SyncJob { files, wal, callback: Box::new(callback) }) {
            (job.callback)(Err(std::io::Error::other("wal syncer stopped")));
        }
    }

    /// The directory of a group's segment files.
    pub fn segments_dir(&self, group: crate::GroupId) -> std::path::PathBuf {
        self.dir.join("segments").join(group.to_string())
    }

    /// Every group with anything stored here: raft state or segment files. Deleting a
    /// group removes its raft state, then its segment files ([`crate::segments`]), so a
    /// group deleted only in part still shows.
    pub fn stored_groups(&self) -> Result<std::collections::BTreeSet<crate::GroupId>, Error> {
        let mut groups = std::collections::BTreeSet::new();
        for cf in [Cf::RaftMeta, Cf::RaftLog] {
            // One seek per group: to the first key of the group after the last one seen.
            let mut it = self.rocks.raw_iterator_cf(self.cf(cf));
            it.seek_to_first();
            while let Some(key) = it.key() {
                let Some(group) = key.get(..8).map(|g| u64::from_be_bytes(g.try_into().expect("8 bytes"))) else {
                    break;
                };
                groups.insert(group);
                match group.checked_add(1) {
                    Some(next) => it.seek(crate::key(next, 0)),
                    None => break,
                }
            }
            it.status()?;
        }
        match std::fs::read_dir(self.dir.join("segments")) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(group) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
                        groups.insert(group);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(groups)
    }

    /// Waits until every WAL write made before this call is on disk.
    pub async fn sync(&self) -> Result<(), std::io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_sync(move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or_else(|_| Err(std::io::Error::other("wal syncer stopped")))
    }

    /// Flushes the state machines' memtables to SST files, atomically across column
    /// families, so that every [`Durability::Replayable`] write made before this call
    /// survives a crash.
    /// Blocking. Callers that arrive while a flush is running share the next one, so many
    /// raft groups snapshotting at once cause one or two flushes, not one each.
    pub fn flush_memtables(&self) -> Result<(), Error> {
        let ticket = self.flushes_started.load(Ordering::SeqCst) + 1;
        let mut completed = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        if *completed >= ticket {
            // A flush that started after this call's writes has completed.
            return Ok(());
        }
        let number = self.flushes_started.fetch_add(1, Ordering::SeqCst) + 1;
        // Only the state machine's column families: they are the ones written without the
        // WAL. The raft log stays in its memtable, so entries purged after this snapshot
        // are dropped there instead of being written to an SST first.
        let cfs: Vec<&ColumnFamily> = Cf::REPLAYABLE.iter().map(|cf| self.cf(*cf)).collect();
        let mut fo = FlushOptions::default();
        fo.set_wait(true);
        self.rocks.flush_cfs_opt(&cfs, &fo)?;
        *completed = number;
        Ok(())
    }
}

impl Drop for Db {
    /// Stops the syncer after it has synced everything queued, so the database is closed
    /// (and its lock released) when the last handle goes.
    fn drop(&mut self) {
        self.syncer.take();
        if let Some(t) = self.syncer_thread.take() {
            let _ = t.join();
        }
    }
}

static SYNCER_FAILED: AtomicBool = AtomicBool::new(false);

/// Makes everything written to `files`, and the WAL if `wal`, durable.
///
/// Each `fdatasync` is a device cache flush, and the device runs them one after another
/// (measured here: 2 files took 1.6x one, 4 took 2.4x). Up to [`SYNCFS_FROM`] - 1 targets
/// get their own syncs; from there on one `syncfs` per filesystem instead (4 files took as
/// long as one `fdatasync`), at the price of also waiting for whatever else is dirty there:
/// measured here, right after a build, one took 860 ms. RocksDB writes its WAL records to
/// the OS on every write, so `syncfs` covers them.
/// Targets (files, and the WAL) from which one `syncfs` replaces their separate syncs.
const SYNCFS_FROM: usize = 16;

fn sync_all(db: &DB, dir: &std::fs::File, files: &[Arc<std::fs::File>], wal: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let wal_err = |e: rocksdb::Error| std::io::Error::other(format!("wal sync failed: {e}"));
    let seg_err = |e: std::io::Error| std::io::Error::other(format!("segment sync failed: {e}"));
    if files.len() + usize::from(wal) < SYNCFS_FROM {
        for f in files {
            f.sync_data().map_err(seg_err)?;
        }
        if wal {
            db.flush_wal(true).map_err(wal_err)?;
        }
        return Ok(());
    }
    db.flush_wal(false).map_err(wal_err)?;
    let mut devices = if wal { vec![(dir.metadata()?.dev(), dir.as_raw_fd())] } else { Vec::new() };
    for f in files {
        let dev = f.metadata()?.dev();
        if !devices.iter().any(|(d, _)| *d == dev) {
            devices.push((dev, f.as_raw_fd()));
        }
    }
    for (_, fd) in devices {
        // SAFETY: a plain syscall on a descriptor this function's callers keep open.
        if unsafe { libc::syncfs(fd) } != 0 {
            return Err(seg_err(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The syncer loop: take everything queued, sync each segment file written to once and
/// the WAL once, complete them all.
fn run_syncer(db: &DB, dir: std::fs::File, rx: mpsc::Receiver<SyncJob>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let wal = jobs.iter().any(|j| j.wal);
        let mut files: Vec<Arc<std::fs::File>> = jobs.iter_mut().flat_map(|j| j.files.drain(..)).collect();
        files.sort_by_key(|f| Arc::as_ptr(f) as usize);
        files.dedup_by_key(|f| Arc::as_ptr(f) as usize);
        let waiting: Vec<SyncCallback> = jobs.into_iter().map(|j| j.callback).collect();
        let started = Instant::now();
        let result = if SYNCER_FAILED.load(Ordering::Relaxed) {
            Err(std::io::Error::other("an earlier sync failed"))
        } else {
            sync_all(db, &dir, &files, wal)
        };
        let took = started.elapsed();
        metrics::histogram!("quarry_fsync_seconds").record(took.as_secs_f64());
        if took > std::time::Duration::from_millis(20) {
            tracing::warn!(took_ms = took.as_millis() as u64, callbacks = waiting.len(), "slow wal sync");
        }
        metrics::counter!("quarry_fsync_callbacks_total").increment(waiting.len() as u64);
        if let Err(e) = &result {
            // After a failed fsync the page cache may no longer match the disk: stop
            // acknowledging anything rather than ack data that may be gone.
            SYNCER_FAILED.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "fsync failed; the node stops accepting writes");
        }
        for cb in waiting {
            cb(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}
