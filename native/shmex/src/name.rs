//! Segment names: what identifies a segment, and fresh generated names.
//!
//! Owns the rules of POSIX shared memory names; knows nothing of the OS
//! calls that use them (`sys`).

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;

use crate::error::{Error, Syscall};

/// The prefix of every generated name.
pub const PREFIX: &str = "/shmex-";

/// The length of every generated name, in bytes: macOS refuses POSIX shared
/// memory names over 31.
pub const GENERATED_LEN: usize = 31;

/// The longest name a segment can have, leading slashes aside: a file name.
pub const NAME_MAX: usize = 255;

/// Names longer than this are refused whatever they hold, without reading
/// them: no path the OS takes is longer.
const PATH_MAX: usize = 4096;

/// Canonical names up to this many bytes (every generated one) live inline.
const INLINE: usize = GENERATED_LEN;

/// The name of a POSIX shared memory segment.
///
/// `shm_open(3)` ignores leading slashes, so `"/x"`, `"x"` and `"//x"` name
/// one segment: a `ShmName` is that segment's canonical name, without them,
/// and two spellings of one segment's name compare equal.
///
/// Names the OS would refuse (empty, `.`, `..`, an inner slash, over 255
/// bytes) are accepted here and fail with the OS's error when used; a name
/// over 4096 bytes is refused as too long without being read. Only a NUL
/// byte makes [`ShmName::new`] fail, as the OS would silently read the name
/// only up to it (and a guard would later unlink that other segment).
#[derive(Clone)]
pub struct ShmName(Repr);

#[derive(Clone)]
enum Repr {
    /// The canonical name and a NUL.
    Inline { len: u8, bytes: [u8; INLINE + 1] },
    /// The canonical name and a NUL, when longer.
    Heap(Box<[u8]>),
    /// A name the OS refuses with this error whenever it is used.
    Refused(Errno),
}

/// A name as `shm_open(3)` spells it, with one leading slash (empty for a
/// name the OS refuses), held on the stack: [`ShmName::to_posix`] without
/// the heap.
pub struct Posix {
    len: usize,
    bytes: [u8; NAME_MAX + 1],
}

impl std::ops::Deref for Posix {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The start of the names of the crate's own files (its sessions, see
/// `leftovers`): no caller's name may reach them.
pub(crate) const RESERVED: &[u8] = b".shmex-";

impl ShmName {
    /// A caller's name, in any spelling; `None` when it contains a NUL byte.
    /// Names starting with `.shmex-` are the crate's own files: the OS's
    /// `EACCES` whenever they are used.
    pub fn new(name: &[u8]) -> Option<ShmName> {
        let name = ShmName::any(name)?;
        let reserved = name.key().is_ok_and(|key| key.starts_with(RESERVED));
        Some(if reserved {
            ShmName(Repr::Refused(Errno::EACCES))
        } else {
            name
        })
    }

    /// The name of one of the crate's own files.
    pub(crate) fn reserved(name: &[u8]) -> Option<ShmName> {
        debug_assert!(name.starts_with(RESERVED));
        ShmName::any(name)
    }

    fn any(name: &[u8]) -> Option<ShmName> {
        if name.len() > PATH_MAX {
            return Some(ShmName(Repr::Refused(Errno::ENAMETOOLONG)));
        }
        // One pass over the bytes: a NUL anywhere, and slashes after the
        // leading ones.
        let leading = name.iter().take_while(|&&byte| byte == b'/').count();
        let canonical = &name[leading..];
        // Without an early exit the loop is a few vector instructions.
        let (nul, inner_slash) = canonical
            .iter()
            .fold((false, false), |(nul, slash), &byte| {
                (nul | (byte == 0), slash | (byte == b'/'))
            });
        if nul {
            return None;
        }
        let refusal = match canonical {
            [] | b"." | b".." => Some(Errno::EINVAL),
            _ if canonical.len() > NAME_MAX => Some(Errno::ENAMETOOLONG),
            _ if inner_slash => Some(Errno::EINVAL),
            _ => None,
        };
        if let Some(errno) = refusal {
            return Some(ShmName(Repr::Refused(errno)));
        }
        if canonical.len() > INLINE {
            let stored: Vec<u8> = canonical.iter().copied().chain([0]).collect();
            return Some(ShmName(Repr::Heap(stored.into_boxed_slice())));
        }
        let mut bytes = [0; INLINE + 1];
        bytes[..canonical.len()].copy_from_slice(canonical);
        Some(ShmName(Repr::Inline {
            len: canonical.len() as u8,
            bytes,
        }))
    }

    /// A fresh name, unique on this host: `/shmex-` followed by 24 base-36
    /// digits holding this OS process's id, a random tag drawn once per OS
    /// process, and a per-process counter.
    ///
    /// The pid keeps BEAMs on one host apart, the tag keeps apart processes
    /// whose pids coincide (other pid namespaces sharing `/dev/shm`, a reused
    /// pid), the counter keeps apart names made in one process. Segments are
    /// still created exclusively, so even a collision cannot open someone
    /// else's segment.
    pub fn generate() -> ShmName {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Written in place, without the leading slash: the canonical name,
        // made on every allocation without touching the heap.
        const LEN: usize = GENERATED_LEN - 1;
        let prefix = &PREFIX.as_bytes()[1..];
        let mut bytes = [0; INLINE + 1];
        let (head, digits) = bytes[..LEN].split_at_mut(prefix.len());
        head.copy_from_slice(prefix);
        let (tag, counter) = digits.split_at_mut(TAG_LEN);
        tag.copy_from_slice(process_tag().as_bytes());
        write_base36(count, counter);
        // Base-36 digits and a dash: no NUL, no slash, not a reserved name.
        ShmName(Repr::Inline {
            len: LEN as u8,
            bytes,
        })
    }

    /// Whether the name has the form of a generated one (of any process).
    pub(crate) fn is_generated(&self) -> bool {
        self.key().is_ok_and(|key| generated_tag(key).is_some())
    }

    /// Whether this copy of the crate generated the name (in this process).
    pub(crate) fn is_generated_here(&self) -> bool {
        self.key()
            .is_ok_and(|key| generated_tag(key) == Some(process_tag().as_bytes()))
    }

    /// The canonical name (no leading slash) and a NUL, or the error the OS
    /// gives for this name.
    pub(crate) fn canonical(&self) -> Result<&[u8], Errno> {
        match &self.0 {
            Repr::Inline { len, bytes } => Ok(&bytes[..=usize::from(*len)]),
            Repr::Heap(bytes) => Ok(bytes),
            Repr::Refused(errno) => Err(*errno),
        }
    }

    /// Whether `spelling` is a spelling of this name: what [`ShmName::new`]
    /// makes of it equals this name. Read in place, without validating or
    /// copying it: for a struct carrying the guard of its own name.
    pub fn is_spelled(&self, spelling: &[u8]) -> bool {
        if spelling.len() > PATH_MAX {
            return false;
        }
        let leading = spelling.iter().take_while(|&&byte| byte == b'/').count();
        // A name the OS accepts has neither NUL nor slash: nor has a
        // spelling equal to it. No reserved name is accepted.
        self.key()
            .is_ok_and(|key| key == &spelling[leading..] && !key.starts_with(RESERVED))
    }

    /// The name as `shm_open(3)` spells it, with one leading slash; empty for
    /// a name the OS refuses.
    pub fn to_posix(&self) -> Vec<u8> {
        self.posix().to_vec()
    }

    /// [`ShmName::to_posix`] on the stack: for the calls that pass a name on
    /// at every allocation.
    pub(crate) fn posix(&self) -> Posix {
        let mut posix = Posix {
            len: 0,
            bytes: [0; NAME_MAX + 1],
        };
        if let Ok(key) = self.key() {
            // A name the OS accepts is NAME_MAX bytes at most.
            posix.bytes[0] = b'/';
            posix.bytes[1..=key.len()].copy_from_slice(key);
            posix.len = key.len() + 1;
        }
        posix
    }

    /// Whether the OS refuses this name.
    pub fn is_refused(&self) -> bool {
        matches!(self.0, Repr::Refused(_))
    }

    /// The error any use of this name gives, if the OS refuses it: what
    /// `shm_open` would say.
    pub fn refusal(&self) -> Option<Error> {
        match self.0 {
            Repr::Refused(errno) => Some(Error::Os(errno, Syscall::ShmOpen)),
            _ => None,
        }
    }

    fn key(&self) -> Result<&[u8], Errno> {
        self.canonical().map(without_nul)
    }
}

fn without_nul(canonical: &[u8]) -> &[u8] {
    &canonical[..canonical.len() - 1]
}

impl PartialEq for ShmName {
    fn eq(&self, other: &ShmName) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ShmName {}

impl Hash for ShmName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.key() {
            Ok(key) => key.hash(state),
            Err(errno) => (errno as i32).hash(state),
        }
    }
}

impl fmt::Debug for ShmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key() {
            Ok(key) => write!(f, "\"/{}\"", key.escape_ascii()),
            Err(errno) => write!(f, "<refused name: {errno}>"),
        }
    }
}

/// The tag in every name this copy of the crate generates: 11 base-36
/// digits, this OS process's id and a random part drawn once.
pub(crate) fn process_tag() -> &'static str {
    static PROCESS_TAG: OnceLock<String> = OnceLock::new();
    PROCESS_TAG.get_or_init(|| {
        // RandomState is seeded from the OS's random source.
        let random = RandomState::new().hash_one(std::process::id());
        format!(
            "{}{}",
            base36(u64::from(std::process::id()), 5),
            base36(random, 6)
        )
    })
}

/// The tag of a generated name, given without its leading slash; `None`
/// for a name that is not one.
pub(crate) fn generated_tag(canonical: &[u8]) -> Option<&[u8]> {
    let digits = canonical.strip_prefix(&PREFIX.as_bytes()[1..])?;
    let valid = canonical.len() == GENERATED_LEN - 1
        && digits
            .iter()
            .all(|byte| byte.is_ascii_digit() || byte.is_ascii_lowercase());
    valid.then(|| &digits[..TAG_LEN])
}

/// The length of [`process_tag`].
pub(crate) const TAG_LEN: usize = 11;

/// The lowest `digits` base-36 digits of `value`, zero-padded.
fn base36(value: u64, digits: usize) -> String {
    let mut out = vec![0; digits];
    write_base36(value, &mut out);
    out.into_iter().map(char::from).collect()
}

/// Fills `out` with the lowest `out.len()` base-36 digits of `value`,
/// zero-padded.
fn write_base36(mut value: u64, out: &mut [u8]) {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 36) as usize];
        value /= 36;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn name(bytes: &[u8]) -> ShmName {
        ShmName::new(bytes).unwrap()
    }

    #[test]
    fn generated_names_are_short_prefixed_and_distinct() {
        let names: HashSet<ShmName> = (0..10_000).map(|_| ShmName::generate()).collect();
        assert_eq!(names.len(), 10_000);
        for name in &names {
            let posix = name.to_posix();
            let text = std::str::from_utf8(&posix).unwrap();
            assert!(text.starts_with(PREFIX), "{text}");
            assert_eq!(text.len(), GENERATED_LEN, "{text}");
            assert!(text[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
            // Made in place, it is what its spelling makes.
            assert_eq!(name.canonical(), ShmName::new(&posix).unwrap().canonical());
            assert!(name.is_generated_here());
        }
    }

    #[test]
    fn generated_names_carry_the_process_id() {
        let posix = ShmName::generate().to_posix();
        let pid = &posix[PREFIX.len()..PREFIX.len() + 5];
        assert_eq!(pid, base36(u64::from(std::process::id()), 5).as_bytes());
    }

    #[test]
    fn spellings_of_one_name_are_one_name() {
        assert_eq!(name(b"/x"), name(b"x"));
        assert_eq!(name(b"//x"), name(b"x"));
        assert_ne!(name(b"/x"), name(b"/y"));
        assert_eq!(name(b"x").to_posix(), b"/x");
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(name(b"//x")), hasher.hash_one(name(b"x")));
    }

    #[test]
    fn names_with_nul_bytes_are_refused() {
        assert!(ShmName::new(b"/a\0b").is_none());
        let long: Vec<u8> = [b'a'; 40].iter().chain(b"\0").copied().collect();
        assert!(ShmName::new(&long).is_none());
    }

    #[test]
    fn short_and_long_names_read_back_the_same() {
        for len in [1, INLINE - 1, INLINE, INLINE + 1, NAME_MAX] {
            let bytes = vec![b'x'; len];
            let shm = name(&bytes);
            assert_eq!(shm.to_posix(), [b"/", &bytes[..]].concat());
            assert_eq!(shm.canonical().unwrap(), [&bytes[..], b"\0"].concat());
            assert_eq!(shm, name(&bytes));
        }
    }

    #[test]
    fn names_the_os_refuses_carry_its_error() {
        let refused = |bytes: &[u8]| name(bytes).canonical().unwrap_err();
        assert_eq!(refused(b"/"), Errno::EINVAL);
        assert_eq!(refused(b""), Errno::EINVAL);
        assert_eq!(refused(b"/.."), Errno::EINVAL);
        assert_eq!(refused(b"/a/b"), Errno::EINVAL);
        assert_eq!(refused(&[b'a'; NAME_MAX + 1]), Errno::ENAMETOOLONG);
        assert!(name(&[[b'/'; 100].as_slice(), &[b'a'; NAME_MAX]].concat())
            .canonical()
            .is_ok());
    }

    #[test]
    fn names_past_path_max_are_refused_without_looking_inside() {
        // A NUL would be refused, but the length is checked first.
        let mut huge = vec![b'/'; PATH_MAX + 1];
        huge[1] = 0;
        assert_eq!(name(&huge).canonical(), Err(Errno::ENAMETOOLONG));
        assert!(name(&huge).is_refused());
    }

    #[test]
    fn the_crates_own_files_are_out_of_reach() {
        for spelling in [&b".shmex-session-x"[..], b"/.shmex-opening-x", b"//.shmex-"] {
            assert_eq!(name(spelling).canonical(), Err(Errno::EACCES));
        }
        assert!(ShmName::reserved(b".shmex-session-x")
            .unwrap()
            .canonical()
            .is_ok());
        assert!(name(b"/.shmex").canonical().is_ok());
    }

    #[test]
    fn base36_pads_and_wraps() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 2), "10");
        assert_eq!(base36(u64::MAX, 13), "3w5e11264sgsf");
    }

    #[test]
    fn a_spelling_of_a_name_is_what_new_makes_of_it() {
        let generated = ShmName::generate();
        let posix = generated.to_posix();
        let bare = &posix[1..];
        for spelling in [&posix[..], bare, &[b"//", bare].concat()[..]] {
            assert!(generated.is_spelled(spelling));
            assert!(ShmName::new(spelling).unwrap() == generated);
        }
        let slashes = [&[b'/'; PATH_MAX][..], bare].concat();
        for other in [&[bare, b"\0"].concat()[..], &bare[1..], b"", &slashes[..]] {
            assert!(!generated.is_spelled(other));
            assert!(ShmName::new(other) != Some(generated.clone()));
        }
        let reserved = ShmName::reserved(b".shmex-x").unwrap();
        assert!(!reserved.is_spelled(b".shmex-x"), "new refuses it");
        assert!(!name(b"a/b").is_spelled(b"a/b"), "the OS refuses it");
    }
}
