defmodule Shmex.FullShmTest do
  # tmpfs allocates pages when they are first touched; touching one when the
  # filesystem is full raises SIGBUS, which took 0.5.1 (and the VM) down.
  # Here pages are reserved first, so a full /dev/shm is an error tuple.
  use ExUnit.Case, async: true

  alias Shmex.Test.Beam
  use Shmex.Test.PrivateShm

  test "writing more than /dev/shm holds is {:error, {:enospc, _}}, and the VM lives on" do
    code = ~S"""
    alias Shmex.Native
    big = :binary.copy(<<7>>, 3_000_000)

    {:ok, small} = Native.allocate(%Shmex{capacity: 4096})
    IO.inspect(Native.write(small, big), label: "write grows")

    {:ok, sparse} = Native.allocate(%Shmex{capacity: 3_000_000})
    IO.inspect(Native.write(sparse, big), label: "write into sparse")
    {:ok, holes} = Native.read(%{sparse | size: 3_000_000})
    IO.puts("read holes: #{byte_size(holes)} bytes, all zero: #{holes == <<0::24_000_000>>}")

    {:ok, half} = Native.write(sparse, :binary.copy(<<1>>, 600_000))
    IO.inspect(Native.split_at(half, 0), label: "split")
    IO.inspect(Native.append(half, half), label: "append")
    IO.inspect(Native.read(half, 10), label: "data intact")

    try do
      Shmex.new(big)
    rescue
      error in Shmex.Error -> IO.inspect(error.reason, label: "new raises")
    end

    # Fill /dev/shm page by page, then write within one page of a segment
    # with no pages yet: that write is not reserved first, pwrite refuses it.
    fill = fn fill, kept ->
      {:ok, page} = Native.allocate(%Shmex{capacity: 4096})

      case Native.write(page, :binary.copy(<<3>>, 4096)) do
        {:ok, page} -> fill.(fill, [page | kept])
        error -> {error, page, kept}
      end
    end

    {full, fresh, kept} = fill.(fill, [])
    IO.inspect(full, label: "page write when full")
    IO.inspect(Native.write(fresh, "tiny"), label: "tiny write when full")
    IO.inspect(Native.read(%{fresh | size: 4}), label: "tiny write changed nothing")
    IO.puts("filled #{length(kept)} pages")

    IO.puts("alive")
    """

    {output, status} = Beam.run(code, shm_megabytes: 1)

    assert status == 0, output
    assert output =~ "write grows: {:error, {:enospc, :ftruncate}}"
    assert output =~ "write into sparse: {:error, {:enospc, :ftruncate}}"
    # Holes read as zeros and take no page: 3 MB read on a 1 MiB tmpfs.
    assert output =~ "read holes: 3000000 bytes, all zero: true"
    assert output =~ "split: {:error, {:enospc, :ftruncate}}"
    assert output =~ "append: {:error, {:enospc, :ftruncate}}"
    assert output =~ ~s(data intact: {:ok, <<1, 1, 1, 1, 1, 1, 1, 1, 1, 1>>})
    assert output =~ "new raises: {:enospc, :ftruncate}"
    assert output =~ "page write when full: {:error, {:enospc, :ftruncate}}"
    assert output =~ "tiny write when full: {:error, {:enospc, :ftruncate}}"
    assert output =~ "tiny write changed nothing: {:ok, <<0, 0, 0, 0>>}"
    assert output =~ ~r/filled [1-9]\d* pages/
    assert output =~ "alive"
  end

  test "segments only garbage still references are collected to make room" do
    # A process with a large heap drops 48 segments of 1 MiB and idles: no
    # collection is due, so their guards, and the segments, stay. Another
    # process's 32 MiB then needs their room.
    code = ~S"""
    import Bitwise
    parent = self()

    hog =
      :erlang.spawn_opt(
        fn ->
          data = :binary.copy(<<7>>, 1 <<< 20)
          for _ <- 1..48, do: Shmex.new(data)
          send(parent, :dropped)
          receive do: (:stop -> :ok)
        end,
        [min_heap_size: 1_000_000]
      )

    receive do: (:dropped -> :ok)
    {df, 0} = System.cmd("df", ["-B1", "--output=avail", "/dev/shm"])
    free = df |> String.split() |> List.last() |> String.to_integer()
    IO.puts("free before: #{free >>> 20} MiB")

    data = :binary.copy(<<9>>, 32 <<< 20)
    shm = Shmex.new(data)
    IO.puts("read back: #{Shmex.to_binary(shm) == data}")

    # Truly full: what is held stays held, and the answer still comes.
    held = for _ <- 1..20, do: Shmex.new(:binary.copy(<<1>>, 1 <<< 20))
    {time, result} = :timer.tc(fn -> Shmex.Native.write(Shmex.empty(), data) end)
    IO.inspect(result, label: "full")
    IO.puts("full answered in #{div(time, 1000)} ms")
    Enum.each([shm | held], &Shmex.ensure_not_gc/1)
    send(hog, :stop)
    IO.puts("alive")
    """

    {output, status} = Beam.run(code, shm_megabytes: 64)
    assert status == 0, output
    [free] = Regex.run(~r/free before: (\d+) MiB/, output, capture: :all_but_first)
    assert String.to_integer(free) < 32, "the garbage held the room: #{output}"
    assert output =~ "read back: true", output
    assert output =~ "full: {:error, {:enospc, :ftruncate}}", output
    assert output =~ "alive", output
  end

  test "a struct from another host, whose /dev/shm is not ours, gives {:enoent, :shm_open}" do
    code = ~S"""
    shm = Shmex.new("made on another host")
    IO.puts(shm |> :erlang.term_to_binary() |> Base.encode64())
    """

    {output, 0} = Beam.run(code, shm_megabytes: 1)
    shm = output |> String.trim() |> Base.decode64!() |> :erlang.binary_to_term()

    assert %Shmex{size: 20} = shm
    assert Shmex.Native.read(shm) == {:error, {:enoent, :shm_open}}
    assert Shmex.Native.write(shm, "x") == {:error, {:enoent, :shm_open}}
    assert Shmex.Native.add_guard(shm) == {:error, {:enoent, :shm_open}}
    assert Shmex.Native.split_at(shm, 1) == {:error, {:enoent, :shm_open}}
  end
end
