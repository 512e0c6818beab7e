defmodule Shmex.Native.Nif do
  @moduledoc false
  # Stubs replaced by the Rust NIF library (native/shmex_nif) when it loads:
  # one function an operation. Each decides where it runs (it moves itself
  # to a dirty scheduler for long work); those that wait for their turn on a
  # segment may answer `{:wait, token}`, which `Shmex.Native` handles.

  @on_load :load

  def load do
    :shmex
    |> :code.priv_dir()
    |> :filename.join(~c"native/shmex_nif")
    |> :erlang.load_nif(0)
  end

  def allocate(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def add_guard(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def ensure_not_gc(_shm), do: :erlang.nif_error(:nif_not_loaded)
  def stats, do: :erlang.nif_error(:nif_not_loaded)
  def set_capacity(_shm, _capacity), do: :erlang.nif_error(:nif_not_loaded)
  def read(_shm, _read_size), do: :erlang.nif_error(:nif_not_loaded)
  def write(_shm, _data), do: :erlang.nif_error(:nif_not_loaded)
  def split_at(_shm, _position), do: :erlang.nif_error(:nif_not_loaded)
  def append(_target, _source), do: :erlang.nif_error(:nif_not_loaded)
  def trim(_shm, _bytes), do: :erlang.nif_error(:nif_not_loaded)
end
