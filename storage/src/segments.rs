//! Segment files: where a partition's produced bytes reach the disk, once.
//!
//! A partition group's raft entries carry record batches. The raft log store writes those
//! bytes to the group's current segment file and keeps only their location ([`BlobLoc`])
//! in RocksDB; the partition log then indexes the same bytes by offset. A produced byte is
//! thus written once, to a segment, instead of once to the WAL and again to an SST.
//!
//! A group's files are `<root>/<group>/<first raft index, 20 digits>.log`, append-only.
//! The group sync fdatasyncs the files an append wrote to before it acknowledges the
//! append (see [`crate::Db::after_sync_files`]); writeback is started early, every
//! [`KICK_BYTES`], so that sync has little left to do.
//!
//! A file is deleted once nothing refers into it: every raft entry in it is purged, and
//! every batch in it is below the partition's log start. Both are tracked as raft indexes
//! (files are named by the first index they hold, and hold entries in index order), so a
//! file is garbage when the next file starts at or below both floors.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// A new file is started by the first entry written after the current one reaches this
/// size, unless [`Segments::set_segment_bytes`] says otherwise (Kafka's `segment.bytes`).
pub const SEGMENT_BYTES: u64 = 1 << 30;
/// Writeback of a file is started each time this much was written since the last start.
const KICK_BYTES: u64 = 1 << 20;

/// Where an entry's payload bytes are: file, position, length, and their CRC32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLoc {
    pub segment: u64,
    pub pos: u64,
    pub len: u32,
    pub crc: u32,
}

/// Payload bytes of a raft entry that the log store keeps in a segment file. In memory
/// `bytes` holds them; in RocksDB only `loc` is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub bytes: Bytes,
    /// Set by the log store when the bytes are written; local to this node.
    pub loc: Option<BlobLoc>,
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Self {
        Blob { bytes, loc: None }
    }
}

/// A raft command whose large payloads go to segment files.
pub trait HasBlobs {
    fn blobs_mut(&mut self) -> &mut [Blob] {
        &mut []
    }
}

/// One group's segment files.
pub struct Segments {
    dir: PathBuf,
    segment_bytes: AtomicU64,
    inner: Mutex<Inner>,
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
    /// Bytes up to which writeback has been started.
    kicked: u64,
}

struct Inner {
    files: BTreeMap<u64, Arc<File>>,
    active: Option<Active>,
    /// Lowest raft index whose entry holds a live batch, and pending raises of it, each
    /// with the raft index at which it was applied: a raise takes effect only once raft
    /// has purged past that index, by then the apply that made it is flushed.
    data_floor: u64,
    pending_floors: VecDeque<(u64, u64)>,
}

fn file_name(id: u64) -> String {
    format!("{id:020}.log")
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Segments {
    /// Opens the files of the group whose directory is `dir` (created on first write).
    pub fn open(dir: PathBuf) -> std::io::Result<Arc<Segments>> {
        let mut files = BTreeMap::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok())
                    else {
                        continue;
                    };
                    let file = OpenOptions::new().read(true).write(true).open(entry.path())?;
                    files.insert(id, Arc::new(file));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let active = match files.last_key_value() {
            Some((&id, file)) => {
                let len = file.metadata()?.len();
                Some(Active { id, file: file.clone(), len, kicked: len })
            }
            None => None,
        };
        Ok(Arc::new(Segments {
            dir,
            segment_bytes: AtomicU64::new(SEGMENT_BYTES),
            inner: Mutex::new(Inner { files, active, data_floor: 0, pending_floors: VecDeque::new() }),
        }))
    }

    /// Size at which a file is closed and the next one started.
    pub fn set_segment_bytes(&self, bytes: u64) {
        self.segment_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the blobs of the entry at raft index `index`, in order, each at the end of the
    /// current file; sets each blob's location and empties its bytes. Returns the file
    /// written to, which must be synced before the entry counts as durable.
    pub fn append(&self, index: u64, blobs: &mut [Blob]) -> std::io::Result<Arc<File>> {
        let segment_bytes = self.segment_bytes.load(Ordering::Relaxed);
        let mut inner = self.lock();
        let roll = match &inner.active {
            None => true,
            Some(a) => a.len >= segment_bytes && index > a.id,
        };
        if roll {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(file_name(index));
            let file = Arc::new(OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?);
            let len = file.metadata()?.len();
            // The new name must survive a crash along with the data synced into it.
            sync_dir(&self.dir)?;
            inner.files.insert(index, file.clone());
            inner.active = Some(Active { id: index, file, len, kicked: len });
        }
        let active = inner.active.as_mut().expect("an active file after roll");
        for blob in blobs.iter_mut() {
            let bytes = std::mem::take(&mut blob.bytes);
            let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("blob over 4 GiB"))?;
            active.file.write_all_at(&bytes, active.len)?;
            blob.loc = Some(BlobLoc { segment: active.id, pos: active.len, len, crc: crc32c::crc32c(&bytes) });
            active.len += u64::from(len);
        }
        if active.len - active.kicked >= KICK_BYTES {
            start_writeback(&active.file, active.kicked, active.len - active.kicked);
            active.kicked = active.len;
        }
        Ok(active.file.clone())
    }

    fn file(&self, segment: u64) -> std::io::Result<Arc<File>> {
        self.lock().files.get(&segment).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("segment {} is gone", file_name(segment)))
        })
    }

    /// Reads `len` bytes at `pos` of `segment`.
    pub fn read(&self, segment: u64, pos: u64, len: u32) -> std::io::Result<Bytes> {
        let mut out = BytesMut::new();
        self.read_into(segment, pos, len, &mut out)?;
        Ok(out.freeze())
    }

    /// Appends `len` bytes at `pos` of `segment` to `out`.
    pub fn read_into(&self, segment: u64, pos: u64, len: u32, out: &mut BytesMut) -> std::io::Result<()> {
        let file = self.file(segment)?;
        let start = out.len();
        out.resize(start + len as usize, 0);
        let read = file.read_exact_at(&mut out[start..], pos);
        if read.is_err() {
            out.truncate(start);
        }
        read
    }

    /// Whether the bytes at `loc` are all there, as written.
    pub fn verify(&self, loc: &BlobLoc) -> bool {
        self.read(loc.segment, loc.pos, loc.len).is_ok_and(|b| crc32c::crc32c(&b) == loc.crc)
    }

    /// Sets the data floor directly; only right after opening, before anything is applied.
    pub fn init_data_floor(&self, floor: u64) {
        self.lock().data_floor = floor;
    }

    /// Records that applying the entry at `applied` moved the lowest raft index holding a
    /// live batch to `floor`.
    pub fn raise_data_floor(&self, applied: u64, floor: u64) {
        self.lock().pending_floors.push_back((applied, floor));
    }

    /// Deletes the files nothing refers into, now that raft has purged up to `purged`.
    pub fn release(&self, purged: u64) -> std::io::Result<()> {
        let doomed: Vec<u64> = {
            let mut inner = self.lock();
            while let Some(&(applied, floor)) = inner.pending_floors.front() {
                if applied > purged {
                    break;
                }
                inner.data_floor = inner.data_floor.max(floor);
                inner.pending_floors.pop_front();
            }
            let floor = inner.data_floor.min(purged.saturating_add(1));
            let ids: Vec<u64> = inner.files.keys().copied().collect();
            let doomed: Vec<u64> = ids.windows(2).filter(|w| w[1] <= floor).map(|w| w[0]).collect();
            for id in &doomed {
                inner.files.remove(id);
            }
            doomed
        };
        for id in &doomed {
            std::fs::remove_file(self.dir.join(file_name(*id)))?;
        }
        Ok(())
    }

    /// Number of files and their total size.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        let bytes = inner.files.values().map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum();
        (inner.files.len(), bytes)
    }

    /// Deletes every file of the group.
    pub fn destroy(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        inner.files.clear();
        inner.active = None;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Starts writing back a range of `file` without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: plain syscall on an open descriptor; failure only means no early writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}
