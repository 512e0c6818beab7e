//! The C-node functions: `%Shmex{}` structs to and from `ei`'s buffers.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void, CStr};
use std::ptr;

use nix::libc;
use shmex_c::no_unwind;
use shmex_c::segments::release_common;
use shmex_c::types::not_mapped;

use crate::ei::{self, EiXBuff, ErlangRef, MAXATOMLEN_UTF8};

/// `Shmex` with a C node's guard: a reference, or NULL.
type Shmex = shmex_c::types::Shmex<*mut ErlangRef>;

/// `ERL_BINARY_EXT`, as `ei_get_type` names a binary.
const BINARY: c_int = b'm' as c_int;

/// The keys of a `%Shmex{}` struct, each expected once.
const KEYS: [&CStr; 5] = [c"name", c"guard", c"size", c"capacity", c"__struct__"];

/// `shmex_init`: size 0, the given capacity, not mapped, no name, no guard.
#[no_mangle]
pub unsafe extern "C" fn shmex_init(payload: *mut Shmex, capacity: c_uint) {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex, by the header's contract.
            if let Some(payload) = unsafe { payload.as_mut() } {
                *payload = blank(capacity);
            }
        },
        || (),
    )
}

/// `shmex_release`: frees the name and the guard, unmaps; does not unlink.
#[no_mangle]
pub unsafe extern "C" fn shmex_release(payload: *mut Shmex) {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name and
            // guard are NULL or from `malloc`.
            unsafe {
                let Some(shmex) = payload.as_mut() else {
                    return;
                };
                libc::free(shmex.guard.cast::<c_void>());
                shmex.guard = ptr::null_mut();
                release_common(shmex.common());
            }
        },
        || (),
    )
}

/// `shmex_deserialize`: decodes the `%Shmex{}` struct at `buf[*idx]` into
/// `payload` and moves `*idx` past it; 0 on success. Anything else than a
/// `%Shmex{}` struct is 1, with `payload` left released and `*idx` as it was.
#[no_mangle]
pub unsafe extern "C" fn shmex_deserialize(
    buf: *const c_char,
    idx: *mut c_int,
    payload: *mut Shmex,
) -> c_int {
    no_unwind(
        || {
            // SAFETY: `idx` and `payload` are NULL or valid, by the header's contract.
            let (Some(idx), Some(payload)) = (unsafe { idx.as_mut() }, unsafe { payload.as_mut() })
            else {
                return 1;
            };
            if buf.is_null() {
                return 1;
            }
            *payload = blank(0);
            // SAFETY: `buf` holds an encoded term at `*idx` (ei's contract).
            match unsafe { decode(buf, *idx, payload) } {
                Some(end) => {
                    *idx = end;
                    0
                }
                None => {
                    // SAFETY: what `decode` put there came from `malloc`.
                    unsafe { shmex_release(payload) };
                    1
                }
            }
        },
        || 1,
    )
}

/// `shmex_serialize`: encodes `payload` as a `%Shmex{}` struct; non-zero on
/// failure.
#[no_mangle]
pub unsafe extern "C" fn shmex_serialize(buf: *mut EiXBuff, payload: *mut Shmex) -> c_int {
    no_unwind(
        || {
            // SAFETY: a non-NULL payload points to a Shmex whose name is NULL
            // or a C string and whose guard is NULL or a reference.
            let Some(payload) = (unsafe { payload.as_ref() }) else {
                return 1;
            };
            if buf.is_null() {
                return 1;
            }
            // SAFETY: `buf` is an ei_x_buff the caller initialized.
            c_int::from(unsafe { encode(buf, payload) }.is_none())
        },
        || 1,
    )
}

fn blank(capacity: c_uint) -> Shmex {
    Shmex {
        name: ptr::null_mut(),
        size: 0,
        capacity,
        mapped_memory: not_mapped(),
        guard: ptr::null_mut(),
    }
}

/// Decodes the struct at `buf[index]` into `payload`; the index past it.
///
/// # Safety
///
/// `buf` holds an encoded term at `index`.
unsafe fn decode(buf: *const c_char, mut index: c_int, payload: &mut Shmex) -> Option<c_int> {
    let mut arity = 0;
    // SAFETY: forwarded to the caller; the out-parameters are ours.
    unsafe { check(ei::ei_decode_map_header(buf, &mut index, &mut arity)) }?;
    if usize::try_from(arity).ok() != Some(KEYS.len()) {
        return None;
    }
    let mut seen = [false; KEYS.len()];
    for _ in 0..KEYS.len() {
        // SAFETY: forwarded to the caller.
        let key = unsafe { atom(buf, &mut index) }?;
        let position = KEYS.iter().position(|known| *known == key.as_c_str())?;
        if std::mem::replace(&mut seen[position], true) {
            return None;
        }
        // SAFETY: forwarded to the caller.
        unsafe {
            match position {
                0 => payload.name = nil_or(buf, &mut index, name)?,
                1 => payload.guard = nil_or(buf, &mut index, reference)?,
                2 => payload.size = unsigned(buf, &mut index)?,
                3 => payload.capacity = unsigned(buf, &mut index)?,
                _ => (atom(buf, &mut index)?.as_c_str() == c"Elixir.Shmex").then_some(())?,
            }
        }
    }
    Some(index)
}

/// `nil` as NULL, or what `decode` makes of the term.
///
/// # Safety
///
/// `buf` holds an encoded term at `*index`.
unsafe fn nil_or<T>(
    buf: *const c_char,
    index: &mut c_int,
    decode: unsafe fn(*const c_char, &mut c_int) -> Option<*mut T>,
) -> Option<*mut T> {
    let mut ahead = *index;
    // SAFETY: forwarded to the caller.
    if unsafe { atom(buf, &mut ahead) }.is_some_and(|atom| atom.as_c_str() == c"nil") {
        *index = ahead;
        return Some(ptr::null_mut());
    }
    // SAFETY: forwarded to the caller.
    unsafe { decode(buf, index) }
}

/// A binary without NUL bytes, as a C string from `malloc`.
///
/// # Safety
///
/// `buf` holds an encoded term at `*index`.
unsafe fn name(buf: *const c_char, index: &mut c_int) -> Option<*mut c_char> {
    let (mut kind, mut size) = (0, 0);
    // SAFETY: forwarded to the caller.
    unsafe { check(ei::ei_get_type(buf, index, &mut kind, &mut size)) }?;
    let size = usize::try_from(size).ok().filter(|_| kind == BINARY)?;
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let copy = unsafe { libc::malloc(size + 1) }.cast::<c_char>();
    if copy.is_null() {
        return None;
    }
    let mut len: c_long = 0;
    // SAFETY: `copy` has room for the binary's `size` bytes and a NUL.
    let decoded = unsafe {
        check(ei::ei_decode_binary(buf, index, copy.cast(), &mut len)).and_then(|()| {
            let len = usize::try_from(len).ok().filter(|&len| len == size)?;
            copy.add(len).write(0);
            // A NUL inside would cut the name short in C.
            (CStr::from_ptr(copy).count_bytes() == len).then_some(copy)
        })
    };
    if decoded.is_none() {
        // SAFETY: `copy` came from malloc and is not handed out.
        unsafe { libc::free(copy.cast()) };
    }
    decoded
}

/// A reference, copied into memory from `malloc`.
///
/// # Safety
///
/// `buf` holds an encoded term at `*index`.
unsafe fn reference(buf: *const c_char, index: &mut c_int) -> Option<*mut ErlangRef> {
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let copy = unsafe { libc::malloc(size_of::<ErlangRef>()) }.cast::<ErlangRef>();
    if copy.is_null() {
        return None;
    }
    // SAFETY: forwarded to the caller; `copy` has room for an erlang_ref.
    let decoded = unsafe { check(ei::ei_decode_ref(buf, index, copy)) };
    if decoded.is_none() {
        // SAFETY: `copy` came from malloc and is not handed out.
        unsafe { libc::free(copy.cast()) };
        return None;
    }
    Some(copy)
}

/// An integer that fits the C struct's 32-bit fields.
///
/// # Safety
///
/// `buf` holds an encoded term at `*index`.
unsafe fn unsigned(buf: *const c_char, index: &mut c_int) -> Option<c_uint> {
    let mut value: c_ulong = 0;
    // SAFETY: forwarded to the caller.
    unsafe { check(ei::ei_decode_ulong(buf, index, &mut value)) }?;
    c_uint::try_from(value).ok()
}

/// An atom's name.
///
/// # Safety
///
/// `buf` holds an encoded term at `*index`.
unsafe fn atom(buf: *const c_char, index: &mut c_int) -> Option<std::ffi::CString> {
    let mut name = [0 as c_char; MAXATOMLEN_UTF8];
    // SAFETY: forwarded to the caller; `name` has room for any atom.
    unsafe { check(ei::ei_decode_atom(buf, index, name.as_mut_ptr())) }?;
    // SAFETY: ei wrote a NUL-terminated name.
    Some(unsafe { CStr::from_ptr(name.as_ptr()) }.to_owned())
}

/// Encodes `payload` as a `%Shmex{}` struct into `buf`.
///
/// # Safety
///
/// `buf` is an initialized ei_x_buff; `payload`'s name is NULL or a C string
/// and its guard NULL or a reference.
unsafe fn encode(buf: *mut EiXBuff, payload: &Shmex) -> Option<()> {
    // SAFETY: forwarded to the caller.
    unsafe {
        check(ei::ei_x_encode_map_header(buf, KEYS.len() as c_long))?;
        check(ei::ei_x_encode_atom(buf, c"name".as_ptr()))?;
        if payload.name.is_null() {
            check(ei::ei_x_encode_atom(buf, c"nil".as_ptr()))?;
        } else {
            let name = CStr::from_ptr(payload.name).to_bytes();
            let len = c_int::try_from(name.len()).ok()?;
            check(ei::ei_x_encode_binary(buf, name.as_ptr().cast(), len))?;
        }
        check(ei::ei_x_encode_atom(buf, c"guard".as_ptr()))?;
        if payload.guard.is_null() {
            check(ei::ei_x_encode_atom(buf, c"nil".as_ptr()))?;
        } else {
            check(ei::ei_x_encode_ref(buf, payload.guard))?;
        }
        check(ei::ei_x_encode_atom(buf, c"size".as_ptr()))?;
        check(ei::ei_x_encode_ulong(buf, c_ulong::from(payload.size)))?;
        check(ei::ei_x_encode_atom(buf, c"capacity".as_ptr()))?;
        check(ei::ei_x_encode_ulong(buf, c_ulong::from(payload.capacity)))?;
        check(ei::ei_x_encode_atom(buf, c"__struct__".as_ptr()))?;
        check(ei::ei_x_encode_atom(buf, c"Elixir.Shmex".as_ptr()))
    }
}

/// ei's status: 0 is success.
fn check(status: c_int) -> Option<()> {
    (status == 0).then_some(())
}
