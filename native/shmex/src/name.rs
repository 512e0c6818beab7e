//! Segment names: checked ones from callers and generated unique ones.

use std::ffi::{CStr, CString};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The prefix of every generated name.
pub const PREFIX: &str = "/shmex-";

/// The longest generated name, in bytes: macOS refuses POSIX shm names over 31.
pub const GENERATED_LEN: usize = 31;

/// The longest name a file can have, and so a segment (leading slashes aside).
const NAME_MAX: usize = 255;

/// Names up to this many bytes (every generated one) are stored inline.
const INLINE: usize = GENERATED_LEN;

/// The name of a POSIX shared memory object, as `shm_open(3)` takes it.
///
/// Any byte string without NUL bytes is accepted here; the OS has the last
/// word on the rest (`EINVAL` for an inner slash on Linux), except for the
/// length (see [`is_too_long`](Self::is_too_long)). A NUL is refused here
/// because the OS would silently read the name only up to it, and a guard
/// would later unlink that other segment.
#[derive(Clone)]
pub struct ShmName(Repr);

/// Short names, which are most, are decoded on every call: they live inline
/// rather than in a heap allocation.
#[derive(Clone)]
enum Repr {
    /// The name and a NUL.
    Inline {
        len: u8,
        bytes: [u8; INLINE + 1],
    },
    Heap(CString),
}

impl ShmName {
    /// Checks a caller's name; `None` when it contains a NUL byte.
    pub fn new(bytes: &[u8]) -> Option<ShmName> {
        if bytes.contains(&0) {
            return None;
        }
        if bytes.len() > INLINE {
            return CString::new(bytes)
                .ok()
                .map(|name| ShmName(Repr::Heap(name)));
        }
        let mut inline = [0; INLINE + 1];
        inline[..bytes.len()].copy_from_slice(bytes);
        Some(ShmName(Repr::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        }))
    }

    /// A fresh name, unique on this host: `/shmex-` followed by 24 base-36
    /// digits holding this OS process's id, a random tag drawn once per OS
    /// process, and a per-process counter.
    ///
    /// The pid keeps BEAMs on one host apart, the tag keeps apart processes
    /// whose pids coincide (other pid namespaces sharing `/dev/shm`, a reused
    /// pid), the counter keeps apart names made in one process. Creation still
    /// uses `O_EXCL` and retries, so even a collision cannot open someone
    /// else's segment.
    pub fn generate() -> ShmName {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PROCESS_TAG: OnceLock<String> = OnceLock::new();

        let tag = PROCESS_TAG.get_or_init(|| {
            // RandomState is seeded from the OS's random source.
            let random = RandomState::new().hash_one(std::process::id());
            format!(
                "{}{}",
                base36(u64::from(std::process::id()), 5),
                base36(random, 6)
            )
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}{}", base36(count, 13));
        debug_assert_eq!(name.len(), GENERATED_LEN);
        ShmName::new(name.as_bytes()).unwrap_or_else(|| unreachable!("base-36 digits are not NUL"))
    }

    /// Whether the name is longer than any segment's can be.
    pub fn is_too_long(&self) -> bool {
        let bytes = self.as_bytes();
        let leading_slashes = bytes.iter().take_while(|&&b| b == b'/').count();
        bytes.len() - leading_slashes > NAME_MAX
    }

    /// The name as `shm_open(3)` takes it.
    pub fn as_c_str(&self) -> &CStr {
        match &self.0 {
            Repr::Inline { bytes, .. } => CStr::from_bytes_until_nul(bytes).unwrap_or_default(),
            Repr::Heap(name) => name,
        }
    }

    /// The name's bytes, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(name) => name.as_bytes(),
        }
    }
}

impl PartialEq for ShmName {
    fn eq(&self, other: &ShmName) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShmName {}

impl Hash for ShmName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for ShmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_c_str(), f)
    }
}

/// The lowest `digits` base-36 digits of `value`, zero-padded.
fn base36(mut value: u64, digits: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; digits];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 36) as usize];
        value /= 36;
    }
    out.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_names_are_short_prefixed_and_distinct() {
        let names: HashSet<ShmName> = (0..10_000).map(|_| ShmName::generate()).collect();
        assert_eq!(names.len(), 10_000);
        for name in &names {
            let text = std::str::from_utf8(name.as_bytes()).unwrap();
            assert!(text.starts_with(PREFIX), "{text}");
            assert_eq!(text.len(), GENERATED_LEN, "{text}");
            assert!(text[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn generated_names_carry_the_process_id() {
        let name = ShmName::generate();
        let pid = &name.as_bytes()[PREFIX.len()..PREFIX.len() + 5];
        assert_eq!(pid, base36(u64::from(std::process::id()), 5).as_bytes());
    }

    #[test]
    fn names_with_nul_bytes_are_refused() {
        assert!(ShmName::new(b"/a\0b").is_none());
        assert!(ShmName::new(
            &[b'a'; 40][..]
                .iter()
                .chain(b"\0")
                .copied()
                .collect::<Vec<_>>()
        )
        .is_none());
    }

    #[test]
    fn short_and_long_names_read_back_the_same() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let bytes = vec![b'x'; len];
            let name = ShmName::new(&bytes).unwrap();
            assert_eq!(name.as_bytes(), &bytes[..]);
            assert_eq!(name.as_c_str().to_bytes(), &bytes[..]);
            assert_eq!(name, ShmName::new(&bytes).unwrap());
        }
    }

    #[test]
    fn names_over_255_bytes_are_too_long() {
        let name = |len: usize| ShmName::new(format!("/{}", "a".repeat(len)).as_bytes()).unwrap();
        assert!(!name(255).is_too_long());
        assert!(name(256).is_too_long());
    }

    #[test]
    fn base36_pads_and_wraps() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 2), "10");
        assert_eq!(base36(u64::MAX, 13), "3w5e11264sgsf");
    }
}
