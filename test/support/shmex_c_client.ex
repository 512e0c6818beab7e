# Stubs for test/support/c_client/shmex_c_client.c, a C NIF on the C API
# in priv/native. test_helper.exs builds it twice and calls load/1 of each:
# ShmexCClient.Nif, and ShmexCClient.Second, the same C NIF built and loaded
# a second time as another library (two C libraries linking libshmex.a in
# one VM).
for module <- [ShmexCClient.Nif, ShmexCClient.Second] do
  defmodule module do
    @moduledoc false

    def load(path), do: :erlang.load_nif(String.to_charlist(path), 0)

    def allocate(_capacity, _byte), do: :erlang.nif_error(:nif_not_loaded)
    def checksum(_shm), do: :erlang.nif_error(:nif_not_loaded)
    def write(_shm, _data), do: :erlang.nif_error(:nif_not_loaded)
    def resize(_shm, _capacity), do: :erlang.nif_error(:nif_not_loaded)
    def misuse(_shm), do: :erlang.nif_error(:nif_not_loaded)
    def guard(_shm), do: :erlang.nif_error(:nif_not_loaded)
    def parse(_term), do: :erlang.nif_error(:nif_not_loaded)
    def unlink(_shm), do: :erlang.nif_error(:nif_not_loaded)
    def blank(_capacity), do: :erlang.nif_error(:nif_not_loaded)
    def generate_name, do: :erlang.nif_error(:nif_not_loaded)
    def error_term(_code), do: :erlang.nif_error(:nif_not_loaded)
    def result_name(_code), do: :erlang.nif_error(:nif_not_loaded)
    def allocate_named(_name, _capacity), do: :erlang.nif_error(:nif_not_loaded)
    def unguarded_sigbus, do: :erlang.nif_error(:nif_not_loaded)
  end
end
