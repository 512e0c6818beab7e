//! POSIX shared memory segments for [Shmex](https://hexdocs.pm/shmex), and the
//! Rust side of `%Shmex{}` terms.
//!
//! - [`Segment`]: an open segment, checked so that touching it cannot raise
//!   SIGBUS (every `unsafe` of the crate lives in its module).
//! - [`Guard`]: the NIF resource that unlinks a segment when the BEAM collects
//!   it, and keeps the segment open and mapped between calls.
//! - [`Shm`]: a decoded `%Shmex{}` struct and the operations of `Shmex.Native`.
//! - [`ShmexTerm`]: decoding and encoding `%Shmex{}` terms.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod budget;
mod cost;
mod error;
mod guard;
pub mod janitor;
mod name;
mod segment;
mod shm;
mod term;

pub use cost::Cost;
pub use error::{Error, Result, Syscall};
pub use guard::Guard;
pub use name::ShmName;
pub use segment::{unlink, Segment};
pub use shm::{Claim, Shm};
pub use term::{decode_size, guarded_struct, ok, ArgumentError, ShmexTerm};

/// Registers the guard resource type and starts the janitor thread. A NIF
/// library using this crate must call it from its `load` callback.
pub fn load(env: rustler::Env) -> bool {
    janitor::start();
    env.register::<Guard>().is_ok()
}
