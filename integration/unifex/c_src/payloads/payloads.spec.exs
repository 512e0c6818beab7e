module Payloads

interface [NIF, CNode]

spec checksum(data :: payload) :: {:ok :: label, sum :: uint64}

spec reversed(data :: payload) :: {:ok :: label, reversed :: payload}

spec allocate(size :: unsigned, byte :: unsigned, shared :: bool) ::
       {:ok :: label, data :: payload} | {:error :: label, reason :: atom}

spec regrown(data :: payload, size :: unsigned) ::
       {:ok :: label, data :: payload} | {:error :: label, reason :: atom}
