/*
 * Shmex's C API for C nodes, compatible with Shmex 0.5.1's C-node
 * shmex/shmex.h: a %Shmex{} struct to and from ei's external term format,
 * beside the functions of shmex/lib.h (which has the guarantees). Compile
 * with this directory on the include path before the NIF one; link with
 * libshmex_cnode.a, ei, and -lpthread -ldl -lm.
 *
 * Differences from 0.5.1: shmex_deserialize returns 1 for any term that is
 * not exactly a %Shmex{} struct (0.5.1 returned 0 for a map of the wrong
 * size), copies names of any length (0.5.1 overflowed a buffer past 254
 * bytes) and refuses names with NUL bytes and sizes over UINT_MAX.
 */
#pragma once

#ifndef SHMEX_CNODE
#define SHMEX_CNODE
#endif

#include <ei.h>

#include <shmex/lib.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Size 0, the given capacity, not mapped (MAP_FAILED), name and guard NULL. */
void shmex_init(Shmex *payload, unsigned capacity);

/* Decodes the %Shmex{} struct at buf[*idx] into payload (name and guard are
 * malloc'd copies, NULL for nil) and moves *idx past it: 0. For anything
 * else: 1, with payload released and *idx unchanged. Pair with
 * shmex_release. */
int shmex_deserialize(const char *buf, int *idx, Shmex *payload);

/* Frees name and guard and unmaps; does not unlink. */
void shmex_release(Shmex *payload);

/* Encodes payload as a %Shmex{} struct (name as a binary or nil, guard as a
 * reference or nil): 0, or non-zero on failure. */
int shmex_serialize(ei_x_buff *buf, Shmex *payload);

#ifdef __cplusplus
}
#endif
