//! The SIGBUS handler chains: a fault in one of this crate's mappings is
//! absorbed there, any other reaches the handler that was installed before
//! (here one of the test's own), unchanged. One test function, in a test
//! binary of its own: the order of installing handlers matters.

use std::ffi::{c_int, c_void};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::libc;
use shmex::internal;
use shmex::Claim;

/// Faults the test's own handler saw, and the last address.
static SEEN: AtomicUsize = AtomicUsize::new(0);
static ADDRESS: AtomicUsize = AtomicUsize::new(0);

/// The handler installed before the crate's: records the fault and puts an
/// anonymous page over the faulting one, so that the access can complete.
extern "C" fn previous(_signal: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo; the page is the faulting
    // address's, in the test's own mapping.
    unsafe {
        let address = (*info).si_addr() as usize;
        SEEN.fetch_add(1, Ordering::SeqCst);
        ADDRESS.store(address, Ordering::SeqCst);
        let page = address & !4095;
        libc::mmap(
            page as *mut c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
    }
}

fn install_previous() {
    // SAFETY: installs a handler of the right signature for SA_SIGINFO.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = previous as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// A file mapping of the test's own, whose file is then truncated: touching
/// it faults outside the crate's mappings.
fn foreign_truncated_mapping() -> *mut u8 {
    let path = std::env::temp_dir().join(format!("shmex-chain-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(4096).unwrap();
    // SAFETY: a fresh shared mapping of the test's own file.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(memory, libc::MAP_FAILED);
    file.set_len(0).unwrap();
    std::fs::remove_file(path).unwrap();
    memory.cast()
}

#[test]
fn faults_in_our_mappings_are_absorbed_and_others_reach_the_previous_handler() {
    install_previous();

    // One of the crate's mappings (this installs its handler, after ours).
    let (name, _) = internal::create(None, 8192, internal::Made::Unguarded).unwrap();
    let mapping = internal::map(&name, Claim::full(8192)).unwrap().unwrap();
    internal::resize(&name, 0).unwrap();
    // SAFETY: the mapping covers 8192 bytes for its life; the page is gone
    // from the file, which the crate's handler absorbs.
    unsafe { mapping.as_ptr().add(4096).write_volatile(1) };
    assert!(
        mapping.faulted(),
        "the crate absorbed the fault in its mapping"
    );
    assert_eq!(SEEN.load(Ordering::SeqCst), 0, "and did not pass it on");
    assert_eq!(internal::stats().faults_absorbed, 1);

    // A fault anywhere else goes to the handler installed before.
    let foreign = foreign_truncated_mapping();
    // SAFETY: the test's own mapping; its page is gone, the previous handler
    // maps one in its place.
    unsafe { foreign.write_volatile(7) };
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
    assert_eq!(ADDRESS.load(Ordering::SeqCst), foreign as usize);
    assert_eq!(internal::stats().faults_absorbed, 1);

    drop(mapping);
    internal::unlink(&name);
}
