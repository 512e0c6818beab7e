//! Surviving SIGBUS in our mappings.
//!
//! A process touching a page of a shared mapping that its file no longer
//! backs gets SIGBUS, whose default action kills it: the whole VM. That page
//! may be gone because another process shrank the file or punched a hole in
//! it, or because tmpfs had no page left to fill a hole with. No check made
//! before a copy can rule the first out: it may happen during the copy.
//!
//! # Design
//!
//! - **A registry of our mappings** ([`register`], [`unregister`]): blocks of
//!   slots holding each mapping's start and length in atomics, linked into a
//!   list that only grows (blocks are never freed), so that the handler can
//!   walk it without locks or allocation, which a signal handler must not use.
//!   A mapping is registered after `mmap` and unregistered before `munmap`.
//! - **A process-wide handler** ([`install`]), installed once per copy of
//!   this crate with `SA_SIGINFO`. For a fault whose address lies in one of
//!   our mappings, it marks the mapping faulted and maps anonymous memory over
//!   the whole mapping, in place (`MAP_FIXED`): the faulting instruction runs
//!   again on that memory and the copy finishes, on zeros. The code that made
//!   the copy checks the mark afterwards and reports an error instead of what
//!   it read; the mapping no longer shows the file and is dropped. Replacing
//!   the whole range, rather than the one page, bounds the work to one fault
//!   per mapping and never splits it into more kernel map entries.
//! - **Chained, not exclusive.** Any other fault goes to the handler that was
//!   installed before ours, with the same arguments; if that was the default
//!   action (or "ignore", which the kernel does not honour for faults), the
//!   default is restored and the fault happens again, killing the process as
//!   it would have without us. Several libraries in one VM may each link this
//!   crate (this NIF, a Rust NIF on the crate, a C NIF on `libshmex.a`): each
//!   copy has its own registry and handler, and each handler passes on what is
//!   not its own, so they chain.
//! - **Never unloaded.** A handler in the chain must outlive every later one
//!   that may call it, so installing it pins the library holding it in memory
//!   (`RTLD_NODELETE`): a NIF library linking this crate stays loaded when its
//!   module is purged.
//!
//! What the handler does is async-signal-safe: atomic loads and stores,
//! `mmap`, `sigaction`, `raise`, and a call to the previous handler; errno is
//! restored on the way out.

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use nix::libc;

/// How many mappings a block of the registry holds.
const BLOCK: usize = 128;

/// A slot's `start` while a mapping is being registered in it.
const CLAIMED: usize = 1;

/// One registered mapping: `start == 0` is a free slot.
#[derive(Debug)]
pub(super) struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

struct Block {
    slots: [Slot; BLOCK],
    next: AtomicPtr<Block>,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array below
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static FIRST: Block = Block {
    slots: [FREE; BLOCK],
    next: AtomicPtr::new(ptr::null_mut()),
};

/// How many faults the handler absorbed, for diagnostics.
static ABSORBED: AtomicUsize = AtomicUsize::new(0);

/// The handler that was installed before ours, leaked so that the handler
/// can read it at any time.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

impl Slot {
    pub(super) fn faulted(&self) -> bool {
        self.faulted.load(Ordering::SeqCst)
    }

    /// The mapping in this slot, if `address` lies in it.
    fn holding(&self, address: usize) -> Option<(usize, usize)> {
        let start = self.start.load(Ordering::Acquire);
        if start <= CLAIMED || address < start {
            return None;
        }
        let len = self.len.load(Ordering::Acquire);
        // The slot may have been freed and reused between the two loads.
        let unchanged = self.start.load(Ordering::Acquire) == start;
        (unchanged && address - start < len).then_some((start, len))
    }
}

impl Block {
    fn next(&self) -> Option<&'static Block> {
        // SAFETY: `next` is null or a block leaked by `register`, never freed.
        unsafe { self.next.load(Ordering::Acquire).as_ref() }
    }

    fn blocks() -> impl Iterator<Item = &'static Block> {
        std::iter::successors(Some(&FIRST), |block| block.next())
    }
}

/// Records the mapping `[start, start + len)`, so that faults in it are
/// survived until [`unregister`].
pub(super) fn register(start: usize, len: usize) -> &'static Slot {
    debug_assert!(start > CLAIMED, "mappings start at a page boundary");
    let mut last = &FIRST;
    for block in Block::blocks() {
        for slot in &block.slots {
            // A load first: with many mappings live, most slots are taken,
            // and a failed compare-exchange costs far more than a load.
            if slot.start.load(Ordering::Relaxed) != 0 {
                continue;
            }
            let claim =
                slot.start
                    .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed);
            if claim.is_ok() {
                slot.len.store(len, Ordering::Release);
                slot.faulted.store(false, Ordering::SeqCst);
                slot.start.store(start, Ordering::Release);
                return slot;
            }
        }
        last = block;
    }
    let fresh = Box::into_raw(Box::new(Block {
        slots: [FREE; BLOCK],
        next: AtomicPtr::new(ptr::null_mut()),
    }));
    // Link the new block at the end, or give it up to one another thread
    // linked meanwhile; either way, try again.
    let mut tail = last;
    loop {
        match tail.next.compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            // SAFETY: a linked block is never freed.
            Err(linked) => tail = unsafe { &*linked },
        }
    }
    register(start, len)
}

/// How many faults in our mappings were absorbed so far.
pub(super) fn absorbed() -> usize {
    ABSORBED.load(Ordering::Relaxed)
}

/// Forgets a mapping about to be unmapped.
pub(super) fn unregister(slot: &Slot) {
    slot.start.store(0, Ordering::Release);
}

/// Installs the handler, once for this copy of the crate; whether it is in
/// place.
pub(super) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        pin_this_library();
        // SAFETY: sigaction with a null new action only reads the current one.
        let current = unsafe {
            let mut current = MaybeUninit::<libc::sigaction>::zeroed();
            libc::sigaction(libc::SIGBUS, ptr::null(), current.as_mut_ptr());
            current.assume_init()
        };
        remember_previous(current);
        // SAFETY: a zeroed sigaction is a valid starting point; the fields
        // set are a handler of the right signature and its flags.
        let ours = unsafe {
            let mut ours = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            ours
        };
        let mut replaced = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: installs a handler that is async-signal-safe (module docs).
        if unsafe { libc::sigaction(libc::SIGBUS, &ours, replaced.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: sigaction succeeded, so it filled `replaced`.
        let replaced = unsafe { replaced.assume_init() };
        // Another library may have installed its handler since we looked.
        if replaced.sa_sigaction != current.sa_sigaction {
            remember_previous(replaced);
        }
        true
    })
}

fn remember_previous(action: libc::sigaction) {
    PREVIOUS.store(Box::into_raw(Box::new(action)), Ordering::Release);
}

/// Keeps the library this code is in loaded for good: the handler must stay
/// callable, by the kernel and by handlers installed after it.
fn pin_this_library() {
    let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only fills `info` for an address of a loaded object; the
    // file name it gives stays valid while that object is loaded, which
    // covers the dlopen below. dlopen with RTLD_NOLOAD only adds a reference
    // to an object already loaded; the handle is kept for good on purpose.
    unsafe {
        if libc::dladdr(on_sigbus as *const c_void, info.as_mut_ptr()) != 0 {
            let file = info.assume_init().dli_fname;
            if !file.is_null() {
                let flags = libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE;
                libc::dlopen(file, flags);
            }
        }
    }
}

/// The SIGBUS handler: see the module docs.
extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (address, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    // Reading and writing this thread's errno is async-signal-safe; nix
    // finds it on every platform (`__errno_location` is Linux's name).
    let errno = nix::errno::Errno::last_raw();
    if code > 0 && absorb(address) {
        nix::errno::Errno::set_raw(errno);
        return;
    }
    forward(signal, info, context);
}

/// Replaces the mapping holding `address` with anonymous memory; whether
/// there was one.
fn absorb(address: usize) -> bool {
    let Some((slot, start, len)) = Block::blocks()
        .flat_map(|block| &block.slots)
        .find_map(|slot| slot.holding(address).map(|(start, len)| (slot, start, len)))
    else {
        return false;
    };
    slot.faulted.store(true, Ordering::SeqCst);
    ABSORBED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `[start, start + len)` is a mapping of ours (registered, so not
    // yet unmapped); replacing it in place keeps every address of it mapped
    // with the same protection, which is all its owner relies on.
    let replaced = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    replaced != libc::MAP_FAILED
}

/// Hands a fault that is not ours to the handler installed before ours, or
/// to the default action.
fn forward(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: PREVIOUS is null or a leaked, never freed sigaction.
    let previous = unsafe { PREVIOUS.load(Ordering::Acquire).as_ref() };
    let handler = previous.map_or(libc::SIG_DFL, |action| action.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restoring the default action is what a process without
        // this handler has; a fault then happens again on return and kills
        // the process with SIGBUS, and a SIGBUS sent by kill is raised again
        // (blocked until this handler returns).
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            if (*info).si_code <= 0 {
                libc::raise(libc::SIGBUS);
            }
        }
        return;
    }
    let siginfo = previous.is_some_and(|action| action.sa_flags & libc::SA_SIGINFO != 0);
    // SAFETY: the previous handler was installed with these flags, so it has
    // the matching signature; it gets the arguments the kernel gave us.
    unsafe {
        if siginfo {
            let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            handler(signal, info, context);
        } else {
            let handler: extern "C" fn(c_int) = std::mem::transmute(handler);
            handler(signal);
        }
    }
}
