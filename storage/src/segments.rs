//! Segment files: where a partition's produced bytes reach the disk, once.
//!
//! A partition group's raft entries carry record batches. The raft log store writes those
//! bytes to the group's current segment file and keeps only their location ([`BlobLoc`])
//! in RocksDB; the partition log then indexes the same bytes by offset. A produced byte is
//! thus written once, to a segment, instead of once to the WAL and again to an SST.
//!
//! A group's files are `<root>/<group>/<first raft index, 20 digits>.log`, append-only.
//! Every entry of the group is a record there (header, entry, payloads), so the files are
//! the raft log itself and RocksDB's copy of the entries is an index: an append is durable
//! once its segment file is synced, without the WAL, and at open the records past the
//! last one RocksDB knows are indexed again ([`Segments::scan`]). The group sync
//! fdatasyncs the files an append wrote to before it acknowledges the append (see
//! [`crate::Db::after_sync_files`]); writeback is started early, every [`KICK_BYTES`], so
//! that sync has little left to do.
//!
//! A file is deleted once nothing refers into it: every raft entry in it is purged, and
//! every batch in it is below the partition's log start. Both are tracked as raft indexes
//! (files are named by the first index they hold, and hold entries in index order), so a
//! file is garbage when the next file starts at or below both floors.
//!
//! Batches a replica receives with a raft snapshot (the history it lagged behind, copied
//! from another replica) were carried by no entry of its own log: they go to a data file,
//! `<snapshot index, 20 digits>.data`, plain bytes without records. Their batches count as
//! carried by the snapshot's last entry, so the data floor frees such a file like any
//! other; being no part of the raft log, data files are never scanned or truncated.

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

/// Where an entry's payload bytes are: file, position, length. (The record's CRC covers
/// them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLoc {
    pub segment: u64,
    pub pos: u64,
    pub len: u32,
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

/// Bytes of a record header: magic, CRC32C of the rest of the record, entry length,
/// padding, payload length, raft index (all little-endian).
pub const HEADER: usize = 32;
const MAGIC: u32 = u32::from_le_bytes(*b"QSG1");

/// Where a whole record (header, entry, payloads) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    pub segment: u64,
    pub pos: u64,
    pub len: u64,
}

impl RecordLoc {
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.segment.to_be_bytes());
        b[8..16].copy_from_slice(&self.pos.to_be_bytes());
        b[16..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<RecordLoc> {
        let u = |i: usize| b.get(i..i + 8).map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")));
        Some(RecordLoc { segment: u(0)?, pos: u(8)?, len: u(16)? })
    }
}

/// What [`Segments::append`] wrote.
pub struct Appended {
    pub file: Arc<File>,
    pub record: RecordLoc,
    pub locs: Vec<BlobLoc>,
    pub entry: Vec<u8>,
}

/// Reads and checks the record at `pos` of a file `len` bytes long: its raft index, its
/// body (entry then payloads) and the entry's length. `None` if cut short or corrupt.
fn read_record(file: &File, pos: u64, len: u64) -> Option<(u64, Vec<u8>, usize)> {
    let mut head = [0u8; HEADER];
    if pos + HEADER as u64 > len || file.read_exact_at(&mut head, pos).is_err() {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let (magic, crc, entry_len, blobs_len, index) = (u32_at(0), u32_at(4), u32_at(8) as u64, u64_at(16), u64_at(24));
    let body_len = entry_len.checked_add(blobs_len)?;
    if magic != MAGIC || pos + HEADER as u64 + body_len > len {
        return None;
    }
    let mut body = vec![0u8; body_len as usize];
    file.read_exact_at(&mut body, pos + HEADER as u64).ok()?;
    (crc32c::crc32c(&body) == crc).then_some((index, body, entry_len as usize))
}

/// Segment ids at or above this name data files (`id - DATA_FILE` is the snapshot index).
pub const DATA_FILE: u64 = 1 << 63;

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
    /// Data files, by snapshot index.
    data_files: BTreeMap<u64, Arc<File>>,
    active: Option<Active>,
    /// Lowest raft index whose entry holds a live batch, and pending raises of it, each
    /// with the raft index at which it was applied: a raise takes effect only once raft
    /// has purged past that index, by then the apply that made it is flushed.
    data_floor: u64,
    pending_floors: VecDeque<(u64, u64)>,
}

fn file_name(id: u64) -> String {
    match id.checked_sub(DATA_FILE) {
        Some(index) => format!("{index:020}.data"),
        None => format!("{id:020}.log"),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Segments {
    /// Opens the files of the group whose directory is `dir` (created on first write).
    pub fn open(dir: PathBuf) -> std::io::Result<Arc<Segments>> {
        let mut files = BTreeMap::new();
        let mut data_files = BTreeMap::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let (map, id) = match (name.strip_suffix(".log"), name.strip_suffix(".data")) {
                        (Some(id), _) => (&mut files, id.parse::<u64>()),
                        (_, Some(id)) => (&mut data_files, id.parse::<u64>()),
                        _ => continue,
                    };
                    let Ok(id) = id else { continue };
                    let file = OpenOptions::new().read(true).write(true).open(entry.path())?;
                    map.insert(id, Arc::new(file));
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
            inner: Mutex::new(Inner { files, data_files, active, data_floor: 0, pending_floors: VecDeque::new() }),
        }))
    }

    /// Size at which a file is closed and the next one started.
    pub fn set_segment_bytes(&self, bytes: u64) {
        self.segment_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the entry at raft index `index` as one record at the end of the current
    /// file: a [`HEADER`]-byte header, the entry as `encode` serialises it, then
    /// `payloads`. `encode` gets the locations the payloads will have and must return
    /// bytes of the same length whatever they are (it is called twice: to measure, then
    /// to write). Returns the file written to (to be synced before the entry counts as
    /// durable), where the record is, the payloads' locations, and the encoded entry.
    pub fn append(
        &self,
        index: u64,
        payloads: &[Bytes],
        mut encode: impl FnMut(&[BlobLoc]) -> Vec<u8>,
    ) -> std::io::Result<Appended> {
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
        let too_big = || std::io::Error::other("raft entry payload over 4 GiB");
        let mut locs: Vec<BlobLoc> = payloads
            .iter()
            .map(|p| Ok(BlobLoc { segment: active.id, pos: 0, len: u32::try_from(p.len()).map_err(|_| too_big())? }))
            .collect::<std::io::Result<_>>()?;
        let entry_len = encode(&locs).len() as u64;
        let mut pos = active.len + HEADER as u64 + entry_len;
        for loc in locs.iter_mut() {
            loc.pos = pos;
            pos += u64::from(loc.len);
        }
        let entry = encode(&locs);
        if entry.len() as u64 != entry_len {
            return Err(std::io::Error::other("entry encoding changed length with its locations"));
        }
        let blobs_len: u64 = locs.iter().map(|l| u64::from(l.len)).sum();
        let mut crc = crc32c::crc32c(&entry);
        for payload in payloads {
            crc = crc32c::crc32c_append(crc, payload);
        }
        let mut head = Vec::with_capacity(HEADER + entry.len());
        head.extend_from_slice(&MAGIC.to_le_bytes());
        head.extend_from_slice(&crc.to_le_bytes());
        head.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&blobs_len.to_le_bytes());
        head.extend_from_slice(&index.to_le_bytes());
        head.extend_from_slice(&entry);
        let record = RecordLoc { segment: active.id, pos: active.len, len: head.len() as u64 + blobs_len };
        active.file.write_all_at(&head, active.len)?;
        for (loc, payload) in locs.iter().zip(payloads) {
            active.file.write_all_at(payload, loc.pos)?;
        }
        active.len += record.len;
        if active.len - active.kicked >= KICK_BYTES {
            start_writeback(&active.file, active.kicked, active.len - active.kicked);
            active.kicked = active.len;
        }
        Ok(Appended { file: active.file.clone(), record, locs, entry })
    }

    /// Reads the records from `from` on (file and position; `None`: from the first file's
    /// start), in order, across files, handing each whole one to `f` (raft index, encoded
    /// entry, where it is) until `f` returns false. A record that is cut short or fails its
    /// CRC ends the log: it was never acknowledged, and neither was anything after it, so
    /// the file is truncated there and later files deleted. Returns how many were read.
    pub fn scan(
        &self,
        from: Option<(u64, u64)>,
        mut f: impl FnMut(u64, &[u8], RecordLoc) -> bool,
    ) -> std::io::Result<usize> {
        let files: Vec<(u64, Arc<File>)> = self.lock().files.iter().map(|(k, v)| (*k, v.clone())).collect();
        let (mut at, mut pos) = match from {
            Some((segment, pos)) => match files.iter().position(|(id, _)| *id == segment) {
                Some(i) => (i, pos),
                None => return Ok(0),
            },
            None => (0, 0),
        };
        let mut n = 0;
        while at < files.len() {
            let (id, file) = &files[at];
            let len = file.metadata()?.len();
            if pos >= len {
                at += 1;
                pos = 0;
                continue;
            }
            match read_record(file, pos, len) {
                Some((index, body, entry_len)) => {
                    let record = RecordLoc { segment: *id, pos, len: HEADER as u64 + body.len() as u64 };
                    n += 1;
                    if !f(index, &body[..entry_len], record) {
                        return Ok(n);
                    }
                    pos += record.len;
                }
                None => {
                    tracing::warn!(file = %file_name(*id), pos, "segment ends in a torn record; cutting it off");
                    self.truncate_at(*id, pos)?;
                    return Ok(n);
                }
            }
        }
        Ok(n)
    }

    /// Cuts the log at `pos` of `segment`: the file ends there, later files go. Synced.
    pub fn truncate_at(&self, segment: u64, pos: u64) -> std::io::Result<()> {
        let mut inner = self.lock();
        let later: Vec<u64> = inner.files.range(segment + 1..).map(|(k, _)| *k).collect();
        for id in later {
            inner.files.remove(&id);
            std::fs::remove_file(self.dir.join(file_name(id)))?;
        }
        let Some(file) = inner.files.get(&segment).cloned() else { return Ok(()) };
        file.set_len(pos)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        inner.active = Some(Active { id: segment, file, len: pos, kicked: pos });
        Ok(())
    }

    /// Whether the record at `loc` is all there, as written.
    pub fn verify(&self, loc: &RecordLoc) -> bool {
        let Ok(file) = self.file(loc.segment) else { return false };
        let Ok(len) = file.metadata().map(|m| m.len()) else { return false };
        read_record(&file, loc.pos, len).is_some_and(|(_, body, _)| HEADER as u64 + body.len() as u64 == loc.len)
    }

    fn file(&self, segment: u64) -> std::io::Result<Arc<File>> {
        let inner = self.lock();
        let file = match segment.checked_sub(DATA_FILE) {
            Some(index) => inner.data_files.get(&index),
            None => inner.files.get(&segment),
        };
        file.cloned().ok_or_else(|| {
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
        let len = len as usize;
        out.reserve(len);
        let mut done = 0;
        while done < len {
            let spare = out.spare_capacity_mut();
            // SAFETY: pread writes at most `len - done` bytes into the reserved, unused
            // capacity; only what it reports written is then marked initialised.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    spare.as_mut_ptr().add(done).cast(),
                    len - done,
                    (pos + done as u64) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("segment {} ends before {} bytes at {pos}", file_name(segment), len),
                    ))
                }
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: `len` bytes past the old length were written above.
        unsafe { out.set_len(out.len() + len) };
        Ok(())
    }

    /// Appends `payloads` to the data file of the snapshot whose last entry is `index`
    /// (created if need be) and syncs it. Returns where each payload is.
    pub fn write_data(&self, index: u64, payloads: &[Bytes]) -> std::io::Result<Vec<BlobLoc>> {
        let file = {
            let mut inner = self.lock();
            match inner.data_files.get(&index) {
                Some(file) => file.clone(),
                None => {
                    std::fs::create_dir_all(&self.dir)?;
                    let path = self.dir.join(file_name(DATA_FILE + index));
                    let file =
                        Arc::new(OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?);
                    sync_dir(&self.dir)?;
                    inner.data_files.insert(index, file.clone());
                    file
                }
            }
        };
        let mut pos = file.metadata()?.len();
        let mut locs = Vec::with_capacity(payloads.len());
        for payload in payloads {
            let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("payload over 4 GiB"))?;
            file.write_all_at(payload, pos)?;
            locs.push(BlobLoc { segment: DATA_FILE + index, pos, len });
            pos += u64::from(len);
        }
        file.sync_data()?;
        Ok(locs)
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
            let mut doomed: Vec<u64> = ids.windows(2).filter(|w| w[1] <= floor).map(|w| w[0]).collect();
            for id in &doomed {
                inner.files.remove(id);
            }
            // A data file's batches all count as carried by its snapshot's last entry.
            let data_floor = inner.data_floor;
            let dead: Vec<u64> = inner.data_files.range(..data_floor).map(|(k, _)| *k).collect();
            for index in dead {
                inner.data_files.remove(&index);
                doomed.push(DATA_FILE + index);
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
        let files = inner.files.values().chain(inner.data_files.values());
        let bytes = files.map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum();
        (inner.files.len() + inner.data_files.len(), bytes)
    }

    /// Deletes every file of the group.
    pub fn destroy(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        inner.files.clear();
        inner.data_files.clear();
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
