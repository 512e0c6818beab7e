//! One registry per VM: the table through which every copy of the crate in
//! an OS process works through one of them, the *primary*.
//!
//! Every library that links the crate carries a copy of all of it: the
//! Elixir NIF (`shmex_nif`), each Rust NIF depending on the crate, each C
//! NIF linking `libshmex.a` (unifex's natives), each C node. Left alone,
//! each copy keeps its own registry of segments, turns, guards and
//! mappings: a Rust or C NIF would take no turn with Elixir's calls, map
//! anew what Elixir keeps mapped, and not know which segments are guarded.
//!
//! # The rendezvous
//!
//! The Elixir NIF library is the primary: it exports [`Api`], a table of C
//! functions over its copy of the crate (`internal`'s `TABLE`), as the
//! symbol [`SYMBOL`]. The VM loads NIF libraries `RTLD_LOCAL`, so the symbol
//! is not global; [`found`] walks the loaded objects (`dl_iterate_phdr`),
//! asks each for the symbol (`dlopen(RTLD_NOLOAD)` + `dlsym`) and keeps the
//! first table it [`accepts`]. A table of another ABI is never used.
//!
//! Until a primary is found, a copy works on its own state, as a C node
//! (another OS process) always does. The Elixir NIF loads lazily (with its
//! module, in interactive mode), so a copy looks again at most every
//! [`LOOK_AGAIN`] while it finds none; once found, the table is used for
//! good (the library exporting it is never unloaded). What a copy made on
//! its own stays its own: a guard made before keeps being counted by its
//! copy, a mapping handed to C is released through the table that made it
//! ([`Held`]).
//!
//! The primary's own copy finds its own table too: it recognizes it by
//! [`Api::owner`], the address of this module's [`THIS_COPY`], and never
//! routes to itself ([`elsewhere`] is `None` there).
//!
//! # What goes through the table
//!
//! Once a primary other than this copy is found ([`elsewhere`]), every
//! operation of the public Rust API (`Shm`'s, hence `Handle`'s, and the
//! guards') and of the C API goes through it, as [`Vm`]'s methods: the
//! primary's checks, turns per segment, kept mappings, one count of guards
//! per segment, one journal of what a crash would leave, one SIGBUS handler
//! for every mapping handed out. A guard made through the primary is one
//! the primary holds (as it holds C guards) until the copy's guard drops.
//! In-place access ([`Vm::data`], [`Vm::data_mut`]) runs the caller's
//! closure inside the primary's call, through a C callback: the turn is the
//! primary's and lasts until the closure returns.
//!
//! A call from another copy waits for its turn as the Rust API does: on
//! the thread it runs on (a NIF's, a dirty scheduler for long work), not in
//! a process. A long Elixir copy goes on in steps on the dirty schedulers,
//! keeping its turn between them; a call waiting behind it while it is
//! paused between steps runs the rest of it on the waiting thread (see
//! `registry`), so that waiting calls on every dirty CPU scheduler at once
//! cannot keep it from finishing.
//!
//! # Versions
//!
//! [`ABI`] numbers the meaning of the functions and their arguments; it
//! changes only when a function changes. Fields are only ever appended to
//! [`Api`], and `size` says how many the table has: a copy uses a table iff
//! its `abi` is [`ABI`] and its `size` covers the copy's own `Api`. So a
//! copy built against a shorter table (the first ABI 1 table ended at
//! `unlink_if`) uses a longer one by its prefix, and a copy that needs more
//! than an older primary has works on its own state beside it.
//!
//! Every `unsafe` call through a table is in this module.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;

use crate::error::{Error, Result, Syscall};
use crate::name::{Posix, ShmName};

/// The version of [`Api`]'s functions and their arguments.
pub const ABI: u32 = 1;

/// The symbol under which the primary exports its table.
pub const SYMBOL: &CStr = c"shmex_vm_api_v1";

/// How long a copy that found no primary works on its own before it looks
/// again.
pub const LOOK_AGAIN: Duration = Duration::from_millis(5);

/// This copy of the crate: tables name the copy that made them by this
/// static's address ([`Api::owner`]).
pub static THIS_COPY: u8 = 0;

/// A name (`/` and the name's bytes, not NUL-terminated) or data passed
/// across.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Bytes {
    /// The first byte.
    pub ptr: *const u8,
    /// How many bytes.
    pub len: usize,
}

/// An error (or none) passed across: `code` 0 for none, else the
/// [`Error`] variant's number; `errno` and `syscall` for `Error::Os`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Outcome {
    /// 0 for none, else which [`Error`].
    pub code: u32,
    /// The errno of an `Error::Os`.
    pub errno: c_int,
    /// The [`Syscall`] of an `Error::Os`, as its number.
    pub syscall: u32,
}

/// What the primary makes of a segment it creates for another copy: the
/// table's `create` passes it as a number (a first-version copy passes 0
/// or 1 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Made {
    /// Handed out unguarded (`shmex_allocate_unguarded`).
    Unguarded = 0,
    /// Guarded by a guard the primary holds, its pages reserved at once, as
    /// for C (`shmex_allocate`), which maps and fills it next.
    Guarded = 1,
    /// Guarded, its pages sparse, as the Rust API's `Shm::allocate` makes
    /// them on its own.
    GuardedSparse = 2,
}

/// A segment just created or guarded: its name (`/` and the name,
/// NUL-terminated) and identity.
#[repr(C)]
pub struct Created {
    /// The name, NUL-terminated.
    pub name: [c_char; 258],
    /// The file's device.
    pub device: u64,
    /// The file's inode.
    pub inode: u64,
}

/// A mapping handed out: its address and the handle that keeps it mapped.
#[repr(C)]
pub struct Handed {
    /// Where the mapping starts.
    pub address: *mut u8,
    /// What keeps it mapped until released.
    pub handle: *const c_void,
}

/// A struct's claims passed across: its `size` and `capacity`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes of data.
    pub size: u64,
    /// The segment's size, as the struct claims it.
    pub capacity: u64,
}

/// What a split passes back: the claims of the struct split, the new
/// guarded segment and its claims.
#[repr(C)]
pub struct Split {
    /// The split struct's claims.
    pub left: Sizes,
    /// The new segment, guarded by the primary for the caller.
    pub right_segment: Created,
    /// The new segment's claims.
    pub right: Sizes,
}

/// Called by the primary's `read` once the bytes are known to be there:
/// makes a buffer of `len` bytes (the second argument) in the context (the
/// first); its address, or null if it cannot be made.
pub type Alloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut u8;

/// Called by the primary's `access` with the data in place: the context,
/// the data's address and length. Must not unwind.
pub type Visit = unsafe extern "C" fn(*mut c_void, *mut u8, usize);

/// The primary's functions. Fields are only appended (see the module doc,
/// "Versions"); a table is used only if [`accepts`] it.
#[repr(C)]
pub struct Api {
    /// [`ABI`].
    pub abi: u32,
    /// The table's size in bytes: how many fields it has.
    pub size: u32,
    /// Creates a segment (a fresh name for a null name), guarded by a C
    /// guard for a non-zero third argument.
    pub create: unsafe extern "C" fn(Bytes, u64, u32, *mut Created) -> Outcome,
    /// The kept mapping of a segment, after a claim's checks (size,
    /// capacity), reference counted.
    pub map: unsafe extern "C" fn(Bytes, u64, u64, *mut Handed) -> Outcome,
    /// Releases a handle `map` handed out.
    pub release: unsafe extern "C" fn(*const c_void),
    /// Whether the mapping of a handle lost pages.
    pub faulted: unsafe extern "C" fn(*const c_void) -> bool,
    /// Resizes a segment, in its turn.
    pub resize: unsafe extern "C" fn(Bytes, u64) -> Outcome,
    /// Unlinks a segment, if the name leads to one.
    pub unlink: unsafe extern "C" fn(Bytes),
    /// Guards a segment for a C guard; its device and inode.
    pub guard: unsafe extern "C" fn(Bytes, *mut u64, *mut u64) -> Outcome,
    /// Ends a guard of the segment of this device and inode.
    pub unlink_if: unsafe extern "C" fn(Bytes, u64, u64),
    // Appended, for the Rust API.
    /// The copy of the crate that made the table: its [`THIS_COPY`].
    pub owner: &'static u8,
    /// `Shm::read` of a struct (name, claims, length), into a buffer the
    /// callback makes in the context.
    pub read: unsafe extern "C" fn(Bytes, Sizes, u64, Alloc, *mut c_void) -> Outcome,
    /// `Shm::write` of the data; the new claims.
    pub write: unsafe extern "C" fn(Bytes, Sizes, Bytes, *mut Sizes) -> Outcome,
    /// `Shm::set_capacity`; the new claims.
    pub set_capacity: unsafe extern "C" fn(Bytes, Sizes, u64, *mut Sizes) -> Outcome,
    /// `Shm::split_at`; the new segment is guarded by the primary for the
    /// caller, until `unlink_if`.
    pub split_at: unsafe extern "C" fn(Bytes, Sizes, u64, *mut Split) -> Outcome,
    /// `Shm::append` of the second struct to the first; the new claims.
    pub append: unsafe extern "C" fn(Bytes, Sizes, Bytes, Sizes, *mut Sizes) -> Outcome,
    /// `Shm::trim`; the new claims.
    pub trim: unsafe extern "C" fn(Bytes, Sizes, u64, *mut Sizes) -> Outcome,
    /// `Shm::add_guard` of a struct without a guard of the caller's (the
    /// flag: whether it holds another library's resource); the guard is
    /// the primary's for the caller, until `unlink_if`.
    pub add_guard: unsafe extern "C" fn(Bytes, bool, *mut u64, *mut u64) -> Outcome,
    /// `Shm::data` (the flag false) or `Shm::data_mut` (true), calling the
    /// callback with the context and the data in place, in the segment's
    /// turn.
    pub access: unsafe extern "C" fn(Bytes, Sizes, bool, Visit, *mut c_void) -> Outcome,
}

/// Whether `table` may be used by this copy.
pub fn accepts(table: &Api) -> bool {
    table.abi == ABI && table.size as usize >= size_of::<Api>()
}

/// The primary's table once found (the primary's own copy finds its own),
/// looking again every [`LOOK_AGAIN`] while there is none.
pub fn found() -> Option<&'static Api> {
    static FOUND: AtomicPtr<Api> = AtomicPtr::new(ptr::null_mut());
    static NEXT_LOOK: AtomicU64 = AtomicU64::new(0);

    let found = FOUND.load(Ordering::Acquire);
    // SAFETY: only tables accepted by `find` are stored: they belong to
    // libraries that are never unloaded (they link the crate, which pins
    // them), and are immutable statics.
    if let Some(found) = unsafe { found.as_ref() } {
        return Some(found);
    }
    let now = elapsed_ms();
    if now < NEXT_LOOK.load(Ordering::Relaxed) {
        return None;
    }
    NEXT_LOOK.store(now + LOOK_AGAIN.as_millis() as u64, Ordering::Relaxed);
    let table = find()?;
    FOUND.store(table.cast_mut(), Ordering::Release);
    // SAFETY: as above.
    Some(unsafe { &*table })
}

/// The primary, once found, if it is another copy than this one: what the
/// public API routes its operations to.
pub fn elsewhere() -> Option<Vm> {
    found()
        .filter(|table| !ptr::eq(table.owner, &THIS_COPY))
        .map(Vm)
}

fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
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
    // SAFETY: the symbol, where exported, is an `Api` static; only its
    // first two fields are read before it is accepted, and a table of ABI 1
    // has them.
    let table = unsafe { symbol.as_ref() }?;
    accepts(table).then_some(symbol)
}

impl Bytes {
    /// `bytes` as passed across.
    pub fn of(bytes: &[u8]) -> Bytes {
        Bytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// No name: a fresh one is to be made.
    pub fn none() -> Bytes {
        Bytes {
            ptr: ptr::null(),
            len: 0,
        }
    }

    /// The bytes passed.
    ///
    /// # Safety
    ///
    /// `ptr` points to `len` bytes that live and do not change for `'a`, or
    /// `len` is 0.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: forwarded to the caller.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The name passed; `None` for a name with a NUL inside.
    ///
    /// # Safety
    ///
    /// As [`bytes`](Self::bytes).
    pub unsafe fn name(self) -> Option<ShmName> {
        // SAFETY: forwarded to the caller.
        ShmName::new(unsafe { self.bytes() })
    }
}

impl Outcome {
    /// No error.
    pub const OK: Outcome = Outcome {
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

    /// A name that could not be passed across (NUL inside: impossible from
    /// a C string).
    pub fn refused() -> Outcome {
        Outcome::of(Err(Error::Os(Errno::EINVAL, Syscall::ShmOpen)))
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

impl Created {
    /// Nothing yet: to be filled in across.
    pub fn empty() -> Created {
        Created {
            name: [0; 258],
            device: 0,
            inode: 0,
        }
    }

    /// The segment `name`, the file `identity` (device, inode).
    pub fn of(name: &ShmName, [device, inode]: [u64; 2]) -> Created {
        let mut created = Created {
            device,
            inode,
            ..Created::empty()
        };
        for (slot, &byte) in created.name.iter_mut().zip(name.posix().iter()) {
            *slot = byte as c_char;
        }
        created
    }

    /// The segment's name and identity.
    pub fn segment(&self) -> Result<(ShmName, [u64; 2])> {
        // Always NUL-terminated: the last byte is never written.
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(0);
        let mut bytes = [0; 258];
        for (byte, &c) in bytes.iter_mut().zip(&self.name[..end]) {
            *byte = c as u8;
        }
        let name = ShmName::new(&bytes[..end]).ok_or(Error::Os(Errno::EINVAL, Syscall::ShmOpen))?;
        Ok((name, [self.device, self.inode]))
    }
}

/// The name as passed across; a name the OS refuses is refused here, with
/// the error the other side would give it.
fn passed(name: &ShmName) -> Result<Posix> {
    name.refusal().map_or_else(|| Ok(name.posix()), Err)
}

/// A table to work through, with its functions as safe methods: every call
/// through a table is made here.
#[derive(Clone, Copy)]
pub struct Vm(&'static Api);

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vm({:p})", self.0)
    }
}

/// A call of the closure an in-place access was given, through [`visit`].
struct Visiting<F, R> {
    f: Option<F>,
    result: Option<std::thread::Result<R>>,
}

/// Runs the closure of a [`Visiting`] (the context) on the data; a panic is
/// kept, to be resumed once the primary's call returned (it must not unwind
/// through the primary).
unsafe extern "C" fn visit<F: FnOnce(*mut u8, usize) -> R, R>(
    context: *mut c_void,
    data: *mut u8,
    len: usize,
) {
    // SAFETY: the context is the `Visiting` that `Vm::access` passed, alive
    // and not otherwise borrowed during the primary's call.
    let visiting = unsafe { &mut *context.cast::<Visiting<F, R>>() };
    if let Some(f) = visiting.f.take() {
        visiting.result = Some(panic::catch_unwind(AssertUnwindSafe(|| f(data, len))));
    }
}

/// Makes the buffer of a read: `len` zero bytes in the `Vec<u8>` (the
/// context); null if there is no memory for them.
unsafe extern "C" fn grow(context: *mut c_void, len: usize) -> *mut u8 {
    // SAFETY: the context is the `Vec<u8>` that `Vm::read` passed.
    let buffer = unsafe { &mut *context.cast::<Vec<u8>>() };
    if buffer.try_reserve_exact(len).is_err() {
        return ptr::null_mut();
    }
    buffer.resize(len, 0);
    buffer.as_mut_ptr()
}

impl Vm {
    /// Works through `table`.
    pub fn of(table: &'static Api) -> Vm {
        Vm(table)
    }

    /// Creates the segment `name` (a fresh one for `None`), `len` bytes, as
    /// `how` says; its name and identity.
    pub fn create(
        self,
        name: Option<&ShmName>,
        len: u64,
        how: Made,
    ) -> Result<(ShmName, [u64; 2])> {
        let posix = name.map(passed).transpose()?;
        let bytes = posix.as_deref().map_or(Bytes::none(), Bytes::of);
        let mut out = Created::empty();
        // SAFETY: a name of its length, or none; `out` is a Created.
        unsafe { (self.0.create)(bytes, len, how as u32, &mut out) }.result()?;
        out.segment()
    }

    /// A mapping of `capacity` bytes of `name`, a struct of `size` bytes:
    /// its address, and what keeps it mapped; `None` for a capacity of 0.
    pub fn map(self, name: &ShmName, size: u64, capacity: u64) -> Result<Option<(*mut u8, Held)>> {
        let posix = passed(name)?;
        let mut out = Handed {
            address: ptr::null_mut(),
            handle: ptr::null(),
        };
        // SAFETY: a name of its length; `out` is a Handed.
        unsafe { (self.0.map)(Bytes::of(&posix), size, capacity, &mut out) }.result()?;
        Ok((!out.handle.is_null()).then_some((
            out.address,
            Held {
                table: self.0,
                handle: out.handle,
            },
        )))
    }

    /// Resizes the segment `name` to `len` bytes.
    pub fn resize(self, name: &ShmName, len: u64) -> Result<()> {
        let posix = passed(name)?;
        // SAFETY: a name of its length.
        unsafe { (self.0.resize)(Bytes::of(&posix), len) }.result()
    }

    /// Unlinks the segment `name`, if it is one.
    pub fn unlink(self, name: &ShmName) {
        let Ok(posix) = passed(name) else { return };
        // SAFETY: a name of its length.
        unsafe { (self.0.unlink)(Bytes::of(&posix)) }
    }

    /// Guards the segment `name` for a C guard; its identity.
    pub fn guard(self, name: &ShmName) -> Result<[u64; 2]> {
        let posix = passed(name)?;
        let (mut device, mut inode) = (0, 0);
        // SAFETY: a name of its length; two u64s.
        unsafe { (self.0.guard)(Bytes::of(&posix), &mut device, &mut inode) }.result()?;
        Ok([device, inode])
    }

    /// Ends a guard the table's copy holds for `name`, the file `identity`.
    pub fn unlink_if(self, name: &ShmName, [device, inode]: [u64; 2]) {
        let Ok(posix) = passed(name) else { return };
        // SAFETY: a name of its length.
        unsafe { (self.0.unlink_if)(Bytes::of(&posix), device, inode) }
    }

    /// `Shm::read`: the first `len` bytes of the struct `name`, `claim`.
    pub fn read(self, name: &ShmName, claim: Sizes, len: u64) -> Result<Vec<u8>> {
        let posix = passed(name)?;
        let mut buffer: Vec<u8> = Vec::new();
        let context = ptr::from_mut(&mut buffer).cast::<c_void>();
        // SAFETY: a name of its length; `grow` is given `buffer`, which
        // outlives the call.
        unsafe { (self.0.read)(Bytes::of(&posix), claim, len, grow, context) }.result()?;
        Ok(buffer)
    }

    /// `Shm::write`: replaces the data with `data`; the new claims.
    pub fn write(self, name: &ShmName, claim: Sizes, data: &[u8]) -> Result<Sizes> {
        let posix = passed(name)?;
        let mut out = claim;
        // SAFETY: a name and data of their lengths; `out` is a Sizes.
        unsafe { (self.0.write)(Bytes::of(&posix), claim, Bytes::of(data), &mut out) }.result()?;
        Ok(out)
    }

    /// `Shm::set_capacity`; the new claims.
    pub fn set_capacity(self, name: &ShmName, claim: Sizes, capacity: u64) -> Result<Sizes> {
        let posix = passed(name)?;
        let mut out = claim;
        // SAFETY: a name of its length; `out` is a Sizes.
        unsafe { (self.0.set_capacity)(Bytes::of(&posix), claim, capacity, &mut out) }.result()?;
        Ok(out)
    }

    /// `Shm::split_at`: the struct's new claims, the new segment (guarded
    /// by the primary, until [`unlink_if`](Self::unlink_if)) and its claims.
    pub fn split_at(
        self,
        name: &ShmName,
        claim: Sizes,
        position: u64,
    ) -> Result<(Sizes, (ShmName, [u64; 2]), Sizes)> {
        let posix = passed(name)?;
        let mut out = Split {
            left: claim,
            right_segment: Created::empty(),
            right: claim,
        };
        // SAFETY: a name of its length; `out` is a Split.
        unsafe { (self.0.split_at)(Bytes::of(&posix), claim, position, &mut out) }.result()?;
        Ok((out.left, out.right_segment.segment()?, out.right))
    }

    /// `Shm::append` of the struct `source`, `source_claim`; the new claims.
    pub fn append(
        self,
        name: &ShmName,
        claim: Sizes,
        source: &ShmName,
        source_claim: Sizes,
    ) -> Result<Sizes> {
        let (posix, source_posix) = (passed(name)?, passed(source)?);
        let mut out = claim;
        let (target, source) = (Bytes::of(&posix), Bytes::of(&source_posix));
        // SAFETY: names of their lengths; `out` is a Sizes.
        unsafe { (self.0.append)(target, claim, source, source_claim, &mut out) }.result()?;
        Ok(out)
    }

    /// `Shm::trim`; the new claims.
    pub fn trim(self, name: &ShmName, claim: Sizes, bytes: u64) -> Result<Sizes> {
        let posix = passed(name)?;
        let mut out = claim;
        // SAFETY: a name of its length; `out` is a Sizes.
        unsafe { (self.0.trim)(Bytes::of(&posix), claim, bytes, &mut out) }.result()?;
        Ok(out)
    }

    /// `Shm::add_guard` of a struct with no guard of the caller's; `foreign`
    /// if it holds another library's resource. The identity of the segment
    /// now guarded by the primary, until [`unlink_if`](Self::unlink_if).
    pub fn add_guard(self, name: &ShmName, foreign: bool) -> Result<[u64; 2]> {
        let posix = passed(name)?;
        let (mut device, mut inode) = (0, 0);
        // SAFETY: a name of its length; two u64s.
        unsafe { (self.0.add_guard)(Bytes::of(&posix), foreign, &mut device, &mut inode) }
            .result()?;
        Ok([device, inode])
    }

    /// `Shm::data`: `f` on the data in place, in the segment's turn.
    ///
    /// # Safety
    ///
    /// As `Shm::data`: nothing changes the data while `f` runs.
    pub unsafe fn data<R>(
        self,
        name: &ShmName,
        claim: Sizes,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.access(name, claim, false, |data, len| {
            // SAFETY: the primary hands the address and length of the data
            // in its mapping, which stays mapped (its faults absorbed) until
            // its call returns; nothing changes the data meanwhile, as the
            // caller promised.
            f(unsafe {
                Bytes {
                    ptr: data.cast_const(),
                    len,
                }
                .bytes()
            })
        })
    }

    /// `Shm::data_mut`: `f` on the data in place, to change it, in the
    /// segment's turn.
    ///
    /// # Safety
    ///
    /// As `Shm::data_mut`: nothing else reads or changes the data while `f`
    /// runs.
    pub unsafe fn data_mut<R>(
        self,
        name: &ShmName,
        claim: Sizes,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        self.access(name, claim, true, |data, len| {
            if len == 0 {
                return f(&mut []);
            }
            // SAFETY: as in `data`; the primary's turn is exclusive, and
            // nothing else touches the data, as the caller promised.
            f(unsafe { std::slice::from_raw_parts_mut(data, len) })
        })
    }

    /// `f` on the address and length of the data, called back by the
    /// primary in the segment's turn (`exclusive` or shared); a panic of `f`
    /// goes on once the primary's call returned.
    fn access<F: FnOnce(*mut u8, usize) -> R, R>(
        self,
        name: &ShmName,
        claim: Sizes,
        exclusive: bool,
        f: F,
    ) -> Result<R> {
        let posix = passed(name)?;
        let mut visiting = Visiting {
            f: Some(f),
            result: None,
        };
        let context = ptr::from_mut(&mut visiting).cast::<c_void>();
        // SAFETY: a name of its length; `visit` is given `visiting`, of the
        // types it is instantiated with, which outlives the call.
        let outcome =
            unsafe { (self.0.access)(Bytes::of(&posix), claim, exclusive, visit::<F, R>, context) };
        let result = visiting
            .result
            .map(|result| result.unwrap_or_else(|panic| panic::resume_unwind(panic)));
        outcome.result()?;
        result.ok_or(Error::InvalidPayload)
    }
}

/// A mapping handed out, and the table that keeps it mapped.
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
