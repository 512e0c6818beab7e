//! One registry per VM: the C API works through the VM's primary copy of
//! the crate once it is found, else on this copy's own state.
//!
//! The rendezvous and the table are the `shmex` crate's (its `vm` module
//! documents the design; [`found`], [`Api`], [`TABLE`] here): the Elixir
//! NIF exports the table, every copy of the crate (this C library's, a Rust
//! NIF's) finds it the same way. Until then, and always in a C node (another
//! OS process), the C API calls this copy's own table, [`LOCAL`].
//!
//! Everything the C API does to segments goes through the table: creating,
//! mapping (the kept mapping, reference counted), resizing, unlinking and
//! guarding. So the primary's rules hold for C as for Elixir: the same
//! checks, the same turns per segment, one count of guards per segment, one
//! journal of what a crash would leave, one SIGBUS handler for every mapping
//! handed out.

pub use shmex::internal::{accepts, found, Api, Held, Vm, ABI, LOCAL, LOOK_AGAIN, SYMBOL, TABLE};

/// The table to work through: the primary's once found, else this copy's.
pub fn api() -> Vm {
    Vm::of(found().unwrap_or(&LOCAL))
}

/// What the C API calls: [`api`]'s functions, with Rust types.
pub mod call {
    use shmex::internal::{self, Creation, Identity, Made};
    use shmex::{Claim, Result, ShmName};

    use super::{api, Held};

    /// Creates the segment `name` (a fresh one for `None`), `len` bytes.
    pub fn create(name: Option<&ShmName>, len: u64, how: Creation) -> Result<(ShmName, Identity)> {
        api().create(
            name,
            len,
            match how {
                Creation::Unguarded => Made::Unguarded,
                Creation::Guarded => Made::Guarded,
            },
        )
    }

    /// A mapping of `claim.capacity` bytes of `name`: its address, and the
    /// table and handle to release it with; `None` for a capacity of 0.
    pub fn map(name: &ShmName, claim: Claim) -> Result<Option<(*mut u8, Held)>> {
        api().map(name, claim.size, claim.capacity)
    }

    /// Resizes the segment `name` to `len` bytes.
    pub fn resize(name: &ShmName, len: u64) -> Result<()> {
        api().resize(name, len)
    }

    /// Unlinks the segment `name`, if it is one.
    pub fn unlink(name: &ShmName) {
        api().unlink(name)
    }

    /// Guards the segment `name` for a C guard; its identity.
    pub fn guard(name: &ShmName) -> Result<Identity> {
        api().guard(name)
    }

    /// Ends a C guard of `name`, the segment `identity`: this copy's own,
    /// if it made the guard before it found the primary; else the
    /// primary's.
    pub fn unlink_if(name: &ShmName, identity: Identity) {
        if !internal::release_c_guard(name, identity) {
            api().unlink_if(name, identity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_another_abi_or_too_small_are_refused() {
        assert!(accepts(&LOCAL));
        let older = Api { abi: 0, ..TABLE };
        assert!(!accepts(&older));
        let shorter = Api {
            size: LOCAL.size - 8,
            ..TABLE
        };
        assert!(!accepts(&shorter));
    }
}
