//! One registry per VM: how every copy of the crate in a process works
//! through one of them, the *primary*.
//!
//! Every library that links the crate carries a copy of all of it: the
//! Elixir NIF (`shmex_nif`), each C NIF linking `libshmex.a` (unifex's
//! natives), each C node. Left alone, each copy keeps its own registry of
//! segments, turns, guards and mappings, so that a C NIF would open and map
//! anew a segment Elixir keeps mapped, take no turn with Elixir's calls, and
//! not know which segments are guarded.
//!
//! # The rendezvous
//!
//! The Elixir NIF library is the primary: it exports [`Api`], a table of C
//! functions over its copy of the crate, as the symbol `shmex_vm_api_v1`.
//! The VM loads NIF libraries `RTLD_LOCAL`, so the symbol is not global;
//! [`api`] walks the loaded objects (`dl_iterate_phdr`), asks each for the
//! symbol (`dlopen(RTLD_NOLOAD)` + `dlsym`) and keeps the first table whose
//! ABI version is [`ABI`] and whose size covers this version's functions. A
//! table of another ABI is never used.
//!
//! Until a primary is found, a copy works on its own state, as a C node
//! (another OS process) always does. The Elixir NIF loads lazily (with its
//! module, in interactive mode), so a copy looks again at most every
//! [`LOOK_AGAIN`] while it finds none. What a copy made on its own stays
//! its own: each mapping handed to C remembers the table that made it, and
//! is released through it.
//!
//! # What goes through the table
//!
//! Everything the C API does to segments: creating, mapping (the kept
//! mapping, reference counted), resizing, unlinking and guarding. So the
//! primary's rules hold for C as for Elixir: the same checks, the same turns
//! per segment, one count of guards per segment, one journal of what a crash
//! would leave, one SIGBUS handler for every mapping handed out.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use shmex::internal::{self, Creation, Identity, Mapping};
use shmex::{Claim, Error, Result, ShmName, Syscall};

/// The version of [`Api`]'s functions and their arguments.
pub const ABI: u32 = 1;

/// The symbol under which the primary exports its table.
pub const SYMBOL: &CStr = c"shmex_vm_api_v1";

/// How long a copy that found no primary works on its own before it looks
/// again.
pub const LOOK_AGAIN: Duration = Duration::from_millis(5);

/// A name passed across: `/` and the name's bytes, not NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// An error (or none) passed across: `code` 0 for none, else the
/// [`Error`] variant's number; `errno` and `syscall` for `Error::Os`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Outcome {
    pub code: u32,
    pub errno: c_int,
    pub syscall: u32,
}

/// A segment just created: its name (`/` and the name, NUL-terminated) and
/// identity.
#[repr(C)]
pub struct Created {
    pub name: [c_char; 258],
    pub device: u64,
    pub inode: u64,
}

/// A mapping handed out: its address and the handle that keeps it mapped.
#[repr(C)]
pub struct Handed {
    pub address: *mut u8,
    pub handle: *const c_void,
}

/// The primary's functions. Later ABI versions may only add fields at the
/// end; a table is used only if its `abi` is [`ABI`] and its `size` covers
/// this struct.
#[repr(C)]
pub struct Api {
    pub abi: u32,
    pub size: u32,
    pub create: unsafe extern "C" fn(Bytes, u64, u32, *mut Created) -> Outcome,
    pub map: unsafe extern "C" fn(Bytes, u64, u64, *mut Handed) -> Outcome,
    pub release: unsafe extern "C" fn(*const c_void),
    pub faulted: unsafe extern "C" fn(*const c_void) -> bool,
    pub resize: unsafe extern "C" fn(Bytes, u64) -> Outcome,
    pub unlink: unsafe extern "C" fn(Bytes),
    pub guard: unsafe extern "C" fn(Bytes, *mut u64, *mut u64) -> Outcome,
    pub unlink_if: unsafe extern "C" fn(Bytes, u64, u64),
}

/// This copy's own table: what the primary exports, and what a copy uses
/// while it has found none.
pub static LOCAL: Api = TABLE;

/// The functions of [`LOCAL`], for the primary to export as a static of its
/// own.
pub const TABLE: Api = Api {
    abi: ABI,
    size: size_of::<Api>() as u32,
    create: local_create,
    map: local_map,
    release: local_release,
    faulted: local_faulted,
    resize: local_resize,
    unlink: local_unlink,
    guard: local_guard,
    unlink_if: local_unlink_if,
};

/// The table to work through: the primary's once found, else this copy's.
pub fn api() -> &'static Api {
    static FOUND: AtomicPtr<Api> = AtomicPtr::new(ptr::null_mut());
    static NEXT_LOOK: AtomicU64 = AtomicU64::new(0);

    let found = FOUND.load(Ordering::Acquire);
    // SAFETY: only tables accepted by `find` are stored: they belong to
    // libraries that are never unloaded (they link the crate, which pins
    // them), and are immutable statics.
    if let Some(found) = unsafe { found.as_ref() } {
        return found;
    }
    let now = elapsed_ms();
    if now < NEXT_LOOK.load(Ordering::Relaxed) {
        return &LOCAL;
    }
    NEXT_LOOK.store(now + LOOK_AGAIN.as_millis() as u64, Ordering::Relaxed);
    match find() {
        Some(table) => {
            FOUND.store(table.cast_mut(), Ordering::Release);
            // SAFETY: as above.
            unsafe { &*table }
        }
        None => &LOCAL,
    }
}

/// Whether `table` may be used by this copy.
pub fn accepts(table: &Api) -> bool {
    table.abi == ABI && table.size as usize >= size_of::<Api>()
}

fn elapsed_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The first acceptable table a loaded object exports. The objects' names
/// are gathered first and looked into once `dl_iterate_phdr` has returned:
/// it holds the loader's lock that `dlopen` takes in the other order, so
/// calling `dlopen` from its callback could deadlock with a thread loading
/// a library.
fn find() -> Option<*const Api> {
    let mut names: Vec<CString> = Vec::new();
    // SAFETY: the callback only copies the names dl_iterate_phdr hands it,
    // and `names` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(collect), ptr::from_mut(&mut names).cast::<c_void>()) };
    names.iter().find_map(|name| table_of(name))
}

unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    names: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for each object, and
    // `names` is find's.
    let (info, names) = unsafe { (&*info, &mut *names.cast::<Vec<CString>>()) };
    if !info.dlpi_name.is_null() {
        // SAFETY: a loaded object's name is a C string.
        let name = unsafe { CStr::from_ptr(info.dlpi_name) };
        if !name.is_empty() {
            names.push(name.to_owned());
        }
    }
    0
}

/// The acceptable table the loaded object `name` exports, if any.
fn table_of(name: &CStr) -> Option<*const Api> {
    // SAFETY: a C string; RTLD_NOLOAD loads nothing, it only hands out (and
    // counts) a handle to an object still loaded.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: a valid handle and a C string.
    let symbol = unsafe { libc::dlsym(handle, SYMBOL.as_ptr()) }.cast::<Api>();
    // SAFETY: the handle dlopen counted. An object exporting the table
    // links the crate, which pins it (RTLD_NODELETE) when it loads.
    unsafe { libc::dlclose(handle) };
    // SAFETY: the symbol, where exported, is an `Api` static.
    let table = unsafe { symbol.as_ref() }?;
    accepts(table).then_some(symbol)
}

impl Bytes {
    /// `name` as passed across.
    pub fn of(name: &[u8]) -> Bytes {
        Bytes {
            ptr: name.as_ptr(),
            len: name.len(),
        }
    }

    /// The name passed.
    ///
    /// # Safety
    ///
    /// `ptr` points to `len` bytes.
    unsafe fn name(self) -> Option<ShmName> {
        // SAFETY: forwarded to the caller.
        ShmName::new(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

impl Outcome {
    const OK: Outcome = Outcome {
        code: 0,
        errno: 0,
        syscall: 0,
    };

    /// `result` as passed across.
    pub fn of(result: Result<()>) -> Outcome {
        let Err(error) = result else {
            return Outcome::OK;
        };
        let (code, errno, syscall) = match error {
            Error::Os(errno, syscall) => (1, errno as c_int, syscall as u32),
            Error::InvalidPayload => (2, 0, 0),
            Error::InvalidReadSize => (3, 0, 0),
            Error::InvalidPosition => (4, 0, 0),
            Error::InvalidTrimSize => (5, 0, 0),
            Error::AlreadyGuarded => (6, 0, 0),
        };
        Outcome {
            code,
            errno,
            syscall,
        }
    }

    /// The result passed.
    pub fn result(self) -> Result<()> {
        let syscall = match self.syscall {
            0 => Syscall::ShmOpen,
            1 => Syscall::Ftruncate,
            _ => Syscall::Mmap,
        };
        match self.code {
            0 => Ok(()),
            1 => Err(Error::Os(Errno::from_raw(self.errno), syscall)),
            3 => Err(Error::InvalidReadSize),
            4 => Err(Error::InvalidPosition),
            5 => Err(Error::InvalidTrimSize),
            6 => Err(Error::AlreadyGuarded),
            _ => Err(Error::InvalidPayload),
        }
    }
}

/// A name that could not be passed across (NUL inside: impossible from a
/// C string).
fn refused() -> Outcome {
    Outcome::of(Err(Error::Os(Errno::EINVAL, Syscall::ShmOpen)))
}

unsafe extern "C" fn local_create(name: Bytes, len: u64, how: u32, out: *mut Created) -> Outcome {
    let how = if how == 0 {
        Creation::Unguarded
    } else {
        Creation::Guarded
    };
    // SAFETY: a name of `len` bytes, or none.
    let name = (!name.ptr.is_null()).then(|| unsafe { name.name() });
    let Some(name) = name.map_or(Some(None), |name| name.map(Some)) else {
        return refused();
    };
    Outcome::of(
        internal::create(name, len, how).map(|(name, [device, inode])| {
            let posix = name.to_posix();
            // SAFETY: `out` points to a Created, by contract.
            let out = unsafe { &mut *out };
            out.name = [0; 258];
            for (slot, &byte) in out.name.iter_mut().zip(&posix) {
                *slot = byte as c_char;
            }
            (out.device, out.inode) = (device, inode);
        }),
    )
}

unsafe extern "C" fn local_map(name: Bytes, size: u64, capacity: u64, out: *mut Handed) -> Outcome {
    // SAFETY: a name of `len` bytes.
    let Some(name) = (unsafe { name.name() }) else {
        return refused();
    };
    Outcome::of(
        internal::map(&name, Claim { size, capacity }).map(|mapping| {
            // SAFETY: `out` points to a Handed, by contract.
            let out = unsafe { &mut *out };
            match mapping {
                Some(mapping) => {
                    out.address = mapping.as_ptr();
                    out.handle = Arc::into_raw(mapping).cast();
                }
                None => {
                    out.address = ptr::null_mut();
                    out.handle = ptr::null();
                }
            }
        }),
    )
}

unsafe extern "C" fn local_release(handle: *const c_void) {
    if !handle.is_null() {
        // SAFETY: a handle local_map made, released once.
        drop(unsafe { Arc::from_raw(handle.cast::<Mapping>()) });
    }
}

unsafe extern "C" fn local_faulted(handle: *const c_void) -> bool {
    // SAFETY: a live handle local_map made.
    unsafe { handle.cast::<Mapping>().as_ref() }.is_some_and(Mapping::faulted)
}

unsafe extern "C" fn local_resize(name: Bytes, len: u64) -> Outcome {
    // SAFETY: a name of `len` bytes.
    match unsafe { name.name() } {
        Some(name) => Outcome::of(internal::resize(&name, len)),
        None => refused(),
    }
}

unsafe extern "C" fn local_unlink(name: Bytes) {
    // SAFETY: a name of `len` bytes.
    if let Some(name) = unsafe { name.name() } {
        internal::unlink(&name);
    }
}

unsafe extern "C" fn local_guard(name: Bytes, device: *mut u64, inode: *mut u64) -> Outcome {
    // SAFETY: a name of `len` bytes.
    let Some(name) = (unsafe { name.name() }) else {
        return refused();
    };
    Outcome::of(internal::guard(&name).map(|identity: Identity| {
        // SAFETY: both point to a u64, by contract.
        unsafe { (*device, *inode) = (identity[0], identity[1]) };
    }))
}

unsafe extern "C" fn local_unlink_if(name: Bytes, device: u64, inode: u64) {
    // SAFETY: a name of `len` bytes.
    if let Some(name) = unsafe { name.name() } {
        internal::unlink_if(&name, [device, inode]);
    }
}

/// What the C API calls: [`api`]'s functions, with Rust types.
pub mod call {
    use super::*;

    /// The name as passed across; a name the OS refuses is refused here,
    /// with the error the other side would give it.
    fn passed(name: &ShmName) -> Result<Vec<u8>> {
        name.refusal().map_or_else(|| Ok(name.to_posix()), Err)
    }

    /// Creates the segment `name` (a fresh one for `None`), `len` bytes.
    pub fn create(name: Option<&ShmName>, len: u64, how: Creation) -> Result<(ShmName, Identity)> {
        let posix = name.map(passed).transpose()?;
        let bytes = posix.as_deref().map_or(
            Bytes {
                ptr: ptr::null(),
                len: 0,
            },
            Bytes::of,
        );
        let mut out = Created {
            name: [0; 258],
            device: 0,
            inode: 0,
        };
        let how = u32::from(how == Creation::Guarded);
        // SAFETY: a name of its length, or none; `out` is a Created.
        unsafe { (api().create)(bytes, len, how, &mut out) }.result()?;
        // SAFETY: `create` wrote a NUL-terminated name.
        let created = unsafe { CStr::from_ptr(out.name.as_ptr()) };
        let name =
            ShmName::new(created.to_bytes()).ok_or(Error::Os(Errno::EINVAL, Syscall::ShmOpen))?;
        Ok((name, [out.device, out.inode]))
    }

    /// A mapping of `claim.capacity` bytes of `name`: its address, and the
    /// table and handle to release it with; `None` for a capacity of 0.
    pub fn map(name: &ShmName, claim: Claim) -> Result<Option<(*mut u8, Held)>> {
        let posix = passed(name)?;
        let mut out = Handed {
            address: ptr::null_mut(),
            handle: ptr::null(),
        };
        let table = api();
        // SAFETY: a name of its length; `out` is a Handed.
        unsafe { (table.map)(Bytes::of(&posix), claim.size, claim.capacity, &mut out) }.result()?;
        Ok((!out.handle.is_null()).then_some((
            out.address,
            Held {
                table,
                handle: out.handle,
            },
        )))
    }

    /// Resizes the segment `name` to `len` bytes.
    pub fn resize(name: &ShmName, len: u64) -> Result<()> {
        let posix = passed(name)?;
        // SAFETY: a name of its length.
        unsafe { (api().resize)(Bytes::of(&posix), len) }.result()
    }

    /// Unlinks the segment `name`, if it is one.
    pub fn unlink(name: &ShmName) {
        let Ok(posix) = passed(name) else { return };
        // SAFETY: a name of its length.
        unsafe { (api().unlink)(Bytes::of(&posix)) }
    }

    /// Guards the segment `name` for a C guard; its identity.
    pub fn guard(name: &ShmName) -> Result<Identity> {
        let posix = passed(name)?;
        let (mut device, mut inode) = (0, 0);
        // SAFETY: a name of its length; two u64s.
        unsafe { (api().guard)(Bytes::of(&posix), &mut device, &mut inode) }.result()?;
        Ok([device, inode])
    }

    /// Ends a C guard of `name`, the segment `identity`: this copy's own,
    /// if it made the guard before it found the primary; else the
    /// primary's.
    pub fn unlink_if(name: &ShmName, identity: Identity) {
        if internal::release_c_guard(name, identity) {
            return;
        }
        let Ok(posix) = passed(name) else { return };
        // SAFETY: a name of its length.
        unsafe { (api().unlink_if)(Bytes::of(&posix), identity[0], identity[1]) }
    }
}

/// A mapping handed to C, and the table that keeps it mapped.
pub struct Held {
    table: &'static Api,
    handle: *const c_void,
}

// SAFETY: the handle is a reference to a `Mapping`, which is Send and Sync.
unsafe impl Send for Held {}

impl Held {
    /// Whether the mapping lost pages (the segment shrank under it).
    pub fn faulted(&self) -> bool {
        // SAFETY: a live handle of this table.
        unsafe { (self.table.faulted)(self.handle) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the handle is released once, through its own table.
        unsafe { (self.table.release)(self.handle) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_another_abi_or_too_small_are_refused() {
        assert!(accepts(&LOCAL));
        let older = Api { abi: 0, ..LOCAL };
        assert!(!accepts(&older));
        let shorter = Api {
            size: LOCAL.size - 8,
            ..LOCAL
        };
        assert!(!accepts(&shorter));
    }
}
