defmodule Shmex.Native.Nif do
  @moduledoc false
  # Stubs replaced by the Rust NIF library (native/shmex_nif) when it loads.
  #
  # The calls that copy or free data (`@scheduled`, the one list of them on
  # this side) come twice: on a normal scheduler, where they answer
  # `:reschedule` for work estimated at over a millisecond, and as `_dirty`
  # twins on a dirty CPU scheduler. Any of them may answer `{:wait, token}`
  # when the segment is busy. `Shmex.Native` handles both (`scheduled/1`).

  @on_load :load

  @scheduled [
    set_capacity: [:shm, :capacity],
    read: [:shm, :read_size],
    write: [:shm, :data],
    split_at: [:shm, :position],
    append: [:target, :source],
    trim: [:shm, :bytes]
  ]

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

  for {name, args} <- @scheduled do
    unused = Enum.map(args, &Macro.var(:"_#{&1}", __MODULE__))

    def unquote(name)(unquote_splicing(unused)), do: :erlang.nif_error(:nif_not_loaded)

    def unquote(:"#{name}_dirty")(unquote_splicing(unused)),
      do: :erlang.nif_error(:nif_not_loaded)
  end
end
