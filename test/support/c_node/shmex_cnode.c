/*
 * A C node using Shmex's C-node API (shmex/shmex.h with SHMEX_CNODE), the
 * way a Membrane C node would: %Shmex{} structs arrive in messages, are
 * deserialized, mapped and worked on, and go back serialized. Usage:
 *
 *     shmex_cnode <this node's alive name, without @host> <cookie> <node to connect to>
 *
 * It sends {:hello, its pid} to the process registered as shmex_cnode_test
 * on that node, then answers {from, request} messages with {:reply, result}
 * until it gets :stop. Requests:
 *   {:checksum, shm}     -> {:ok, sum of its bytes} | {:error, result name}
 *   {:fill, shm, byte}   -> {:ok, shm}, its data overwritten in place
 *   {:echo, term}        -> {:ok, term deserialized and serialized again}
 *                           | {:error, :not_a_shmex}
 *   {:make, capacity}    -> {:ok, shm}: a new segment, no guard (Elixir adds one)
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>

#include <ei.h>
#include <shmex/shmex.h>
#include <stddef.h>

/* The layouts the Rust side asserts (native/shmex_c_cnode/src/ei.rs and
 * native/shmex_c/src/types.rs), on 64-bit targets. */
_Static_assert(offsetof(erlang_ref, len) == 1024, "erlang_ref.len");
_Static_assert(offsetof(erlang_ref, n) == 1028, "erlang_ref.n");
_Static_assert(offsetof(erlang_ref, creation) == 1048, "erlang_ref.creation");
_Static_assert(sizeof(erlang_ref) == 1052, "erlang_ref");
_Static_assert(offsetof(Shmex, guard) == 24 && sizeof(Shmex) == 32, "Shmex");

static int send_reply(int fd, erlang_pid *to, ei_x_buff *reply) {
  return ei_send(fd, to, reply->buff, reply->index);
}

static void error(ei_x_buff *reply, const char *reason) {
  ei_x_encode_tuple_header(reply, 2);
  ei_x_encode_atom(reply, "error");
  ei_x_encode_atom(reply, reason);
}

static void checksum(const char *buf, int *index, ei_x_buff *reply) {
  Shmex shmex;
  if (shmex_deserialize(buf, index, &shmex)) {
    error(reply, "not_a_shmex");
    return;
  }
  ShmexLibResult result = shmex_open_and_mmap(&shmex);
  if (result != SHMEX_RES_OK) {
    error(reply, shmex_lib_result_to_string(result));
  } else {
    unsigned long sum = 0;
    for (unsigned i = 0; i < shmex.size; i++) {
      sum += ((volatile unsigned char *)shmex.mapped_memory)[i];
    }
    if (shmex_mapping_faulted(&shmex)) {
      error(reply, "invalid_payload");
    } else {
      ei_x_encode_tuple_header(reply, 2);
      ei_x_encode_atom(reply, "ok");
      ei_x_encode_ulong(reply, sum);
    }
  }
  shmex_release(&shmex);
}

static void fill(const char *buf, int *index, ei_x_buff *reply) {
  Shmex shmex;
  long byte;
  if (shmex_deserialize(buf, index, &shmex)) {
    error(reply, "not_a_shmex");
    return;
  }
  ShmexLibResult result = ei_decode_long(buf, index, &byte) ? SHMEX_ERROR_INVALID_PAYLOAD
                                                            : shmex_open_and_mmap(&shmex);
  if (result != SHMEX_RES_OK) {
    error(reply, shmex_lib_result_to_string(result));
  } else {
    memset(shmex.mapped_memory, (int)byte, shmex.size);
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    shmex_serialize(reply, &shmex);
  }
  shmex_release(&shmex);
}

static void echo(const char *buf, int *index, ei_x_buff *reply) {
  Shmex shmex;
  if (shmex_deserialize(buf, index, &shmex)) {
    error(reply, "not_a_shmex");
    return;
  }
  ei_x_encode_tuple_header(reply, 2);
  ei_x_encode_atom(reply, "ok");
  shmex_serialize(reply, &shmex);
  shmex_release(&shmex);
}

static void make(const char *buf, int *index, ei_x_buff *reply) {
  unsigned long capacity;
  if (ei_decode_ulong(buf, index, &capacity)) {
    error(reply, "badarg");
    return;
  }
  Shmex shmex;
  shmex_init(&shmex, (unsigned)capacity);
  ShmexLibResult result = shmex_allocate_unguarded(&shmex);
  if (result != SHMEX_RES_OK) {
    error(reply, shmex_lib_result_to_string(result));
  } else {
    ei_x_encode_tuple_header(reply, 2);
    ei_x_encode_atom(reply, "ok");
    shmex_serialize(reply, &shmex);
  }
  shmex_release(&shmex);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s node cookie target\n", argv[0]);
    return 2;
  }
  ei_init();
  ei_cnode node;
  if (ei_connect_init(&node, argv[1], argv[2], 0) < 0) {
    return 3;
  }
  int fd = ei_connect(&node, argv[3]);
  if (fd < 0) {
    fprintf(stderr, "cannot connect to %s\n", argv[3]);
    return 4;
  }
  ei_x_buff hello;
  ei_x_new_with_version(&hello);
  ei_x_encode_tuple_header(&hello, 2);
  ei_x_encode_atom(&hello, "hello");
  ei_x_encode_pid(&hello, ei_self(&node));
  ei_reg_send(&node, fd, "shmex_cnode_test", hello.buff, hello.index);
  ei_x_free(&hello);

  for (;;) {
    erlang_msg msg;
    ei_x_buff in;
    ei_x_new(&in);
    int got = ei_xreceive_msg(fd, &msg, &in);
    if (got == ERL_TICK) {
      ei_x_free(&in);
      continue;
    }
    if (got == ERL_ERROR) {
      return 5;
    }
    int index = 0, version, arity;
    char command[MAXATOMLEN];
    erlang_pid from;
    ei_decode_version(in.buff, &index, &version);
    if (ei_decode_tuple_header(in.buff, &index, &arity) || arity != 2 ||
        ei_decode_pid(in.buff, &index, &from)) {
      ei_x_free(&in);
      return 0; /* :stop */
    }
    int request_arity;
    ei_decode_tuple_header(in.buff, &index, &request_arity);
    ei_decode_atom(in.buff, &index, command);

    ei_x_buff reply;
    ei_x_new_with_version(&reply);
    ei_x_encode_tuple_header(&reply, 2);
    ei_x_encode_atom(&reply, "reply");
    if (!strcmp(command, "checksum")) {
      checksum(in.buff, &index, &reply);
    } else if (!strcmp(command, "fill")) {
      fill(in.buff, &index, &reply);
    } else if (!strcmp(command, "echo")) {
      echo(in.buff, &index, &reply);
    } else if (!strcmp(command, "make")) {
      make(in.buff, &index, &reply);
    } else {
      error(&reply, "unknown");
    }
    send_reply(fd, &from, &reply);
    ei_x_free(&reply);
    ei_x_free(&in);
  }
}
