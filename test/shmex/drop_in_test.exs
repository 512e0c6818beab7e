defmodule Shmex.DropInTest do
  # What callers of Shmex 0.5.1 observe about names and guards, and which
  # this library must keep (or fix, where 0.5.1 was wrong).
  use ExUnit.Case, async: true

  import Bitwise
  alias Shmex.Native
  alias Shmex.Test.{Beam, Segments}

  describe "a collected guard" do
    test "of a process that exited unlinks its name at once: it can be allocated again" do
      name = Segments.unique_name()

      # As in 0.5.1's own suite, whose every test allocates the same name.
      # The VM frees an exited process's resources (running the guard's
      # destructor) a moment after telling monitors, as it did for 0.5.1.
      for round <- 1..50 do
        {owner, ref} =
          spawn_monitor(fn -> {:ok, _} = Native.allocate(%Shmex{name: name, capacity: round}) end)

        assert_receive {:DOWN, ^ref, :process, ^owner, :normal}
        assert Segments.eventually(fn -> not Segments.exists?(name) end, 20)
      end
    end

    test "collected by a garbage collection unlinks its name there and then" do
      name = Segments.unique_name()
      parent = self()

      owner =
        spawn_link(fn ->
          {:ok, _shm} = Native.allocate(%Shmex{name: name})
          send(parent, :allocated)
          receive do: (:collect -> :erlang.garbage_collect())
          send(parent, :collected)
          receive do: (:done -> :ok)
        end)

      assert_receive :allocated
      assert Segments.exists?(name)
      send(owner, :collect)
      assert_receive :collected
      refute Segments.exists?(name)
      send(owner, :done)
    end

    test "does not remove a segment that replaced its own under the same name" do
      name = Segments.unique_name()

      Segments.in_process(fn ->
        {:ok, ours} = Native.allocate(%Shmex{name: name, capacity: 10})
        # Someone else removes our segment and makes their own in its place.
        File.rm!(Segments.path(name))
        File.write!(Segments.path(name), "theirs")
        Shmex.ensure_not_gc(ours)
      end)

      assert File.read!(Segments.path(name)) == "theirs"
      File.rm!(Segments.path(name))
    end
  end

  describe "a segment's identity" do
    test "is the same whatever the spelling of its name" do
      data = :rand.bytes(200_000)
      shm = Shmex.new(data)
      "/" <> bare = shm.name

      for spelling <- [bare, "//" <> bare, shm.name] do
        assert Native.read(%{shm | name: spelling, guard: nil}) == {:ok, data}
      end

      # Appending a segment to itself, named two ways, is one segment.
      assert {:ok, doubled} = Native.append(%{shm | size: 10}, %{shm | name: bare, guard: nil})
      assert Native.read(doubled) == {:ok, binary_part(data, 0, 10) <> data}
    end

    test "names are binaries: charlists and iolists are refused" do
      shm = Shmex.new("x")

      for name <- [String.to_charlist(shm.name), [shm.name], ["/", ["shmex"]]] do
        assert_raise ArgumentError, ~r/shm.name must be a binary or nil/, fn ->
          Native.write(%{shm | name: name}, "y")
        end

        assert_raise ArgumentError, ~r/name must be a binary/, fn ->
          Native.allocate(%Shmex{name: name})
        end
      end
    end
  end

  describe "the name is the truth, as in 0.5.1" do
    test "once another process removes the name, calls through the guard fail like any" do
      shm = Shmex.new("kept open")
      # Used often enough to be kept open and mapped between calls.
      for _ <- 1..5, do: {:ok, _} = Native.read(shm)
      File.rm!(Segments.path(shm))

      assert Native.read(shm) == {:error, {:enoent, :shm_open}}
      assert Native.read(%{shm | guard: nil}) == {:error, {:enoent, :shm_open}}
      assert Native.write(shm, "x") == {:error, {:enoent, :shm_open}}
    end

    test "a segment put under the name by someone else is the one calls reach" do
      shm = Shmex.new("old")
      for _ <- 1..5, do: {:ok, _} = Native.read(shm)
      File.rm!(Segments.path(shm))
      File.write!(Segments.path(shm), "new")

      assert Native.read(shm) == {:ok, "new"}
    end
  end

  describe "extra keys of the struct map" do
    test "are kept by every function, allocate/1 and add_guard/1 included" do
      extra = %Shmex{capacity: 10} |> Map.put(:origin, :camera)
      assert {:ok, %{origin: :camera} = shm} = Native.allocate(extra)
      assert {:ok, %{origin: :camera}} = Native.add_guard(%{shm | guard: nil})
      assert {:ok, %{origin: :camera} = shm} = Native.write(shm, "abcdef")
      assert {:ok, {%{origin: :camera} = shm, _}} = Native.split_at(shm, 2)
      assert {:ok, %{origin: :camera} = shm} = Native.append(shm, Shmex.new("g"))
      assert {:ok, %{origin: :camera} = shm} = Native.trim(shm, 1)
      assert {:ok, %{origin: :camera}} = Native.set_capacity(shm, 3)
    end
  end

  test "a forged claim past the real segment is :invalid_payload, whatever its size" do
    shm = Shmex.new(:binary.copy("x", 16))

    for size <- [17, 1 <<< 30, 1 <<< 40, (1 <<< 63) - 1] do
      assert Native.read(%{shm | size: size, capacity: size}) == {:error, :invalid_payload}
    end
  end

  @tag :beam
  test "a killed VM held only the segments still guarded, as 0.5.1 does" do
    code = ~S"""
    kept = for i <- 1..7, do: Shmex.new("kept #{i}")
    for _ <- 1..500, do: Shmex.new("dropped")
    :erlang.garbage_collect()
    IO.puts("ready #{System.pid()}")
    Process.sleep(:infinity)
    Shmex.ensure_not_gc(kept)
    """

    {beam, os_pid} = Beam.start(code)
    names = Segments.names_of(os_pid)
    Beam.kill(beam, os_pid)

    assert length(names) == 7
    # The next VM to start removes them (leftovers_test.exs); this suite's
    # own VMs may have done so already.
    Enum.each(names, &File.rm(Path.join("/dev/shm", &1)))
  end

  test "the C API guards every name shmex_allocate accepts, 256-byte ones included" do
    # The longest name a segment can have: 255 bytes after the slash.
    name = String.pad_trailing(Segments.unique_name(), 256, "n")

    Segments.in_process(fn ->
      assert {:ok, shm} = ShmexCClient.Nif.allocate_named(name, 10)
      assert is_reference(shm.guard)
      assert Segments.exists?(name)
    end)

    assert Segments.eventually(fn -> not Segments.exists?(name) end)
  end
end
