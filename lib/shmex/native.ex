defmodule Shmex.Native do
  @moduledoc """
  Operations on the shared memory behind a `%Shmex{}` struct.

  Every function takes the struct whole and returns `{:ok, result}` or
  `{:error, reason}`; the struct in a result replaces the one passed in.

  ## Errors

  Reasons are those of Shmex 0.5.1, plus two for calls that 0.5.1 crashed on:

    * `{posix, syscall}` - the OS refused: `posix` is an errno atom as in
      `t::file.posix/0` (`:enoent`, `:enospc`, …), `syscall` is `:shm_open`
      (opening or inspecting the segment), `:ftruncate` (sizing it, reserving
      or writing its pages) or `:mmap` (mapping it or reading its pages);
      a name that leads to something other than a segment (a regular file)
      is `{:enxio, :shm_open}` (a FIFO, socket or device node),
      `{:eisdir, :shm_open}` or `{:eloop, :shm_open}` (a symbolic link),
      and a name starting with `.shmex-` (this library's own files) is
      `{:eacces, :shm_open}`
    * `:invalid_payload` - the struct claims more than its segment has: a
      `size` over its `capacity`, or a `capacity` over the segment's real size
      (a forged struct, or a stale copy of one whose segment was shrunk since)
    * `:invalid_read_size`, `:invalid_position`, `:invalid_trim_size` - a byte
      count past the struct's `size`
    * `:already_guarded` - from `add_guard/1` only

  Malformed arguments (not a `%Shmex{}`, a negative or non-integer size, data
  that is not a binary, a name with a NUL byte) raise `ArgumentError` naming
  the argument, and so does a struct with `name: nil` anywhere but `allocate/1`.

  ## Segments shared by several structs

  A segment is whatever its name leads to when a call starts, as in Shmex
  0.5.1: `"/x"`, `"x"` and `"//x"` are one segment, and once another OS
  process removes the name, calls fail with `{:enoent, :shm_open}` (or reach
  the new segment it put under that name), through the guard or not.

  Calls on one segment in this VM, through any struct naming it, take turns:
  those that change it (`write/2`, `set_capacity/2`, `append/2` on its
  target, `trim/1,2`) run alone, those that only read it (`read/1,2`,
  `split_at/2`, `append/2` on its source) run together. Turns are first
  come, first served: a call waits for the calls that were waiting before
  it (readers right behind one another go in together), never for one that
  came after it. A call that must wait does not hold a scheduler meanwhile:
  the calling process waits for a message, and the call then runs. A call
  that has had no turn after a minute raises.

  ## Scheduling

  A call runs on a normal scheduler when its work is estimated at no more
  than about a millisecond, and moves itself to a dirty CPU scheduler
  otherwise, so that large copies never hold a normal scheduler. The
  estimate knows what the work will cost: a copy through a mapping runs at
  ~20 GB/s, but pages written for the first time, and a large result binary,
  cost several times more (see the README). On the dirty scheduler, a read
  or write of many milliseconds copies about a millisecond at a time, each
  step behind the work that queued meanwhile (of this library or any
  other), holding its turn on the segment throughout.

  ## A full `/dev/shm`

  A call that finds `/dev/shm` full (`ENOSPC`) first has every process
  collect its garbage, which may hold guards of segments nobody uses any
  more, waits up to 100 ms for their pages to be freed, and tries once more;
  its result is the retry's. So `{:enospc, :ftruncate}` means that the
  segments still referenced fill `/dev/shm`.
  """

  alias Shmex.Native.Nif

  # A NIF call that finds /dev/shm full is made once more after collecting
  # the garbage that may hold guards (Shmex.Native.Room).
  defmacrop with_room(call) do
    quote do
      case turn(unquote(call)) do
        {:error, {:enospc, _}} ->
          Shmex.Native.Room.make()
          turn(unquote(call))

        result ->
          result
      end
    end
  end

  # A NIF call that may have to wait for its turn on a segment: it answers
  # `{:wait, token}` and the turn comes with `{:shmex_segment_free, token}`;
  # called again, the call then has it. No scheduler waits meanwhile: this
  # process does. In case a wake-up is lost, the call is made again every
  # @poll ms (it keeps its place in the queue); after @give_up ms of waiting
  # in all, it raises.
  defmacrop turn(call) do
    quote do
      case unquote(call) do
        {:wait, token} -> wait_turn(token, fn -> unquote(call) end, deadline())
        result -> result
      end
    end
  end

  @poll 1_000
  @give_up 60_000

  defp deadline, do: System.monotonic_time(:millisecond) + @give_up

  defp wait_turn(token, call, deadline) do
    receive do
      {:shmex_segment_free, ^token} -> waited(call.(), call, deadline, nil)
    after
      @poll ->
        if System.monotonic_time(:millisecond) > deadline do
          raise "Shmex.Native: no turn on the segment after #{div(@give_up, 1000)} s of waiting"
        end

        waited(call.(), call, deadline, token)
    end
  end

  defp waited({:wait, token}, call, deadline, _stale), do: wait_turn(token, call, deadline)

  defp waited(result, _call, _deadline, stale) do
    # A wake-up that came after the call found its turn by itself.
    receive do
      {:shmex_segment_free, ^stale} -> :ok
    after
      0 -> :ok
    end

    result
  end

  @typedoc "Why a call failed; see the module docs."
  @type reason ::
          {:file.posix(), :shm_open | :ftruncate | :mmap}
          | :invalid_payload
          | :invalid_read_size
          | :invalid_position
          | :invalid_trim_size
          | :already_guarded

  @typedoc "An OS error, or a struct that does not fit its segment."
  @type segment_error :: {:file.posix(), :shm_open | :ftruncate | :mmap} | :invalid_payload

  @doc """
  Creates the segment `shm` describes and a guard for it.

  The segment gets `shm.capacity` zero bytes and is readable and writable by
  this OS user only. Its name is `shm.name`, or a fresh name (`"/shmex-…"`,
  31 bytes, unique on this host) when that is `nil`. The returned struct is
  `shm` with that name and the guard (other fields, and any extra keys, are
  kept): when the BEAM collects the guard, the name is unlinked at once, and
  the segment disappears once no OS process has it open or mapped.

  Pages are only reserved when data is written, so a large capacity costs
  nothing until used.

  ## Errors

    * `{:eexist, :shm_open}` - a segment called `shm.name` exists
    * `{:enametoolong, :shm_open}`, `{:einval, :shm_open}` - the OS refuses
      `shm.name` (over 255 bytes; a slash after the first byte)
    * `{:efbig, :ftruncate}` - the capacity is more than a file can hold
    * `:invalid_payload` - `shm.size` is over `shm.capacity`

  ## Examples

      iex> {:ok, shm} = Shmex.Native.allocate(%Shmex{capacity: 10})
      iex> {shm.size, shm.capacity, is_reference(shm.guard)}
      {0, 10, true}
      iex> Shmex.Native.allocate(%Shmex{name: shm.name})
      {:error, {:eexist, :shm_open}}
  """
  @spec allocate(Shmex.t()) :: {:ok, Shmex.t()} | {:error, segment_error()}
  def allocate(shm), do: Nif.allocate(shm)

  @doc """
  Adds a guard to a struct whose segment was made by other code (a NIF, or
  another OS process) and has no guard of this library.

  Any existing segment is accepted, as in 0.5.1: the struct's claims are
  checked when the segment is used. From then on collecting the struct
  unlinks the segment (unless by then its name leads to another segment,
  which is not ours to remove). A guard of another library in the `guard`
  field is replaced.

  ## Errors

    * `:already_guarded` - the struct holds a guard of this library
    * `{:enoent, :shm_open}` - there is no such segment (on this host)
    * `{:enxio, :shm_open}` - the name leads to a FIFO, socket or device
      node, which no guard may remove

  ## Examples

      iex> shm = Shmex.new("made here")
      iex> Shmex.Native.add_guard(shm)
      {:error, :already_guarded}
      iex> {:ok, second} = Shmex.Native.add_guard(%{shm | guard: nil})
      iex> Shmex.Native.read(second)
      {:ok, "made here"}
  """
  @spec add_guard(Shmex.t()) :: {:ok, Shmex.t()} | {:error, :already_guarded | segment_error()}
  def add_guard(shm), do: Nif.add_guard(shm)

  @doc """
  Resizes the segment to exactly `capacity` bytes.

  Data past `capacity` is lost and `size` shrinks to fit; growing adds zero
  bytes (reserved only when written).

  ## Errors

    * `{:enoent, :shm_open}` - the segment is gone, or on another host
    * `{:efbig, :ftruncate}` - the capacity is more than a file can hold
    * `:invalid_payload` - the struct does not fit the segment

  ## Examples

      iex> {:ok, shm} = Shmex.Native.set_capacity(Shmex.new("abcdef"), 3)
      iex> {shm.size, shm.capacity, Shmex.Native.read(shm)}
      {3, 3, {:ok, "abc"}}
  """
  @spec set_capacity(Shmex.t(), capacity :: non_neg_integer()) ::
          {:ok, Shmex.t()} | {:error, segment_error()}
  def set_capacity(shm, capacity) do
    with_room(Nif.set_capacity(shm, capacity))
  end

  @doc """
  Reads the data: `shm.size` bytes.

  ## Errors

    * `{:enoent, :shm_open}` - the segment is gone, or on another host
    * `{:enospc, :ftruncate}` - the data includes pages never written, and
      `/dev/shm` has no room to back them
    * `{:enomem, :mmap}` - the data is larger than all of this machine's
      memory (a sparse segment can be): no binary that size can be made
    * `:invalid_payload` - the struct does not fit the segment

  ## Examples

      iex> Shmex.Native.read(Shmex.new("hello"))
      {:ok, "hello"}
  """
  @spec read(Shmex.t()) :: {:ok, binary()} | {:error, segment_error()}
  def read(%Shmex{size: size} = shm), do: read(shm, size)
  # Not a struct: the NIF raises an ArgumentError saying so.
  def read(shm), do: Nif.read(shm, 0)

  @doc """
  Reads the first `read_size` bytes of data.

  ## Errors

    * `:invalid_read_size` - `read_size` is over `shm.size`
    * the errors of `read/1`

  ## Examples

      iex> Shmex.Native.read(Shmex.new("hello"), 4)
      {:ok, "hell"}
      iex> Shmex.Native.read(Shmex.new("hello"), 6)
      {:error, :invalid_read_size}
  """
  @spec read(Shmex.t(), read_size :: non_neg_integer()) ::
          {:ok, binary()} | {:error, :invalid_read_size | segment_error()}
  def read(shm, read_size) do
    with_room(Nif.read(shm, read_size))
  end

  @doc """
  Replaces the data with `data`.

  `size` becomes `byte_size(data)`; the segment grows when `data` does not fit
  the capacity. Whatever the struct's `size` and `capacity` say, the result is
  right: a write is how a stale struct is brought up to date.

  ## Errors

    * `{:enospc, :ftruncate}` - `/dev/shm` has no room for the data
    * `{:enoent, :shm_open}` - the segment is gone, or on another host

  ## Examples

      iex> {:ok, shm} = Shmex.Native.write(Shmex.empty(2), "longer than 2")
      iex> {shm.size, shm.capacity}
      {13, 13}
  """
  @spec write(Shmex.t(), data :: binary()) :: {:ok, Shmex.t()} | {:error, segment_error()}
  def write(shm, data) do
    with_room(Nif.write(shm, data))
  end

  @doc """
  Splits the data at `position`: the bytes past it move to a new segment.

  The first struct returned is `shm` with `size: position` (name, guard and
  capacity unchanged; the bytes stay in the segment). The second is a new
  guarded segment with the rest, its `capacity` equal to its `size`.
  `split_at(shm, shm.size)` gives an empty second part.

  ## Errors

    * `:invalid_position` - `position` is over `shm.size`
    * `{:enospc, :ftruncate}` - `/dev/shm` has no room for the new segment
    * the errors of `read/1`

  ## Examples

      iex> {:ok, {left, right}} = Shmex.Native.split_at(Shmex.new("hello world"), 5)
      iex> {Shmex.Native.read(left), Shmex.Native.read(right)}
      {{:ok, "hello"}, {:ok, " world"}}
  """
  @spec split_at(Shmex.t(), position :: non_neg_integer()) ::
          {:ok, {Shmex.t(), Shmex.t()}} | {:error, :invalid_position | segment_error()}
  def split_at(shm, position) do
    with_room(Nif.split_at(shm, position))
  end

  @doc """
  Appends `source`'s data to `target`'s.

  `target` keeps its name and guard; its segment is resized to exactly
  `target.size + source.size` bytes, which become both its `size` and its
  `capacity`. `source` is unchanged; it may be `target` itself.

  ## Errors

    * `{:enospc, :ftruncate}` - `/dev/shm` has no room for the result
    * the errors of `read/1`, for either struct

  ## Examples

      iex> {:ok, shm} = Shmex.Native.append(Shmex.new("hello"), Shmex.new(" world"))
      iex> {shm.size, Shmex.Native.read(shm)}
      {11, {:ok, "hello world"}}
  """
  @spec append(target :: Shmex.t(), source :: Shmex.t()) ::
          {:ok, Shmex.t()} | {:error, segment_error()}
  def append(target, source) do
    with_room(Nif.append(target, source))
  end

  @doc """
  Keeps the struct, and so its segment, alive up to this call; returns `:ok`.

  Call it after another OS process has opened the segment whose name you
  sent it, so that the segment is not unlinked before that.

  ## Examples

      iex> Shmex.Native.ensure_not_gc(Shmex.new("still referenced"))
      :ok
  """
  @spec ensure_not_gc(Shmex.t()) :: :ok
  def ensure_not_gc(shm), do: Nif.ensure_not_gc(shm)

  @doc """
  Shrinks the segment to the data: `capacity` becomes `size`.

  ## Errors

    * `{:enoent, :shm_open}` - the segment is gone, or on another host
    * `:invalid_payload` - the struct does not fit the segment

  ## Examples

      iex> {:ok, shm} = Shmex.Native.trim(Shmex.new("abc", 100))
      iex> shm.capacity
      3
  """
  @spec trim(Shmex.t()) :: {:ok, Shmex.t()} | {:error, segment_error()}
  def trim(shm), do: trim(shm, 0)

  @doc """
  Drops the first `bytes` bytes of data and shrinks the segment to the rest.

  The struct keeps its name and guard; `size` and `capacity` both become
  `shm.size - bytes`.

  ## Errors

    * `:invalid_trim_size` - `bytes` is over `shm.size`
    * the errors of `trim/1`

  ## Examples

      iex> {:ok, shm} = Shmex.Native.trim(Shmex.new("abcdef"), 2)
      iex> {shm.size, Shmex.Native.read(shm)}
      {4, {:ok, "cdef"}}
  """
  @spec trim(Shmex.t(), bytes :: non_neg_integer()) ::
          {:ok, Shmex.t()} | {:error, :invalid_trim_size | segment_error()}
  def trim(shm, bytes) do
    with_room(Nif.trim(shm, bytes))
  end
end
