defmodule Shmex.Test.Storm do
  @moduledoc false
  # Runs in a BEAM of its own (see storm_test.exs): every kind of call copies
  # through a segment of its own, over and over, while something else
  # shrinks the segments under it. Prints what each kind got, and how many
  # faults the libraries absorbed; the test reads that and the exit status.

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.Beam

  @kinds ~w(read write split_at append_target append_source trim set_capacity c_api rust_api)a
  @size 4 <<< 20

  @doc "Runs the storm `scenario` for `seconds`, then halts the VM normally."
  def run(scenario, seconds) do
    Beam.load_natives()
    data = :binary.copy(<<7>>, @size)
    segments = Map.new(@kinds, &{&1, busy(Shmex.new(data))})
    shrinker = start_shrinker(scenario, Map.values(segments))
    deadline = System.monotonic_time(:millisecond) + seconds * 1000

    counts =
      @kinds
      |> Task.async_stream(&{&1, hammer(&1, segments[&1], data, deadline, %{})},
        max_concurrency: length(@kinds),
        timeout: :infinity
      )
      |> Map.new(fn {:ok, result} -> result end)

    stop_shrinker(shrinker)

    for {kind, counts} <- counts do
      IO.puts("#{kind}: #{inspect(counts)}")
    end

    IO.puts("faults absorbed: #{Shmex.Native.Nif.stats().faults_absorbed}")
    IO.puts("storm over")
    Enum.each(segments, fn {_kind, shm} -> Shmex.ensure_not_gc(shm) end)
    System.halt(0)
  end

  # Used enough to be kept open and mapped.
  defp busy(shm) do
    for _ <- 1..4, do: {:ok, _} = Native.read(shm, 1)
    shm
  end

  defp hammer(kind, shm, data, deadline, counts) do
    if System.monotonic_time(:millisecond) > deadline do
      counts
    else
      outcome = classify(kind, call(kind, shm, data))
      # Calls that change the segment leave it whole again for the next.
      if kind in ~w(write split_at append_target trim set_capacity)a, do: Native.write(shm, data)
      hammer(kind, shm, data, deadline, Map.update(counts, outcome, 1, &(&1 + 1)))
    end
  end

  defp call(:read, shm, _data), do: Native.read(shm)
  defp call(:write, shm, data), do: Native.write(shm, data)
  defp call(:split_at, shm, _data), do: Native.split_at(shm, 1)
  defp call(:append_target, shm, _data), do: with({:ok, x} <- small(), do: Native.append(shm, x))
  defp call(:append_source, shm, _data), do: with({:ok, x} <- small(), do: Native.append(x, shm))
  defp call(:trim, shm, _data), do: Native.trim(shm, 1)
  defp call(:set_capacity, shm, _data), do: Native.set_capacity(shm, div(@size, 2))
  defp call(:c_api, shm, _data), do: ShmexCClient.Nif.checksum(shm)
  defp call(:rust_api, shm, _data), do: ShmexExample.Nif.checksum(shm)

  defp small do
    with {:ok, shm} <- Native.allocate(%Shmex{capacity: 1}), do: Native.write(shm, "x")
  end

  @reasons [:invalid_payload, {:enoent, :shm_open}, {:enospc, :ftruncate}]

  # :ok, {:error, reason} for the documented reasons, or {:bad, term}.
  defp classify(:rust_api, sum) when is_integer(sum), do: :ok
  defp classify(:read, {:ok, data}) when is_binary(data), do: :ok
  defp classify(:split_at, {:ok, {%Shmex{}, %Shmex{}}}), do: :ok
  defp classify(:c_api, {:ok, sum}) when is_integer(sum), do: :ok
  defp classify(kind, {:ok, %Shmex{}}) when kind not in [:read, :c_api], do: :ok
  defp classify(_kind, {:error, reason}) when reason in @reasons, do: {:error, reason}
  defp classify(_kind, other), do: {:bad, other}

  # Another OS process truncates every segment to 0 and back, as fast as it
  # can (and ends when its stdin closes: when this VM is gone).
  @truncate """
  import os, sys, threading
  threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
  size = int(sys.argv[1])
  paths = sys.argv[2:]
  while True:
      for path in paths:
          try:
              os.truncate(path, 0)
              os.truncate(path, size)
          except FileNotFoundError:
              pass
  """

  # Another OS process punches holes in every segment and fills /dev/shm
  # meanwhile, so that the holes cannot be filled again (and ends when its
  # stdin closes).
  @punch_and_fill """
  import ctypes, os, sys, threading
  threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
  libc = ctypes.CDLL(None, use_errno=True)
  PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
  size = int(sys.argv[1])
  paths = sys.argv[2:]
  filler = "/dev/shm/storm-filler"
  while True:
      for path in paths:
          try:
              fd = os.open(path, os.O_RDWR)
              libc.fallocate(fd, PUNCH, ctypes.c_long(0), ctypes.c_long(size))
              os.close(fd)
          except FileNotFoundError:
              pass
      fd = os.open(filler, os.O_RDWR | os.O_CREAT, 0o600)
      try:
          os.posix_fallocate(fd, 0, 1 << 40)
      except OSError:
          pass
      os.close(fd)
      os.unlink(filler)
  """

  defp start_shrinker(:os_truncate, segments), do: python(@truncate, segments)
  defp start_shrinker(:os_punch_and_fill, segments), do: python(@punch_and_fill, segments)

  defp start_shrinker(:vm_handles, segments) do
    spawn_link(fn ->
      # A second guard of a segment unlinks it when collected (as in 0.5.1):
      # they live as long as the storm.
      handles =
        Enum.flat_map(segments, fn shm ->
          "/" <> bare = shm.name
          {:ok, second} = Native.add_guard(%{shm | guard: nil})
          [%{shm | guard: nil}, second, %{shm | name: bare, guard: nil}]
        end)

      shrink_through_handles(handles)
    end)
  end

  defp python(script, segments) do
    paths = Enum.map(segments, &Path.join("/dev/shm", String.trim_leading(&1.name, "/")))

    Port.open({:spawn_executable, System.find_executable("python3")},
      args: ["-c", script, "#{@size}" | paths]
    )
  end

  # Shrinks and regrows each segment through handles other than its guard:
  # a copy without the guard, a second guard, the name without its slash.
  defp shrink_through_handles(handles) do
    for handle <- handles do
      {:ok, _} = Native.set_capacity(%{handle | size: 0, capacity: 0}, 0)
      {:ok, _} = Native.set_capacity(%{handle | size: 0, capacity: 0}, @size)
    end

    # Turns are not handed out in order: a loop with no pause would keep
    # the calls it makes wait, as any writer in a tight loop would.
    Process.sleep(1)
    shrink_through_handles(handles)
  end

  defp stop_shrinker(port) when is_port(port) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    System.cmd("kill", ["#{os_pid}"])
  end

  defp stop_shrinker(pid) do
    Process.unlink(pid)
    Process.exit(pid, :kill)
  end

  @doc """
  With no race at all: a busy guarded segment loses its pages through
  another handle, /dev/shm is then filled, and guarded calls are made.
  """
  def lost_pages_on_a_full_shm do
    Beam.load_natives()
    data = :binary.copy(<<7>>, @size)
    shm = busy(Shmex.new(data))
    {:ok, _} = Native.set_capacity(%{shm | guard: nil, size: 0, capacity: 0}, 0)
    {:ok, _} = Native.set_capacity(%{shm | guard: nil, size: 0, capacity: 0}, @size)
    fill_shm()

    IO.inspect(Native.write(shm, data), label: "write")
    IO.inspect(Native.read(shm) |> summary(), label: "read")
    IO.inspect(ShmexCClient.Nif.checksum(shm), label: "c_api")
    IO.inspect(ShmexExample.Nif.checksum(shm), label: "rust_api")
    IO.puts("faults absorbed: #{Shmex.Native.Nif.stats().faults_absorbed}")
    IO.puts("alive")
    System.halt(0)
  end

  defp summary({:ok, data}), do: {:ok, byte_size(data), :binary.bin_to_list(data) |> Enum.uniq()}
  defp summary(other), do: other

  defp fill_shm do
    {:ok, file} = :file.open(~c"/dev/shm/filler", [:write, :raw, :binary])
    chunk = :binary.copy(<<1>>, 1 <<< 20)
    fill(file, chunk)
  end

  defp fill(file, chunk) do
    case :file.write(file, chunk) do
      :ok -> fill(file, chunk)
      {:error, :enospc} -> :file.close(file)
    end
  end
end
