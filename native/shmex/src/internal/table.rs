//! The functions of this copy's [`Api`] table: what the primary (the
//! Elixir NIF) exports for the other copies of the crate in the VM, and
//! what a C library's copy uses while it has found no primary ([`LOCAL`]).
//! Each does what this copy's own API does, on this copy's state (see
//! `crate::vm` for the design).
//!
//! Each catches its own panics ([`caught`]): a panic must not unwind out of
//! an `extern "C"` function (it would abort the VM), so it comes back as an
//! error, `EIO`. The closures of in-place accesses are another copy's: their
//! panics are carried across by that copy (`crate::vm`'s `visit`), and
//! resumed there once the call returned.
//!
//! Guards made for another copy (by `create`, `guard`, `add_guard`,
//! `split_at`) are held here as C guards are, counted with the segment's
//! other guards, until `unlink_if` ends them.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use super::c_guards;
use crate::mapping::Mapping;
use crate::schedule::Blocking;
use crate::shm::Progress;
use crate::vm::{Alloc, Api, Bytes, Created, Handed, Made, Outcome, Sizes, Split, Visit, ABI};
use crate::{Claim, Guard, Result, Shm, ShmName};

/// This copy's own table for its C API, while it has found no primary: the
/// C API's functions, and for the Rust API's (which call this copy's own
/// API directly meanwhile) stand-ins answering `ENOTSUP`, so that a C
/// library does not carry code it never calls.
pub static LOCAL: Api = Api {
    read: unserved_read,
    write: unserved_write,
    set_capacity: unserved_resize,
    split_at: unserved_split,
    append: unserved_append,
    trim: unserved_resize,
    add_guard: unserved_guard,
    access: unserved_access,
    ..TABLE
};

/// The stand-ins of [`LOCAL`], one per signature.
macro_rules! unserved {
    ($($name:ident($($arg:ty),*);)*) => {
        $(unsafe extern "C" fn $name($(_: $arg),*) -> Outcome { unserved() })*
    };
}

unserved! {
    unserved_read(Bytes, Sizes, u64, Alloc, *mut c_void);
    unserved_write(Bytes, Sizes, Bytes, *mut Sizes);
    unserved_resize(Bytes, Sizes, u64, *mut Sizes);
    unserved_split(Bytes, Sizes, u64, *mut Split);
    unserved_append(Bytes, Sizes, Bytes, Sizes, *mut Sizes);
    unserved_guard(Bytes, bool, *mut u64, *mut u64);
    unserved_access(Bytes, Sizes, bool, Visit, *mut c_void);
}

fn unserved() -> Outcome {
    Outcome::of(Err(crate::Error::Os(
        nix::errno::Errno::ENOTSUP,
        crate::Syscall::ShmOpen,
    )))
}

/// This copy's functions, for the primary to export as a static of its own
/// (under [`crate::vm::SYMBOL`]).
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
    owner: &crate::vm::THIS_COPY,
    read: local_read,
    write: local_write,
    set_capacity: local_set_capacity,
    split_at: local_split_at,
    append: local_append,
    trim: local_trim,
    add_guard: local_add_guard,
    access: local_access,
};

/// What `f` returns, or `panicked` if it panics: the panic ends here, never
/// unwinding across the table.
fn caught<T>(panicked: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(panicked)
}

/// The outcome of a call that panicked: `EIO`.
fn panicked() -> Outcome {
    Outcome::of(Err(crate::Error::Os(
        nix::errno::Errno::EIO,
        crate::Syscall::ShmOpen,
    )))
}

/// Runs `f` on the name passed, or refuses a name with a NUL inside.
///
/// # Safety
///
/// `name` points to `len` bytes.
unsafe fn with_name(name: Bytes, f: impl FnOnce(ShmName) -> Result<()>) -> Outcome {
    // SAFETY: forwarded to the caller.
    match unsafe { name.name() } {
        Some(name) => Outcome::of(f(name)),
        None => Outcome::refused(),
    }
}

/// `f` on the struct another copy passes, `claim` on the segment `name`:
/// its outcome, or the name's refusal.
///
/// # Safety
///
/// `name.ptr` points to `name.len` bytes.
unsafe fn with_struct(name: Bytes, claim: Sizes, f: impl FnOnce(Shm) -> Result<()>) -> Outcome {
    // SAFETY: forwarded to the caller.
    unsafe { with_name(name, |name| f(Shm::new(&name, None, claim.into()))) }
}

/// Holds `guard` for another copy, until `unlink_if`; its segment.
fn hand_over(guard: Guard) -> Created {
    let created = Created::of(guard.name(), guard.identity().to_bits());
    c_guards::hold(guard);
    created
}

/// Writes the claims `result` holds to `out`.
///
/// # Safety
///
/// `out` points to a `Sizes`.
unsafe fn claims(result: Result<Claim>, out: *mut Sizes) -> Result<()> {
    // SAFETY: forwarded to the caller.
    result.map(|claim| unsafe { *out = claim.into() })
}

unsafe extern "C" fn local_create(name: Bytes, len: u64, how: u32, out: *mut Created) -> Outcome {
    caught(panicked(), || {
        let how = match how {
            0 => Made::Unguarded,
            2 => Made::GuardedSparse,
            _ => Made::Guarded,
        };
        // SAFETY: a name of `len` bytes, or none.
        let name = (!name.ptr.is_null()).then(|| unsafe { name.name() });
        let Some(name) = name.map_or(Some(None), |name| name.map(Some)) else {
            return Outcome::refused();
        };
        Outcome::of(super::create(name, len, how).map(|(name, identity)| {
            // SAFETY: `out` points to a Created, by contract.
            unsafe { *out = Created::of(&name, identity) };
        }))
    })
}

unsafe extern "C" fn local_map(name: Bytes, size: u64, capacity: u64, out: *mut Handed) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe {
            with_name(name, |name| {
                let mapping = super::map(&name, Claim { size, capacity })?;
                // SAFETY: `out` points to a Handed, by contract.
                let out = &mut *out;
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
                Ok(())
            })
        }
    })
}

unsafe extern "C" fn local_release(handle: *const c_void) {
    caught((), || {
        if !handle.is_null() {
            // SAFETY: a handle local_map made, released once.
            drop(unsafe { Arc::from_raw(handle.cast::<Mapping>()) });
        }
    })
}

unsafe extern "C" fn local_faulted(handle: *const c_void) -> bool {
    caught(true, || {
        // SAFETY: a live handle local_map made.
        unsafe { handle.cast::<Mapping>().as_ref() }.is_some_and(Mapping::faulted)
    })
}

unsafe extern "C" fn local_resize(name: Bytes, len: u64) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe { with_name(name, |name| super::resize(&name, len)) }
    })
}

unsafe extern "C" fn local_unlink(name: Bytes) {
    caught((), || {
        // SAFETY: a name of `len` bytes.
        if let Some(name) = unsafe { name.name() } {
            super::unlink(&name);
        }
    })
}

unsafe extern "C" fn local_guard(name: Bytes, device: *mut u64, inode: *mut u64) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe {
            with_name(name, |name| {
                let [found_device, found_inode] = super::guard(&name)?;
                // SAFETY: both point to a u64, by contract.
                (*device, *inode) = (found_device, found_inode);
                Ok(())
            })
        }
    })
}

unsafe extern "C" fn local_unlink_if(name: Bytes, device: u64, inode: u64) {
    caught((), || {
        // SAFETY: a name of `len` bytes.
        if let Some(name) = unsafe { name.name() } {
            super::unlink_if(&name, [device, inode]);
        }
    })
}

unsafe extern "C" fn local_read(
    name: Bytes,
    claim: Sizes,
    len: u64,
    alloc: Alloc,
    context: *mut c_void,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe {
            with_struct(name, claim, |shm| {
                let buffer = |len: usize| {
                    // SAFETY: the caller's `alloc` makes `len` bytes in its
                    // context (or none), which live until the caller's call
                    // returns, and nothing else touches meanwhile.
                    let buffer = alloc(context, len);
                    (!buffer.is_null()).then(|| std::slice::from_raw_parts_mut(buffer, len))
                };
                if let Progress::Going(reading) = shm.read_with(&Blocking, len, buffer)? {
                    reading.run_out()?;
                }
                Ok(())
            })
        }
    })
}

unsafe extern "C" fn local_write(
    name: Bytes,
    claim: Sizes,
    data: Bytes,
    out: *mut Sizes,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes; `data` lives for the call, unchanged,
        // and `out` points to a Sizes, by contract.
        unsafe { with_struct(name, claim, |shm| claims(shm.write(data.bytes()), out)) }
    })
}

unsafe extern "C" fn local_set_capacity(
    name: Bytes,
    claim: Sizes,
    capacity: u64,
    out: *mut Sizes,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes; `out` points to a Sizes, by contract.
        unsafe { with_struct(name, claim, |shm| claims(shm.set_capacity(capacity), out)) }
    })
}

unsafe extern "C" fn local_split_at(
    name: Bytes,
    claim: Sizes,
    position: u64,
    out: *mut Split,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe {
            with_struct(name, claim, |shm| {
                let (left, guard, right) = shm.split_at(position)?;
                // SAFETY: `out` points to a Split, by contract.
                *out = Split {
                    left: left.into(),
                    right_segment: hand_over(guard),
                    right: right.into(),
                };
                Ok(())
            })
        }
    })
}

unsafe extern "C" fn local_append(
    name: Bytes,
    claim: Sizes,
    source: Bytes,
    source_claim: Sizes,
    out: *mut Sizes,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: names of their lengths; `out` points to a Sizes, by contract.
        unsafe {
            let Some(source) = source.name() else {
                return Outcome::refused();
            };
            with_struct(name, claim, |shm| {
                let source = Shm::new(&source, None, source_claim.into());
                claims(shm.append(&source), out)
            })
        }
    })
}

unsafe extern "C" fn local_trim(name: Bytes, claim: Sizes, bytes: u64, out: *mut Sizes) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes; `out` points to a Sizes, by contract.
        unsafe { with_struct(name, claim, |shm| claims(shm.trim(bytes), out)) }
    })
}

unsafe extern "C" fn local_add_guard(
    name: Bytes,
    foreign: bool,
    device: *mut u64,
    inode: *mut u64,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes.
        unsafe {
            with_name(name, |name| {
                let shm = Shm::new(&name, None, Claim::full(0));
                let shm = if foreign {
                    shm.with_foreign_guard()
                } else {
                    shm
                };
                let created = hand_over(shm.add_guard()?);
                // SAFETY: both point to a u64, by contract.
                (*device, *inode) = (created.device, created.inode);
                Ok(())
            })
        }
    })
}

unsafe extern "C" fn local_access(
    name: Bytes,
    claim: Sizes,
    exclusive: bool,
    visit: Visit,
    context: *mut c_void,
) -> Outcome {
    caught(panicked(), || {
        // SAFETY: a name of `len` bytes. The caller's `visit` is handed the
        // data in place, as `Shm::data` and `Shm::data_mut` hand it to their
        // closures; the caller promised what they ask (crate::vm::Vm::data).
        unsafe {
            with_struct(name, claim, |shm| {
                if exclusive {
                    shm.data_mut(|data| visit(context, data.as_mut_ptr(), data.len()))
                } else {
                    shm.data(|data| visit(context, data.as_ptr().cast_mut(), data.len()))
                }
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use crate::vm::{accepts, Vm};
    use crate::Error;

    /// The table as the first ABI 1 copies know it: up to `unlink_if`.
    #[repr(C)]
    struct FirstAbi1 {
        abi: u32,
        size: u32,
        functions: [usize; 8],
    }

    /// Their rule: abi 1, and a size covering their table.
    fn first_copies_accept(table: &FirstAbi1) -> bool {
        table.abi == 1 && table.size as usize >= size_of::<FirstAbi1>()
    }

    fn as_first(table: &Api) -> &FirstAbi1 {
        assert!(size_of::<FirstAbi1>() <= size_of::<Api>());
        // SAFETY: `Api` starts with the fields of `FirstAbi1` (checked
        // below, field by field), and is larger.
        unsafe { &*ptr::from_ref(table).cast::<FirstAbi1>() }
    }

    #[test]
    fn a_longer_table_is_used_by_its_prefix_and_another_abi_never() {
        let first = as_first(&TABLE);
        assert!(first_copies_accept(first));
        assert_eq!(first.functions[0], TABLE.create as usize);
        assert_eq!(first.functions[7], TABLE.unlink_if as usize);
        assert_eq!(
            std::mem::offset_of!(Api, unlink_if),
            std::mem::offset_of!(FirstAbi1, functions) + 7 * size_of::<usize>()
        );
        assert!(accepts(&TABLE) && accepts(&LOCAL));

        let other = Api { abi: 2, ..TABLE };
        assert!(!accepts(&other));
        assert!(!first_copies_accept(as_first(&other)));
        // A table only as long as the first ones: this copy needs more.
        let shorter = Api {
            size: size_of::<FirstAbi1>() as u32,
            ..TABLE
        };
        assert!(first_copies_accept(as_first(&shorter)));
        assert!(!accepts(&shorter));
    }

    fn exists(name: &ShmName) -> bool {
        sys::status_of_name(name).is_ok()
    }

    #[test]
    fn rust_segments_start_sparse_and_c_segments_reserved() {
        let vm = Vm::of(&TABLE);
        let allocated = |name| sys::status_of_name(name).unwrap().allocated;
        let (rust, rust_identity) = vm.create(None, 8192, Made::GuardedSparse).unwrap();
        let (c, c_identity) = vm.create(None, 8192, Made::Guarded).unwrap();
        assert_eq!(allocated(&rust), 0);
        assert!(allocated(&c) >= 8192);
        vm.unlink_if(&rust, rust_identity);
        vm.unlink_if(&c, c_identity);
        assert!(!exists(&rust) && !exists(&c));
    }

    #[test]
    fn every_operation_through_the_table_does_what_the_api_does() {
        let vm = Vm::of(&TABLE);
        let (name, identity) = vm.create(None, 5, Made::Guarded).unwrap();
        let full = |len| Sizes {
            size: len,
            capacity: len,
        };
        let written = vm.write(&name, full(0), b"hello").unwrap();
        assert_eq!(written, full(5));
        assert_eq!(vm.read(&name, written, 5).unwrap(), b"hello");
        assert_eq!(vm.read(&name, written, 6), Err(Error::InvalidReadSize));
        assert_eq!(vm.read(&name, full(6), 6), Err(Error::InvalidPayload));
        // SAFETY: nothing else knows this segment.
        unsafe { vm.data_mut(&name, written, |data| data.make_ascii_uppercase()) }.unwrap();
        // SAFETY: as above.
        let sum = unsafe {
            vm.data(&name, written, |data| {
                data.iter().map(|&b| u32::from(b)).sum()
            })
        };
        assert_eq!(sum, Ok(372u32), "HELLO");

        let (left, (right_name, right_identity), right) = vm.split_at(&name, written, 2).unwrap();
        assert_eq!((left.size, right), (2, full(3)));
        assert_eq!(vm.read(&right_name, right, 3).unwrap(), b"LLO");
        assert_eq!(vm.append(&name, left, &right_name, right).unwrap(), full(5));
        assert_eq!(vm.trim(&name, full(5), 1).unwrap(), full(4));
        assert_eq!(
            vm.set_capacity(&name, full(4), 8).unwrap(),
            Sizes {
                size: 4,
                capacity: 8
            }
        );
        assert_eq!(vm.read(&name, full(4), 4).unwrap(), b"ELLO");

        // Guards held for others are counted with the segment's guards.
        assert_eq!(vm.add_guard(&name, true), Err(Error::AlreadyGuarded));
        let second = vm.add_guard(&name, false).unwrap();
        assert_eq!(second, identity);
        vm.unlink_if(&name, identity);
        assert!(exists(&name), "the second guard holds it");
        vm.unlink_if(&name, second);
        assert!(!exists(&name));
        vm.unlink_if(&right_name, right_identity);
        assert!(!exists(&right_name));
    }

    /// A table function that panics, as a bug in one would: caught as the
    /// table's functions catch their panics.
    unsafe extern "C" fn panicking_trim(_: Bytes, _: Sizes, _: u64, _: *mut Sizes) -> Outcome {
        caught(panicked(), || panic!("a bug in the primary"))
    }

    unsafe extern "C" fn panicking_unlink(_: Bytes) {
        caught((), || panic!("a bug in the primary"))
    }

    #[test]
    fn a_panic_in_the_primary_is_an_error_not_an_abort() {
        static PANICKING: Api = Api {
            trim: panicking_trim,
            unlink: panicking_unlink,
            ..TABLE
        };
        let vm = Vm::of(&PANICKING);
        let (name, identity) = vm.create(None, 3, Made::Guarded).unwrap();
        let full = Sizes {
            size: 3,
            capacity: 3,
        };
        // Uncaught, the panic would have aborted this test's process.
        assert_eq!(
            vm.trim(&name, full, 1),
            Err(Error::Os(nix::errno::Errno::EIO, crate::Syscall::ShmOpen))
        );
        vm.unlink(&name);
        assert!(exists(&name), "the unlink panicked first");
        // The other functions go on.
        assert_eq!(vm.write(&name, full, b"abc"), Ok(full));
        vm.unlink_if(&name, identity);
        assert!(!exists(&name));
    }

    #[test]
    fn a_panic_in_place_goes_on_past_the_table() {
        let vm = Vm::of(&TABLE);
        let (name, identity) = vm.create(None, 3, Made::Guarded).unwrap();
        let panicked = std::panic::catch_unwind(|| {
            // SAFETY: nothing else knows this segment.
            unsafe {
                vm.data(
                    &name,
                    Sizes {
                        size: 3,
                        capacity: 3,
                    },
                    |_| panic!("in place"),
                )
            }
        });
        assert!(panicked.is_err());
        // The turn ended with the call: the segment is free.
        assert_eq!(
            vm.write(
                &name,
                Sizes {
                    size: 0,
                    capacity: 3
                },
                b"ok"
            )
            .map(drop),
            Ok(())
        );
        vm.unlink_if(&name, identity);
    }
}
