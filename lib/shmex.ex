defmodule Shmex do
  @moduledoc """
  Data in POSIX shared memory, passed around as a plain struct.

  A `%Shmex{}` names a shared memory segment (`/dev/shm/<name>` on Linux) that
  other OS processes can open by name, and says how much of it holds data:

      iex> shm = Shmex.new("hello")
      iex> {shm.size, shm.capacity}
      {5, 5}
      iex> Shmex.to_binary(shm)
      "hello"

  The segment lives as long as the struct's guard: when the BEAM garbage
  collects the last copy of the struct, the segment is unlinked. Pass the
  struct around whole and do not edit its fields; `Shmex.Native` has the
  operations.

  The functions here raise `Shmex.Error` where `Shmex.Native` returns
  `{:error, reason}`, and `ArgumentError` for malformed arguments.
  """

  alias Shmex.Native

  @typedoc """
  A shared memory segment and the data in it.

    * `name` - the segment's POSIX name (`"/shmex-…"`), `nil` before allocation
    * `guard` - a reference whose collection unlinks the segment, or `nil`
    * `size` - bytes of data, at the start of the segment
    * `capacity` - the segment's size in bytes
  """
  @type t :: %__MODULE__{
          name: binary() | nil,
          guard: reference() | nil,
          size: non_neg_integer(),
          capacity: non_neg_integer()
        }

  @default_capacity 4096

  defstruct name: nil, guard: nil, size: 0, capacity: @default_capacity

  @doc """
  Creates an empty segment of `capacity` bytes (4096 by default).

      iex> shm = Shmex.empty(100)
      iex> {shm.size, shm.capacity}
      {0, 100}

  Raises `Shmex.Error` if the segment cannot be created.
  """
  @spec empty(capacity :: non_neg_integer()) :: t()
  def empty(capacity \\ @default_capacity) do
    check_capacity!(capacity)
    ok!(Native.allocate(%__MODULE__{capacity: capacity}))
  end

  @doc """
  Creates a segment holding `data`, with the capacity `byte_size(data)`.

  Unlike Shmex 0.5.1, `new("")` works and gives an empty, zero-capacity segment.
  """
  @spec new(data :: binary()) :: t()
  def new(data) do
    check_data!(data)
    new(data, byte_size(data))
  end

  @doc """
  Creates a segment holding `data`, with the capacity
  `max(capacity, byte_size(data))`.

      iex> shm = Shmex.new("abc", 10)
      iex> {shm.size, shm.capacity}
      {3, 10}

  Raises `Shmex.Error` if the segment cannot be created or written, for
  example `{:enospc, :ftruncate}` when `/dev/shm` is full.
  """
  @spec new(data :: binary(), capacity :: non_neg_integer()) :: t()
  def new(data, capacity) do
    check_data!(data)
    check_capacity!(capacity)
    shm = ok!(Native.allocate(%__MODULE__{capacity: max(capacity, byte_size(data))}))
    ok!(Native.write(shm, data))
  end

  @doc """
  Sets the segment's capacity; data past it is dropped and `size` shrinks to fit.

      iex> Shmex.new("abcdef") |> Shmex.set_capacity(3) |> Shmex.to_binary()
      "abc"
  """
  @spec set_capacity(t(), capacity :: non_neg_integer()) :: t()
  def set_capacity(shm, capacity), do: ok!(Native.set_capacity(shm, capacity))

  @doc """
  Keeps `shm`, and so its segment, alive up to this call.

  Useful when the segment's name was sent to another OS process: call this
  after that process has opened the segment.
  """
  @spec ensure_not_gc(t()) :: :ok
  def ensure_not_gc(shm), do: Native.ensure_not_gc(shm)

  @doc """
  The data, as a binary.

      iex> Shmex.new("data") |> Shmex.to_binary()
      "data"
  """
  @spec to_binary(t()) :: binary()
  def to_binary(shm), do: ok!(Native.read(shm))

  defp ok!({:ok, value}), do: value
  defp ok!({:error, reason}), do: raise(Shmex.Error, reason: reason)

  defp check_data!(data) when is_binary(data), do: :ok

  defp check_data!(data),
    do: raise(ArgumentError, "data must be a binary, got: #{inspect(data, limit: 5)}")

  defp check_capacity!(capacity) when is_integer(capacity) and capacity >= 0, do: :ok

  defp check_capacity!(capacity) do
    raise ArgumentError,
          "capacity must be a non-negative integer, got: #{inspect(capacity, limit: 5)}"
  end
end
