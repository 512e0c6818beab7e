defmodule ShmexExample.Nif do
  @moduledoc false
  # Stubs for native/shmex_example, a NIF library built on the shmex crate.
  # test_helper.exs builds it and calls load/1.

  def load(path), do: :erlang.load_nif(String.to_charlist(path), 0)

  def checksum(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def reverse(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def filled(_len, _byte), do: :erlang.nif_error(:nif_not_loaded)
  def push(_shm, _byte), do: :erlang.nif_error(:nif_not_loaded)
  def fill(_shm, _byte), do: :erlang.nif_error(:nif_not_loaded)
  def guard(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def nested_read(_shm, _pause_ms), do: :erlang.nif_error(:nif_not_loaded)
  def nested_write(_shm, _byte), do: :erlang.nif_error(:nif_not_loaded)
end
