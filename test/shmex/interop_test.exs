defmodule Shmex.InteropTest do
  # Another OS process (Python 3's multiprocessing.shared_memory) opening the
  # segments by name, as a media pipeline's external tools would.
  use ExUnit.Case, async: true

  alias Shmex.Native
  alias Shmex.Test.Segments

  # Opens a segment by name, prints its first `size` bytes in hex, and writes
  # `replacement` (hex) over its start. The resource tracker is told to forget
  # the segment: otherwise Python unlinks segments it merely opened at exit.
  @python """
  import sys
  from multiprocessing import resource_tracker, shared_memory
  name, size, replacement = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
  shm = shared_memory.SharedMemory(name=name.lstrip("/"))
  resource_tracker.unregister(shm._name, "shared_memory")
  print(bytes(shm.buf[:size]).hex())
  shm.buf[:len(replacement)] = replacement
  shm.close()
  """

  defp python(args) do
    {output, 0} = System.cmd("python3", ["-c", @python | args])
    String.trim(output)
  end

  test "another OS process reads what Elixir wrote, and Elixir reads what it wrote" do
    data = :crypto.strong_rand_bytes(100_000)
    shm = Shmex.new(data)

    seen = python([shm.name, "#{shm.size}", Base.encode16("from python")])

    assert Base.decode16!(seen, case: :lower) == data
    assert {:ok, "from python" <> rest} = Native.read(shm)
    assert rest == binary_part(data, 11, byte_size(data) - 11)
  end

  test "names are unique across BEAM instances on the host" do
    ebin = Path.dirname(:code.which(Shmex))
    make_names = "for _ <- 1..500, do: IO.puts(Shmex.empty(0).name)"

    others =
      for _ <- 1..2 do
        Task.async(fn -> System.cmd("elixir", ["-pa", ebin, "-e", make_names]) end)
      end

    ours = for _ <- 1..500, do: Shmex.empty(0)
    theirs = for task <- others, {output, 0} = Task.await(task, 60_000), do: String.split(output)

    names = Enum.map(ours, & &1.name) ++ List.flatten(theirs)
    assert length(names) == 1500
    assert Enum.uniq(names) == names
    assert Enum.all?(names, &(String.starts_with?(&1, "/shmex-") and byte_size(&1) <= 31))
  end

  test "a segment created by another OS process can be guarded and read" do
    name = Segments.unique_name()

    created = """
    import sys
    from multiprocessing import resource_tracker, shared_memory
    shm = shared_memory.SharedMemory(name=sys.argv[1].lstrip("/"), create=True, size=5)
    resource_tracker.unregister(shm._name, "shared_memory")
    shm.buf[:5] = b"hello"
    shm.close()
    """

    {_, 0} = System.cmd("python3", ["-c", created, name])

    Segments.in_process(fn ->
      {:ok, shm} = Native.add_guard(%Shmex{name: name, size: 5, capacity: 5})
      assert Native.read(shm) == {:ok, "hello"}
    end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end
end
