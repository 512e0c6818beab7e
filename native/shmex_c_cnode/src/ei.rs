//! The parts of `ei.h` (Erlang's erl_interface, OTP 23 and later) used here.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

/// `MAXATOMLEN_UTF8`: room for any atom's name and a NUL.
pub const MAXATOMLEN_UTF8: usize = 255 * 4 + 1;

/// `erlang_ref`.
#[repr(C)]
pub struct ErlangRef {
    pub node: [c_char; MAXATOMLEN_UTF8],
    pub len: c_int,
    pub n: [c_uint; 5],
    pub creation: c_uint,
}

// ei.h's layout (OTP 23 and later); the C node test asserts the same
// numbers (test/support/c_node/shmex_cnode.c).
const _: () = {
    assert!(std::mem::offset_of!(ErlangRef, len) == 1024);
    assert!(std::mem::offset_of!(ErlangRef, n) == 1028);
    assert!(std::mem::offset_of!(ErlangRef, creation) == 1048);
    assert!(size_of::<ErlangRef>() == 1052);
};

/// `ei_x_buff`, only ever behind a pointer.
#[repr(C)]
pub struct EiXBuff {
    _private: [u8; 0],
}

extern "C" {
    pub fn ei_decode_map_header(buf: *const c_char, index: *mut c_int, arity: *mut c_int) -> c_int;
    pub fn ei_decode_atom(buf: *const c_char, index: *mut c_int, atom: *mut c_char) -> c_int;
    pub fn ei_get_type(
        buf: *const c_char,
        index: *const c_int,
        kind: *mut c_int,
        size: *mut c_int,
    ) -> c_int;
    pub fn ei_decode_binary(
        buf: *const c_char,
        index: *mut c_int,
        data: *mut c_void,
        len: *mut c_long,
    ) -> c_int;
    pub fn ei_decode_ref(buf: *const c_char, index: *mut c_int, reference: *mut ErlangRef)
        -> c_int;
    pub fn ei_decode_ulong(buf: *const c_char, index: *mut c_int, value: *mut c_ulong) -> c_int;
    pub fn ei_x_encode_map_header(buf: *mut EiXBuff, arity: c_long) -> c_int;
    pub fn ei_x_encode_atom(buf: *mut EiXBuff, atom: *const c_char) -> c_int;
    pub fn ei_x_encode_binary(buf: *mut EiXBuff, data: *const c_void, len: c_int) -> c_int;
    pub fn ei_x_encode_ref(buf: *mut EiXBuff, reference: *const ErlangRef) -> c_int;
    pub fn ei_x_encode_ulong(buf: *mut EiXBuff, value: c_ulong) -> c_int;
}
