/*
 * What a unifex native does with shm payloads (unifex's payload.c, on
 * Shmex's C API), in a loop, and the same system calls by name without any
 * library: the benchmark's C path (bench/c_path_bench.exs builds it twice,
 * as two NIF libraries of one VM, MODULE naming each).
 *
 *   touch(shm, n)        unifex_payload_from_term + reading a byte +
 *                        unifex_payload_release: shmex_get_from_term,
 *                        shmex_open_and_mmap, shmex_release; ns each
 *   allocate(size, n)    unifex_payload_alloc and filling it: shmex_init,
 *                        shmex_allocate, shmex_open_and_mmap, memset,
 *                        shmex_make_term, shmex_release; the n payloads
 *   floor_touch(name, n) openat + fstat + mmap + close + a byte + munmap
 *   floor_allocate(size, n)
 *                        openat(O_CREAT|O_EXCL) + ftruncate + mmap +
 *                        memset + munmap + close + unlink
 */
#define _GNU_SOURCE
#include <erl_nif.h>
#include <fcntl.h>
#include <shmex/shmex.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static ErlNifResourceType *GUARD;

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  GUARD = enif_open_resource_type(env, NULL, "payload_guard", shmex_guard_destructor,
                                  ERL_NIF_RT_CREATE, NULL);
  return GUARD == NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static volatile unsigned char sink;

static ERL_NIF_TERM touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned n;
  if (!enif_get_uint(env, argv[1], &n) || n == 0) return enif_make_badarg(env);
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    Shmex payload;
    if (!shmex_get_from_term(env, argv[0], &payload)) return enif_make_badarg(env);
    ShmexLibResult result = shmex_open_and_mmap(&payload);
    if (result != SHMEX_RES_OK) {
      shmex_release(&payload);
      return shmex_make_error_term(env, result);
    }
    sink += ((unsigned char *)payload.mapped_memory)[0];
    shmex_release(&payload);
  }
  return enif_make_double(env, (now() - start) / n);
}

static ERL_NIF_TERM allocate(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned size, n;
  if (!enif_get_uint(env, argv[0], &size) || !enif_get_uint(env, argv[1], &n)) {
    return enif_make_badarg(env);
  }
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (unsigned i = 0; i < n; i++) {
    Shmex payload;
    shmex_init(env, &payload, size);
    ShmexLibResult result = shmex_allocate(env, GUARD, &payload);
    if (result == SHMEX_RES_OK) result = shmex_open_and_mmap(&payload);
    if (result != SHMEX_RES_OK) {
      shmex_release(&payload);
      return shmex_make_error_term(env, result);
    }
    memset(payload.mapped_memory, 1, size);
    payload.size = size;
    list = enif_make_list_cell(env, shmex_make_term(env, &payload), list);
    shmex_release(&payload);
  }
  return list;
}

static ERL_NIF_TERM floor_touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  ErlNifBinary name;
  unsigned n;
  char path[300];
  if (!enif_inspect_binary(env, argv[0], &name) || name.size > 255 ||
      !enif_get_uint(env, argv[1], &n) || n == 0) {
    return enif_make_badarg(env);
  }
  snprintf(path, sizeof path, "%.*s", (int)name.size - 1, (const char *)name.data + 1);
  int dir = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    int fd = openat(dir, path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) return enif_make_badarg(env);
    void *memory = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    sink += ((unsigned char *)memory)[0];
    munmap(memory, st.st_size);
  }
  double ns = (now() - start) / n;
  close(dir);
  return enif_make_double(env, ns);
}

static ERL_NIF_TERM floor_allocate(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned size, n;
  if (!enif_get_uint(env, argv[0], &size) || !enif_get_uint(env, argv[1], &n) || n == 0) {
    return enif_make_badarg(env);
  }
  int dir = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  char name[64];
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    snprintf(name, sizeof name, "shmex-floor-%d-%u", getpid(), i);
    int fd = openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) return enif_make_badarg(env);
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memset(memory, 1, size);
    munmap(memory, size);
    close(fd);
    unlinkat(dir, name, 0);
  }
  double ns = (now() - start) / n;
  close(dir);
  return enif_make_double(env, ns);
}

static ErlNifFunc functions[] = {
    {"touch", 2, touch, 0},
    {"allocate", 2, allocate, 0},
    {"floor_touch", 2, floor_touch, 0},
    {"floor_allocate", 2, floor_allocate, 0},
};

/* MODULE is expanded before ERL_NIF_INIT stringizes it. */
#define INIT(module) ERL_NIF_INIT(module, functions, load, NULL, NULL, NULL)
INIT(MODULE)
