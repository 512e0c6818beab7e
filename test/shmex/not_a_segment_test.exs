defmodule Shmex.NotASegmentTest do
  # Only regular files are segments: whatever else sits under a segment's
  # name in /dev/shm (a FIFO, a directory, a device node, a socket, a
  # symbolic link) is refused by every call, from Elixir and from C, and
  # nothing the library does, guards included, removes it.
  use ExUnit.Case, async: true

  alias Shmex.Test.Beam
  use Shmex.Test.PrivateShm

  test "FIFOs, directories, device nodes, sockets and links are refused and never unlinked" do
    # In a tmpfs of its own, where device nodes can be made (/dev/shm is
    # usually mounted nodev).
    code = ~S"""
    alias Shmex.Native
    Shmex.Test.Beam.load_natives()
    {:ok, target} = Native.allocate(%Shmex{name: "/link-target", capacity: 4})
    {:ok, target} = Native.write(target, "real")
    path = &Path.join("/dev/shm", &1)
    {_, 0} = System.cmd("mkfifo", [path.("fifo")])
    File.mkdir!(path.("directory"))
    {_, 0} = System.cmd("mknod", [path.("device"), "c", "1", "3"])
    sock = "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])"
    {_, 0} = System.cmd("python3", ["-c", sock, path.("socket")])
    File.ln_s!(path.("link-target"), path.("link"))

    kinds = %{
      "fifo" => :enxio,
      "directory" => :eisdir,
      "device" => :enxio,
      "socket" => :enxio,
      "link" => :eloop
    }

    type = fn name -> File.lstat!(path.(name)).type end
    types = Map.new(kinds, fn {name, _} -> {name, type.(name)} end)

    for {name, posix} <- kinds do
      shm = %Shmex{name: "/" <> name, size: 0, capacity: 0}
      refused = {:error, {posix, :shm_open}}

      calls = [
        add_guard: fn -> Native.add_guard(shm) end,
        read: fn -> Native.read(shm) end,
        read_2: fn -> Native.read(shm, 0) end,
        write: fn -> Native.write(shm, "data") end,
        set_capacity: fn -> Native.set_capacity(shm, 8) end,
        split_at: fn -> Native.split_at(shm, 0) end,
        append_to: fn -> Native.append(shm, target) end,
        append_from: fn -> Native.append(target, shm) end,
        trim: fn -> Native.trim(shm) end,
        trim_2: fn -> Native.trim(shm, 0) end,
        to_binary: fn ->
          try do
            Shmex.to_binary(shm)
          rescue
            error in Shmex.Error -> {:error, error.reason}
          end
        end
      ]

      for {call, fun} <- calls, (result = fun.()) != refused do
        IO.puts("unexpected: #{name} #{call} -> #{inspect(result)}")
      end

      for {call, result} <- [
            allocate: Native.allocate(%{shm | capacity: 8}),
            c_checksum: ShmexCClient.Nif.checksum(shm),
            c_write: ShmexCClient.Nif.write(shm, "data"),
            c_resize: ShmexCClient.Nif.resize(shm, 8),
            c_unlink: {:error, ShmexCClient.Nif.unlink(shm)}
          ],
          not match?({:error, _}, result) do
        IO.puts("unexpected: #{name} #{call} -> #{inspect(result)}")
      end

      # A C guard is not made for it: the struct comes back without one.
      guard = ShmexCClient.Nif.guard(shm).guard
      if is_reference(guard), do: IO.puts("unexpected: #{name} c_guard -> a guard")
    end

    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    Process.sleep(100)

    for {name, was} <- types, type.(name) != was do
      IO.puts("unexpected: #{name} became #{inspect(type.(name))}")
    end

    IO.inspect(Native.read(target), label: "target")
    IO.puts("done")
    """

    {output, status} = Beam.run(code, shm_megabytes: 8)
    assert status == 0, output
    assert output =~ "done", output
    refute output =~ "unexpected", output
    assert output =~ ~s(target: {:ok, "real"}), output
  end
end
