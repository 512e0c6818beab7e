//! Shmex 0.5.1's C API for NIFs (`shmex/lib.h`, `shmex/shmex.h` in
//! `include/`), implemented on the `shmex` crate and built as the static
//! library `libshmex.a`.
//!
//! C callers hand over raw pointers, so this crate is where the unsafe code
//! of the project meets C: every function checks what it can (NULL pointers,
//! names, sizes against the real segment) and the header says what is left
//! to the caller. Errors set `errno`, which [`terms::shmex_make_error_term`]
//! reads, as 0.5.1's did.

#![deny(unsafe_op_in_unsafe_fn)]
// The functions are called from C: their safety contract is the header's.
#![allow(clippy::missing_safety_doc)]

mod memory;
mod terms;
mod types;

/// Runs `body`, or answers `fallback()` should it panic: a panic unwinding
/// into C would abort the whole VM. Nothing here is known to panic; this is
/// the net under that claim.
fn no_unwind<R>(body: impl FnOnce() -> R, fallback: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| fallback())
}
