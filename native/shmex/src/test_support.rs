//! Helpers for the unit tests.

use std::os::fd::OwnedFd;

use crate::name::ShmName;
use crate::sys;

/// A segment under a fresh name, open, unlinked when the test ends.
pub(crate) struct Scratch {
    pub name: ShmName,
    pub fd: OwnedFd,
}

impl Scratch {
    pub fn new(len: u64) -> Scratch {
        let name = ShmName::generate();
        let fd = sys::create(&name).unwrap();
        sys::resize(std::os::fd::AsFd::as_fd(&fd), len).unwrap();
        Scratch { name, fd }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        sys::unlink(&self.name);
    }
}
