//! What a process leaves in the shared memory directory when it dies without
//! running destructors (SIGKILL, the OOM killer, `System.halt`), and how the
//! next process to start the crate removes it.
//!
//! # Sessions
//!
//! Each copy of the crate in a process holds a *session*: the file
//! `.shmex-session-<tag>` in the shared memory directory, locked with
//! `flock(2)` for as long as the process lives. `<tag>` is the one in every
//! name this copy generates (`/shmex-<tag><counter>`). The kernel lets go of
//! a lock when its holder dies, however it dies and whatever pid namespace it
//! was in, and nothing else does: a session file whose lock can be taken
//! belongs to a dead process. Pids, which are reused and differ between
//! namespaces, are never looked at.
//!
//! A session file is made under a temporary name (`.shmex-opening-<tag>`),
//! locked, and only then renamed into place, so that no live session is ever
//! seen unlocked. A sweep that takes the lock of an opening file (its maker
//! died, or has not locked it yet) removes it; a maker that finds its file
//! gone once it has the lock starts over.
//!
//! # The journal
//!
//! Generated names need no bookkeeping: their tag says whose they are, so
//! allocating costs nothing here. The session file is the journal of the
//! other names: one record, of fixed size, per name and file this copy
//! guards without having generated it (names chosen by callers, other
//! processes' segments), cleared when its last guard goes; and one per
//! segment under a name of the generated form handed out unguarded on
//! purpose (from C), which is *kept*: it is the caller's, not a leftover,
//! whichever copy's tag its name has.
//!
//! # The sweep
//!
//! Starting a session sweeps the directory once, before the first call of
//! the process returns. For each dead session it removes the segments of its
//! tag (but the kept ones) and the guarded names of its journal while they
//! still lead to the file recorded; it spares whatever a live session's
//! journal lists (another process guards it too), and anything that is not a
//! regular file. Then it removes the dead session's file.
//!
//! Owns the session file and its journal; knows nothing of guards, which
//! record and clear their names here.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::errno::Errno;

use crate::error::Error;
use crate::io;
use crate::name::{self, ShmName, NAME_MAX, TAG_LEN};
use crate::sys::{self, Identity, Locked};

/// Where a live session's file is.
const SESSION: &str = ".shmex-session-";
/// Where a session file is made, before it is locked.
const OPENING: &str = ".shmex-opening-";

/// The size of a journal record: its kind, the file's identity, its name
/// (without the leading slash) and a NUL.
const RECORD: usize = 288;
const NAME_AT: usize = 24;
// The name, its NUL included, fits.
const _: () = assert!(NAME_AT + NAME_MAX < RECORD);

/// What a journal record says of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// A guard of this process holds the segment: remove it when the
    /// process is dead.
    Guarded = 1,
    /// A generated segment handed out without a guard: leave it.
    Kept = 2,
}

/// This copy of the crate's session, started (and the directory swept) on
/// first use; `None` where the directory cannot be listed or locked (the
/// portable OS layer): nothing is recorded there, nothing swept.
pub(crate) fn start() -> Option<&'static Session> {
    static STARTED: OnceLock<Option<Session>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let session = Session::open(name::process_tag())?;
            sweep();
            Some(session)
        })
        .as_ref()
}

/// Records that this process holds `name`, the file `identity`, as `kind`;
/// each record is cleared by one [`clear`] of the same three. Names this copy
/// generated are only recorded when kept: their tag says the rest. Whether
/// the record was written (or needs none); `false` when the journal could
/// not be written (a full `/dev/shm`).
pub(crate) fn record(name: &ShmName, identity: Identity, kind: Kind) -> bool {
    if kind == Kind::Guarded && name.is_generated_here() {
        return true;
    }
    start().is_none_or(|session| session.journal().record(name, identity, kind))
}

/// Clears one [`record`] of `name`, `identity` and `kind`.
pub(crate) fn clear(name: &ShmName, identity: Identity, kind: Kind) {
    if kind == Kind::Guarded && name.is_generated_here() {
        return;
    }
    if let Some(session) = start() {
        session.journal().clear(name, identity, kind);
    }
}

/// Clears every kept record of `name`: it is being unlinked.
pub(crate) fn clear_kept(name: &ShmName) {
    if !name.is_generated() {
        return; // only names of a generated form are kept
    }
    if let Some(session) = start() {
        let mut journal = session.journal();
        let kept: Vec<_> = journal
            .held
            .keys()
            .filter(|(held, _, kind)| *kind == Kind::Kept && held == name)
            .map(|(_, identity, _)| *identity)
            .collect();
        for identity in kept {
            journal.clear(name, identity, Kind::Kept);
        }
    }
}

/// A live session: its locked file and what is recorded in it.
pub(crate) struct Session {
    journal: Mutex<Journal>,
}

struct Journal {
    file: Locked,
    /// The slot and count of each record held.
    held: HashMap<(ShmName, Identity, Kind), (u64, usize)>,
    /// Slots cleared, to reuse.
    free: Vec<u64>,
    /// The first slot never used.
    end: u64,
    /// How many records may be held before kept ones that are gone are
    /// looked for: a kept segment is often unlinked by the process it was
    /// handed to, which tells nobody here.
    purge_at: usize,
}

/// The fewest records held before kept ones that are gone are looked for.
const PURGE_FROM: usize = 1024;

impl Session {
    fn open(tag: &str) -> Option<Session> {
        let final_name = reserved(SESSION, tag.as_bytes())?;
        let opening = reserved(OPENING, tag.as_bytes())?;
        // A sweep that removed our opening file makes us start over; it
        // cannot do so once the file is locked, so twice is plenty.
        for _ in 0..3 {
            let fd = sys::create(&opening).ok()?;
            let file = sys::lock(fd, true).ok()?;
            match sys::rename(&opening, &final_name) {
                Ok(()) => {
                    let journal = Journal {
                        file,
                        held: HashMap::new(),
                        free: Vec::new(),
                        end: 0,
                        purge_at: PURGE_FROM,
                    };
                    return Some(Session {
                        journal: Mutex::new(journal),
                    });
                }
                Err(Error::Os(Errno::ENOENT, _)) => continue,
                Err(_) => {
                    sys::unlink(&opening);
                    return None;
                }
            }
        }
        None
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // Writes of whole records: a panic cannot leave the map inconsistent
        // with the file in a way that matters more than a lost record.
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Journal {
    fn record(&mut self, name: &ShmName, identity: Identity, kind: Kind) -> bool {
        if self.held.len() >= self.purge_at {
            self.purge_kept();
            self.purge_at = PURGE_FROM.max(2 * self.held.len());
        }
        let key = (name.clone(), identity, kind);
        if let Some((_, count)) = self.held.get_mut(&key) {
            *count += 1;
            return true;
        }
        let Ok(canonical) = name.canonical() else {
            return true; // a name no segment can have
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.end += 1;
            self.end - 1
        });
        let mut record = [0u8; RECORD];
        record[0] = kind as u8;
        let [device, inode] = identity.to_bits();
        record[8..16].copy_from_slice(&device.to_le_bytes());
        record[16..24].copy_from_slice(&inode.to_le_bytes());
        record[NAME_AT..NAME_AT + canonical.len()].copy_from_slice(canonical);
        if io::write_all(self.fd(), &record, slot * RECORD as u64).is_ok() {
            self.held.insert(key, (slot, 1));
            true
        } else {
            self.free.push(slot);
            false
        }
    }

    fn clear(&mut self, name: &ShmName, identity: Identity, kind: Kind) {
        let key = (name.clone(), identity, kind);
        let Some((slot, count)) = self.held.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let slot = *slot;
        self.held.remove(&key);
        // A record whose first byte is 0 is free; were this write to fail, a
        // sweep would find the name gone or leading to another file.
        if io::write_all(self.fd(), &[0], slot * RECORD as u64).is_ok() {
            self.free.push(slot);
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Clears the kept records whose name no longer leads to their file:
    /// the segment was unlinked by whoever it was handed to.
    fn purge_kept(&mut self) {
        let gone: Vec<_> = self
            .held
            .keys()
            .filter(|(name, identity, kind)| {
                *kind == Kind::Kept
                    && sys::status_of_name(name).map(|status| status.identity) != Ok(*identity)
            })
            .cloned()
            .collect();
        for (name, identity, kind) in gone {
            while self.held.contains_key(&(name.clone(), identity, kind)) {
                self.clear(&name, identity, kind);
            }
        }
    }
}

/// A name of the crate's own files (`prefix` and `tag`); these never clash
/// with a segment's, nor with a generated one.
fn reserved(prefix: &str, tag: &[u8]) -> Option<ShmName> {
    ShmName::reserved(&[prefix.as_bytes(), tag].concat())
}

/// A record read back from a journal.
struct Recorded {
    kind: Kind,
    name: Vec<u8>,
    identity: [u64; 2],
}

/// The largest journal read: 58,000 names guarded at once. A larger one is
/// not a journal this crate wrote (a file planted under a session's name),
/// and is not read at all.
const JOURNAL_MAX: u64 = 16 << 20;

/// The records of a session file; `None` when it cannot be a journal this
/// crate wrote: too large, or not this user's.
fn read_journal(fd: BorrowedFd) -> Option<Vec<Recorded>> {
    let status = sys::status_of(fd).ok()?;
    if status.owner != sys::user() || status.len > JOURNAL_MAX {
        return None;
    }
    let mut bytes = vec![0; usize::try_from(status.len).ok()?];
    io::read_exact(fd, &mut bytes, 0).ok()?;
    let records = bytes
        .chunks_exact(RECORD)
        .filter_map(|record| {
            let kind = match record[0] {
                1 => Kind::Guarded,
                2 => Kind::Kept,
                _ => return None,
            };
            let word =
                |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap_or([0; 8]));
            let name = &record[NAME_AT..];
            let len = name.iter().position(|&byte| byte == 0)?;
            Some(Recorded {
                kind,
                name: name[..len].to_vec(),
                identity: [word(8), word(16)],
            })
        })
        .collect();
    Some(records)
}

/// A dead session found by a sweep, still locked by it.
struct Dead {
    file_name: ShmName,
    file: Locked,
    tag: Vec<u8>,
    records: Vec<Recorded>,
}

/// Removes what dead sessions left (see the module docs); best effort: what
/// cannot be looked at is left alone.
fn sweep() {
    let Ok(names) = sys::names() else { return };
    let mut dead = Vec::new();
    let mut spared: HashSet<(Vec<u8>, [u64; 2])> = HashSet::new();
    for file_name in &names {
        let (opening, tag) = if let Some(tag) = file_name.strip_prefix(SESSION.as_bytes()) {
            (false, tag)
        } else if let Some(tag) = file_name.strip_prefix(OPENING.as_bytes()) {
            (true, tag)
        } else {
            continue;
        };
        // This process's own session is found locked, as any live one.
        if tag.len() != TAG_LEN {
            continue;
        }
        let Some(name) = ShmName::reserved(file_name) else {
            continue;
        };
        let Ok(fd) = sys::open(&name) else { continue };
        match sys::lock(fd, false) {
            // A dead maker of an opening file made no segment yet: create_unique
            // waits for the session. Only the file itself goes.
            Ok(file) if opening => remove_own_file(&name, &file),
            Ok(file) => {
                // A journal that cannot be ours (another user's file, too
                // large) names nothing to remove: the session is left.
                if let Some(records) = read_journal(file.as_fd()) {
                    dead.push(Dead {
                        records,
                        file_name: name,
                        file,
                        tag: tag.to_vec(),
                    });
                }
            }
            Err((fd, _)) => spared.extend(
                read_journal(fd.as_fd())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|record| (record.name, record.identity)),
            ),
        }
    }
    // Kept segments of any dead copy of the crate stay, whichever copy's
    // tag their name has.
    let kept: HashSet<&[u8]> = dead
        .iter()
        .flat_map(|session| &session.records)
        .filter(|record| record.kind == Kind::Kept)
        .map(|record| record.name.as_slice())
        .collect();
    for session in &dead {
        let generated = names.iter().filter(|name| {
            name::generated_tag(name) == Some(session.tag.as_slice())
                && !kept.contains(name.as_slice())
        });
        for name in generated {
            remove_unless_spared(name, None, &spared);
        }
        for record in &session.records {
            if record.kind == Kind::Guarded {
                remove_unless_spared(&record.name, Some(record.identity), &spared);
            }
        }
        remove_own_file(&session.file_name, &session.file);
    }
}

/// Removes the session or opening file `name`, locked as `file`, if the
/// name still leads to it.
fn remove_own_file(name: &ShmName, file: &Locked) {
    let identity = sys::status_of(file.as_fd()).map(|status| status.identity);
    remove_if(name, |found| Ok(found) == identity);
}

/// Removes the segment `name` if it is the file `identity` (any, if `None`)
/// and no live session spares it.
fn remove_unless_spared(
    name: &[u8],
    identity: Option<[u64; 2]>,
    spared: &HashSet<(Vec<u8>, [u64; 2])>,
) {
    let Some(name_key) = ShmName::new(name) else {
        return;
    };
    remove_if(&name_key, |found| {
        let bits = found.to_bits();
        identity.is_none_or(|identity| identity == bits) && !spared.contains(&(name.to_vec(), bits))
    });
}

/// Unlinks `name` if it leads to a regular file that `ours` recognizes.
fn remove_if(name: &ShmName, ours: impl FnOnce(Identity) -> bool) {
    if let Ok(status) = sys::status_of_name(name) {
        if ours(status.identity) {
            sys::unlink(name);
        }
    }
}

#[cfg(all(test, target_os = "linux", not(feature = "posix-sys")))]
mod tests {
    use super::*;

    /// The tags of the live sessions in the directory, this one's included.
    fn live_tags() -> Vec<Vec<u8>> {
        sys::names()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| name.strip_prefix(SESSION.as_bytes()).map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn a_session_is_a_locked_file_named_for_its_tag() {
        assert!(start().is_some());
        assert!(live_tags().contains(&name::process_tag().as_bytes().to_vec()));
        let file = reserved(SESSION, name::process_tag().as_bytes()).unwrap();
        let fd = sys::open(&file).unwrap();
        let refused = sys::lock(fd, false).map(drop).unwrap_err().1;
        assert_eq!(refused, Errno::EWOULDBLOCK);
    }

    #[test]
    fn records_are_written_once_and_cleared_with_the_last() {
        let session = start().unwrap();
        let name = ShmName::new(b"shmex-journal-test-record").unwrap();
        let identity = Identity {
            device: 1,
            inode: 7,
        };
        let listed = || {
            let journal = session.journal();
            read_journal(journal.fd())
                .unwrap()
                .iter()
                .filter(|record| record.name == b"shmex-journal-test-record")
                .count()
        };
        record(&name, identity, Kind::Guarded);
        record(&name, identity, Kind::Guarded);
        assert_eq!(listed(), 1);
        clear(&name, identity, Kind::Guarded);
        assert_eq!(listed(), 1);
        clear(&name, identity, Kind::Guarded);
        assert_eq!(listed(), 0);
    }

    #[test]
    fn kept_records_of_segments_gone_are_purged() {
        let session = start().unwrap();
        let identity = Identity {
            device: 1,
            inode: 9,
        };
        // Kept segments that their receivers unlinked long ago.
        for i in 0..3 * PURGE_FROM {
            let name = ShmName::new(format!("purge-test-{}-{i}", std::process::id()).as_bytes());
            assert!(record(&name.unwrap(), identity, Kind::Kept));
        }
        let left = session
            .journal()
            .held
            .keys()
            .filter(|(name, _, _)| format!("{name:?}").starts_with("\"/purge-test-"))
            .count();
        assert!(left <= PURGE_FROM, "{left} kept records of nothing left");
    }

    #[test]
    fn generated_guarded_names_are_not_recorded() {
        let session = start().unwrap();
        let name = ShmName::generate();
        let identity = Identity {
            device: 1,
            inode: 8,
        };
        record(&name, identity, Kind::Guarded);
        assert!(
            session.journal().held.is_empty() || {
                let journal = session.journal();
                !journal.held.keys().any(|(held, _, _)| *held == name)
            }
        );
        record(&name, identity, Kind::Kept);
        assert!(session
            .journal()
            .held
            .keys()
            .any(|(held, _, kind)| *held == name && *kind == Kind::Kept));
        clear(&name, identity, Kind::Kept);
    }

    /// Held by the tests that plant files and sweep: one's sweep would take
    /// the other's half-made dead session for a whole one.
    static SWEEPING: Mutex<()> = Mutex::new(());

    /// A tag no live process has: a test's dead session.
    fn unused_tag() -> String {
        use std::hash::{BuildHasher, RandomState};
        let random = RandomState::new().hash_one(std::time::Instant::now());
        format!("zz{:09}", random % 1_000_000_000)
    }

    #[test]
    fn planted_files_make_a_sweep_remove_nothing() {
        let _sweeping = SWEEPING.lock().unwrap_or_else(PoisonError::into_inner);
        // An opening file nobody holds: its maker had made no segment.
        let tag = unused_tag();
        let (segment, _) = made(&tag, "shmex-TAG0000000000001");
        let (opening, _) = made(&tag, ".shmex-opening-TAG");
        // A session file far larger than any journal: not read at all.
        let huge_tag = unused_tag();
        let (huge_segment, _) = made(&huge_tag, "shmex-TAG0000000000001");
        let (huge, _) = made(&huge_tag, ".shmex-session-TAG");
        let fd = sys::open(&huge).unwrap();
        sys::resize(fd.as_fd(), 1 << 40).unwrap();

        sweep();

        assert!(exists(&segment), "an opening file's tag removes nothing");
        assert!(!exists(&opening), "the opening file itself goes");
        assert!(
            exists(&huge_segment),
            "an unreadable journal removes nothing"
        );
        assert!(exists(&huge));
        for name in [segment, huge_segment, huge] {
            sys::unlink(&name);
        }
    }

    /// A name in the shared memory directory, with `tag`'s generated form
    /// when `generated`.
    fn made(tag: &str, what: &str) -> (ShmName, Identity) {
        let name = what.replace("TAG", tag);
        let name = if name.starts_with('.') {
            ShmName::reserved(name.as_bytes()).unwrap()
        } else {
            ShmName::new(name.as_bytes()).unwrap()
        };
        let fd = sys::create(&name).unwrap();
        (name, sys::status_of(fd.as_fd()).unwrap().identity)
    }

    fn exists(name: &ShmName) -> bool {
        sys::status_of_name(name).is_ok()
    }

    #[test]
    fn a_sweep_removes_what_a_dead_session_guarded_and_nothing_else() {
        let _sweeping = SWEEPING.lock().unwrap_or_else(PoisonError::into_inner);
        let own = name::process_tag();
        let tag = unused_tag();
        let (generated, _) = made(&tag, "shmex-TAG0000000000001");
        let (kept, kept_identity) = made(&tag, "shmex-TAG0000000000002");
        let (spared, spared_identity) = made(&tag, "shmex-TAG0000000000003");
        let (named, named_identity) = made(&tag, "sweep-test-TAG-named");
        let (replaced, _) = made(&tag, "sweep-test-TAG-replaced");
        let (unrelated, _) = made(&tag, "sweep-test-TAG-unrelated");
        let fifo = ShmName::new(format!("shmex-{tag}0000000000004").as_bytes()).unwrap();
        let fifo_path = format!("/dev/shm/shmex-{tag}0000000000004");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo_path)
            .status()
            .unwrap()
            .success());

        // The dead session's file: written locked under a name no sweep
        // reads, put in place, then unlocked: its journal as it left it.
        let (draft, _) = made(&tag, "sweep-test-TAG-journal");
        let file = ShmName::reserved(format!(".shmex-session-{tag}").as_bytes()).unwrap();
        let fd = sys::open(&draft).unwrap();
        let mut dead = Journal {
            file: sys::lock(fd, false).unwrap(),
            held: HashMap::new(),
            free: Vec::new(),
            end: 0,
            purge_at: PURGE_FROM,
        };
        dead.record(&kept, kept_identity, Kind::Kept);
        dead.record(&named, named_identity, Kind::Guarded);
        let stale = Identity {
            device: named_identity.device,
            inode: named_identity.inode.wrapping_add(1_000_000),
        };
        dead.record(&replaced, stale, Kind::Guarded);
        sys::rename(&draft, &file).unwrap();
        drop(dead);
        // A live process (this one) guards one of the dead one's segments.
        record(&spared, spared_identity, Kind::Guarded);

        sweep();

        assert!(!exists(&generated), "its generated segment goes");
        assert!(!exists(&named), "its guarded named segment goes");
        assert!(!exists(&file), "its session file goes");
        assert!(exists(&kept), "a segment it handed out unguarded stays");
        assert!(exists(&spared), "a segment a live process guards stays");
        assert!(exists(&replaced), "a name leading to another file stays");
        assert!(exists(&unrelated), "what it never guarded stays");
        assert!(
            std::fs::symlink_metadata(&fifo_path).is_ok(),
            "a FIFO stays"
        );
        assert!(live_tags().contains(&own.as_bytes().to_vec()));

        clear(&spared, spared_identity, Kind::Guarded);
        for name in [kept, spared, replaced, unrelated, fifo] {
            sys::unlink(&name);
        }
    }
}
